"""Keep the consumer's positions and Redis's offsets from diverging, and ride out Redis and broker outages.

Redis's offsets, written by the same atomic call as the effects they cover, decide where a partition resumes
(stream.recovery). Two moments seek a partition back to them, by the one rule in `seek_back`: a partition
assignment (after Faust sought to the committed offsets) and a Redis restart found by the guard.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, TypeVar

from . import faust_patches
from .errors import RedisRestarted
from .recovery import plan_seeks
from .runtime import Partition, Runtime
from .state import Progress
from .state.redis_io import UNAVAILABLE
from .times import epoch_ms

log = logging.getLogger("trustgap")

T = TypeVar("T")


async def seek_back(rt: Runtime, positions: Mapping[Any, int | None], held: Mapping[Partition, int],
                    cause: str) -> dict[Any, int]:
    """Seek the partitions of `positions` to where Redis says they resume, where the consumer stands past it or
    where it stands is unknown (None: nothing committed), by stream.recovery.plan_seeks.

    A partition sought is rewinding until its target is re-read (see `progress`). Returns the seeks made."""
    forget_vouchable(rt)
    consumer = rt.app.consumer
    mine = list(positions)
    earliest = await consumer.earliest_offsets(*mine) if mine else {}
    ends = await consumer.highwaters(*mine) if mine else {}
    seeks = plan_seeks(mine, positions,
                       {tp: held[(tp.topic, tp.partition)] for tp in mine if (tp.topic, tp.partition) in held},
                       earliest, ends)
    back = 0
    for tp, target in seeks.items():
        at = positions.get(tp)
        if at is None:
            log.info("%s: %s:%d has no committed offset; seeking to %d, where redis says it resumes", cause,
                     tp.topic, tp.partition, target)
        else:
            back += 1
            log.warning("%s: %s:%d stands at %d but redis holds %d; seeking back", cause, tp.topic, tp.partition,
                        at, target)
        await faust_patches.seek(consumer, tp, target)
        rt.rewinding[(tp.topic, tp.partition)] = target
    rt.metrics.offset_seeks.labels(cause).inc(back)
    return seeks


async def on_assigned(rt: Runtime, committed: Mapping[Any, int]) -> dict[Any, int]:
    """After Faust sought to the committed offsets: seek back where Redis holds less, and seek every partition with
    no committed offset to where Redis says it resumes (see stream.recovery)."""
    out = dict(committed)
    forget_vouchable(rt)  # a partition may have gone to another worker, which vouches for it from now on
    mine = [tp for tp in committed if tp.topic in rt.event_topics()]
    for tp in mine:
        rt.rewinding.pop((tp.topic, tp.partition), None)
    try:
        run_id = await asyncio.wait_for(rt.store.server_run_id(), 5)
        held = await asyncio.wait_for(rt.store.offsets(), 5)
    except (*UNAVAILABLE, asyncio.TimeoutError) as err:
        # Unknown run_id: the first batch is refused by the guard and reconciles once Redis answers.
        log.warning("redis unreachable at assignment (%s); reconciling offsets on the first batch", err)
        rt.store.run_id = "unknown"
        return out
    # aiokafka seeks only to a committed offset above 0: where a partition with 0 or none stands is unknown
    out.update(await seek_back(rt, {tp: committed.get(tp) or None for tp in mine}, held, "assignment"))
    rt.store.run_id = run_id  # adopted only once the seeks are in place (see reconcile)
    return out


async def reconcile(rt: Runtime) -> None:
    """Redis restarted: seek every assigned partition back to the offset it still holds, then adopt its run_id.

    The run_id is adopted last: until then every other agent's write is refused by the guard, so none can
    claim offsets across the hole between what Redis kept and what the consumer had read. It is read first,
    so that a second restart during the reconcile leaves a stale run_id and trips the guard again."""
    run_id = await with_redis(rt, "run_id", rt.store.server_run_id)
    held = await with_redis(rt, "offsets", rt.store.offsets)
    consumer = rt.app.consumer
    mine = [tp for tp in consumer.assignment() if tp.topic in rt.event_topics()]
    seeks = await seek_back(rt, {tp: await consumer.position(tp) for tp in mine}, held, "redis_restart")
    rt.store.run_id = run_id
    log.warning("redis restarted (run_id %s): sought %d partitions back to the offsets it holds: %s",
                run_id, len(seeks), {f"{tp.topic}:{tp.partition}": o for tp, o in seeks.items()})


async def watch_broker(rt: Runtime) -> None:
    """Re-create missing topics: a broker restarted on empty storage comes back without them.

    The consumer's positions then point past the new, empty partitions; aiokafka resets them to the earliest
    offset on OFFSET_OUT_OF_RANGE, and Faust's local commit marks are dropped so the new offsets get committed.
    Redis's offsets stay ahead of the new partitions and are never sought to (only seeks back happen)."""
    from .admin import ensure_topics  # the admin client loads confluent-kafka: only once a worker runs

    loop = asyncio.get_running_loop()
    try:
        created = await loop.run_in_executor(None, ensure_topics, rt.settings, 5.0)
    except Exception as err:  # noqa: BLE001 - any admin failure (BrokerUnreachable or other) means "not reachable"
        if not rt.broker_down:
            log.warning("broker unreachable (%s); the consumer keeps retrying", str(err).splitlines()[0][:200])
        rt.broker_down = "broker unreachable"
        return
    rt.broker_down = None
    if created:
        log.warning("topics %s were missing (a broker restarted empty?); re-created them", created)
        faust_patches.forget_commit_marks(rt.app.consumer, rt.event_topics())
        rt.metrics.topics_recreated.inc(len(created))


