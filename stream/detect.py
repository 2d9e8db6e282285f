"""Alignment-gap detection: pure decisions from window counts, history and the detector's state.

Input: the counts of the window that just closed, the summaries of the trailing closed windows, the detector
state, the model's annotations and its active feature-health alerts. Output: a summary of this window (to become
history), the new state and the alerts to publish. No I/O: the evaluator in app.py reads and writes Redis around
`evaluate`.

One window, in order:
1. measure every (signal, scope) against its baseline: the trailing windows minus those excluded for that key
   (annotated, or inside a sustained alert);
2. Holm-correct the p-values of all tests of the window; a *candidate* is significant and at least `min_gap`;
3. step each key's state machine (idle -> transient -> sustained -> resolved; annotated -> expected);
4. diagnose (where the excess sits) and recommend one action per alert.

Publication policy: an alert is published on a transition only, never once per window while nothing changes:
`transient` for every candidate window of a short streak (each such window is one to keep out of training
data), `sustained` once when the streak reaches `persistence`, `resolved` once after `resolve_after` clean
windows, `expected` once when an annotated shift starts. A window without enough samples for a key neither
extends nor breaks its streak nor counts as clean: no data is not evidence.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

from . import stats
from .events import AlertWindow, AlignmentAlert, Annotation, Recommendation, Signal
from .settings import ModelSettings
from .times import epoch_ms, from_ms
from .windows import Window

# signal -> (numerator counters, denominator counters) over a scope's window counts
RATE_SIGNALS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "override_rate": (("a:override", "a:bypass"), ("a:accept", "a:override", "a:bypass", "a:escalate")),
    "outcome_mismatch": (("m:truth",), ("o:truth",)),
}
PROXY_RATE = (("m:proxy",), ("o:proxy",))
SIGNALS: tuple[Signal, ...] = ("override_rate", "outcome_mismatch", "proxy_divergence")
# rates exported as metrics (the proxy's own mismatch rate shows what proxy_divergence compares)
EXPORTED_RATES = {**RATE_SIGNALS, "proxy_mismatch": PROXY_RATE}
# what one unit of excess is, for the diagnosis ("region=eu carries 82% of the excess overrides")
_EXCESS_NOUN = {"override_rate": "overrides", "outcome_mismatch": "mismatched outcomes",
                "proxy_divergence": "proxy-truth divergence"}


@dataclass(frozen=True, slots=True)
class Summary:
    """A closed window reduced to what detection needs: counts per scope (versions summed)."""

    start: int
    end: int
    version: str
    scopes: dict[str, dict[str, int]]
    excluded: frozenset[str] = frozenset()  # "signal|scope" keys kept out of later baselines

    def to_json(self) -> dict[str, Any]:
        return {"start": self.start, "end": self.end, "version": self.version, "scopes": self.scopes,
                "excluded": sorted(self.excluded)}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Summary:
        return cls(d["start"], d["end"], d["version"], d["scopes"], frozenset(d.get("excluded", ())))


def summarise(window: Window, counts: Mapping[tuple[str, str, str], int]) -> Summary:
    """Sum version-level counters per scope; the window's version is the one with most events."""
    scopes: dict[str, dict[str, int]] = {}
    per_version: dict[str, int] = {}
    for (version, scope, counter), n in counts.items():
        c = scopes.setdefault(scope, {})
        c[counter] = c.get(counter, 0) + n
        if scope == "":
            per_version[version] = per_version.get(version, 0) + n
    version = max(per_version, key=lambda v: (per_version[v], v)) if per_version else ""
    return Summary(window.start, window.end, version, scopes)


def rate(counts: Mapping[str, int], signal: str) -> tuple[int, int]:
    """(successes, trials) of a rate (a RATE_SIGNALS or EXPORTED_RATES name) in one scope's counts."""
    num, den = EXPORTED_RATES[signal]
    return sum(counts.get(c, 0) for c in num), sum(counts.get(c, 0) for c in den)


def scope_dict(scope: str) -> dict[str, str]:
    """'' -> {} (whole model); 'band=low' -> {'band': 'low'}."""
    if not scope:
        return {}
    dim, _, value = scope.partition("=")
    return {dim: value}


