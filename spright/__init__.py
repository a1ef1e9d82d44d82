"""spright: serverless function chains over shared memory and eBPF (SPRIGHT, in asyncio)."""

import spright.native  # noqa: F401 - first: the hot path runs compiled or from source, decided before it is imported
from spright.data.autoscale import ScalePolicy
from spright.data.config import Config, PoolConfig
from spright.data.function import Chain, Function
from spright.data.multidict import MultiDict
from spright.data.sse import sse
from spright.routing import App, RoutingError
from spright.worker.context import CallError, Context, HTTPError, JSONBytes, Reply

__all__ = [
    "App", "CallError", "Chain", "Config", "Context", "Function", "HTTPError", "JSONBytes", "MultiDict", "PoolConfig",
    "Reply", "RoutingError", "ScalePolicy", "sse",
]
__version__ = "0.1.0"
