"""Feature health: per-window statistics of the `features` snapshot, and the detectors that judge them.

An upstream metric that is deprecated rarely errors: it freezes at its last value, arrives on a new scale, or
goes null. Each detector compares a feature's closed window with the same feature's trailing baseline windows:
- `feature_frozen`: one distinct value (or no spread) in a feature that varied in its baseline;
- `feature_scale_shift`: the root mean square moves by `feature_scale_factor` or more while values still vary;
- `feature_missing`: the null-or-absent rate rises `feature_missing_gap` above the baseline's;
- `feature_novel_values`: a string feature carries more of its traffic in values its baseline never carried (or in
  a catch-all such as `other`): a categorisation gone stale. Known values are those among the top values
  (`FEATURE_TOP_K` per bucket, Space-Saving) of the baseline windows; a window's novel count is measured at its
  own judgement against its own baseline and kept in history, so the baseline windows' novelty (the churn of a
  feature with many values) is measured the same way as the window's. The share of novel values is tested with
  the share test of segment_shift (stats.share_rise: the windows' spread, or the exact test where the baseline
  never had any), Holm-corrected over the window's string features, and needs `feature_novel_gap` as well.
Each needs `min_samples`, and alerts go through the same transient / sustained / resolved / expected steps as
the rate signals. No I/O: the store reads the statistics, the evaluator in app.py commits the result.
"""

from __future__ import annotations

import math
import operator
import statistics
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, cast

from . import detect, stats as tests
from .events import AlertWindow, AlignmentAlert, Annotation, Signal
from .settings import ModelSettings
from .times import epoch_ms, from_ms, iso_ms
from .windows import Window

SIGNALS: tuple[Signal, ...] = ("feature_frozen", "feature_scale_shift", "feature_missing", "feature_novel_values")
STATE_KEY = "_features"
"""Where the feature detector's state and window summaries ride inside the model's state and history JSON, so
that they are committed by the same compare-and-set as the rate detector's."""

FROZEN_SHARE = 0.99        # a string feature whose top value holds this share has stopped varying
FLAT_SPREAD = 1e-3         # a numeric spread below this fraction of the baseline's is "no spread"
VARIED_FRACTION = 0.1      # a baseline varied when fewer than this fraction of its windows looked frozen
VALUE_MAX = 100            # characters of a string value kept for the diagnosis
TOPS_KEPT = 16             # merged top values a window's statistics carry (the largest of its buckets' summaries)
KNOWN_SHARE = 1 / 64       # a top value kept in history, as known to later baselines, holds this share or more
KNOWN_MAX = 256            # known values of a feature, the most frequent first: the set is capped like the labels
NAMED_MAX = 3              # novel values the diagnosis names


STRING_MAX = 256  # bytes of a string value counted (the top-value hash field and the HLL element), cut at a character


def cut(value: str) -> str:
    """A string value's first STRING_MAX bytes, cut back to a character boundary (as the apply script's `cut`)."""
    if len(value) * 4 <= STRING_MAX:  # at most 4 bytes per character in UTF-8
        return value
    return value.encode()[:STRING_MAX].decode("utf-8", "ignore")


_ABSENT = object()  # a feature a snapshot does not carry (None is one sent as null)


@dataclass(frozen=True, slots=True)
class GroupStats:
    """What a group of `features` snapshots adds to a window's statistics (`summarize`)."""

    # per feature name: [numbers, their sum, their sum of squares, min, max, strings, nulls sent, [value, count, ...]],
    # the string values cut (`cut`) and in first-seen order; None when a sum is not finite (JSON carries no
    # infinity): the apply script then counts the snapshots one by one
    stats: dict[str, list[Any]] | None
    numbers: dict[str, set[float]]  # per feature name: its distinct numbers (the window's HyperLogLog)
    strings: dict[str, list[str]]   # per feature name: its distinct strings, cut


