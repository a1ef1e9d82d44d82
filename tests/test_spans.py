"""The span rings: records written and read back, wrap-around and what is lost, a writer in
another process racing the readers, and the segment's lifecycle."""

import multiprocessing
import multiprocessing.synchronize
import os
import subprocess
import sys
from collections.abc import Iterator
from multiprocessing import resource_tracker
from pathlib import Path

import pytest

from spright.data.traces import CALL, CALLED, HOP, SERVER, Record
from spright.host.spans import HEADER, SpanReader, SpanTable, SpanWriter, open_segment, segment_bytes

U64 = (1 << 64) - 1


def numbered(k: int, endpoint: int) -> Record:
    """Record number ``k``: every field derived from ``k``, so one torn between two records
    (the start of one, the end of another) cannot pass for whole."""
    return Record(kind=1 + k % 4, sampled=k & 1, endpoint=endpoint, peer=k & 0xFFFF, hop=(k >> 3) & 0xFF,
                  chain=(k * 7) & 0xFFFF, status=(k * 13) & 0xFFFF, request_id=k & 0xFFFFFFFF,
                  call_id=~k & 0xFFFFFFFF, t0=k, t1=k * 3, t2=k * 5, t3=U64 - k, trace_hi=k << 20,
                  trace_lo=U64 ^ k, parent_id=k * 11)


def write(writer: SpanWriter, record: Record) -> None:
    writer.write(record.kind, record.sampled, record.endpoint, record.peer, record.hop, record.chain, record.status,
                 record.request_id, record.call_id, record.t0, record.t1, record.t2, record.t3, record.trace_hi,
                 record.trace_lo, record.parent_id)


def write_numbered(writer: SpanWriter, endpoint: int, numbers: range) -> None:
    for k in numbers:
        write(writer, numbered(k, endpoint))


@pytest.fixture
def shared() -> Iterator[SpanTable]:
    table = SpanTable.create(3, 4)
    yield table
    table.close()


# -- in one process --------------------------------------------------------------------------
@pytest.mark.parametrize("is_shared", [True, False], ids=["shared", "private"])
def test_round_trip(is_shared: bool) -> None:
    table = SpanTable.create(3, 8, shared=is_shared)
    try:
        reader = table.reader()
        server = Record(SERVER, 1, 0, 2, 0, 3, 200, 0x1000_0001, 0, 10, 11, 12, 13, U64, 1, U64)
        hop = Record(HOP, 0, 2, 0, 1, 3, 503, 0x1000_0001, 0, 20, 21, 22, 0, 0, 0, 0)
        call = Record(CALL, 0, 2, 1, 255, 3, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, U64, 0, 0, 0, 0, 0, 0)
        called = Record(CALLED, 0, 1, 2, 1, 3, 200, 7, 9, 30, 31, 32, 0, 0, 0, 0)
        write(table.writer(0), server)
        writer = table.writer(2)
        write(writer, hop)
        write(writer, call)
        endpoint_1 = table.writer(1)
        endpoint_1.write(CALLED, 0, 1, 2, 1, 3, 200, 7, 9, 30, 31, 32, 0)  # the SERVER-only fields default to 0
        assert reader.read_new() == ([server, called, hop, call], 0)  # ring by ring, each in write order
        assert reader.read_new() == ([], 0)
        assert reader.latest() == [server, called, hop, call]
    finally:
        table.close()


def test_a_reader_starts_where_the_rings_stand(shared: SpanTable) -> None:
    writer = shared.writer(1)
    write_numbered(writer, 1, range(3))
    reader = shared.reader()
    assert reader.read_new() == ([], 0)
    write_numbered(writer, 1, range(3, 5))
    assert reader.read_new() == ([numbered(3, 1), numbered(4, 1)], 0)


def test_wrap_around_counts_what_was_lost(shared: SpanTable) -> None:
    reader = shared.reader()
    writer = shared.writer(2)
    write_numbered(writer, 2, range(10))  # capacity 4: the ring keeps 6..9
    assert reader.read_new() == ([numbered(k, 2) for k in range(6, 10)], 6)
    write_numbered(writer, 2, range(10, 13))
    assert reader.read_new() == ([numbered(k, 2) for k in range(10, 13)], 0)
    write_numbered(writer, 2, range(13, 17))  # exactly a ring's worth: nothing lost
    assert reader.read_new() == ([numbered(k, 2) for k in range(13, 17)], 0)
    write_numbered(writer, 2, range(17, 22))
    assert reader.read_new() == ([numbered(k, 2) for k in range(18, 22)], 1)


def test_latest(shared: SpanTable) -> None:
    write_numbered(shared.writer(0), 0, range(2))
    write_numbered(shared.writer(2), 2, range(100, 107))
    reader = shared.reader()
    assert reader.latest() == [numbered(0, 0), numbered(1, 0), *(numbered(k, 2) for k in range(103, 107))]
    assert reader.latest(3) == [numbered(0, 0), numbered(1, 0), *(numbered(k, 2) for k in range(104, 107))]
    assert reader.latest(100) == reader.latest()
    assert reader.latest(0) == reader.latest(-1) == []
    assert reader.read_new() == ([], 0), "latest() does not move read_new on"


