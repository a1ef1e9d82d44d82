"""W3C Trace Context parsing and formatting (the spec's examples, then hypothesis), and the sampler."""

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from spright.data import tracecontext
from spright.data.tracecontext import (
    Sampler,
    TraceContext,
    format_traceparent,
    new_span_id,
    new_trace_id,
    parse,
)

TRACE = "0af7651916cd43dd8448eb211c80319c"
PARENT = "b7ad6b7169203331"
TRACE_ID = int(TRACE, 16)
PARENT_ID = int(PARENT, 16)


# -- traceparent: the spec's examples ------------------------------------------------------
@pytest.mark.parametrize(("header", "sampled"), [
    (f"00-{TRACE}-{PARENT}-01", True),
    (f"00-{TRACE}-{PARENT}-00", False),
    (f"00-{TRACE}-{PARENT}-09", True),  # flag bits other than sampled are ignored
    (f"00-{TRACE}-{PARENT}-fe", False),
    (f" 00-{TRACE}-{PARENT}-01\t", True),  # HTTP's optional whitespace around the value
    # a later version: its first four fields, whatever follows the next dash
    (f"cc-{TRACE}-{PARENT}-01", True),
    (f"cc-{TRACE}-{PARENT}-01-what-the-future-will-be-like", True),
    (f"01-{TRACE}-{PARENT}-00-", False),
])
def test_valid_traceparents(header: str, sampled: bool) -> None:
    assert parse(header, None) == TraceContext(TRACE_ID, PARENT_ID, sampled, "")


@pytest.mark.parametrize("header", [
    "",
    f"00-{TRACE}-{PARENT}-0",  # too short
    f"00-{TRACE}-{PARENT}-01-",  # version 00 is exactly 55 characters
    f"00-{TRACE}-{PARENT}-01-what-the-future-will-be-like",
    f"00-{TRACE.upper()}-{PARENT}-01",  # lower-case hex only
    f"00-{TRACE}-{PARENT.upper()}-01",
    f"00-{TRACE}-{PARENT}-0A",
    f"0A-{TRACE}-{PARENT}-01",
    f"00-{'0' * 32}-{PARENT}-01",  # all-zero ids
    f"00-{TRACE}-{'0' * 16}-01",
    f"ff-{TRACE}-{PARENT}-01",  # version ff is forbidden
    f"ff-{TRACE}-{PARENT}-01-future",
    f"cc-{TRACE}-{PARENT}-01.what-the-future-will-be-like",  # after the flags: a dash or nothing
    f"00-{TRACE[:-1]}g-{PARENT}-01",
    f"00-{TRACE}-{PARENT[:-1]}x-01",
    f"00-{TRACE}-{PARENT}-0x",
    f"00_{TRACE}-{PARENT}-01",
    f"00-{TRACE}_{PARENT}-01",
    f"00-{TRACE}-{PARENT}_01",
    f"00-0x{TRACE[2:]}-{PARENT}-01",  # what int(, 16) would take but the spec does not
    f"00-{TRACE[:-2]}_1-{PARENT}-01",
    f"00-+{TRACE[1:]}-{PARENT}-01",
    f"00-{TRACE}-{PARENT}-01, 00-{TRACE}-{PARENT}-01",  # two headers folded into one
    f"00-{TRACE}-{PARENT}-01\n",
])
def test_invalid_traceparents(header: str) -> None:
    assert parse(header, "vendor=kept-only-with-a-valid-parent") is None


def test_no_traceparent() -> None:
    assert parse(None, "a=1") is None


# -- tracestate ------------------------------------------------------------------------------
VALID = f"00-{TRACE}-{PARENT}-01"


def test_tracestate_passes_through_stripped() -> None:
    assert parse(VALID, " congo=t61rcWkgMzE, rojo=00f067aa0ba902b7 ").tracestate == \
        "congo=t61rcWkgMzE, rojo=00f067aa0ba902b7"
    assert parse(VALID, None).tracestate == ""
    assert parse(VALID, "").tracestate == ""


def test_tracestate_over_the_limits_is_dropped() -> None:
    thirty_two = ",".join(f"k{i}=v" for i in range(32))
    assert parse(VALID, thirty_two).tracestate == thirty_two
    assert parse(VALID, thirty_two + ",k32=v").tracestate == ""
    assert parse(VALID, thirty_two + ", ,,").tracestate == thirty_two + ", ,,"  # empty members do not count
    at_limit = "a=" + "b" * 510
    assert parse(VALID, at_limit).tracestate == at_limit
    assert parse(VALID, at_limit + "c").tracestate == ""


# -- formatting and ids ----------------------------------------------------------------------
def test_format() -> None:
    assert format_traceparent(TRACE_ID, PARENT_ID, True) == VALID
    assert format_traceparent(1, 1, False) == f"00-{'0' * 31}1-{'0' * 15}1-00"


