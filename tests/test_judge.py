"""The judge (stream.judge): both detectors on one closed window, and the one codec of their stored state.

The stored samples below were written by the evaluator before the judge existed (the flow of stream/app.py at
f6cb7e7, run on `scenario()`): the codec must read them to the same states and write them back byte for byte;
judging in stages writes the same layout, each window's entry adding the keys its looks decided.
"""

from __future__ import annotations

import random
from datetime import datetime, timezone

import orjson
import pytest

from stream import detect, features
from stream.features import FeatureStats, WindowFeatures
from stream.judge import (Closed, Memory, decode, dominant_version, encode, encode_state, encode_summary,
                          history_from, judge)
from stream.settings import ModelSettings
from stream.windows import Window, due_stages

HOUR = 3_600_000
T0 = int(datetime(2026, 11, 20, tzinfo=timezone.utc).timestamp() * 1000)
NOW = datetime(2026, 12, 1, tzinfo=timezone.utc)
MS = ModelSettings(window_seconds=3600, persistence=1, resolve_after=1, min_samples=50, baseline_windows=4,
                   alpha=0.01, min_gap=0.05, action_horizon_seconds=3600, outcome_horizon_seconds=3600)
STAGES = MS.stages()  # n, then one look at actions and one at outcomes, each an hour after the window's end

# What the evaluator stored after the seventh window of `scenario()` (its spike): the state, and the last two of
# the history's entries (window start -> summary).
STORED_STATE = (b'{"override_rate|":[1,0,"sustained","fix_upstream_feature"],'
                b'"_features":{"feature_frozen|country":[1,0,"sustained",1795154400000]}}')
STORED_HISTORY = {
    T0 + 5 * HOUR: b'{"start":1795150800000,"end":1795154400000,"version":"v1","scopes":{"":{"n":200,'
                   b'"a:override":22,"a:accept":178}},"excluded":[],"_features":{"start":1795150800000,"n":200,'
                   b'"f":{"country":[0,0.0,0.0,null,null,200,0,4,"DE",58]},"x":[]}}',
    T0 + 6 * HOUR: b'{"start":1795154400000,"end":1795158000000,"version":"v1","scopes":{"":{"n":200,'
                   b'"a:override":150,"a:accept":50}},"excluded":["override_rate|"],"_features":{"start":'
                   b'1795154400000,"n":200,"f":{"country":[0,0.0,0.0,null,null,200,0,1,"DE",200]},'
                   b'"x":["feature_frozen|country"]}}',
}


def rate_summary(i: int, overrides: int, excluded: frozenset[str] = frozenset()) -> detect.Summary:
    return detect.Summary(T0 + i * HOUR, T0 + (i + 1) * HOUR, "v1",
                          {"": {"n": 200, "a:override": overrides, "a:accept": 200 - overrides}}, excluded)


def country_summary(i: int, distinct: int, top: int, excluded: frozenset[str] = frozenset()) -> WindowFeatures:
    return WindowFeatures(T0 + i * HOUR, 200, {"country": FeatureStats(200, strings=200, distinct=distinct,
                                                                     top_value="DE", top_count=top)}, excluded)


EXPECTED = Memory(
    rate=detect.State({"override_rate|": detect.Track(1, 0, "sustained", "fix_upstream_feature")}),
    feature=features.State({"feature_frozen|country": features.Track(1, 0, "sustained", since=T0 + 6 * HOUR)}),
    rate_history={T0 + 5 * HOUR: rate_summary(5, 22),
                  T0 + 6 * HOUR: rate_summary(6, 150, frozenset({"override_rate|"}))},
    feature_history={T0 + 5 * HOUR: country_summary(5, 4, 58),
                     T0 + 6 * HOUR: country_summary(6, 1, 200, frozenset({"feature_frozen|country"}))})


