"""The worker's hot path outside Faust and Kafka: CPU per event of each phase, and Redis's CPU per event.

`python -m bench.phases [--events N] [--chunk N] [--rounds N]` starts its own redis-server (no persistence),
parses the bench's 500-event batch messages with `events.parse`, then applies them through `Store.prepare` and
`Store.send` in chunks, as the worker does, with the worker's garbage-collector settings. It prints the median over
the rounds of process CPU per event for parsing, preparing and sending (the client side of the pipeline: packing
and reading replies), and Redis's main-thread CPU per event (`INFO cpu`). CPU time, not wall time, so other work on
the machine moves the figures less; run it from two checkouts to compare them.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import redis
import redis.asyncio as aioredis

from bench.data import encode_batched, predictions
from bench.redis_cost import redis_cpu_seconds
from bench.topics import BATCH
from stream.embedded import free_port, start_redis, stop
from stream.events import Event, parse
from stream.settings import Settings
from stream.state import Progress, Store


async def one_round(port: int, messages: Sequence[bytes], chunk: int) -> dict[str, float]:
    """CPU µs per event of each phase over every message, on a flushed Redis."""
    sync = redis.Redis(port=port)
    sync.flushall()
    started = time.process_time()
    events: list[Event] = []
    for m in messages:
        events.extend(parse("prediction", m)[0])
    parsed = time.process_time() - started
    store = Store(aioredis.Redis(port=port), Settings(redis_url=f"redis://127.0.0.1:{port}/0"))
    await store.apply(events[:chunk], Progress(), 0)  # the first chunk admits labels and features: not steady state
    rest = events[chunk:]
    prepare = send = 0.0
    redis_before = redis_cpu_seconds(sync)
    for i in range(0, len(rest), chunk):
        t = time.process_time()
        prepared = await store.prepare(rest[i:i + chunk])
        prepare += time.process_time() - t
        t = time.process_time()
        await store.send(prepared, Progress({("bench", 0): i}), 0)
        send += time.process_time() - t
    redis_cpu = redis_cpu_seconds(sync) - redis_before
    await store.close()
    sync.close()
    n = len(rest)
    return {"parse": parsed / len(events) * 1e6, "prepare": prepare / n * 1e6, "send": send / n * 1e6,
            "redis": redis_cpu / n * 1e6}


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.phases", description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=100_000, help=f"predictions, in messages of {BATCH}")
    ap.add_argument("--chunk", type=int, default=Settings().take_max, help="events per Redis call (take_max)")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    messages = [v for _, v in encode_batched(predictions(args.events, seed=3), BATCH)]
    gc.freeze()  # as `trustgap worker` does (stream/cli.py)
    gc.set_threshold(Settings().gc_threshold, 50, 1000)
    with tempfile.TemporaryDirectory(prefix="trustgap-phases-") as tmp:
        port = free_port()
        proc = start_redis(port, Path(tmp), Path(tmp) / "redis.log", appendonly=False)
        try:
            rounds = [asyncio.run(one_round(port, messages, args.chunk)) for _ in range(args.rounds)]
        finally:
            stop(proc)
    print(f"{args.events:,} predictions, chunks of {args.chunk:,}, median of {args.rounds} rounds (µs per event):")
    for phase in ("parse", "prepare", "send", "redis"):
        values = [r[phase] for r in rounds]
        print(f"  {phase:<8} {statistics.median(values):6.2f}   (rounds: {', '.join(f'{v:.2f}' for v in values)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
