"""Real trustgap worker processes on a fresh deployment each, measured from the offsets they write to Redis.

A worker is `python -m stream.cli worker`; its progress is read from the offsets it writes to Redis in the same
call as its counts, so a run is done exactly when every event was applied.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from bench.data import encode_batched, predictions
from bench.group import HEARTBEAT_INTERVAL_S, SESSION_TIMEOUT_S
from bench.rtproxy import RoundTripProxy
from bench.topics import BATCH, PARTITIONS, create_topic, produce, produce_to_partitions
from stream.embedded import StackInfo, free_port
from stream.embedded import stop as stop_process
from stream.state import keys

JOIN = {"TRUSTGAP_BROKER_SESSION_TIMEOUT": f"{SESSION_TIMEOUT_S:g}",
        "TRUSTGAP_BROKER_HEARTBEAT_INTERVAL": f"{HEARTBEAT_INTERVAL_S:g}"}


@dataclass
class WorkerRun:
    rate: float
    trips_per_1000: float
    peak_rss_mib: float
    cpu: dict[str, float] = field(default_factory=dict)  # process -> share of one core during the measured span


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _http_ok(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def wait_for(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.02) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(interval)
    raise RuntimeError(f"timed out after {timeout}s waiting for {what}")


class Workers:
    """`n` real trustgap worker processes on one fresh deployment (own group, own side topics, Redis flushed)."""

    def __init__(self, stack: StackInfo, logdir: Path, predictions_topic: str, env: dict[str, str] | None = None,
                 actions_topic: str | None = None) -> None:
        self.stack, self.logdir = stack, logdir
        self.name = f"bench-{uuid.uuid4().hex[:8]}"
        self.redis = redis.Redis.from_url(stack.redis_url)
        self.redis.flushall()
        self.proxy = RoundTripProxy(stack.redis_port).start()
        topics = {f"TRUSTGAP_TOPICS__{t.upper()}": f"{self.name}.{t}"
                  for t in ("actions", "outcomes", "annotations", "alerts", "dlq")}
        topics["TRUSTGAP_TOPICS__PREDICTIONS"] = predictions_topic
        if actions_topic:
            topics["TRUSTGAP_TOPICS__ACTIONS"] = actions_topic
        self.env = {**os.environ, **JOIN, **topics, "TRUSTGAP_BROKER_URL": stack.broker_url,
                    "TRUSTGAP_REDIS_URL": f"redis://127.0.0.1:{self.proxy.port}/0", "TRUSTGAP_APP_ID": self.name,
                    "TRUSTGAP_TOPIC_PARTITIONS": str(PARTITIONS), **(env or {})}
        self.topic = predictions_topic
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self) -> subprocess.Popen[bytes]:
        port = free_port()
        log = self.logdir / f"{self.name}-{len(self.procs)}.log"
        with log.open("ab") as out:  # the worker keeps its own descriptor
            proc = subprocess.Popen([sys.executable, "-m", "stream.cli", "worker", "--loglevel", "warning"],
                                    env={**self.env, "TRUSTGAP_WEB_PORT": str(port)}, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append(proc)
        wait_for(lambda: _http_ok(port) or proc.poll() is not None, 90, "worker web endpoint", 0.1)
        if proc.poll() is not None:
            raise RuntimeError(f"worker exited with {proc.returncode}; see {log.name}")
        return proc

    def applied_messages(self) -> int:
        """Messages of the predictions topic whose effects are in Redis (the offsets written with them)."""
        raw = self.redis.hgetall(keys.OFFSETS)
        return sum(int(v) for k, v in raw.items() if k.decode().rpartition(":")[0] == self.topic)

    def measure(self, total_messages: int, events_per_message: int, others: Sequence[int] = ()) -> WorkerRun:
        """Wait until every message is applied; rate and trips over the span from first progress to the end."""
        start_msgs = wait_for(self.applied_messages, 300, "the worker's first batch")
        t0, trips0 = time.perf_counter(), self.proxy.trips
        pids = [p.pid for p in self.procs] + list(others)
        cpu0 = {pid: _cpu_seconds(pid) for pid in pids}
        wait_for(lambda: self.applied_messages() >= total_messages, 900, "every message applied")
        elapsed, trips = time.perf_counter() - t0, self.proxy.trips - trips0
        events = (total_messages - start_msgs) * events_per_message
        if not events:
            raise RuntimeError("the worker finished before it was first observed: the data set is too small")
        cpu = {pid: (_cpu_seconds(pid) - c) / elapsed for pid, c in cpu0.items()}
        return WorkerRun(events / elapsed, trips * 1000 / events if events else float("nan"),
                         max(_peak_rss_mib(p.pid) for p in self.procs), {str(k): v for k, v in cpu.items()})

    def stop(self) -> None:
        # All at once, so that no worker spends the others' shutdown taking over their partitions.
        with ThreadPoolExecutor(max(len(self.procs), 1)) as pool:
            list(pool.map(lambda proc: stop_process(proc, 20), self.procs))
        self.proxy.stop()
        self.redis.close()


def worker_run(stack: StackInfo, logdir: Path, topic: str, total_messages: int, events_per_message: int,
               env: dict[str, str] | None = None) -> WorkerRun:
    w = Workers(stack, logdir, topic, env)
    try:
        w.start()
        return w.measure(total_messages, events_per_message)
    finally:
        w.stop()


def scale_out(stack: StackInfo, logdir: Path, n_workers: int, events: int, seed: int) -> WorkerRun:
    """`n_workers` in one group on a 4-partition topic; the data is produced once the group has settled."""
    topic = f"bench-scale-{uuid.uuid4().hex[:8]}"
    create_topic(stack, topic)
    w = Workers(stack, logdir, topic)
    try:
        for _ in range(n_workers):
            w.start()
        # One message per partition proves every partition is assigned and consumed; with several workers the sleep
        # outlasts the session timeout, so a rebalance triggered by the last one's join is over before the bulk
        # arrives (a lone worker's group has no other member to rebalance with).
        warm = [(f"{p}".encode(), v) for p, (_, v) in
                enumerate(encode_batched(predictions(PARTITIONS * 10, seed=seed + 1), 10))]
        sent = produce_to_partitions(stack, topic, warm)
        wait_for(lambda: w.applied_messages() >= sent, 120, "warm-up messages")
        if n_workers > 1:
            time.sleep(SESSION_TIMEOUT_S + 1)
        bulk = encode_batched(predictions(events, seed=seed), BATCH)
        producer = threading.Thread(target=produce, args=(stack, topic, bulk))
        producer.start()
        # Measure from the first bulk progress: pids of the broker and Redis, to report the CPU split.
        orig = w.applied_messages
        w.applied_messages = lambda: max(0, orig() - sent)  # type: ignore[method-assign]
        run = w.measure(len(bulk), BATCH, others=[stack.broker_proc.pid, stack.redis_proc.pid, os.getpid()])
        producer.join()
        names = {str(p.pid): f"worker{i + 1}" for i, p in enumerate(w.procs)}
        names |= {str(stack.broker_proc.pid): "broker", str(stack.redis_proc.pid): "redis",
                  str(os.getpid()): "bench (producer)"}
        run.cpu = {names[k]: v for k, v in run.cpu.items()}
        return run
    finally:
        w.stop()