@pytest.mark.parametrize(("trace_id", "span_id"), [(0, 1), (1, 0), (1 << 128, 1), (1, 1 << 64), (-1, 1)])
def test_format_refuses_what_no_header_can_carry(trace_id: int, span_id: int) -> None:
    with pytest.raises(ValueError, match="non-zero"):
        format_traceparent(trace_id, span_id, True)


@given(st.integers(1, (1 << 128) - 1), st.integers(1, (1 << 64) - 1), st.booleans())
def test_format_parse_round_trip(trace_id: int, span_id: int, sampled: bool) -> None:
    assert parse(format_traceparent(trace_id, span_id, sampled), None) == TraceContext(trace_id, span_id, sampled)


@given(st.one_of(st.none(), st.text()), st.one_of(st.none(), st.text()))
def test_junk_never_raises(traceparent: str | None, tracestate: str | None) -> None:
    context = parse(traceparent, tracestate)
    assert context is None or (0 < context.trace_id < 1 << 128 and 0 < context.parent_id < 1 << 64)


@given(st.from_regex(r"[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}(-.*)?", fullmatch=True))
def test_near_misses_parse_only_by_the_rules(header: str) -> None:
    """Well-formed heads with every version, id and tail: accepted exactly when the rules say."""
    ok = (not header.startswith("ff") and int(header[3:35], 16) != 0 and int(header[36:52], 16) != 0
          and (len(header) == 55 or not header.startswith("00")))
    context = parse(header, None)
    assert (context is not None) == ok
    if context is not None:
        assert format_traceparent(context.trace_id, context.parent_id, context.sampled)[3:52] == header[3:52]
        assert context.sampled == bool(int(header[53:55], 16) & 1)


def test_new_ids_are_in_range_and_differ() -> None:
    traces = {new_trace_id() for _ in range(1000)}
    spans = {new_span_id() for _ in range(1000)}
    assert len(traces) == len(spans) == 1000
    assert all(0 < t < 1 << 128 for t in traces) and all(0 < s < 1 << 64 for s in spans)
    assert max(traces).bit_length() > 64  # the whole 128 bits are used


def test_new_ids_are_never_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    draws = iter([0, 0, 5])
    monkeypatch.setattr(tracecontext._random, "getrandbits", lambda bits: next(draws))
    assert new_trace_id() == 5
    draws = iter([0, 7])
    assert new_span_id() == 7


# -- the sampler -----------------------------------------------------------------------------
SAMPLED = TraceContext(TRACE_ID, PARENT_ID, True)
UNSAMPLED = TraceContext(TRACE_ID, PARENT_ID, False)


def test_parent_decides_whatever_the_rate() -> None:
    for rate in (0.0, 0.5, 1.0):
        sampler = Sampler(rate)
        assert all(sampler.head(SAMPLED) for _ in range(100))
        assert not any(sampler.head(UNSAMPLED) for _ in range(100))


def test_rate_without_parent(monkeypatch: pytest.MonkeyPatch) -> None:
    assert not any(Sampler(0.0).head(None) for _ in range(1000))
    assert all(Sampler(1.0).head(None) for _ in range(1000))
    monkeypatch.setattr(tracecontext, "_random", random.Random(25))
    expected = random.Random(25)
    draws = [Sampler(0.3).head(None) for _ in range(1000)]
    assert draws == [expected.random() < 0.3 for _ in range(1000)]
    assert 200 < sum(draws) < 400


def test_tail_rules() -> None:
    plain = Sampler(0.1)
    assert not plain.records_all and not plain.off
    assert plain.keep(True, 200, 1) and not plain.keep(False, 500, 10**12)

    errors = Sampler(errors=True)
    assert errors.records_all and not errors.off
    assert errors.keep(False, 500, 1) and errors.keep(False, 504, 1)
    assert not errors.keep(False, 499, 10**12)
    assert errors.keep(True, 200, 1)

    slow = Sampler(slower_than=0.25)
    assert slow.records_all and not slow.off
    assert slow.keep(False, 200, 250_000_000) and not slow.keep(False, 200, 249_999_999)
    assert not slow.keep(False, 503, 1)

    both = Sampler(0.0, slower_than=1.0, errors=True)
    assert both.keep(False, 500, 1) and both.keep(False, 200, 10**9) and not both.keep(False, 404, 10**9 - 1)


def test_off() -> None:
    assert Sampler().off and Sampler(0.0).off
    assert not Sampler(1e-9).off


@pytest.mark.parametrize("rate", [-0.1, 1.01, float("nan"), float("inf")])
def test_bad_rate(rate: float) -> None:
    with pytest.raises(ValueError, match=repr(rate)):
        Sampler(rate)


@pytest.mark.parametrize("slower_than", [0.0, -1.0, float("nan")])
def test_bad_slower_than(slower_than: float) -> None:
    with pytest.raises(ValueError, match=repr(slower_than)):
        Sampler(slower_than=slower_than)
