"""The in-memory twin (stream.offline): it counts as the store does, and judges the same whatever steps the
watermark advances by."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from stream.offline import Twin, published, run_events
from stream.settings import ModelSettings
from stream.simulate import generate

T0 = datetime(2026, 11, 20, tzinfo=timezone.utc)
HOUR = 3_600_000
# one-hour windows; actions judged 1 h and 2 h after their prediction (the horizon), outcomes at 1 h and 1 d
MS = ModelSettings(action_horizon_seconds=7200, outcome_horizon_seconds=86400)


def _ts(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def prediction(pid: str, at: datetime, label: str = "approve") -> dict[str, Any]:
    return {"schema_version": 1, "event_id": f"e-{pid}", "prediction_id": pid, "model": "m", "model_version": "v1",
            "ts": _ts(at), "label": label, "band": "low", "segment": {"region": "eu"}}


def action(pid: str, at: datetime, what: str = "override") -> dict[str, Any]:
    return {"schema_version": 1, "event_id": f"a-{pid}-{at}", "prediction_id": pid, "ts": _ts(at), "action": what}


def outcome(pid: str, at: datetime, label: str) -> dict[str, Any]:
    return {"schema_version": 1, "event_id": f"o-{pid}-{at}", "prediction_id": pid, "ts": _ts(at), "kind": "truth",
            "label": label}


def test_follow_ups_count_in_their_predictions_window_by_their_age() -> None:
    twin = Twin("m", MS)
    p_at = T0 + timedelta(minutes=50)
    twin.apply("prediction", prediction("p", p_at))
    twin.apply("action", action("p", p_at + timedelta(minutes=30)))        # age 30 min: checkpoint 0
    twin.apply("action", action("p", p_at + timedelta(minutes=90), "accept"))  # age 90 min: checkpoint 1
    twin.apply("action", action("p", p_at + timedelta(hours=3)))            # beyond the 2 h horizon
    twin.apply("outcome", outcome("p", p_at + timedelta(hours=5), "review"))  # age 5 h: outcome checkpoint 1
    start = int(T0.timestamp() * 1000)
    scoped = {k: v for (_, scope, k), v in twin.counts[start].items() if scope == ""}
    # all in the prediction's window (00:00), though they happened in later hours
    assert scoped == {"n": 1, "a:override#0": 1, "a:accept#1": 1, "o:truth#1": 1, "m:truth#1": 1}
    assert twin.beyond_horizon == {"a": 1}
    assert list(twin.counts) == [start]


def test_a_follow_up_after_its_checkpoint_was_judged_counts_late_into_the_next_one() -> None:
    twin = Twin("m", MS)
    twin.apply("prediction", prediction("p", T0))
    start = int(T0.timestamp() * 1000)
    twin.advance(start + 2 * HOUR)  # window 00:00 judged at 'n' (01:00) and its first looks (02:00)
    assert {d.stage.name for d, _ in twin.judged} == {"n", "a0", "o0"}
    twin.apply("action", action("p", T0 + timedelta(minutes=5)))  # age 5 min: checkpoint 0, already judged
    twin.apply("prediction", prediction("q", T0 + timedelta(minutes=10)))  # its window's 'n' was judged
    assert twin.late == {"a": 1, "n": 1}
    assert twin.counts[start][("v1", "", "a:override#1")] == 1  # into the first checkpoint still open


def _events(days: float = 2.0) -> list[tuple[Any, dict[str, Any]]]:
    return list(generate("blip", days, 250.0, 3, "m", T0))


@pytest.mark.parametrize("step", [1, 977, None])
def test_judging_the_same_events_in_different_watermark_steps_gives_the_same_alerts(step: int | None) -> None:
    events = _events()
    once = run_events(events, "m", MS, step=None)
    stepped = run_events(events, "m", MS, step=step)
    assert [d.cursor for d, _ in stepped.judged] == [d.cursor for d, _ in once.judged]
    assert [a.model_dump() for a in stepped.published()] == [a.model_dump() for a in once.published()]
    assert once.published()  # the blip's transient alerts: the comparison is not between two empty lists
    assert stepped.late == once.late == {}


def test_published_is_the_twins_alerts_up_to_the_watermark() -> None:
    events = _events()
    # the blip (hours 34 to 35.5 of the two days) touches two windows: their first action looks are due 12 h and
    # 11 h before the end; a watermark between them publishes the first window's alerts only
    wm = int((T0 - timedelta(hours=11, minutes=30)).timestamp() * 1000)
    early = published(events, "m", MS, wm)
    full = published(events, "m", MS)
    assert early and len(full) > len(early)
    assert all(a.window.end.timestamp() * 1000 <= wm for a in early)
    assert [a.alert_id for a in full[:len(early)]] == [a.alert_id for a in early]
