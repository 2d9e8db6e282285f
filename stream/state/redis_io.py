"""The few things every part of the state package needs from redis-py: text/bytes of a reply, a pipeline run
that turns the restart guard's refusal into `RedisRestarted`, and the client for one node or a Redis Cluster."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from redis.exceptions import RedisClusterException, RedisError, ResponseError

from ..errors import RedisRestarted

if TYPE_CHECKING:
    import redis

    from ..settings import Settings

UNAVAILABLE = (RedisError, RedisClusterException, OSError)
"""What a Redis call raises while Redis (a node, or every node a cluster client knows) cannot answer: retried.
redis-py's cluster client raises RedisClusterException, not a RedisError, when no node it knows answers."""

REFUSAL = "TGRESTART"
"""The error every guarded script answers with on a Redis process other than the one the worker reconciled with."""

MIGRATING = "TGMIGRATING"
"""The error of a script that would touch keys of a slot being migrated (slot.lua): retried until it has moved."""


class SlotMigrating(ResponseError):
    """A bucket's slot is moving between cluster nodes; the call is retried (reconcile.with_redis) until it moved."""


def bucket_slots(settings: Settings) -> list[str]:
    """Each bucket's Redis Cluster slot, as the scripts' migration check takes it ('' on one node)."""
    from redis.crc import key_slot

    from . import keys

    if not settings.redis_cluster:
        return [""] * settings.state_buckets
    return [str(key_slot(keys.bucket_meta(b).encode())) for b in range(settings.state_buckets)]


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
        if MIGRATING in str(err):
            raise SlotMigrating(str(err)) from None
        raise


def async_client(settings: Settings) -> Any:
    """The worker's client: redis-py's asyncio RedisCluster when `redis_cluster` (each call goes to its slot's
    shard, a pipeline's calls to different shards run concurrently), else one node's client."""
    url = settings.redis_url.get_secret_value()
    if settings.redis_cluster:
        from redis.asyncio.cluster import RedisCluster

        return RedisCluster.from_url(url, socket_timeout=10, socket_connect_timeout=5)
    import redis.asyncio as aioredis

    return aioredis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=5, health_check_interval=30)


def sync_client(settings: Settings, timeout: float = 10.0) -> redis.Redis:
    """A blocking client for the CLI's reads, the same kind as `async_client`'s."""
    import redis

    url = settings.redis_url.get_secret_value()
    if settings.redis_cluster:  # the same commands, each routed to its slot's shard (typed as one node's)
        return cast(redis.Redis, redis.RedisCluster.from_url(url, socket_connect_timeout=min(timeout, 5),
                                                             socket_timeout=timeout))
    return redis.Redis.from_url(url, socket_connect_timeout=min(timeout, 5), socket_timeout=timeout)