def fingerprint(model: str, signal: str, scope: str) -> str:
    """Stable per (model, signal, scope): the alert's Kafka key, so one scope's story stays in order."""
    return hashlib.sha256(f"{model}\x1f{signal}\x1f{scope}".encode()).hexdigest()[:16]


def alert_id(model: str, signal: str, scope: str, window: Window, status: str) -> str:
    """Unique per evaluation, yet the same if a crash makes the same evaluation publish twice."""
    return hashlib.sha256(f"{model}\x1f{signal}\x1f{scope}\x1f{window.start}\x1f{status}".encode()).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class Measure:
    """One (signal, scope) of one window against its baseline; `raw` holds the counts the test used."""

    signal: Signal
    scope: str
    observed: float
    baseline: float
    n: int
    baseline_n: int
    windows: int        # baseline windows behind `baseline`
    p: float            # one-sided p-value before the multiple-testing correction
    direction_ok: bool  # proxy_divergence only: the proxy says better (or flat) and the truth is not better
    raw: tuple[Any, ...]

    @property
    def gap(self) -> float:
        return self.observed - self.baseline

    @property
    def excess(self) -> float:
        """Events above what the baseline rate predicts for this window's trials."""
        return self.gap * self.n

    def interval(self, confidence: float) -> tuple[float, float]:
        """Interval of the gap: Newcombe for a rate, Wald for the proxy difference-in-differences."""
        if self.signal == "proxy_divergence":
            t, q, t0, q0 = self.raw
            return stats.did_rise(t, q, t0, q0, confidence)[2]
        k, n, bk, bn = self.raw
        return stats.newcombe(k, n, bk, bn, confidence)


def _sum(windows: Sequence[Mapping[str, int]], signal: str) -> tuple[int, int]:
    pairs = [rate(w, signal) for w in windows]
    return sum(p[0] for p in pairs), sum(p[1] for p in pairs)


def measure(signal: Signal, scope: str, current: Mapping[str, int], baseline: Sequence[Mapping[str, int]],
            ms: ModelSettings) -> Measure | None:
    """Test one (signal, scope); None when the window or its baseline has fewer than `min_samples`."""
    if signal == "proxy_divergence":
        # truth mismatch minus proxy mismatch: how much worse the truth is than the proxy claims
        t, q = rate(current, "outcome_mismatch"), rate(current, "proxy_mismatch")
        t0, q0 = _sum(baseline, "outcome_mismatch"), _sum(baseline, "proxy_mismatch")
        if min(t[1], q[1], t0[1], q0[1]) < ms.min_samples:
            return None
        _, p_gap, _ = stats.did_rise(t, q, t0, q0, 1 - ms.alpha)
        # Intersection-union: divergence needs the gap to widen *and* the proxy to look better (fewer proxy
        # mismatches, exact test); the larger p-value is a valid level-alpha test of both, and it keeps the
        # Wald statistic's light-tail optimism from reaching the alert alone.
        p = max(p_gap, stats.rise_pvalue(q[1] - q[0], q[1], q0[1] - q0[0], q0[1]))  # proxy agreement rose
        rt, rq, rt0, rq0 = t[0] / t[1], q[0] / q[1], t0[0] / t0[1], q0[0] / q0[1]
        # "the proxy says better while the truth says worse or flat": a truth that got better too is no alarm
        ok = rq <= rq0 and rt >= rt0 - ms.min_gap
        return Measure(signal, scope, rt - rq, rt0 - rq0, t[1], t0[1], len(baseline), p, ok, (t, q, t0, q0))
    k, n = rate(current, signal)
    bk, bn = _sum(baseline, signal)
    if n < ms.min_samples or bn < ms.min_samples:
        return None
    return Measure(signal, scope, k / n, bk / bn, n, bn, len(baseline), stats.rise_pvalue(k, n, bk, bn), True,
                   (k, n, bk, bn))


