"""data: what every layer reads and nobody owns: the descriptor's layout, the compiled route
table, ``Config``, responses, header rules, functions as the DSL declares them, the autoscaler's
arithmetic. No I/O and no asyncio; imports nothing of spright's."""
