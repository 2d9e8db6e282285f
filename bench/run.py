"""Run every throughput, Redis-cost and alert-latency measurement on Apache Kafka and on Tansu in one invocation,
beside the raw consumer, a bare Faust agent and Quix Streams, and print the figures a column per broker.

Throughput is measured the same way for every consumer: from the first event it sees to the last of a topic
that was filled before it started (joins and start-up are excluded; what is left is steady-state consumption).
Each broker gets a fresh stack and the same seeded data; every ratio is taken between figures of one broker's runs,
which alternate, so they share the machine's noise.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import orjson

from bench.data import encode_batched, encode_single, predictions
from bench.latency import alert_latency, pct
from bench.peers import PeerFailed, faust_counter, quix_counter, quix_missing, raw_consumer
from bench.redis_cost import redis_bytes_per_prediction
from bench.report import BrokerResult, side_by_side
from bench.topics import BATCH, create_topic, produce
from bench.workers import scale_out, worker_run
from stream.embedded import BrokerKind, StackInfo, running_stack
from stream.settings import Settings

GC_THRESHOLD = Settings().gc_threshold
# (mode, message shape) of each Quix Streams run; bench/quix_count.py says what each does.
QUIX_RUNS = [("count", "single"), ("window", "single"), ("count", "batched"), ("window", "batched")]


@dataclass(frozen=True)
class Sizes:
    raw: int          # single-event messages for the raw aiokafka consumer
    single: int       # single-event messages for Faust, Quix and the worker (they are ~30x slower)
    batched: int      # events in BATCH-sized messages
    # events of the batched topic (its first ones) that Quix's windowed count reads: re-keying by model sends every
    # event through a repartition topic, ~10x slower than its stateless count, so all of them would cost minutes
    quix_window_batched: int
    memory: int       # predictions applied to Redis for the bytes-per-prediction figure
    latency_s: float  # seconds of the 5k events/s alert-latency run
    # runs per broker, Apache Kafka first: it is what a deployment runs (docker-compose.yaml, deploy/kafka), so its
    # figures get the medians; one run on Tansu, the demo's broker, shows what the broker itself changes
    runs: dict[BrokerKind, int] = field(default_factory=dict)


QUICK = Sizes(raw=20_000, single=3_000, batched=60_000, quix_window_batched=10_000, memory=20_000, latency_s=15,
              runs={"kafka": 1, "tansu": 0})
FULL = Sizes(raw=200_000, single=40_000, batched=400_000, quix_window_batched=50_000, memory=1_000_000,
             latency_s=40, runs={"kafka": 3, "tansu": 1})


@dataclass
class Bench:
    """One broker's stack, its filled topics and what has been measured on it."""

    stack: StackInfo
    logdir: Path
    sizes: Sizes
    quick: bool
    out: BrokerResult
    topics: dict[str, str] = field(default_factory=dict)
    messages: dict[str, int] = field(default_factory=dict)
    failed_peers: set[str] = field(default_factory=set)

    def fill(self) -> None:
        """The same seeded data on every broker: raw and single-event topics, and the batched one."""
        s = self.sizes
        data = {"raw": encode_single(predictions(s.raw, seed=1)),
                "single": encode_single(predictions(s.single, seed=2)),
                "batched": encode_batched(predictions(s.batched, seed=3), BATCH)}
        for kind, messages in data.items():
            self.topics[kind] = f"bench-{kind}-{uuid.uuid4().hex[:6]}"
            self.messages[kind] = len(messages)
            create_topic(self.stack, self.topics[kind])
            produce(self.stack, self.topics[kind], messages)
        print(f"data: {s.raw:,} + {s.single:,} single-event messages, {s.batched:,} events in "
              f"{self.messages['batched']:,} messages of {BATCH}; mean prediction "
              f"{statistics.mean(len(v) for _, v in data['single'][:1000]):.0f} bytes", flush=True)

    def baselines(self) -> None:
        s, t, rec = self.sizes, self.topics, self.out.record
        for decode in ("none", "orjson", "pydantic"):
            rec(f"aiokafka getmany {decode} ev/s", asyncio.run(raw_consumer(self.stack, t["raw"], s.raw, decode)))
        rec("aiokafka getmany pydantic, batched ev/s",
            asyncio.run(raw_consumer(self.stack, t["batched"], s.batched, "pydantic")))
        variants = [("faust count per event ev/s", "event", "asyncio", 0),
                    ("faust count take(1000) ev/s", "take", "asyncio", 0)]
        if not self.quick:
            # the worker's own collector settings (gc_threshold, gc.freeze) applied to the bare agent too
            variants += [("faust count per event, uvloop ev/s", "event", "uvloop", 0),
                         ("faust count per event, worker's gc settings ev/s", "event", "asyncio", GC_THRESHOLD)]
        for name, mode, loop, gc_threshold in variants:
            rec(name, faust_counter(self.stack, t["single"], s.single, mode, loop, self.logdir, gc_threshold))

    def workers(self) -> None:
        t, n, rec = self.topics, self.messages, self.out.record
        if not self.quick:  # the worker on the standard loop, for the like-for-like ratio with the bare agent
            asyncio_loop = {"TRUSTGAP_EVENT_LOOP": "asyncio"}
            rec("trustgap single-event, asyncio ev/s",
                worker_run(self.stack, self.logdir, t["single"], n["single"], 1, asyncio_loop).rate)
            rec("trustgap batched, asyncio ev/s",
                worker_run(self.stack, self.logdir, t["batched"], n["batched"], BATCH, asyncio_loop).rate)
        single = worker_run(self.stack, self.logdir, t["single"], n["single"], 1)  # default settings (uvloop)
        rec("trustgap single-event ev/s", single.rate)
        rec("trustgap single-event redis trips/1000 ev", single.trips_per_1000)
        batched = worker_run(self.stack, self.logdir, t["batched"], n["batched"], BATCH)
        rec("trustgap batched ev/s", batched.rate)
        rec("trustgap batched redis trips/1000 ev", batched.trips_per_1000)
        rec("trustgap worker peak RSS MiB", max(single.peak_rss_mib, batched.peak_rss_mib))

    def quix(self) -> None:
        """Quix Streams on the same topics; a run that fails on this broker is noted, not retried."""
        expect = {("count", "single"): self.sizes.single, ("window", "single"): self.sizes.single,
                  ("count", "batched"): self.sizes.batched, ("window", "batched"): self.sizes.quix_window_batched}
        for mode, shape in QUIX_RUNS:
            name = f"quix {mode} {'single-event' if shape == 'single' else shape} ev/s"
            if name in self.failed_peers:
                continue
            try:
                rate = quix_counter(self.stack, self.topics[shape], expect[mode, shape], mode, shape, self.logdir)
            except PeerFailed as exc:
                self.failed_peers.add(name)
                self.out.note(f"{name.removesuffix(' ev/s')}: {exc}")
                continue
            self.out.record(name, rate)

    def scale(self, run: int) -> None:
        for n in (1, 2):
            sc = scale_out(self.stack, self.logdir, n, self.sizes.batched, seed=20 + run)
            self.out.record(f"scale-out {n} worker(s) ev/s", sc.rate)
            print("    CPU (cores busy): " + ", ".join(f"{k} {v:.2f}" for k, v in sorted(sc.cpu.items())), flush=True)

    def latency(self) -> None:
        lat, n_alerts = alert_latency(self.stack, self.logdir, self.sizes.latency_s, seed=5)
        print(f"  alerts received: {n_alerts}, matched to a watermark: {len(lat)}", flush=True)
        self.out.record("alert latency p50 ms", pct(lat, 0.5) * 1000)
        self.out.record("alert latency p99 ms", pct(lat, 0.99) * 1000)


