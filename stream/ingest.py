"""Ingest: parse the agents' batches, dead-letter the rejects, and apply valid events to Redis in chunks.

A chunk goes to Redis once it holds `take_max` events or its oldest event waited `take_within`, one chunk in
flight per event kind, in order; each apply writes the offsets it covers in the same atomic call as its effects.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import orjson

from .events import Annotation, Event, EventKind, Reject, parse
from .metrics import Metrics
from .reconcile import apply_claiming, apply_guarded, progress, with_redis
from .runtime import Chunk, Runtime
from .state import ApplyResult, Prepared
from .times import epoch_ms

log = logging.getLogger("trustgap")

DLQ_RAW_MAX = 4096  # bytes of the offending payload kept in a dead letter
SEND_TURNS = 3      # event-loop turns an agent yields after starting an apply (see submit)


async def handle(rt: Runtime, kind: EventKind, batch: Sequence[Any]) -> None:
    """Parse a batch of Faust events, dead-letter the bad ones, and collect the good ones into chunks.

    A chunk goes to Redis once it holds `take_max` events or its oldest event waited `take_within` (here or in
    the `flush_chunks` timer), so Redis round trips follow events, not Faust's takes (which hold at most
    `take_max_messages` messages, bounding the memory big batch messages take)."""
    limits = rt.limits
    # compared as datetimes: converting every event's timestamp to epoch ms cost more than the comparison
    horizon = rt.clock() + timedelta(seconds=rt.settings.max_future_seconds)
    for ev in batch:
        msg = ev.message
        events, rejects = parse(kind, msg.value, limits)
        for r in rejects:
            await dead_letter(rt, msg.topic, msg.partition, msg.offset, r)
        chunk = rt.chunks.get(kind)
        if chunk is None:
            chunk = rt.chunks[kind] = Chunk(time.monotonic())
        newest: datetime | None = None  # of its valid predictions/actions/outcomes: the partition's event time
        ahead: list[Event] = []
        for e in events:
            if isinstance(e, Annotation):
                if e.start > horizon:
                    ahead.append(e)
                    continue
            elif e.ts > horizon:
                ahead.append(e)
                continue
            elif newest is None or e.ts > newest:
                newest = e.ts
            chunk.events.append(e)
        # the chunk claims this message's offset even when none of its events is valid (see reconcile.progress);
        # claim and events go in together, with no await between them for the flush timer to submit the chunk in
        chunk.seen.append(((msg.topic, msg.partition), msg.offset, newest))
        for e in ahead:
            await dead_letter(rt, msg.topic, msg.partition, msg.offset, Reject(
                "future", f"timestamp more than {rt.settings.max_future_seconds}s ahead of the clock",
                e.model_dump_json().encode()))
        # whole messages only: a chunk's offsets must cover exactly the events it applies
        if len(chunk.events) >= rt.settings.take_max:
            await submit(rt, kind)
    await flush(rt, kind)


async def dead_letter(rt: Runtime, topic: str, partition: int, offset: int, reject: Reject) -> None:
    """Send a rejected payload, with why and where it came from, to the dead-letter topic."""
    record = {"reason": reject.describe(), "source_topic": topic, "partition": partition, "offset": offset,
              "raw": reject.raw[:DLQ_RAW_MAX].decode("utf-8", "replace")}
    await rt.topics["dlq"].send(key=str(offset).encode(), value=orjson.dumps(record))
    rt.metrics.invalid.labels(topic, reject.reason).inc()
    rt.metrics.events.labels(topic, "invalid").inc()


async def flush(rt: Runtime, kind: EventKind | None = None) -> None:
    """Submit the chunk of `kind` if its oldest event waited `take_within` or more; without a kind (the flush
    timer), start that for every kind, each on its own: one kind whose previous chunk is still in Redis (a topic
    lagging, a slow apply) must not hold the other kinds' tails back."""
    if kind is not None:
        if _due(rt, kind):
            await submit(rt, kind)
        return
    for k in list(rt.chunks):
        running = rt.flushing.get(k)
        if _due(rt, k) and (running is None or running.done()):
            rt.flushing[k] = task = asyncio.create_task(submit(rt, k))
            task.add_done_callback(_failed_flush)


