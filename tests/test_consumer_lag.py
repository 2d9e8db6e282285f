"""Consumer lag against a real Apache Kafka broker (its high watermark is exact) and a real redis-server: a worker
exports, for every input partition it owns, the broker's end minus the offset Redis holds as applied; only the
owner exports it; and `trustgap status --json` reports the same numbers, or says the lag is unknown when the broker
does not answer.

To look at the lag before the worker applies anything, without racing it, the worker reaches Redis through a gate
(tests/support/redisgate.py) that holds the calls recording progress (the apply and offsets scripts) until the test
opens it: until then Redis holds no offset for any partition, so the lag cannot be anything but what was produced.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis

from stream.embedded import free_port, start_redis, stop
from stream.embedded_kafka import KafkaInfo, running_kafka
from stream.state import scripts
from tests.support.harness import Deployment, eventually, metric_value, metrics_text, wait_for
from tests.support.redisgate import Command, RedisGate

pytestmark = pytest.mark.integration

TOPICS = ("predictions", "actions", "outcomes", "annotations")  # every input topic
PARTITIONS = 4  # the Deployment's topic_partitions
# messages produced per (topic, partition) with no worker running; every other input partition gets none
PRODUCED = {("predictions", 0): 3, ("predictions", 1): 5, ("predictions", 3): 7, ("actions", 2): 4}
PROGRESS = {s.source.encode() for s in scripts.ALL if "guard" in scripts.PRELUDES.get(s.name, ())}
TS = (datetime.now(timezone.utc) - timedelta(hours=1)).isoformat()

Lags = dict[tuple[str, int], float]


def records_progress(command: Command) -> bool:
    """The worker's calls that apply events and record how far it read (the scripts behind the restart guard)."""
    return len(command) > 1 and command[0].upper() == b"EVAL" and command[1] in PROGRESS


@dataclass(frozen=True)
class Stack:
    """What a Deployment needs of a stack; the worker's Redis is the gate in front of the real one."""

    broker_url: str
    redis_url: str
    bootstrap_servers: str


@pytest.fixture(scope="module")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaInfo]:
    with running_kafka(tmp_path_factory.mktemp("kafka")) as info:
        yield info


@pytest.fixture(scope="module")
def redis_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    workdir, port = tmp_path_factory.mktemp("redis"), free_port()
    proc = start_redis(port, workdir, workdir / "redis.log", appendonly=False)
    try:
        yield port
    finally:
        stop(proc)


@pytest.fixture
def gate(redis_port: int) -> Iterator[RedisGate]:
    with redis.Redis(port=redis_port) as r:
        r.flushall()
    with RedisGate(redis_port, records_progress).running() as g:
        yield g


@pytest.fixture
def deployment(kafka: KafkaInfo, gate: RedisGate, tmp_path: Path) -> Iterator[Deployment]:
    dep = Deployment(Stack(kafka.broker_url, gate.url, kafka.bootstrap_servers), tmp_path)  # type: ignore[arg-type]
    dep.create_topics()
    yield dep
    gate.open()  # a worker stopping must not wait on a held call
    dep.stop_all()


def event(topic: str, pid: str) -> dict[str, Any]:
    """A valid event of the topic's kind (an action's prediction never comes: it is applied as pending)."""
    base = {"schema_version": 1, "event_id": f"{topic}-{pid}", "prediction_id": pid, "ts": TS}
    if topic == "predictions":
        return {**base, "model": "m", "model_version": "v1", "label": "a"}
    return {**base, "action": "accept"}


def every_partition(counts: dict[tuple[str, int], int]) -> Lags:
    """(topic, partition) -> count for every input partition, 0 where `counts` has none."""
    return {(t, p): counts.get((t, p), 0) for t in TOPICS for p in range(PARTITIONS)}


def short(topic: str) -> str:
    """A Deployment's topic name without its prefix (`t3ab12.predictions` -> `predictions`)."""
    return topic.rsplit(".", 1)[1]


def lags(port: int) -> Lags:
    """Every trustgap_consumer_lag series the worker exports, by (short topic name, partition)."""
    from prometheus_client.parser import text_string_to_metric_families

    return {(short(s.labels["topic"]), int(s.labels["partition"])): s.value
            for family in text_string_to_metric_families(metrics_text(port))
            for s in family.samples if s.name == "trustgap_consumer_lag"}


def status(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "stream.cli", "status", *args], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=60)


