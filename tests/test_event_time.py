"""Event time end to end: an outage's backlog, history replayed at full speed and a lagging topic are counted
exactly, each follow-up in its prediction's window, and nothing comes late.

A worker catching up reads its partitions at different speeds (the consumer fetches one partition far ahead of
another, and a topic can lag the others), so windows must close on the slowest partition's event time; these
tests produce the traffic a user would (single-event messages keyed by prediction_id, or `trustgap replay`) and
compare every window's counts in Redis with the truth computed in tests/support/eventtime.py.
"""

from __future__ import annotations

import dataclasses
import os
import random
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest
import redis

from stream.admin import confluent_config
from stream.client import BatchProducer
from stream.settings import ModelSettings
from stream.simulate import generate as simulate
from stream.embedded import StackInfo
from stream.state import scripts
from stream.times import epoch_ms, parse_ms, utcnow
from tests.support.eventtime import (DAY_MS, HOUR_MS, MODELS, Expected, Traffic, applied, applied_per_topic,
                                     assert_exact, caught_up, end_offsets, expected, judged, judged_until,
                                     late_events, live, outage_traffic, produce, read_windows, start_together,
                                     write_jsonl)
from tests.support.faultstack import FaultStack, fault_stack, kill_worker
from tests.support.harness import Deployment, metric_value, metrics_text, wait_for
from tests.support.redisgate import Command, RedisGate

pytestmark = pytest.mark.integration  # each runs in under a minute: none is `slow`


@pytest.mark.parametrize("workers", [1, 2])
def test_an_hours_outage_backlog_is_counted_exactly_once_the_workers_catch_up(
        deploy: Callable[..., Deployment], workers: int) -> None:
    dep = deploy()
    traffic, boundary = outage_traffic(41 + workers)
    truth = expected(traffic)
    assert len(truth.starts) == 2 and truth.predictions_in(boundary - HOUR_MS) > 15_000
    produce(dep, traffic.in_time_order())  # the outage: nobody consumes
    procs = start_together(dep, workers)
    caught_up(dep, 120)
    judged(dep, MODELS, boundary)
    assert_exact(dep, truth, [p.web_port for p in procs])  # type: ignore[attr-defined]


# --- history replayed at full speed ---------------------------------------------------------------------------

