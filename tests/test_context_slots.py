"""Prediction contexts kept as fields of event-time slot hashes: joins across slots and small clock skew,
parking in a per-prediction key, exactly-once counts and features under replay, and no join past context_ttl."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import pytest
import redis


from stream.embedded import StackInfo
from stream.events import Event, HumanActionEvent, OutcomeEvent, PredictionEvent
from stream.settings import load
from stream.state import Progress, Store, keys
from tests.support.aio import run, window_counts

pytestmark = pytest.mark.integration
H = 3600 * 1000
CTX_TTL_S = 8 * 3600  # so a slot spans exactly one hour, like the windows
T0 = int(datetime(2026, 11, 20, tzinfo=timezone.utc).timestamp() * 1000)  # a slot and window boundary
BUCKETS = 4


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).isoformat().replace("+00:00", "Z")


def pred(i: int, ms: int, label: str = "a", x: float | None = None) -> PredictionEvent:
    return PredictionEvent.model_validate({
        "schema_version": 1, "event_id": f"p{i}", "prediction_id": f"id{i}", "model": "m", "model_version": "v1",
        "ts": iso(ms), "label": label, "band": "low", "features": None if x is None else {"x": x}})


def action(i: int, ms: int, n: int = 0) -> HumanActionEvent:
    return HumanActionEvent.model_validate({"schema_version": 1, "event_id": f"a{i}.{n}", "prediction_id": f"id{i}",
                                            "ts": iso(ms), "action": "override"})


def outcome(i: int, ms: int, label: str) -> OutcomeEvent:
    return OutcomeEvent.model_validate({"schema_version": 1, "event_id": f"o{i}", "prediction_id": f"id{i}",
                                        "ts": iso(ms), "label": label, "kind": "truth"})



@pytest.fixture
def store(stack: StackInfo, redis_client: redis.Redis) -> Store:
    return Store.from_settings(load(None, redis_url=stack.redis_url, state_buckets=BUCKETS,
                                    context_ttl_seconds=CTX_TTL_S,
                                    defaults={"allowed_lateness_seconds": 0, "action_horizon_seconds": CTX_TTL_S,
                                              "outcome_horizon_seconds": CTX_TTL_S}))


async def apply(store: Store, events: list[Event]) -> tuple[int, int, int, int, int]:
    r = await store.apply(events, Progress(), T0)
    return r.applied, r.duplicates, r.pending, r.late, r.drained


async def count(store: Store, start: int, counter: str) -> int:
    return (await window_counts(store, "m", start)).get(("v1", "", counter), 0)


def bucket(i: int) -> int:
    return keys.bucket_of(f"id{i}", BUCKETS)


def test_the_slot_span_is_an_eighth_of_the_context_ttl_rounded_up_to_a_second() -> None:
    assert keys.slot_span_ms(CTX_TTL_S) == H
    assert keys.slot_span_ms(30 * 86400) == 324_000 * 1000  # the default 30 days: 3.75-day slots
    assert keys.slot_span_ms(9) == 2000                      # 1.125 s rounds up to 2 s


def test_a_prediction_is_a_field_of_its_slot_hash_which_lives_context_ttl_from_its_last_write(
        store: Store, redis_client: redis.Redis) -> None:
    assert run(apply(store, [pred(1, T0 + 10), pred(2, T0 + H - 1)]), store) == (2, 0, 0, 0, 0)
    slot = keys.context_slot(bucket(1), T0)
    assert redis_client.hexists(slot, "id1")
    assert redis_client.hexists(keys.context_slot(bucket(2), T0), "id2")
    assert CTX_TTL_S - 60 < redis_client.ttl(slot) <= CTX_TTL_S
    assert redis_client.keys("*:q:*") == []  # nothing parked


def test_an_action_joins_its_prediction_stored_in_an_earlier_slot(store: Store) -> None:
    async def go() -> tuple[Any, Any, int, int]:
        first = await apply(store, [pred(3, T0 + 10)])
        later = await apply(store, [action(3, T0 + 3 * H + 5), outcome(3, T0 + 7 * H, "b"),
                                    action(3, T0 + 3 * H + 5)])  # the last is a redelivered copy
        # both count in the prediction's window, at the checkpoint their age reaches (1h, then the 8h horizon)
        return first, later, await count(store, T0, "a:override#1"), await count(store, T0, "m:truth#1")

    first, later, overrides, mismatches = run(go(), store)
    assert first == (1, 0, 0, 0, 0)
    assert later == (2, 1, 0, 0, 0)
    assert (overrides, mismatches) == (1, 1)


# prediction at a slot boundary, its action stamped 1 ms earlier (the slot before): skew within one span joins
@pytest.mark.parametrize("prediction_first", [
    True,   # the action looks one slot ahead of its own and finds the prediction there
    False,  # the action is parked; the prediction drains it when it arrives
])
def test_an_action_stamped_slightly_before_its_prediction_is_joined(
        store: Store, redis_client: redis.Redis, prediction_first: bool) -> None:
    p, a = pred(4, T0 + H), action(4, T0 + H - 1)

    async def go() -> tuple[list[tuple[int, int, int, int, int]], int]:
        order = [p, a, a] if prediction_first else [a, p, a]
        return [await apply(store, [e]) for e in order], await count(store, T0 + H, "a:override#0")

    steps, overrides = run(go(), store)
    if prediction_first:
        assert steps == [(1, 0, 0, 0, 0), (1, 0, 0, 0, 0), (0, 1, 0, 0, 0)]
    else:
        assert steps == [(0, 0, 1, 0, 0), (1, 0, 0, 0, 1), (0, 1, 0, 0, 0)]
    assert overrides == 1  # in its prediction's window, at age 0
    assert redis_client.exists(keys.parked(bucket(4), "id4")) == 0
    assert redis_client.zcard(keys.bucket_pending(bucket(4))) == 0


def test_a_replayed_batch_counts_its_events_and_features_once(store: Store) -> None:
    # 40 predictions over three slots, an action for each, outcomes for every other one; the actions of the last
    # ten arrive one batch before their predictions (parked, then drained)
    preds = [pred(i, T0 + i * 5 * 60_000 + 7, label="a", x=float(i)) for i in range(40)]
    acts = [action(i, T0 + i * 5 * 60_000 + 60_000) for i in range(40)]
    outs = [outcome(i, T0 + 3 * H + i, "b" if i % 4 == 0 else "a") for i in range(0, 40, 2)]
    batch1 = preds[:30] + acts + outs[:10]
    batch2 = preds[30:] + outs[10:]

    async def go() -> list[Any]:
        results = [await apply(store, batch1), await apply(store, batch1),   # the first replayed after a "crash"
                   await apply(store, batch2), await apply(store, batch2 + batch1)]
        counts: dict[str, int] = {}
        for start in range(T0, T0 + 4 * H, H):
            for k, v in (await window_counts(store, "m", start)).items():
                if k[1] == "":  # summed over checkpoints: the outcomes came 0-3 h after their predictions
                    counter = k[2].partition("#")[0]
                    counts[counter] = counts.get(counter, 0) + v
        recorded, total = 0, 0.0
        for start in range(T0, T0 + 4 * H, H):
            n, stats = await store.features.read("m", start)
            recorded, total = recorded + n, total + stats["x"].total
        return [results, counts, (recorded, total)]

    results, counts, features = run(go(), store)
    assert results == [(70, 0, 10, 0, 0), (0, 80, 0, 0, 0), (20, 0, 0, 0, 10), (0, 100, 0, 0, 0)]
    assert counts == {"n": 40, "a:override": 40, "o:truth": 20, "m:truth": 10}
    assert features == (40, float(sum(range(40))))


def test_a_context_older_than_the_context_ttl_is_not_joined_and_its_action_is_orphaned(
        store: Store, redis_client: redis.Redis) -> None:
    async def go() -> list[Any]:
        steps: list[Any] = [await apply(store, [pred(5, T0 + 10), pred(6, T0 + 10)])]
        steps.append(await apply(store, [action(6, T0 + CTX_TTL_S * 1000)]))       # exactly context_ttl later
        steps.append(await apply(store, [action(5, T0 + 2 * CTX_TTL_S * 1000)]))   # far past it: parked
        steps.append(redis_client.exists(keys.parked(bucket(5), "id5")))
        steps.append((await store.tick([], "w1", T0 + store.settings.pending_ttl_seconds * 1000)).orphans)
        steps.append(redis_client.exists(keys.parked(bucket(5), "id5")))
        steps.append(await count(store, T0, "a:override#1"))  # the joined one, at the horizon checkpoint
        return steps

    assert run(go(), store) == [(2, 0, 0, 0, 0), (1, 0, 0, 0, 0), (0, 0, 1, 0, 0), 1, (1, 0), 0, 1]
