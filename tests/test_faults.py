"""Fault injection: exact counts through worker SIGKILLs, rebalances, Redis crashes and outages, broker restarts.

Each test owns its Apache Kafka broker and redis-server (tests/support/faultstack.py) and kills them at will. The
traffic is what live services send (in event-time order, some messages re-sent), hours of it in seconds as after an
outage, at the default settings; it flows while the fault happens, and afterwards the counts in Redis must equal
the generated truth exactly, each follow-up at its checkpoint: nothing lost, nothing counted twice, nothing late.
Recovery times are printed (run with -s) and written to `fault-figures.json` in the test's tmp dir.
"""

from __future__ import annotations

import json
import random
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.faultstack import (FaultStack, Pacer, Stalls, applied_offsets, events_seen, fault_stack,
                                     kill_worker)
from tests.support.eventtime import read_windows
from tests.support.harness import Deployment, metric_value, metrics_text, wait_for
from tests.support.truth import expected_counts, generate, in_time_order, read_counts

pytestmark = [pytest.mark.integration, pytest.mark.faults]

Truth = Counter[tuple[str, int, str, str, str]]


@pytest.fixture
def fs(tmp_path: Path) -> Iterator[FaultStack]:
    with fault_stack(tmp_path / "stack") as stack:
        yield stack


@pytest.fixture
def dep(fs: FaultStack, tmp_path: Path) -> Iterator[Deployment]:
    d = Deployment(fs, tmp_path, overrides={"TRUSTGAP_TAKE_MAX": "200"})  # type: ignore[arg-type]
    d.create_topics()
    yield d
    d.stop_all()


def traffic(seed: int, n: int, prefix: str = "") -> tuple[list[tuple[str, Any]], Truth]:
    """Three hours of predictions, actions and outcomes in the order live services send them, with ~20% re-sent
    copies, and its truth; sent in a minute, as a backlog after an outage is read."""
    rng = random.Random(seed)
    preds, actions, outcomes = generate(rng, n, prefix)
    return in_time_order(rng, preds, actions, outcomes), expected_counts(preds, actions, outcomes)


def settle(dep: Deployment, truth: Truth, timeout: float = 90.0) -> tuple[float, Truth]:
    """Wait until Redis holds exactly the truth; returns (seconds it took, the counts read)."""
    models, starts = {k[0] for k in truth}, {k[1] for k in truth}
    started = time.monotonic()

    def counts() -> Truth | None:
        try:
            got = read_counts(dep, models, starts)
        except Exception:  # Redis may still be loading its AOF
            return None
        return got if got == truth else None

    try:
        wait_for(counts, timeout, 0.5, what="Redis counts to equal the generated truth")
    except AssertionError:
        got = read_counts(dep, models, starts)
        lost = sum((truth - got).values())
        double = sum((got - truth).values())
        raise AssertionError(f"counts differ from the truth: {lost} missing, {double} counted twice") from None
    assert read_windows(dep.settings, models, starts).late == {}, "events came after their stage was judged"
    return time.monotonic() - started, truth


def report(tmp_path: Path, name: str, **figures: Any) -> None:
    line = {"scenario": name, **figures}
    print(f"\nFIGURES {json.dumps(line)}")
    with (tmp_path / "fault-figures.json").open("a") as f:
        f.write(json.dumps(line) + "\n")


def health(port: int) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()
    except OSError:
        return 0, ""


def test_counts_are_exact_after_ten_sigkills_of_the_worker_mid_stream(dep: Deployment, tmp_path: Path) -> None:
    rng = random.Random(5)
    events, truth = traffic(11, 1200)
    pacer = Pacer(dep, events, seconds=60, gates=10).start()  # each kill lands before the stream ends
    worker = dep.start_worker()
    resume_times = []
    for _ in range(10):
        # the worker is bound now: the lambda is called only within this iteration
        wait_for(lambda w=worker: events_seen(w.web_port) > 0, 60, what="the worker to handle events")  # type: ignore
        time.sleep(rng.uniform(0.2, 2.5))  # a random instant while batches are being applied
        kill_worker(worker)
        pacer.passed()
        restarted = time.monotonic()
        worker = dep.start_worker()
        wait_for(lambda w=worker: events_seen(w.web_port) > 0, 60,  # type: ignore
                 what="the restarted worker to handle events")
        resume_times.append(round(time.monotonic() - restarted, 2))
    pacer.join()
    catch_up, _ = settle(dep, truth)
    assert worker.poll() is None
    report(tmp_path, "worker_sigkill", kills=10, events_sent=len(events),
           distinct_events=len({e["event_id"] for _, e in events}), lost=0, double_counted=0,
           resume_seconds_after_each_restart=resume_times, catch_up_seconds=round(catch_up, 2))


