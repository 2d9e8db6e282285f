"""Alert latency: a worker with minute windows fed at 5k events/s, timed from the watermark passing the moment an
alert's stage became due (for overrides, the window's first action checkpoint) to the alert arriving on the alerts
topic."""

from __future__ import annotations

import bisect
import random
import threading
import time
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson

from bench.data import prediction
from bench.topics import PARTITIONS, create_topic
from bench.workers import Workers, wait_for
from stream.embedded import StackInfo
from stream.settings import ModelSettings

LATENCY_ENV = {
    # Minute windows whose event time runs 30x the wall clock: a window closes every 2 s of wall time.
    "TRUSTGAP_DEFAULTS__WINDOW_SECONDS": "60", "TRUSTGAP_DEFAULTS__ALLOWED_LATENESS_SECONDS": "5",
    "TRUSTGAP_DEFAULTS__BASELINE_WINDOWS": "4", "TRUSTGAP_DEFAULTS__MIN_SAMPLES": "20",
    "TRUSTGAP_DEFAULTS__PERSISTENCE": "1", "TRUSTGAP_DEFAULTS__RESOLVE_AFTER": "1",
    "TRUSTGAP_EVALUATE_INTERVAL": "0.25",
    # Nothing is sent to the outcomes and annotations topics here: at the default (a minute) their partitions would
    # hold the watermark back for longer than the run lasts. Partitions fed every tick never go idle.
    "TRUSTGAP_IDLE_TIMEOUT_SECONDS": "1",
}
# The model settings LATENCY_ENV gives the worker, to know when each alert's stage became due.
MODEL = ModelSettings(window_seconds=int(LATENCY_ENV["TRUSTGAP_DEFAULTS__WINDOW_SECONDS"]))
SPEEDUP = 30
RATE = 5000           # events/s: half predictions, half actions
TICK = 0.02           # seconds between produced batches


def alert_latency(stack: StackInfo, logdir: Path, seconds: float, seed: int) -> tuple[list[float], int]:
    """Latencies (s) from the moment the watermark passed the time an alert's stage was due to the alert arriving
    on the topic."""
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
            wait_for(lambda: alerts_t in c.list_topics(timeout=5).topics, 30, "alerts topic", 0.2)
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
            # Every partition gets a share of every tick (the events of model i go to partition i, as a producer
            # keyed by model sends them): the watermark is the slowest partition's, and a partition left without
            # events would hold it back until the worker's idle timeout (a minute) declared it idle.
            for part in range(PARTITIONS):
                producer.produce(preds_t, orjson.dumps(preds[part::PARTITIONS]), partition=part)
                producer.produce(acts_t, orjson.dumps(acts[part::PARTITIONS]), partition=part)
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
        i = bisect.bisect_left(sent_ts, end + due_after_end_ms(alert["signal"]) + lateness)
        if i < len(marks):
            out.append(at - marks[i][1])
    return out, len(received)


def due_after_end_ms(signal: str) -> int:
    """How long after its window's end (event time) the stage that decides a signal is due: a window's overrides
    are judged at the first action checkpoint (one window after its end here), feature health at its end."""
    if signal == "override_rate":
        return MODEL.checkpoints_ms("a")[0]
    if signal.startswith("feature_"):
        return 0
    raise ValueError(f"the latency run sends no follow-ups that decide {signal}")



def pct(xs: Sequence[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))] if s else float("nan")
