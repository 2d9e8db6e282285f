"""Run every throughput, Redis-cost and alert-latency measurement in one invocation against a fresh embedded stack,
and print the figures.

Throughput is measured the same way for every consumer: from the first event it sees to the last of a topic
that was filled before it started (joins and start-up are excluded; what is left is steady-state consumption).
The trustgap worker is a real `python -m stream.cli worker` subprocess whose progress is read from the offsets
it writes to Redis in the same call as its counts, so a run is done exactly when every event was applied.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import redis

from bench.data import T0, encode_batched, encode_single, prediction, predictions
from bench.rtproxy import RoundTripProxy
from stream.state import keys
from stream.embedded import StackInfo, free_port, running_stack
from stream.embedded import stop as stop_process
from stream.settings import Settings

PARTITIONS = 4
BATCH = 500            # events per JSON-array message in the batched runs
JOIN = {"TRUSTGAP_BROKER_SESSION_TIMEOUT": "2", "TRUSTGAP_BROKER_HEARTBEAT_INTERVAL": "0.5"}
GC_THRESHOLD = Settings().gc_threshold


@dataclass(frozen=True)
class Sizes:
    raw: int          # single-event messages for the raw aiokafka consumer
    single: int       # single-event messages for Faust and the worker (they are ~30x slower)
    batched: int      # events in BATCH-sized messages
    memory: int       # predictions applied to Redis for the bytes-per-prediction figure
    latency_s: float  # seconds of the 5k events/s alert-latency run
    runs: int


QUICK = Sizes(raw=20_000, single=3_000, batched=60_000, memory=20_000, latency_s=8, runs=1)
FULL = Sizes(raw=200_000, single=40_000, batched=400_000, memory=1_000_000, latency_s=40, runs=3)


# --- Kafka helpers -------------------------------------------------------------------------------------------

def create_topic(stack: StackInfo, name: str, partitions: int = PARTITIONS) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": stack.bootstrap_servers})
    for fut in admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)]).values():
        fut.result(30)


def produce(stack: StackInfo, topic: str, messages: Sequence[tuple[bytes, bytes]]) -> list[int]:
    """Produce keyed messages; returns how many landed on each partition (the worker's offsets must reach it)."""
    from confluent_kafka import Producer

    per_partition = [0] * PARTITIONS
    failed = []

    def delivered(err: Any, msg: Any) -> None:
        if err is not None:
            failed.append(err)
        else:
            per_partition[msg.partition()] += 1

    producer = Producer({"bootstrap.servers": stack.bootstrap_servers, "linger.ms": 10, "batch.size": 1 << 20,
                         "message.max.bytes": 4 << 20, "queue.buffering.max.kbytes": 1 << 20})
    for key, value in messages:
        while True:
            try:
                producer.produce(topic, value=value, key=key, on_delivery=delivered)
                break
            except BufferError:
                producer.poll(0.05)
    if producer.flush(120) or failed:
        raise RuntimeError(f"{topic}: messages not delivered ({failed[:1]})")
    return per_partition


# --- baselines -----------------------------------------------------------------------------------------------

async def raw_consumer(stack: StackInfo, topic: str, expect: int, decode: str) -> float:
    """aiokafka `getmany` over every partition (no group, no commit): events/s with no decode/orjson/pydantic."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from stream.events import parse

    consumer = AIOKafkaConsumer(bootstrap_servers=stack.bootstrap_servers, enable_auto_commit=False,
                                auto_offset_reset="earliest")
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, p) for p in range(PARTITIONS)])
        await consumer.seek_to_beginning()
        n, first, first_n, last = 0, 0.0, 0, 0.0
        while n < expect:
            batches = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            k = 0
            for msgs in batches.values():
                for m in msgs:
                    if decode == "none":
                        k += 1
                    elif decode == "orjson":
                        doc = orjson.loads(m.value)
                        k += len(doc) if isinstance(doc, list) else 1
                    else:
                        k += len(parse("prediction", m.value)[0])
            if k:
                now = time.perf_counter()
                if not first:
                    first, first_n = now, k
                n, last = n + k, now
        return (n - first_n) / (last - first)
    finally:
        await consumer.stop()


def faust_counter(stack: StackInfo, topic: str, expect: int, mode: str, loop: str, logdir: Path,
                  gc_threshold: int = 0) -> float:
    """The bare Faust counting agent in its own process, like a worker (gc_threshold 0: CPython's defaults)."""
    group = f"bench-faust-{uuid.uuid4().hex[:8]}"
    with (logdir / f"{group}.log").open("wb") as log:
        out = subprocess.run([sys.executable, "-m", "bench.faust_count", stack.broker_url, topic, group,
                              str(expect), mode, loop, str(gc_threshold)], stdout=subprocess.PIPE, stderr=log,
                             timeout=600, check=True)
    # Faust may write terminal control codes to stdout too; the figure is the one JSON line.
    lines = [line[line.index(b"{"):] for line in out.stdout.splitlines() if b"{" in line]
    if not lines:
        raise RuntimeError(f"faust counter printed no figure: {(logdir / f'{group}.log').read_text()[-2000:]}")
    r = orjson.loads(lines[-1])
    return float((r["n"] - r["first_n"]) / (r["last"] - r["first"]))


# --- trustgap workers ----------------------------------------------------------------------------------------

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


def _wait(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.02) -> Any:
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
        _wait(lambda: _http_ok(port) or proc.poll() is not None, 90, "worker web endpoint", 0.1)
        if proc.poll() is not None:
            raise RuntimeError(f"worker exited with {proc.returncode}; see {log.name}")
        return proc

    def applied_messages(self) -> int:
        """Messages of the predictions topic whose effects are in Redis (the offsets written with them)."""
        raw = self.redis.hgetall(keys.OFFSETS)
        return sum(int(v) for k, v in raw.items() if k.decode().rpartition(":")[0] == self.topic)

    def measure(self, total_messages: int, events_per_message: int, others: Sequence[int] = ()) -> WorkerRun:
        """Wait until every message is applied; rate and trips over the span from first progress to the end."""
        start_msgs = _wait(self.applied_messages, 300, "the worker's first batch")
        t0, trips0 = time.perf_counter(), self.proxy.trips
        pids = [p.pid for p in self.procs] + list(others)
        cpu0 = {pid: _cpu_seconds(pid) for pid in pids}
        _wait(lambda: self.applied_messages() >= total_messages, 900, "every message applied")
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
        # One message per partition proves every partition is assigned and consumed; the sleep outlasts the
        # session timeout, so a rebalance triggered by the last worker's join is over before the bulk arrives.
        warm = [(f"{p}".encode(), v) for p, (_, v) in
                enumerate(encode_batched(predictions(PARTITIONS * 10, seed=seed + 1), 10))]
        sent = _produce_to_partitions(stack, topic, warm)
        _wait(lambda: w.applied_messages() >= sent, 120, "warm-up messages")
        time.sleep(3)
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


def _produce_to_partitions(stack: StackInfo, topic: str, messages: Sequence[tuple[bytes, bytes]]) -> int:
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": stack.bootstrap_servers, "message.max.bytes": 4 << 20})
    for i, (key, value) in enumerate(messages):
        producer.produce(topic, value=value, key=key, partition=i % PARTITIONS)
    producer.flush(30)
    return len(messages)


# --- Redis footprint -----------------------------------------------------------------------------------------

def _redis_cpu_seconds(client: redis.Redis) -> float:
    """CPU time of Redis's main thread (the one that runs commands and scripts) so far."""
    cpu = client.info("cpu")
    return float(cpu["used_cpu_user_main_thread"]) + float(cpu["used_cpu_sys_main_thread"])


async def redis_bytes_per_prediction(stack: StackInfo, n: int) -> tuple[float, float, float]:
    """(used_memory delta / n, MEMORY USAGE of the context slot hashes / n, Redis main-thread CPU µs / n) after
    applying n predictions through Store.apply in chunks of the default `take_max`, as the worker does."""
    from stream.events import PredictionEvent
    from stream.state import Progress, Store

    sync = redis.Redis.from_url(stack.redis_url)
    sync.flushall()
    settings = Settings(redis_url=stack.redis_url)
    store = Store.from_settings(settings)
    now = int(time.time() * 1000)
    # Warm the script cache and the per-bucket meta keys first, so the delta is what predictions add.
    await store.apply([PredictionEvent.model_validate(prediction(random.Random(0), T0, "warm"))], Progress(), now)
    before = int(sync.info("memory")["used_memory"])
    cpu_before = _redis_cpu_seconds(sync)
    batch: list[Any] = []
    for e in predictions(n, seed=11, step_ms=1):
        batch.append(PredictionEvent.model_validate(e))
        if len(batch) == settings.take_max:
            await store.apply(batch, Progress(), now)
            batch = []
    if batch:
        await store.apply(batch, Progress(), now)
    cpu = _redis_cpu_seconds(sync) - cpu_before
    after = int(sync.info("memory")["used_memory"])
    # contexts are fields of a few slot hashes per bucket (keys.context_slot): measure them whole (SAMPLES 0)
    slots = list(sync.scan_iter(match="*:c:*", count=1000))
    usage = sum(int(sync.memory_usage(k, samples=0) or 0) for k in slots) / n
    await store.close()
    sync.flushall()
    sync.close()
    return (after - before) / n, usage, cpu * 1e6 / n


# --- alert latency -------------------------------------------------------------------------------------------

LATENCY_ENV = {
    # Minute windows whose event time runs 30x the wall clock: a window closes every 2 s of wall time.
    "TRUSTGAP_DEFAULTS__WINDOW_SECONDS": "60", "TRUSTGAP_DEFAULTS__ALLOWED_LATENESS_SECONDS": "5",
    "TRUSTGAP_DEFAULTS__BASELINE_WINDOWS": "4", "TRUSTGAP_DEFAULTS__MIN_SAMPLES": "20",
    "TRUSTGAP_DEFAULTS__PERSISTENCE": "1", "TRUSTGAP_DEFAULTS__RESOLVE_AFTER": "1",
    "TRUSTGAP_EVALUATE_INTERVAL": "0.25",
}
SPEEDUP = 30
RATE = 5000           # events/s: half predictions, half actions
TICK = 0.02           # seconds between produced batches


def alert_latency(stack: StackInfo, logdir: Path, seconds: float, seed: int) -> tuple[list[float], int]:
    """Latencies (s) from the moment the watermark passed a window's end to its alert arriving on the topic."""
    from confluent_kafka import Consumer, Producer, TopicPartition

    preds_t, acts_t = f"bench-lat-{uuid.uuid4().hex[:8]}", f"bench-lat-a-{uuid.uuid4().hex[:8]}"
    create_topic(stack, preds_t)
    create_topic(stack, acts_t)
    w = Workers(stack, logdir, preds_t, LATENCY_ENV, actions_topic=acts_t)
    marks: list[tuple[int, float]] = []  # (newest event ms sent, wall time it was flushed)
    received: list[tuple[dict[str, Any], float]] = []
    stop = threading.Event()
    try:
        w.start()
        alerts_t = f"{w.name}.alerts"

        def consume() -> None:
            c = Consumer({"bootstrap.servers": stack.bootstrap_servers, "group.id": f"r{uuid.uuid4().hex}",
                          "enable.auto.commit": False, "fetch.wait.max.ms": 10})
            _wait(lambda: alerts_t in c.list_topics(timeout=5).topics, 30, "alerts topic", 0.2)
            c.assign([TopicPartition(alerts_t, p, 0) for p in range(PARTITIONS)])
            while not stop.is_set():
                msg = c.poll(0.05)
                if msg is not None and not msg.error():
                    received.append((orjson.loads(msg.value()), time.time()))
            c.close()

        reader = threading.Thread(target=consume)
        reader.start()
        rng = random.Random(seed)
        producer = Producer({"bootstrap.servers": stack.bootstrap_servers, "linger.ms": 2})
        models = [f"m{i}" for i in range(4)]
        start_ev = int((datetime.now(timezone.utc) - timedelta(days=1)).timestamp() * 1000)
        start_ev -= start_ev % 60_000
        wall0 = time.time()
        per_tick = int(RATE * TICK / 2)
        while (now := time.time()) - wall0 < seconds:
            ts = start_ev + int((now - wall0) * SPEEDUP * 1000)
            window = ts // 60_000
            preds, acts = [], []
            for i in range(per_tick):
                model = models[i % len(models)]
                t = datetime.fromtimestamp(ts / 1000, timezone.utc)
                p = prediction(rng, t, model)
                p["segment"] = {"region": p["segment"]["region"]}
                preds.append(p)
                # Every third window per model is an override spike: it fires, and the next one resolves it.
                high = (window + models.index(model)) % 3 == 2
                acts.append({"schema_version": 1, "event_id": f"a-{uuid.UUID(int=rng.getrandbits(128))}",
                             "prediction_id": p["prediction_id"], "ts": p["ts"],
                             "action": "override" if rng.random() < (0.9 if high else 0.1) else "accept"})
            producer.produce(preds_t, orjson.dumps(preds), key=str(window).encode())
            producer.produce(acts_t, orjson.dumps(acts), key=str(window).encode())
            producer.flush(5)
            marks.append((ts, time.time()))
            time.sleep(max(0.0, TICK - (time.time() - now)))
        time.sleep(3)  # let the last closed windows' alerts arrive
    finally:
        stop.set()
        w.stop()
    if "reader" in locals():
        reader.join(10)
    lateness = int(LATENCY_ENV["TRUSTGAP_DEFAULTS__ALLOWED_LATENESS_SECONDS"]) * 1000
    sent_ts = [m[0] for m in marks]
    out = []
    for alert, at in received:
        end = int(datetime.fromisoformat(alert["window"]["end"]).timestamp() * 1000)
        i = bisect.bisect_left(sent_ts, end + lateness)
        if i < len(marks):
            out.append(at - marks[i][1])
    return out, len(received)


# --- report --------------------------------------------------------------------------------------------------

def pct(xs: Sequence[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))] if s else float("nan")


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, one run: checks that it all still runs")
    ap.add_argument("--runs", type=int, help="runs per figure (median reported); default 3, 1 with --quick")
    ap.add_argument("--json", type=Path, help="also write every figure to this file")
    args = ap.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    runs = args.runs or sizes.runs
    results: dict[str, list[float]] = {}

    def record(name: str, value: float) -> None:
        results.setdefault(name, []).append(value)
        print(f"  {name}: {value:,.1f}", flush=True)

    with tempfile.TemporaryDirectory(prefix="trustgap-bench-") as tmp, running_stack(Path(tmp) / "stack") as stack:
        logdir = Path(tmp)
        print(f"stack up: broker {stack.bootstrap_servers}, redis {stack.redis_url}; logs in {logdir}", flush=True)
        raw_t, single_t, batched_t = (f"bench-{k}-{uuid.uuid4().hex[:6]}" for k in ("raw", "single", "batched"))
        for t in (raw_t, single_t, batched_t):
            create_topic(stack, t)
        produce(stack, raw_t, encode_single(predictions(sizes.raw, seed=1)))
        single_msgs = encode_single(predictions(sizes.single, seed=2))
        produce(stack, single_t, single_msgs)
        batched_msgs = encode_batched(predictions(sizes.batched, seed=3), BATCH)
        produce(stack, batched_t, batched_msgs)
        print(f"data: {sizes.raw:,} + {sizes.single:,} single-event messages, {sizes.batched:,} events in "
              f"{len(batched_msgs):,} messages of {BATCH}; mean prediction "
              f"{statistics.mean(len(v) for _, v in single_msgs[:1000]):.0f} bytes", flush=True)
        for run in range(runs):
            print(f"run {run + 1}/{runs}", flush=True)
            for decode in ("none", "orjson", "pydantic"):
                record(f"aiokafka getmany {decode} ev/s", asyncio.run(raw_consumer(stack, raw_t, sizes.raw, decode)))
            record("aiokafka getmany pydantic, batched ev/s",
                   asyncio.run(raw_consumer(stack, batched_t, sizes.batched, "pydantic")))
            record("faust count per event ev/s", faust_counter(stack, single_t, sizes.single, "event", "asyncio",
                                                               logdir))
            record("faust count take(1000) ev/s", faust_counter(stack, single_t, sizes.single, "take", "asyncio",
                                                                logdir))
            if not args.quick:
                record("faust count per event, uvloop ev/s",
                       faust_counter(stack, single_t, sizes.single, "event", "uvloop", logdir))
                # the worker's own collector settings (gc_threshold, gc.freeze) applied to the bare agent too
                record("faust count per event, worker's gc settings ev/s",
                       faust_counter(stack, single_t, sizes.single, "event", "asyncio", logdir, GC_THRESHOLD))
            if not args.quick:  # the worker on the standard loop, for the like-for-like ratio with the bare agent
                record("trustgap single-event, asyncio ev/s", worker_run(
                    stack, logdir, single_t, len(single_msgs), 1, {"TRUSTGAP_EVENT_LOOP": "asyncio"}).rate)
                record("trustgap batched, asyncio ev/s", worker_run(
                    stack, logdir, batched_t, len(batched_msgs), BATCH, {"TRUSTGAP_EVENT_LOOP": "asyncio"}).rate)
            single = worker_run(stack, logdir, single_t, len(single_msgs), 1)  # default settings (uvloop)
            record("trustgap single-event ev/s", single.rate)
            record("trustgap single-event redis trips/1000 ev", single.trips_per_1000)
            batched = worker_run(stack, logdir, batched_t, len(batched_msgs), BATCH)
            record("trustgap batched ev/s", batched.rate)
            record("trustgap batched redis trips/1000 ev", batched.trips_per_1000)
            record("trustgap worker peak RSS MiB", max(single.peak_rss_mib, batched.peak_rss_mib))
            for n in (1, 2):
                sc = scale_out(stack, logdir, n, sizes.batched, seed=20 + run)
                record(f"scale-out {n} worker(s) ev/s", sc.rate)
                print("    CPU (cores busy): " + ", ".join(f"{k} {v:.2f}" for k, v in sorted(sc.cpu.items())))
        per_pred, usage, cpu_us = asyncio.run(redis_bytes_per_prediction(stack, sizes.memory))
        record(f"redis bytes per prediction (used_memory delta / {sizes.memory:,})", per_pred)
        record("redis MEMORY USAGE per context (slot hashes / n)", usage)
        record("redis CPU us per prediction (main thread, apply in chunks of take_max)", cpu_us)
        lat, n_alerts = alert_latency(stack, logdir, sizes.latency_s, seed=5)
        print(f"  alerts received: {n_alerts}, matched to a watermark: {len(lat)}")
        record("alert latency p50 ms", pct(lat, 0.5) * 1000)
        record("alert latency p99 ms", pct(lat, 0.99) * 1000)

    med = {k: statistics.median(v) for k, v in results.items()}
    print(f"\nmedians over {runs} run(s)")
    width = max(len(k) for k in med)
    for k, v in med.items():
        print(f"  {k:<{width}}  {v:>12,.1f}")
    nan = float("nan")
    ratios = {
        "single-event worker / faust per-event count (worker on its default uvloop, faust on asyncio; target >= 0.9)":
            med["trustgap single-event ev/s"] / med["faust count per event ev/s"],
        "like for like, uvloop: single-event worker / faust per-event count on uvloop":
            med["trustgap single-event ev/s"] / med.get("faust count per event, uvloop ev/s", nan),
        "like for like, asyncio: single-event worker on asyncio / faust per-event count":
            med.get("trustgap single-event, asyncio ev/s", nan) / med["faust count per event ev/s"],
        "batched worker / aiokafka+pydantic single (target >= 0.45)":
            med["trustgap batched ev/s"] / med["aiokafka getmany pydantic ev/s"],
        "batched worker / 60k ev/s target": med["trustgap batched ev/s"] / 60_000,
        "single-event worker on asyncio / faust per-event count with the worker's gc settings":
            med.get("trustgap single-event, asyncio ev/s", nan)
            / med.get("faust count per event, worker's gc settings ev/s", nan),
        "2 workers / 1 worker (target >= 1.7)":
            med["scale-out 2 worker(s) ev/s"] / med["scale-out 1 worker(s) ev/s"],
    }
    print("ratios")
    for k, v in ratios.items():
        print(f"  {k:<{width + 10}}  {v:>6.2f}")
    if args.json:
        args.json.write_text(orjson.dumps({"runs": runs, "medians": med, "all": results, "ratios": ratios},
                                          option=orjson.OPT_INDENT_2).decode())
    return 0