def scenario() -> list[Closed]:
    """Six quiet windows (overrides ~10%, country varied), then one where overrides jump to 75% and country
    freezes at one value."""
    rng = random.Random(5)
    out = []
    for i in range(7):
        spike = i == 6
        overrides = 150 if spike else 20 + i % 3
        values = ["DE"] * 200 if spike else [rng.choice(["DE", "US", "FR", "GB"]) for _ in range(200)]
        top = max(set(values), key=lambda v: (values.count(v), v))
        stats = FeatureStats(n=200, strings=200, distinct=len(set(values)), top_value=top,
                             top_count=values.count(top))
        out.append(Closed(Window(T0 + i * HOUR, HOUR), {("v1", "", "n"): 200, ("v1", "", "a:override"): overrides,
                                                         ("v1", "", "a:accept"): 200 - overrides},
                          200, {"country": stats}))
    return out


def run(windows: list[Closed]) -> list[tuple[Memory, bytes, bytes, list[str]]]:
    """Judge every stage of the windows in (due, order) order as the evaluator does, each judgement starting from
    the memory the previous one left; per window, the memory, state and entry after its last stage, and every
    alert its stages published."""
    memory = decode(None, {})
    by_start = {c.window.start: c for c in windows}
    last = windows[-1].window.end + max(s.age_ms for s in STAGES)
    out: dict[int, tuple[Memory, bytes, bytes, list[str]]] = {}
    for due in due_stages(windows[0].window.start, None, last, HOUR, STAGES):
        if due.window.start not in by_start:
            continue  # a window after the last: its predictions' stage comes before the last one's looks
        closed = by_start[due.window.start]
        verdict = judge("claims", closed, due.stage, memory, [], MS, NOW)
        memory = verdict.memory
        alerts = [f"{a.signal}:{a.status}:{a.classification}" for a in [*verdict.rate.alerts,
                                                                         *verdict.feature.alerts]]
        assert sorted(verdict.outbox) == sorted(a.alert_id for a in [*verdict.rate.alerts, *verdict.feature.alerts])
        before = out.get(closed.window.start, (memory, b"", b"", []))[3]
        out[closed.window.start] = (memory, verdict.state_json(), verdict.summary_json(), before + alerts)
    return [out[c.window.start] for c in windows]


def test_a_window_with_a_rate_spike_and_a_frozen_feature_returns_both_alerts() -> None:
    runs = run(scenario())
    assert [alerts for *_, alerts in runs[:6]] == [[]] * 6
    # feature health at the window's end ('n'), the override rate an hour later (its first action look)
    assert runs[6][3] == ["feature_frozen:firing:sustained", "override_rate:firing:sustained"]
    memory = runs[6][0]
    # the rate alert's recommendation cites the frozen feature: the feature detector ran first, in the same judge
    assert memory.rate.tracks["override_rate|"].recommendation == "fix_upstream_feature"
    assert memory.feature.tracks["feature_frozen|country"].status == "sustained"


def test_the_judge_writes_the_stored_layout_and_the_keys_it_decided() -> None:
    # the state JSON is as the evaluator stored it before stages existed; a window's entry adds the keys its
    # looks decided (each (signal, scope) steps its state machine once per window)
    memory, state_json, summary_json, _ = run(scenario())[6]
    decided = b',"decided":["override_rate|"],"_features"'
    # and a string feature judged against a baseline its top values and novel count (none here: no top values)
    def measured(entry: bytes, top: bytes) -> bytes:
        return entry.replace(b',"_features"', decided).replace(top + b"]", top + b",[],0]")
    # and a rate track its streak's first window, as the feature tracks always did
    since = b'"fix_upstream_feature",%d]' % (T0 + 6 * HOUR)
    assert state_json == STORED_STATE.replace(b'"fix_upstream_feature"]', since)
    assert summary_json == measured(STORED_HISTORY[T0 + 6 * HOUR], b'"DE",200')
    assert encode(memory)[1][T0 + 5 * HOUR] == measured(STORED_HISTORY[T0 + 5 * HOUR], b'"DE",58')


def test_history_older_than_the_baseline_is_forgotten() -> None:
    memory = run(scenario())[6][0]
    # window 6's last look is due at T0 + 8h; the oldest window with a look still to come then starts at T0 + 6h
    # (its last look an hour after its end), and its four baseline windows start from T0 + 2h
    assert sorted(memory.rate_history) == sorted(memory.feature_history) == [T0 + i * HOUR for i in range(2, 7)]


