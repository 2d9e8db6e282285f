"""Every reach into Faust's or aiokafka's private internals, in one place.

Re-check each of these when faust-streaming or aiokafka is upgraded (the attribute, why we touch it, and the test
that fails when it breaks):

- `Consumer._read_offset` (Faust): the last offset delivered per partition, used to drop a fetched message below
  it. Replaced by `recovery.ReadOffsets`, which reports no mark, so messages re-read after a seek back or after a
  broker restarted its offsets are delivered. Set before the fetcher binds its methods. `wire_consumer` raises if
  it is gone; tests/test_faults.py (the redis-restart and broker-restart cases) fail when it is silently ignored.
- `Consumer._thread._create_worker_consumer` (Faust) and the aiokafka client's `_fetch_max_wait_ms`: Faust
  hard-codes aiokafka's fetch_max_wait_ms=1500, and a broker that answers a waiting fetch only when the wait ends
  (Tansu) then delays every event, and the alerts with them, by up to that much. Wrapped to set
  `settings.broker_fetch_max_wait`. `wire_consumer` raises if the factory is gone; a renamed client attribute
  shows as the latency of tests/test_pipeline.py and `python -m bench` rising to ~1.5 s.
- `Consumer.seek_to_committed` (Faust, public name, private role): called on every assignment; wrapped so that
  `reconcile.on_assigned` seeks back where Redis holds less than Kafka committed. Breaks the kill tests of
  tests/test_faults.py (counts no longer exact after SIGKILLs and rebalances).
- `Consumer._committed_offset` (Faust): its local commit marks; reset for the event topics when a broker came back
  empty, so the new, lower offsets get committed. Breaks
  tests/test_faults.py::test_worker_carries_on_with_new_traffic_after_the_broker_restarts_empty.
- `App._new_consumer` (Faust): the hook where the consumer above is built; `App` overrides it.
- `Consumer._thread.call_thread` and `.seek` (Faust's aiokafka driver): `seek` runs a seek on the consumer's own
  thread. Faust's `Consumer.seek` calls aiokafka's seek on the caller's thread, where `Fetcher.seek_to` deletes the
  partition's fetched records while the consumer thread may be draining them in `fetched_records`: a KeyError
  there crashed a worker on a rebalance (robinhood/aiokafka#19). tests/test_evaluation.py's two workers on a
  Redis Cluster met it once in six runs.
- `Consumer._thread._ensure_consumer()` (Faust): the aiokafka consumer, for its public `partitions_for_topic`.
  Faust's own `topic_partitions` reads aiokafka's coordinator snapshot, which only the group's leader fills: on
  every other worker it knows no topic, so an evaluator there saw no partition and never closed a window.
  `partition_count` raises if the path is gone; tests/test_evaluation.py (two workers, either may evaluate)
  stalls when it returns nothing.
- `TableManager.on_start` and its `_update_channels` (Faust): the manager pauses a second at start-up for agents to
  declare tables; trustgap declares none (its state is in Redis), so `NoTables` starts without the pause (the
  worker spends that second importing scipy before its freeze instead: stream.cli). `NoTables` raises at start if
  `_update_channels` is gone; tests/test_worker_start.py fails if the pause comes back.
- `Worker._sentinel_task` (mode): the last task run before the event loop closes, a one-second sleep that every
  stop waited out. `Worker` runs a tenth of one: enough turns of the loop for cancelled tasks to finish;
  tests/test_worker_start.py stops a worker and fails on a task left pending or an exception after the signal.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Container, Mapping
from dataclasses import dataclass
from typing import Any

import faust
from faust.tables import TableManager


@dataclass(frozen=True)
class Wiring:
    """What the worker hooks into its consumer."""

    read_offsets: dict[Any, Any]  # stands in for Faust's last-delivered-offset map
    fetch_max_wait_ms: int
    on_assigned: Callable[[Mapping[Any, int]], Awaitable[Mapping[Any, int]]]  # after seek_to_committed


def _require(obj: Any, name: str) -> None:
    if not hasattr(obj, name):
        raise RuntimeError(f"{type(obj).__name__} has no {name}: Faust or aiokafka changed; see stream.faust_patches")


def wire_consumer(consumer: Any, wiring: Wiring) -> None:
    """Hook the worker's offset reconciliation and fetch wait into a Faust consumer just built."""
    for name in ("_read_offset", "_thread", "seek_to_committed"):
        _require(consumer, name)
    _require(consumer._thread, "_create_worker_consumer")
    consumer._read_offset = wiring.read_offsets  # before the fetcher binds its methods
    create = consumer._thread._create_worker_consumer

    def create_with_wait(transport: Any) -> Any:
        client = create(transport)
        client._fetch_max_wait_ms = wiring.fetch_max_wait_ms
        return client

    consumer._thread._create_worker_consumer = create_with_wait
    seek_to_committed = consumer.seek_to_committed

    async def seek_then_reconcile() -> Mapping[Any, int]:
        return await wiring.on_assigned(await seek_to_committed())

    consumer.seek_to_committed = seek_then_reconcile


async def seek(consumer: Any, tp: Any, offset: int) -> None:
    """Faust's `Consumer.seek`, with aiokafka's seek run on the consumer thread (as Faust runs its own
    seek_to_committed), so it cannot delete fetched records under the thread's drain; then the read mark, as Faust's."""
    _require(consumer, "_thread")
    thread = consumer._thread
    await thread.call_thread(thread.seek, tp, offset)
    consumer._read_offset[tp] = offset if offset else None


def partition_count(consumer: Any, topic: str) -> int | None:
    """How many partitions `topic` has in the consumer's cluster metadata (None before it has the topic's)."""
    _require(consumer, "_thread")
    _require(consumer._thread, "_ensure_consumer")
    from faust.exceptions import ConsumerNotStarted

    try:
        partitions = consumer._thread._ensure_consumer().partitions_for_topic(topic)
    except ConsumerNotStarted:
        return None
    return len(partitions) if partitions else None


def forget_commit_marks(consumer: Any, topics: Container[str]) -> None:
    """Drop Faust's local commit marks of `topics`, so offsets below them (a broker restarted empty) get committed."""
    marks = consumer._committed_offset
    for tp in list(marks):
        if tp.topic in topics:
            marks[tp] = None


class App(faust.App):
    """Faust's App with its consumer wired to trustgap's offset reconciliation (stream.recovery)."""

    wiring: Wiring  # set by create_app before the consumer is first built

    def _new_consumer(self) -> Any:
        consumer: Any = super()._new_consumer()
        wire_consumer(consumer, self.wiring)
        return consumer


class NoTables(TableManager):
    """Faust's table manager without its start-up pause (see the module docstring): trustgap declares no table."""

    async def on_start(self) -> None:
        _require(self, "_update_channels")
        if not self.should_stop:
            await self._update_channels()
            await self.recovery.start()


class Worker(faust.Worker):
    """Faust's worker, whose event loop closes a tenth of a second after the last task stopped, not a second."""

    async def _sentinel_task(self) -> None:
        await asyncio.sleep(0.1)
