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


def queue_read(pipe: Any, partitions: Sequence[Partition]) -> None:
    """Queue the reads `parse_read` decodes: every partition's event time, and the idleness of `partitions`."""
    pipe.hgetall(keys.EVENT_TIME)
    if partitions:
        pipe.mget([keys.idle(t, p) for t, p in partitions])


def parse_read(partitions: Sequence[Partition], replies: list[Any]) -> tuple[dict[Partition, int], set[Partition]]:
    """(event time per partition, the partitions asserted idle) from the replies of `queue_read`."""
    event_time: dict[Partition, int] = {}
    for k, v in replies[0].items():
        topic, _, part = as_text(k).rpartition(":")
        event_time[(topic, int(part))] = int(v)
    idle = set()
    if partitions:
        idle = {tp for tp, stamp in zip(partitions, replies[1], strict=True) if stamp is not None}
    return event_time, idle