def measure_broker(broker: BrokerKind, runs: int, sizes: Sizes, quick: bool, tmp: Path,
                   redis: dict[str, float] | None) -> BrokerResult:
    """Every figure on a fresh stack of `broker`; fills `redis` with the Redis footprint when given one."""
    started = time.monotonic()
    logdir = tmp / broker / "logs"
    logdir.mkdir(parents=True)
    with running_stack(tmp / broker / "stack", broker=broker) as stack:
        print(f"\n== {broker}: broker {stack.bootstrap_servers}, redis {stack.redis_url}; logs in {logdir}", flush=True)
        bench = Bench(stack, logdir, sizes, quick, BrokerResult(broker, runs))
        bench.fill()
        for run in range(runs):
            print(f"{broker} run {run + 1}/{runs}", flush=True)
            bench.baselines()
            bench.workers()
            bench.quix()
            bench.scale(run)
        if redis is not None:
            per_pred, usage, cpu_us = asyncio.run(redis_bytes_per_prediction(stack, sizes.memory))
            redis[f"redis bytes per prediction (used_memory delta / {sizes.memory:,})"] = per_pred
            redis["redis MEMORY USAGE per context (slot hashes / n)"] = usage
            redis["redis CPU us per prediction (main thread, apply in chunks of take_max)"] = cpu_us
            print("".join(f"  {k}: {v:,.1f}\n" for k, v in redis.items()), end="", flush=True)
        bench.latency()
    print(f"{broker}: {(time.monotonic() - started) / 60:.1f} min", flush=True)
    return bench.out


def _machine() -> str:
    load = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"{os.cpu_count()} cores, load average (1 / 5 / 15 min) {load}"


def _commit() -> str:
    done = subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[1])
    return done.stdout.strip() or "unknown"


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="small sizes, one run on Apache Kafka only: checks that it all still runs")
    ap.add_argument("--runs", type=int, help="runs on Apache Kafka (medians reported); default 3, 1 with --quick")
    ap.add_argument("--tansu-runs", type=int, help="runs on Tansu; default 1, none with --quick (0: skip Tansu)")
    ap.add_argument("--json", type=Path, help="also write every figure to this file")
    args = ap.parse_args(argv)
    if why := quix_missing():
        ap.exit(2, f"python -m bench: {why}\n")
    sizes = QUICK if args.quick else FULL
    plan: dict[BrokerKind, int] = {"kafka": args.runs if args.runs is not None else sizes.runs["kafka"],
                                   "tansu": args.tansu_runs if args.tansu_runs is not None else sizes.runs["tansu"]}
    started = time.monotonic()
    shown = " ".join(sys.argv[1:] if argv is None else argv)
    print(f"python -m bench {shown}".rstrip() + f" at {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC "
          f"on {_commit()}; {_machine()}", flush=True)
    redis: dict[str, float] = {}
    blocks = []
    with tempfile.TemporaryDirectory(prefix="trustgap-bench-") as tmp:
        for broker, runs in plan.items():
            if runs > 0:
                blocks.append(measure_broker(broker, runs, sizes, args.quick, Path(tmp), redis if not blocks else None))
    print(f"\ndone in {(time.monotonic() - started) / 60:.1f} min; {_machine()}")
    print(side_by_side(blocks, redis))
    if args.json:
        args.json.write_text(orjson.dumps({"brokers": {b.broker: b.as_json() for b in blocks}, "redis": redis},
                                          option=orjson.OPT_INDENT_2).decode())
    return 0
