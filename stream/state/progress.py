"""Partition progress in Redis: what a chunk claims (offsets and event time, written by one offsets.lua call behind
the effects they cover), the owners' idleness assertions, and the read the watermark is computed from.

On one node everything here lives in the slot of `keys.OFFSETS`, so the offsets, the event time and the idleness
of every partition are written and read together, and roll back together. On a Redis Cluster each bucket keeps its
own record of the event partitions (keys.bucket_offsets), in its own slot, and a partition's progress is the
minimum over them (`merge_min`); OFFSETS keeps the annotations' and the idleness keys.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis

from . import keys, scripts
from .redis_io import as_text

Partition = tuple[str, int]
"""(topic, partition)."""


@dataclass(frozen=True, slots=True)
class Progress:
    """What a chunk claims, per partition: the next offset to read, and the newest event time (ms) of the claimed
    messages' valid predictions, actions and outcomes (absent when they carried none)."""

    offsets: dict[Partition, int] = field(default_factory=dict)
    event_time: dict[Partition, int] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.offsets)


@dataclass(frozen=True, slots=True)
class PartitionEnd:
    """Where a partition stood on the broker when its owner looked: its first and end (next) offset."""

    first: int
    end: int


def triples(progress: Progress) -> list[Any]:
    """A chunk's progress as record_progress (progress.lua) reads it: ('<topic>:<partition>', offset, ms or '')."""
    args: list[Any] = []
    for (t, p), o in progress.offsets.items():
        ms = progress.event_time.get((t, p))
        args += [f"{t}:{p}", o, "" if ms is None else ms]
    return args


def queue_progress(pipe: Any, progress: Progress, run_id: str | None, bucket: int | None = None) -> None:
    """Queue the offsets.lua call writing a chunk's progress: into OFFSETS behind the effects queued before it, or
    with `bucket` into that bucket's record (a Redis Cluster; no idleness keys in its slot)."""
    where = (keys.OFFSETS, keys.EVENT_TIME) if bucket is None else (keys.bucket_offsets(bucket),
                                                                    keys.bucket_event_time(bucket))
    idle_prefix = keys.IDLE_PREFIX if bucket is None else ""
    # EVAL, not EVALSHA: inside a pipeline a script object makes redis-py send SCRIPT EXISTS first (see Store.send)
    pipe.eval(scripts.OFFSETS.source, 2, *where, run_id or "", idle_prefix, *triples(progress))


async def assert_idle(client: aioredis.Redis, ends: Mapping[Partition, PartitionEnd], now_ms: int, ttl_ms: int,
                      held: Mapping[Partition, int] | None = None) -> set[Partition]:
    """Assert idle the partitions of `ends` whose offset in Redis has reached their end; returns those asserted.

    On a Redis Cluster the offsets are the buckets' records, in other slots than the idleness keys, so the caller
    reads them first (`held`) and the comparison is made here; a partition that gets messages or loses applied
    ones after that read is caught by the evaluator, which compares the broker's ends with the offsets it reads in
    the same round as the assertions (partitions.confirm_idle)."""
    if not ends:
        return set()
    if held is not None:
        quiet = [tp for tp, e in ends.items() if held.get(tp, e.first) >= e.end]
        async with client.pipeline(transaction=False) as pipe:
            for t, p in quiet:
                pipe.set(keys.idle(t, p), now_ms, px=ttl_ms)
            await pipe.execute()
        return set(quiet)
    args: list[Any] = [keys.IDLE_PREFIX, now_ms, ttl_ms]
    order = list(ends)
    for t, p in order:
        args += [f"{t}:{p}", ends[(t, p)].first, ends[(t, p)].end]
    flags = await client.eval(scripts.IDLE.source, 1, keys.OFFSETS, *args)
    return {tp for tp, flag in zip(order, flags, strict=True) if int(flag)}


@dataclass(slots=True)
class PartitionRead:
    """What `parse_read` decodes: per partition its newest event time and applied offset, and which are idle."""

    event_time: dict[Partition, int]
    offsets: dict[Partition, int]  # the next offset to read, as `keys.OFFSETS` holds it
    idle: set[Partition]


def by_partition(raw: Mapping[Any, Any]) -> dict[Partition, int]:
    """A hash of `<topic>:<partition>` -> integer (`keys.OFFSETS`, `keys.EVENT_TIME`) as {(topic, partition): n}."""
    out: dict[Partition, int] = {}
    for k, v in raw.items():
        topic, _, part = as_text(k).rpartition(":")
        out[(topic, int(part))] = int(v)
    return out


def merge_min(records: Sequence[Mapping[Partition, int]]) -> dict[Partition, int]:
    """Per partition, the minimum over every bucket's record (a Redis Cluster's progress): everything below it is
    applied in every bucket. A partition missing from any record is missing (that bucket vouches for nothing: its
    shard may have lost the record with the effects)."""
    if not records:
        return {}
    out = dict(records[0])
    for record in records[1:]:
        out = {tp: min(v, record[tp]) for tp, v in out.items() if tp in record}
    return out


def queue_read(pipe: Any, partitions: Sequence[Partition], buckets: int = 0) -> None:
    """Queue the reads `parse_read` decodes: every partition's event time and offset, and the idleness of
    `partitions`; with `buckets` (a Redis Cluster) every bucket's record too. The offsets ride along (a few dozen
    fields) for the consumer lag, which would otherwise cost a round trip of its own."""
    pipe.hgetall(keys.EVENT_TIME)
    pipe.hgetall(keys.OFFSETS)
    for b in range(buckets):
        pipe.hgetall(keys.bucket_event_time(b))
        pipe.hgetall(keys.bucket_offsets(b))
    for t, p in partitions:  # one GET each: a Redis Cluster pipeline takes no MGET, even of one slot's keys
        pipe.get(keys.idle(t, p))


def parse_read(partitions: Sequence[Partition], replies: list[Any], buckets: int = 0) -> PartitionRead:
    """The event time and offset of every partition, and the partitions asserted idle, from `queue_read`'s
    replies (on a cluster: OFFSETS's, the annotations', overlaid with the minimum over the buckets' records)."""
    event_time, offsets = by_partition(replies[0]), by_partition(replies[1])
    if buckets:
        records = replies[2: 2 + 2 * buckets]
        event_time.update(merge_min([by_partition(r) for r in records[0::2]]))
        offsets.update(merge_min([by_partition(r) for r in records[1::2]]))
    stamps = replies[len(replies) - len(partitions):]
    idle = {tp for tp, stamp in zip(partitions, stamps, strict=True) if stamp is not None}
    return PartitionRead(event_time, offsets, idle)

