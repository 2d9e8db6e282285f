"""The producer SDK against the real broker and a real worker: what a model service logs is what trustgap counts."""

from __future__ import annotations

import asyncio
import gc
import random
import zlib
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Consumer, TopicPartition

from stream.client import AsyncClient, Client
from tests.support.harness import Deployment, eventually, metric_value, metrics_text, wait_for

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 20, 0, 0, tzinfo=timezone.utc)


@pytest.fixture
def deployment(deploy: Callable[..., Deployment]) -> Deployment:
    return deploy(env={"TRUSTGAP_DEFAULTS__ALLOWED_LATENESS_SECONDS": "86400"})


def raw_messages(dep: Deployment, topic: str, expected_events: int) -> list[tuple[int, bytes, list[Any]]]:
    """(partition, key, events) of every message on a topic, once they hold `expected_events` events."""
    consumer = Consumer({"bootstrap.servers": dep.stack.bootstrap_servers, "group.id": "raw",
                         "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    name = dep.topic(topic)
    parts = consumer.list_topics(name, timeout=10).topics[name].partitions
    consumer.assign([TopicPartition(name, p, 0) for p in parts])
    out: list[tuple[int, bytes, list[Any]]] = []

    def more() -> bool:
        msg = consumer.poll(0.2)
        if msg is not None and not msg.error():
            out.append((msg.partition(), msg.key(), orjson.loads(msg.value())))
        return sum(len(e) for _, _, e in out) >= expected_events

    try:
        wait_for(more, 60, interval=0, what=f"{expected_events} events on {name}")
    finally:
        consumer.close()
    return out


def test_events_logged_through_the_client_are_counted_exactly_once(deployment: Deployment) -> None:
    rng = random.Random(3)
    worker = deployment.start_worker()
    preds = actions = outcomes = 0
    with Client.from_settings(deployment.settings) as tg:
        for i in range(300):
            t = T0 + timedelta(minutes=rng.uniform(0, 120))
            eid = tg.log_prediction(f"p{i}", model="claims", model_version="v1", label=rng.choice("ab"),
                                    score=rng.random(), ts=t)
            preds += 1
            if i % 10 == 0:  # a retry after a timeout: same event_id, must not count twice
                tg.log_prediction(f"p{i}", model="claims", model_version="v1", label="a", ts=t, event_id=eid)
            if rng.random() < 0.7:
                tg.log_action(f"p{i}", rng.choice(["accept", "override"]), ts=t + timedelta(minutes=5))
                actions += 1
    assert tg.stats.failed == 0 and tg.stats.delivered == tg.stats.accepted == preds + 30 + actions

    async def outcomes_async() -> int:
        n = 0
        async with AsyncClient.from_settings(deployment.settings) as atg:
            for i in range(0, 300, 2):
                await atg.log_outcome(f"p{i}", "a", ts=T0 + timedelta(minutes=130))
                n += 1
        assert atg.stats.delivered == n
        return n

    outcomes = asyncio.run(outcomes_async())
    port = worker.web_port  # type: ignore[attr-defined]

    def counters() -> None:
        # the re-sent copies may be handled after the last applied event: all three are waited for
        text = metrics_text(port)
        assert metric_value(text, "trustgap_events_total", result="applied") == preds + actions + outcomes
        assert metric_value(text, "trustgap_events_total", result="duplicate") == 30
        assert metric_value(text, "trustgap_invalid_events_total") == 0

    eventually(counters, 90, what="every logged event applied once and every copy seen as a duplicate")


def test_each_batch_message_lands_on_the_partition_of_every_prediction_it_holds(deployment: Deployment) -> None:
    with Client.from_settings(deployment.settings, max_batch_events=50) as tg:
        for i in range(1000):
            tg.log_prediction(f"p{i}", model="m", label="a", ts=T0)
    messages = raw_messages(deployment, "predictions", 1000)
    partitions = deployment.settings.topic_partitions
    assert sum(len(events) for _, _, events in messages) == 1000
    assert len({p for p, _, _ in messages}) == partitions
    for partition, key, events in messages:
        assert len(events) <= 50
        assert key == events[0]["prediction_id"].encode()
        assert {zlib.crc32(e["prediction_id"].encode()) % partitions for e in events} == {partition}


def test_the_readme_quickstart_works_when_pasted(deployment: Deployment, tmp_path: Path) -> None:
    import os
    import re
    import subprocess
    import sys

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    code = re.search(r"<!-- quickstart -->\n```python\n(.*?)```", readme, re.S).group(1)  # type: ignore[union-attr]
    assert len(code.strip().splitlines()) <= 10
    script = tmp_path / "quickstart.py"
    script.write_text(code)
    root = str(Path(__file__).parents[1])  # as if trustgap were pip-installed
    run = subprocess.run([sys.executable, str(script)], env={**os.environ, **deployment.env, "PYTHONPATH": root},
                         capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "accepted=4, delivered=4, failed=0" in run.stdout
    for topic in ("predictions", "actions", "outcomes", "annotations"):
        [message] = deployment.read(topic, 1)
        assert len(message) == 1 and message[0]["schema_version"] == 1


def test_a_closed_client_is_freed_once_dropped_not_left_to_the_cycle_collector(deployment: Deployment) -> None:
    # A client its own producer (or a delivery callback) referred back to would live until a full collection,
    # and its closed producer would go on reconnecting to the broker, logging each refusal, until then.
    from confluent_kafka import Producer

    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)  # what the collector frees stays in gc.garbage, to be looked at
    try:
        tg = Client.from_settings(deployment.settings)
        for i in range(50):
            tg.log_prediction(f"p{i}", model="claims", model_version="v1", label="a", ts=T0)
        tg.close()
        delivered = tg.stats.delivered
        del tg
        gc.collect()
        cyclic = [type(o).__name__ for o in gc.garbage if isinstance(o, (Client, Producer))]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    assert delivered == 50
    assert cyclic == []
