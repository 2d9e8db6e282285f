"""The Redis store against a real redis-server: idempotent apply, the pending join, follow-ups counted in their
prediction's window by checkpoint, late events, closing stages, compare-and-set evaluation commits and orphan
expiry."""

from __future__ import annotations

import asyncio
import math
from datetime import datetime, timezone
from typing import Any

import pytest

from stream.embedded import StackInfo
from stream.events import HumanActionEvent, OutcomeEvent, PredictionEvent
from stream.settings import load
from stream.state import Progress, Store
from tests.support.aio import run, window_counts

pytestmark = pytest.mark.integration
H = 3600 * 1000
T0 = int(datetime(2026, 11, 20, tzinfo=timezone.utc).timestamp() * 1000)



def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).isoformat().replace("+00:00", "Z")


def pred(i: int, ms: int, label: str = "a", region: str = "eu") -> PredictionEvent:
    return PredictionEvent.model_validate({"schema_version": 1, "event_id": f"p{i}", "prediction_id": f"id{i}",
                                           "model": "m", "model_version": "v1", "ts": iso(ms), "label": label,
                                           "band": "low", "segment": {"region": region}})


def action(i: int, ms: int, kind: str = "override", eid: str | None = None) -> HumanActionEvent:
    return HumanActionEvent.model_validate({"schema_version": 1, "event_id": eid or f"a{i}",
                                            "prediction_id": f"id{i}", "ts": iso(ms), "action": kind})


def outcome(i: int, ms: int, label: str, kind: str = "truth", value: float | None = None) -> OutcomeEvent:
    return OutcomeEvent.model_validate({"schema_version": 1, "event_id": f"o{i}{kind}", "prediction_id": f"id{i}",
                                        "ts": iso(ms), "label": label, "kind": kind, "value": value})


@pytest.fixture
def store(stack: StackInfo, redis_client: Any) -> Store:
    return Store.from_settings(load(None, redis_url=stack.redis_url, state_buckets=4,
                                    defaults={"allowed_lateness_seconds": 0}))


async def _apply(store: Store, events: list[Any], now: int = T0) -> tuple[int, int, int, int, int]:
    r = await store.apply(events, Progress(), now)
    return r.applied, r.duplicates, r.pending, r.late, r.drained


async def _flows(store: Store, events: list[Any]) -> dict[tuple[str, str], tuple[int, int, int]]:
    r = await store.apply(events, {}, T0)
    return {k: (f.counted, f.late, f.beyond_horizon) for k, f in r.flows.items()}


async def _window(store: Store, start: int) -> dict[tuple[str, str, str], float]:
    return await window_counts(store, "m", start)


def test_a_replayed_batch_changes_nothing(store: Store) -> None:
    batch = [pred(1, T0 + 10), action(1, T0 + 20), outcome(1, T0 + 30, "b"), outcome(1, T0 + 40, "a", "proxy")]

    async def go() -> tuple[Any, Any, Any, Any]:
        first = await _apply(store, batch)
        before = await _window(store, T0)
        again = await _apply(store, batch)
        return first, again, before, await _window(store, T0)

    first, again, before, after = run(go(), store)
    assert first == (4, 0, 0, 0, 0)
    assert again == (0, 4, 0, 0, 0)
    assert before == after
    # the whole model, its band and its region each count the prediction, the override and the truth mismatch
    # (at their first checkpoint: they came within an hour of their prediction)
    for scope in ("", "band=low", "region=eu"):
        assert after[("v1", scope, "n")] == 1
        assert after[("v1", scope, "a:override#0")] == 1
        assert after[("v1", scope, "o:truth#0")] == 1 and after[("v1", scope, "m:truth#0")] == 1
        assert after[("v1", scope, "o:proxy#0")] == 1 and ("v1", scope, "m:proxy#0") not in after


