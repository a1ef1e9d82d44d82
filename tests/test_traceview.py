"""spright.ops.traceview: the waterfall and the list ``spright trace`` prints, read back from a
recording console as a person would see them."""

from __future__ import annotations

import re

from rich.console import Console, RenderableType

from spright.data.traces import Span
from spright.ops.traceview import BAR, bar, duration, summary_table, waterfall
from tests.kit.traces import TRACE_ID, cart_trace

NAMES = ["GET /cart", "frontend", "call cart", "cart", "checkout"]


def render(renderable: RenderableType) -> list[str]:
    console = Console(record=True, width=120)
    console.print(renderable)
    return console.export_text().splitlines()


def rows(lines: list[str]) -> dict[str, str]:
    """The waterfall's span rows by span name (a name is the row's first cell)."""
    found = {}
    for line in lines:
        name = re.split(r"\s{2,}", line.strip())[0]
        if name in NAMES:
            found[name] = line
    return found


def cells(line: str) -> list[str]:
    """A row's text cells (the bar left out): cells stand two or more spaces apart."""
    return re.split(r"\s{2,}", line.replace(BAR, "").strip())


def test_one_row_per_span_depth_first_and_indented_by_depth() -> None:
    lines = render(waterfall(cart_trace()))
    names = [name for line in lines if (name := re.split(r"\s{2,}", line.strip())[0]) in NAMES]
    assert names == NAMES
    found = rows(lines)
    indent = {name: len(line) - len(line.lstrip()) for name, line in found.items()}
    depths = {"GET /cart": 0, "frontend": 1, "call cart": 2, "cart": 3, "checkout": 1}
    assert {name: indent[name] - indent["GET /cart"] for name in NAMES} == {n: 2 * d for n, d in depths.items()}


def test_the_columns_start_duration_queue_and_status() -> None:
    found = rows(render(waterfall(cart_trace(hop_status=503))))
    assert cells(found["GET /cart"]) == ["GET /cart", "0.0 µs", "900.0 µs", "-", "503"]
    assert cells(found["frontend"]) == ["frontend", "50.0 µs", "350.0 µs", "5.0 µs", "200"]
    assert cells(found["call cart"]) == ["call cart", "100.0 µs", "200.0 µs", "-", "200"]
    assert cells(found["cart"]) == ["cart", "150.0 µs", "130.0 µs", "3.0 µs", "200"]
    assert cells(found["checkout"]) == ["checkout", "420.0 µs", "430.0 µs", "0.0 µs", "503"]


def test_bars_sit_on_the_requests_time_axis() -> None:
    """900 µs over 60 columns: a column is 15 µs. frontend runs 50..400 µs: columns 3 to 27."""
    lines = render(waterfall(cart_trace()))
    found = rows(lines)
    axis = found["GET /cart"].index(BAR)
    header = next(line for line in lines if "timeline" in line)
    assert header.index("timeline") == axis  # the bars start under their column's title

    def placed(name: str) -> tuple[int, int]:
        line = found[name]
        begin = line.index(BAR)
        run = len(line[begin:]) - len(line[begin:].lstrip(BAR))
        assert BAR not in line[begin + run:], name  # one unbroken bar
        return begin - axis, run

    assert {name: placed(name) for name in NAMES} == {
        "GET /cart": (0, 60), "frontend": (3, 24), "call cart": (7, 13), "cart": (10, 9), "checkout": (28, 29)}


def test_the_bar_width_is_the_callers() -> None:
    found = rows(render(waterfall(cart_trace(), width=30)))
    assert found["GET /cart"].count(BAR) == 30
    assert found["checkout"].count(BAR) == 14  # 420..850 µs at 30 µs a column: columns 14 to 27


def test_siblings_are_drawn_in_the_order_they_started() -> None:
    trace = cart_trace()
    trace.root.children.reverse()  # checkout first in the tree, yet it started last
    lines = render(waterfall(trace))
    assert [name for name in (re.split(r"\s{2,}", line.strip())[0] for line in lines) if name in NAMES] == NAMES


def test_the_header_names_the_trace_and_an_incomplete_one_says_so() -> None:
    lines = render(waterfall(cart_trace()))
    assert lines[0].split() == [
        "trace", f"{TRACE_ID:032x}", "/cart", "900.0", "µs", "request", "77"]
    assert not any("incomplete" in line for line in lines)

    trace = cart_trace()
    trace.complete = False
    lines = render(waterfall(trace))
    assert lines[-1].startswith("incomplete: some of this request's records were overwritten")
    assert rows(lines).keys() == set(NAMES)  # what was found is still drawn


def test_a_bar_covers_at_least_one_column_and_stays_inside_the_request() -> None:
    root = Span("GET /", "server", "gateway", 0, 1_000, 61_000, 200)
    assert str(bar(root, root, 6)) == BAR * 6
    instant = Span("x", "hop", "x", 1, 31_000, 31_000, 200)  # no time at all, at the middle
    assert str(bar(instant, root, 6)) == "   " + BAR + "  "
    at_the_end = Span("x", "hop", "x", 1, 61_000, 61_000, 200)
    assert str(bar(at_the_end, root, 6)) == "     " + BAR
    outside = Span("x", "hop", "x", 1, 0, 80_000, 200)  # another clock's error: kept at the edges
    assert str(bar(outside, root, 6)) == BAR * 6
    failed = bar(Span("x", "hop", "x", 1, 1_000, 11_000, 503), root, 6)
    assert [(failed.plain[s.start:s.end], s.style) for s in failed.spans] == [(BAR, "red")]


def test_durations_are_shown_in_the_unit_that_fits() -> None:
    assert [duration(ns) for ns in (0, 870, 850_000, 999_949, 999_950, 12_345_678, 999_994_999, 2_000_000_000)] == [
        "0.0 µs", "0.9 µs", "850.0 µs", "999.9 µs", "1.00 ms", "12.35 ms", "999.99 ms", "2.00 s"]


def test_the_summary_has_a_row_per_trace_in_the_order_given() -> None:
    slow = cart_trace(trace_id=0xABCDEF0123456789 << 64)
    for span in (slow.root, *slow.root.children):
        span.start_ns += 5_000_000  # started 5 ms after the other
        span.end_ns += 7_000_000
    slow.root.children[0].children.append(Span("call b", "call", "frontend", 2, 5_100_000, 5_200_000, 200))
    failed = cart_trace(hop_status=502)
    failed.root.children.pop()
    lines = render(summary_table([slow, failed]))
    table = [cells(line) for line in lines if re.match(r"\s*[0-9a-f]{8}\b", line)]
    assert table == [["abcdef01", "/cart", "200", "2.90 ms", "2", "+5.00 ms"],
                     ["4bf92f35", "/cart", "502", "900.0 µs", "1", "+0.0 µs"]]
    assert lines[0].strip() == "2 traces"
    assert not any("incomplete" in line for line in lines)


def test_the_summary_marks_incomplete_traces() -> None:
    lost = cart_trace()
    lost.complete = False
    lines = render(summary_table([cart_trace(trace_id=1 << 124), lost]))
    assert [line.split()[:2] for line in lines if "/cart" in line] == [["10000000", "/cart"], ["4bf92f35", "*"]]
    assert lines[-1].strip() == "*: incomplete (records were lost)"