@dataclass(frozen=True, slots=True)
class Concentration:
    """Where a model-level excess sits: one scope's share of its dimension's positive excess."""

    scope: str
    share: float     # of the dimension's positive excess
    traffic: float   # of the dimension's trials
    rest_gap: float  # gap of the model without this scope: near 0 when the scope alone moved
    rest_p: float    # one-sided p-value of that gap


def rest(whole: Measure, part: Measure) -> tuple[float, float]:
    """(gap, one-sided p-value) of the model's trials outside `part` (whole minus part) against their baseline."""
    if whole.signal == "proxy_divergence":
        t, q, t0, q0 = [(a[0] - b[0], a[1] - b[1]) for a, b in zip(whole.raw, part.raw, strict=True)]
        if min(t[1], q[1], t0[1], q0[1]) <= 0:
            return 0.0, 1.0
        gap, p, _ = stats.did_rise(t, q, t0, q0, 0.95)
        return gap, p
    k, n, bk, bn = (a - b for a, b in zip(whole.raw, part.raw, strict=True))
    if n <= 0 or bn <= 0:
        return 0.0, 1.0
    return k / n - bk / bn, stats.rise_pvalue(k, n, bk, bn)


def concentration(whole: Measure, segments: Mapping[str, Measure]) -> Concentration | None:
    """The scope carrying the largest share of its dimension's positive excess (scopes are `dim=value`)."""
    by_dim: dict[str, dict[str, Measure]] = {}
    for scope, m in segments.items():
        by_dim.setdefault(scope.partition("=")[0], {})[scope] = m
    best: Concentration | None = None
    for dim in sorted(by_dim):
        ms = by_dim[dim]
        total = sum(max(0.0, m.excess) for m in ms.values())
        trials = sum(m.n for m in ms.values())
        if total <= 0 or trials <= 0:
            continue
        top = max(sorted(ms), key=lambda s: ms[s].excess)
        c = Concentration(top, max(0.0, ms[top].excess) / total, ms[top].n / trials, *rest(whole, ms[top]))
        if best is None or c.share > best.share:
            best = c
    return best


@dataclass(slots=True)
class Track:
    """State of one (signal, scope): consecutive candidate windows, clean windows since, and what was announced."""

    streak: int = 0
    clean: int = 0
    status: str = "idle"  # idle | transient | sustained | expected
    recommendation: str = ""  # announced with `sustained`, repeated by its `resolved`


@dataclass(slots=True)
class State:
    tracks: dict[str, Track] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {k: [t.streak, t.clean, t.status, t.recommendation] for k, t in self.tracks.items()
                if t.status != "idle" or t.streak}

    @classmethod
    def from_json(cls, d: Mapping[str, Any] | None) -> State:
        return cls({k: Track(*v) for k, v in (d or {}).items()})


@dataclass(frozen=True, slots=True)
class Evaluation:
    summary: Summary
    state: State
    alerts: list[AlignmentAlert]


def step(track: Track, candidate: bool, annotated: bool, ms: ModelSettings, gap: float = 0.0
         ) -> tuple[str, str] | None:
    """Advance one key's state machine by a tested window; (status, classification) when there is news.

    Hysteresis: a sustained alert starts on significance and `min_gap`, but a window counts as clean only when
    its gap is back under half of `min_gap`; a shifted window that merely missed significance (a small segment
    has little power) neither resolves nor restarts anything.
    """
    if candidate:
        track.clean = 0
        if annotated:
            track.streak = 0  # an explained window counts towards no persistence
            if track.status in ("sustained", "expected"):  # already paged, or already announced as expected
                return None
            track.status = "expected"
            return "firing", "expected"
        track.streak += 1
        if track.status == "sustained":
            return None
        if track.streak >= ms.persistence:
            track.status = "sustained"
            return "firing", "sustained"
        track.status = "transient"
        return "firing", "transient"
    track.streak = 0
    if track.status == "sustained":
        if gap >= ms.min_gap / 2:
            track.clean = 0
            return None
        track.clean += 1
        if track.clean >= ms.resolve_after:
            track.status, track.clean = "idle", 0
            return "resolved", "sustained"
        return None
    if track.status == "expected" and annotated:
        return None  # one annotated shift is announced once, however often it dips under significance
    track.status = "idle"
    return None


