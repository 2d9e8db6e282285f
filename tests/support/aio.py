"""Running a test's coroutine against a real Redis through a `Store` without leaking its connections, and reading
what it wrote."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

from stream.state import Store, WindowCounts, keys

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T], *stores: Store) -> T:
    """`asyncio.run(coro)`, then drop the stores' pooled connections inside the same loop.

    Each `asyncio.run` is a new event loop, and a redis.asyncio connection belongs to the loop that opened it: left
    in the pool, it is garbage-collected after its loop closed and warns (an error in this suite). The pool stays
    usable: the next run opens new connections on its own loop."""
    async def main() -> T:
        try:
            return await coro
        finally:
            for store in stores:
                if store.cluster:  # a cluster client has a pool per node; closed, it reconnects on its next use
                    await store.redis.aclose()
                else:
                    await store.redis.connection_pool.disconnect()
    return asyncio.run(main())


async def window_counts(store: Store, model: str, start: int) -> dict[tuple[str, str, str], float]:
    """A window's counts summed over buckets, without closing it: plain reads of the keys keys.py names."""
    counts = WindowCounts()
    for b in range(store.settings.state_buckets):
        reply = await store.redis.hgetall(keys.window_counts(b, model, start))
        counts.merge([x for kv in reply.items() for x in kv])
    return counts.counts
