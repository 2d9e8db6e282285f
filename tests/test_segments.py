"""segment_shift: who the model sees, against its baseline windows (stream.segments through stream.detect)."""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import pytest

from stream import detect, segments, stats
from stream.detect import State, evaluate
from stream.events import Annotation
from stream.settings import ModelSettings
from stream.windows import Window

HOUR = 3600 * 1000
NOW = datetime(2026, 11, 20, tzinfo=timezone.utc)
MS = ModelSettings(persistence=3, resolve_after=2, min_gap=0.05, min_samples=50, alpha=0.01)


def _window(channels: dict[str, int], regions: dict[str, int] | None = None) -> dict[tuple[str, str, str], int]:
    """One window's prediction counters: per channel (and region), the model's their sum."""
    scopes = {f"channel={c}": {"n": k} for c, k in channels.items()}
    scopes |= {f"region={r}": {"n": k} for r, k in (regions or {}).items()}
    scopes[""] = {"n": sum(channels.values())}
    return {("v1", scope, counter): n for scope, c in scopes.items() for counter, n in c.items()}


def _run(windows: list[dict[tuple[str, str, str], int]], annotations: list[Annotation] = (),  # type: ignore
         ms: ModelSettings = MS) -> list[detect.Evaluation]:
    history: list[detect.Summary] = []
    state = State()
    out = []
    for i, counts in enumerate(windows):
        ev = evaluate("m", Window(i * HOUR, HOUR), counts, history, state, annotations, ms, NOW)
        history.append(ev.summary)
        state = ev.state
        out.append(ev)
    return out


def _alerts(evs: list[detect.Evaluation]) -> list[tuple[int, str, str, str, dict[str, str]]]:
    return [(i, a.status, a.classification, a.recommendation, a.scope) for i, e in enumerate(evs) for a in e.alerts]


def _quiet(i: int) -> dict[str, int]:
    """Web and app about half each, moving a little from window to window."""
    return {"web": 500 + (i * 37) % 41 - 20, "app": 500 - (i * 37) % 41 + 20}


def test_a_new_channel_is_named_sustained_and_recommends_review_segments() -> None:
    campaign = [_window({**_quiet(i), "campaign": 900}) for i in range(24, 28)]
    evs = _run([_window(_quiet(i)) for i in range(24)] + campaign)
    got = _alerts(evs)
    new = {"channel": segments.NEW}
    assert got == [(24, "firing", "transient", "exclude_window_from_training", new),
                   (25, "firing", "transient", "exclude_window_from_training", new),
                   (26, "firing", "sustained", "review_segments", new)]
    alert = evs[26].alerts[0]
    assert alert.signal == "segment_shift" and alert.severity == "ticket"
    assert alert.observed == pytest.approx(900 / 1900) and alert.baseline == 0
    assert "values of channel never seen in the baseline went from 0% to 47.4% of predictions " \
           "(channel=campaign 47.4%)" in alert.diagnosis
    assert alert.diagnosis[0].startswith("share of predictions in channel=*new* 47.4% vs baseline 0.0% over 24 ")


def test_a_value_that_grows_is_named_with_its_shares() -> None:
    evs = _run([_window({"web": 900, "app": 100}) for _ in range(12)] + [_window({"web": 500, "app": 500})] * 3)
    sustained = [a for e in evs for a in e.alerts if a.classification == "sustained"]
    assert [(a.scope, a.recommendation) for a in sustained] == [({"channel": "app"}, "review_segments")]
    assert "channel=app went from 10.0% to 50.0% of predictions" in sustained[0].diagnosis


def test_it_resolves_when_the_mix_is_back() -> None:
    windows = [_window(_quiet(i)) for i in range(24)] + [_window({**_quiet(i), "campaign": 900}) for i in range(3)]
    evs = _run(windows + [_window(_quiet(i)) for i in range(3)])
    assert [(i, s, c) for i, s, c, _, _ in _alerts(evs)][-1] == (28, "resolved", "sustained")


def test_a_day_and_night_swing_is_not_a_shift() -> None:
    # branch carries 40% by day and 5% by night: a day after a night is nothing new
    day, night = {"web": 600, "branch": 400}, {"web": 950, "branch": 50}
    evs = _run([_window(day if i % 2 == 0 else night) for i in range(48)] + [_window(day)] * 4)
    assert _alerts(evs) == []
    # the same day window against a baseline that never swung is a shift: the spread is what made it quiet
    evs = _run([_window(night)] * 24 + [_window(day)] * 3)
    assert [c for _, _, c, _, _ in _alerts(evs)] == ["transient", "transient", "sustained"]


def test_an_annotation_naming_the_new_value_makes_it_expected() -> None:
    note = Annotation.model_validate({"schema_version": 1, "event_id": "a1", "model": "m", "kind": "campaign",
                                      "start": datetime(1970, 1, 1, tzinfo=timezone.utc),
                                      "segment": {"channel": "campaign"}, "note": "winter promo"})
    windows = [_window(_quiet(i)) for i in range(24)] + [_window({**_quiet(i), "campaign": 900}) for i in range(3)]
    evs = _run(windows, [note])
    assert [(c, r) for _, _, c, r, _ in _alerts(evs)] == [("expected", "none")]
    other = note.model_copy(update={"segment": {"channel": "web"}})
    assert [c for _, _, c, _, _ in _alerts(_run(windows, [other]))][-1] == "sustained"


def test_small_windows_and_short_baselines_are_not_tested() -> None:
    few = [_window({"web": 20, "app": 20})] * 10 + [_window({"web": 10, "app": 10, "campaign": 20})] * 4
    assert _alerts(_run(few)) == []  # 40 predictions a window: under min_samples
    short = [_window(_quiet(0)), _window({**_quiet(1), "campaign": 900})]
    assert _alerts(_run(short)) == []  # one baseline window: no spread to measure


def test_bands_are_not_segments() -> None:
    counts = {("v1", "", "n"): 1000, ("v1", "band=high", "n"): 900, ("v1", "band=low", "n"): 100}
    base = {("v1", "", "n"): 1000, ("v1", "band=high", "n"): 100, ("v1", "band=low", "n"): 900}
    assert _alerts(_run([base] * 12 + [counts] * 3)) == []


def test_the_shares_join_the_windows_family() -> None:
    # eight regions moving within noise and one new channel: every share is one more test in the Holm family
    rng = np.random.default_rng(3)
    windows = []
    for i in range(30):
        regions = dict(zip([f"r{j}" for j in range(8)], rng.multinomial(1000, [1 / 8] * 8).tolist(), strict=True))
        windows.append(_window(_quiet(i) if i < 29 else {**_quiet(i), "campaign": 120}, regions))
    evs = _run(windows)
    [alert] = evs[-1].alerts
    measured = segments.measure_all(evs[-1].summary.scopes, [(e.summary.excluded, e.summary.scopes)
                                                             for e in evs[:-1]], MS)
    assert len(measured) == 12  # web, app, the channel's new values; eight regions, the regions' new values
    adjusted = dict(zip(measured, stats.holm([m.test.p for m in measured.values()]), strict=True))
    key = f"segment_shift|channel={segments.NEW}"
    assert alert.p_value == pytest.approx(adjusted[key], rel=1e-9, abs=0)
    assert alert.p_value is not None and alert.p_value > measured[key].test.p
