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
