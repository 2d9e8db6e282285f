"""Label cardinality caps: producer-chosen names beyond their caps count as `__other__`, kept in Redis sets."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest
import redis

from stream.state import keys
from stream.events import PredictionEvent
from stream.settings import Settings
from stream.state import OTHER, Progress, Store

pytestmark = pytest.mark.integration


def prediction(i: int, model: str, segment: dict[str, str], version: str = "v1") -> PredictionEvent:
    return PredictionEvent.model_validate({
        "schema_version": 1, "event_id": f"e{i}", "prediction_id": f"p{i}", "model": model,
        "model_version": version, "ts": "2026-11-20T00:10:00Z", "label": "a", "band": "low", "segment": segment})


def apply(url: str, events: list[PredictionEvent], **caps: int) -> Any:
    async def go() -> Any:
        store = Store.from_settings(Settings(redis_url=url, **caps))  # type: ignore[arg-type]
        try:
            return await store.apply(events, Progress(), 0)
        finally:
            await store.close()
    return asyncio.run(go())


def scopes(client: redis.Redis, model: str, settings: Settings) -> Counter[str]:
    """Predictions counted per scope of `model` over all buckets (version v1, counter n)."""
    out: Counter[str] = Counter()
    for b in range(settings.state_buckets):
        for field, n in client.hgetall(keys.window_counts(b, model, 1795132800000)).items():
            version, scope, counter = field.decode().split("|")
            if counter == "n":
                out[scope] += int(n)
    return out


def test_segment_values_over_the_cap_count_as_other_and_are_counted_in_a_metric(
        stack: Any, redis_client: redis.Redis) -> None:
    # 10 regions, cap 3: the first three seen keep their names, the other seven events fall into __other__.
    events = [prediction(i, "m", {"region": f"r{i}"}) for i in range(10)]
    res = apply(stack.redis_url, events, max_label_values=3)
    got = scopes(redis_client, "m", Settings())
    assert got == Counter({"": 10, "band=low": 10, "region=r0": 1, "region=r1": 1, "region=r2": 1,
                           f"region={OTHER}": 7})
    assert res.overflow["value"] == 7
    assert redis_client.scard(keys.model_label_values("m", "s:region")) == 3


def test_caps_hold_across_workers_because_admitted_values_live_in_redis(
        stack: Any, redis_client: redis.Redis) -> None:
    # Two separate Store instances (two workers) share the cap: the second cannot admit a fourth value.
    apply(stack.redis_url, [prediction(i, "m", {"region": f"r{i}"}) for i in range(3)], max_label_values=3)
    res = apply(stack.redis_url, [prediction(3, "m", {"region": "r3"}), prediction(4, "m", {"region": "r0"})],
                max_label_values=3)
    assert res.overflow["value"] == 1
    assert scopes(redis_client, "m", Settings())[f"region={OTHER}"] == 1


def test_models_and_dimensions_over_their_caps_collapse_into_one_other_scope(
        stack: Any, redis_client: redis.Redis) -> None:
    events = [prediction(i, f"model{i}", {"a": "1"}) for i in range(4)]          # 4 models, cap 2
    events.append(prediction(9, "model0", {"a": "1", "b": "2", "c": "3", "d": "4"}))  # 4 dimensions, cap 2
    res = apply(stack.redis_url, events, max_models=2, max_dimensions=2)
    assert res.overflow["model"] == 2
    assert res.overflow["dimension"] == 2
    assert {m.decode() for m in redis_client.smembers(keys.MODELS)} == {"model0", "model1", OTHER}
    got = scopes(redis_client, "model0", Settings())
    # c and d are over the dimension cap; the prediction counts once in __other__=__other__, not twice.
    assert got[f"{OTHER}={OTHER}"] == 1
    assert got["a=1"] == 2 and got["b=2"] == 1
    assert scopes(redis_client, OTHER, Settings())[""] == 2


def test_a_worker_asks_redis_only_about_label_values_it_has_not_seen_admitted(
        stack: Any, redis_client: redis.Redis) -> None:
    # Batch 1 admits r0..r2 (cap 3) and caps r3; batch 2 repeats r0..r2 plus r3: only r3, never admitted, is
    # asked again (one admission call, for that pair alone), and the counts are the same as without memory.
    def admission_calls() -> int:
        stats = redis_client.info("commandstats")
        return int(stats.get("cmdstat_eval", {}).get("calls", 0))

    async def go() -> tuple[int, int, Counter[str], Counter[str]]:
        store = Store.from_settings(Settings(redis_url=stack.redis_url, max_label_values=3))
        try:
            first = [prediction(i, "m", {"region": f"r{i % 4}"}) for i in range(8)]
            r1 = await store.apply(first, Progress(), 0)
            before = admission_calls()
            await store.admit([prediction(100 + i, "m", {"region": f"r{i}"}) for i in range(3)])
            known_only = admission_calls() - before
            before = admission_calls()
            _, overflow = await store.admit([prediction(200 + i, "m", {"region": f"r{i}"}) for i in range(4)])
            with_capped = admission_calls() - before
            return known_only, with_capped, r1.overflow, overflow
        finally:
            await store.close()

    known_only, with_capped, first_overflow, second_overflow = asyncio.run(go())
    assert known_only == 0
    assert with_capped == 1
    assert first_overflow["value"] == 2   # r3 twice in the first batch
    assert second_overflow["value"] == 1  # r3 still capped
