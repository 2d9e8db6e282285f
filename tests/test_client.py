"""The producer SDK's call-site behaviour: defaults it fills in, events it refuses, keys it picks.

No broker is needed: the client buffers until its (here: hour-long) linger, and the tests read the buffer.
Sending through a real broker is in test_client_integration.py.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from fractions import Fraction
from typing import Any

import orjson
import pytest

from stream.client import (BatchProducer, Client, ClientClosed, ClientError, DeliveryError, DeliveryFailure,
                           InvalidEvent, NaiveTimestamp)
from stream.events import HumanActionEvent, OutcomeEvent, PredictionEvent, parse

UNREACHABLE = "127.0.0.1:1"  # nothing listens on port 1: produce only queues locally
T = datetime(2026, 11, 20, 9, 30, tzinfo=timezone.utc)


@pytest.fixture
def client() -> Iterator[Client]:
    c = Client(UNREACHABLE, linger_ms=3_600_000, conf={"log_level": 0})
    yield c
    take(c)  # nothing reaches a broker: drop what the test left, then close at once
    c.close(timeout=0)


def take(c: Client) -> list[tuple[str, bytes, dict[str, Any]]]:
    """Remove and return the buffered events as (kind, partition key, decoded event)."""
    out = []
    with c._lock:
        for kind, buf in c._buffers.items():
            out += [(kind, key, orjson.loads(raw)) for key, raw in buf.items]
            buf.items.clear()
            buf.nbytes = 2
    return out


@pytest.mark.integration
def test_importing_the_client_loads_no_faust_redis_or_aiokafka() -> None:
    code = "import sys, stream.client; print(sorted(m for m in ('faust', 'redis', 'aiokafka') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_prediction_gets_a_unique_event_id_an_aware_now_and_schema_version(client: Client) -> None:
    before = datetime.now(timezone.utc)
    ids = [client.log_prediction(f"p{i}", model="claims", model_version="v3", label="approve", score=0.91)
           for i in range(3)]
    after = datetime.now(timezone.utc)
    events = take(client)
    assert [e["event_id"] for _, _, e in events] == ids
    assert len(set(ids)) == 3 and all(uuid.UUID(i).version == 4 for i in ids)
    for kind, key, e in events:
        assert kind == "prediction" and e["schema_version"] == 1
        ts = datetime.fromisoformat(e["ts"])
        assert ts.utcoffset() == timedelta(0) and before <= ts <= after
        assert key == e["prediction_id"].encode()


def test_buffered_events_parse_as_the_worker_parses_them(client: Client) -> None:
    client.log_prediction("p1", model="claims", model_version="v3", label="approve", score=0.5, band="high",
                          segment={"region": "eu"}, features={"age": 41, "city": "Lyon", "income": None}, ts=T)
    client.log_action("p1", "override", final_label="review", actor="officer-7", reason="docs missing", ts=T)
    client.log_outcome("p1", "review", kind="proxy", value=1, ts=T)
    client.annotate("claims", "campaign", "spring promo", start=T, end=T + timedelta(days=2),
                    segment={"region": "eu"})
    events = take(client)
    parsed = {kind: parse(kind, orjson.dumps([e]))[0] for kind, _, e in events}  # type: ignore[arg-type]
    assert {k: len(v) for k, v in parsed.items()} == {"prediction": 1, "action": 1, "outcome": 1, "annotation": 1}
    p = parsed["prediction"][0]
    assert isinstance(p, PredictionEvent) and p.ts == T and p.features == {"age": 41.0, "city": "Lyon", "income": None}
    a = parsed["action"][0]
    assert isinstance(a, HumanActionEvent) and (a.action, a.final_label, a.actor) == ("override", "review",
                                                                                     "officer-7")
    o = parsed["outcome"][0]
    assert isinstance(o, OutcomeEvent) and (o.kind, o.value, o.label) == ("proxy", 1.0, "review")


def test_keys_are_prediction_ids_and_annotations_are_keyed_by_model(client: Client) -> None:
    client.log_action("p-42", "accept")
    client.log_outcome("p-43", "approve")
    client.annotate("fraud", "deploy", "v4 rolled out")
    assert sorted((kind, key) for kind, key, _ in take(client)) == [
        ("action", b"p-42"), ("annotation", b"fraud"), ("outcome", b"p-43")]


@pytest.mark.parametrize("score, expected", [
    (Decimal("0.25"), 0.25),   # Decimal from a database driver
    (Fraction(1, 4), 0.25),    # any numbers.Real (numpy floats are too)
    (1, 1.0),                  # an int score
])
def test_numeric_scores_of_other_types_become_floats(client: Client, score: Any, expected: float) -> None:
    client.log_prediction("p1", model="m", label="a", score=score)
    [(_, _, e)] = take(client)
    assert e["score"] == expected and isinstance(e["score"], float)


@pytest.mark.parametrize("call", [
    lambda c: c.log_prediction("p1", model="m", label="a", ts=datetime(2026, 11, 20, 9, 30)),   # prediction ts
    lambda c: c.log_action("p1", "accept", ts=datetime(2026, 11, 20)),                          # action ts
    lambda c: c.log_outcome("p1", "a", ts=datetime(2026, 11, 20)),                              # outcome ts
    lambda c: c.annotate("m", "deploy", "x", start=datetime(2026, 11, 20)),                     # annotation start
    lambda c: c.annotate("m", "deploy", "x", start=T, end=datetime(2026, 11, 21)),              # annotation end
])
def test_naive_datetimes_are_refused_at_the_call_site(client: Client, call: Any) -> None:
    with pytest.raises(NaiveTimestamp, match="naive datetime"):
        call(client)
    assert take(client) == [] and client.stats.accepted == 0


@pytest.mark.parametrize("call, field", [
    (lambda c: c.log_action("p1", "approve"), "action"),                                   # not an action kind
    (lambda c: c.log_prediction("", model="m", label="a"), "prediction_id"),                # empty id
    (lambda c: c.log_prediction("p1", model="m" * 129, label="a"), "model"),                # name too long
    (lambda c: c.log_prediction("p1", model="m", label="a", score="0.9"), "score"),         # string score
    (lambda c: c.log_prediction("p1", model="m", label="a", score=True), "score"),          # bool score
    (lambda c: c.log_prediction("p1", model="m", label="a", segment={"r": 1}), "segment"),  # non-string segment
    (lambda c: c.log_prediction("p1", model="m", label="a", features={"f": [1]}), "features"),  # list feature
    (lambda c: c.log_outcome("p1", "a", kind="guess"), "kind"),                             # not truth/proxy
    (lambda c: c.annotate("m", "holiday", "x"), "kind"),                                    # not an annotation kind
    (lambda c: c.log_prediction(7, model="m", label="a"), "prediction_id"),                 # int id
    (lambda c: c.send("outcome", {"prediction_id": "p", "ts": "2026-11-20T00:00:00Z", "label": "a",
                                  "schema_version": 2}), "schema_version"),                # future contract
    (lambda c: c.send("action", {"prediction_id": "p", "action": "accept", "ts": "yesterday"}), "ts"),
])
def test_contract_violations_raise_invalid_event_naming_the_field(client: Client, call: Any, field: str) -> None:
    with pytest.raises(InvalidEvent, match=field):
        call(client)
    assert take(client) == [] and client.stats.accepted == 0


def test_an_event_over_the_size_limit_is_refused(client: Client) -> None:
    with pytest.raises(InvalidEvent, match="over the 65536-byte limit"):
        client.annotate("m", "other", "x" * 70_000)


def test_send_keeps_a_given_event_id_and_fills_a_missing_one(client: Client) -> None:
    given = client.send("action", {"event_id": "e-1", "prediction_id": "p", "action": "accept",
                                   "ts": "2026-11-20T00:00:00Z"})
    filled = client.send("action", {"prediction_id": "p", "action": "bypass", "ts": "2026-11-20T00:00:00Z"})
    assert given == "e-1" and len(filled) == 32
    assert [e["event_id"] for _, _, e in take(client)] == ["e-1", filled]


def test_a_closed_client_refuses_events() -> None:
    c = Client(UNREACHABLE, linger_ms=3_600_000, conf={"log_level": 0})
    c.close(timeout=0)
    with pytest.raises(ClientClosed):
        c.log_action("p", "accept")


def test_a_client_without_a_broker_address_says_how_to_give_one() -> None:
    with pytest.raises(ClientError, match="bootstrap_servers"):
        Client()


def test_batch_producer_keeps_its_interface_for_the_simulator() -> None:
    p = BatchProducer({"bootstrap.servers": UNREACHABLE, "log_level": 0}, {"predictions": "x.predictions"})
    p.add("action", {"schema_version": 1, "event_id": "e", "prediction_id": "p", "ts": "2026-11-20T00:00:00Z",
                     "action": "accept"})
    assert p.sent == 1 and p.failures == 0
    take(p._client)
    p._client.close(timeout=0)


# --- delivery failures (no broker: messages time out after 300 ms) ------------------------------------------

def _failing_client(**kwargs: Any) -> Client:
    return Client(UNREACHABLE, linger_ms=10, conf={"message.timeout.ms": 300, "log_level": 0}, **kwargs)


def test_lost_messages_reach_the_callback_and_the_counter() -> None:
    failures: list[DeliveryFailure] = []
    c = _failing_client(on_delivery_error=failures.append)
    c.log_prediction("p1", model="m", label="a")
    c.log_prediction("p2", model="m", label="a")
    c.log_action("p1", "accept")
    c.close(timeout=20)  # no exception: the callback was told
    assert sum(f.events for f in failures) == 3
    assert {f.topic for f in failures} == {"trustgap.predictions", "trustgap.actions"}
    assert c.stats.failed == 3 and c.stats.delivered == 0 and c.stats.accepted == 3


def test_lost_messages_without_a_callback_make_flush_raise() -> None:
    c = _failing_client()
    c.log_outcome("p1", "a")
    with pytest.raises(DeliveryError, match="1 events were not delivered"):
        c.flush(timeout=20)
    assert c.stats.failed == 1
    c.close(timeout=0)  # the failure was reported once; closing does not raise it again
