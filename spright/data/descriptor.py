"""The fixed-size descriptor that travels between functions instead of the payload.

Each field is named once, in ``FIELDS``; its byte offset (``OFFSETS``) is derived from the
layout and handed to the eBPF program at compile time, so the C code never spells the
layout out. The first field is the next-hop endpoint id: the data plane reads exactly
that word to pick the destination.

Descriptors are built by the named constructors below (a hop along a chain, a call, a
reply, a failure, a control notice), which pack straight to bytes: the hot paths never
build a ``Descriptor`` tuple to send one.
"""

from __future__ import annotations

import functools
import struct
from typing import NamedTuple

FIELDS = (
    ("next_hop", "I"),  # endpoint id the data plane delivers to
    ("sender", "H"),  # endpoint id of the sender (the kernel overwrites it with the truth on skmsg)
    ("flags", "B"),  # kind (low nibble), body type, HAS_RESPONSE_META
    ("hop", "B"),  # position in the chain of the endpoint this descriptor goes to; a CALL's: its depth
    ("chain", "H"),  # chain id (RouteTable.chains)
    ("status", "H"),  # HTTP status chosen by a handler, 0 for "not set"
    ("slot", "I"),  # pool slot holding the payload
    ("length", "I"),  # payload bytes at the start of the slot
    ("request_id", "I"),  # the HTTP request this belongs to (the slot's owner)
    ("call_id", "I"),  # the ctx.call it answers; for READY/DOWN: the function concerned
    ("generation", "I"),  # the slot's generation when it was handed on (stale replies are detected)
)
FORMAT = "<" + "".join(code for _, code in FIELDS)
OFFSETS = {name: struct.calcsize("<" + "".join(code for _, code in FIELDS[:i])) for i, (name, _) in enumerate(FIELDS)}
_STRUCT = struct.Struct(FORMAT)
SIZE = _STRUCT.size  # 32 bytes
_pack = _STRUCT.pack

GATEWAY = 0  # endpoint id of the (first) gateway; functions are numbered from 1
GATEWAY_SHIFT = 28  # a request id's top 4 bits name the gateway process that owns it (and gets its answer)

# flags: low nibble is the kind of message
REQUEST = 0x0  # a hop of an HTTP request's chain
CALL = 0x1  # ctx.call() to another function
REPLY = 0x2  # result of a CALL, back to the caller
RESPONSE = 0x3  # end of a chain, back to the gateway
ERROR = 0x4  # the handler failed; status says how, the slot holds a JSON error
READY = 0x5  # a worker announces itself; from the gateway: function `call_id` is back
DOWN = 0x6  # gateway to workers: function `call_id` died; fail calls to it until READY
REFUSED = 0x7  # the data plane's bounce: this descriptor's receiver is in another security domain
# streamed answers (spright.worker.streams, spright.front.streams): a generator handler's parts;
# the same four kinds carry a streamed request body the other way (spright.front.uploads: PART and
# END from the gateway to the instance reading it, CREDIT and CANCEL back; call_id 0)
PART = 0x8  # one part, to the gateway (or a caller); `hop`: its number in the stream, mod 256
END = 0x9  # the stream is over after `hop` parts (mod 256); its slot is the request's, given back
CREDIT = 0xA  # the parts' receiver to their sender: `status` parts taken so far (mod 2**16); no slot
CANCEL = 0xB  # a stream's reader to its producer: it went away (a client, a caller leaving its loop), stop
IN_PARTS = 1  # a CALL's status: its caller takes the answer part by part (``ctx.call_stream``), not joined
STREAM_WINDOW = 8  # parts of one stream in flight at most (sent, not yet taken by the reader): < 256
CREDIT_EVERY = STREAM_WINDOW // 2  # parts a reader takes per CREDIT: a producer at the window always gets one
ANSWERS = (RESPONSE, ERROR, PART, END)  # what goes to the gateway process that owns the request
KIND_MASK = 0x0F

# flags bits 4-5: what the body is, so the gateway can pick a content type without metadata
BODY_BYTES = 0x00
BODY_TEXT = 0x10
BODY_JSON = 0x20
BODY_MASK = 0x30
HAS_RESPONSE_META = 0x40  # the slot's metadata carries status/headers set by a handler
TRACED = 0x80  # the request is traced: each hop and call writes a span record (spright.data.traces)

MAX_DEPTH = 0xFF  # a CALL's depth, in its hop byte, counts up to this


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


assert tuple(Descriptor._fields) == tuple(name for name, _ in FIELDS)


