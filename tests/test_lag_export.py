"""The consumer lag a worker exports (stream.partitions): per owned partition, up to the end its owner read from the
offset Redis holds; only while that end is known; gone at once when the partition is revoked. No process: a Runtime
on a fresh registry, its ends set as watch_idle would set them."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

# Imported at collection: stream.partitions loads Faust, whose croniter runs `file -b` on its first import, and no
# test in the fast lane may start a process.
from faust.types import TP

from stream.metrics import Metrics
from stream.partitions import export_lag, forget, settled
from stream.runtime import Partition, Runtime
from stream.settings import load
from stream.state import PartitionEnd, Store

P0, P1, P2 = ("t.predictions", 0), ("t.predictions", 1), ("t.actions", 0)


@pytest.fixture
def rt() -> Runtime:
    settings = load(None, redis_url="redis://127.0.0.1:1/0")  # never connected to
    return Runtime(settings, Store.from_settings(settings), Metrics(CollectorRegistry()))


def lag(rt: Runtime, tp: Partition) -> float | None:
    return rt.metrics.registry.get_sample_value("trustgap_consumer_lag", {"topic": tp[0], "partition": str(tp[1])})


def known(rt: Runtime, ends: dict[Partition, PartitionEnd]) -> None:
    """The ends watch_idle read for the owned partitions."""
    rt.ends = {tp: (end, 0.0) for tp, end in ends.items()}


def test_each_owned_partition_lags_from_the_offset_redis_holds_to_the_end_its_owner_read(rt: Runtime) -> None:
    known(rt, {P0: PartitionEnd(0, 10), P1: PartitionEnd(0, 5), P2: PartitionEnd(40, 100)})
    export_lag(rt, {P0: 7, P2: 10, ("t.outcomes", 3): 99})  # Redis holds other partitions' offsets too
    assert [lag(rt, tp) for tp in (P0, P1, P2)] == [3, 5, 60]  # P1: nothing applied; P2: Redis behind retention
    assert lag(rt, ("t.outcomes", 3)) is None  # not owned here: its owner exports it


def test_a_partition_whose_end_is_no_longer_known_loses_its_series(rt: Runtime) -> None:
    known(rt, {P0: PartitionEnd(0, 10), P1: PartitionEnd(0, 5)})
    export_lag(rt, {})
    del rt.ends[P1]  # revoked between two reads of the ends
    export_lag(rt, {})
    assert (lag(rt, P0), lag(rt, P1)) == (10, None)
    rt.ends.clear()  # the broker did not answer: unknown, so absent rather than stale
    export_lag(rt, {})
    assert (lag(rt, P0), lag(rt, P1)) == (None, None)


def test_a_revoked_partition_loses_its_series_at_once_and_the_next_tick_does_not_bring_it_back(rt: Runtime) -> None:
    known(rt, {P0: PartitionEnd(0, 10), P1: PartitionEnd(0, 5)})
    export_lag(rt, {P0: 10})
    forget(rt, {TP(*P1), TP("t.outcomes", 2)})  # one it never exported is no error
    assert (lag(rt, P0), lag(rt, P1)) == (0, None)
    export_lag(rt, {P0: 10})
    assert (lag(rt, P0), lag(rt, P1)) == (0, None)


def test_settled_keeps_where_the_log_now_starts_without_restarting_the_idle_clock(rt: Runtime) -> None:
    timeout = rt.settings.idle_timeout_seconds
    assert settled(rt, {P0: PartitionEnd(0, 10)}, 100.0) == {}
    # the same end later, retention moved the first offset: idle since the first look, with the new first offset
    assert settled(rt, {P0: PartitionEnd(4, 10)}, 100.0 + timeout) == {P0: PartitionEnd(4, 10)}
    assert rt.ends[P0] == (PartitionEnd(4, 10), 100.0)
    # a new end restarts the clock
    assert settled(rt, {P0: PartitionEnd(4, 11)}, 100.0 + 2 * timeout) == {}
    assert rt.ends[P0] == (PartitionEnd(4, 11), 100.0 + 2 * timeout)
