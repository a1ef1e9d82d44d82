import struct

import pytest

from spright.data.descriptor import CALL, HAS_RESPONSE_META, KIND_MASK, SIZE, Descriptor, pack_many, unpack_many


def make(i: int) -> Descriptor:
    flags = CALL | HAS_RESPONSE_META
    return Descriptor(i, (i + 1) & 0xFFFF, flags, 7, 3, 404, 0x01000005, 1 << 20, 0xFFFFFFFF, i * 9, 42)


def test_size_fits_and_next_hop_is_the_first_little_endian_word() -> None:
    assert SIZE <= 32
    packed = make(0x01020304).pack()
    assert len(packed) == SIZE
    assert struct.unpack_from("<I", packed)[0] == 0x01020304  # what the eBPF program reads


def test_round_trip_one() -> None:
    d = make(5)
    assert Descriptor.unpack(d.pack()) == d
    assert d.kind == CALL and d.flags & ~KIND_MASK == HAS_RESPONSE_META


def test_round_trip_batch() -> None:
    batch = [make(i) for i in range(100)]
    data = pack_many(batch)
    assert len(data) == 100 * SIZE
    assert data == b"".join(d.pack() for d in batch)
    assert unpack_many(data) == batch


def test_partial_batch_is_rejected() -> None:
    with pytest.raises(ValueError, match="multiple of"):
        unpack_many(make(1).pack()[:-1])


def test_out_of_range_field_is_rejected() -> None:
    with pytest.raises(struct.error):
        Descriptor(1 << 32, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0).pack()