@pytest.mark.parametrize("change", ["join", "leave", "sigkill"])
def test_a_rebalance_in_the_middle_of_a_catch_up_stalls_briefly_and_counts_stay_exact(
        fs: FaultStack, dep: Deployment, tmp_path: Path, change: str) -> None:
    # A backlog the group needs tens of seconds to read: the workers are never idle, so any time the applied
    # offsets stand still is the rebalance's stall, not a pause between messages.
    events, truth = traffic(12, 15_000)
    Pacer(dep, events, seconds=0, chunk=5000).start().join()
    first = dep.start_worker()
    second = None if change == "join" else dep.start_worker()
    total = sum(1 for _ in events)
    wait_for(lambda: applied_offsets(fs) > total // 10, 120, what="a tenth of the backlog applied")
    with Stalls(fs) as stalls:
        changed = time.monotonic()
        if change == "join":
            second = dep.start_worker()
        elif change == "leave":
            assert second is not None
            second.terminate()  # a graceful leave: Faust does not commit on revoke, so its last batches replay
            second.wait(30)
        else:
            assert second is not None
            kill_worker(second)  # its partitions wait for the session timeout before they move
        catch_up, _ = settle(dep, truth, timeout=180)
    group_stall, partition_stall = stalls.longest(changed)
    assert first.poll() is None
    report(tmp_path, f"rebalance_{change}", events_sent=total, lost=0, double_counted=0,
           session_timeout_seconds=dep.settings.broker_session_timeout, group_stall_seconds=group_stall,
           longest_partition_stall_seconds=partition_stall, settle_seconds=round(catch_up, 2))


def test_counts_are_exact_after_redis_is_killed_and_restarts_from_an_aof_missing_its_tail(
        fs: FaultStack, dep: Deployment, tmp_path: Path) -> None:
    events, truth = traffic(13, 1200)
    pacer = Pacer(dep, events, seconds=20).start()
    worker = dep.start_worker()
    wait_for(lambda: applied_offsets(fs) > 500, 60, what="some progress recorded in Redis")
    before = applied_offsets(fs)
    # Losing the AOF's tail is what an OS crash within `appendfsync everysec` does; kill -9 alone loses ~nothing.
    cut = fs.kill_redis(lose_tail_fraction=0.3)
    time.sleep(2)
    fs.start_redis()
    back = time.monotonic()
    after = applied_offsets(fs)
    assert after < before, "the truncated AOF should have rolled Redis's offsets back"
    wait_for(lambda: applied_offsets(fs) > before, 60, what="progress past the offsets held before the crash")
    recovered = time.monotonic() - back
    pacer.join()
    catch_up, _ = settle(dep, truth)
    text = metrics_text(worker.web_port)  # type: ignore[attr-defined]
    assert metric_value(text, "trustgap_offset_seeks_total", cause="redis_restart") > 0
    assert worker.poll() is None
    report(tmp_path, "redis_sigkill_aof", events_sent=len(events), lost=0, double_counted=0, aof_bytes_cut=cut,
           offsets_before=before, offsets_after_restart=after,
           partitions_sought_back=metric_value(text, "trustgap_offset_seeks_total", cause="redis_restart"),
           recovery_seconds_after_redis_back=round(recovered, 2), settle_seconds=round(catch_up, 2))


def test_worker_backs_off_reports_degraded_and_catches_up_after_redis_is_unreachable_for_30s(
        fs: FaultStack, dep: Deployment, tmp_path: Path) -> None:
    events, truth = traffic(14, 800)
    pacer = Pacer(dep, events, seconds=20).start()
    worker = dep.start_worker()
    port = worker.web_port  # type: ignore[attr-defined]
    wait_for(lambda: applied_offsets(fs) > 200, 60, what="some progress recorded in Redis")
    fs.pause_redis()
    paused = time.monotonic()
    try:
        status, body = wait_for(lambda: (h := health(port))[0] == 503 and h, 25, what="/health to say degraded")
        assert "degraded" in body
        degraded_after = time.monotonic() - paused
        time.sleep(max(0.0, 30 - (time.monotonic() - paused)))
        assert worker.poll() is None
    finally:
        fs.resume_redis()
    resumed = time.monotonic()
    wait_for(lambda: health(port)[0] == 200, 60, what="/health to recover")
    healthy_after = time.monotonic() - resumed
    pacer.join()
    catch_up, _ = settle(dep, truth)
    assert worker.poll() is None
    assert metric_value(metrics_text(port), "trustgap_redis_errors_total") > 0
    report(tmp_path, "redis_unreachable_30s", events_sent=len(events), lost=0, double_counted=0,
           degraded_reported_after_seconds=round(degraded_after, 2),
           healthy_after_redis_back_seconds=round(healthy_after, 2),
           caught_up_after_redis_back_seconds=round(time.monotonic() - resumed, 2), settle_seconds=round(catch_up, 2))


@pytest.mark.parametrize("how", ["stop", "sigkill"])
def test_counts_are_exact_when_the_broker_restarts_mid_stream(fs: FaultStack, dep: Deployment, tmp_path: Path,
                                                              how: str) -> None:
    events, truth = traffic(15, 1000)
    pacer = Pacer(dep, events, seconds=20, gates=1).start()  # the restart lands before the stream ends
    worker = dep.start_worker()
    wait_for(lambda: applied_offsets(fs) > 300, 60, what="some progress recorded in Redis")
    down = time.monotonic()
    if how == "stop":
        fs.stop_broker()
    else:
        fs.kill_broker()  # what the broker acknowledged is in the page cache: a process crash loses none of it
    time.sleep(2)
    fs.start_broker()  # the same log directory and ports
    back = time.monotonic()
    pacer.passed()
    progress = applied_offsets(fs)
    wait_for(lambda: applied_offsets(fs) > progress, 90, what="progress after the broker came back")
    resumed = time.monotonic() - back
    pacer.join()
    catch_up, _ = settle(dep, truth)
    assert worker.poll() is None
    report(tmp_path, f"broker_{how}", events_sent=len(events), lost=0, double_counted=0,
           broker_down_seconds=round(back - down, 2), progress_after_broker_back_seconds=round(resumed, 2),
           settle_seconds=round(catch_up, 2))
