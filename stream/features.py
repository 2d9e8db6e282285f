"""Feature health: per-window statistics of the `features` snapshot, and the detectors that judge them.

An upstream metric that is deprecated rarely errors: it freezes at its last value, arrives on a new scale, or
goes null. Each detector compares a feature's closed window with the same feature's trailing baseline windows:
- `feature_frozen`: one distinct value (or no spread) in a feature that varied in its baseline;
- `feature_scale_shift`: the root mean square moves by `feature_scale_factor` or more while values still vary;
- `feature_missing`: the null-or-absent rate rises `feature_missing_gap` above the baseline's.
Each needs `min_samples`, and alerts go through the same transient / sustained / resolved / expected steps as
the rate signals. No I/O: the store reads the statistics, the evaluator in app.py commits the result.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from . import detect
from .events import AlertWindow, AlignmentAlert, Annotation, Signal
from .settings import ModelSettings
from .times import epoch_ms, from_ms, iso_ms
from .windows import Window

SIGNALS: tuple[Signal, ...] = ("feature_frozen", "feature_scale_shift", "feature_missing")
STATE_KEY = "_features"
"""Where the feature detector's state and window summaries ride inside the model's state and history JSON, so
that they are committed by the same compare-and-set as the rate detector's."""

FROZEN_SHARE = 0.99        # a string feature whose top value holds this share has stopped varying
FLAT_SPREAD = 1e-3         # a numeric spread below this fraction of the baseline's is "no spread"
VARIED_FRACTION = 0.1      # a baseline varied when fewer than this fraction of its windows looked frozen
VALUE_MAX = 100            # characters of a string value kept for the diagnosis


def watched(name: str, ms: ModelSettings) -> bool:
    """Whether the model's allow/deny lists let a feature be tracked (the cap is applied by the store)."""
    if ms.features_allow and name not in ms.features_allow:
        return False
    return name not in ms.features_deny


@dataclass(frozen=True, slots=True)
class FeatureStats:
    """One feature in one closed window, merged over buckets."""

    n: int                    # predictions recorded in the window: the denominator of the null rate
    values: int = 0           # numeric values
    total: float = 0.0        # their sum
    squares: float = 0.0      # their sum of squares
    lo: float | None = None
    hi: float | None = None
    strings: int = 0          # string values
    explicit_nulls: int = 0   # sent as null (the rest of the missing ones were absent from `features`)
    distinct: int = 0         # approximate (HyperLogLog) distinct values, numbers and strings together
    top_value: str | None = None
    top_count: int = 0        # Space-Saving estimate of the top string value's count

    @property
    def present(self) -> int:
        return self.values + self.strings

    @property
    def null_rate(self) -> float:
        return max(self.n - self.present, 0) / self.n if self.n else 0.0

    @property
    def numeric(self) -> bool:
        return self.values >= self.strings and self.values > 0

    @property
    def mean(self) -> float:
        return self.total / self.values if self.values else 0.0

    @property
    def std(self) -> float:
        # sums of squares lose precision when the mean dwarfs the spread; the clamp keeps that noise at zero
        return math.sqrt(max(self.squares / self.values - self.mean ** 2, 0.0)) if self.values else 0.0

    @property
    def rms(self) -> float:
        return math.sqrt(self.squares / self.values) if self.values else 0.0

    @property
    def top_share(self) -> float:
        return min(self.top_count / self.strings, 1.0) if self.strings else 0.0

    def collapsed(self, baseline_std: float | None = None) -> bool:
        """One value, or (numeric) no spread, or (string) one value holding nearly all of them."""
        if self.present == 0:
            return False
        if self.distinct <= 1:
            return True
        if self.numeric:
            if self.lo == self.hi:
                return True
            return baseline_std is not None and baseline_std > 0 and self.std <= FLAT_SPREAD * baseline_std
        return self.top_share >= FROZEN_SHARE

    def to_json(self) -> list[Any]:
        return [self.values, self.total, self.squares, self.lo, self.hi, self.strings, self.explicit_nulls,
                self.distinct, self.top_value, self.top_count]

    @classmethod
    def from_json(cls, n: int, d: Sequence[Any]) -> FeatureStats:
        return cls(n, *d)


