"""Keep Kafka progress and Redis state from diverging: seek partitions back to the offsets Redis holds.

Redis is the authority on what has been applied: `store.apply` writes each partition's next offset after the
effects it covers, on the same connection, so after a crash (or an AOF that lost its last second) the offset
Redis holds never claims more than Redis has. Kafka's committed offset is only a hint that may run ahead of it
(Faust commits on its own schedule, and an `appendfsync everysec` Redis can roll back under a commit). So:

- on every partition assignment, after Faust has sought to the committed offsets, a partition whose Redis offset
  is below that position, or that has no committed offset, is sought to it (`plan_seeks`);
- when a guarded script reports that Redis restarted (`errors.RedisRestarted`), every assigned partition is
  reconciled the same way against the fetch position, then the batch is applied again;
- a partition sought back is *rewinding* until its first re-read message arrives: messages fetched before the
  seek are still applied (harmless, deduplicated) but do not advance its offset in Redis, so a second crash in
  that moment cannot skip the hole.

`ReadOffsets` replaces Faust's last-delivered-offset map, which would otherwise drop re-read messages as already
seen. `partition_lag` measures the same authority against the broker: how many messages Redis has yet to apply.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

K = TypeVar("K")


def plan_seeks(assigned: Iterable[K], positions: Mapping[K, int | None], redis_offsets: Mapping[K, int],
               earliest: Mapping[K, int], ends: Mapping[K, int]) -> dict[K, int]:
    """Partitions to seek and where: back to where Redis says they resume, from wherever the consumer stands.

    A partition resumes at the offset Redis holds, or at the earliest offset still retained when Redis holds none
    (a new or rolled-back Redis lost its state) or one past the partition's `end` (a broker restarted empty: its
    new messages start below that offset again), and never before the earliest retained offset.

    `positions` is where the consumer stands. None means unknown, and such a partition is always sought: with
    nothing committed, a partition a worker keeps through a rebalance stays wherever its fetches had got to, past
    the messages Faust dropped undelivered when the rebalance stopped the flow. A known position past the resume
    point is sought back to it; one at or before it is left alone (another worker may have got further; seeking
    forward is never needed, and re-reading is harmless)."""
    seeks: dict[K, int] = {}
    for tp in assigned:
        first = earliest.get(tp, 0)
        held = redis_offsets.get(tp)
        target = first if held is None or held > ends.get(tp, held) else max(held, first)
        pos = positions.get(tp)
        if pos is None or target < pos:
            seeks[tp] = target
    return seeks


def partition_lag(end: int, first: int, applied: int | None) -> int:
    """Messages of a partition not applied yet: from where it resumes to its `end` (the broker's high watermark).

    It resumes at the offset Redis holds as `applied` (Kafka's committed offset may run ahead of it), or at the
    `first` retained offset when Redis holds none or retention deleted past it (those messages are gone, not
    behind). Never below 0: after a broker restarted empty, Redis holds an offset past the new log's end until the
    worker's first write on the new log replaces it."""
    resume = first if applied is None else max(applied, first)
    return max(0, end - resume)


class ReadOffsets(dict[Any, Any]):
    """Faust's `Consumer._read_offset` (last offset delivered per partition) without its filter.

    Faust drops a fetched message whose offset is below the last one it delivered. That loses messages twice over
    here: after a seek back (a batch fetched before the seek is delivered after it and raises the mark over the
    re-read range) and after a fresh broker restarts a partition's offsets at 0. The store is idempotent, so a
    redelivered message is harmless; reporting no mark makes Faust deliver everything the consumer fetches."""

    def __getitem__(self, tp: Any) -> None:
        return None

    def __missing__(self, tp: Any) -> None:
        return None
