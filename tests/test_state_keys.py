"""Key names: every one spelled in stream/state/keys.py, and the keys the scripts really create are exactly those."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone

import pytest
import redis

from stream.embedded import StackInfo
from stream.events import Annotation, Event, HumanActionEvent, OutcomeEvent, PredictionEvent
from stream.settings import ModelSettings, load
from stream.state import PartitionEnd, Progress, Store, keys
from stream.windows import window_start

H = 3600 * 1000
T0 = int(datetime(2026, 11, 20, tzinfo=timezone.utc).timestamp() * 1000)
BUCKETS = 4


def test_every_bucket_key_shares_the_buckets_hash_tag_and_is_built_from_its_prefix() -> None:
    tag = keys.bucket_tag(3)
    assert keys.context_slot(3, 1000) == keys.context_prefix(3) + "1000"
    assert keys.parked(3, "p1") == keys.parked_prefix(3) + "p1"
    assert keys.window_counts(3, "m", 1000) == keys.window_prefix(3) + "m:1000"
    assert keys.feature_stats(3, "m", 1000) == keys.feature_stats_prefix(3) + "m:1000"
    assert keys.feature_top(3, "m", 1000, "f") == keys.feature_top_prefix(3) + "m:1000:f"
    names = [keys.bucket_meta(3), keys.bucket_pending(3), keys.context_prefix(3), keys.parked_prefix(3),
             keys.window_prefix(3), keys.feature_stats_prefix(3), keys.feature_top_prefix(3)]
    assert all(n.startswith(tag + ":") for n in names)
    assert len(set(names)) == len(names)  # no prefix is another's


def test_every_model_key_shares_the_models_hash_tag() -> None:
    tag = keys.model_tag("m")
    names = [keys.model_state("m"), keys.model_history("m"), keys.model_outbox("m"), keys.model_lease("m"),
             keys.model_labels("m"), keys.model_label_values("m", "band"), keys.model_annotations("m"),
             keys.model_features("m"), keys.feature_distinct("m", 0, "f")]
    assert all(n.startswith(tag + ":") for n in names)
    assert keys.model_tag("a}b") == "{tg:m:a_b}"  # a '}' would end the hash tag early


def test_a_windows_keys_live_for_the_window_its_longest_horizon_its_lateness_and_the_margin() -> None:
    assert keys.window_ttl(ModelSettings()) == 3600 + 7 * 86400 + 600 + keys.WINDOW_MARGIN


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).isoformat().replace("+00:00", "Z")


def pred(i: int, ms: int) -> PredictionEvent:
    return PredictionEvent.model_validate({
        "schema_version": 1, "event_id": f"p{i}", "prediction_id": f"id{i}", "model": "m", "model_version": "v1",
        "ts": iso(ms), "label": "a", "band": "low", "segment": {"region": "eu"},
        "features": {"x": float(i), "s": f"v{i % 2}"}})


def action(pid: str, ms: int) -> HumanActionEvent:
    return HumanActionEvent.model_validate({"schema_version": 1, "event_id": f"a-{pid}", "prediction_id": pid,
                                            "ts": iso(ms), "action": "override"})


def outcome(pid: str, ms: int) -> OutcomeEvent:
    return OutcomeEvent.model_validate({"schema_version": 1, "event_id": f"o-{pid}", "prediction_id": pid,
                                        "ts": iso(ms), "label": "b", "kind": "truth"})


def annotation() -> Annotation:
    return Annotation.model_validate({"schema_version": 1, "event_id": "n1", "model": "m", "ts": iso(T0),
                                      "kind": "deploy", "start": iso(T0), "note": "v1 out"})


@pytest.mark.integration
def test_the_keys_the_scripts_create_are_exactly_the_names_keys_py_gives(stack: StackInfo,
                                                                         redis_client: redis.Redis) -> None:
    settings = load(None, redis_url=stack.redis_url, state_buckets=BUCKETS)
    store = Store.from_settings(settings)
    preds = [pred(i, T0 + i * 1000) for i in range(8)]
    joined: list[Event] = [action(f"id{i}", T0 + H // 2) for i in range(4)] + [outcome("id4", T0 + H // 2)]
    orphans: list[Event] = [action("q0", T0), action("q1", T0), outcome("q2", T0)]  # their prediction never comes

    async def go() -> None:
        try:
            store.run_id = await store.server_run_id()
            await store.apply(preds, Progress({("predictions", 0): 8}, {("predictions", 0): T0 + 7000}), T0)
            await store.apply(joined + orphans, Progress({("actions", 0): 8}, {("actions", 0): T0 + H // 2}), T0)
            # an empty partition found idle by its owner
            assert await store.assert_idle({("outcomes", 0): PartitionEnd(0, 0)}, T0, 60_000) == {("outcomes", 0)}
            read = await store.close_and_read("m", T0, T0 + H, "n", with_state=True)
            assert read.counts.counts[("v1", "", "n")] == 8  # the window was really written
            tick = await store.tick(["m"], "w1", T0)  # leases, and sweeps nothing yet (the deadline is ahead)
            assert tick.seen["m"].leased and tick.orphans == (0, 0)
            assert await store.commit_evaluation("m", "", f"{T0 + H}:0", T0, b"{}", b"{}", [("alert1", b"{}")], T0 - H)
            assert await store.add_annotations([annotation()], Progress({("annotations", 0): 1})) == 1
        finally:
            await store.close()

    asyncio.run(go())
    bucket = {pid: keys.bucket_of(pid, BUCKETS) for pid in [f"id{i}" for i in range(8)] + ["q0", "q1", "q2"]}
    with_preds = {bucket[f"id{i}"] for i in range(8)}
    slot = window_start(T0, keys.slot_span_ms(settings.context_ttl_seconds))
    expected = {keys.MODELS, keys.OFFSETS, keys.EVENT_TIME, keys.idle("outcomes", 0),
                *(keys.bucket_meta(b) for b in range(BUCKETS)),  # closing a window marks every bucket
                *(keys.bucket_pending(bucket[q]) for q in ("q0", "q1", "q2")),
                *(keys.parked(bucket[q], q) for q in ("q0", "q1", "q2")),
                *(keys.context_slot(b, slot) for b in with_preds),
                *(keys.window_counts(b, "m", T0) for b in with_preds),
                *(keys.feature_stats(b, "m", T0) for b in with_preds),
                *(keys.feature_top(b, "m", T0, "s") for b in with_preds),  # string features only
                keys.feature_distinct("m", T0, "x"), keys.feature_distinct("m", T0, "s"),
                keys.model_features("m"), keys.model_labels("m"),
                *(keys.model_label_values("m", d) for d in ("version", "band", "s:region")),
                keys.model_state("m"), keys.model_history("m"), keys.model_outbox("m"), keys.model_lease("m"),
                keys.model_annotations("m")}
    found = {k.decode() for k in redis_client.scan_iter(count=1000)}
    assert found == expected
    # and every key expires (the lease by its PX), but the partitions' progress: few fields, and their only record
    assert all(redis_client.ttl(k) > 0 or k in (keys.OFFSETS, keys.EVENT_TIME) for k in found), \
        {k: redis_client.ttl(k) for k in found if redis_client.ttl(k) <= 0}
