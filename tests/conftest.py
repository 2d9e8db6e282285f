"""Shared fixtures: one real Tansu broker and one real redis-server per test session, on free loopback ports."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from stream.embedded import StackInfo, running_stack


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackInfo]:
    """A fresh broker and Redis for the whole session, stopped when it ends."""
    with running_stack(tmp_path_factory.mktemp("stack")) as info:
        yield info


@pytest.fixture
def redis_client(stack: StackInfo) -> Iterator[redis.Redis]:
    """A client on the session Redis, flushed first so no test sees another's keys."""
    client = redis.Redis.from_url(stack.redis_url)
    client.flushall()
    yield client
    client.close()
