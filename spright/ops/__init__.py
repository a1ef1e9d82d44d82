"""ops: what an operator runs: the ``spright`` CLI, reading running nodes, the stats view, the
machine checks of ``spright doctor``, ``spright deploy``. May import every layer below it."""
