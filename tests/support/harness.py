"""Integration-test helpers: run real `trustgap worker` processes against the session's broker and Redis.

Every test gets its own topic names and consumer group (`Deployment`), so tests share one broker without
seeing each other's messages.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import orjson
from confluent_kafka import Consumer, Producer, TopicPartition

from stream.admin import ensure_topics
from stream.embedded import StackInfo, free_port, stop
from stream.settings import Settings

T = TypeVar("T")
_seq = itertools.count()


def wait_for(check: Callable[[], T], timeout: float = 60.0, interval: float = 0.2, what: str = "condition") -> T:
    """Poll `check` until it returns something truthy; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last value {last!r}")


def eventually(check: Callable[[], T], timeout: float = 60.0, interval: float = 0.2, what: str = "assertions"
               ) -> T:
    """Run `check` (a function of assertions) until it passes, and return what it returns; after `timeout`
    seconds re-raise its last AssertionError.

    For what a worker reaches asynchronously: a test waits for exactly what it asserts, never for a neighbour of
    it (an alert, a counter or an offset that comes a moment later is then not asserted too early)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return check()
        except AssertionError as err:
            if time.monotonic() >= deadline:
                raise AssertionError(f"after {timeout}s waiting for {what}: {err}") from err
        time.sleep(interval)


@dataclass
class Deployment:
    """One isolated trustgap deployment (topics + group) on the shared stack, with its settings as env vars."""

    stack: StackInfo
    logdir: Path
    overrides: dict[str, str] = field(default_factory=dict)
    name: str = field(default_factory=lambda: f"t{next(_seq)}{uuid.uuid4().hex[:6]}")
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def env(self) -> dict[str, str]:
        topics = {f"TRUSTGAP_TOPICS__{t.upper()}": f"{self.name}.{t}"
                  for t in ("predictions", "actions", "outcomes", "annotations", "alerts", "dlq")}
        return {
            "TRUSTGAP_BROKER_URL": self.stack.broker_url,
            "TRUSTGAP_REDIS_URL": self.stack.redis_url,
            "TRUSTGAP_APP_ID": self.name,
            # Kafka's smallest session by default (group.min.session.timeout.ms): a SIGKILLed worker's partitions
            # move to the others that much sooner than after the worker's own default of 10 s
            "TRUSTGAP_BROKER_SESSION_TIMEOUT": "6",
            "TRUSTGAP_BROKER_HEARTBEAT_INTERVAL": "1",
            "TRUSTGAP_TOPIC_PARTITIONS": "4",
            "TRUSTGAP_EVALUATE_INTERVAL": "0.3",
            # A test often moves the watermark with events on a few partitions only: the others, idle, stop holding
            # it back after this. A partition with a backlog is never idle, but one whose producer paused longer
            # than this is, and what it sends next may be late: that is the rule (60 s by default). 1 s was shorter
            # than the pauses of a test's producer on a loaded 2-core machine (a replay's predictions came late);
            # 10 s is longer than those, and short enough for the tests that wait for idle partitions.
            "TRUSTGAP_IDLE_TIMEOUT_SECONDS": "10",
            **topics,
            **self.overrides,
        }

    @property
    def settings(self) -> Settings:
        saved = dict(os.environ)
        try:
            os.environ.update(self.env)
            return Settings()
        finally:
            os.environ.clear()
            os.environ.update(saved)

    def create_topics(self) -> None:
        ensure_topics(self.settings)

    def start_worker(self, web_port: int | None = None, web_host: str = "127.0.0.1") -> subprocess.Popen[bytes]:
        port = web_port or free_port()
        env = {**os.environ, **self.env, "TRUSTGAP_WEB_PORT": str(port), "TRUSTGAP_WEB_HOST": web_host}
        log = self.logdir / f"{self.name}-worker{len(self.workers)}.log"
        with log.open("ab") as out:  # the child keeps its own descriptor
            proc = subprocess.Popen([sys.executable, "-m", "stream.cli", "worker", "--loglevel", "info"], env=env,
                                    stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        proc.web_port = port  # type: ignore[attr-defined]
        self.workers.append(proc)
        wait_for(lambda: _http_ok(port, web_host) or proc.poll() is not None, 60, what="worker web endpoint")
        assert proc.poll() is None, f"worker exited with {proc.returncode}; see {log.name}"
        return proc

    def stop_all(self) -> None:
        """Stop every worker at once: a graceful shutdown takes seconds, so one after another would add up."""
        with ThreadPoolExecutor(max(1, len(self.workers))) as pool:
            list(pool.map(lambda proc: stop(proc, 20), self.workers))

    def topic(self, name: str) -> str:
        return f"{self.name}.{name}"

    def send(self, topic: str, values: Iterable[bytes | dict[str, Any] | list[Any]], key: bytes | None = None,
             partition: int | None = None, **config: Any) -> int:
        """Produce raw values (dicts/lists are JSON-encoded) to one of this deployment's topics (to `partition`
        when given, else by key), with producer `config` over the defaults."""
        producer = Producer({"bootstrap.servers": self.stack.bootstrap_servers, "linger.ms": 5, **config})
        where = {} if partition is None else {"partition": partition}
        n = 0
        for v in values:
            raw = v if isinstance(v, bytes) else orjson.dumps(v)
            k = key
            if k is None and isinstance(v, dict) and "prediction_id" in v:
                k = str(v["prediction_id"]).encode()
            while True:
                try:
                    producer.produce(self.topic(topic), value=raw, key=k or b"k", **where)
                    break
                except BufferError:
                    producer.poll(0.1)
            n += 1
        # as long as a broker restart under load can take: the producer retries meanwhile, as a service's would
        assert producer.flush(120) == 0, "messages left undelivered"
        return n

    def read(self, topic: str, at_least: int, timeout: float = 60.0) -> list[Any]:
        """Every message on a topic from the beginning, waiting until there are at least `at_least`."""
        consumer = Consumer({"bootstrap.servers": self.stack.bootstrap_servers, "group.id": f"r{uuid.uuid4().hex}",
                             "auto.offset.reset": "earliest", "enable.auto.commit": False})
        name = self.topic(topic)
        meta = consumer.list_topics(name, timeout=10).topics[name]
        consumer.assign([TopicPartition(name, p, 0) for p in meta.partitions])
        out: list[Any] = []
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                msg = consumer.poll(0.5)
                if msg is not None and not msg.error():
                    out.append(orjson.loads(msg.value()))
                elif len(out) >= at_least:
                    return out
        finally:
            consumer.close()
        raise AssertionError(f"{name}: {len(out)} messages after {timeout}s, expected at least {at_least}")


def _http_ok(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/health", timeout=1) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def metrics_text(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        return str(resp.read().decode())


def trustgap(dep: Deployment | None, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """The CLI, as a user runs it, against a deployment's broker, Redis and topics."""
    full = {**os.environ, **(dep.env if dep else {}), "TRUSTGAP_STATE_DIR": "/nonexistent-trustgap-state",
            "COLUMNS": "220", **env}
    return subprocess.run([sys.executable, "-m", "stream.cli", *args], env=full, capture_output=True, text=True,
                          timeout=120)


def metric_value(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels` (0 when absent)."""
    from prometheus_client.parser import text_string_to_metric_families

    total = 0.0
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total