@dataclass(frozen=True, slots=True)
class Context:
    """What one window knows about the model as a whole, for the recommendation."""

    feature_alerts: Collection[str] = ()
    proxy_active: bool = False                     # proxy divergence candidate or sustained in any scope
    concentrated: Mapping[str, Concentration] = field(default_factory=dict)  # signal -> where its excess sits
    model_moved: Collection[str] = ()              # signals whose model-level rate moved (see evaluate)
    mismatch_rising: Collection[str] = ()          # scopes whose outcome mismatch is candidate or sustained


def recommend(signal: str, scope: str, classification: str, ctx: Context,
              annotations: Sequence[Annotation] = ()) -> tuple[Recommendation, str]:
    """One recommendation and the reason for it: the first rule that applies, from an annotation or a broken feature
    (nothing to blame the model for) down to a retrain (nothing else explains the rise)."""
    if classification == "expected":
        notes = "; ".join(f"{a.kind} '{a.note}'" for a in annotations)
        return "none", f"covered by an annotation ({notes}): a deliberate change, kept out of the baseline"
    if ctx.feature_alerts:
        broken = ", ".join(_feature_phrase(f) for f in sorted(ctx.feature_alerts))
        return "fix_upstream_feature", (f"feature-health alerts are active for the model ({broken}): the inputs "
                                        "changed, not the world; fix the feature pipeline before judging the model")
    if classification == "transient":
        return "exclude_window_from_training", "too short to be sustained so far: a blip; keep this window out " \
                                               "of training data"
    if signal == "proxy_divergence":
        return "review_objective", ("the proxy improved against its baseline relationship with the truth while the "
                                    "truth did not: the model is optimising the proxy; review the objective")
    if signal == "outcome_mismatch" and ctx.proxy_active:
        return "review_objective", ("proxy divergence co-occurs: retraining on the proxy would double down on it; "
                                    "review the objective first")
    c = ctx.concentrated.get(signal)
    if c is not None:
        return "investigate_segment", (f"{c.scope} carries {c.share:.0%} of the excess {_EXCESS_NOUN[signal]} "
                                       f"with {c.traffic:.0%} of the traffic: look at what changed there")
    if scope and signal not in ctx.model_moved:
        return "investigate_segment", f"confined to {scope}: the model as a whole did not move"
    if signal == "override_rate":
        if scope in ctx.mismatch_rising or "" in ctx.mismatch_rising:
            rec, why = recommend("outcome_mismatch", scope if scope in ctx.mismatch_rising else "", "sustained",
                                 ctx)
            return rec, f"outcome mismatch rose too, so the overrides look justified; for the mismatch: {why}"
        return "investigate_trust", ("overrides rose while outcome mismatch did not: people stopped trusting "
                                     "decisions that are still right; talk to the reviewers before the model")
    return "retrain_candidate", ("a broad rise that nothing else explains: no scope carries most of it, features "
                                 "healthy, no proxy divergence, no annotation")


def _feature_phrase(alert: str) -> str:
    """'feature_frozen:income' -> "'income' (frozen)"."""
    signal, _, feature = alert.partition(":")
    return f"{feature!r} ({signal.removeprefix('feature_').replace('_', ' ')})"


def _overlaps(a: Annotation, window: Window, scope: str) -> bool:
    start, end = epoch_ms(a.start), epoch_ms(a.end) if a.end else None
    if start >= window.end or (end is not None and end <= window.start):
        return False
    if a.segment:
        return scope_dict(scope).items() <= a.segment.items() or not scope
    return True


