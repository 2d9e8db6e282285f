"""Where a partition is sought on assignment or after a Redis restart (pure rule, stream.recovery.plan_seeks), that
Faust then hands over every redelivered message (stream.recovery.ReadOffsets), and how far a partition lags
(stream.recovery.partition_lag)."""

from __future__ import annotations

import asyncio
import threading
from collections import defaultdict
from collections.abc import AsyncIterator, Coroutine, MutableMapping
from types import SimpleNamespace
from typing import Any

import pytest

# Imported here, at collection, not inside a test: croniter (a Faust dependency) runs `file -b` on the
# interpreter when first imported, and no test in the fast lane may start a process.
from faust.transport.consumer import Consumer
from faust.types import TP

from stream.recovery import ReadOffsets, partition_lag, plan_seeks


@pytest.mark.parametrize(("position", "held", "earliest", "expected"), [
    (100, 100, 0, None),   # Redis holds exactly where the consumer stands: nothing to do
    (100, 80, 0, 80),      # Redis rolled back (AOF lost its tail) under Kafka's commit: replay from 80
    (100, 120, 0, None),   # Redis ahead (a faster worker): never seek forward from a known position
    (100, None, 0, 0),     # Redis lost the partition entirely: replay what the topic still retains
    (100, None, 40, 40),   # ... which starts at the earliest retained offset
    (100, 10, 40, 40),     # Redis behind retention: the earliest retained offset is as far back as we can go
    (0, None, 0, None),    # an empty or unread partition: nothing to replay
    # Nothing committed: where the consumer stands is unknown (a partition kept through a rebalance stays past
    # the messages Faust dropped undelivered), so it is always sought to where Redis says it resumes
    (None, 10, 0, 10),
    (None, None, 0, 0),
    (None, None, 40, 40),
    (None, 300, 0, 0),     # Redis past the partition's end (200): a broker restarted empty; start from its first
])
def test_seek_to_what_redis_holds_and_the_topic_retains(
        position: int | None, held: int | None, earliest: int, expected: int | None) -> None:
    tp = ("t", 0)
    seeks = plan_seeks([tp], {tp: position}, {} if held is None else {tp: held}, {tp: earliest}, {tp: 200})
    assert seeks.get(tp) == expected


@pytest.mark.parametrize(("end", "first", "applied", "expected"), [
    (10, 0, 7, 3),       # Redis applied up to 7: three messages wait
    (10, 0, 10, 0),      # caught up
    (10, 0, None, 10),   # nothing applied yet: every retained message waits
    (0, 0, None, 0),     # an empty partition lags nothing
    (100, 40, None, 60),  # nothing applied, the log starts at 40: only what is retained can wait
    (100, 40, 10, 60),   # Redis behind retention: what was deleted is gone, not behind
    (5, 0, 12, 0),       # Redis past the end (a broker restarted empty): 0, never negative
])
def test_lag_counts_the_retained_messages_from_the_offset_redis_holds_to_the_end(
        end: int, first: int, applied: int | None, expected: int) -> None:
    assert partition_lag(end, first, applied) == expected


def drain(read_offsets: MutableMapping[Any, Any], offsets: list[int]) -> list[int]:
    """Run Faust's own fetch loop (`Consumer._drain_messages`) over messages at `offsets` on one partition, with
    `read_offsets` as the consumer's read-offset map; return the offsets it handed to the agents.

    The loop is Faust's code, not a copy of its filter; the consumer around it is a stub of just what the loop
    reads. An upgrade of Faust that changes the loop shows here first."""
    delivered: list[int] = []
    stopped, fetcher = threading.Event(), SimpleNamespace(_stopped=threading.Event())
    tp = TP("t", 0)

    async def getmany(timeout: float) -> AsyncIterator[tuple[Any, Any]]:
        for offset in offsets:
            yield tp, SimpleNamespace(offset=offset, topic="t", key=None, value=None)
        stopped.set()

    async def callback(message: Any) -> None:
        delivered.append(message.offset)

    async def wait_first(first: Coroutine[Any, Any, None], *others: Coroutine[Any, Any, None]) -> None:
        for other in others:
            other.close()
        await first

    async def sleep(_seconds: float) -> None:
        return None

    consumer = SimpleNamespace(
        callback=callback, getmany=getmany, _stopped=stopped, _read_offset=read_offsets, _commit_every=None,
        diag=SimpleNamespace(set_flag=lambda flag: None, unset_flag=lambda flag: None),
        app=SimpleNamespace(topics=SimpleNamespace(acks_enabled_for=lambda topic: False)), should_stop=False,
        sleep=sleep, wait_first=wait_first, suspend_flow=SimpleNamespace(wait=lambda: sleep(0)),
        log=SimpleNamespace(dev=lambda *args: None), consumer_stopped_errors=())
    asyncio.run(Consumer._drain_messages(consumer, fetcher))  # type: ignore[arg-type]
    return delivered


REDELIVERIES = [
    [500, 501, 100, 101],  # a batch fetched before a seek back to 100 is handed over after it
    [7, 8, 0, 1],          # a fresh broker restarted the partition's offsets at 0
]


@pytest.mark.parametrize("offsets", REDELIVERIES)
def test_faust_hands_over_every_redelivered_message_with_read_offsets(offsets: list[int]) -> None:
    assert drain(ReadOffsets(), offsets) == offsets


@pytest.mark.parametrize("offsets", REDELIVERIES)
def test_faust_alone_drops_what_is_redelivered_below_its_mark(offsets: list[int]) -> None:
    # Why ReadOffsets exists, and proof that the test above can fail: Faust's own map drops the re-read range.
    assert drain(defaultdict(lambda: None), offsets) == offsets[:2]
