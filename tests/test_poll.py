"""The poll (D-SPRIGHT) rings across processes: memory ordering under stress, and cleanup.

The contract suite (test_contract.py) runs poll in one process; this one proves what only
separate processes can: producers on other CPUs, publishing records and ring indices with
plain stores, never let the consumer see a record before it is written, nor lose, repeat
or reorder one. Also the adaptive mode's sleep and wake-up across processes.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import struct
from pathlib import Path

import pytest

from spright.data import descriptor
from spright.transport.poll import CAPACITY, PollTransport
from tests.kit.dataplane import make_table, started

PER_SENDER = 1_000_000
BATCHES = (1, 7, 64, 300, CAPACITY + 5)  # single records, odd sizes, a batch larger than a ring
_IDS = struct.Struct("<4xH14xI8x")  # sender, request_id of a descriptor (see descriptor.FIELDS)
assert descriptor.OFFSETS["sender"] == 4 and descriptor.OFFSETS["request_id"] == 20
# The request_id of the descriptor each producer sends after its last: a sender's records arrive
# in order, so once its END is in, whatever extra it was going to deliver is in too (no waiting).
END = 0xFFFFFFFF


def produce(transport: PollTransport, sender: int, count: int, done: multiprocessing.synchronize.Event) -> None:
    async def main() -> None:
        endpoint = await transport.attach(sender, lambda data: None)
        sent, turn = 0, 0
        while sent < count:
            n = min(BATCHES[turn % len(BATCHES)], count - sent)
            endpoint.send(b"".join(descriptor.hop(0, sender, 0, 0, 0, 0, 0, 0, 0, sent + i) for i in range(n)))
            sent, turn = sent + n, turn + 1
            if turn % 16 == 0:
                await asyncio.sleep(0)  # let records waiting for a full ring go
        endpoint.send(descriptor.hop(0, sender, 0, 0, 0, 0, 0, 0, 0, END))
        while not done.is_set():  # keep the loop turning: what waits for room still goes
            await asyncio.sleep(0.001)
        endpoint.close()

    asyncio.run(main())


@pytest.mark.slow
async def test_two_producer_processes_a_million_descriptors_each_none_lost_repeated_or_reordered(
    tmp_path: Path,
) -> None:
    transport = started(PollTransport(tmp_path, make_table(2)))
    received: dict[int, list[int]] = {1: [], 2: []}
    ended: set[int] = set()
    finished = asyncio.Event()

    def on_receive(data: bytes) -> None:
        for sender, request_id in _IDS.iter_unpack(data):
            received[sender].append(request_id)
            if request_id == END:
                ended.add(sender)
        if len(ended) == 2:
            finished.set()

    endpoint = await transport.attach(0, on_receive)
    context = multiprocessing.get_context("spawn")
    done = context.Event()
    producers = [context.Process(target=produce, args=(transport, sender, PER_SENDER, done)) for sender in (1, 2)]
    try:
        for process in producers:
            process.start()
        await asyncio.wait_for(finished.wait(), 120)
    finally:
        done.set()
        for process in producers:
            process.join(30)
        endpoint.close()
        transport.stop()
    assert [p.exitcode for p in producers] == [0, 0]
    for sender in (1, 2):
        ids = received[sender]
        assert len(ids) == PER_SENDER + 1, f"sender {sender}: {len(ids) - 1} received before its END"
        assert ids == [*range(PER_SENDER), END], f"sender {sender}: lost, repeated or reordered"
    assert not any(os.path.exists(f"/dev/shm/{name}") for name in transport.shm_names()), "stop() unlinks the rings"


async def test_an_idle_receiver_sleeps_and_the_next_sender_wakes_it(tmp_path: Path) -> None:
    """Adaptive mode: after idle_us without a descriptor the poller stops spinning (no loop
    callbacks left) and waits on its bell; a sender rings it and the descriptor arrives."""
    transport = started(PollTransport(tmp_path, make_table(1), idle_us=1000))
    got: list[bytes] = []
    receiver = await transport.attach(1, got.append)
    sender = await transport.attach(0, lambda data: None)
    try:
        for round_ in range(3):
            await asyncio.sleep(0.05)  # far past idle_us: asleep by now
            loop = asyncio.get_running_loop()
            assert not loop._ready, "an asleep poller schedules nothing"  # type: ignore[attr-defined]
            sender.send(descriptor.hop(1, 0, 0, 0, 0, 0, 0, 0, 0, round_))
            async with asyncio.timeout(5):
                while len(got) <= round_:
                    await asyncio.sleep(0.001)
        assert [struct.unpack_from("<I", data, 20)[0] for data in got] == [0, 1, 2]
    finally:
        sender.close()
        receiver.close()
        transport.stop()
    assert not list(tmp_path.glob("wake-*.sock")), "the bells are removed"