@dataclass(frozen=True, slots=True)
class WindowFeatures:
    """A closed window's feature statistics, kept as history; a feature with an `excluded` "signal|feature" key
    is left out of later baselines (every candidate window: a broken window must not become the norm)."""

    start: int
    n: int
    stats: dict[str, FeatureStats]
    excluded: frozenset[str] = frozenset()

    def get(self, feature: str) -> FeatureStats:
        """The feature's statistics; a feature absent from every event of the window is all missing."""
        return self.stats.get(feature) or FeatureStats(self.n)

    def to_json(self) -> dict[str, Any]:
        return {"start": self.start, "n": self.n, "f": {k: v.to_json() for k, v in sorted(self.stats.items())},
                "x": sorted(self.excluded)}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> WindowFeatures:
        n = d["n"]
        return cls(d["start"], n, {k: FeatureStats.from_json(n, v) for k, v in d["f"].items()},
                   frozenset(d.get("x", ())))


@dataclass(frozen=True, slots=True)
class Finding:
    """A detector's judgement of one window: `candidate` when it looks broken."""

    candidate: bool
    observed: float
    baseline: float
    n: int
    baseline_n: int
    detail: str = ""  # what the diagnosis says about it: the frozen value, the factor, the rates


def frozen(cur: FeatureStats, base: Sequence[FeatureStats], ms: ModelSettings) -> Finding | None:
    """Distinct values collapse to one (or spread to ~0) in a feature that varied in its baseline."""
    qualified = [b for b in base if b.present >= ms.min_samples]
    if cur.present < ms.min_samples or not qualified:
        return None
    base_std = _pooled_std(qualified)
    looked_frozen = sum(1 for b in qualified if b.collapsed())
    varied = looked_frozen < VARIED_FRACTION * len(qualified)
    base_distinct = statistics.median(b.distinct for b in qualified)
    collapsed = cur.collapsed(base_std if cur.numeric else None)
    if cur.numeric:
        value = _num(cur.lo) if cur.lo == cur.hi else f"~{_num(cur.mean)} (spread {_num(cur.std)})"
    else:
        value = repr((cur.top_value or "")[:VALUE_MAX])
    detail = (f"frozen at {value}: {cur.distinct} distinct in {cur.present} values, "
              f"baseline {base_distinct:g} distinct per window")
    return Finding(collapsed and varied, cur.distinct, base_distinct, cur.present,
                   sum(b.present for b in qualified), detail)


def scale_shift(cur: FeatureStats, base: Sequence[FeatureStats], ms: ModelSettings) -> Finding | None:
    """The magnitude (root mean square, so a zero-centred feature is judged too) moves by a large factor."""
    qualified = [b for b in base if b.numeric and b.values >= ms.min_samples]
    if not cur.numeric or cur.values < ms.min_samples or not qualified:
        return None
    values = sum(b.values for b in qualified)
    base_rms = math.sqrt(sum(b.squares for b in qualified) / values)
    base_mean = sum(b.total for b in qualified) / values
    if base_rms == 0:
        return None
    factor = cur.rms / base_rms
    healthy = not cur.collapsed()  # a frozen feature is feature_frozen's news, not a new scale
    shifted = factor >= ms.feature_scale_factor or factor <= 1 / ms.feature_scale_factor
    detail = (f"scale x{_num(factor)}: mean {_num(cur.mean)} vs baseline {_num(base_mean)}, "
              f"range [{_num(cur.lo)}, {_num(cur.hi)}], {cur.distinct} distinct")
    return Finding(healthy and shifted, cur.rms, base_rms, cur.values, values, detail)


def missing(cur: FeatureStats, base: Sequence[FeatureStats], ms: ModelSettings) -> Finding | None:
    """The null-or-absent rate jumps far above the baseline's."""
    base_n = sum(b.n for b in base)
    if cur.n < ms.min_samples or base_n < ms.min_samples:
        return None
    base_missing = sum(max(b.n - b.present, 0) for b in base)
    observed, baseline = cur.null_rate, base_missing / base_n
    absent = max(cur.n - cur.present - cur.explicit_nulls, 0)
    detail = (f"missing in {observed:.0%} of {cur.n} predictions ({cur.explicit_nulls} null, {absent} absent) "
              f"vs {baseline:.1%} in the baseline")
    return Finding(observed - baseline >= ms.feature_missing_gap, observed, baseline, cur.n, base_n, detail)


DETECTORS = {"feature_frozen": frozen, "feature_scale_shift": scale_shift, "feature_missing": missing}


@dataclass(slots=True)
class Track(detect.Track):
    """One (signal, feature): the rate signals' track, plus when the current streak began."""

    since: int = 0        # start of the first window of the current streak (ms)


@dataclass(slots=True)
class State:
    tracks: dict[str, Track] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {k: [t.streak, t.clean, t.status, t.since] for k, t in sorted(self.tracks.items())
                if t.status != "idle" or t.streak}

    @classmethod
    def from_json(cls, d: Mapping[str, Any] | None) -> State:
        return cls({k: Track(streak, clean, status, since=since) for k, (streak, clean, status, since)
                    in (d or {}).items()})

    def active(self) -> list[str]:
        """`signal:feature` of every unexplained feature-health alert still open (for detect's recommendation)."""
        out = []
        for key, t in sorted(self.tracks.items()):
            if t.status in ("transient", "sustained"):
                signal, _, feature = key.partition("|")
                out.append(f"{signal}:{feature}")
        return out