def _failed_flush(task: asyncio.Task[None]) -> None:
    """Nobody awaits a flush the timer started: log its failure here, or it would pass unseen (Redis's failures
    are retried inside it; what ends up here is a defect)."""
    if not task.cancelled() and (err := task.exception()) is not None:
        log.error("flushing a chunk failed: %r", err)


def _due(rt: Runtime, kind: EventKind) -> bool:
    chunk = rt.chunks.get(kind)
    return chunk is not None and time.monotonic() - chunk.since >= rt.settings.take_within


async def submit(rt: Runtime, kind: EventKind) -> None:
    """Start applying the kind's chunk once its previous chunk is applied: one in flight per kind, in order.

    Faust commits a batch's offsets to Kafka once `handle` returns, possibly before its events are applied;
    that is safe because Redis's own offsets, written in the same pipeline as the effects, are the ones that
    count: on assignment the consumer seeks back to them (stream.recovery), so a crash meanwhile re-reads and
    deduplicates."""
    async with rt.submitting.setdefault(kind, asyncio.Lock()):  # the agent and the timer take turns
        chunk = rt.chunks.pop(kind, None)
        if chunk is None or not chunk.seen:
            return
        events = chunk.events
        prepared = None if kind == "annotation" else await with_redis(
            rt, "prepare", lambda: rt.store.prepare(events))  # while the previous chunk runs in Redis
        await drain(rt, kind)
        rt.inflight[kind] = asyncio.create_task(apply(rt, kind, chunk, prepared))
        # Let it run until its pipeline is written, so Redis runs it while this agent parses the next chunk:
        # redis-py suspends once checking the pooled connection before it writes (a scheduling hint).
        for _ in range(SEND_TURNS):
            await asyncio.sleep(0)


async def drain(rt: Runtime, kind: EventKind) -> None:
    """Wait until the in-flight chunk of `kind` is applied."""
    task = rt.inflight.pop(kind, None)
    if task is not None:
        await task


async def apply(rt: Runtime, kind: EventKind, chunk: Chunk, prepared: Prepared | None) -> None:
    """Apply one chunk (its effects and the offsets it covers, atomically) and count what happened to it."""
    topic, valid, seen, now = rt.topic_of(kind), chunk.events, chunk.seen, rt.clock()
    events = rt.metrics.events
    if kind == "annotation":
        new = await apply_guarded(rt, "annotations",
                                  lambda: rt.store.add_annotations(valid, progress(rt, seen)))
        events.labels(topic, "applied").inc(new)
        events.labels(topic, "duplicate").inc(len(valid) - new)
    else:
        assert prepared is not None
        plan = prepared
        res = await apply_claiming(rt, seen, lambda claimed: rt.store.send(plan, claimed, epoch_ms(now)))
        count(rt.metrics, topic, res)
    rt.metrics.batch_seconds.labels(topic).observe(time.monotonic() - chunk.since)


def count(metrics: Metrics, topic: str, res: ApplyResult) -> None:
    """Export what one apply did: per topic by result, and per model and signal against the windows."""
    for model, n in res.untracked_features.items():
        metrics.features_untracked.labels(model).inc(n)
    for dimension, n in res.overflow.items():
        if n:
            metrics.label_overflow.labels(dimension).inc(n)
    beyond = 0
    for (model, signal), flow in res.flows.items():
        # all three children of a (model, signal) exist once it has been seen, even at 0, so that the late
        # share late / (late + counted) has both terms from the first event on
        metrics.counted_events.labels(model, signal).inc(flow.counted)
        metrics.late_events.labels(model, signal).inc(flow.late)
        metrics.beyond_horizon_events.labels(model, signal).inc(flow.beyond_horizon)
        beyond += flow.beyond_horizon
    for result, n in (("applied", res.applied + res.drained), ("duplicate", res.duplicates),
                      ("pending", res.pending), ("late", res.late), ("beyond_horizon", beyond)):
        if n:
            metrics.events.labels(topic, result).inc(n)