# -- constructors: positional on purpose (the hot paths call them per descriptor) ----------
def hop(to: int, sender: int, flags: int, position: int, chain: int, status: int, slot: int, generation: int,
        length: int, request_id: int) -> bytes:
    """A request moving along its chain to position ``position`` (REQUEST, or RESPONSE when
    ``to`` is the gateway at the chain's end)."""
    return _pack(to, sender, flags, position, chain, status, slot, length, request_id, 0, generation)


def call(to: int, sender: int, flags: int, chain: int, slot: int, generation: int, length: int, request_id: int,
         call_id: int, depth: int, status: int = 0) -> bytes:
    """``ctx.call``: the payload in ``slot`` goes to function ``to``; the reply names ``call_id``.
    ``depth`` (in the ``hop`` byte, which no data plane reads for a call: it names its
    receiver): how many handlers of ``to`` wait on this call, each holding one of its places
    (its caller and that one's own callers, while each calls its own function). ``status``
    IN_PARTS: a streaming callee sends its parts (PART, then END) instead of one REPLY."""
    return _pack(to, sender, CALL | flags, depth, chain, status, slot, length, request_id, call_id, generation)


def reply(to: Descriptor, sender: int, flags: int, status: int, slot: int, generation: int, length: int) -> bytes:
    """The answer to the CALL ``to``, back to its caller."""
    return _pack(to.sender, sender, REPLY | flags, 0, to.chain, status, slot, length, to.request_id, to.call_id,
                 generation)


def failure(of: Descriptor, sender: int, status: int, slot: int, generation: int, length: int) -> bytes:
    """ERROR for ``of`` (a JSON error in ``slot``): to the caller if it was a call, else to the gateway."""
    to = of.sender if of.flags & KIND_MASK == CALL else GATEWAY
    return _pack(to, sender, ERROR | BODY_JSON, of.hop, of.chain, status, slot, length, of.request_id, of.call_id,
                 generation)


def notice(to: int, sender: int, kind: int, about: int = 0) -> bytes:
    """A control message without payload: READY (``sender`` is up, or function ``about`` is
    back) or DOWN (function ``about`` died)."""
    return _pack(to, sender, kind, 0, 0, 0, 0, 0, 0, about, 0)


def part(to: int, sender: int, flags: int, number: int, chain: int, status: int, slot: int, generation: int,
         length: int, request_id: int, call_id: int) -> bytes:
    """Part ``number`` of a streamed answer, in ``slot``: to the gateway (``to`` 0: the
    request's owner gets it) or to the caller of call ``call_id``."""
    return _pack(to, sender, PART | flags, number & 0xFF, chain, status, slot, length, request_id, call_id,
                 generation)


def end_of_stream(to: int, sender: int, flags: int, parts: int, chain: int, status: int, slot: int,
                  generation: int, request_id: int, call_id: int) -> bytes:
    """The stream of request ``request_id`` (or call ``call_id``) ended after ``parts`` parts
    (``status``, and the head in ``slot`` when ``flags`` say so: the answer's, for a stream of
    none); ``slot``, the request's (or the call's) own, goes back with it."""
    return _pack(to, sender, END | flags, parts & 0xFF, chain, status, slot, 0, request_id, call_id, generation)


def credit(to: int, sender: int, request_id: int, call_id: int, taken: int) -> bytes:
    """``taken`` parts of the stream of ``request_id`` (call ``call_id``) are consumed: its
    sender may have that many more in flight."""
    return _pack(to, sender, CREDIT, 0, 0, taken & 0xFFFF, 0, 0, request_id, call_id, 0)


def cancel(to: int, sender: int, request_id: int, call_id: int) -> bytes:
    """Nobody reads the stream of ``request_id`` (call ``call_id``) any more."""
    return _pack(to, sender, CANCEL, 0, 0, 0, 0, 0, request_id, call_id, 0)


# Descriptor._make without a Python-level call per descriptor: unpacking a batch stays one C loop.
_from_fields = functools.partial(tuple.__new__, Descriptor)


def pack_many(descriptors: list[Descriptor]) -> bytes:
    """One buffer for one send(): the data plane gives each SIZE-byte record its own verdict."""
    return struct.pack("<" + FORMAT[1:] * len(descriptors), *(f for d in descriptors for f in d))


def unpack_many(data: bytes | memoryview) -> list[Descriptor]:
    if len(data) % SIZE:
        raise ValueError(f"descriptor batch of {len(data)} bytes is not a multiple of {SIZE}")
    return list(map(_from_fields, _STRUCT.iter_unpack(data)))
