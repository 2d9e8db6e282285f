"""Partition progress in Redis: what a chunk claims (offsets and event time, written by one offsets.lua call behind
the effects they cover), the owners' idleness assertions, and the read the watermark is computed from.

Everything here lives in the slot of `keys.OFFSETS`, so the offsets, the event time and the idleness of every
partition are written and read together, and roll back together.
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


def queue_progress(pipe: Any, progress: Progress, run_id: str | None) -> None:
    """Queue the offsets.lua call writing a chunk's progress (behind the effects queued before it)."""
    args: list[Any] = [run_id or "", keys.IDLE_PREFIX]
    for (t, p), o in progress.offsets.items():
        ms = progress.event_time.get((t, p))
        args += [f"{t}:{p}", o, "" if ms is None else ms]
    # EVAL, not EVALSHA: inside a pipeline a script object makes redis-py send SCRIPT EXISTS first (see Store.send)
    pipe.eval(scripts.OFFSETS.source, 2, keys.OFFSETS, keys.EVENT_TIME, *args)


async def assert_idle(client: aioredis.Redis, ends: Mapping[Partition, PartitionEnd], now_ms: int, ttl_ms: int
                      ) -> set[Partition]:
    """Assert idle the partitions of `ends` whose offset in Redis has reached their end; returns those asserted."""
    if not ends:
        return set()
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


def queue_read(pipe: Any, partitions: Sequence[Partition]) -> None:
    """Queue the reads `parse_read` decodes: every partition's event time and offset, and the idleness of
    `partitions`. The offsets ride along (a few dozen fields) for the consumer lag, which would otherwise cost a
    round trip of its own."""
    pipe.hgetall(keys.EVENT_TIME)
    pipe.hgetall(keys.OFFSETS)
    if partitions:
        pipe.mget([keys.idle(t, p) for t, p in partitions])


def parse_read(partitions: Sequence[Partition], replies: list[Any]) -> PartitionRead:
    """The event time and offset of every partition, and the partitions asserted idle, from `queue_read`'s
    replies."""
    idle = set()
    if partitions:
        idle = {tp for tp, stamp in zip(partitions, replies[2], strict=True) if stamp is not None}
    return PartitionRead(by_partition(replies[0]), by_partition(replies[1]), idle)