def evaluate(model: str, window: Window, counts: Mapping[tuple[str, str, str], int], history: Sequence[Summary],
             state: State, annotations: Sequence[Annotation], ms: ModelSettings, now: datetime,
             feature_alerts: Collection[str] = ()) -> Evaluation:
    """Decide one closed window of one model (see the module docstring); `feature_alerts` describes the
    feature-health alerts active for the model."""
    summary = summarise(window, counts)
    measures, overlapping, excluded = _measure_all(summary, history, annotations, window, ms)
    adjusted = dict(zip(measures, stats.holm([m.p for m in measures.values()]), strict=True))
    candidates = {k for k, m in measures.items() if adjusted[k] <= ms.alpha and m.gap >= ms.min_gap
                  and m.direction_ok}
    new, news = _advance(state, measures, candidates, overlapping, excluded, ms)
    active = {k for k, t in new.tracks.items() if t.status == "sustained"} | candidates
    ctx = Context(feature_alerts=frozenset(feature_alerts),
                  proxy_active=any(k.startswith("proxy_divergence|") for k in active),
                  concentrated=_concentrated(measures, candidates, active, new, ms),
                  model_moved={k.split("|")[0] for k in active if k.endswith("|")}
                  | {m.signal for m in measures.values() if not m.scope and m.gap >= ms.min_gap / 2},
                  mismatch_rising={k.split("|", 1)[1] for k in active if k.startswith("outcome_mismatch|")})
    alerts = []
    for key, status, classification in news:
        name, scope = key.split("|", 1)
        m, track = measures[key], new.tracks[key]
        if status == "resolved":
            rec = cast(Recommendation, track.recommendation or "none")  # what its `sustained` said
            why = f"back within its baseline for {ms.resolve_after} consecutive windows"
            track.recommendation = ""
        else:
            rec, why = recommend(name, scope, classification, ctx, overlapping[key])
            if classification == "sustained":
                track.recommendation = rec
        alerts.append(_alert(model, window, summary.version, m, status, classification, rec,
                             _diagnosis(m, adjusted[key], len(measures), track, classification, status, ms, measures,
                                        why), track.streak, adjusted[key], overlapping[key], ms, now))
    summary = Summary(summary.start, summary.end, summary.version, summary.scopes, frozenset(excluded))
    return Evaluation(summary, new, alerts)


def _measure_all(summary: Summary, history: Sequence[Summary], annotations: Sequence[Annotation], window: Window,
                 ms: ModelSettings) -> tuple[dict[str, Measure], dict[str, list[Annotation]], set[str]]:
    """Every (signal, scope) of the window measured against its baseline windows: the measures by key, the
    annotations overlapping each key, and the keys excluded from future baselines (annotated ones so far)."""
    baseline_windows = sorted(history, key=lambda s: s.start)[-ms.baseline_windows:]
    scopes = sorted(set(summary.scopes) | {s for h in baseline_windows for s in h.scopes})
    measures: dict[str, Measure] = {}
    excluded: set[str] = set()
    overlapping: dict[str, list[Annotation]] = {}
    for signal in SIGNALS:
        for scope in scopes:
            key = f"{signal}|{scope}"
            overlapping[key] = [a for a in annotations if _overlaps(a, window, scope)]
            if overlapping[key]:
                excluded.add(key)
            base = [h.scopes.get(scope, {}) for h in baseline_windows if key not in h.excluded]
            m = measure(signal, scope, summary.scopes.get(scope, {}), base, ms)
            if m is not None:
                measures[key] = m
    return measures, overlapping, excluded


def _advance(state: State, measures: Mapping[str, Measure], candidates: set[str],
             overlapping: Mapping[str, list[Annotation]], excluded: set[str], ms: ModelSettings
             ) -> tuple[State, list[tuple[str, str, str]]]:
    """Step every measured key's track (an untested key holds: no data is no evidence); returns the new state and
    the (key, status, classification) changes to publish. Shifted keys join `excluded`."""
    new = State({k: Track(t.streak, t.clean, t.status, t.recommendation) for k, t in state.tracks.items()})
    news: list[tuple[str, str, str]] = []
    for key in measures:
        track = new.tracks.setdefault(key, Track())
        change = step(track, key in candidates, bool(overlapping[key]), ms, measures[key].gap)
        if track.status in ("sustained", "expected"):
            excluded.add(key)  # a shifted window must not become the baseline it is judged against
        if change:
            news.append((key, *change))
    return new, news


