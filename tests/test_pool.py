import os

import pytest

from spright.data.config import PoolConfig
from spright.host.pool import DOMAIN_SHIFT, Pool, PoolExhausted, read_meta

SMALL = PoolConfig(max_body=1 << 20, classes=((1024, 4), (65536, 2)), large_slots=1, meta_reserve=4096)


@pytest.fixture
def pool():
    p = Pool.create(SMALL)
    yield p
    p.close()


def test_small_payloads_get_small_slots(pool: Pool) -> None:
    slot = pool.alloc(20, owner=1)
    assert pool.capacity(slot.id) == 1024
    big = pool.alloc(1 << 20, owner=1)
    assert pool.capacity(big.id) >= 1 << 20


def test_alloc_free_and_generation(pool: Pool) -> None:
    first = pool.alloc(10, owner=1)
    assert pool.in_use() == 1 and pool.is_current(*first)
    assert pool.free(*first)
    assert not pool.free(*first), "double free must be refused"
    again = pool.alloc(10, owner=2)
    assert again.id == first.id and again.generation != first.generation
    assert not pool.is_current(*first), "a late reply for the old generation is detectable"
    assert not pool.free(*first), "freeing with a stale generation must not free the new owner's slot"
    assert pool.in_use() == 1


def test_take_copies_out_and_frees_once(pool: Pool) -> None:
    slot = pool.alloc(10, owner=1)
    pool.view(slot.id)[:5] = b"hello"
    assert pool.take(slot.id, slot.generation + 1, 5) is None and pool.in_use() == 1  # not its generation
    assert pool.take(*slot, 5) == b"hello" and pool.in_use() == 0
    assert pool.take(*slot, 5) is None, "taken once"


def test_exhaustion_falls_back_to_larger_classes_then_raises(pool: Pool) -> None:
    slots = [pool.alloc(100, owner=1) for _ in range(4 + 2 + 1)]
    assert len({s.id for s in slots}) == 7
    with pytest.raises(PoolExhausted):
        pool.alloc(100, owner=1)
    pool.free(*slots[0])
    pool.alloc(100, owner=1)


def test_too_large_is_a_value_error(pool: Pool) -> None:
    with pytest.raises(ValueError, match="exceed"):
        pool.alloc(10 << 20, owner=1)


def test_views_are_shared_between_attachments(pool: Pool) -> None:
    other = Pool.attach(pool.handle)
    slot = pool.alloc(5, owner=1)
    pool.view(slot.id)[:5] = b"hello"
    assert bytes(other.view(slot.id)[:5]) == b"hello"
    other.view(slot.id)[:5] = b"HELLO"
    assert bytes(pool.view(slot.id)[:5]) == b"HELLO"
    assert other.free(*slot) and pool.in_use() == 0
    other.close()
    assert all(os.path.exists(f"/dev/shm/{name}") for name in pool.segment_names), "attach must not unlink"


def test_sweep_frees_only_dead_owners(pool: Pool) -> None:
    live = pool.alloc(10, owner=7)
    pool.alloc(10, owner=8)
    pool.alloc(2000, owner=8)
    assert pool.sweep({7}) == 2
    assert pool.in_use() == 1 and pool.is_current(*live)


def test_payload_and_meta_share_a_slot_and_move_together_when_they_outgrow_it(pool: Pool) -> None:
    slot = pool.put(b"body", b'{"a":1}', owner=1)
    assert pool.capacity(slot.id) == SMALL.size_classes()[0][0], "small enough for the smallest class"
    with pool.view(slot.id) as view:
        assert bytes(view[:4]) == b"body" and bytes(read_meta(view)) == b'{"a":1}'
    same = pool.write(*slot, b"BODY!", None, owner=1)  # fits: in place, meta kept
    assert same == slot
    with pool.view(same.id) as view:
        assert bytes(view[:5]) == b"BODY!" and bytes(read_meta(view)) == b'{"a":1}'
    moved = pool.write(*same, b"x" * 1500, None, owner=1)  # 1024-byte class too small: moves, meta kept
    assert pool.capacity(moved.id) == SMALL.size_classes()[1][0] and not pool.is_current(*same)
    with pool.view(moved.id) as view:
        assert bytes(view[:1500]) == b"x" * 1500 and bytes(read_meta(view)) == b'{"a":1}'
    replaced = pool.write(*moved, b"y", b"", owner=1)
    with pool.view(replaced.id) as view:
        assert bytes(view[:1]) == b"y" and bytes(read_meta(view)) == b""
    pool.free(*replaced)
    assert pool.in_use() == 0


def test_set_meta_grows_the_slot_when_payload_and_meta_do_not_fit(pool: Pool) -> None:
    slot = pool.alloc(1000, owner=7)
    with pool.view(slot.id) as view:
        view[:1000] = b"b" * 1000
    grown = pool.set_meta(slot, 1000, b"m" * 100, owner=7)
    assert grown != slot and not pool.is_current(*slot)
    with pool.view(grown.id) as view:
        assert bytes(view[:1000]) == b"b" * 1000 and bytes(read_meta(view)) == b"m" * 100
    with pytest.raises(ValueError, match="exceed"):
        pool.write(*grown, b"z" * (2 << 20), None, owner=7)  # larger than the largest slot
    assert pool.is_current(*grown), "a failed write leaves the slot as it was"
    pool.free(*grown)


def test_segments_are_private_and_unlinked() -> None:
    p = Pool.create(SMALL)
    names = p.segment_names
    for name in names:
        assert os.stat(f"/dev/shm/{name}").st_mode & 0o777 == 0o600
    assert len({n.rsplit("-", 1)[0] for n in names}) == 1, "one random per-run prefix"
    p.close()
    assert not any(os.path.exists(f"/dev/shm/{name}") for name in names)


def test_segments_are_private_and_unguessable(pool: Pool) -> None:
    prefixes = set()
    for name in pool.segment_names:
        assert os.stat(f"/dev/shm/{name}").st_mode & 0o777 == 0o600, name
        prefixes.add(name.removeprefix("spright-").split("-")[0])
    others = [Pool.create() for _ in range(8)]
    try:
        for other in others:
            prefixes.add(other.segment_names[0].removeprefix("spright-").split("-")[0])
    finally:
        for other in others:
            other.close()
    assert len(prefixes) == 9, "every pool draws a name of its own"
    assert all(len(p) == 32 and int(p, 16) for p in prefixes), prefixes  # 128 bits, in hex
    bits = "".join(f"{int(p, 16):0128b}" for p in prefixes)
    assert 0.4 < bits.count("1") / len(bits) < 0.6, "random, not a counter or a clock"


def test_a_pool_refuses_slot_ids_of_another_domain(pool: Pool) -> None:
    slot = pool.alloc(10, owner=1)
    foreign = slot.id ^ (3 << DOMAIN_SHIFT)  # the same class and index, in domain 2
    assert not pool.is_current(foreign, slot.generation)
    assert not pool.free(foreign, slot.generation) and not pool.hold(foreign, slot.generation, 1)
    assert pool.take(foreign, slot.generation, 10) is None
    assert pool.is_current(*slot)
