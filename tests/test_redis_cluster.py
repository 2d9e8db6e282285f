"""trustgap on a real Redis Cluster (3 masters, 3 replicas, started from Debian's redis-server and joined by
`redis-cli --cluster create`) and the real Apache Kafka: the same exact counts as on one node, with each bucket's
progress recorded in its own slot, so a shard that rolls back rolls its progress back with its effects."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from redis.crc import key_slot

from stream.embedded import StackInfo
from stream.embedded_cluster import RedisClusterProcs
from stream.events import PredictionEvent
from stream.settings import load
from stream.state import ApplyResult, Progress, Store, keys
from stream.state.redis_io import SlotMigrating
from stream.times import epoch_ms, iso_ms, utcnow
from tests.support.aio import run
from tests.support.eventtime import (HOUR_MS, MODELS, Expected, applied, assert_exact, caught_up, end_offsets,
                                     expected, judged, outage_traffic, produce, start_together)
from tests.support.faultstack import aof_mark, kill_redis
from tests.support.harness import Deployment, wait_for

pytestmark = pytest.mark.integration


def spread(cluster: RedisClusterProcs, buckets: int) -> dict[str, int]:
    """How many of the buckets each master serves."""
    with cluster.client() as client:
        out: dict[str, int] = {}
        for b in range(buckets):
            name = client.get_node_from_key(keys.bucket_meta(b)).name
            out[name] = out.get(name, 0) + 1
    return out


def test_an_hours_outage_backlog_is_counted_exactly_by_two_workers_on_a_redis_cluster(
        deploy_cluster: Callable[..., Deployment], cluster: RedisClusterProcs) -> None:
    # both workers vouch for their partitions in every bucket, and each bucket's record is the minimum's input
    dep = deploy_cluster()
    assert len(spread(cluster, dep.settings.state_buckets)) == 3  # the buckets' state is on every master
    traffic, boundary = outage_traffic(143)
    truth = expected(traffic)
    assert len(truth.starts) == 2 and truth.predictions_in(boundary - HOUR_MS) > 15_000
    produce(dep, traffic.in_time_order())
    procs = start_together(dep, 2)
    counted_exactly(dep, truth, boundary, [p.web_port for p in procs])  # type: ignore[attr-defined]
    # `trustgap status` reads the same cluster: every model, and no lag once every bucket's record is at the end
    status = subprocess.run([sys.executable, "-m", "stream.cli", "status", "--json", "--no-alerts"],
                            env={**os.environ, **dep.env}, capture_output=True, text=True, timeout=120)
    assert status.returncode == 0, status.stderr
    doc = orjson.loads(status.stdout)
    assert sorted(m["model"] for m in doc["models"]) == sorted(MODELS)
    lag = doc["consumer_lag"]
    assert lag["unknown"] is None and set(lag["topics"].values()) == {0}, lag


# --- a shard that rolls back --------------------------------------------------------------------------------------

def counted_exactly(dep: Deployment, truth: Expected, boundary: int, ports: list[int]) -> None:
    """Once the workers on `ports` caught up and judged the first window: every count exact, nothing late."""
    caught_up(dep, 120)
    judged(dep, MODELS, boundary)
    assert_exact(dep, truth, ports)


def backlog_started(dep: Deployment) -> tuple[Expected, int, subprocess.Popen[bytes]]:
    """An hour's outage backlog (4 predictions/s: ~40k messages) produced and a worker catching up on it, a fifth
    of it applied: the truth, the first window's end, the worker."""
    traffic, boundary = outage_traffic(161, rate=4.0)
    truth = expected(traffic)
    produce(dep, traffic.in_time_order())
    total = sum(end_offsets(dep).values())
    worker = dep.start_worker()
    wait_for(lambda: applied(dep) > total // 5, 60, 0.1, what="a fifth of the backlog applied")
    return truth, boundary, worker


def test_a_master_killed_with_its_aof_tail_cut_replays_what_it_lost_and_the_counts_are_exact(
        deploy_cluster: Callable[..., Deployment], cluster: RedisClusterProcs) -> None:
    # The master of bucket 0 loses the last part of its AOF, as a crash before `appendfsync everysec` would, and
    # comes back on the same port (its replica told not to take over meanwhile): its buckets' progress records
    # roll back with their effects, while the other shards' records and Kafka's commits stay ahead.
    dep = deploy_cluster()
    victim = cluster.serving(keys.bucket_meta(0))
    with cluster.replica_of(victim).client() as replica:
        replica.config_set("cluster-replica-no-failover", "yes")
        try:
            mark = aof_mark(victim.workdir)
            truth, boundary, worker = backlog_started(dep)
            assert kill_redis(victim.proc, victim.workdir, 0.3, since=mark) > 0  # type: ignore[arg-type]
            time.sleep(1)
            victim.start()
            cluster.wait_ok()
        finally:
            replica.config_set("cluster-replica-no-failover", "no")
    counted_exactly(dep, truth, boundary, [worker.web_port])  # type: ignore[attr-defined]


def test_a_master_killed_and_its_lagging_replica_promoted_leaves_exact_counts(
        deploy_cluster: Callable[..., Deployment], cluster: RedisClusterProcs) -> None:
    # The replica of bucket 0's master is stopped for a while, so it falls behind; then the master dies and the
    # cluster promotes that replica, which lacks the master's last writes: a failover that loses acknowledged
    # effects, as an asynchronous replica can.
    dep = deploy_cluster()
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
    counted_exactly(dep, truth, boundary, [worker.web_port])  # type: ignore[attr-defined]


# --- slots moving while traffic flows -----------------------------------------------------------------------------

def test_slots_resharded_while_a_backlog_is_applied_leave_exact_counts(
        deploy_cluster: Callable[..., Deployment], cluster: RedisClusterProcs) -> None:
    # While the worker catches up, bucket 0's slot moves to another master key by key, slowly, as large keys take
    # a while to move (for that while some of its keys are on each node, and a script that touches keys it does
    # not name must run on neither side); then `redis-cli --cluster reshard` moves every other slot of that master.
    dep = deploy_cluster()
    source = cluster.serving(keys.bucket_meta(0))
    target = next(n for n in cluster.masters() if n.port != source.port)
    slots = cluster.slots_of(source)
    truth, boundary, worker = backlog_started(dep)
    try:
        moved = cluster.migrate_slot(key_slot(keys.bucket_meta(0).encode()), source, target, pause=0.6)
        assert moved >= 5, moved  # its meta, progress record, contexts, windows, ...: half moved for a while
        cluster.reshard(source, target, slots - 1)
        wait_for(lambda: cluster.slots_of(source) == 0, 30, 0.2, what="every slot moved")
        counted_exactly(dep, truth, boundary, [worker.web_port])  # type: ignore[attr-defined]
    finally:
        cluster.reshard(target, source, slots)  # the next test finds the buckets on every master again


def test_a_bucket_whose_slot_is_moving_is_written_on_neither_node_until_it_has_moved(
        cluster: RedisClusterProcs) -> None:
    # deterministic, where the reshard test above meets the migration when it happens to
    with cluster.client() as client:
        client.flushall(target_nodes=redis.RedisCluster.PRIMARIES)
    store = Store.from_settings(load(None, redis_url=cluster.seed, redis_cluster=True, state_buckets=4))
    pid = "p-1"
    meta = keys.bucket_meta(keys.bucket_of(pid, 4))
    slot = key_slot(meta.encode())
    source = cluster.serving(meta)
    target = next(n for n in cluster.masters() if n.port != source.port)
    now = epoch_ms(utcnow())

    def apply() -> ApplyResult:
        event = PredictionEvent.model_validate({"schema_version": 1, "event_id": "e1", "prediction_id": pid,
                                                "model": "m", "model_version": "v1", "ts": iso_ms(now), "label": "a"})
        return run(store.apply([event], Progress({("predictions", 0): 1}, {("predictions", 0): now}), now), store)

    def everywhere(*command: Any) -> None:
        for node in cluster.masters():
            with node.client() as c:
                c.execute_command(*command)

    assert apply().applied == 1
    # every key the script names exists, else Redis itself answers TRYAGAIN while the slot moves
    with cluster.client() as client:
        client.zadd(keys.bucket_pending(keys.bucket_of(pid, 4)), {"nobody": 1e15})
    with target.client() as dst, source.client() as src:
        dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", source.node_id())
        src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", target.node_id())
        try:
            with pytest.raises(SlotMigrating):  # the bucket's keys are still on the source: it runs there, refuses
                apply()
            while batch := src.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100):
                src.execute_command("MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "KEYS", *batch)
            with pytest.raises(SlotMigrating):  # moved: asked over to the importing target, which refuses too
                apply()
        finally:
            everywhere("CLUSTER", "SETSLOT", slot, "NODE", target.node_id())
    assert apply().duplicates == 1  # on the target now, with everything the source had


# --- the setting that says so -------------------------------------------------------------------------------------

def test_a_cluster_node_named_without_redis_cluster_and_the_reverse_stop_the_worker_with_the_setting_to_change(
        cluster: RedisClusterProcs, stack: StackInfo, tmp_path: Path) -> None:
    def worker(**env: str) -> subprocess.CompletedProcess[str]:
        dep = Deployment(stack, tmp_path, overrides=env)
        return subprocess.run([sys.executable, "-m", "stream.cli", "worker"], env={**os.environ, **dep.env},
                              capture_output=True, text=True, timeout=120)

    plain = worker(TRUSTGAP_REDIS_URL=cluster.seed)
    assert plain.returncode == 2, plain.stderr
    assert plain.stderr.strip().splitlines() == [
        f"trustgap: redis at {cluster.seed.removeprefix('redis://').removesuffix('/0')} is a Redis Cluster node; "
        "set TRUSTGAP_REDIS_CLUSTER=true (redis_url names one node, the seed)"]
    clustered = worker(TRUSTGAP_REDIS_CLUSTER="true")  # the session's single redis-server
    assert clustered.returncode == 2, clustered.stderr
    assert "is not a Redis Cluster node but redis_cluster is set" in clustered.stderr
    assert len(clustered.stderr.strip().splitlines()) == 1, clustered.stderr
