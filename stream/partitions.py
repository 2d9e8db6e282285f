"""The partitions the watermark ranges over, and the owners' assertions that theirs are idle.

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
record escapes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from .events import EventKind
from .reconcile import with_redis
from .runtime import Partition, Runtime
from .state import PartitionEnd, keys
from .times import epoch_ms

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
        n = consumer.topic_partitions(topic)
        if not n:
            return None
        out += [(topic, p) for p in range(n)]
    return out


async def read_ends(rt: Runtime, mine: list[Any]) -> dict[Partition, PartitionEnd]:
    """The first and end offsets of the consumer's partitions `mine` (the end: see the module docstring); a
    partition whose consumer has not fetched it yet is left out (no high watermark to vouch for it)."""
    consumer = rt.app.consumer
    # bounded: aiokafka's offset lookups wait forever for a partition the broker does not know (yet)
    listed = await asyncio.wait_for(consumer.highwaters(*mine), LOOKUP_TIMEOUT_S)
    first = await asyncio.wait_for(consumer.earliest_offsets(*mine), LOOKUP_TIMEOUT_S)
    out: dict[Partition, PartitionEnd] = {}
    for tp in mine:
        try:
            fetched = consumer.highwater(tp)
        except Exception:  # noqa: BLE001 - revoked meanwhile, or not fetched yet: not vouched for this time
            fetched = None
        if fetched is None or tp not in listed or tp not in first:
            continue
        out[(tp.topic, tp.partition)] = PartitionEnd(first[tp], max(listed[tp], fetched))
    return out


def settled(rt: Runtime, ends: dict[Partition, PartitionEnd], now: float) -> dict[Partition, PartitionEnd]:
    """The partitions whose end stood still for idle_timeout (nothing new came), remembering each one's end."""
    timeout = rt.settings.idle_timeout_seconds
    out = {}
    for tp, end in ends.items():
        seen = rt.ends.get(tp)
        if seen is None or seen[0] != end.end:
            rt.ends[tp] = (end.end, now)
        elif now - seen[1] >= timeout:
            out[tp] = end
    for tp in set(rt.ends) - set(ends):  # no longer owned (or not vouched for): start over when it is again
        del rt.ends[tp]
    return out


async def watch_idle(rt: Runtime) -> set[Partition]:
    """Assert idle the owned partitions of the watermark's topics that are read to their end and got nothing new
    for idle_timeout; returns the ones asserted. Run every evaluate_interval."""
    consumer = rt.app.consumer
    topics = set(watermark_topics(rt))
    mine = [tp for tp in consumer.assignment() if tp.topic in topics]
    try:
        ends = await read_ends(rt, mine) if mine else {}
    except Exception as err:  # noqa: BLE001 - the broker's failure: nothing is asserted, so nothing is idle
        log.debug("partition ends unreadable (%s); no idleness asserted", err)
        rt.ends.clear()
        return set()
    quiet = settled(rt, ends, time.monotonic())
    if not quiet:
        return set()
    ttl = keys.idle_ttl_ms(rt.settings.evaluate_interval)
    return await with_redis(rt, "idle", lambda: rt.store.assert_idle(quiet, epoch_ms(rt.clock()), ttl))
