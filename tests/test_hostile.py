"""Hostile input: fuzzed messages never crash parsing or the worker; every bad one is dead-lettered with a reason.

The pure part throws many hypothesis examples at `events.parse`; the worker part sends fewer, larger examples
through a real worker and checks the dead-letter topic and the counters against `events.parse` as the oracle.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stream.events import REASONS, parse
from stream.times import epoch_ms
from tests.support.harness import Deployment, metric_value, metrics_text, wait_for
from tests.support.hostile import GOOD, LIMITS, messages

NOW = datetime.now(timezone.utc)

@settings(max_examples=1500, deadline=None)
@given(messages)
def test_parse_never_raises_and_accounts_for_every_element(raw: bytes) -> None:
    events, rejects = parse("prediction", raw, LIMITS)
    assert all(r.reason in REASONS and r.describe() for r in rejects)
    doc: Any
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        assert (events, [r.reason for r in rejects]) == ([], ["not_json"])
        return
    if isinstance(doc, list) and len(raw) <= LIMITS.max_message_bytes and len(doc) <= LIMITS.max_batch_events:
        assert len(events) + len(rejects) == len(doc)  # each element accepted or rejected on its own
    else:
        assert len(events) + len(rejects) == 1


@pytest.mark.parametrize("value", [
    math.nan,   # NaN is not a score
    math.inf,   # nor is infinity
])
def test_non_finite_scores_are_rejected_as_bad_values(value: float) -> None:
    # orjson writes NaN/inf as null, so build the event as a Python object through the validator path.
    from stream.events import validate

    result = validate("prediction", {**GOOD, "score": value}, b"")
    assert getattr(result, "reason", None) in ("bad_value", "wrong_type")


# --- the worker ------------------------------------------------------------------------------------------------


@pytest.fixture
def deployment(deploy: Callable[..., Deployment]) -> Deployment:
    return deploy(env={"TRUSTGAP_MAX_EVENT_BYTES": str(LIMITS.max_event_bytes),
                       "TRUSTGAP_MAX_MESSAGE_BYTES": str(LIMITS.max_message_bytes),
                       "TRUSTGAP_MAX_BATCH_EVENTS": str(LIMITS.max_batch_events),
                       "TRUSTGAP_MAX_FUTURE_SECONDS": "3600",
                       "TRUSTGAP_DEFAULTS__ALLOWED_LATENESS_SECONDS": "86400"})


def future(event: dict[str, Any]) -> bool:
    return epoch_ms(datetime.fromisoformat(event["ts"])) > epoch_ms(datetime.now(timezone.utc)) + 3600 * 1000


@pytest.mark.integration
@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.data_too_large,
                                                                 HealthCheck.too_slow])
@given(batch=st.lists(messages, min_size=30, max_size=30),
       far_future=st.lists(st.integers(2, 10_000), min_size=1, max_size=3))
def test_worker_dead_letters_every_invalid_message_counts_valid_ones_and_keeps_running(
        deployment: Deployment, batch: list[bytes], far_future: list[int]) -> None:
    dep = deployment
    if not dep.workers:
        dep.start_worker()
    worker = dep.workers[0]
    port = worker.web_port  # type: ignore[attr-defined]
    # Valid events from days (up to decades) ahead: dead-lettered as "future", and must not move the watermark.
    ahead = [dict(GOOD, event_id=f"fut{d}", prediction_id=f"fut{d}",
                  ts=(NOW + timedelta(days=d)).isoformat().replace("+00:00", "Z")) for d in far_future]
    batch = batch + [orjson.dumps(e) for e in ahead]
    expected_valid = expected_dead = 0
    for raw in batch:
        events, rejects = parse("prediction", raw, LIMITS)
        expected_dead += len(rejects)
        for e in events:
            if future(orjson.loads(e.model_dump_json())):
                expected_dead += 1
            else:
                expected_valid += 1
    text = metrics_text(port)
    seen_before = metric_value(text, "trustgap_events_total")
    dead_before = metric_value(text, "trustgap_invalid_events_total")
    dep.send("predictions", batch, key=b"fuzz")
    wait_for(lambda: metric_value(metrics_text(port), "trustgap_events_total")
             >= seen_before + expected_valid + expected_dead, 60, what="every fuzzed element to be handled")
    text = metrics_text(port)
    assert metric_value(text, "trustgap_events_total") == seen_before + expected_valid + expected_dead
    assert metric_value(text, "trustgap_invalid_events_total") == dead_before + expected_dead
    dead = dep.read("dlq", int(dead_before + expected_dead), timeout=30)
    assert all(d["reason"].split(":")[0] in REASONS for d in dead)
    assert sum(1 for d in dead if d["reason"].startswith("future")) >= len(ahead)
    assert worker.poll() is None
    import redis

    from stream.state import keys

    with redis.Redis.from_url(dep.stack.redis_url) as r:
        marks = list(r.hgetall(keys.EVENT_TIME).values())  # the event time the watermark is made of
    horizon = epoch_ms(datetime.now(timezone.utc)) + 3600 * 1000
    assert all(int(m) <= horizon for m in marks)  # (none when no fuzzed element was valid)
