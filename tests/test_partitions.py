"""The watermark over partitions through a real worker, the real Tansu broker and a real redis-server: partitions
that get nothing do not stop windows from closing, and a partition with a backlog is never idle, so nothing it
still holds is counted late however far ahead another partition runs."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import pytest
import redis
from confluent_kafka import Consumer, TopicPartition

from stream.state import keys
from tests.support.harness import Deployment, eventually, metric_value, metrics_text, wait_for
from tests.support.truth import read_counts

pytestmark = pytest.mark.integration

H = 3600 * 1000
T0 = int(datetime(2026, 11, 20, tzinfo=timezone.utc).timestamp() * 1000)  # an hour window's start


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).isoformat().replace("+00:00", "Z")


def pred(pid: str, ms: int) -> dict[str, Any]:
    return {"schema_version": 1, "event_id": f"e-{pid}", "prediction_id": pid, "model": "m", "model_version": "v1",
            "ts": iso(ms), "label": "a"}


def counted(dep: Deployment, start: int) -> int:
    """Predictions counted in the model's window at `start` (all scopes: the whole-model scope)."""
    return read_counts(dep, {"m"}, {start})[("m", start, "v1", "", "n")]


def late_and_closed(port: int) -> tuple[float, float]:
    text = metrics_text(port)
    return (metric_value(text, "trustgap_events_total", result="late"),
            metric_value(text, "trustgap_windows_evaluated_total"))


@pytest.fixture
def deployment(deploy: Callable[..., Deployment]) -> Deployment:
    return deploy(defaults__allowed_lateness_seconds="0")


def test_partitions_that_get_nothing_do_not_stop_windows_from_closing(deployment: Deployment,
                                                                      redis_client: redis.Redis) -> None:
    # Three of the four predictions partitions get an hour of events, then one event two hours on; the fourth
    # partition and every partition of the actions and outcomes topics get nothing at all.
    worker = deployment.start_worker()
    port = worker.web_port  # type: ignore[attr-defined]
    for p in range(3):
        deployment.send("predictions", [pred(f"p{p}-{i}", T0 + i * 60_000) for i in range(60)], partition=p)
    for p in range(3):
        deployment.send("predictions", [pred(f"tick{p}", T0 + 2 * H + 60_000)], partition=p)
    # the watermark is the slowest of the three busy partitions: 2 h 1 min; the hours at T0 and T0 + 1 h close
    wait_for(lambda: late_and_closed(port)[1] >= 2, 60, what="two windows closed")
    assert late_and_closed(port) == (0, 2)
    assert counted(deployment, T0) == 180
    idle = {k.decode() for k in redis_client.scan_iter(keys.IDLE_PREFIX + "*")}
    silent = [(deployment.topic("predictions"), 3)] + [(deployment.topic(t), p) for t in ("actions", "outcomes")
                                                        for p in range(4)]
    assert {keys.idle(t, p) for t, p in silent} <= idle  # the owner found them empty: idle
    text = metrics_text(port)
    assert metric_value(text, "trustgap_partition_idle", topic=deployment.topic("actions")) == 4
    assert metric_value(text, "trustgap_partition_event_time_seconds", topic=deployment.topic("predictions"),
                        partition="0") == (T0 + 2 * H + 60_000) / 1000


def listed_end(dep: Deployment, partition: int) -> int:
    """The predictions partition's end offset as the broker's ListOffsets answers it."""
    consumer = Consumer({"bootstrap.servers": dep.stack.bootstrap_servers, "group.id": "probe"})
    try:
        return int(consumer.get_watermark_offsets(TopicPartition(dep.topic("predictions"), partition),
                                                  timeout=10, cached=False)[1])
    finally:
        consumer.close()


def test_a_partition_with_a_backlog_is_never_idle_so_nothing_in_it_is_late(deploy: Callable[..., Deployment],
                                                                           redis_client: redis.Redis) -> None:
    # An actions partition, three hours of event time ahead, is applied at once and then gets nothing. The
    # predictions partition 0's backlog is read to its end at once, but its last messages wait in a chunk that is
    # not full (take_within, 3 s) before they are applied: the consumer stands at the end, its end has not moved
    # since the worker started ("nothing new came" holds), yet three messages are not in Redis. Were partition 0
    # taken for idle meanwhile, the watermark would jump three hours and those three would be counted late. The
    # partition ahead is another topic's so that its own agent applies it while partition 0 drains, whichever
    # partition the consumer fetches first. The idle timeout is shorter still than the suite's: a backlog must
    # keep a partition from idling however short the timeout.
    dep = deploy(defaults__allowed_lateness_seconds="0", take_max="5", take_within="3",
                 idle_timeout_seconds="0.2")
    n = 4003  # three events over whole chunks of 5: the tail that waits
    # one record batch: Tansu's ListOffsets answers its first offset + 1, the fetch its true end
    dep.send("actions", [{"schema_version": 1, "event_id": f"e-ahead{i}", "prediction_id": f"ahead{i}",
                          "ts": iso(T0 + 3 * H + i), "action": "accept"} for i in range(5)], partition=1)
    dep.send("predictions", [pred(f"b{i}", T0 + i * 500) for i in range(n)], partition=0, **{
        "linger.ms": 1000, "batch.num.messages": 100_000, "batch.size": 4_000_000})
    listed = listed_end(dep, 0)
    worker = dep.start_worker()
    port = worker.web_port  # type: ignore[attr-defined]
    p0 = f"{dep.topic('predictions')}:0"
    ahead_at: float | None = None
    backlog_s, samples, violations = 0.0, 0, []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # sample the guarantee itself while the backlog drains
        offset = int(redis_client.hget(keys.OFFSETS, p0) or 0)
        idle = bool(redis_client.exists(keys.idle(dep.topic("predictions"), 0)))
        if ahead_at is None and redis_client.hget(keys.EVENT_TIME, f"{dep.topic('actions')}:1"):
            ahead_at = time.monotonic()
        if offset >= n:
            break
        samples += 1
        if idle:
            violations.append(offset)
        if ahead_at is not None:
            backlog_s = time.monotonic() - ahead_at
        time.sleep(0.02)
    assert violations == [], f"partition 0 asserted idle at offsets {violations[:5]} of {n}"
    # the run tested something: partition 0 kept a backlog well past idle_timeout after the actions ahead applied
    idle_timeout = dep.settings.idle_timeout_seconds
    assert backlog_s > idle_timeout + 4 * dep.settings.evaluate_interval, (backlog_s, samples)
    wait_for(lambda: late_and_closed(port)[1] >= 3, 60, what="the three hours before the actions ahead closed")

    def exact() -> None:
        assert late_and_closed(port) == (0, 3)
        assert counted(dep, T0) == n
    eventually(exact, 30, what="every event of partition 0 counted in its window, none late")
    print(f"backlog {backlog_s:.1f}s after the partition ahead was applied; ListOffsets said {listed} of {n}")