@dataclass(frozen=True, slots=True)
class Evaluation:
    summary: WindowFeatures
    state: State
    alerts: list[AlignmentAlert]


def evaluate(model: str, version: str, window: Window, n: int, stats: Mapping[str, FeatureStats],
             history: Iterable[WindowFeatures], state: State, annotations: Sequence[Annotation],
             ms: ModelSettings, now: datetime) -> Evaluation:
    """Judge every feature seen in this window or its baseline; return the window's summary, state and alerts."""
    baseline_windows = sorted(history, key=lambda h: h.start)[-ms.baseline_windows:]
    current = WindowFeatures(window.start, n, dict(stats))
    names = set(stats) | {f for h in baseline_windows for f in h.stats}
    overlapping = [a for a in annotations if _overlaps(a, window)]
    new = State({k: Track(t.streak, t.clean, t.status, since=t.since) for k, t in state.tracks.items()})
    excluded: set[str] = set()
    alerts: list[AlignmentAlert] = []
    for feature in sorted(names):
        cur = current.get(feature)
        # a window where any of the feature's signals fired is out of all its baselines: once income froze,
        # its frozen windows must not make the next rescale look small either
        broken = {f"{signal}|{feature}" for signal in SIGNALS}
        for signal in SIGNALS:
            key = f"{signal}|{feature}"
            base = [h.get(feature) for h in baseline_windows if not h.excluded & broken]
            finding = DETECTORS[signal](cur, base, ms)
            if finding is None:  # too few samples to judge: the track neither advances nor heals
                continue
            track = new.tracks.setdefault(key, Track())
            if finding.candidate:
                excluded.add(key)
                if track.streak == 0:
                    track.since = window.start
            # the rate signals' state machine: transient per candidate window, sustained / expected / resolved once
            news = detect.step(track, finding.candidate, bool(overlapping), ms)
            if track.status == "sustained":
                excluded.add(key)  # kept out of later baselines until it resolves
            if news is not None:
                status, classification = news
                alerts.append(_alert(model, version, signal, feature, window, status, classification, track,
                                     finding, overlapping if classification == "expected" else [], now))
    summary = WindowFeatures(window.start, n, dict(stats), frozenset(excluded))
    return Evaluation(summary, new, alerts)


def _alert(model: str, version: str, signal: Signal, feature: str, window: Window, status: str,
           classification: str, track: Track, finding: Finding, annotations: list[Annotation], now: datetime
           ) -> AlignmentAlert:
    scope = f"feature={feature}"
    since = iso_ms(track.since)
    if status == "resolved":
        diagnosis = [f"feature {feature!r} healthy again for {track.clean or 'several'} windows: {finding.detail}"]
    else:
        diagnosis = [f"feature {feature!r} {finding.detail}; changed in the window starting {since}",
                     "upstream data, not the model: fix the feature before trusting or retraining on these windows"]
    return AlignmentAlert(
        alert_id=detect.alert_id(model, signal, scope, window, status),
        fingerprint=detect.fingerprint(model, signal, scope), status=status,
        classification=classification,
        severity="ticket" if classification == "sustained" else "info",
        signal=signal, model=model, model_version=version, scope={"feature": feature},
        window=AlertWindow(start=from_ms(window.start), end=from_ms(window.end)), observed=finding.observed,
        baseline=finding.baseline, gap=finding.observed - finding.baseline, n=finding.n,
        baseline_n=finding.baseline_n, persistence=track.streak, diagnosis=diagnosis,
        recommendation="none" if classification == "expected" else "fix_upstream_feature",
        annotations=annotations, ts=now)


def _overlaps(a: Annotation, window: Window) -> bool:
    """Any annotation of the model overlapping the window explains a feature change (features have no scope)."""
    start, end = epoch_ms(a.start), epoch_ms(a.end) if a.end else None
    return start < window.end and (end is None or end > window.start)


def _pooled_std(stats: Sequence[FeatureStats]) -> float | None:
    numeric = [s for s in stats if s.numeric]
    values = sum(s.values for s in numeric)
    if not values:
        return None
    mean = sum(s.total for s in numeric) / values
    return math.sqrt(max(sum(s.squares for s in numeric) / values - mean ** 2, 0.0))


def _num(x: float | None) -> str:
    return "none" if x is None else f"{x:.6g}"
