"""The evaluator alone: Redis round trips per timer tick, and alert latency at 5k events/s, repeated.

`python -m bench.evaluator trips` drives `stream.evaluator.evaluate` in this process through the round-trip proxy,
with four models whose windows close one per tick (event time is applied straight through the store, not through the
proxy), and prints the trips of an idle tick and of a tick that closes one window per model.
`python -m bench.evaluator latency --runs 3` runs bench.latency.alert_latency (a real worker) several times on one
stack and prints p50/p99 of each run: the CPU is shared, so the spread between runs is the noise.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from bench.data import prediction
from bench.rtproxy import RoundTripProxy
from bench.latency import LATENCY_ENV, alert_latency, pct
from stream.embedded import StackInfo, running_stack

MODELS = [f"m{i}" for i in range(4)]  # as in bench.latency.alert_latency; `--models` takes fewer


class _Alerts:
    """The alerts topic as Runtime uses it (`await send()` gives a future of the broker's ack), on aiokafka."""

    def __init__(self, producer: Any, name: str) -> None:
        self.producer, self.name = producer, name

    async def send(self, key: bytes, value: bytes) -> Any:
        return await self.producer.send(self.name, key=key, value=value)


def _settings(stack: StackInfo, redis_port: int) -> Any:
    from stream.settings import Settings

    defaults = {k.removeprefix("TRUSTGAP_DEFAULTS__").lower(): v for k, v in LATENCY_ENV.items()
                if k.startswith("TRUSTGAP_DEFAULTS__")}
    return Settings(redis_url=f"redis://127.0.0.1:{redis_port}/0", broker_url=stack.broker_url,
                    defaults=defaults)  # type: ignore[arg-type]


def _window_events(rng: random.Random, start_ms: int, n: int, spike: bool) -> list[Any]:
    from stream.events import HumanActionEvent, PredictionEvent

    out: list[Any] = []
    for i in range(n):
        model = MODELS[i % len(MODELS)]
        t = datetime.fromtimestamp((start_ms + rng.randrange(60_000)) / 1000, timezone.utc)
        p = prediction(rng, t, model)
        out.append(PredictionEvent.model_validate(p))
        high = spike and model in ("m0", "m1")
        out.append(HumanActionEvent.model_validate({
            "schema_version": 1, "event_id": f"a-{uuid.UUID(int=rng.getrandbits(128))}",
            "prediction_id": p["prediction_id"], "ts": p["ts"],
            "action": "override" if rng.random() < (0.9 if high else 0.1) else "accept"}))
    return out


async def trips(stack: StackInfo, windows: int) -> dict[str, float]:
    """Trips per tick: idle ticks, and ticks that close one window for each model (with alerts)."""
    from aiokafka import AIOKafkaProducer
    from prometheus_client import CollectorRegistry

    from bench.topics import create_topic
    from stream.evaluator import evaluate
    from stream.metrics import Metrics
    from stream.runtime import Runtime
    from stream.state import Progress, Store

    import redis as sync_redis
    sync_redis.Redis.from_url(stack.redis_url).flushall()
    proxy = RoundTripProxy(stack.redis_port).start()
    direct = Store.from_settings(_settings(stack, stack.redis_port))
    store = Store.from_settings(_settings(stack, proxy.port))
    alerts_t = f"bench-eval-{uuid.uuid4().hex[:8]}"
    create_topic(stack, alerts_t)
    producer = AIOKafkaProducer(bootstrap_servers=stack.bootstrap_servers, acks="all")
    await producer.start()
    # the evaluator asks the consumer how many partitions the event topics have (stream.faust_patches.
    # partition_count, from its aiokafka consumer's metadata): one each here
    aiokafka_consumer = SimpleNamespace(partitions_for_topic=lambda topic: {0})
    consumer = SimpleNamespace(_thread=SimpleNamespace(_ensure_consumer=lambda: aiokafka_consumer))
    rt = Runtime(store.settings, store, Metrics(CollectorRegistry()), topics={"alerts": _Alerts(producer, alerts_t)},
                 app=SimpleNamespace(consumer=consumer))
    parts = [(getattr(store.settings.topics, t), 0) for t in ("predictions", "actions", "outcomes")]
    rng = random.Random(3)
    start = int((datetime.now(timezone.utc) - timedelta(days=1)).timestamp() * 1000)
    start -= start % 60_000
    closing: list[int] = []
    idle: list[int] = []
    alerts0 = 0.0
    try:
        for w in range(windows + 6):
            # each window's events push the watermark past the previous window's end + lateness
            events = _window_events(rng, start + w * 60_000, 400, spike=w % 3 == 2)
            newest = max(int(e.ts.timestamp() * 1000) for e in events)  # as if every partition had brought it
            await direct.apply(events, Progress({tp: 1 for tp in parts}, {tp: newest for tp in parts}), 0)
            before = proxy.trips
            closed = await evaluate(rt)
            after = proxy.trips
            await evaluate(rt)
            if w >= 6:  # past the baseline's warm-up: the steady state
                closing.append(after - before)
                idle.append(proxy.trips - after)
                assert closed == len(MODELS), closed
            elif w == 5:
                alerts0 = _published(rt)
        alerts = (_published(rt) - alerts0) / len(closing)
    finally:
        await producer.stop()
        await store.close()
        await direct.close()
        proxy.stop()
    return {"idle tick trips": statistics.mean(idle),
            f"closing tick trips ({len(MODELS)} windows)": statistics.mean(closing),
            "alerts published per closing tick": alerts}


def _published(rt: Any) -> float:
    return sum(s.value for m in rt.metrics.alerts.collect() for s in m.samples if s.name.endswith("_total"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.evaluator", description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=("trips", "latency", "both"))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--windows", type=int, default=12)
    ap.add_argument("--models", type=int, default=len(MODELS))
    ap.add_argument("--broker", choices=("kafka", "tansu"), default="kafka", help="Apache Kafka (default) or Tansu")
    args = ap.parse_args(argv)
    del MODELS[args.models:]
    with tempfile.TemporaryDirectory(prefix="trustgap-eval-") as tmp, running_stack(Path(tmp) / "stack",
                                                                                      broker=args.broker) as stack:
        if args.what in ("trips", "both"):
            for k, v in asyncio.run(trips(stack, args.windows)).items():
                print(f"  {k}: {v:.2f}", flush=True)
        if args.what in ("latency", "both"):
            p50s, p99s = [], []
            for run in range(args.runs):
                lat, n = alert_latency(stack, Path(tmp), args.seconds, seed=5 + run)
                p50s.append(pct(lat, 0.5) * 1000)
                p99s.append(pct(lat, 0.99) * 1000)
                print(f"  run {run + 1}: alerts {n}, matched {len(lat)}, p50 {p50s[-1]:.0f} ms, "
                      f"p99 {p99s[-1]:.0f} ms, max {max(lat) * 1000:.0f} ms", flush=True)
            print(f"  median p50 {statistics.median(p50s):.0f} ms, median p99 {statistics.median(p99s):.0f} ms, "
                  f"p99 range {min(p99s):.0f}..{max(p99s):.0f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
