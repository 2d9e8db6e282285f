"""Partition progress against a real redis-server: offsets and event time written by one call, the event time a
monotonic max, idleness asserted only where Redis's offsets reached the partition's end, ended by a claimed event,
lapsing when not re-asserted; and the tick's watermark over them, and the offsets it reads with it."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis

from stream.embedded import StackInfo
from stream.settings import load
from stream.state import PartitionEnd, Progress, Store, keys
from tests.support.aio import run

pytestmark = pytest.mark.integration
A, B = ("predictions", 0), ("predictions", 1)


@pytest.fixture
def store(stack: StackInfo, redis_client: redis.Redis) -> Store:
    return Store.from_settings(load(None, redis_url=stack.redis_url, state_buckets=2))


def hashes(r: redis.Redis) -> tuple[dict[str, int], dict[str, int]]:
    """(offsets, event time) as Redis holds them."""
    return ({k.decode(): int(v) for k, v in r.hgetall(keys.OFFSETS).items()},
            {k.decode(): int(v) for k, v in r.hgetall(keys.EVENT_TIME).items()})


def test_offsets_and_event_time_are_written_together_and_the_event_time_only_grows(
        store: Store, redis_client: redis.Redis) -> None:
    async def go() -> list[Any]:
        store.run_id = await store.server_run_id()
        out: list[Any] = []
        await store.apply([], Progress({A: 10, B: 3}, {A: 5000}), 0)  # B's messages carried no valid event
        out.append(hashes(redis_client))
        await store.apply([], Progress({A: 12}, {A: 4000}), 0)  # an older event further on: the max stays
        out.append(hashes(redis_client))
        await store.add_annotations([], Progress({A: 13, B: 4}, {B: 7000}))
        out.append(hashes(redis_client))
        store.run_id = "0" * 40  # another Redis process: neither is written
        try:
            await store.apply([], Progress({A: 20}, {A: 9000}), 0)
        except Exception as err:  # noqa: BLE001 - the refusal is what is asserted
            out.append(type(err).__name__)
        out.append(hashes(redis_client))
        return out

    assert run(go(), store) == [
        ({"predictions:0": 10, "predictions:1": 3}, {"predictions:0": 5000}),
        ({"predictions:0": 12, "predictions:1": 3}, {"predictions:0": 5000}),
        ({"predictions:0": 13, "predictions:1": 4}, {"predictions:0": 5000, "predictions:1": 7000}),
        "RedisRestarted",
        ({"predictions:0": 13, "predictions:1": 4}, {"predictions:0": 5000, "predictions:1": 7000}),
    ]


def test_idleness_is_asserted_only_where_redis_holds_the_end_and_a_claimed_event_ends_it(
        store: Store, redis_client: redis.Redis) -> None:
    empty, fresh = ("actions", 0), ("actions", 1)

    async def go() -> list[Any]:
        out: list[Any] = []
        await store.apply([], Progress({A: 10, B: 10}, {A: 5000, B: 6000}), 0)
        ends = {A: PartitionEnd(0, 10),      # applied to its end
                B: PartitionEnd(0, 11),      # one message not applied yet: a backlog
                empty: PartitionEnd(4, 4),   # empty (what it had expired) and no offset in Redis: idle
                fresh: PartitionEnd(0, 2)}   # no offset in Redis but messages to read: a backlog
        out.append(await store.assert_idle(ends, 123, 60_000))
        out.append(sorted(k.decode() for k in redis_client.scan_iter(keys.IDLE_PREFIX + "*")))
        out.append(int(redis_client.get(keys.idle(*A)) or 0))  # the stamp: when the owner asserted it
        # a chunk claiming a message of A without a valid event leaves it idle; one with an event ends it
        await store.apply([], Progress({A: 11}), 0)
        out.append(redis_client.exists(keys.idle(*A)))
        await store.apply([], Progress({A: 12}, {A: 5001}), 0)
        out.append(redis_client.exists(keys.idle(*A)))
        return out

    assert run(go(), store) == [{A, empty}, sorted([keys.idle(*A), keys.idle(*empty)]), 123, 1, 0]


def test_an_assertion_not_renewed_lapses(store: Store, redis_client: redis.Redis) -> None:
    async def go() -> list[bool]:
        await store.apply([], Progress({A: 1}, {A: 5000}), 0)
        asserted = await store.assert_idle({A: PartitionEnd(0, 1)}, 0, 200)
        held = bool(redis_client.exists(keys.idle(*A)))
        await asyncio.sleep(0.4)
        return [asserted == {A}, held, bool(redis_client.exists(keys.idle(*A)))]

    assert run(go(), store) == [True, True, False]
    assert keys.idle_ttl_ms(1.0) == 5000  # three missed re-assertions at the default interval, and 2 s


def test_the_tick_gives_the_minimum_over_partitions_skipping_idle_ones(store: Store) -> None:
    parts = [A, B, ("actions", 0)]

    async def go() -> list[int | None]:
        out = []
        await store.apply([], Progress({A: 5, B: 5}, {A: 9000, B: 4000}), 0)
        out.append((await store.tick([], "w", None, parts)).event_time)  # actions:0 has no record: held
        await store.assert_idle({("actions", 0): PartitionEnd(0, 0)}, 0, 60_000)
        out.append((await store.tick([], "w", None, parts)).event_time)  # the slowest partition's time
        await store.assert_idle({B: PartitionEnd(0, 5)}, 0, 60_000)
        out.append((await store.tick([], "w", None, parts)).event_time)
        await store.assert_idle({A: PartitionEnd(0, 5)}, 0, 60_000)
        out.append((await store.tick([], "w", None, parts)).event_time)  # all idle: the newest of all
        out.append((await store.tick([], "w", None)).event_time)  # no partitions asked about
        return out

    assert run(go(), store) == [None, 4000, 9000, 9000, None]


def test_the_tick_reads_the_offsets_redis_holds_with_the_event_time(store: Store) -> None:
    # the consumer lag's applied offsets ride on the tick's one round trip, whatever partitions it asks about
    async def go() -> list[dict[tuple[str, int], int]]:
        store.run_id = await store.server_run_id()
        out = [(await store.tick([], "w", None, [A])).offsets]  # nothing applied yet
        await store.apply([], Progress({A: 5, B: 3}, {A: 9000}), 0)
        out.append((await store.tick([], "w", None, [A])).offsets)
        out.append((await store.tick([], "w", None, [])).offsets)  # no partition metadata yet: still read
        out.append((await store.tick([], "w", None)).offsets)  # not asked (a tick of new models only)
        return out

    assert run(go(), store) == [{}, {A: 5, B: 3}, {A: 5, B: 3}, {}]


def test_a_partitions_progress_over_buckets_is_their_minimum_and_a_bucket_without_a_record_leaves_it_unknown(
        ) -> None:
    from stream.state.progress import merge_min

    assert merge_min([]) == {}
    assert merge_min([{A: 7, B: 3}, {A: 5, B: 9}, {A: 6, B: 4}]) == {A: 5, B: 3}
    assert merge_min([{A: 7, B: 3}, {A: 5}]) == {A: 5}  # the second bucket vouches for nothing of B


def test_a_chunk_whose_apply_crossed_a_seek_is_not_vouched_for() -> None:
    # A reconcile (a seek back) while the chunk was in flight: a shard may have lost the chunk's effects after it
    # answered, so what the chunk claimed is no longer something the worker can vouch for in every bucket.
    from types import SimpleNamespace

    from stream.reconcile import apply_claiming

    rt: Any = SimpleNamespace(rewinding={}, vouchable={}, seeks=0, degraded=None)
    seen = [(A, 41, None), (B, 9, None)]

    async def applied(claimed: Progress) -> Progress:
        return claimed

    async def crossed(claimed: Progress) -> Progress:
        rt.seeks += 1
        return claimed

    assert asyncio.run(apply_claiming(rt, seen, applied)).offsets == {A: 42, B: 10}
    assert rt.vouchable == {A: (42, None), B: (10, None)}
    rt.vouchable.clear()
    asyncio.run(apply_claiming(rt, seen, crossed))
    assert rt.vouchable == {}