def test_history_covers_the_baseline_of_the_slowest_look() -> None:
    ms = ModelSettings(window_seconds=3600, baseline_windows=4)  # outcomes judged up to 7 days after a window
    stage = ms.stages()[0]
    assert history_from(Window(T0, HOUR), stage, ms) == T0 + HOUR - 7 * 24 * HOUR - HOUR - 4 * HOUR


def test_a_follow_up_stage_keeps_the_feature_part_of_the_entry() -> None:
    windows = scenario()
    memory = decode(None, {})
    n_stage, a_stage = STAGES[0], STAGES[1]
    memory = judge("claims", windows[0], n_stage, memory, [], MS, NOW).memory
    entry = memory.feature_history[T0]
    verdict = judge("claims", Closed(windows[0].window, windows[0].counts, 0, {}), a_stage, memory, [], MS, NOW)
    assert verdict.feature.summary == entry and verdict.feature.alerts == []
    assert verdict.memory.feature == memory.feature
    assert orjson.loads(verdict.summary_json())["_features"] == orjson.loads(encode_summary(
        verdict.rate.summary, entry))["_features"]


def test_stored_state_decodes_to_the_states_the_detectors_had() -> None:
    assert decode(STORED_STATE, STORED_HISTORY) == EXPECTED


def test_stored_state_encodes_back_byte_for_byte() -> None:
    assert encode(decode(STORED_STATE, STORED_HISTORY)) == (STORED_STATE, STORED_HISTORY)


def test_a_history_entry_from_before_feature_health_keeps_its_rate_summary() -> None:
    old = b'{"start":1795150800000,"end":1795154400000,"version":"v1","scopes":{"":{"n":200}},"excluded":[]}'
    memory = decode(b'{"override_rate|":[2,0,"transient",""]}', {T0 + 5 * HOUR: old})
    assert memory.rate_history == {T0 + 5 * HOUR: detect.Summary(T0 + 5 * HOUR, T0 + 6 * HOUR, "v1",
                                                                 {"": {"n": 200}})}
    assert memory.feature_history == {}
    assert memory.feature == features.State()
    assert memory.rate.tracks == {"override_rate|": detect.Track(2, 0, "transient", "")}


@pytest.mark.parametrize("memory", [
    # nothing judged yet
    Memory(detect.State(), features.State(), {}, {}),
    # the sample the evaluator stored
    EXPECTED,
    # only the rate detector holds a track, and a window excluded from later baselines
    Memory(detect.State({"outcome_mismatch|region=eu": detect.Track(0, 1, "sustained", "retrain")}),
           features.State(), {T0: rate_summary(0, 30, frozenset({"outcome_mismatch|region=eu"}))},
           {T0: country_summary(0, 3, 90)}),
    # only the feature detector holds tracks, one of them a streak not yet announced
    Memory(detect.State(), features.State({"feature_missing|income": features.Track(2, 0, "idle", since=T0),
                                           "feature_frozen|country": features.Track(3, 0, "transient", since=T0)}),
           {}, {}),
])
def test_decode_reads_back_what_encode_wrote(memory: Memory) -> None:
    assert decode(*encode(memory)) == memory


def test_state_and_summary_share_one_layout() -> None:
    # the feature detector's part sits under features.STATE_KEY in both values
    assert encode_state(detect.State(), features.State()) == b'{"_features":{}}'
    assert encode_summary(rate_summary(0, 0), WindowFeatures(T0, 0, {})).endswith(
        b'"_features":{"start":1795132800000,"n":0,"f":{},"x":[]}}')


@pytest.mark.parametrize(("counts", "version"), [
    ({}, ""),                                                                 # no predictions at all
    ({("v1", "", "n"): 5, ("v2", "", "n"): 9}, "v2"),                         # the version with most predictions
    ({("v1", "", "n"): 5, ("v2", "", "n"): 5}, "v2"),                         # a tie goes to the greater name
    ({("v1", "", "n"): 5, ("v2", "region=eu", "n"): 9, ("v2", "", "a:accept"): 9}, "v1"),  # model scope's n only
])
def test_the_window_version_is_the_one_with_most_predictions(counts: dict[tuple[str, str, str], int],
                                                             version: str) -> None:
    assert dominant_version(counts) == version
