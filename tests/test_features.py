"""Feature-health detectors on tables of windows, their persistence steps, and the hand-off to detect."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta, timezone

import pytest

from stream import detect, features
from stream.events import Annotation
from stream.features import FeatureStats, WindowFeatures
from stream.settings import ModelSettings
from stream.windows import Window

HOUR = 3600 * 1000
T0 = int(datetime(2026, 11, 20, tzinfo=timezone.utc).timestamp() * 1000)
NOW = datetime(2026, 12, 1, tzinfo=timezone.utc)
MS = ModelSettings(min_samples=50, persistence=3, resolve_after=2, baseline_windows=24)

Value = float | str | None


def stats(values: Sequence[Value], absent: int = 0) -> FeatureStats:
    """Exact statistics of one window's values (`absent` more predictions did not carry the feature)."""
    nums = [v for v in values if isinstance(v, float)]
    strs = [v for v in values if isinstance(v, str)]
    tops = Counter(strs).most_common(features.TOPS_KEPT)
    top = tops[:1]
    return FeatureStats(
        n=len(values) + absent, values=len(nums), total=sum(nums), squares=sum(x * x for x in nums),
        lo=min(nums) if nums else None, hi=max(nums) if nums else None, strings=len(strs),
        explicit_nulls=sum(1 for v in values if v is None), distinct=len({v for v in values if v is not None}),
        top_value=top[0][0] if top else None, top_count=top[0][1] if top else 0, tops=tuple(tops))


def windows(make: Callable[[random.Random], Sequence[Value]], k: int = 12, seed: int = 1) -> list[FeatureStats]:
    rng = random.Random(seed)
    return [stats(make(rng)) for _ in range(k)]


def normal(mu: float, sigma: float, n: int = 100) -> Callable[[random.Random], list[Value]]:
    return lambda rng: [round(rng.gauss(mu, sigma), 2) for _ in range(n)]


def countries(n: int = 100) -> Callable[[random.Random], list[Value]]:
    return lambda rng: [rng.choice(["DE", "US", "FR", "GB"]) for _ in range(n)]


def const(value: Value, n: int = 100) -> Callable[[random.Random], list[Value]]:
    return lambda rng: [value] * n


def with_nulls(share: float, n: int = 100) -> Callable[[random.Random], list[Value]]:
    return lambda rng: [None if rng.random() < share else float(rng.randint(0, 900)) for _ in range(n)]


@pytest.mark.parametrize(("baseline", "current", "fires"), [
    # a numeric feature stuck at its last value
    (windows(normal(50_000, 15_000)), stats([52_000.0] * 100), True),
    # a string feature stuck at one country
    (windows(countries()), stats(["DE"] * 100), True),
    # jitter in the last digits is no spread at all next to the baseline's
    (windows(normal(50_000, 15_000)), stats([52_000.0 + 0.001 * i for i in range(100)]), True),
    # healthy noise must not fire
    (windows(normal(50_000, 15_000)), windows(normal(50_000, 15_000), 1, seed=9)[0], False),
    (windows(countries()), windows(countries(), 1, seed=9)[0], False),
    # a feature that was always constant must not fire
    (windows(const(1.0)), stats([1.0] * 100), False),
    (windows(const("v2")), stats(["v2"] * 100), False),
    # a rare flag is often all zeros in a window: one more such window is not news
    (windows(lambda rng: [1.0 if rng.random() < 0.01 else 0.0 for _ in range(100)]), stats([0.0] * 100), False),
])
def test_feature_frozen(baseline: list[FeatureStats], current: FeatureStats, fires: bool) -> None:
    finding = features.frozen(current, baseline, MS)
    assert finding is not None
    assert finding.candidate is fires


@pytest.mark.parametrize(("baseline", "current", "fires"), [
    # income now in cents: x100
    (windows(normal(50_000, 15_000)), windows(normal(5_000_000, 1_500_000), 1, seed=9)[0], True),
    # a ratio now in percent divided the other way: /100
    (windows(normal(30, 5)), windows(normal(0.3, 0.05), 1, seed=9)[0], True),
    # a zero-centred feature (mean ~0) blown up x50 is judged by its RMS, not a ratio of means near zero
    (windows(normal(0, 1)), windows(normal(0, 50), 1, seed=9)[0], True),
    # healthy noise must not fire, even for a zero-centred feature whose mean flips sign
    (windows(normal(50_000, 15_000)), windows(normal(50_000, 15_000), 1, seed=9)[0], False),
    (windows(normal(0, 1)), windows(normal(0, 1), 1, seed=9)[0], False),
    # a real but modest move (x3) is not an upstream unit change
    (windows(normal(50_000, 15_000)), windows(normal(150_000, 45_000), 1, seed=9)[0], False),
    # frozen at a big value is feature_frozen's news, not a scale shift
    (windows(normal(50, 5)), stats([5_000_000.0] * 100), False),
])
def test_feature_scale_shift(baseline: list[FeatureStats], current: FeatureStats, fires: bool) -> None:
    finding = features.scale_shift(current, baseline, MS)
    assert finding is not None
    assert finding.candidate is fires