def status_lag(dep: Deployment) -> dict[str, Any]:
    """The `consumer_lag` of `trustgap status --json` for the deployment."""
    done = status(dep.env, "--json")
    assert done.returncode == 0, done.stderr
    return dict(orjson.loads(done.stdout)["consumer_lag"])


def by_partition(doc: dict[str, Any], field: str) -> dict[tuple[str, int], Any]:
    return {(short(p["topic"]), p["partition"]): p[field] for p in doc["partitions"]}


def test_the_lag_is_what_was_produced_until_the_worker_applies_it_and_then_zero(deployment: Deployment,
                                                                                gate: RedisGate) -> None:
    for (topic, partition), n in PRODUCED.items():
        deployment.send(topic, [event(topic, f"p{partition}-{i}") for i in range(n)], partition=partition)
    produced = every_partition(PRODUCED)
    worker = deployment.start_worker()
    port: int = worker.web_port  # type: ignore[attr-defined]

    def lag_is(expected: Lags) -> None:
        assert lags(port) == expected

    # Redis holds no offset while the gate holds every apply: the lag is exactly what was produced, per partition
    eventually(lambda: lag_is(produced), 60, what="the lag of every input partition to be what was produced")
    wait_for(lambda: gate.held, 30, what="the worker's first apply to be held")
    assert metric_value(metrics_text(port), "trustgap_events_total", result="applied") == 0
    lag_is(produced)  # and it stays there: nothing can move it while the gate is closed

    doc = status_lag(deployment)
    assert by_partition(doc, "lag") == produced
    assert by_partition(doc, "end") == produced  # fresh topics: every message is still retained, from offset 0
    assert set(by_partition(doc, "applied").values()) == {None}
    assert doc["topics"] == {deployment.topic(t): sum(n for (u, _), n in PRODUCED.items() if u == t) for t in TOPICS}
    assert doc["unknown"] is None

    gate.open()
    caught_up = every_partition({})

    def applied_everything() -> None:
        lag_is(caught_up)
        # every event counted once (the actions, whose predictions never come, as pending)
        assert metric_value(metrics_text(port), "trustgap_events_total") == sum(PRODUCED.values())

    eventually(applied_everything, 60, what="the lag of every input partition to be 0, every event counted")

    doc = status_lag(deployment)
    assert by_partition(doc, "lag") == caught_up
    assert by_partition(doc, "end") == produced
    # what Redis holds as applied: the next offset of every partition that brought something, none elsewhere
    assert by_partition(doc, "applied") == {tp: n or None for tp, n in produced.items()}
    assert doc["topics"] == {deployment.topic(t): 0 for t in TOPICS}


def test_each_partition_is_exported_by_its_owner_only(deployment: Deployment, gate: RedisGate) -> None:
    gate.open()
    first = deployment.start_worker()
    everything = set(every_partition({}))

    def first_owns_everything() -> None:
        assert lags(first.web_port) == dict.fromkeys(everything, 0)  # type: ignore[attr-defined]

    eventually(first_owns_everything, 60, what="the first worker to export every partition")
    second = deployment.start_worker()

    def split() -> None:
        a, b = lags(first.web_port), lags(second.web_port)  # type: ignore[attr-defined]
        assert a and b, "both workers own partitions"
        assert a.keys() & b.keys() == set()  # a partition the first worker lost is no longer its series
        assert a.keys() | b.keys() == everything
        assert set(a.values()) | set(b.values()) == {0}

    eventually(split, 90, what="the partitions split between the workers, each exported once")


def test_status_says_the_lag_is_unknown_when_the_broker_does_not_answer(deployment: Deployment) -> None:
    # --no-alerts: status then needs only Redis, and the lag is the one thing that asks the broker
    env = {**deployment.env, "TRUSTGAP_BROKER_URL": f"kafka://127.0.0.1:{free_port()}"}
    done = status(env, "--json", "--no-alerts")
    assert done.returncode == 0, done.stderr
    doc = orjson.loads(done.stdout)["consumer_lag"]
    assert doc["topics"] == {deployment.topic(t): None for t in TOPICS}
    assert doc["partitions"] == []
    assert doc["unknown"].startswith("broker 127.0.0.1:") and "unreachable" in doc["unknown"]

    done = status(env, "--no-alerts")
    assert done.returncode == 0, done.stderr
    assert "consumer lag unknown: broker 127.0.0.1:" in done.stdout