def test_outcome_values_are_summed_once_with_the_logs_of_the_positive_ones_parked_or_not(store: Store) -> None:
    first = [outcome(5, T0 + 40, "a", value=300.0),  # before its prediction: parked with its value
             pred(3, T0 + 10), outcome(3, T0 + 30, "a", value=1200.5), pred(6, T0 + 12),
             outcome(6, T0 + 50, "b", value=0.0),  # a truth outcome that paid nothing: in the sum, not a claim
             pred(7, T0 + 13), outcome(7, T0 + 60, "a")]  # no value at all

    async def go() -> tuple[Any, Any]:
        await _apply(store, first)
        replayed = await _apply(store, [*first, pred(5, T0 + 14)])
        return replayed, await _window(store, T0)

    replayed, w = run(go(), store)
    assert replayed == (1, 7, 0, 0, 1)  # the parked outcome drained once its prediction came; the rest duplicates
    for scope in ("", "band=low", "region=eu"):
        assert w[("v1", scope, "o:truth#0")] == 4
        assert w[("v1", scope, "v:truth#0")] == 1500.5
        assert w[("v1", scope, "vn:truth#0")] == 2
        assert w[("v1", scope, "vl:truth#0")] == pytest.approx(math.log(1200.5) + math.log(300.0), rel=1e-15)
        assert w[("v1", scope, "vq:truth#0")] == pytest.approx(math.log(1200.5) ** 2 + math.log(300.0) ** 2,
                                                                rel=1e-15)


def test_actions_before_their_prediction_wait_and_count_in_its_window_once_it_arrives(store: Store) -> None:
    async def go() -> tuple[Any, Any, Any, Any]:
        early = await _apply(store, [action(2, T0 + H + 5), action(2, T0 + H + 5), outcome(2, T0 + 2 * H, "a")])
        nothing_yet = await _window(store, T0 + H)
        late_pred = await _apply(store, [pred(2, T0 + 100)])
        return early, nothing_yet, late_pred, (await _window(store, T0), await _window(store, T0 + H),
                                               await _window(store, T0 + 2 * H))

    early, nothing_yet, arrived, (w0, w1, w2) = run(go(), store)
    assert early == (0, 1, 2, 0, 0)           # the second copy of the action is a duplicate even while pending
    assert nothing_yet == {}
    assert arrived == (1, 0, 0, 0, 2)         # the prediction, and the two parked events drained
    assert w1 == w2 == {}                       # follow-ups count in their prediction's window...
    assert w0[("v1", "", "n")] == 1
    assert w0[("v1", "", "a:override#0")] == 1  # ...by their age: the action came 59m59.9s after the prediction,
    assert w0[("v1", "", "o:truth#1")] == 1     # the outcome 1h59m59.9s after it (checkpoints 1h, 1d, 7d)
    assert ("v1", "", "m:truth#1") not in w0


def test_a_closed_predictions_stage_refuses_late_predictions_and_reports_its_counts(store: Store) -> None:
    async def go() -> tuple[Any, Any, Any]:
        await _apply(store, [pred(3, T0 + 1), pred(4, T0 + 2)])
        closed = (await store.close_and_read("m", T0, T0 + H, "n", with_state=False)).counts
        late = await _apply(store, [pred(5, T0 + 3), action(3, T0 + 4)])
        return closed, late, (await store.close_and_read("m", T0, T0 + H, "n", with_state=False)).counts

    closed, late, after = run(go(), store)
    assert closed.counts[("v1", "", "n")] == 2 and closed.late == {}
    assert late == (1, 0, 0, 1, 0)  # the prediction is late; the action's checkpoint is still open: it counts
    assert after.counts[("v1", "", "n")] == 2 and after.counts[("v1", "", "a:override#0")] == 1
    assert after.late == {"n": 1}   # the window keeps the count of what came too late for it


def test_a_follow_up_of_a_judged_checkpoint_is_late_and_counts_at_the_next_one(store: Store) -> None:
    # checkpoints of actions: 1h and 1d (the horizon); an action 2 days after its prediction is beyond it
    async def go() -> tuple[Any, Any, Any]:
        await _apply(store, [pred(3, T0 + 1), pred(4, T0 + 2), pred(5, T0 + 3)])
        await store.close_and_read("m", T0, T0 + H, "a0", with_state=False)
        flows = await _flows(store, [action(3, T0 + 10), action(4, T0 + 2 * H), action(5, T0 + 2 * 86400_000)])
        return flows, (await store.close_and_read("m", T0, T0 + H, "a1", with_state=False)).counts, \
            await _flows(store, [action(3, T0 + 10, eid="again")])

    flows, read, last = run(go(), store)
    assert flows == {("m", "actions"): (1, 1, 1)}  # counted (the 2h one), late (the 10ms one), beyond (2d)
    assert read.counts[("v1", "", "a:override#1")] == 2 and ("v1", "", "a:override#0") not in read.counts
    assert read.late == {"a": 1}
    assert last == {("m", "actions"): (0, 1, 0)}   # every checkpoint judged: late, and in no count