@pytest.mark.parametrize(("baseline", "current", "fires"), [
    # nulls 0% -> 60%
    (windows(with_nulls(0.0)), stats([None] * 60 + [1.0] * 40), True),
    # absent from 60% of the snapshots counts the same as null
    (windows(with_nulls(0.0)), stats([1.0] * 40, absent=60), True),
    # the feature vanished from every event of the window
    (windows(with_nulls(0.0)), FeatureStats(n=100), True),
    # healthy noise around a 5% null rate must not fire
    (windows(with_nulls(0.05)), windows(with_nulls(0.05), 1, seed=9)[0], False),
    # 5% -> 15% is worth a look, not feature_missing (gap 0.2)
    (windows(with_nulls(0.05)), stats([None] * 15 + [1.0] * 85), False),
    # a feature that was always half null stays half null
    (windows(with_nulls(0.5)), windows(with_nulls(0.5), 1, seed=9)[0], False),
])
def test_feature_missing(baseline: list[FeatureStats], current: FeatureStats, fires: bool) -> None:
    finding = features.missing(current, baseline, MS)
    assert finding is not None
    assert finding.candidate is fires


@pytest.mark.parametrize("detector", [features.frozen, features.scale_shift, features.missing])
def test_detectors_do_not_judge_below_min_samples(detector: Callable[..., object]) -> None:
    # 49 values/predictions in the window: one short of min_samples
    assert detector(stats([7.0] * 49), windows(normal(50, 5)), MS) is None
    # enough in the window but no baseline yet
    assert detector(stats([7.0] * 100), [], MS) is None


def run(windows_values: list[dict[str, Sequence[Value]]], annotations: Sequence[Annotation] = (),
        ms: ModelSettings = MS) -> list[features.Evaluation]:
    """Evaluate consecutive hourly windows, feeding each summary and state into the next."""
    history: list[WindowFeatures] = []
    state = features.State()
    out = []
    for i, values in enumerate(windows_values):
        window = Window(T0 + i * HOUR, HOUR)
        n = max(len(v) for v in values.values())
        result = features.evaluate("claims", "v1", window, n, {k: stats(v) for k, v in values.items()},
                                   history, state, annotations, ms, NOW)
        history.append(result.summary)
        state = result.state
        out.append(result)
    return out


def healthy_window(rng: random.Random) -> dict[str, Sequence[Value]]:
    return {"income": normal(50_000, 15_000)(rng), "age": [float(rng.randint(18, 80)) for _ in range(100)],
            "country": countries()(rng), "days_since_signup": with_nulls(0.02)(rng)}


def test_healthy_features_raise_no_alert_over_a_week_of_windows() -> None:
    rng = random.Random(5)
    results = run([healthy_window(rng) for _ in range(168)], ms=MS.model_copy(update={"baseline_windows": 168}))
    assert [a for r in results for a in r.alerts] == []


def test_frozen_feature_goes_transient_then_sustained_then_resolves() -> None:
    rng = random.Random(6)
    frozen = [{**healthy_window(rng), "income": [52_000.0] * 100} for _ in range(4)]
    results = run([healthy_window(rng) for _ in range(10)] + frozen + [healthy_window(rng) for _ in range(3)])
    steps = [(i, a.signal, a.status, a.classification, a.severity) for i, r in enumerate(results)
             for a in r.alerts]
    assert steps == [
        (10, "feature_frozen", "firing", "transient", "info"),
        (11, "feature_frozen", "firing", "transient", "info"),
        (12, "feature_frozen", "firing", "sustained", "ticket"),   # announced once, like the rate signals
        (15, "feature_frozen", "resolved", "sustained", "ticket"),  # resolve_after=2 clean windows
    ]
    assert [r.state.active() for r in results[9:16]] == [
        [], ["feature_frozen:income"], ["feature_frozen:income"], ["feature_frozen:income"],
        ["feature_frozen:income"], ["feature_frozen:income"], []]
    alert = results[12].alerts[0]
    assert alert.scope == {"feature": "income"}
    assert alert.recommendation == "fix_upstream_feature"
    assert alert.persistence == 3
    assert "'income'" in alert.diagnosis[0] and "frozen at 52000" in alert.diagnosis[0]
    assert "2026-11-20T10:00:00Z" in alert.diagnosis[0]  # the window where it changed, not this one
    # the broken windows stay out of the baseline, so the frozen value never becomes the norm
    assert all("feature_frozen|income" in r.summary.excluded for r in results[10:14])


