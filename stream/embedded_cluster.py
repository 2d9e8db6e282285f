"""A real Redis Cluster on loopback from Debian's redis-server: masters and replicas started with
`--cluster-enabled yes`, joined by `redis-cli --cluster create`, for the tests and the benchmark.

Each node keeps its AOF and its `nodes.conf` in its own directory, so a node killed and started again on the same
port rejoins the cluster as itself (with whatever its AOF kept).
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import redis

from .embedded import free_port, start_redis, stop
from .errors import EmbeddedError

NODE_TIMEOUT_MS = 2000
"""How long a master may be unreachable before its replica takes over (`cluster-node-timeout`): short, so a
failover happens within seconds in a test, as operators tune it for a fast failover."""


@dataclass
class ClusterNode:
    port: int
    workdir: Path
    bus_port: int = field(default_factory=free_port)  # named, not port + 10000, which may be taken or past 65535
    proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=5, socket_connect_timeout=2)

    def node_id(self) -> str:
        with self.client() as c:
            return str(c.execute_command("CLUSTER", "MYID").decode())

    def start(self) -> None:
        self.proc = start_redis(self.port, self.workdir, self.workdir / "redis.log", appendonly=True, extra=(
            "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-port", str(self.bus_port),
            "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
            # a master whose slots all moved away stays a master (by default it turns into a replica of the master
            # that took its last slot), so slots can move back to it
            "--cluster-allow-replica-migration", "no"))

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)


@dataclass
class RedisClusterProcs:
    """The nodes of one cluster; `seed` names a live one for a client's first contact."""

    nodes: list[ClusterNode] = field(default_factory=list)

    @property
    def seed(self) -> str:
        live = next(n for n in self.nodes if n.proc is not None and n.proc.poll() is None)
        return f"redis://{live.address}/0"

    def client(self) -> redis.RedisCluster:
        """A cluster client that knows every live node (any one of them may be down for a test)."""
        live = [redis.cluster.ClusterNode("127.0.0.1", n.port) for n in self.nodes  # type: ignore[no-untyped-call]
                if n.proc is not None and n.proc.poll() is None]
        return redis.RedisCluster(startup_nodes=live, socket_timeout=5, socket_connect_timeout=2)

    def serving(self, key: str) -> ClusterNode:
        """The master that serves `key`'s slot now."""
        with self.client() as client:
            port = client.get_node_from_key(key).port
        return next(n for n in self.nodes if n.port == port)

    def replica_of(self, master: ClusterNode) -> ClusterNode:
        with master.client() as c:
            port = int(c.info("replication")["slave0"]["port"])
        return next(n for n in self.nodes if n.port == port)

    def slots_of(self, master: ClusterNode) -> int:
        """How many slots `master` serves."""
        with self.client() as client:
            return sum(1 for nodes in client.nodes_manager.slots_cache.values() if nodes[0].port == master.port)

    def reshard(self, source: ClusterNode, target: ClusterNode, slots: int) -> str:
        """`redis-cli --cluster reshard`: move `slots` slots from `source` to `target` as an operator would (keys
        ten at a time, its default), returning its output."""
        self.wait_agreed()
        out = subprocess.run(["redis-cli", "--cluster", "reshard", source.address, "--cluster-from", source.node_id(),
                              "--cluster-to", target.node_id(), "--cluster-slots", str(slots), "--cluster-yes"],
                             capture_output=True, text=True, timeout=300, check=False)
        if out.returncode != 0:
            raise EmbeddedError(f"redis-cli --cluster reshard failed: {out.stdout[-500:]} {out.stderr[-500:]}")
        return out.stdout

    def wait_agreed(self, timeout: float = 30) -> None:
        """Until `redis-cli --cluster check` finds every node agreeing on the slots (gossip spreads a move after it
        is made; redis-cli refuses to reshard before)."""
        deadline = time.monotonic() + timeout
        while True:
            live = next(n for n in self.nodes if n.proc is not None and n.proc.poll() is None)
            out = subprocess.run(["redis-cli", "--cluster", "check", live.address], capture_output=True, text=True,
                                 timeout=60, check=False)
            if out.returncode == 0 and "[OK] All nodes agree" in out.stdout:
                return
            if time.monotonic() > deadline:
                raise EmbeddedError(f"the cluster's nodes did not agree within {timeout:g} s: {out.stdout[-500:]}")
            time.sleep(0.2)

    def migrate_slot(self, slot: int, source: ClusterNode, target: ClusterNode, pause: float) -> int:
        """Move one slot the way `redis-cli --cluster reshard --cluster-pipeline 1` does (mark it importing and
        migrating, MIGRATE its keys one at a time, then give it to `target`), pausing after each key as moving a
        large key (a context hash of millions of predictions) takes a while; returns the keys moved."""
        source_id, target_id = source.node_id(), target.node_id()
        moved = 0
        with source.client() as src, target.client() as dst:
            dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
            src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
            while batch := src.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 1):
                src.execute_command("MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "KEYS", *batch)
                moved += len(batch)
                time.sleep(pause)
        for node in self.masters():
            with node.client() as c:
                c.execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)
        return moved

    def masters(self) -> list[ClusterNode]:
        return [n for n in self.nodes if n.proc is not None and n.proc.poll() is None and _role(n) == "master"]

    def wait_ok(self, timeout: float = 30) -> None:
        """Until every live node says `cluster_state:ok` and all 16384 slots are served."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                states = [_info(n) for n in self.nodes if n.proc is not None and n.proc.poll() is None]
                if all(s.get("cluster_state") == "ok" and s.get("cluster_slots_ok") == "16384" for s in states):
                    return
            except redis.RedisError:
                pass
            if time.monotonic() > deadline:
                raise EmbeddedError(f"the redis cluster did not settle within {timeout:g} s")
            time.sleep(0.1)

    def stop(self) -> None:
        for n in self.nodes:
            n.stop()


def _info(node: ClusterNode) -> dict[str, str]:
    with node.client() as c:
        text = c.execute_command("CLUSTER", "INFO")
    text = text.decode() if isinstance(text, bytes) else text
    return dict(line.split(":", 1) for line in text.split() if ":" in line)


def _role(node: ClusterNode) -> str:
    try:
        with node.client() as c:
            return str(c.info("replication")["role"])
    except redis.RedisError:
        return "down"


def start_cluster(workdir: Path, masters: int = 3, replicas: int = 1) -> RedisClusterProcs:
    """Start masters * (1 + replicas) nodes on free loopback ports and join them into a cluster (one master alone
    takes every slot itself: `redis-cli --cluster create` wants three)."""
    cli = shutil.which("redis-cli")
    if cli is None:
        raise EmbeddedError("redis-cli is not on PATH. Operator action: apt-get install -y redis-tools")
    procs = RedisClusterProcs()
    try:
        for i in range(masters * (1 + replicas)):
            node = ClusterNode(free_port(), workdir / f"node{i}")
            node.start()
            procs.nodes.append(node)
        if masters * (1 + replicas) == 1:
            with procs.nodes[0].client() as c:
                c.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 16383)
            procs.wait_ok()
            return procs
        out = subprocess.run([cli, "--cluster", "create", *(n.address for n in procs.nodes),
                              "--cluster-replicas", str(replicas), "--cluster-yes"],
                             capture_output=True, text=True, timeout=60, check=False)
        if out.returncode != 0:
            raise EmbeddedError(f"redis-cli --cluster create failed: {out.stdout[-500:]} {out.stderr[-500:]}")
        procs.wait_ok()
    except BaseException:
        procs.stop()
        raise
    return procs


@contextlib.contextmanager
def redis_cluster(workdir: Path, masters: int = 3, replicas: int = 1) -> Iterator[RedisClusterProcs]:
    procs = start_cluster(workdir, masters, replicas)
    try:
        yield procs
    finally:
        procs.stop()
