"""trustgap on a real Redis Cluster (3 masters, 3 replicas, started from Debian's redis-server and joined by
`redis-cli --cluster create`) and the real Apache Kafka: the same exact counts as on one node, with each bucket's
progress recorded in its own slot, so a shard that rolls back rolls its progress back with its effects."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from stream.embedded import StackInfo
from stream.embedded_cluster import RedisClusterProcs, redis_cluster
from stream.state import keys
from tests.support.eventtime import (HOUR_MS, MODELS, Expected, applied, assert_exact, caught_up, end_offsets,
                                     expected, judged, outage_traffic, produce, start_together)
from tests.support.faultstack import kill_redis
from tests.support.harness import Deployment, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterProcs]:
    with redis_cluster(tmp_path_factory.mktemp("cluster")) as procs:
        yield procs


@pytest.fixture
def on_cluster(cluster: RedisClusterProcs, stack: StackInfo, tmp_path: Path) -> Iterator[Callable[..., Deployment]]:
    """Deployments on the shared Kafka with their state on the cluster, emptied first."""
    with cluster.client() as client:
        client.flushall(target_nodes=redis.RedisCluster.PRIMARIES)
    made: list[Deployment] = []

    def make(**overrides: str) -> Deployment:
        dep = Deployment(stack, tmp_path, overrides={"TRUSTGAP_REDIS_URL": cluster.seed,
                                                     "TRUSTGAP_REDIS_CLUSTER": "true", **overrides})
        dep.create_topics()
        made.append(dep)
        return dep

    yield make
    for dep in made:
        dep.stop_all()


def spread(cluster: RedisClusterProcs, buckets: int) -> dict[str, int]:
    """How many of the buckets each master serves."""
    with cluster.client() as client:
        out: dict[str, int] = {}
        for b in range(buckets):
            name = client.get_node_from_key(keys.bucket_meta(b)).name
            out[name] = out.get(name, 0) + 1
    return out


@pytest.mark.parametrize("workers", [1, 2])
def test_an_hours_outage_backlog_is_counted_exactly_on_a_redis_cluster(
        on_cluster: Callable[..., Deployment], cluster: RedisClusterProcs, workers: int) -> None:
    dep = on_cluster()
    assert len(spread(cluster, dep.settings.state_buckets)) == 3  # the buckets' state is on every master
    traffic, boundary = outage_traffic(141 + workers)
    truth = expected(traffic)
    assert len(truth.starts) == 2 and truth.predictions_in(boundary - HOUR_MS) > 15_000
    produce(dep, traffic.in_time_order())
    procs = start_together(dep, workers)
    caught_up(dep, 120)
    judged(dep, MODELS, boundary)
    assert_exact(dep, truth, [p.web_port for p in procs])  # type: ignore[attr-defined]


# --- a shard that rolls back --------------------------------------------------------------------------------------

def backlog_started(dep: Deployment) -> tuple[Expected, int, subprocess.Popen[bytes]]:
    """An hour's outage backlog produced and a worker catching up on it, a fifth of it applied: the truth, the
    first window's end, the worker."""
    traffic, boundary = outage_traffic(161)
    truth = expected(traffic)
    produce(dep, traffic.in_time_order())
    total = sum(end_offsets(dep).values())
    worker = dep.start_worker()
    wait_for(lambda: applied(dep) > total // 5, 60, 0.1, what="a fifth of the backlog applied")
    return truth, boundary, worker


def test_a_master_killed_with_its_aof_tail_cut_replays_what_it_lost_and_the_counts_are_exact(
        on_cluster: Callable[..., Deployment], cluster: RedisClusterProcs) -> None:
    # The master of bucket 0 loses the last part of its AOF, as a crash before `appendfsync everysec` would, and
    # comes back on the same port (its replica told not to take over meanwhile): its buckets' progress records
    # roll back with their effects, while the other shards' records and Kafka's commits stay ahead.
    dep = on_cluster()
    victim = cluster.serving(keys.bucket_meta(0))
    with cluster.replica_of(victim).client() as replica:
        replica.config_set("cluster-replica-no-failover", "yes")
        try:
            truth, boundary, worker = backlog_started(dep)
            assert kill_redis(victim.proc, victim.workdir, lose_tail_fraction=0.3) > 0  # type: ignore[arg-type]
            time.sleep(1)
            victim.start()
            cluster.wait_ok()
        finally:
            replica.config_set("cluster-replica-no-failover", "no")
    caught_up(dep, 120)
    judged(dep, MODELS, boundary)
    assert_exact(dep, truth, [worker.web_port])  # type: ignore[attr-defined]


def test_a_master_killed_and_its_lagging_replica_promoted_leaves_exact_counts(
        on_cluster: Callable[..., Deployment], cluster: RedisClusterProcs) -> None:
    # The replica of bucket 0's master is stopped for a while, so it falls behind; then the master dies and the
    # cluster promotes that replica, which lacks the master's last writes: a failover that loses acknowledged
    # effects, as an asynchronous replica can.
    dep = on_cluster()
    victim = cluster.serving(keys.bucket_meta(0))
    heir = cluster.replica_of(victim)
    truth, boundary, worker = backlog_started(dep)
    assert heir.proc is not None and victim.proc is not None
    os.kill(heir.proc.pid, signal.SIGSTOP)
    try:
        before = applied(dep)
        wait_for(lambda: applied(dep) > before + 2000, 60, 0.1, what="writes the stopped replica misses")
        kill_redis(victim.proc, victim.workdir)
    finally:
        os.kill(heir.proc.pid, signal.SIGCONT)
    wait_for(lambda: cluster.serving(keys.bucket_meta(0)).port == heir.port, 60, 0.5,
             what="the replica promoted")
    victim.start()  # it rejoins as the new master's replica
    cluster.wait_ok()
    caught_up(dep, 120)
    judged(dep, MODELS, boundary)
    assert_exact(dep, truth, [worker.web_port])  # type: ignore[attr-defined]
