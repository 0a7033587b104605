"""Property-based tests over the events stream (`notifyctl send --events`): hostile lines never crash
the reader, every rejection names its line and a reason, and every valid event is read at its line."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from notifyctl.intake.events import iter_events

VALID = {"event_id": "e1", "user_id": "u1", "template": "welcome", "data": {"a": 1}}

json_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=20))
json_values = st.recursive(
    json_scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=10,
)  # fmt: skip


@st.composite
def event_line(draw: st.DrawFn) -> tuple[bytes, bool | None]:
    """One line and whether it is a valid event (None: either, the model decides)."""
    kind = draw(st.sampled_from(["valid", "mutated", "hostile", "blank"]))
    if kind == "valid":
        event: dict[str, Any] = {**VALID, "event_id": draw(st.text("abcdef0123456789", min_size=1, max_size=12))}
        if draw(st.booleans()):
            event["channels"] = draw(st.lists(st.sampled_from(["email", "sms", "webhook"]), max_size=2))
        return json.dumps(event).encode(), True
    if kind == "mutated":
        event = dict(VALID)
        key = draw(st.sampled_from([*VALID, "extra", "channels"]))
        event[key] = draw(json_values)
        return json.dumps(event).encode(), None
    if kind == "blank":
        return draw(st.sampled_from([b"", b"   ", b"\t"])), None
    hostile = draw(st.sampled_from([
        b'{"event_id": "e", "event_id": "f", "user_id": "u", "template": "t"}',  # duplicate key
        b'{"event_id": "e", "user_id": "u", "template": "t", "data": {"x": NaN}}',
        b'{"event_id": "e", "user_id": "u", "template": "t", "data": {"x": Infinity}}',
        b'{"event_id": "e\x00", "user_id": "u", "template": "t"}',
        b'{"event_id": "e", "user_id": "u", "template": "t", "data": ' + b'{"a": ' * 40 + b"1" + b"}" * 41,
        b'{"event_id": "' + b"x" * 10_000 + b'", "user_id": "u", "template": "t"}',
        b'{"event_id": "\xff\xfe", "user_id": "u", "template": "t"}',
        b"[1, 2, 3]",
        b'"just a string"',
        b"{not json",
        b'{"event_id": 1, "user_id": "u", "template": "t"}',
        b'=HYPERLINK("http://evil")',
    ]))  # fmt: skip
    return hostile, False


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lines=st.lists(event_line(), min_size=1, max_size=25), bom=st.booleans(), crlf=st.booleans())
def test_events_stream_never_crashes_and_reports_lines(
    lines: list[tuple[bytes, bool | None]], bom: bool, crlf: bool
) -> None:
    newline = b"\r\n" if crlf else b"\n"
    content = (b"\xef\xbb\xbf" if bom else b"") + newline.join(line for line, _ in lines) + newline
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "events.jsonl"
        path.write_bytes(content)
        results = list(iter_events(path))
    by_line = {result.line: result for result in results}
    assert len(by_line) == len(results), "two results for one line"
    assert [r.line for r in results] == sorted(r.line for r in results)
    for result in results:
        assert (result.value is None) != (result.error is None)
        assert 1 <= result.line <= len(lines)
        if result.error is not None:
            assert result.error.line == result.line
            assert result.error.reason.strip()
    for number, (_, valid) in enumerate(lines, start=1):
        if valid is True:
            assert number in by_line and by_line[number].value is not None, f"valid event on line {number} lost"
        elif valid is False:
            assert number in by_line and by_line[number].error is not None, f"hostile line {number} accepted"
