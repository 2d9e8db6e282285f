"""The evaluator's alert outbox against a real broker and Redis: a burst of alerts decided in one window is sent
together and each arrives exactly once; an alert whose send fails stays in the outbox until a later tick
publishes it.

`stream.evaluator.evaluate` runs in the test process (the timer's body, without Faust's timer around it) on an aiokafka
producer, which is what the Faust topic's `send` wraps: `await send()` answers a future of the broker's ack.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import redis
from aiokafka import AIOKafkaProducer
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from prometheus_client import CollectorRegistry

from stream.evaluator import evaluate
from stream.runtime import Runtime
from stream.state import keys
from stream.embedded import StackInfo
from stream.events import AlignmentAlert, HumanActionEvent, PredictionEvent
from stream.metrics import Metrics
from stream.settings import Settings
from stream.state import Progress, Store
from tests.support.faultstack import FaultStack, fault_stack

pytestmark = pytest.mark.integration

MODELS = [f"claims-{k}" for k in range(4)]  # one cause each: a burst of alerts is several models' in one window
REGIONS = ("eu", "us", "ap")
WINDOW = 60_000
START = int((datetime.now(timezone.utc) - timedelta(days=1)).timestamp() * 1000) // WINDOW * WINDOW


class AlertsTopic:
    """The alerts topic as Runtime uses it, on aiokafka."""

    def __init__(self, producer: AIOKafkaProducer, name: str) -> None:
        self.producer, self.name = producer, name

    async def send(self, key: bytes, value: bytes) -> Any:
        return await self.producer.send(self.name, key=key, value=value)


class Recorder(Store):
    """The real store, remembering the alert ids each successful commit put into the outbox (per window)."""

    decided: dict[int, list[str]]

    async def commit_evaluation(self, model: str, expected_closed: str, closed_ms: int, start_ms: int,
                                summary: bytes, state: bytes, alerts: Any, keep_from_ms: int) -> bool:
        ok = await super().commit_evaluation(model, expected_closed, closed_ms, start_ms, summary, state, alerts,
                                             keep_from_ms)
        if ok:
            self.decided.setdefault(start_ms, []).extend(alert_id for alert_id, _ in alerts)
        return ok


def window_events(rng: random.Random, start: int, spike: bool, n: int = 120) -> list[Any]:
    """Per model, predictions with one action each in one minute window; a spike overrides 90% of them in every
    region of every model (one page per model: its regions' rise is its own)."""
    out: list[Any] = []
    for i in range(n * len(MODELS)):
        ts = datetime.fromtimestamp((start + rng.randrange(WINDOW)) / 1000, timezone.utc)
        pid = f"p-{uuid.UUID(int=rng.getrandbits(128))}"
        out.append(PredictionEvent.model_validate({
            "schema_version": 1, "event_id": f"e-{pid}", "prediction_id": pid, "model": MODELS[i % len(MODELS)],
            "model_version": "v1", "ts": ts, "label": "approve", "score": 0.5,
            "segment": {"region": REGIONS[i // len(MODELS) % len(REGIONS)]}}))
        out.append(HumanActionEvent.model_validate({
            "schema_version": 1, "event_id": f"a-{pid}", "prediction_id": pid, "ts": ts,
            "action": "override" if rng.random() < (0.9 if spike else 0.1) else "accept"}))
    return out


def settings_for(stack: StackInfo | FaultStack) -> Settings:
    return Settings(redis_url=stack.redis_url, broker_url=stack.broker_url,  # type: ignore[arg-type]
                    defaults={"window_seconds": 60, "allowed_lateness_seconds": 5,  # type: ignore[arg-type]
                              "baseline_windows": 4, "min_samples": 20, "persistence": 1, "resolve_after": 1})


def create_topic(bootstrap: str, name: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for fut in admin.create_topics([NewTopic(name, num_partitions=4, replication_factor=1)]).values():
        fut.result(30)


def read_ids(bootstrap: str, topic: str, at_least: int, timeout: float = 60.0) -> Counter[str]:
    """alert_id of every message on the topic from the beginning, once at least `at_least` arrived and the
    topic then stayed quiet for half a second."""
    import time

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"r{uuid.uuid4().hex}",
                         "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, p, 0) for p in range(4)])
    ids: Counter[str] = Counter()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and not msg.error():
                ids[AlignmentAlert.model_validate_json(msg.value()).alert_id] += 1
            elif sum(ids.values()) >= at_least:
                return ids
    finally:
        consumer.close()
    raise AssertionError(f"{topic}: {sum(ids.values())} alerts after {timeout}s, expected at least {at_least}")


class OnePartitionEach:
    """The worker's consumer as the evaluator asks it about the event topics (its aiokafka consumer's cluster
    metadata, through stream.faust_patches.partition_count): one partition each."""

    def __init__(self) -> None:
        self._thread = SimpleNamespace(_ensure_consumer=lambda: SimpleNamespace(partitions_for_topic=lambda t: {0}))


def claim(settings: Settings, events: list[Any]) -> Progress:
    """The progress a worker reading one partition per event topic claims with `events`: as if each partition had
    just brought the batch's newest event (so the watermark, their minimum, is that event's time)."""
    newest = max(int(e.ts.timestamp() * 1000) for e in events)
    parts = [(getattr(settings.topics, t), 0) for t in ("predictions", "actions", "outcomes")]
    return Progress({tp: 1 for tp in parts}, {tp: newest for tp in parts})


async def runtime(settings: Settings, topic: str, request_timeout_ms: int = 30_000
                  ) -> tuple[Runtime, Recorder, AIOKafkaProducer]:
    producer = AIOKafkaProducer(bootstrap_servers=settings.broker_url.removeprefix("kafka://"), acks="all",
                                request_timeout_ms=request_timeout_ms, retry_backoff_ms=100)
    await producer.start()
    await producer.partitions_for(topic)  # metadata known: a later send fails on delivery, not on lookup
    store = Recorder.from_settings(settings)
    store.decided = {}
    rt = Runtime(settings, store, Metrics(CollectorRegistry()), topics={"alerts": AlertsTopic(producer, topic)},
                 app=SimpleNamespace(consumer=OnePartitionEach()))
    return rt, store, producer


@pytest.fixture
def fs(tmp_path: Path) -> Iterator[FaultStack]:
    with fault_stack(tmp_path / "stack") as stack:
        yield stack


def test_a_burst_of_alerts_in_one_window_arrives_exactly_once_and_empties_the_outbox(
        stack: StackInfo, redis_client: redis.Redis) -> None:
    settings = settings_for(stack)
    topic = f"outbox-burst-{uuid.uuid4().hex[:8]}"
    create_topic(stack.bootstrap_servers, topic)

    async def go() -> dict[int, list[str]]:
        rt, store, producer = await runtime(settings, topic)
        rng = random.Random(7)
        try:
            # six quiet windows of baseline, the spike, then two that push the watermark past the spike's first
            # checkpoint (its actions are judged one window after its end)
            for w in range(9):
                events = window_events(rng, START + w * WINDOW, spike=w == 6)
                await store.apply(events, claim(settings, events), 0)
                await evaluate(rt)
        finally:
            await producer.stop()
            await store.close()
        return store.decided

    decided = asyncio.run(go())
    burst = decided[START + 6 * WINDOW]
    assert len(burst) >= 4                                  # every model fires in one window
    expected = Counter(i for ids in decided.values() for i in ids)
    assert max(expected.values()) == 1
    assert read_ids(stack.bootstrap_servers, topic, len(expected)) == expected  # each once, nothing else
    assert all(redis_client.hlen(keys.model_outbox(m)) == 0 for m in MODELS)


def test_an_alert_whose_send_fails_stays_in_the_outbox_and_is_published_on_a_later_tick(fs: FaultStack) -> None:
    settings = settings_for(fs)
    topic = f"outbox-fail-{uuid.uuid4().hex[:8]}"
    create_topic(fs.bootstrap_servers, topic)
    outboxes = [keys.model_outbox(m) for m in MODELS]
    spike = START + 6 * WINDOW

    async def go() -> tuple[int, int, int, dict[int, list[str]]]:
        rt, store, producer = await runtime(settings, topic, request_timeout_ms=2000)
        rng = random.Random(7)
        try:
            # each window's events close the one before: quiet baseline, the spike, the window after it
            for w in range(8):
                events = window_events(rng, START + w * WINDOW, spike=w == 6)
                await store.apply(events, claim(settings, events), 0)
                await evaluate(rt)
            events = window_events(rng, spike + 2 * WINDOW, spike=False)
            await store.apply(events, claim(settings, events), 0)  # the spike's first checkpoint can be judged
            fs.kill_broker()
            closed_while_down = await evaluate(rt)         # decides the burst; its sends fail
            waiting = sum([await store.redis.hlen(o) for o in outboxes])
            await evaluate(rt)                             # still down: nothing is lost, nothing acked
            still_waiting = sum([await store.redis.hlen(o) for o in outboxes])
            fs.start_broker()  # the same log directory: what the broker acknowledged before is still there
            await evaluate(rt)                             # a later tick publishes what waited
            return closed_while_down, waiting, still_waiting, store.decided
        finally:
            await producer.stop()
            await store.close()

    closed_while_down, waiting, still_waiting, decided = asyncio.run(go())
    burst = decided[spike]
    assert closed_while_down == 2 * len(MODELS)  # per model the next window's predictions, then the spike's actions
    assert len(burst) >= 4
    assert waiting == still_waiting == len(burst)
    # every alert decided, the burst included, is on the topic exactly once
    expected = Counter(i for ids in decided.values() for i in ids)
    assert max(expected.values()) == 1
    assert read_ids(fs.bootstrap_servers, topic, len(expected)) == expected
    with fs.client() as client:
        assert all(client.hlen(o) == 0 for o in outboxes)
