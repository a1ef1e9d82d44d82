"""What the data planes that move the bytes themselves (http, grpc) share: loopback ports
for their endpoints, and what they carry with a descriptor.

A hop's descriptor names a pool slot; on these data planes the slot's content travels with
it, as it would between Knative functions or gRPC services: the sender copies it out of its
slot (``load``), the receiver writes it into the same slot of its own mapping (``store``).
On the wire: the metadata's length (4 bytes), the metadata, then the payload.
"""

from __future__ import annotations

import socket
import struct

from spright.data.descriptor import OFFSETS
from spright.host.pool import Payloads, read_meta

_META_LEN = struct.Struct("<I")
# slot, length, request_id (the slot's owner), generation: what carrying a hop's payload needs
assert OFFSETS["length"] == OFFSETS["slot"] + 4 and OFFSETS["request_id"] == OFFSETS["length"] + 4
_CARRIED = struct.Struct(f"<{OFFSETS['slot']}xIII{OFFSETS['generation'] - OFFSETS['request_id'] - 4}xI")


def load(pool: Payloads, record: bytes) -> bytes:
    """What a descriptor's hop carries: meta length, meta, payload (nothing for a stale slot)."""
    slot, length, _, generation = _CARRIED.unpack(record)
    if (not length and not slot) or not pool.is_current(slot, generation):
        return b""
    with pool.view(slot) as view, read_meta(view) as meta:
        return b"".join((_META_LEN.pack(len(meta)), meta, view[:length]))


def store(pool: Payloads, record: bytes, carried: bytes) -> None:
    """The payload and metadata a hop carried, into the slot its descriptor names, if that
    slot is still the request's (a late hop of a request that timed out writes nothing)."""
    slot, _, owner, generation = _CARRIED.unpack(record)
    if pool.is_current(slot, generation):
        (meta_length,) = _META_LEN.unpack_from(carried)
        meta = carried[4 : 4 + meta_length]
        pool.write(slot, generation, memoryview(carried)[4 + meta_length :], meta, owner)


def loopback_ports(count: int) -> list[int]:
    """Loopback ports the kernel hands out, held open together so that they are distinct."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()