def progress(rt: Runtime, seen: Sequence[tuple[Partition, int, datetime | None]]) -> Progress:
    """What a chunk claims per partition: the next offset, and the newest event time of exactly the messages
    claimed, leaving out a rewinding partition until its target.

    Evaluated on every attempt, because a Redis restart found while applying the batch may have just sought
    some of its partitions back: the batch is still applied, but must not claim the hole before it, neither its
    offsets nor event time past it (a message fetched before the seek must not advance the watermark)."""
    offsets: dict[Partition, int] = {}
    newest: dict[Partition, datetime] = {}
    reached: set[Partition] = set()
    for tp, offset, ts in seen:
        target = rt.rewinding.get(tp)
        if target is not None and tp not in reached:
            if offset != target:
                continue
            reached.add(tp)
        offsets[tp] = max(offsets.get(tp, 0), offset + 1)
        if ts is not None and (tp not in newest or ts > newest[tp]):
            newest[tp] = ts
    for tp in reached:  # cleared now, applied below; a crash before that leaves Redis's offset where it was
        rt.rewinding.pop(tp, None)
    # converted once per partition, not per event (compared as datetimes until here)
    return Progress(offsets, {tp: epoch_ms(ts) for tp, ts in newest.items()})


def forget_vouchable(rt: Runtime) -> None:
    """Partitions are being sought (back): what the worker could vouch for may no longer hold, nor may any chunk
    claimed before now that completes after it."""
    rt.seeks += 1
    rt.vouchable.clear()


async def apply_claiming(rt: Runtime, seen: Sequence[tuple[Partition, int, datetime | None]],
                         call: Callable[[Progress], Awaitable[T]]) -> T:
    """apply_guarded for a chunk of events: `call` gets the progress the chunk claims (evaluated on every attempt,
    see `progress`); once it succeeded with no seek since the claim was made, the claim is vouchable."""
    claim: list[tuple[Progress, int]] = []

    def attempt() -> Awaitable[T]:
        claim[:] = [(progress(rt, seen), rt.seeks)]
        return call(claim[0][0])

    result = await apply_guarded(rt, "apply", attempt)
    claimed, seeks = claim[0]
    if seeks == rt.seeks:
        for tp, offset in claimed.offsets.items():
            old = rt.vouchable.get(tp)
            ms = claimed.event_time.get(tp)
            if old is not None and old[1] is not None:
                ms = old[1] if ms is None else max(ms, old[1])
            rt.vouchable[tp] = (offset, ms)
    return result


async def vouch(rt: Runtime) -> None:
    """On a Redis Cluster, write what the worker can vouch for into every bucket's record (Store.vouch), for the
    partitions it owns now. A chunk collected before a rebalance can complete after it, for a partition that went to
    another worker: its claim is true, but old, and vouched for again at every tick it would pull every bucket's
    record back below what the new owner applied (the consumer lag then shows the partition unread)."""
    if not rt.store.cluster or not rt.vouchable:
        return
    owned = {(tp.topic, tp.partition) for tp in rt.app.consumer.assignment()}
    for tp in [tp for tp in rt.vouchable if tp not in owned]:
        del rt.vouchable[tp]
    if not rt.vouchable:
        return

    def attempt() -> Awaitable[None]:  # read at each attempt: a reconcile in between forgets what it held
        v = rt.vouchable
        return rt.store.vouch(Progress({tp: o for tp, (o, _) in v.items()},
                                       {tp: ms for tp, (_, ms) in v.items() if ms is not None}))

    await apply_guarded(rt, "vouch", attempt)


async def apply_guarded(rt: Runtime, what: str, call: Callable[[], Awaitable[T]]) -> T:
    """Run a guarded store call; on a Redis restart, reconcile the offsets and run it again."""
    while True:
        try:
            return await with_redis(rt, what, call)
        except RedisRestarted:
            try:
                await reconcile(rt)
            except Exception as err:  # the consumer may be mid-rebalance; the guard will trip again
                log.warning("reconcile after a redis restart failed (%s); retrying", err)
                rt.store.run_id = "unknown"
                await asyncio.sleep(1)


async def with_redis(rt: Runtime, what: str, call: Callable[[], Awaitable[T]]) -> T:
    """Retry a Redis call with capped back-off; meanwhile the agent waits, and Redis's offsets decide where a
    worker resumes whatever Kafka committed (see ingest.submit)."""
    delay = 0.1
    while True:
        try:
            result = await call()
            if rt.degraded:
                log.warning("redis reachable again after %s failures", what)
                rt.degraded = None
                rt.metrics.healthy.set(1)
            return result
        except UNAVAILABLE as err:
            rt.metrics.redis_errors.inc()
            rt.metrics.healthy.set(0)
            rt.degraded = f"redis: {type(err).__name__}"
            log.warning("redis %s failed (%s); retrying in %.1fs", what, err, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

