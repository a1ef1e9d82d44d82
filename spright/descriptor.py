"""The fixed-size descriptor that travels between functions instead of the payload.

The first 4 bytes are the next-hop endpoint id: the eBPF sk_msg program reads exactly
that word to pick the destination socket, so the field order is part of the kernel ABI.
"""

from __future__ import annotations

import functools
import struct
from typing import NamedTuple

# next_hop, sender, flags, hop, chain, status, slot, length, request_id, call_id, generation
FORMAT = "<IHBBHHIIIII"
_STRUCT = struct.Struct(FORMAT)
SIZE = _STRUCT.size  # 32 bytes

pack = _STRUCT.pack  # pack(next_hop, sender, ...): the hot paths skip building a Descriptor

GATEWAY = 0  # endpoint id of the gateway; functions are numbered from 1
NEXT_IN_CHAIN = 0xFFFFFFFF  # next_hop for transports that resolve (chain, hop) themselves, in the kernel

# flags: low nibble is the kind of message
REQUEST = 0x0  # a hop of an HTTP request's chain
CALL = 0x1  # ctx.call() to another function
REPLY = 0x2  # result of a CALL, back to the caller
RESPONSE = 0x3  # end of a chain, back to the gateway
ERROR = 0x4  # the handler failed; status says how, the slot holds a JSON error
READY = 0x5  # a worker announces itself; from the gateway: function `call_id` is back
DOWN = 0x6  # gateway to workers: function `call_id` died; fail calls to it until READY
KIND_MASK = 0x0F

# flags bits 4-5: what the body is, so the gateway can pick a content type without metadata
BODY_BYTES = 0x00
BODY_TEXT = 0x10
BODY_JSON = 0x20
BODY_MASK = 0x30
HAS_RESPONSE_META = 0x40  # the slot's metadata carries status/headers set by a handler


class Descriptor(NamedTuple):
    next_hop: int
    sender: int
    flags: int
    hop: int
    chain: int
    status: int
    slot: int
    length: int
    request_id: int
    call_id: int
    generation: int

    @property
    def kind(self) -> int:
        return self.flags & KIND_MASK

    def pack(self) -> bytes:
        return _STRUCT.pack(*self)

    @classmethod
    def unpack(cls, data: bytes | memoryview) -> Descriptor:
        return cls._make(_STRUCT.unpack(data))


_from_fields = functools.partial(tuple.__new__, Descriptor)  # Descriptor._make without a Python call


def pack_many(descriptors: list[Descriptor]) -> bytes:
    """One buffer for one send(): the kernel gives each SIZE-byte record its own verdict."""
    return struct.pack("<" + FORMAT[1:] * len(descriptors), *(f for d in descriptors for f in d))


def unpack_many(data: bytes | memoryview) -> list[Descriptor]:
    if len(data) % SIZE:
        raise ValueError(f"descriptor batch of {len(data)} bytes is not a multiple of {SIZE}")
    return list(map(_from_fields, _STRUCT.iter_unpack(data)))