def test_scale_shift_diagnosis_gives_the_factor() -> None:
    rng = random.Random(7)
    cents = [{**healthy_window(rng), "income": [x * 100 for x in normal(50_000, 15_000)(rng)]}]  # type: ignore
    results = run([healthy_window(rng) for _ in range(10)] + cents)
    [alert] = results[-1].alerts
    assert alert.signal == "feature_scale_shift"
    assert alert.scope == {"feature": "income"}
    factor = alert.observed / alert.baseline
    assert 90 < factor < 110
    assert f"scale x{factor:.6g}" in alert.diagnosis[0]


def test_feature_that_vanishes_from_the_events_is_missing() -> None:
    rng = random.Random(8)
    gone = {k: v for k, v in healthy_window(rng).items() if k != "days_since_signup"}
    results = run([healthy_window(rng) for _ in range(10)] + [gone])
    [alert] = results[-1].alerts
    assert (alert.signal, alert.scope, alert.observed) == ("feature_missing", {"feature": "days_since_signup"}, 1.0)
    assert "100 absent" in alert.diagnosis[0]


def test_annotated_change_is_expected_and_not_blamed_on_upstream() -> None:
    rng = random.Random(9)
    fix = Annotation(schema_version=1, event_id="a1", model="claims", kind="data_fix",
                     start=datetime.fromtimestamp(T0 / 1000, timezone.utc) + timedelta(hours=10),
                     note="income source migrated")
    results = run([healthy_window(rng) for _ in range(10)] + [{**healthy_window(rng), "income": [1.0] * 100}],
                  annotations=[fix])
    [alert] = results[-1].alerts
    assert (alert.signal, alert.classification, alert.recommendation) == ("feature_frozen", "expected", "none")
    assert [a.event_id for a in alert.annotations] == ["a1"]
    assert results[-1].state.active() == []


def categories(rng: random.Random, new: float = 0.0, n: int = 200) -> list[Value]:
    """A categoriser's output: four known categories (and 2% `other`); `new` of them fall into categories it
    never produced before (a taxonomy gone stale: new intents it maps to new labels or to nothing)."""
    out: list[Value] = []
    for _ in range(n):
        roll = rng.random()
        if roll < new:
            out.append(rng.choice(["crypto_refund", "crypto_refund", "bnpl", "other"]))
        else:
            out.append("other" if roll < new + 0.02 else rng.choice(["billing", "shipping", "returns", "login"]))
    return out


def test_values_a_feature_never_carried_are_feature_novel_values_naming_them() -> None:
    rng = random.Random(11)
    results = run([{"intent": categories(rng)} for _ in range(12)] + [{"intent": categories(rng, 0.35)}
                                                                      for _ in range(3)])
    steps = [(i, a.signal, a.classification) for i, r in enumerate(results) for a in r.alerts]
    assert steps == [(12, "feature_novel_values", "transient"), (13, "feature_novel_values", "transient"),
                     (14, "feature_novel_values", "sustained")]
    alert = results[14].alerts[0]
    assert alert.scope == {"feature": "intent"} and alert.recommendation == "fix_upstream_feature"
    assert alert.observed > 0.3 and alert.baseline < 0.05
    assert "'crypto_refund'" in alert.diagnosis[0] and "'bnpl'" in alert.diagnosis[0]
    assert "feature_novel_values:intent" in results[14].state.active()


def test_a_catch_all_that_swells_is_novel_and_a_feature_of_many_values_is_not() -> None:
    rng = random.Random(12)
    swelling = [{"intent": ["other" if rng.random() < 0.3 else v for v in categories(rng)]} for _ in range(3)]
    results = run([{"intent": categories(rng)} for _ in range(12)] + swelling)
    assert [a.signal for r in results[12:] for a in r.alerts] == ["feature_novel_values"] * 3
    # a search query: new values in every window is what it always does (its baseline windows churn as much)
    queries = [{"query": [f"q{rng.getrandbits(40)}" for _ in range(200)]} for _ in range(30)]
    assert [a for r in run(queries) for a in r.alerts] == []
    # (only its top values are seen, all new: a lower bound, the same in every window)
    assert all(r.summary.get("query").novel == features.TOPS_KEPT for r in run(queries)[2:])
    # and history keeps none of its rare values, where the categories' are all kept
    assert all(r.summary.get("query").tops == () for r in run(queries))
    assert {v for v, _ in run([{"intent": categories(rng)}])[0].summary.get("intent").tops} >= {
        "billing", "shipping", "returns", "login"}


