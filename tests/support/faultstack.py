"""An Apache Kafka broker and a redis-server owned by one fault test, which it kills, stops and restarts on the same
ports (Kafka on the same log directory, so a restart serves what it acknowledged before).

The session `stack` fixture is shared by other tests, so fault tests never touch it: each starts its own pair with
`stream.embedded` and kills only those processes (by their pid).
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from stream.state import keys
from stream.embedded import free_port, start_redis, stop
from stream.embedded_kafka import kill_kafka, start_kafka, stop_kafka
from tests.support.harness import Deployment, metric_value, metrics_text


@dataclass
class FaultStack:
    """Apache Kafka + redis-server on fixed loopback ports; restarts reuse the ports, Kafka its log directory and
    Redis its AOF directory."""

    workdir: Path
    broker_port: int = field(default_factory=free_port)
    controller_port: int = field(default_factory=free_port)
    redis_port: int = field(default_factory=free_port)
    broker: subprocess.Popen[bytes] | None = None
    redis: subprocess.Popen[bytes] | None = None
    password: str | None = None

    @property
    def broker_url(self) -> str:
        return f"kafka://127.0.0.1:{self.broker_port}"

    @property
    def redis_url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.redis_port}/0"

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.broker_port}"

    @property
    def redis_dir(self) -> Path:
        return self.workdir / "redis"

    def start_broker(self) -> None:
        self.broker = start_kafka(self.workdir / "kafka", self.broker_port, self.controller_port,
                                  self.workdir / "broker.log")

    def stop_broker(self) -> None:
        """A clean shutdown (SIGTERM: the broker flushes and closes its log)."""
        assert self.broker is not None
        stop_kafka(self.broker)

    def start_redis(self) -> None:
        if self.password is None:
            self.redis = start_redis(self.redis_port, self.redis_dir, self.workdir / "redis.log", appendonly=True)
        else:  # embedded.start_redis has no password option; the readiness probe needs AUTH too
            self.redis_dir.mkdir(parents=True, exist_ok=True)
            with (self.workdir / "redis.log").open("ab") as log:  # the child keeps its own descriptor
                self.redis = subprocess.Popen(
                    ["redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1", "--save", "",
                     "--requirepass", self.password, "--dir", str(self.redis_dir)],
                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            deadline = time.monotonic() + 30
            while not self.redis_answers():
                assert time.monotonic() < deadline, "redis-server with requirepass did not start"
                time.sleep(0.05)

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.redis_url, socket_timeout=5, socket_connect_timeout=2)

    def redis_answers(self) -> bool:
        try:
            with self.client() as c:
                return bool(c.ping())
        except redis.RedisError:
            return False

    def kill_redis(self, lose_tail_fraction: float = 0.0) -> int:
        """SIGKILL redis-server; optionally cut the tail of its AOF, as a crash before `everysec` fsync would.

        Returns the bytes cut. A kill -9 alone loses almost nothing (the AOF is written before replies, only
        fsynced lazily), so the cut is what makes Redis's state actually roll back behind Kafka's commits."""
        assert self.redis is not None
        return kill_redis(self.redis, self.redis_dir, lose_tail_fraction)

    def pause_redis(self) -> None:
        assert self.redis is not None
        os.kill(self.redis.pid, signal.SIGSTOP)

    def resume_redis(self) -> None:
        assert self.redis is not None
        os.kill(self.redis.pid, signal.SIGCONT)

    def kill_broker(self) -> None:
        assert self.broker is not None
        kill_kafka(self.broker)

    def stop(self) -> None:
        for proc in (self.redis, self.broker):
            if proc is not None:
                with_cont(proc)
                stop(proc)


def with_cont(proc: subprocess.Popen[bytes]) -> None:
    """A SIGSTOPped process ignores SIGTERM until continued."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGCONT)


@contextlib.contextmanager
def fault_stack(workdir: Path, password: str | None = None) -> Iterator[FaultStack]:
    fs = FaultStack(workdir, password=password)
    try:
        fs.start_broker()
        fs.start_redis()
        yield fs
    finally:
        fs.stop()


def aof_mark(redis_dir: Path) -> tuple[Path, int]:
    """Where a redis-server's AOF ends now: its newest incremental file and that file's size."""
    incr = sorted((redis_dir / "appendonlydir").glob("*.incr.aof"))[-1]
    return incr, incr.stat().st_size


def kill_redis(proc: subprocess.Popen[bytes], redis_dir: Path, lose_tail_fraction: float = 0.0,
               since: tuple[Path, int] | None = None) -> int:
    """SIGKILL a redis-server whose AOF is in `redis_dir`, then cut that fraction of its AOF's tail (of what was
    written after `since`, an aof_mark, so a server that lived through earlier tests does not replay their state
    again); the bytes cut (FaultStack.kill_redis says why)."""
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    cut = 0
    if lose_tail_fraction:
        incr, size = aof_mark(redis_dir)
        start = since[1] if since is not None and since[0] == incr else 0
        cut = int((size - start) * lose_tail_fraction)
        with incr.open("r+b") as f:
            f.truncate(size - cut)
    return cut


