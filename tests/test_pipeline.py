"""End to end through a real worker process, a real broker and a real redis-server: on Apache Kafka, and on Tansu
too (the embedded broker of `make demo`), so that the default a new user starts with stays supported.

The stream carries ~20% re-sent events and sends every action and outcome *before* its prediction, so the
counts are exact only if deduplication and the pending join both work.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from tests.support.harness import Deployment, eventually, metric_value, metrics_text, wait_for
from tests.support.truth import batches, expected_counts, generate, read_counts, with_duplicates

pytestmark = pytest.mark.integration


@pytest.fixture(params=["deploy", "deploy_tansu"])
def deployment(request: pytest.FixtureRequest) -> Deployment:
    deploy: Callable[..., Deployment] = request.getfixturevalue(request.param)
    return deploy(defaults__allowed_lateness_seconds="86400", max_message_bytes="200000")


def test_counts_equal_generated_truth_despite_duplicates_and_early_joins(deployment: Deployment) -> None:
    rng = random.Random(7)
    preds, actions, outcomes = generate(rng, 600)
    truth = expected_counts(preds, actions, outcomes)
    worker = deployment.start_worker()
    sent_actions = with_duplicates(rng, actions)
    sent_outcomes = with_duplicates(rng, outcomes)
    sent_preds = with_duplicates(rng, preds)
    # Actions and outcomes first, predictions last: every join goes through the pending path. Outcomes travel
    # as the contract's JSON-array batch messages.
    deployment.send("actions", sent_actions)
    deployment.send("outcomes", list(batches(sent_outcomes, 50)), key=b"batch")
    port = worker.web_port  # type: ignore[attr-defined]
    wait_for(lambda: metric_value(metrics_text(port), "trustgap_events_total", result="pending")
             == len(actions) + len(outcomes), 60, what="every action and outcome to wait for its prediction")
    deployment.send("predictions", sent_preds)
    models = {k[0] for k in truth}
    starts = {k[1] for k in truth}
    wait_for(lambda: read_counts(deployment, models, starts) == truth, 90,
             what="Redis window counts to equal the generated truth")

    distinct = len(preds) + len(actions) + len(outcomes)
    copies = len(sent_actions) + len(sent_outcomes) + len(sent_preds) - distinct
    assert copies > 0.15 * distinct

    def counters() -> None:
        # a copy sent last changes no count, so the counts can be complete before the counters are
        text = metrics_text(port)
        assert metric_value(text, "trustgap_events_total", result="applied") == distinct
        assert metric_value(text, "trustgap_events_total", result="duplicate") == copies
        assert metric_value(text, "trustgap_events_total", result="pending") == len(actions) + len(outcomes)
        assert metric_value(text, "trustgap_events_total", result="late") == 0

    eventually(counters, 30, what="every event counted once by its result")


def test_malformed_input_goes_to_the_dead_letter_topic_and_valid_siblings_count(deployment: Deployment) -> None:
    worker = deployment.start_worker()
    good = {"schema_version": 1, "event_id": "g1", "prediction_id": "q1", "model": "m", "model_version": "1",
            "ts": "2026-11-20T00:10:00Z", "label": "a"}
    bad_messages: list[Any] = [
        b"this is not json",                                                    # not_json
        b'{"schema_version": 1, "event_id": "x"',                              # truncated JSON
        {**good, "event_id": "b1", "model": 42},                               # wrong type
        {k: v for k, v in good.items() if k != "prediction_id"},               # missing field
        {**good, "event_id": "b2", "ts": "yesterday"},                         # bad timestamp
        {**good, "event_id": "b3", "ts": "2026-11-20T00:10:00"},               # timestamp without a zone
        {**good, "event_id": "b4", "schema_version": 2},                       # unsupported version
        {**good, "event_id": "b5", "pad": "x" * (70 * 1024)},                  # event over 64 KiB
        b"[" + b",".join([orjson_good(good, i) for i in range(3000)]) + b"]",  # message over the 200 kB limit
        [1, 2],                                                                # not objects
    ]
    batch = [{**good, "event_id": "ok1", "prediction_id": "q2"}, {**good, "event_id": "bad", "ts": 5},
             {**good, "event_id": "ok2", "prediction_id": "q3"}]
    deployment.send("predictions", bad_messages + [good, batch])
    # 10 bad messages, but the last one ([1, 2]) holds two bad elements, plus one bad element in the batch
    expected_dead = 9 + 2 + 1
    dead = deployment.read("dlq", expected_dead, timeout=60)
    assert len(dead) == expected_dead
    assert all({"reason", "source_topic", "partition", "offset", "raw"} <= set(d) for d in dead)
    reasons = Counter(d["reason"].split(":")[0] for d in dead)
    assert reasons == Counter({"not_json": 2, "wrong_type": 1, "missing_field": 1, "bad_timestamp": 3,
                               "unsupported_schema_version": 1, "event_too_large": 1, "message_too_large": 1,
                               "not_an_object": 2})

    def counters() -> None:
        text = metrics_text(worker.web_port)  # type: ignore[attr-defined]
        assert metric_value(text, "trustgap_events_total", result="applied") == 3
        assert metric_value(text, "trustgap_invalid_events_total") == expected_dead
        assert metric_value(text, "trustgap_invalid_events_total", reason="bad_timestamp") == 3

    eventually(counters, 30, what="the three valid events applied and every invalid one counted")
    assert worker.poll() is None  # the worker kept going


def orjson_good(good: dict[str, Any], i: int) -> bytes:
    import orjson

    return orjson.dumps({**good, "event_id": f"big{i}", "prediction_id": f"big{i}"})
