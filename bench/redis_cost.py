"""Redis's cost of tracking predictions, with no broker involved: bytes and main-thread CPU per prediction."""

from __future__ import annotations

import random
import time
from typing import Any

import redis

from bench.data import T0, prediction, predictions
from stream.embedded import StackInfo
from stream.settings import Settings


def redis_cpu_seconds(client: redis.Redis) -> float:
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
    cpu_before = redis_cpu_seconds(sync)
    batch: list[Any] = []
    for e in predictions(n, seed=11, step_ms=1):
        batch.append(PredictionEvent.model_validate(e))
        if len(batch) == settings.take_max:
            await store.apply(batch, Progress(), now)
            batch = []
    if batch:
        await store.apply(batch, Progress(), now)
    cpu = redis_cpu_seconds(sync) - cpu_before
    after = int(sync.info("memory")["used_memory"])
    # contexts are fields of a few slot hashes per bucket (keys.context_slot): measure them whole (SAMPLES 0)
    slots = list(sync.scan_iter(match="*:c:*", count=1000))
    usage = sum(int(sync.memory_usage(k, samples=0) or 0) for k in slots) / n
    await store.close()
    sync.flushall()
    sync.close()
    return (after - before) / n, usage, cpu * 1e6 / n


async def outcome_value_cost(redis_url: str, n: int, rounds: int = 3) -> dict[str, float]:
    """What outcome values cost Redis: main-thread CPU per truth outcome applied without and with a `value` (the
    median of `rounds` rounds, the two interleaved, in alternating order: one machine's noise hits both), and the
    window counter hashes' bytes (MEMORY USAGE) without and with, for n predictions and one truth outcome each
    (about 40% of them a claim), applied in chunks of `take_max` as the worker does."""
    import statistics

    cpu: dict[str, list[float]] = {"without": [], "with": []}
    out: dict[str, float] = {}
    for r in range(rounds):
        for label in ("without", "with") if r % 2 == 0 else ("with", "without"):
            us, size, windows = await _outcomes_applied(redis_url, n, label == "with")
            cpu[label].append(us)
            out[f"redis window counter bytes {label} values ({windows} window hashes)"] = size
    for label, runs in cpu.items():
        out[f"redis CPU us per truth outcome {label} a value (median of {rounds})"] = statistics.median(runs)
    return out


async def _outcomes_applied(redis_url: str, n: int, valued: bool) -> tuple[float, float, int]:
    """(Redis main-thread CPU µs per truth outcome, window hashes' bytes, window hashes) for n predictions and
    their truth outcomes, with or without values, on an emptied Redis."""
    from stream.events import OutcomeEvent, PredictionEvent
    from stream.state import Progress, Store

    sync = redis.Redis.from_url(redis_url)
    settings = Settings(redis_url=redis_url)
    sync.flushall()
    store = Store.from_settings(settings)
    now = int(time.time() * 1000)
    preds = [PredictionEvent.model_validate(e) for e in predictions(n, seed=11, step_ms=1)]
    rng = random.Random(3)
    outcomes = [OutcomeEvent.model_validate({
        "schema_version": 1, "event_id": f"o-{p.prediction_id}", "prediction_id": p.prediction_id,
        "ts": p.ts.isoformat().replace("+00:00", "Z"), "label": p.label, "kind": "truth",
        **({"value": round(rng.lognormvariate(7, 1), 2) if rng.random() < 0.4 else 0.0} if valued else {})})
        for p in preds]
    for i in range(0, n, settings.take_max):
        await store.apply(preds[i:i + settings.take_max], Progress(), now)
    cpu_before = redis_cpu_seconds(sync)
    for i in range(0, n, settings.take_max):
        await store.apply(outcomes[i:i + settings.take_max], Progress(), now)
    us = (redis_cpu_seconds(sync) - cpu_before) * 1e6 / n
    windows = list(sync.scan_iter(match="*:w:*", count=1000))
    size = float(sum(int(sync.memory_usage(k, samples=0) or 0) for k in windows))
    await store.close()
    sync.flushall()
    sync.close()
    return us, size, len(windows)


def main() -> int:
    """`python -m bench.redis_cost [N]`: the outcome values' cost on a Redis of its own, printed."""
    import asyncio
    import sys
    import tempfile
    from pathlib import Path

    from stream.embedded import free_port, start_redis, stop

    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        proc = start_redis(port, Path(tmp), Path(tmp) / "redis.log", appendonly=False)
        try:
            for name, value in asyncio.run(outcome_value_cost(f"redis://127.0.0.1:{port}/0", n)).items():
                print(f"{name}: {value:,.2f}")
        finally:
            stop(proc)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
