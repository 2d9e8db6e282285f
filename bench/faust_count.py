"""A bare Faust agent that only counts events: Faust's own floor, run as its own process like a worker.

`python -m bench.faust_count BROKER TOPIC GROUP EXPECT MODE LOOP GC_THRESHOLD DATADIR` prints one JSON line
`{"n": .., "first_n": .., "first": .., "last": ..}` (perf_counter seconds) once EXPECT events were seen.
MODE `event` iterates the stream one event at a time; `take` uses `stream.take(1000, within=0.05)`.
"""

from __future__ import annotations

import asyncio
import gc
import os
import sys
import time
from typing import Any

import faust
import orjson

from bench.group import HEARTBEAT_INTERVAL_S, SESSION_TIMEOUT_S


def main(argv: list[str]) -> None:
    broker, topic_name, group, expect_s, mode = argv[:5]
    loop_kind, gc_threshold_s, datadir = argv[5:8]
    gc_threshold = int(gc_threshold_s)  # 0: CPython's default collector settings
    expect = int(expect_s)
    if loop_kind == "uvloop":
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    # Same group timing as trustgap's bench worker (bench/group.py says why these values).
    app = faust.App(group, broker=broker, value_serializer="raw", key_serializer="raw", store="memory://",
                    broker_session_timeout=SESSION_TIMEOUT_S, broker_heartbeat_interval=HEARTBEAT_INTERVAL_S,
                    web_enabled=False, topic_partitions=4, datadir=datadir)
    topic = app.topic(topic_name, key_type=bytes, value_type=bytes)
    seen: dict[str, Any] = {"n": 0, "first": None, "first_n": 0}

    def count(k: int) -> None:
        now = time.perf_counter()
        if seen["first"] is None:
            seen["first"], seen["first_n"] = now, k
        seen["n"] += k
        if seen["n"] >= expect:
            seen["last"] = now
            sys.stdout.write(orjson.dumps(seen).decode() + "\n")
            sys.stdout.flush()
            os._exit(0)  # the figure is out; tearing Faust down cleanly would only cost the caller time

    async def per_event(stream: Any) -> None:
        async for _ in stream:
            count(1)

    async def per_take(stream: Any) -> None:
        async for batch in stream.take(1000, within=0.05):
            count(len(batch))

    app.agent(topic, name="bench.count")(per_event if mode == "event" else per_take)
    level = os.environ.get("BENCH_FAUST_LOGLEVEL", "warning")
    if gc_threshold:  # the same collector settings as `trustgap worker` (stream/cli.py), for a like-for-like floor
        gc.freeze()
        gc.set_threshold(gc_threshold, 50, 1000)
    worker = faust.Worker(app, loglevel=level, quiet=True, redirect_stdouts=False)
    worker.execute_from_commandline()


if __name__ == "__main__":
    main(sys.argv[1:])
