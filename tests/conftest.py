"""Shared fixtures: one real Apache Kafka broker and one real redis-server per test session, on free loopback
ports; for the fast lane that keeps the embedded default supported, a Tansu broker with its own redis-server; and a
real Redis Cluster for the tests about one.

The hooks below keep the `integration` marker true (tests/support/processes.py says the rule): a test that is not
marked integration may neither use the real stack's fixtures nor start a process, so `-m "not integration"`
starts none.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator
from pathlib import Path

import pytest
import redis

from stream.embedded import StackInfo, running_stack
from stream.embedded_cluster import RedisClusterProcs, redis_cluster
from tests.support import processes
from tests.support.harness import Deployment


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, None, None]:
    processes.check_fixtures(item)
    with processes.forbidden(item):
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    with processes.forbidden(item):
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Generator[None, None, None]:
    with processes.forbidden(item):
        return (yield)


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackInfo]:
    """Apache Kafka (the broker operators run) and Redis for the whole session, stopped when it ends."""
    with running_stack(tmp_path_factory.mktemp("stack"), broker="kafka") as info:
        yield info


@pytest.fixture(scope="session")
def tansu_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackInfo]:
    """Tansu, the embedded broker of `make demo`, with a Redis of its own; started by the first test that asks."""
    with running_stack(tmp_path_factory.mktemp("tansu"), broker="tansu") as info:
        yield info


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterProcs]:
    """A real Redis Cluster (3 masters, 3 replicas) for the whole session; started by the first test that asks."""
    with redis_cluster(tmp_path_factory.mktemp("cluster")) as procs:
        yield procs


@pytest.fixture
def deploy_cluster(stack: StackInfo, cluster: RedisClusterProcs, tmp_path: Path
                   ) -> Iterator[Callable[..., Deployment]]:
    """The `deploy` factory with the deployments' state on the Redis Cluster, emptied first."""
    with cluster.client() as client:
        client.flushall(target_nodes=redis.RedisCluster.PRIMARIES)
    yield from deployments(stack, tmp_path, {"TRUSTGAP_REDIS_URL": cluster.seed, "TRUSTGAP_REDIS_CLUSTER": "true"})


@pytest.fixture
def redis_client(stack: StackInfo) -> Iterator[redis.Redis]:
    """A client on the session Redis, flushed first so no test sees another's keys."""
    client = redis.Redis.from_url(stack.redis_url)
    client.flushall()
    yield client
    client.close()


@pytest.fixture
def deploy(stack: StackInfo, tmp_path: Path, redis_client: redis.Redis) -> Iterator[Callable[..., Deployment]]:
    """Factory of isolated deployments on Apache Kafka (own topics and group, settings as TRUSTGAP_* overrides);
    workers they started are stopped after the test."""
    yield from deployments(stack, tmp_path)


@pytest.fixture
def deploy_tansu(tansu_stack: StackInfo, tmp_path: Path) -> Iterator[Callable[..., Deployment]]:
    """The same factory on the Tansu stack, its Redis flushed first."""
    with redis.Redis.from_url(tansu_stack.redis_url) as client:
        client.flushall()
    yield from deployments(tansu_stack, tmp_path)


def deployments(stack: StackInfo, tmp_path: Path, base: dict[str, str] | None = None
                ) -> Iterator[Callable[..., Deployment]]:
    """Yield a factory of deployments on `stack` (with `base` TRUSTGAP_* variables), stopping their workers when
    the test is done."""
    made: list[Deployment] = []

    def make(env: dict[str, str] | None = None, **overrides: str) -> Deployment:
        """`env`: TRUSTGAP_* variables as they are; keyword overrides: `defaults__min_samples="20"` style."""
        dep = Deployment(stack, tmp_path, overrides={**(base or {}), **(env or {}),
                                                     **{f"TRUSTGAP_{k.upper()}": v for k, v in overrides.items()}})
        dep.create_topics()
        made.append(dep)
        return dep

    yield make
    for dep in made:
        dep.stop_all()
