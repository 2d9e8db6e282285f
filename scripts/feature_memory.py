"""Measure the Redis memory that feature health costs per tracked feature per window (MEMORY USAGE).

Usage: python scripts/feature_memory.py REDIS_URL [PREDICTIONS_PER_WINDOW]
Writes one hourly window of simulated predictions for model `memtest` into the given Redis (use an empty
database: it flushes it), then sums MEMORY USAGE of the feature keys per feature.
"""

from __future__ import annotations

import asyncio
import sys
from datetime import datetime, timezone

import orjson
import redis

from stream.state import keys
from stream.events import PredictionEvent
from stream.times import epoch_ms
from stream.features import STATE_KEY, WindowFeatures
from stream.settings import Settings
from stream.simulate import generate
from stream.state import Progress, Store
from stream.windows import window_start


async def main(url: str, per_window: int) -> None:
    settings = Settings(redis_url=url)
    sync = redis.Redis.from_url(url)
    sync.flushdb()
    end = datetime(2026, 11, 22, 1, tzinfo=timezone.utc)
    preds = [PredictionEvent.model_validate(e) for k, e in generate("quiet", days=1 / 24, rate=per_window,
                                                                    model="memtest", end=end)
             if k == "prediction"]
    start = window_start(epoch_ms(preds[0].ts), 3_600_000)
    preds = [p for p in preds if window_start(epoch_ms(p.ts), 3_600_000) == start]
    store = Store.from_settings(settings)
    for i in range(0, len(preds), 500):
        await store.apply(preds[i:i + 500], Progress(), 0)
    n, stats = await store.features.read("memtest", start)
    await store.close()
    names = sorted(stats)
    stats_keys = [keys.feature_stats(b, "memtest", start) for b in range(settings.state_buckets)]
    shared = sum(sync.memory_usage(k, samples=0) or 0 for k in stats_keys)
    print(f"{n} predictions in one window, {len(names)} features, {settings.state_buckets} buckets")
    print(f"  MEMORY USAGE of the {len(stats_keys)} per-bucket stats hashes: {shared} B "
          f"({shared / len(names):.0f} B per feature)")
    for name in names:
        hll = sync.memory_usage(keys.feature_distinct("memtest", start, name), samples=0) or 0
        top = sum(sync.memory_usage(keys.feature_top(b, "memtest", start, name), samples=0) or 0
                  for b in range(settings.state_buckets))
        total = shared / len(names) + hll + top
        print(f"  {name:18} distinct {stats[name].distinct:5}  HLL {hll:6} B  top-k hashes {top:6} B  "
              f"=> live window ~{total:,.0f} B")
    summary = WindowFeatures(start, n, stats)
    doc = orjson.dumps({STATE_KEY: summary.to_json()})
    print(f"  closed-window summary in the model history: {len(doc)} B for {len(names)} features "
          f"({len(doc) / len(names):.0f} B per feature per window)")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 1000))