def _concentrated(measures: Mapping[str, Measure], candidates: set[str], active: set[str], new: State,
                  ms: ModelSettings) -> dict[str, Concentration]:
    """Per signal, the one scope that carries most of the model's excess, where the concentration rule holds."""
    concentrated: dict[str, Concentration] = {}
    for signal in SIGNALS:
        if f"{signal}|" not in measures:
            continue
        c = concentration(measures[f"{signal}|"],
                          {m.scope: m for m in measures.values() if m.signal == signal and m.scope})
        # "one scope carries most of the excess": most of it, the scope itself is a candidate, and the rest of
        # the model neither rose significantly now nor holds an active alert in a sibling scope (a broad move
        # can pile one window's excess on one scope by chance), and the model-wide alert, if any, was not
        # already judged broad
        dim = c.scope.partition("=")[0] + "=" if c else ""
        siblings = {k for k in active if k.startswith(f"{signal}|{dim}") and k != f"{signal}|{c.scope if c else ''}"}
        whole = new.tracks.get(f"{signal}|", Track())
        judged_broad = whole.status == "sustained" and whole.recommendation not in ("", "investigate_segment")
        if c is not None and c.share >= ms.concentration_share and c.rest_p > ms.alpha and not siblings \
                and not judged_broad and f"{signal}|{c.scope}" in candidates:
            concentrated[signal] = c
    return concentrated


def _severity(signal: str, classification: str) -> str:
    if classification != "sustained":
        return "info"
    return "ticket" if signal == "proxy_divergence" else "page"


def _diagnosis(m: Measure, p_adj: float, tests: int, track: Track, classification: str, status: str,
               ms: ModelSettings, measures: Mapping[str, Measure], why: str) -> list[str]:
    lo, hi = m.interval(1 - ms.alpha)
    what: str = m.signal
    if m.signal == "proxy_divergence":
        (tk, tn), (qk, qn), (tk0, tn0), (qk0, qn0) = m.raw
        what = (f"truth mismatch {tk / tn:.1%} vs proxy mismatch {qk / qn:.1%} (baseline {tk0 / tn0:.1%} vs "
                f"{qk0 / qn0:.1%}); their difference")
    lines = [f"{what} {m.observed:.1%} vs baseline {m.baseline:.1%} over {m.windows} windows "
             f"(n={m.n}, baseline n={m.baseline_n}): gap {m.gap:+.1%}, {1 - ms.alpha:.0%} interval "
             f"[{lo:+.1%}, {hi:+.1%}], p={p_adj:.2g} Holm-adjusted over {tests} tests"]
    if status == "firing" and classification == "sustained":
        lines.append(f"{track.streak} consecutive windows (persistence {ms.persistence})")
    elif classification == "transient":
        lines.append(f"{track.streak} consecutive window(s), {ms.persistence} make it sustained")
    if not m.scope and status == "firing":
        c = concentration(m, {x.scope: x for x in measures.values() if x.signal == m.signal and x.scope})
        if c is not None:
            lines.append(f"{c.scope} carries {c.share:.0%} of the excess {_EXCESS_NOUN[m.signal]} with "
                         f"{c.traffic:.0%} of the traffic; the rest of the model moved {c.rest_gap:+.1%}")
    lines.append(why)
    return lines


def _alert(model: str, window: Window, version: str, m: Measure, status: str, classification: str,
           rec: Recommendation, diagnosis: list[str], streak: int, p_adj: float, annotations: list[Annotation],
           ms: ModelSettings, now: datetime) -> AlignmentAlert:
    return AlignmentAlert.model_validate({
        "alert_id": alert_id(model, m.signal, m.scope, window, status),
        "fingerprint": fingerprint(model, m.signal, m.scope), "status": status, "classification": classification,
        "severity": _severity(m.signal, classification), "signal": m.signal, "model": model,
        "model_version": version, "scope": scope_dict(m.scope),
        "window": AlertWindow(start=from_ms(window.start), end=from_ms(window.end)), "observed": m.observed,
        "baseline": m.baseline, "gap": m.gap, "n": m.n, "baseline_n": m.baseline_n, "p_value": p_adj,
        "interval": m.interval(1 - ms.alpha), "persistence": streak, "diagnosis": diagnosis,
        "recommendation": rec, "annotations": annotations, "ts": now})
