"""Feature statistics in the real Redis: exact despite duplicates and replays, capped, mergeable over buckets."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from datetime import datetime, timedelta, timezone
from typing import Any

import orjson
import pytest

from stream.embedded import StackInfo
from stream.events import PredictionEvent
from stream.settings import Settings
from stream.state import Progress, Store

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 20, tzinfo=timezone.utc)
HOUR_MS = 3600 * 1000
START = int(T0.timestamp() * 1000)


def prediction(i: int, features: dict[str, Any] | None, minutes: float = 0.0, model: str = "claims"
               ) -> PredictionEvent:
    return PredictionEvent.model_validate({
        "schema_version": 1, "event_id": f"e{i}", "prediction_id": f"p{i}", "model": model, "model_version": "v1",
        "ts": (T0 + timedelta(minutes=minutes)).isoformat(), "label": "a", "features": features})


def run(stack: StackInfo, steps: Any, **settings: Any) -> Any:
    async def go() -> Any:
        store = Store.from_settings(Settings(redis_url=stack.redis_url, state_buckets=4, **settings))
        try:
            return await steps(store)
        finally:
            await store.close()
    return asyncio.run(go())


def test_window_statistics_are_exact_despite_duplicates_and_replayed_batches(stack: StackInfo,
                                                                              redis_client: Any) -> None:
    rng = random.Random(3)
    events = []
    for i in range(400):
        f: dict[str, Any] = {"age": float(rng.randint(18, 80)),
                             "country": rng.choice(["DE", "DE", "DE", "US", "FR"])}
        roll = rng.random()
        if roll < 0.2:
            f["income"] = None          # sent as null
        elif roll < 0.3:
            pass                        # absent
        else:
            f["income"] = round(rng.uniform(1000, 90000), 2)
        events.append(prediction(i, f, minutes=rng.uniform(0, 59.9)))
    copies = [e for e in events if rng.random() < 0.25]

    async def steps(store: Store) -> Any:
        first = events[:250]
        await store.apply(first, Progress(), 0)
        await store.apply(first, Progress(), 0)                      # the whole batch replayed after a "crash"
        await store.apply(events[250:] + copies, Progress(), 0)      # and duplicates mixed into the next one
        return await store.features.read("claims", START)

    n, stats = run(stack, steps)
    assert n == 400
    incomes = [e.features["income"] for e in events if e.features and e.features.get("income") is not None]
    ages = [e.features["age"] for e in events if e.features]
    inc = stats["income"]
    assert (inc.n, inc.values, inc.strings) == (400, len(incomes), 0)
    assert inc.explicit_nulls == sum(1 for e in events if e.features and "income" in e.features
                                     and e.features["income"] is None)
    assert inc.null_rate == (400 - len(incomes)) / 400
    assert inc.total == pytest.approx(sum(incomes), rel=1e-12)
    assert inc.squares == pytest.approx(sum(x * x for x in incomes), rel=1e-12)
    assert (inc.lo, inc.hi) == (min(incomes), max(incomes))
    assert abs(stats["age"].distinct - len(set(ages))) <= 1  # HyperLogLog: exact enough at this cardinality
    country = stats["country"]
    truth = Counter(e.features["country"] for e in events if e.features)
    assert (country.strings, country.top_value, country.top_count) == (400, "DE", truth["DE"])
    assert country.distinct == 3


def feature_hashes(client: Any) -> dict[bytes, dict[bytes, bytes]]:
    """Every feature statistics and top-value hash in Redis (keys.feature_stats, keys.feature_top)."""
    return {k: client.hgetall(k) for k in client.keys("*") if b":f:" in k or b":fv:" in k}


def test_a_group_with_duplicates_is_counted_one_by_one_to_the_same_statistics(stack: StackInfo,
                                                                              redis_client: Any) -> None:
    # The apply script adds a group's summary (one model's predictions of one window in a bucket) whole when it newly
    # stored every prediction of it, and summarises the new ones itself when some were duplicates: both paths must
    # end in the same hashes. Two windows, four buckets, numbers, strings (one cut), nulls and absent features.
    rng = random.Random(5)
    events = []
    for i in range(300):
        f: dict[str, Any] = {"n": rng.choice([float(rng.randint(-50, 50)), None]),
                             "s": rng.choice(["a", "b", "c", "é" * 200 + str(rng.randint(0, 1))])}
        if rng.random() < 0.2:
            del f["n"]
        events.append(prediction(i, f, minutes=rng.uniform(0, 119.9)))
    some = [e for e in events if rng.random() < 0.3]

    async def at_once(store: Store) -> Any:
        return (await store.apply(events, Progress(), 0)).applied

    async def after_some(store: Store) -> Any:
        await store.apply(some, Progress(), 0)
        return (await store.apply(events, Progress(), 0)).applied

    assert run(stack, at_once) == 300
    whole = feature_hashes(redis_client)
    redis_client.flushall()
    assert run(stack, after_some) == 300 - len(some)
    parts = feature_hashes(redis_client)
    assert len(whole) == 2 * 4 * 2  # (statistics + the string feature's tops) per window and bucket
    assert parts.keys() == whole.keys()
    for key, fields in whole.items():
        assert parts[key].keys() == fields.keys(), key
        for name, value in fields.items():  # the sums are added in another order: equal up to rounding
            assert float(parts[key][name]) == pytest.approx(float(value), rel=1e-12), (key, name)


def test_a_batch_whose_sums_overflow_is_still_counted(stack: StackInfo, redis_client: Any) -> None:
    # Squares beyond a double's range cannot travel in the worker's summary (JSON has no infinity): the script
    # counts those snapshots itself, as it would any value.
    async def steps(store: Store) -> Any:
        await store.apply([prediction(0, {"x": 1e200}), prediction(1, {"x": 2e200}), prediction(2, {"x": None})],
                          Progress(), 0)
        return await store.features.read("claims", START)

    n, stats = run(stack, steps)
    assert (n, stats["x"].values, stats["x"].explicit_nulls, stats["x"].hi) == (3, 2, 1, 2e200)
    assert stats["x"].total == pytest.approx(3e200)


def test_space_saving_keeps_the_top_value_among_many_distinct_strings(stack: StackInfo, redis_client: Any) -> None:
    # 60% one value, the rest spread over 200 others: more than FEATURE_TOP_K distinct per bucket
    rng = random.Random(4)
    events = [prediction(i, {"merchant": "acme" if rng.random() < 0.6 else f"m{rng.randint(0, 199)}"},
                         minutes=i * 0.05) for i in range(1000)]
    truth = sum(1 for e in events if e.features and e.features["merchant"] == "acme")

    async def steps(store: Store) -> Any:
        await store.apply(events, Progress(), 0)
        return await store.features.read("claims", START)

    _, stats = run(stack, steps)
    m = stats["merchant"]
    assert m.top_value == "acme"
    # Space-Saving over-counts by at most strings/k per bucket, and never under-counts
    assert truth <= m.top_count <= truth + 1000 / 16
    assert 150 < m.distinct < 250


def test_features_beyond_the_cap_are_counted_not_tracked(stack: StackInfo, redis_client: Any) -> None:
    events = [prediction(0, {"a": 1.0, "b": 2.0}), prediction(1, {"a": 1.0, "b": 2.0, "c": 3.0, "d": "x"}),
              prediction(2, {"c": 3.0, "e": None, "secret": "s"})]

    async def steps(store: Store) -> Any:
        results = [await store.apply([e], Progress(), 0) for e in events]
        return [r.untracked_features for r in results], await store.features.read("claims", START)

    untracked, (n, stats) = run(stack, steps, defaults={"max_features": 2, "features_deny": ["secret"]})
    # a and b came first; c, d and e are over the cap (counted once per value); denied `secret` is not news
    assert untracked == [{}, {"claims": 2}, {"claims": 2}]
    assert n == 3
    assert sorted(stats) == ["a", "b"]
    assert stats["a"].null_rate == pytest.approx(1 / 3)


def test_a_model_without_features_keeps_no_feature_keys(stack: StackInfo, redis_client: Any) -> None:
    async def steps(store: Store) -> Any:
        await store.apply([prediction(i, None) for i in range(20)], Progress(), 0)
        return await store.features.read("claims", START)

    assert run(stack, steps) == (0, {})
    assert [k for k in redis_client.keys("*") if b":f" in k] == []


def test_a_prediction_without_features_counts_as_missing_every_tracked_feature(stack: StackInfo,
                                                                               redis_client: Any) -> None:
    # One batch: 3 predictions with income, then 1 with no features at all (and, alone in the second batch, 2 more
    # without): every one of the 6 is a prediction recorded, so income is missing in 3 of 6.
    async def steps(store: Store) -> Any:
        await store.apply([prediction(0, {"income": 1.0}), prediction(1, {"income": 2.0}),
                           prediction(2, {"income": 3.0}), prediction(3, None)], Progress(), 0)
        await store.apply([prediction(4, None), prediction(5, {})], Progress(), 0)
        return await store.features.read("claims", START)

    n, stats = run(stack, steps)
    assert n == 6
    assert stats["income"].values == 3
    assert stats["income"].null_rate == pytest.approx(3 / 6)


def test_long_string_values_are_counted_by_their_first_256_bytes_cut_at_a_character(stack: StackInfo,
                                                                                      redis_client: Any) -> None:
    # 'é' is two bytes: 255 of them plus a tail is 510+ bytes; the cut keeps 128 whole characters (256 bytes), and
    # two values that differ only past the cut are one value, in the top-value hash and in the distinct count
    stem = "é" * 255
    events = [prediction(0, {"note": stem + "x"}), prediction(1, {"note": stem + "y"}),
              prediction(2, {"note": "a" * 255 + "é"})]  # 257 bytes: the cut drops the whole 'é', not half of it

    async def steps(store: Store) -> Any:
        await store.apply(events, Progress(), 0)
        return await store.features.read("claims", START)

    _, stats = run(stack, steps)
    note = stats["note"]
    assert (note.strings, note.top_value, note.top_count, note.distinct) == (3, "é" * 128, 2, 2)
    assert {k.decode() for k in redis_client.hkeys(next(iter(redis_client.keys("*:fv:*"))))} <= {"é" * 128, "a" * 255}


@pytest.mark.parametrize("value, expected", [
    ("abc", "abc"),                     # short: as it is
    ("a" * 256, "a" * 256),             # exactly the limit
    ("a" * 300, "a" * 256),             # one-byte characters: 256 of them
    ("é" * 200, "é" * 128),             # two-byte characters: 128 whole ones
    ("a" + "€" * 100, "a" + "€" * 85),  # three-byte characters: 1 + 85*3 = 256
    ("aa" + "€" * 100, "aa" + "€" * 84),  # 2 + 84*3 = 254: a character is never split
])
def test_cut_keeps_whole_characters_within_256_bytes(value: str, expected: str) -> None:
    from stream.state.features import cut
    assert cut(value) == expected


def test_only_tracked_feature_values_travel_to_redis(stack: StackInfo, redis_client: Any) -> None:
    # A wide snapshot (5 features, 2 tracked): the records the apply script decodes carry the 2, not all 5, and the
    # statistics are the same as if only those had been sent.
    wide = {"a": 1.0, "b": "x", "c": 3.0, "d": 4.0, "e": None}

    async def steps(store: Store) -> Any:
        await store.apply([prediction(0, {"a": 1.0, "b": "x"})], Progress(), 0)  # a and b come first: tracked
        prepared = await store.prepare([prediction(1, wide), prediction(2, {"a": 2.0})])
        await store.send(prepared, Progress(), 0)
        return prepared, await store.features.read("claims", START)

    prepared, (n, stats) = run(stack, steps, defaults={"max_features": 2})
    sent = [fx for call in prepared.buckets.values() for group in orjson.loads(call.snapshots) for fx in group]
    assert sorted(map(sorted, sent)) == [["a"], ["a", "b"]]
    assert n == 3 and sorted(stats) == ["a", "b"]
    assert (stats["a"].values, stats["a"].total, stats["b"].strings) == (3, 4.0, 2)
