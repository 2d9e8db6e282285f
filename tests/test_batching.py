"""Messages holding more events than `take_max` are applied in bounded chunks, still exactly once."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pytest

from stream.state import keys
from tests.support.harness import Deployment, eventually, metric_value, metrics_text, wait_for
from tests.support.truth import batches, expected_counts, generate, read_counts, with_duplicates

pytestmark = pytest.mark.integration

TAKE_MAX = 7  # far below the 50 events per message, so every message is split across Redis calls


@pytest.fixture
def deployment(deploy: Callable[..., Deployment]) -> Deployment:
    return deploy(env={"TRUSTGAP_DEFAULTS__ALLOWED_LATENESS_SECONDS": "86400",
                       "TRUSTGAP_TAKE_MAX": str(TAKE_MAX)})


def test_batches_larger_than_take_max_count_exactly_once_and_offsets_cover_every_message(
        deployment: Deployment, redis_client: Any) -> None:
    rng = random.Random(11)
    preds, actions, outcomes = generate(rng, 400)
    truth = expected_counts(preds, actions, outcomes)
    worker = deployment.start_worker()
    sent = {"actions": with_duplicates(rng, actions), "outcomes": with_duplicates(rng, outcomes),
            "predictions": with_duplicates(rng, preds)}
    messages = {topic: list(batches(events, 50)) for topic, events in sent.items()}
    # actions and outcomes first, so both the pending path and the drain run inside split messages
    deployment.send("actions", messages["actions"], key=b"batch")
    deployment.send("outcomes", messages["outcomes"], key=b"batch")
    port = worker.web_port  # type: ignore[attr-defined]
    wait_for(lambda: metric_value(metrics_text(port), "trustgap_events_total", result="pending")
             == len(actions) + len(outcomes), 60, what="every action and outcome to wait for its prediction")
    deployment.send("predictions", messages["predictions"], key=b"batch")
    models, starts = {k[0] for k in truth}, {k[1] for k in truth}
    wait_for(lambda: read_counts(deployment, models, starts) == truth, 90,
             what="Redis window counts to equal the generated truth")

    distinct = len(preds) + len(actions) + len(outcomes)
    copies = sum(len(v) for v in sent.values()) - distinct

    def counters_and_offsets() -> None:
        # a last message of copies changes no count: the counters and offsets are waited for themselves
        text = metrics_text(port)
        assert metric_value(text, "trustgap_events_total", result="applied") == distinct
        assert metric_value(text, "trustgap_events_total", result="duplicate") == copies
        # one key for all messages, so each topic's messages sit on one partition: its offset is the message count
        offsets = {k.decode().rpartition(":")[0]: int(v) for k, v in redis_client.hgetall(keys.OFFSETS).items()}
        assert offsets == {deployment.topic(t): len(m) for t, m in messages.items()}

    eventually(counters_and_offsets, 30, what="every message counted and its offset recorded")
