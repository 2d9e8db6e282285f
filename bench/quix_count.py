"""Quix Streams counting the bench's events: the peer, run as its own process like bench/faust_count.py.

`python -m bench.quix_count BROKER TOPIC GROUP EXPECT MODE SHAPE STATE_DIR` prints one JSON line
`{"n": .., "first_n": .., "first": .., "last": ..}` (perf_counter seconds) once EXPECT events were seen.
It runs in the bench's own venv (the Makefile's BENCH_VENV), where Quix Streams' pins hold, and imports nothing
from trustgap.

SHAPE `single`: a message is one JSON event; `batched`: a JSON array of events, expanded into a row per event
(`apply(..., expand=True)`, Quix's way to split a message). MODE `count`: JSON-decode every message and count every
event. MODE `window`: the same, the event's time taken from its `ts` field, the events re-keyed by model
(`group_by`, which Quix does through a repartition topic it creates) and counted in a 1 h tumbling window (10 min
grace: trustgap's defaults) held in Quix's RocksDB state store, emitted when the window closes. An event is counted
when it reaches the count or the window (as the Faust agent counts): the window's update of the last one is the
only one outside the span.
"""

from __future__ import annotations

import os
import sys
import time
from datetime import datetime, timedelta
from typing import Any

import orjson
from quixstreams import Application

from bench.group import HEARTBEAT_INTERVAL_S, SESSION_TIMEOUT_S

WINDOW = timedelta(hours=1)
GRACE = timedelta(minutes=10)


def event_ms(value: dict[str, Any]) -> int:
    """The event's own time (its `ts`, ISO 8601 with a Z) in epoch milliseconds, what Quix's windows run on."""
    return int(datetime.fromisoformat(value["ts"]).timestamp() * 1000)


def main(argv: list[str]) -> None:
    broker, topic_name, group, expect_s, mode, shape, state_dir = argv[:7]
    expect = int(expect_s)
    app = Application(
        broker_address=broker, consumer_group=group, auto_offset_reset="earliest", state_dir=state_dir,
        loglevel=os.environ.get("BENCH_QUIX_LOGLEVEL", "WARNING"),
        # The same group timing as the worker and the Faust agent (bench/group.py says why these values).
        consumer_extra_config={"session.timeout.ms": int(SESSION_TIMEOUT_S * 1000),
                               "heartbeat.interval.ms": int(HEARTBEAT_INTERVAL_S * 1000)},
    )
    windowed, batched = mode == "window", shape == "batched"
    # A single-event message's time comes from the topic's timestamp extractor, Quix's place for it; the events of
    # a batch get theirs with set_timestamp once the batch is expanded.
    topic = app.topic(topic_name, value_deserializer="json", key_deserializer="bytes",
                      timestamp_extractor=(lambda value, headers, ts, ts_type: event_ms(value))
                      if windowed and not batched else None)
    seen: dict[str, Any] = {"n": 0, "first": None, "first_n": 0}

    def count(_: Any) -> None:
        now = time.perf_counter()
        if seen["first"] is None:
            seen["first"], seen["first_n"] = now, 1
        seen["n"] += 1
        if seen["n"] >= expect:
            seen["last"] = now
            sys.stdout.write(orjson.dumps(seen).decode() + "\n")
            sys.stdout.flush()
            os._exit(0)  # the figure is out; a clean stop would only cost the caller time

    sdf = app.dataframe(topic)
    if batched:
        sdf = sdf.apply(lambda events: events, expand=True)
        if windowed:
            sdf = sdf.set_timestamp(lambda value, key, ts, headers: event_ms(value))
    if windowed:
        sdf = sdf.group_by("model")
    sdf = sdf.update(count)
    if windowed:
        sdf = sdf.tumbling_window(WINDOW, grace_ms=GRACE).count().final()
    app.run()


if __name__ == "__main__":
    main(sys.argv[1:])