def test_records_overwritten_while_copied_are_dropped(shared: SpanTable) -> None:
    """The writer laps the reader between its reading ``written`` and copying the records:
    what it may have overwritten is counted lost, never returned."""
    assert shared.name is not None
    fd = os.open(Path("/dev/shm", shared.name), os.O_RDONLY)
    writer = shared.writer(1)
    interfere = [range(6, 8)]

    def read(offset: int, length: int) -> bytes:
        if length > HEADER and interfere:  # a copy of records, not a header
            write_numbered(writer, 1, interfere.pop())
        return os.pread(fd, length, offset)

    try:
        reader = SpanReader(read, 3, 4)
        write_numbered(writer, 1, range(6))  # 2..5 are readable (and 1 in the spare slot)
        # 1 and 2 were overwritten by 6 and 7 during the copy, 3 would be by 8 were it being written
        assert reader.read_new() == ([numbered(4, 1), numbered(5, 1)], 2 + 2)
        assert reader.read_new() == ([numbered(6, 1), numbered(7, 1)], 0)
    finally:
        os.close(fd)


def test_a_restarted_writer_carries_on(shared: SpanTable) -> None:
    write_numbered(shared.writer(1), 1, range(3))
    reader = shared.reader()
    assert shared.name is not None
    other = SpanTable.attach(shared.name, 3, 4)
    try:
        write_numbered(other.writer(1), 1, range(3, 5))  # the worker's next process
        assert reader.read_new() == ([numbered(3, 1), numbered(4, 1)], 0)
    finally:
        other.close()


def test_bad_shapes(shared: SpanTable) -> None:
    with pytest.raises(IndexError, match="endpoint 3"):
        shared.writer(3)
    assert shared.name is not None
    with pytest.raises(ValueError, match="4 rings of 4 records"):
        SpanTable.attach(shared.name, 4, 4)
    with pytest.raises(ValueError, match="smaller"), open_segment(shared.name, 3, 5):
        pass
    with pytest.raises(ValueError, match="0 rings"):
        SpanTable.create(0, shared=False)


# -- across processes ------------------------------------------------------------------------
COUNT = 100_000


def write_in_child(name: str, start: multiprocessing.synchronize.Event,
                   done: multiprocessing.synchronize.Event) -> None:
    table = SpanTable.attach(name, 3, 16)
    writer = table.writer(1)
    start.wait()
    write_numbered(writer, 1, range(COUNT))
    done.set()
    table.close()


def test_readers_in_other_processes_see_only_whole_records() -> None:
    table = SpanTable.create(3, 16)
    assert table.name is not None
    context = multiprocessing.get_context("spawn")
    start, done = context.Event(), context.Event()
    child = context.Process(target=write_in_child, args=(table.name, start, done))
    read: list[Record] = []
    lost = reads = 0
    try:
        child.start()
        with open_segment(table.name, 3, 16) as from_file:
            live = table.reader()
            start.set()
            while not done.is_set():  # read while the child writes, through memory and the file
                records, missed = live.read_new()
                read += records
                lost += missed
                reads += 1
                for record in from_file.latest():
                    assert record == numbered(record.request_id, 1), "torn record from the file"
            records, missed = live.read_new()
            read += records
            lost += missed
            assert from_file.latest() == [numbered(k, 1) for k in range(COUNT - 16, COUNT)]
        child.join(60)
        assert child.exitcode == 0
    finally:
        if child.is_alive():
            child.kill()
        table.close()
    assert all(record == numbered(record.request_id, 1) for record in read), "torn record from memory"
    numbers = [record.request_id for record in read]
    assert numbers == sorted(set(numbers)), "repeated or reordered"
    assert len(read) + lost == COUNT, (len(read), lost, reads)
    assert numbers[-16:] == list(range(COUNT - 16, COUNT))


def test_segment_is_private_and_gone_after_close() -> None:
    table = SpanTable.create(2, 4)
    assert table.name is not None
    path = Path("/dev/shm", table.name)
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.stat().st_size >= segment_bytes(2, 4)
    other = SpanTable.attach(table.name, 2, 4)
    writer = other.writer(1)
    other.close()
    assert path.exists(), "only the creator unlinks"
    with pytest.raises((TypeError, ValueError)):  # its views are released with it (CPython says TypeError)
        writer.write(HOP, 0, 1, 0, 0, 0, 200, 1, 0, 1, 2, 3, 0)
    table.close()
    assert not path.exists()
    table.close()  # twice is harmless


ATTACH = """
import sys
from spright.host.spans import SpanTable
table = SpanTable.attach(sys.argv[1], 2, 4, tracked=sys.argv[2] == "tracked")
table.writer(1).write(2, 0, 1, 0, 0, 0, 200, 1, 0, 1, 2, 3, 0)
table.close()
"""


def test_an_untracked_attachment_outlives_its_process() -> None:
    """``spright worker`` started on its own attaches untracked: its end must not unlink the
    node's segment (a tracked attachment in a process of its own does: the tracker's doing)."""
    table = SpanTable.create(2, 4)
    try:
        assert table.name is not None
        path = Path("/dev/shm", table.name)
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
        subprocess.run([sys.executable, "-c", ATTACH, table.name, "untracked"], check=True, env=env)
        assert path.exists()
        assert [r.request_id for r in table.reader().latest()] == [1]
        subprocess.run([sys.executable, "-c", ATTACH, table.name, "tracked"], check=True, env=env,
                       capture_output=True)
        assert not path.exists()
        # our close() finds it gone and so leaves it registered with our own tracker: take it off
        resource_tracker.unregister(f"/{table.name}", "shared_memory")
    finally:
        table.close()