def test_novel_values_need_min_samples_and_an_annotation_makes_them_expected() -> None:
    rng = random.Random(13)
    calm = [{"intent": categories(rng)} for _ in range(12)]
    thin = [{"intent": categories(rng, 0.35, n=40)} for _ in range(3)]  # 40 < min_samples
    assert [a for r in run(calm + thin) for a in r.alerts] == []
    launch = Annotation(schema_version=1, event_id="a2", model="claims", kind="deploy",
                        start=datetime.fromtimestamp(T0 / 1000, timezone.utc) + timedelta(hours=12),
                        note="crypto refunds launched")
    shifted = [{"intent": categories(rng, 0.35)} for _ in range(3)]
    alerts = [a for r in run(calm + shifted, [launch]) for a in r.alerts]
    assert [(a.signal, a.classification, a.recommendation) for a in alerts] == [
        ("feature_novel_values", "expected", "none")]


def test_state_and_summary_survive_json() -> None:
    rng = random.Random(10)
    results = run([healthy_window(rng) for _ in range(10)] + [{**healthy_window(rng), "income": [2.0] * 100}])
    last = results[-1]
    assert features.State.from_json(last.state.to_json()).to_json() == last.state.to_json()
    assert WindowFeatures.from_json(last.summary.to_json()) == last.summary


@pytest.mark.parametrize(("allow", "deny", "name", "watched"), [
    ([], [], "income", True),              # everything by default
    (["age"], [], "income", False),        # an allow list keeps only its names
    (["age"], [], "age", True),
    ([], ["ssn_hash"], "ssn_hash", False),  # a deny list drops its names
    (["age"], ["age"], "age", False),       # deny wins
])
def test_allow_and_deny_lists(allow: list[str], deny: list[str], name: str, watched: bool) -> None:
    ms = ModelSettings(features_allow=allow, features_deny=deny)
    assert features.watched(name, ms) is watched


def _mismatch_counts(k: int, n: int) -> dict[tuple[str, str, str], int]:
    return {("v1", "", "o:truth"): n, ("v1", "", "m:truth"): k}


def _detect(active: Sequence[str]) -> list[tuple[str, str, list[str]]]:
    history = [detect.summarise(Window(T0 + i * HOUR, HOUR), _mismatch_counts(10, 100)) for i in range(5)]
    result = detect.evaluate("claims", Window(T0 + 5 * HOUR, HOUR), _mismatch_counts(40, 100), history,
                             detect.State(), [], MS, NOW, feature_alerts=active)
    return [(a.signal, a.recommendation, a.diagnosis) for a in result.alerts]


def test_rate_alert_recommends_fixing_the_upstream_feature_while_one_is_broken() -> None:
    [(signal, recommendation, diagnosis)] = _detect(["feature_frozen:income", "feature_missing:days_since_signup"])
    assert (signal, recommendation) == ("outcome_mismatch", "fix_upstream_feature")
    text = " ".join(diagnosis)
    assert "'days_since_signup' (missing)" in text and "'income' (frozen)" in text


def test_rate_alert_without_broken_features_keeps_its_recommendation() -> None:
    [(signal, recommendation, diagnosis)] = _detect([])
    assert (signal, recommendation) == ("outcome_mismatch", "exclude_window_from_training")
    assert "feature" not in " ".join(diagnosis)


def test_summarize_gives_each_feature_its_counts_sums_extremes_and_cut_values_in_first_seen_order() -> None:
    long_a, long_b = "é" * 200 + "a", "é" * 200 + "b"  # one value once cut to 256 bytes
    snapshots = [{"x": 2.0, "s": "b"}, {"x": None, "s": long_a}, {"s": "a"}, {"x": 3, "s": "b"},
                 {"x": -1.5, "s": long_b, "y": None}, {"m": 1.0}, {"m": "one"}, {"m": None}, {"m": 2}, {}]
    summary = features.summarize(snapshots)
    assert summary.stats == {
        "x": [3, 3.5, 4.0 + 9 + 2.25, -1.5, 3, 0, 1, []],
        "s": [0, 0, 0, None, None, 5, 0, ["b", 2, "é" * 128, 2, "a", 1]],
        "y": [0, 0, 0, None, None, 0, 1, []],
        "m": [2, 3.0, 5.0, 1.0, 2, 1, 1, ["one", 1]],  # numbers and strings in one feature
    }
    assert summary.numbers == {"x": {2.0, 3, -1.5}, "m": {1.0, 2}}
    assert summary.strings == {"s": ["b", "é" * 128, "a"], "m": ["one"]}
    assert features.summarize([{}]).stats == {}


def test_summarize_gives_up_on_sums_json_cannot_carry() -> None:
    # finite values whose squares overflow: the apply script then counts the snapshots one by one
    overflowing = features.summarize([{"x": 1e200, "s": "a"}, {"x": 1e200}])
    assert overflowing.stats is None
    assert (overflowing.numbers, overflowing.strings) == ({"x": {1e200}}, {"s": ["a"]})  # the HyperLogLog's still
    assert features.summarize([{"x": 1e150}]).stats is not None