REPLAY_DAYS = 30
REPLAY_SETTINGS = {"defaults__window_seconds": str(DAY_MS // 1000),  # what a user replaying history sets
                   "defaults__allowed_lateness_seconds": str(6 * 3600)}


def month(seed: int) -> tuple[Traffic, int, ModelSettings]:
    """A month of traffic (~24k predictions over the three models) ending 7 h after a day boundary at least an
    hour before now: once it is read the watermark (newest - 6 h) has passed that boundary, so every day but the
    last is due for its predictions. Returns it, the boundary, and the model settings it is counted with.

    5% of the follow-ups come 1 to 10 days after their prediction: such actions are past their 1-day horizon,
    such outcomes count at the second checkpoint (a day of age; the stage of the first is judged before they
    come) or are past the 7-day horizon."""
    now = epoch_ms(utcnow())
    last_day = (now - 8 * HOUR_MS) - (now - 8 * HOUR_MS) % DAY_MS
    seconds = REPLAY_DAYS * 86400 + 7 * 3600
    traffic = live(random.Random(seed), last_day - REPLAY_DAYS * DAY_MS, seconds, 24_000 / seconds, slow=0.05)
    ms = ModelSettings(window_seconds=86400, allowed_lateness_seconds=6 * 3600)
    return traffic, last_day, ms


def assert_month_shape(truth: Expected) -> None:
    """The month holds what its tests are about: 31 windows, outcomes at both checkpoints, some beyond."""
    assert len(truth.starts) == REPLAY_DAYS + 1
    assert {k[4] for k in truth.counts} >= {"o:truth#0", "o:truth#1", "a:accept#0"}
    assert truth.beyond[("claims", "actions")] > 0 and truth.beyond[("claims", "outcomes")] > 0


def test_a_month_sent_at_full_speed_as_single_event_messages_is_counted_exactly(
        deploy: Callable[..., Deployment]) -> None:
    dep = deploy(**REPLAY_SETTINGS)
    traffic, last_day, ms = month(51)
    truth = expected(traffic, ms)
    assert_month_shape(truth)
    worker = dep.start_worker()
    produce(dep, traffic.in_time_order())  # a plain producer, as fast as it goes, the worker reading
    caught_up(dep, 120)
    judged(dep, MODELS, last_day)
    assert_exact(dep, truth, [worker.web_port])  # type: ignore[attr-defined]


@pytest.mark.parametrize("worker_first", [True, False], ids=["worker-running", "worker-started-after"])
def test_a_month_sent_with_trustgap_replay_is_counted_exactly(deploy: Callable[..., Deployment], tmp_path: Path,
                                                              worker_first: bool) -> None:
    # running: the worker reads the replay's batch messages as they come; started after: it catches up on a topic
    # the replay filled, as a deployment moved to a fresh Redis does
    dep = deploy(**REPLAY_SETTINGS)
    traffic, last_day, ms = month(52)
    truth = expected(traffic, ms)
    assert_month_shape(truth)
    path = write_jsonl(tmp_path / "month.jsonl", traffic.in_time_order())
    workers = [dep.start_worker()] if worker_first else []
    done = subprocess.run([sys.executable, "-m", "stream.cli", "replay", "--quiet", str(path)],
                          env={**os.environ, **dep.env, "TRUSTGAP_STATE_DIR": str(tmp_path / "state")},
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"sent {traffic.size} events" in done.stdout
    workers = workers or [dep.start_worker()]
    caught_up(dep, 120)
    judged(dep, MODELS, last_day)
    assert_exact(dep, truth, [w.web_port for w in workers])  # type: ignore[attr-defined]


# --- a lagging topic ------------------------------------------------------------------------------------------

def test_outcomes_sent_after_their_hour_was_consumed_are_not_late_and_the_window_waits_for_them(
        deploy: Callable[..., Deployment]) -> None:
    # idle after 5 min, not 1: the outcomes partitions, empty until the predictions and actions are read, must hold
    # the watermark however slowly a loaded machine gets there (an idle partition is another test's subject)
    dep = deploy(idle_timeout_seconds="300")
    now = epoch_ms(utcnow())
    boundary = (now - 150 * 60 * 1000) - (now - 150 * 60 * 1000) % HOUR_MS
    # 70 min of traffic ending 30 min past the boundary; outcomes 1 min to 2 h after their prediction, so about
    # half count at the second checkpoint (one window of age), the rest at the first; none is in the future
    traffic = live(random.Random(61), boundary - 40 * 60 * 1000, 70 * 60, 3.0, outcome_delay=(60, 7200))
    truth = expected(traffic)
    assert {k[4] for k in truth.counts} >= {"o:truth#0", "o:truth#1", "m:truth#1"}
    worker = dep.start_worker()
    events = traffic.in_time_order()
    produce(dep, [(t, e) for t, e in events if t != "outcomes"])
    caught_up(dep, 60)
    # the predictions and actions are 20 min of event time past the boundary's lateness, but no outcome has come:
    # the window must wait (a few evaluator rounds, which judge whatever is due)
    waited = not judged_within(dep, MODELS, boundary, seconds=3)
    produce(dep, [(t, e) for t, e in events if t == "outcomes"])  # the lagging topic catches up
    caught_up(dep, 60)
    judged(dep, MODELS, boundary)
    assert_exact(dep, truth, [worker.web_port])  # type: ignore[attr-defined]
    assert waited, "the window was judged before any of its outcomes had arrived"


def judged_within(dep: Deployment, models: tuple[str, ...], until: int, seconds: float) -> bool:
    """Whether any model's windows ending by `until` get judged for their predictions within `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if any((judged_until(dep.settings, m) or 0) >= until for m in models):
            return True
        time.sleep(0.3)
    return False


# --- an idle partition -----------------------------------------------------------------------------------------

def test_a_partition_that_receives_nothing_does_not_keep_the_window_open(deploy: Callable[..., Deployment]) -> None:
    # idle after 5 s instead of 60, so the test does not wait a minute for the rule it checks
    dep = deploy(idle_timeout_seconds="5")
    assert dep.settings.topic_partitions == 4
    traffic, boundary = outage_traffic(81, rate=2.0)
    truth = expected(traffic)
    produce(dep, traffic.in_time_order(), partitions=3)  # partition 3 of every event topic stays empty
    worker = dep.start_worker()
    caught_up(dep, 60)
    judged(dep, MODELS, boundary, timeout=30)  # within the idle timeout and a few evaluator rounds
    assert_exact(dep, truth, [worker.web_port])  # type: ignore[attr-defined]


def applies_outcomes(command: Command) -> bool:
    """A worker's apply call for a chunk of outcomes (a chunk holds one kind; its records start with "o")."""
    return (len(command) > 6 and command[0].upper() == b"EVAL" and command[1] == APPLY
            and command[6].startswith(b'["o",'))


APPLY = scripts.APPLY.source.encode()


def test_a_replay_into_partitions_that_sat_idle_makes_nothing_late_while_one_topic_lags(
        stack: StackInfo, redis_client: redis.Redis, tmp_path: Path) -> None:
    # Every partition sat idle, then a replay lands on all of them at once, sent by the SDK's batching sender (a
    # message holds hours). The outcomes are held back at a gate in front of Redis, a topic lagging the others,
    # while their owner's idleness assertions still live: those partitions have a backlog, so they must hold the
    # watermark at once, not when the assertions expire, or the predictions applied would judge windows alone.
    with RedisGate(stack.redis_port, applies_outcomes).running() as gate:
        # idle after 1 s, so the partitions are idle before the replay comes, as they are a minute into the default
        dep = Deployment(dataclasses.replace(stack, redis_url=gate.url), tmp_path,  # type: ignore[arg-type]
                         overrides={"TRUSTGAP_IDLE_TIMEOUT_SECONDS": "1"})
        dep.create_topics()
        try:
            worker = dep.start_worker()
            port = worker.web_port  # type: ignore[attr-defined]

            def idle(topics: tuple[str, ...]) -> list[float]:
                text = metrics_text(port)
                return [metric_value(text, "trustgap_partition_idle", topic=dep.topic(t), partition=str(p))
                        for t in topics for p in range(4)]

            wait_for(lambda: all(v == 1 for v in idle(("predictions", "actions", "outcomes"))), 60,
                     what="every input partition idle")
            events = list(simulate("trust_decay", days=2, rate=300, seed=3,
                                   end=datetime(2026, 11, 20, tzinfo=timezone.utc)))
            producer = BatchProducer(confluent_config(dep.settings), dep.settings.topics.model_dump())
            sent = producer.send_all(events)
            producer.close()
            ends = end_offsets(dep)
            wait_for(lambda: all(applied_per_topic(dep.settings)[t] >= ends[t] for t in ("predictions", "actions")),
                     60, what="the predictions and actions applied")
            wait_for(lambda: gate.held > 0 and not any(idle(("outcomes",))), 60,
                     what="the held outcomes' partitions no longer idle")
            gate.open()

            def handled() -> float:
                text = metrics_text(port)
                return sum(metric_value(text, "trustgap_events_total", result=r) for r in ("applied", "late"))

            wait_for(lambda: handled() == sent, 120, what=f"{sent} events applied or late")
            assert not late_events(dep, [port])
            truth = Counter(parse_ms(e["ts"]) // HOUR_MS * HOUR_MS for k, e in events if k == "prediction")
            stored = read_windows(dep.settings, {e["model"] for k, e in events if k == "prediction"}, set(truth))
            counted = Counter({start: n for (_, start, _, scope, counter), n in stored.counts.items()
                               if scope == "" and counter == "n"})
            assert counted == truth and stored.late == {}
        finally:
            gate.open()  # a worker stopping must not wait on a held call
            dep.stop_all()


# --- a worker killed in the middle of a catch-up --------------------------------------------------------------

@pytest.fixture
def fs(tmp_path: Path) -> Iterator[FaultStack]:
    with fault_stack(tmp_path / "stack") as stack:
        yield stack


@pytest.mark.faults
def test_a_worker_sigkilled_mid_catch_up_leaves_exact_counts_to_the_worker_that_takes_its_partitions_over(
        fs: FaultStack, tmp_path: Path) -> None:
    # The group notices the death after the session timeout: 10 s in which the heir's own partitions run ahead of
    # the dead worker's by far more than the lateness, which is what a real takeover does to event time.
    dep = Deployment(fs, tmp_path, overrides={"TRUSTGAP_BROKER_SESSION_TIMEOUT": "10"})  # type: ignore[arg-type]
    dep.create_topics()
    try:
        traffic, boundary = outage_traffic(71)
        truth = expected(traffic)
        produce(dep, traffic.in_time_order())  # the outage's backlog
        total = sum(end_offsets(dep).values())
        doomed, heir = start_together(dep, 2)
        # a moment after 40% of the backlog is applied (event time ~15 min before the boundary): both workers hold
        # partitions mid-way, before the first window's end
        wait_for(lambda: applied(dep) > total * 2 // 5, 60, 0.1, what="40% of the backlog applied")
        assert applied(dep) < total * 3 // 5, "the catch-up went too far before the kill: a larger backlog"
        late_before = late_events(dep, [doomed.web_port])  # type: ignore[attr-defined]
        kill_worker(doomed)
        caught_up(dep, 120)  # the heir has taken every partition over
        judged(dep, MODELS, boundary)
        assert_exact(dep, truth, [heir.web_port], late_before)  # type: ignore[attr-defined]
    finally:
        dep.stop_all()
