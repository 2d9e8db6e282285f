"""The few things every part of the state package needs from redis-py: text/bytes of a reply, and a pipeline run
that turns the restart guard's refusal into `RedisRestarted`."""

from __future__ import annotations

from typing import Any

from redis.exceptions import ResponseError

from ..errors import RedisRestarted

REFUSAL = "TGRESTART"
"""The error every guarded script answers with on a Redis process other than the one the worker reconciled with."""


def as_text(value: bytes | str) -> str:
    """redis-py answers bytes (no decode_responses); its types say bytes or str."""
    return value.decode() if isinstance(value, bytes) else value


def as_bytes(value: bytes | str) -> bytes:
    return value.encode() if isinstance(value, str) else value


async def execute(pipe: Any) -> list[Any]:
    """Run a pipeline; a guard refusal anywhere in it becomes RedisRestarted."""
    try:
        return list(await pipe.execute())
    except ResponseError as err:
        if REFUSAL in str(err):
            raise RedisRestarted(str(err)) from None
        raise
