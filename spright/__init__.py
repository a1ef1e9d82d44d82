"""spright: serverless function chains over shared memory and eBPF (SPRIGHT, in asyncio)."""

from spright.autoscale import ScalePolicy
from spright.config import Config, PoolConfig
from spright.context import CallError, Context, HTTPError, JSONBytes, Reply
from spright.multidict import MultiDict
from spright.routing import App, Chain, Function, RoutingError

__all__ = [
    "App", "CallError", "Chain", "Config", "Context", "Function", "HTTPError", "JSONBytes", "MultiDict", "PoolConfig",
    "Reply", "RoutingError", "ScalePolicy",
]
__version__ = "0.1.0"
