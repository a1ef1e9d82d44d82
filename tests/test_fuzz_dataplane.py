"""The receive side of the data plane under hypothesis: a buggy or hostile function emitting
descriptors with out-of-range slots, lengths or generations, unknown hops, chains, kinds and
request ids, in floods. The gateway and the workers never raise (what no correct peer sends is
logged, counted as dropped descriptors and dropped), and nothing reads or writes outside the slot a
descriptor names: another request's slot keeps its bytes and its owner. ``make fuzz`` runs more."""

from __future__ import annotations

import asyncio
import os
import random

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from spright import App
from spright.data.descriptor import FIELDS, KIND_MASK, REQUEST, Descriptor
from spright.host.counters import DROPPED, ERRORS
from spright.testing import TestClient
from tests.apps.domains import app as two_domains
from tests.apps.slow import app

LIMITS = {"I": 0xFFFFFFFF, "H": 0xFFFF, "B": 0xFF}
VICTIM_BYTES = b"another request's payload" * 10
small_or_any = {code: st.one_of(st.integers(0, 40), st.integers(0, limit)) for code, limit in LIMITS.items()}
descriptors = st.builds(Descriptor, **{name: small_or_any[code] for name, code in FIELDS})


EXAMPLES = int(os.environ.get("SPRIGHT_FUZZ_EXAMPLES", "100"))


async def still_serves(client: TestClient) -> None:
    if client.app is app:
        reply = await client.post("/echo", body=b"still serving")
        assert reply.status == 200 and reply.body == b"still serving"
    else:
        reply = await client.post("/charge", json={"amount": 3})
        assert reply.status == 200 and reply.json() == {"charged": 3}


@pytest.mark.parametrize("fuzzed", [app, two_domains], ids=["one-domain", "two-domains"])
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(st.lists(descriptors, min_size=1, max_size=40), min_size=1, max_size=4), st.data())
def test_hostile_descriptors_never_crash_nor_touch_another_slot(fuzzed: App, batches: list[list[Descriptor]],
                                                               data: st.DataObject) -> None:
    """With two domains the node's pool finds each slot's domain pool by its id (NodePool);
    with one it binds that pool's methods directly: both paths are fuzzed."""

    async def scenario() -> None:
        async with TestClient(fuzzed) as client:
            victims = []
            for domain in sorted({f.domain for f in client.table.functions}):
                pool = client.pool.domain(domain)
                for _ in range(random.Random(len(batches)).randint(1, 50)):  # an unguessable generation
                    pool.free(*pool.alloc(100, 7))
                victim = pool.alloc(len(VICTIM_BYTES), 999_999)
                with pool.view(victim.id) as view:
                    view[: len(VICTIM_BYTES)] = VICTIM_BYTES
                victims.append((pool, victim))
            for batch in batches:
                for d in batch:
                    assume(all((d.slot, d.generation) != (v.id, v.generation) for _, v in victims))
                packed = b"".join(d.pack() for d in batch)
                receiver = data.draw(st.sampled_from([client.gateway, *client.workers]))
                receiver.receive(packed)  # must not raise
                await asyncio.sleep(0)
            await asyncio.sleep(0.05)
            for pool, victim in victims:
                assert pool.is_current(victim.id, victim.generation), "a victim's slot was freed by a stranger"
                assert pool.read(victim.id, len(VICTIM_BYTES)) == VICTIM_BYTES
                pool.free(*victim)
            await still_serves(client)  # and the node still works

    asyncio.run(scenario())


async def test_what_no_correct_peer_sends_is_counted_as_dropped_not_as_a_handler_error() -> None:
    async with TestClient(app) as client:
        worker = client.workers[0]
        bogus_kind = Descriptor(**{**{name: 0 for name, _ in FIELDS}, "flags": KIND_MASK, "next_hop": worker.id})
        no_such_chain = Descriptor(**{**{name: 0 for name, _ in FIELDS}, "flags": REQUEST, "chain": 200})
        worker.receive(bogus_kind.pack() + no_such_chain.pack())
        client.gateway.receive(bogus_kind.pack())
        rows = client.gateway.metrics.rows()
        assert rows[worker.id][DROPPED] == 2 and rows[worker.id][ERRORS] == 0
        assert rows[0][DROPPED] == 1
        metrics = (await client.get("/metrics")).body
        assert b'spright_dropped_descriptors_total{domain="slow",function="echo"} 2.0' in metrics
