"""The partitions the watermark ranges over, the owners' assertions that theirs are idle, and their consumer lag.

The watermark (windows.partition_watermark) is the minimum over every partition of the three event topics, as the
broker's metadata names them, of each one's newest event time in Redis; a partition that is idle does not hold it
back. Idle means: its owner found the offset Redis holds for it at the partition's end, and that end unchanged for
`idle_timeout_seconds`. The owner re-asserts it every `evaluate_interval`; an assertion lives `keys.idle_ttl_ms`, so
one whose owner died lapses and the partition holds the watermark again; a claimed event ends it at once.

A partition with a backlog is never idle: the comparison is made in Redis (idle.lua) against the offsets it holds,
so a message not yet applied (unread, in a chunk in flight, or lost with a Redis rollback) keeps it from idling.
Where the end is read matters: some brokers' ListOffsets answer lags (Tansu answers the last record batch's first
offset plus one), so the end taken is the larger of the ListOffsets answer and the high watermark of the
consumer's last fetch response. The fetch covers every batch it returned (a batch is appended whole); ListOffsets
covers every batch written after it (any unread batch starts at or past the offset Redis holds): together no
record escapes. The consumer lag an owner exports is measured up to the same end, from the offset Redis holds.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Mapping
from typing import Any

from . import faust_patches
from .events import EventKind
from .reconcile import with_redis
from .recovery import partition_lag
from .runtime import Partition, Runtime
from .state import PartitionEnd, keys
from .times import epoch_ms
from .windows import confirmed_idle

log = logging.getLogger("trustgap")

LOOKUP_TIMEOUT_S = 5.0

WATERMARK_KINDS: tuple[EventKind, ...] = ("prediction", "action", "outcome")
"""The event kinds whose topics' partitions the watermark ranges over (annotations carry no event time of it)."""


def watermark_topics(rt: Runtime) -> list[str]:
    """The topics of WATERMARK_KINDS, in the settings' names."""
    return [rt.topic_of(kind) for kind in WATERMARK_KINDS]


def event_partitions(rt: Runtime) -> list[Partition] | None:
    """Every partition of the watermark's topics, as the worker's consumer metadata has them; None until it knows
    every topic (the watermark then waits: a partition not known of could still bring anything)."""
    consumer = rt.app.consumer
    out: list[Partition] = []
    for topic in watermark_topics(rt):
        n = faust_patches.partition_count(consumer, topic)
        if not n:
            return None
        out += [(topic, p) for p in range(n)]
    return out


async def read_ends(rt: Runtime, tps: list[Any], owned: bool = True) -> dict[Partition, PartitionEnd]:
    """The first and end offsets of partitions `tps` (the end: see the module docstring). Of the consumer's own
    (`owned`), one it has not fetched yet is left out (no high watermark to vouch for it); otherwise a partition
    this consumer does not fetch has the broker's answer alone."""
    consumer = rt.app.consumer
    # bounded: aiokafka's offset lookups wait forever for a partition the broker does not know (yet)
    listed = await asyncio.wait_for(consumer.highwaters(*tps), LOOKUP_TIMEOUT_S)
    first = await asyncio.wait_for(consumer.earliest_offsets(*tps), LOOKUP_TIMEOUT_S)
    out: dict[Partition, PartitionEnd] = {}
    for tp in tps:
        try:
            fetched = consumer.highwater(tp)
        except Exception:  # noqa: BLE001 - revoked meanwhile, not owned here, or not fetched yet
            fetched = None
        if (fetched is None and owned) or tp not in listed or tp not in first:
            continue
        out[(tp.topic, tp.partition)] = PartitionEnd(first[tp], max(listed[tp], fetched or 0))
    return out


