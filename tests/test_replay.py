"""Replay's line classification and pacing (pure; the command itself is in test_cli_tools.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from stream.replay import classify, kind_of, replay

EVENT = {"schema_version": 1, "event_id": "e", "prediction_id": "p", "ts": "2026-11-20T00:00:00Z"}


@pytest.mark.parametrize("obj, kind", [
    ({"prediction_id": "p", "model": "m", "label": "a"}, "prediction"),          # has a model
    ({"prediction_id": "p", "action": "accept"}, "action"),                       # has an action
    ({"prediction_id": "p", "label": "a", "kind": "truth"}, "outcome"),           # prediction_id, no model
    ({"model": "m", "kind": "deploy", "note": "x", "start": "..."}, "annotation"),  # model without prediction_id
    ({"model": "m"}, None),                                                        # nothing to tell it by
    ({"label": "a"}, None),                                                        # no ids at all
])
def test_the_kind_of_a_line_is_told_by_its_fields(obj: dict[str, Any], kind: str | None) -> None:
    assert kind_of(obj) == kind


@pytest.mark.parametrize("line, expected", [
    ({"topic": "predictions", "key": "p1", "value": {"any": "thing"}},
     ("raw", ("predictions", b"p1", b'{"any":"thing"}'))),                        # JSON value re-encoded
    ({"topic": "trustgap.dlq", "value": "not json at all"},
     ("raw", ("trustgap.dlq", None, b"not json at all"))),                        # string value sent as is
    ({"topic": 5, "value": 1}, "bad_raw_line"),                                   # topic must be a string
])
def test_captured_message_lines_are_sent_as_is(line: dict[str, Any], expected: Any) -> None:
    got = classify(orjson.dumps(line))
    assert got == expected if isinstance(expected, tuple) else got.startswith(expected)  # type: ignore[union-attr]


def test_rate_limit_spaces_lines_by_one_over_rate(tmp_path: Path) -> None:
    path = tmp_path / "f.jsonl"
    path.write_bytes(b"\n".join(orjson.dumps({**EVENT, "event_id": f"e{i}", "action": "accept"}) for i in range(11)))
    now = [0.0]
    slept: list[float] = []

    def sleep(s: float) -> None:
        slept.append(s)
        now[0] += s

    result = replay([path], None, rate=5.0, sleep=sleep, clock=lambda: now[0])
    assert result.events == 11 and result.bad == []
    assert sum(slept) == pytest.approx(10 / 5.0)  # the 11th line goes out 2 s (of event clock) after the first