def test_event_time_keeps_the_first_window(store: Store) -> None:
    async def go() -> int | None:
        await _apply(store, [pred(6, T0 + 5 * H + 7), pred(7, T0 + H + 1)])
        return (await store.tick(["m"], "w1", None)).seen["m"].first

    assert run(go(), store) == T0 + H


def test_only_one_evaluator_commits_a_window(store: Store) -> None:
    async def go() -> tuple[bool, bool, bool, list[bytes]]:
        a = await store.commit_evaluation("m", "", f"{T0 + H}:0", T0, b"{}", b"{}", [("alert1", b"{}")],
                                          T0 - 100 * H)
        b = await store.commit_evaluation("m", "", f"{T0 + H}:0", T0, b"{}", b"{}", [("alert2", b"{}")],
                                          T0 - 100 * H)
        c = await store.commit_evaluation("m", f"{T0 + H}:0", f"{T0 + 2 * H}:0", T0 + H, b"{}", b"{}", [],
                                          T0 - 100 * H)
        return a, b, c, list((await store.tick(["m"], "w1", None)).seen["m"].outbox.values())

    a, b, c, outbox = run(go(), store)
    assert (a, b, c) == (True, False, True)
    assert outbox == [b"{}"]  # only the winner's alert waits in the outbox


def test_actions_whose_prediction_never_comes_expire_as_orphans(store: Store) -> None:
    async def go() -> tuple[tuple[int, int], tuple[int, int], dict[Any, int]]:
        await _apply(store, [action(8, T0), outcome(8, T0, "a"), outcome(9, T0, "a")], now=T0)
        too_soon = (await store.tick([], "w1", T0 + 1000)).orphans
        expired = (await store.tick([], "w1", T0 + store.settings.pending_ttl_seconds * 1000 + 1)).orphans
        await _apply(store, [pred(8, T0 + 10)])  # arrives after expiry: the parked events are gone
        return too_soon, expired, await _window(store, T0)

    too_soon, expired, window = run(go(), store)
    assert too_soon == (0, 0)
    assert expired == (1, 2)
    assert {c for _, _, c in window} == {"n"}  # the prediction alone


def test_the_evaluation_lease_has_one_holder_and_passes_on_when_it_lapses(store: Store) -> None:
    async def go() -> list[bool]:
        steps = [await store.lease("m", "w1", 200), await store.lease("m", "w2", 200),
                 await store.lease("m", "w1", 200)]  # the holder renews
        await asyncio.sleep(0.3)                     # w1 died: its lease lapses
        steps += [await store.lease("m", "w2", 200), await store.lease("m", "w1", 200)]
        return steps

    assert run(go(), store) == [True, False, True, True, False]


def test_a_call_with_more_fields_and_triples_than_one_redis_command_takes_counts_them_all(stack: StackInfo,
                                                                                          redis_client: Any) -> None:
    # One bucket, one batch of 1,500 predictions, each in its own region: 1,500 (model, version, scopes) triples
    # to intern and 1,502 counter fields in one hash, over the script's 1,000 fields per HMGET/HSET; then the
    # same regions again, so every field is read back and added to.
    store = Store.from_settings(load(None, redis_url=stack.redis_url, state_buckets=1, max_label_values=2000,
                                     defaults={"allowed_lateness_seconds": 0}))
    first = [pred(i, T0 + i, region=f"r{i}") for i in range(1500)]
    second = [pred(2000 + i, T0 + i, region=f"r{i}") for i in range(1500)]

    async def go() -> tuple[Any, Any, Any]:
        a = await _apply(store, first)
        b = await _apply(store, second)
        return a, b, await _window(store, T0)

    a, b, counts = run(go(), store)
    assert a == b == (1500, 0, 0, 0, 0)
    assert counts[("v1", "", "n")] == 3000 and counts[("v1", "band=low", "n")] == 3000
    assert {counts[("v1", f"region=r{i}", "n")] for i in range(1500)} == {2}
    assert len(counts) == 1502
    # every triple was interned once, with its own id
    meta = redis_client.hgetall("{tg:b0}:meta")
    assert int(meta[b"i#"]) == 1500 and len({v for k, v in meta.items() if k.startswith(b"i:")}) == 1500