async def confirm_idle(rt: Runtime, idle: set[Partition], held: Mapping[Partition, int]) -> set[Partition]:
    """The partitions of `idle` (asserted by their owners) that the broker still shows read to their end, against
    the offsets `held` that Redis returned before this lookup (windows.confirmed_idle says why); none when the broker
    does not answer. One lookup per evaluator round, and only while a partition is asserted idle."""
    if not idle:
        return idle
    from faust.types import TP

    try:
        ends = await read_ends(rt, [TP(topic, partition) for topic, partition in sorted(idle)], owned=False)
    except Exception as err:  # noqa: BLE001 - the broker's failure: nothing is confirmed, so nothing is idle
        log.debug("partition ends unreadable (%s); no idleness confirmed", err)
        return set()
    return confirmed_idle(idle, held, {tp: (e.first, e.end) for tp, e in ends.items()})


def settled(rt: Runtime, ends: dict[Partition, PartitionEnd], now: float) -> dict[Partition, PartitionEnd]:
    """The partitions whose end stood still for idle_timeout (nothing new came), remembering each one's end."""
    timeout = rt.settings.idle_timeout_seconds
    out = {}
    for tp, end in ends.items():
        seen = rt.ends.get(tp)
        if seen is None or seen[0].end != end.end:
            rt.ends[tp] = (end, now)
            continue
        rt.ends[tp] = (end, seen[1])  # the same end, but retention may have moved the first offset
        if now - seen[1] >= timeout:
            out[tp] = end
    for tp in set(rt.ends) - set(ends):  # no longer owned (or not vouched for): start over when it is again
        del rt.ends[tp]
    return out


async def watch_idle(rt: Runtime) -> set[Partition]:
    """Read where the owned input partitions end, then assert idle those of the watermark's topics that are read
    to their end and got nothing new for idle_timeout; returns the ones asserted. Run every evaluate_interval.

    The ends of the annotations topic are read too (in the same lookups), for the consumer lag (`export_lag`)."""
    consumer = rt.app.consumer
    topics = rt.event_topics()
    mine = [tp for tp in consumer.assignment() if tp.topic in topics]
    try:
        ends = await read_ends(rt, mine) if mine else {}
    except Exception as err:  # noqa: BLE001 - the broker's failure: nothing is asserted, so nothing is idle
        log.debug("partition ends unreadable (%s); no idleness asserted", err)
        rt.ends.clear()
        return set()
    watched = set(watermark_topics(rt))
    quiet = {tp: end for tp, end in settled(rt, ends, time.monotonic()).items() if tp[0] in watched}
    if not quiet:
        return set()
    ttl = keys.idle_ttl_ms(rt.settings.evaluate_interval)
    return await with_redis(rt, "idle", lambda: rt.store.assert_idle(quiet, epoch_ms(rt.clock()), ttl))


def export_lag(rt: Runtime, applied: Mapping[Partition, int]) -> None:
    """Export the consumer lag of every owned partition whose end the owner knows (`rt.ends`, read by watch_idle):
    up to that end from the offset Redis holds as `applied` (the evaluator's tick reads it). A partition whose end
    is no longer known (revoked, or the broker unreadable) loses its series: an unknown lag is absent, not stale."""
    gauge = rt.metrics.consumer_lag
    for tp in rt.lag_series - rt.ends.keys():
        gauge.remove(tp[0], str(tp[1]))
    rt.lag_series &= rt.ends.keys()
    for tp, (end, _) in rt.ends.items():
        gauge.labels(tp[0], str(tp[1])).set(partition_lag(end.end, end.first, applied.get(tp)))
        rt.lag_series.add(tp)


def forget(rt: Runtime, revoked: Iterable[Any]) -> None:
    """Drop what this worker knew of partitions revoked from it, and their lag series at once: their new owner
    exports them, and one partition counted by two workers would double a topic's lag."""
    for tp in revoked:
        key = (tp.topic, tp.partition)
        rt.ends.pop(key, None)
        if key in rt.lag_series:
            rt.lag_series.discard(key)
            rt.metrics.consumer_lag.remove(key[0], str(key[1]))
