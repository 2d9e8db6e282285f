"""Running a test's coroutine against a real Redis through a `Store`, without leaking its connections."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

from stream.state import Store

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
                await store.redis.connection_pool.disconnect()
    return asyncio.run(main())
