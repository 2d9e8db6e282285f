"""One redis-server against a 3-master Redis Cluster, side by side in one run: `python -m bench.cluster`.

Two measurements, each on one node, on a cluster of one master (the cluster path on the same single redis-server:
what the cluster's bookkeeping costs) and on a cluster of 3 masters (no replicas: a replica would double every
write on this machine's two cores):
- Redis alone, no broker: `Store.apply` of N predictions in chunks of the default `take_max`, as a worker applies
  them; the predictions/s of that loop, Redis's main-thread CPU per prediction (in all, and per master) and the
  bytes per prediction (used_memory, summed over the masters).
- A real worker on Apache Kafka: N predictions in batched messages on a 4-partition topic, read by one
  `trustgap worker`; events/s from its first progress to the last offset, read from Redis as the worker wrote it.

Both Redis setups run on the same two cores as the worker and the broker, so the figures compare the two setups
here; they do not show a cluster's scale-out, which needs a core per master (docs/operations.md, Sizing, says how
to read them).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import redis

from bench.data import encode_batched, predictions
from bench.topics import BATCH, create_topic, produce
from bench.workers import _http_ok, wait_for
from stream.embedded import StackInfo, free_port, running_stack
from stream.embedded import stop as stop_process
from stream.embedded_cluster import RedisClusterProcs, redis_cluster
from stream.events import PredictionEvent
from stream.overview import read_applied
from stream.settings import Settings, load
from stream.state import Progress, Store


def masters_of(url: str, cluster: bool) -> list[redis.Redis]:
    """A client on each master (the one node, or every master of the cluster)."""
    if not cluster:
        return [redis.Redis.from_url(url)]
    with redis.RedisCluster.from_url(url) as c:
        return [redis.Redis(host=n.host, port=n.port) for n in c.get_primaries()]


def cpu_seconds(client: redis.Redis) -> float:
    cpu = client.info("cpu")
    return float(cpu["used_cpu_user_main_thread"]) + float(cpu["used_cpu_sys_main_thread"])


def flush(url: str, cluster: bool) -> None:
    for m in masters_of(url, cluster):
        m.flushall()
        m.close()


async def apply_loop(settings: Settings, n: int) -> float:
    """Apply n predictions through Store.apply in take_max chunks; returns the seconds it took."""
    store = Store.from_settings(settings)
    now = int(time.time() * 1000)
    events = [PredictionEvent.model_validate(e) for e in predictions(n, seed=11, step_ms=1)]
    await store.apply(events[:1], Progress(), now)  # scripts cached, bucket keys made
    t0 = time.perf_counter()
    for i in range(1, n, settings.take_max):
        # each chunk claims four partitions, as one from a 4-partition topic does (on a cluster: in every bucket
        # it touches)
        claims = Progress({("bench", p): i for p in range(4)}, {("bench", p): now for p in range(4)})
        await store.apply(events[i:i + settings.take_max], claims, now)
    elapsed = time.perf_counter() - t0
    await store.close()
    return elapsed


def redis_alone(url: str, cluster: bool, n: int) -> dict[str, Any]:
    flush(url, cluster)
    masters = masters_of(url, cluster)
    mem0 = [int(m.info("memory")["used_memory"]) for m in masters]
    cpu0 = [cpu_seconds(m) for m in masters]
    elapsed = asyncio.run(apply_loop(load(None, redis_url=url, redis_cluster=cluster), n))
    cpu = [(cpu_seconds(m) - c) * 1e6 / n for m, c in zip(masters, cpu0, strict=True)]
    mem = sum(int(m.info("memory")["used_memory"]) - b for m, b in zip(masters, mem0, strict=True)) / n
    for m in masters:
        m.close()
    flush(url, cluster)
    return {"rate": n / elapsed, "cpu_us": cpu, "bytes": mem}


def worker_rate(stack: StackInfo, url: str, cluster: bool, n: int, logdir: Path) -> float:
    """Events/s of one worker catching up on n predictions already on a fresh topic."""
    flush(url, cluster)
    name = f"bench-{uuid.uuid4().hex[:8]}"
    topic = f"{name}.predictions"
    create_topic(stack, topic)
    produce(stack, topic, encode_batched(predictions(n, seed=5), BATCH))
    topics = {f"TRUSTGAP_TOPICS__{t.upper()}": f"{name}.{t}"
              for t in ("predictions", "actions", "outcomes", "annotations", "alerts", "dlq")}
    env = {**os.environ, **topics, "TRUSTGAP_BROKER_URL": stack.broker_url, "TRUSTGAP_REDIS_URL": url,
           "TRUSTGAP_REDIS_CLUSTER": "true" if cluster else "false", "TRUSTGAP_APP_ID": name,
           "TRUSTGAP_TOPIC_PARTITIONS": "4"}
    settings = load(None, redis_url=url, redis_cluster=cluster, topics={"predictions": topic})

    def applied() -> int:
        return sum(v for (t, _), v in read_applied(settings).items() if t == topic)

    port = free_port()
    with (logdir / f"{name}.log").open("ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "stream.cli", "worker", "--loglevel", "warning"],
                                env={**env, "TRUSTGAP_WEB_PORT": str(port)}, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        wait_for(lambda: _http_ok(port) or proc.poll() is not None, 90, "worker web endpoint", 0.1)
        messages = -(-n // BATCH)
        first = wait_for(applied, 300, "the worker's first batch")
        t0 = time.perf_counter()
        wait_for(lambda: applied() >= messages, 900, "every message applied")
        return (messages - first) * BATCH / (time.perf_counter() - t0)
    finally:
        stop_process(proc, 20)
        flush(url, cluster)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cluster", description=__doc__.splitlines()[0])
    parser.add_argument("--predictions", type=int, default=200_000, help="for the Redis-alone runs")
    parser.add_argument("--events", type=int, default=300_000, help="for the worker runs")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        with running_stack(work / "stack", broker="kafka") as stack, \
                redis_cluster(work / "solo", masters=1, replicas=0) as solo, \
                redis_cluster(work / "cluster", masters=3, replicas=0) as procs:
            report(stack, solo, procs, args.predictions, args.events, work)
    return 0


def report(stack: StackInfo, solo: RedisClusterProcs, procs: RedisClusterProcs, n: int, events: int,
           logdir: Path) -> None:
    # the 1-master cluster runs the cluster path (records per bucket, vouching, the per-master guard, the
    # migration check) on one redis-server: its cost against the one-node path, with nothing else different
    setups = {"one node": (stack.redis_url, False), "cluster, 1 master": (solo.seed, True),
              "cluster, 3 masters": (procs.seed, True)}
    alone = {k: redis_alone(url, c, n) for k, (url, c) in setups.items()}
    print(f"Redis alone: Store.apply of {n:,} predictions in chunks of {Settings().take_max}")
    for k, r in alone.items():
        shards = " + ".join(f"{c:.1f}" for c in r["cpu_us"])
        print(f"  {k:>20}: {r['rate']:>9,.0f} predictions/s; Redis CPU {sum(r['cpu_us']):.1f} µs/prediction "
              f"({shards} per master); {r['bytes']:.0f} B/prediction")
    node = alone["one node"]
    for k, r in list(alone.items())[1:]:
        print(f"  {k} / one node: rate {r['rate'] / node['rate']:.2f}x, Redis CPU "
              f"{sum(r['cpu_us']) / sum(node['cpu_us']):.2f}x, bytes {r['bytes'] / node['bytes']:.2f}x")
    rates = {k: worker_rate(stack, url, c, events, logdir) for k, (url, c) in setups.items()}
    print(f"One worker on Apache Kafka: {events:,} predictions in messages of {BATCH}")
    for k, r in rates.items():
        print(f"  {k:>20}: {r:>9,.0f} events/s")
    for k in list(rates)[1:]:
        print(f"  {k} / one node: {rates[k] / rates['one node']:.2f}x")


if __name__ == "__main__":
    raise SystemExit(main())