def kill_worker(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL a worker process group (no shutdown, no commit, no flush)."""
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def applied_offsets(fs: FaultStack) -> int:
    """Sum of the next offsets Redis holds over all partitions (a progress gauge for the log)."""
    try:
        with fs.client() as c:
            return sum(int(v) for v in c.hgetall(keys.OFFSETS).values())
    except redis.RedisError:
        return -1


def events_seen(port: int) -> float:
    """Events a worker has handled so far (any result), or -1 while its endpoint does not answer."""
    try:
        return metric_value(metrics_text(port), "trustgap_events_total")
    except OSError:
        return -1


class Pacer:
    """Sends (topic, event) pairs in the background at a steady pace, so faults land while traffic flows.

    With `gates=N` the stream is cut into N + 1 parts, and the last chunk of part j is held until the test has
    called `passed()` j + 1 times: each of N faults then lands before the stream ends, however slowly a loaded
    machine restarts the workers in between, instead of a race between the fault schedule and the pace."""

    def __init__(self, dep: Deployment, events: Sequence[tuple[str, Any]], seconds: float, chunk: int = 50,
                 gates: int = 0) -> None:
        self.dep, self.events, self.chunk = dep, list(events), chunk
        chunks = max(1, -(-len(self.events) // chunk))
        self.pause = seconds / chunks
        # the index of the chunk each gate holds back: the last one of each of the first `gates` parts
        self.held = {(j + 1) * chunks // (gates + 1) - 1 for j in range(gates)} if gates else set()
        assert len(self.held) == gates and min(self.held, default=0) >= 0, "more gates than chunks"
        self._gate = threading.Semaphore(0)
        self.sent = 0
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            for n, i in enumerate(range(0, len(self.events), self.chunk)):
                if n in self.held:
                    self._gate.acquire()
                part = self.events[i:i + self.chunk]
                for topic in {t for t, _ in part}:
                    self.dep.send(topic, [e for t, e in part if t == topic])
                self.sent += len(part)
                time.sleep(self.pause)
        except BaseException as err:  # surfaced by join()
            self.error = err

    def start(self) -> Pacer:
        self.thread.start()
        return self

    def passed(self) -> None:
        """A fault has happened: the next gate may open."""
        self._gate.release()

    @property
    def done(self) -> bool:
        return not self.thread.is_alive()

    def join(self) -> None:
        self.thread.join()
        if self.error:
            raise self.error


class Stalls:
    """Samples the offset Redis holds for each partition every `interval` in the background: the longest time a
    partition applied nothing and then moved on again is how long a rebalance (or a fault) stalled it."""

    def __init__(self, fs: FaultStack, interval: float = 0.1) -> None:
        self.fs, self.interval = fs, interval
        self.samples: list[tuple[float, dict[bytes, bytes]]] = []
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with self.fs.client() as client:
            while not self._stop.is_set():
                with contextlib.suppress(redis.RedisError):
                    self.samples.append((time.monotonic(), client.hgetall(keys.OFFSETS)))
                self._stop.wait(self.interval)

    def __enter__(self) -> Stalls:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self.thread.join()

    def longest(self, since: float) -> tuple[float, float]:
        """The longest times after `since` that the group's applied offsets (their sum), and any one partition's,
        stood still and then moved again: stalls processing came back from (the quiet after the last message is
        not one). A partition also waits while its worker applies the others' backlog, so the second is an upper
        bound on what the rebalance itself cost that partition."""
        window = [(t, offsets) for t, offsets in self.samples if t >= since]
        group = _longest_flat([(t, sum(int(v) for v in offsets.values())) for t, offsets in window])
        partitions = [_longest_flat([(t, offsets.get(p)) for t, offsets in window])
                      for p in {p for _, offsets in window for p in offsets}]
        return group, max(partitions, default=0.0)


def _longest_flat(series: Sequence[tuple[float, object]]) -> float:
    """Seconds of the longest run of equal values in a time series that a different value ended."""
    longest, flat_from, last = 0.0, None, None
    for t, value in series:
        if flat_from is None or value != last:
            if flat_from is not None:
                longest = max(longest, t - flat_from)
            flat_from, last = t, value
    return round(longest, 2)


def random_instants(rng: random.Random, n: int, low: float, high: float) -> list[float]:
    return [rng.uniform(low, high) for _ in range(n)]


def timed(fn: Callable[[], Any]) -> float:
    started = time.monotonic()
    fn()
    return time.monotonic() - started