def summarize(snapshots: Sequence[Mapping[str, Any]]) -> GroupStats:
    """A group's feature statistics as the apply script adds them whole where every snapshot of the group was newly
    stored (it counts snapshot by snapshot, into the same shape, where some were not).

    This runs on the worker's main thread for every prediction, so each feature's values go through C-level list,
    sum and Counter calls, and a Python step per value only where numbers and strings mix in one feature."""
    stats: dict[str, list[Any]] | None = {}
    numbers: dict[str, set[float]] = {}
    strings: dict[str, list[str]] = {}
    for name in set().union(*snapshots):
        values = list(map(operator.methodcaller("get", name, _ABSENT), snapshots))
        nulls = values.count(None)
        if nulls or values.count(_ABSENT):
            values = [v for v in values if v is not None and v is not _ABSENT]
        counts: Counter[str] = Counter()
        try:  # numbers only (the common case): a string makes the sum raise
            nums, total = values, sum(values)
        except TypeError:
            counts = Counter(values)
            if any(type(v) is not str for v in counts):
                nums = [v for v in values if type(v) is not str]
                counts = Counter(v for v in values if type(v) is str)
            else:
                nums = []
            total = sum(nums)
        squares = sum(map(operator.mul, nums, nums))
        if not (math.isfinite(total) and math.isfinite(squares)):
            stats = None
        if any(len(v) * 4 > STRING_MAX for v in counts):
            cut_counts: Counter[str] = Counter()
            for v, c in counts.items():
                cut_counts[cut(v)] += c
            counts = cut_counts
        if nums:
            numbers[name] = set(nums)
        if counts:
            strings[name] = list(counts)
        if stats is not None:
            stats[name] = [len(nums), total, squares, min(nums, default=None), max(nums, default=None),
                           len(values) - len(nums), nulls, [x for pair in counts.items() for x in pair]]
    return GroupStats(stats, numbers, strings)


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
    tops: tuple[tuple[str, int], ...] = ()  # the top string values and their estimated counts, largest first
    novel: int = -1           # string values outside the known ones or catch-alls (-1: not measured)

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
        out: list[Any] = [self.values, self.total, self.squares, self.lo, self.hi, self.strings,
                          self.explicit_nulls, self.distinct, self.top_value, self.top_count]
        if self.tops or self.novel >= 0:  # written only where known: older entries read (and re-encode) the same
            out += [[list(t) for t in self.tops], self.novel]
        return out

    @classmethod
    def from_json(cls, n: int, d: Sequence[Any]) -> FeatureStats:
        head, tops, novel = d[:10], d[10] if len(d) > 10 else [], d[11] if len(d) > 11 else -1
        return cls(n, *head, tops=tuple((v, c) for v, c in tops), novel=novel)  # type: ignore[misc]


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
    p: float | None = None  # a tested finding's one-sided p-value (the candidate also needs it, after Holm)


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


def known_values(base: Sequence[FeatureStats]) -> set[str]:
    """The values a feature carried in its baseline windows: the top values their history kept (`remembered`),
    at most KNOWN_MAX, the most frequent first."""
    seen: Counter[str] = Counter()
    for b in base:
        seen.update(dict(b.tops))
    return {v for v, _ in seen.most_common(KNOWN_MAX)}


def remembered(stats: FeatureStats) -> FeatureStats:
    """A window's statistics as history keeps them: only the top values with KNOWN_SHARE of its strings, so a
    feature of many rare values (a search query) keeps none of them and history stays small."""
    return replace(stats, tops=tuple((v, c) for v, c in stats.tops if c >= KNOWN_SHARE * stats.strings))


def novel_count(cur: FeatureStats, known: set[str], ms: ModelSettings) -> int:
    """The window's string values outside `known`, or in a catch-all: its top values' estimated counts (a value
    below every bucket's top-K is not seen: the count is a lower bound, as is the baseline windows')."""
    return min(cur.strings, sum(c for v, c in cur.tops if v not in known or v in ms.feature_catch_all))


