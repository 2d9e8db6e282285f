"""Contract v1 validation: valid and invalid samples for every event type, single and batch messages."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from stream.events import Limits, PredictionEvent, parse
from stream.times import epoch_ms

PRED = {"schema_version": 1, "event_id": "e1", "prediction_id": "p1", "model": "claims", "model_version": "3",
        "ts": "2026-11-01T12:00:00Z", "label": "approve"}
ACTION = {"schema_version": 1, "event_id": "e2", "prediction_id": "p1", "ts": "2026-11-01T12:05:00+01:00",
          "action": "override"}
OUTCOME = {"schema_version": 1, "event_id": "e3", "prediction_id": "p1", "ts": "2026-12-01T00:00:00Z",
           "label": "claim"}
ANNOTATION = {"schema_version": 1, "event_id": "e4", "model": "claims", "kind": "campaign",
              "start": "2026-11-01T00:00:00Z", "note": "weekend push"}


@pytest.mark.parametrize(("kind", "event"), [
    ("prediction", PRED),
    ("prediction", {**PRED, "score": 0.3, "band": "low", "segment": {"region": "eu"},
                    "features": {"age": 41, "country": "fr", "income": None, "ratio": 0.5}}),
    ("prediction", {**PRED, "future_field": {"nested": True}}),   # unknown fields are kept and ignored
    ("action", ACTION),
    ("action", {**ACTION, "action": "bypass", "final_label": "deny", "actor": "officer-7", "reason": "gut"}),
    ("outcome", OUTCOME),
    ("outcome", {**OUTCOME, "kind": "proxy", "value": 1e308}),  # the largest finite double is fine
    ("annotation", ANNOTATION),
    ("annotation", {**ANNOTATION, "end": "2026-11-03T00:00:00Z", "segment": {"region": "eu"}}),
])
def test_valid_events_are_accepted(kind: Any, event: dict[str, Any]) -> None:
    events, rejects = parse(kind, orjson.dumps(event))
    assert rejects == [] and len(events) == 1


@pytest.mark.parametrize(("kind", "raw", "reason"), [
    ("prediction", b"{not json", "not_json"),
    ("prediction", b"", "not_json"),                                                   # empty message
    ("prediction", b'"a string"', "not_an_object"),
    ("prediction", orjson.dumps({k: v for k, v in PRED.items() if k != "model"}), "missing_field"),
    ("prediction", orjson.dumps({**PRED, "model": 7}), "wrong_type"),                  # no coercion to str
    ("prediction", orjson.dumps({**PRED, "score": "0.5"}), "wrong_type"),              # nor to float
    ("prediction", orjson.dumps({**PRED, "segment": {"region": 1}}), "wrong_type"),
    ("prediction", orjson.dumps({**PRED, "features": {"f": [1]}}), "wrong_type"),
    ("prediction", orjson.dumps({**PRED, "event_id": ""}), "bad_value"),
    ("prediction", orjson.dumps({**PRED, "schema_version": 2}), "unsupported_schema_version"),
    ("prediction", orjson.dumps({**PRED, "ts": "2026-11-01T12:00:00"}), "bad_timestamp"),   # no zone
    ("prediction", orjson.dumps({**PRED, "ts": 1762000000}), "bad_timestamp"),              # epoch number
    ("prediction", orjson.dumps({**PRED, "ts": "2026-13-01T00:00:00Z"}), "bad_timestamp"),  # month 13
    ("action", orjson.dumps({**ACTION, "action": "shrug"}), "wrong_type"),
    ("outcome", orjson.dumps({**OUTCOME, "kind": "guess"}), "wrong_type"),
    ("outcome", b'{"schema_version":1,"event_id":"e","prediction_id":"p","ts":"2026-01-01T00:00:00Z",'
                b'"label":"x","value":1e999}', "not_json"),                            # infinity is not JSON
    ("annotation", orjson.dumps({**ANNOTATION, "kind": "party"}), "wrong_type"),
    ("annotation", orjson.dumps({k: v for k, v in ANNOTATION.items() if k != "start"}), "missing_field"),
])
def test_invalid_events_are_rejected_with_a_reason(kind: Any, raw: bytes, reason: str) -> None:
    events, rejects = parse(kind, raw)
    assert events == []
    assert [r.reason for r in rejects] == [reason]
    assert rejects[0].detail


def test_a_batch_keeps_good_elements_and_rejects_bad_ones_alone() -> None:
    batch = [PRED, {**PRED, "event_id": "e9", "ts": "soon"}, {**PRED, "event_id": "e10", "prediction_id": "p2"}, 4]
    events, rejects = parse("prediction", orjson.dumps(batch))
    assert [e.event_id for e in events] == ["e1", "e10"]  # type: ignore[union-attr]
    assert [(r.reason, r.index) for r in rejects] == [("bad_timestamp", 1), ("not_an_object", 3)]


@pytest.mark.parametrize(("value", "limits", "reason"), [
    (orjson.dumps({**PRED, "pad": "x" * 2000}), Limits(max_event_bytes=1000), "event_too_large"),
    (orjson.dumps([{**PRED, "pad": "x" * 2000}]), Limits(max_event_bytes=1000), "event_too_large"),
    (orjson.dumps([PRED] * 20), Limits(max_message_bytes=1000), "message_too_large"),
    (orjson.dumps([PRED] * 5), Limits(max_batch_events=4), "batch_too_large"),
])
def test_size_limits(value: bytes, limits: Limits, reason: str) -> None:
    events, rejects = parse("prediction", value, limits)
    assert events == [] and [r.reason for r in rejects] == [reason]


def test_timestamps_with_offsets_become_the_same_instant() -> None:
    a = PredictionEvent.model_validate({**PRED, "ts": "2026-11-01T13:00:00+01:00"})
    b = PredictionEvent.model_validate(PRED)
    assert epoch_ms(a.ts) == epoch_ms(b.ts) == 1_793_534_400_000


def test_deeply_nested_json_is_rejected_not_crashing() -> None:
    events, rejects = parse("prediction", b"[" * 100_000 + b"]" * 100_000)
    assert events == [] and rejects[0].reason == "not_json"
