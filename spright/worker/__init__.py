"""worker: what runs inside a function's process: ``ctx``, ``ctx.call``, the dispatch loop that
runs handlers and sends their results on, and the handler of a function on another node. May
import spright.transport, spright.host and spright.data."""