def novel_values(cur: FeatureStats, base: Sequence[FeatureStats], ms: ModelSettings) -> Finding | None:
    """A string feature's share of novel values (`novel`, see the module docstring) rises above its baseline's."""
    if cur.strings < ms.min_samples or cur.novel < 0:
        return None
    windows = [(b.novel, b.strings) for b in base if b.novel >= 0 and b.strings > 0]
    if len(windows) < 2 or sum(w[1] for w in windows) < ms.min_samples:
        return None
    test = tests.share_rise(cur.novel, cur.strings, windows)
    bk, bn = sum(w[0] for w in windows), sum(w[1] for w in windows)
    known = known_values(base)
    named = ", ".join(f"{v[:VALUE_MAX]!r} {c / cur.strings:.0%}" for v, c in
                      [(v, c) for v, c in cur.tops if v not in known or v in ms.feature_catch_all][:NAMED_MAX])
    share, baseline = cur.novel / cur.strings, bk / bn
    detail = (f"carries {share:.0%} of its values in values its baseline never carried or in catch-alls "
              f"(baseline {baseline:.1%}): {named or 'none named'}")
    return Finding(share - baseline >= ms.feature_novel_gap, share, baseline, cur.strings, bn, detail, test.p)


DETECTORS = {"feature_frozen": frozen, "feature_scale_shift": scale_shift, "feature_missing": missing,
             "feature_novel_values": novel_values}


Track = detect.Track
"""One (signal, feature): the rate signals' track (its `since` kept always: the feature alerts' diagnosis names it)."""


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
    findings: dict[tuple[str, Signal], Finding] = {}
    for feature in sorted(names):
        # a window where any of the feature's signals fired is out of all its baselines: once income froze,
        # its frozen windows must not make the next rescale look small either
        broken = {f"{signal}|{feature}" for signal in SIGNALS}
        base = [h.get(feature) for h in baseline_windows if not h.excluded & broken]
        cur = current.get(feature)
        if cur.strings and sum(1 for b in base if b.strings) >= 2:  # measured against its own baseline, kept
            cur = replace(cur, novel=novel_count(cur, known_values(base), ms))
        if cur.strings:
            current.stats[feature] = remembered(cur)
        for signal in SIGNALS:
            finding = DETECTORS[signal](cur, base, ms)
            if finding is not None:  # else too few samples to judge: the track neither advances nor heals
                findings[(feature, signal)] = finding
    # the tested findings (novel values) are a family per window: Holm over the window's string features
    tested = [k for k, f in findings.items() if f.p is not None]
    for k, p in zip(tested, tests.holm([cast(float, findings[k].p) for k in tested]), strict=True):
        findings[k] = replace(findings[k], candidate=findings[k].candidate and p <= ms.alpha, p=p)
    for (feature, signal), finding in findings.items():
        key = f"{signal}|{feature}"
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
    summary = WindowFeatures(window.start, n, current.stats, frozenset(excluded))
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
                     "the categorisation is out of date: update the feature's categories before trusting or "
                     "retraining on these windows" if signal == "feature_novel_values" else
                     "upstream data, not the model: fix the feature before trusting or retraining on these windows"]
    return AlignmentAlert(
        alert_id=detect.alert_id(model, signal, scope, window, status),
        fingerprint=detect.fingerprint(model, signal, scope), status=status,
        classification=classification,
        severity="ticket" if classification == "sustained" else "info",
        signal=signal, model=model, model_version=version, scope={"feature": feature},
        window=AlertWindow(start=from_ms(window.start), end=from_ms(window.end)), observed=finding.observed,
        baseline=finding.baseline, gap=finding.observed - finding.baseline, n=finding.n,
        baseline_n=finding.baseline_n, p_value=finding.p, persistence=track.streak, diagnosis=diagnosis,
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
