"""Alignment-gap detection: pure decisions from window counts, history and the detector's state.

Windows belong to predictions: a window's follow-ups (actions, outcomes) count toward it by their age after their
prediction, in checkpoint index k (stream.windows). A window is looked at in stages (stream.windows.Stage): at
'n' (its predictions; no rate test), then at each follow-up checkpoint: 'a<k>' tests override_rate, 'o<k>'
outcome_mismatch and proxy_divergence, each on the follow-ups that came within the checkpoint's age
(`at_look`), against the trailing windows *at the same look*: vintage curves, cohorts compared at equal age.

One look, in order:
1. measure every (signal, scope) of the look's kind against its baseline: the trailing windows at the same look
   minus those excluded for that key (annotated, or inside a sustained alert);
2. Holm-correct the p-values of the look's tests and multiply by the window's number of follow-up looks
   (Bonferroni over looks, see stream.stats); a *candidate* is significant and at least `min_gap`;
3. decide: each (signal, scope) steps its state machine (idle -> transient -> sustained -> resolved; annotated
   -> expected) once per window, at the first look that decides it: a candidate at any look, clean at the first
   look where it is measured and its gap is under `min_gap` / 2; what is still undecided at the final look is no
   data (neither extends nor breaks a streak). The window's history entry remembers which keys it decided;
4. diagnose (where the excess sits, at which age) and recommend one action per alert.

Publication policy: an alert is published on a transition only, never once per window while nothing changes:
`transient` for every candidate window of a short streak (each such window is one to keep out of training
data), `sustained` once when the streak reaches `persistence`, `resolved` once after `resolve_after` clean
windows, `expected` once when an annotated shift starts. A window without enough samples for a key neither
extends nor breaks its streak nor counts as clean: no data is not evidence.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

from . import segments, stats
from .events import AlertWindow, AlignmentAlert, Annotation, Recommendation, Signal
from .settings import ModelSettings
from .times import epoch_ms, from_ms, iso_ms
from .windows import Stage, Window

# signal -> (numerator counters, denominator counters) over a scope's counts at one look (counters unsuffixed)
RATE_SIGNALS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "override_rate": (("a:override", "a:bypass"), ("a:accept", "a:override", "a:bypass", "a:escalate")),
    "outcome_mismatch": (("m:truth",), ("o:truth",)),
}
PROXY_RATE = (("m:proxy",), ("o:proxy",))
VALUE = "truth"  # the outcome kind whose values outcome_value tests (keys.window_counts: `v:truth`, `vn:truth`...)
SIGNALS: tuple[Signal, ...] = ("override_rate", "outcome_mismatch", "proxy_divergence", "outcome_value")
"""The signals whose model-level excess can concentrate in one scope (Concentration)."""
# the signals each look kind tests: the predictions' look ('n') the segment shares, each follow-up kind's its rates
# (and the outcomes' value per prediction)
KIND_SIGNALS: dict[str, tuple[Signal, ...]] = {"n": ("segment_shift",), "a": ("override_rate",),
                                               "o": ("outcome_mismatch", "proxy_divergence", "outcome_value")}
ORDER: dict[str, int] = {s: i for i, s in enumerate((*SIGNALS, "segment_shift"))}  # signal-major, as alerts go
KIND_COUNTERS: dict[str, tuple[str, ...]] = {"a": ("a:",), "o": ("o:", "m:", "v:", "vn:", "vl:", "vq:")}
# rates exported as metrics (the proxy's own mismatch rate shows what proxy_divergence compares)
EXPORTED_RATES = {**RATE_SIGNALS, "proxy_mismatch": PROXY_RATE}
# what one unit of excess is, for the diagnosis ("region=eu carries 82% of the excess overrides")
_EXCESS_NOUN = {"override_rate": "excess overrides", "outcome_mismatch": "excess mismatched outcomes",
                "proxy_divergence": "excess proxy-truth divergence", "outcome_value": "excess outcome value"}
_SHORTFALL = "outcome value lost"  # outcome_value's excess where lower is worse (revenue)


@dataclass(frozen=True, slots=True)
class Summary:
    """A window as history keeps it: its raw counters per scope (versions summed; follow-up counters keep their
    checkpoint index), the keys it keeps out of later baselines, and the keys already decided for it."""

    start: int
    end: int
    version: str
    scopes: dict[str, dict[str, float]]  # counts are whole; `v:` counters are sums of outcome values
    excluded: frozenset[str] = frozenset()  # "signal|scope" keys kept out of later baselines
    decided: frozenset[str] = frozenset()   # "signal|scope" keys whose state machine this window already stepped
    # (scope, kind, look) -> at_look of the scope's counters: a window is a baseline for every look of many later
    # windows, each of which would sum its counters again
    _looks: dict[tuple[str, str, int], dict[str, float]] = field(default_factory=dict, compare=False, repr=False)

    def at_look(self, scope: str, kind: str, k: int) -> Mapping[str, float]:
        """`at_look` of one scope's counters (read only: it is remembered)."""
        key = (scope, kind, k)
        got = self._looks.get(key)
        if got is None:
            got = self._looks[key] = at_look(self.scopes.get(scope, {}), kind, k)
        return got

    def to_json(self) -> dict[str, Any]:
        out = {"start": self.start, "end": self.end, "version": self.version, "scopes": self.scopes,
               "excluded": sorted(self.excluded)}
        if self.decided:  # written only once a follow-up look decided something: older entries read the same
            out["decided"] = sorted(self.decided)
        return out

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Summary:
        return cls(d["start"], d["end"], d["version"], d["scopes"], frozenset(d.get("excluded", ())),
                   frozenset(d.get("decided", ())))


def summarise(window: Window, counts: Mapping[tuple[str, str, str], float]) -> Summary:
    """Sum version-level counters per scope; the window's version is the one with most predictions."""
    scopes: dict[str, dict[str, float]] = {}
    per_version: dict[str, float] = {}
    for (version, scope, counter), n in counts.items():
        c = scopes.setdefault(scope, {})
        c[counter] = c.get(counter, 0) + n
        if scope == "" and counter == "n":
            per_version[version] = per_version.get(version, 0) + n
    version = max(per_version, key=lambda v: (per_version[v], v)) if per_version else ""
    return Summary(window.start, window.end, version, scopes)


def at_look(counts: Mapping[str, float], kind: str, k: int) -> dict[str, float]:
    """A scope's counters as they stood at look k of a follow-up kind ('a' or 'o'): each of the kind's counters
    summed over checkpoint indexes <= k, without its index (`a:override#0` + `a:override#1` -> `a:override`);
    counters of no kind (`n`) as they are, the other kind's indexed counters left out.

    The sums are exact once look k was judged: the store counts a later follow-up of index <= k into a later
    checkpoint (and as late). A follow-up counter without an index counts from the first look on."""
    out: dict[str, float] = {}
    for name, n in counts.items():
        base, of_kind, index = _counter(name)
        if index >= 0:
            if of_kind != kind or index > k:
                continue
        out[base] = out.get(base, 0) + n
    return out


@functools.lru_cache(maxsize=4096)
def _counter(name: str) -> tuple[str, str, int]:
    """(name without its checkpoint index, the follow-up kind whose counter it is or '', index or -1): counter names
    are a small set that every window repeats, so each is parsed once."""
    base, _, index = name.partition("#")
    if not index:
        return name, "", -1
    kind = next((k for k, prefixes in KIND_COUNTERS.items() if name.startswith(prefixes)), "")
    return base, kind, int(index)


def totals(counts: Mapping[str, float]) -> dict[str, float]:
    """A scope's counters summed over every checkpoint index (the window's counts so far), for rates and
    reports that show a window as a whole: `rate(totals(c), signal)`."""
    out: dict[str, float] = {}
    for name, n in counts.items():
        base = name.partition("#")[0]
        out[base] = out.get(base, 0) + n
    return out


def rate(counts: Mapping[str, float], signal: str) -> tuple[int, int]:
    """(successes, trials) of a rate (a RATE_SIGNALS or EXPORTED_RATES name) in one scope's unsuffixed counts
    (`at_look` or `totals` of the raw ones)."""
    num, den = EXPORTED_RATES[signal]
    return int(sum(counts.get(c, 0) for c in num)), int(sum(counts.get(c, 0) for c in den))


def value(counts: Mapping[str, float]) -> stats.Amounts:
    """The truth outcomes' values in one scope's unsuffixed counts, with the predictions as exposure:
    outcome_value's value per prediction is `total / n` (a loss ratio when the values are claim amounts over
    unit premiums)."""
    return stats.Amounts(int(counts.get("n", 0)), counts.get(f"v:{VALUE}", 0.0), int(counts.get(f"vn:{VALUE}", 0)),
                         counts.get(f"vl:{VALUE}", 0.0), counts.get(f"vq:{VALUE}", 0.0))


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
    worse: int = 1      # which way is bad: -1 for an outcome value where lower is worse (revenue)

    @property
    def gap(self) -> float:
        return self.observed - self.baseline

    @property
    def excess(self) -> float:
        """Events (value, for outcome_value) beyond what the baseline predicts for this window's trials, in the bad
        direction."""
        return self.worse * self.gap * self.n

    def interval(self, confidence: float) -> tuple[float, float]:
        """Interval of the gap: Newcombe for a rate, Wald for the proxy difference-in-differences, for a segment
        share Newcombe widened by its baseline windows' spread (segments.Share)."""
        if self.signal == "segment_shift":
            return cast(segments.Share, self.raw[0]).interval(confidence)
        if self.signal == "proxy_divergence":
            t, q, t0, q0 = self.raw
            return stats.did_rise(t, q, t0, q0, confidence)[2]
        if self.signal == "outcome_value":
            now, then, _ = self.raw
            return stats.amount_interval(now, then, confidence)
        k, n, bk, bn = self.raw
        return stats.newcombe(k, n, bk, bn, confidence)


def _sum(windows: Sequence[Mapping[str, float]], signal: str) -> tuple[int, int]:
    pairs = [rate(w, signal) for w in windows]
    return sum(p[0] for p in pairs), sum(p[1] for p in pairs)


def measure(signal: Signal, scope: str, current: Mapping[str, float], baseline: Sequence[Mapping[str, float]],
            ms: ModelSettings) -> Measure | None:
    """Test one (signal, scope); None when the window or its baseline has fewer than `min_samples` (an outcome
    value: predictions; or fewer than two baseline windows, no value in them, or a negative sum)."""
    if signal == "outcome_value":
        now = value(current)
        then = sum((value(b) for b in baseline), stats.Amounts(0, 0.0, 0, 0.0, 0.0))
        # a relative change needs money in the baseline (two amounts for their spread), and no negative sums
        if now.n < ms.min_samples or then.n < ms.min_samples or then.count < 2 or then.total <= 0 or now.total < 0:
            return None
        higher = ms.outcome_value_worse == "higher"
        test = stats.amount_rise(now, then, higher)
        return Measure(signal, scope, now.total / now.n, then.total / then.n, now.n, then.n, len(baseline), test.p,
                       True, (now, then, test), 1 if higher else -1)
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
    excess: str = ""  # what the excess is ("excess overrides"); '' for the signal's usual name

    def what(self, signal: str) -> str:
        return self.excess or _EXCESS_NOUN[signal]


def rest(whole: Measure, part: Measure) -> tuple[float, float]:
    """(gap, one-sided p-value) of the model's trials outside `part` (whole minus part) against their baseline."""
    if whole.signal == "outcome_value":
        now, then = whole.raw[0] - part.raw[0], whole.raw[1] - part.raw[1]
        if now.n <= 0 or then.n <= 0:
            return 0.0, 1.0
        return now.total / now.n - then.total / then.n, stats.amount_rise(now, then, whole.worse > 0).p
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
        c = Concentration(top, max(0.0, ms[top].excess) / total, ms[top].n / trials, *rest(whole, ms[top]),
                          _SHORTFALL if whole.worse < 0 else "")
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
    since: int = 0  # start (ms) of the first window of the current streak
    folded: bool = False  # its sustained alert went into another key's page (`_fold`): so does its resolution


@dataclass(slots=True)
class State:
    tracks: dict[str, Track] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        # `since` is written once known: state stored before it existed reads (and writes) the same
        return {k: [t.streak, t.clean, t.status, t.recommendation,
                    *([t.since, 1] if t.folded else [t.since] if t.since else [])]
                for k, t in self.tracks.items() if t.status != "idle" or t.streak}

    @classmethod
    def from_json(cls, d: Mapping[str, Any] | None) -> State:
        return cls({k: Track(*v) for k, v in (d or {}).items()})


@dataclass(frozen=True, slots=True)
class Evaluation:
    summary: Summary
    state: State
    alerts: list[AlignmentAlert]
    baselines: dict[str, float] = field(default_factory=dict)  # every measured "signal|scope" -> its baseline


def practical(m: Measure, ms: ModelSettings) -> tuple[float, float]:
    """(shift, practical minimum) of a measure: for a rate or share its gap and `min_gap` (or, with
    `min_gap_relative`, that multiple of its baseline where it is smaller: 1% -> 3% is practical for a fraud rate);
    for an outcome value its relative change in the bad direction and `outcome_value_min_change` (money has no
    scale-free absolute gap)."""
    if m.signal == "outcome_value":
        return m.worse * (m.observed / m.baseline - 1), ms.outcome_value_min_change
    if ms.min_gap_relative is not None and m.signal != "proxy_divergence":  # a difference has no base rate
        return m.gap, min(ms.min_gap, ms.min_gap_relative * m.baseline)
    return m.gap, ms.min_gap


def step(track: Track, candidate: bool, annotated: bool, ms: ModelSettings, shifted: bool = False
         ) -> tuple[str, str] | None:
    """Advance one key's state machine by a tested window; (status, classification) when there is news.

    Hysteresis: a sustained alert starts on significance and the practical minimum, but a window counts as clean
    only when its shift is back under half of it (`shifted` says it is not); a shifted window that merely missed
    significance (a small segment has little power) neither resolves nor restarts anything.
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
        if shifted:
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
    if signal == "segment_shift":
        return "review_segments", ("who the model sees changed, not how it decides: re-segment or redefine the "
                                   "modelling universe before retraining on this mix")
    if signal == "proxy_divergence":
        return "review_objective", ("the proxy improved against its baseline relationship with the truth while the "
                                    "truth did not: the model is optimising the proxy; review the objective")
    if signal in ("outcome_mismatch", "outcome_value") and ctx.proxy_active:
        return "review_objective", ("proxy divergence co-occurs: retraining on the proxy would double down on it; "
                                    "review the objective first")
    c = ctx.concentrated.get(signal)
    if c is not None:
        return "investigate_segment", (f"{c.scope} carries {c.share:.0%} of the {c.what(signal)} "
                                       f"with {c.traffic:.0%} of the traffic: look at what changed there")
    if scope and signal not in ctx.model_moved:
        return "investigate_segment", f"confined to {scope}: the model as a whole did not move"
    if signal == "override_rate":
        if scope in ctx.mismatch_rising or "" in ctx.mismatch_rising:
            rec, why = recommend("outcome_mismatch", scope if scope in ctx.mismatch_rising else "", "sustained",
                                 ctx)
            return rec, f"the outcomes got worse too, so the overrides look justified; for the outcomes: {why}"
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


@dataclass(frozen=True, slots=True)
class Look:
    """What one stage tests: the follow-up kinds, the checkpoint index (counts at indexes <= it), its age, whether
    it is its kind's last look, and the window's number of follow-up looks (the Bonferroni factor)."""

    kinds: tuple[str, ...]
    index: int
    age_ms: int
    final: bool
    looks: int


WHOLE = Look(("n", "a", "o"), 1 << 30, 0, True, 1)
"""One look at every signal on all the window's counts: a window judged once, complete (`evaluate` without a
stage; the tests of the decision rules and tools that judge finished windows use it)."""


def look_of(stage: Stage | None, ms: ModelSettings) -> Look:
    """The look a stage takes: at 'n' (the window's predictions, complete) the segment shares, at a follow-up
    checkpoint its kind's rates; WHOLE without a stage. A window's looks are its follow-up checkpoints and 'n'."""
    if stage is None:
        return WHOLE
    return Look((stage.kind,), stage.index, stage.age_ms, stage.final,
                len(ms.checkpoints_ms("a")) + len(ms.checkpoints_ms("o")) + 1)


def evaluate(model: str, window: Window, counts: Mapping[tuple[str, str, str], float], history: Sequence[Summary],
             state: State, annotations: Sequence[Annotation], ms: ModelSettings, now: datetime,
             feature_alerts: Collection[str] = (), stage: Stage | None = None) -> Evaluation:
    """Take one look at one window of one model (see the module docstring): `history` holds the trailing windows
    (those starting before this one form the baseline) and this window's own entry from its earlier stages;
    `feature_alerts` describes the feature-health alerts active for the model."""
    summary = summarise(window, counts)
    own = next((h for h in history if h.start == window.start), None)
    excluded = set(own.excluded) if own else set()
    done = own.decided if own else frozenset()
    look = look_of(stage, ms)
    baseline = sorted((h for h in history if h.start < window.start), key=lambda s: s.start)[-ms.baseline_windows:]
    measures, overlapping = _measure_all(summary, baseline, annotations, window, look, ms)
    excluded |= {k for k, a in overlapping.items() if a}
    # Bonferroni over the window's looks, Holm within this one (stream.stats): the family is every test at every
    # look of the window
    holm = stats.holm([m.p for m in measures.values()])
    adjusted = {k: min(1.0, p * look.looks) for k, p in zip(measures, holm, strict=True)}
    shifts = {k: practical(m, ms) for k, m in measures.items()}
    candidates = {k for k, m in measures.items() if adjusted[k] <= ms.alpha and shifts[k][0] >= shifts[k][1]
                  and m.direction_ok}
    new, news, decided = _advance(state, measures, shifts, candidates, overlapping, excluded, done, look.final,
                                  window.start, ms)
    active = {k for k, t in new.tracks.items() if t.status in ("sustained", "transient")} | candidates
    ctx = Context(feature_alerts=frozenset(feature_alerts),
                  proxy_active=any(k.startswith("proxy_divergence|") for k in active),
                  concentrated=_concentrated(measures, candidates, active, new, ms),
                  model_moved={k.split("|")[0] for k in active if k.endswith("|")}
                  | {m.signal for k, m in measures.items() if not m.scope and shifts[k][0] >= shifts[k][1] / 2},
                  mismatch_rising={k.split("|", 1)[1] for k in active
                                   if k.startswith(("outcome_mismatch|", "outcome_value|"))})
    alerts = []
    news, also = _fold(news, active, ctx.concentrated, new)
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
        lines = _diagnosis(m, adjusted[key], len(measures), look, track, classification, status, ms, measures, why)
        if key in also and status == "firing":
            lines.insert(-1, f"also visible in {', '.join(also[key])}: their rise is this one, not news of its own")
        if (not scope or key in also) and status == "firing" and \
                (new_scopes := _untested(summary, measures, name, look, ms)):
            lines.insert(-1, f"not tested, no baseline yet: {new_scopes}")
        alerts.append(_alert(model, window, summary.version, m, status, classification, rec, lines, track.streak,
                             adjusted[key], overlapping[key], ms, now))
    summary = Summary(summary.start, summary.end, summary.version, summary.scopes, frozenset(excluded),
                      done | decided)
    return Evaluation(summary, new, alerts, {k: m.baseline for k, m in measures.items()})


def _untested(summary: Summary, measures: Mapping[str, Measure], signal: str, look: Look, ms: ModelSettings) -> str:
    """The scopes with enough trials in the window but no baseline to test them against (a channel that appeared
    overnight), with their trials and rate, for the model's (or the cause's) alert: what the tests cannot see,
    said. A scope that is the whole model is not one."""
    if signal not in RATE_SIGNALS:
        return ""
    kind = next(k for k, sigs in KIND_SIGNALS.items() if signal in sigs)
    out = []
    for scope, raw in sorted(summary.scopes.items()):
        k, n = rate(at_look(raw, kind, look.index), signal)
        if scope and f"{signal}|{scope}" not in measures and n >= ms.min_samples and raw != summary.scopes.get(""):
            out.append(f"{scope} ({n} {'actions' if kind == 'a' else 'outcomes'}, {signal} {k / n:.1%})")
    return ", ".join(out)


_RANK = {"transient": 1, "sustained": 2}


def _fold(news: list[tuple[str, str, str]], active: Collection[str], concentrated: Mapping[str, Concentration],
          new: State) -> tuple[list[tuple[str, str, str]], dict[str, list[str]]]:
    """One page per cause: per rate signal, the lead key (the scope that carries the excess, by the concentration
    rule; else the model, when it moved) takes the other active keys of the signal, as far along as it is, into
    its diagnosis ("also visible in") instead of their own alerts: when one scope carries the excess, the model's
    and the overlapping scopes' rise is its rise; when the model moved broadly, every scope's is. A folded key's
    resolution is not published either (its firing was not). Returns the news to publish, and per lead the scopes
    folded into it."""
    leads: dict[str, str] = {}
    for signal in SIGNALS:
        c = concentrated.get(signal)
        if c is not None:
            leads[signal] = f"{signal}|{c.scope}"
        elif f"{signal}|" in active:
            leads[signal] = f"{signal}|"
    into: dict[str, str] = {}
    for key in sorted(active):
        lead = leads.get(key.split("|", 1)[0])
        if lead is not None and key != lead and \
                _RANK.get(new.tracks[lead].status, 0) >= _RANK.get(new.tracks[key].status, 0):
            into[key] = lead
    also: dict[str, list[str]] = {}
    for key, lead in into.items():
        also.setdefault(lead, []).append(key.split("|", 1)[1] or "the whole model")
    published = []
    for key, status, classification in news:
        track = new.tracks[key]
        if status == "resolved" and track.folded:
            track.folded = False
            continue
        if status == "firing" and classification in _RANK and key in into:
            track.folded = track.folded or classification == "sustained"
            continue
        published.append((key, status, classification))
    return published, also


def _measure_all(summary: Summary, baseline_windows: Sequence[Summary], annotations: Sequence[Annotation],
                 window: Window, look: Look, ms: ModelSettings
                 ) -> tuple[dict[str, Measure], dict[str, list[Annotation]]]:
    """Every (signal, scope) of the look's kinds measured against the baseline windows at the same look: the
    measures by key, and the annotations overlapping each key (annotated keys leave later baselines)."""
    whole = summary.scopes.get("", {})
    # a scope that is the whole model (`band=all` when no prediction names a band, a dimension with one value) is
    # not tested twice: its alert would say what the model's says, and "it carries all of the excess" besides
    scopes = sorted(s for s in set(summary.scopes) | {s for h in baseline_windows for s in h.scopes}
                    if not s or summary.scopes.get(s) != whole)
    measures: dict[str, Measure] = {}
    overlapping: dict[str, list[Annotation]] = {}
    for kind in look.kinds:
        if kind == "n":
            for key, share in segments.measure_all(summary.scopes, [(h.excluded, h.scopes) for h in baseline_windows],
                                                   ms).items():
                measures[key] = Measure("segment_shift", share.scope, share.share, share.baseline, share.n,
                                        share.baseline_n, len(share.windows), share.test.p, True, (share,))
                overlapping[key] = [a for a in annotations if _covers(a, window, share)]
            continue
        for scope in scopes:
            current = summary.at_look(scope, kind, look.index)
            looked = [(h.excluded, h.at_look(scope, kind, look.index)) for h in baseline_windows]
            for signal in KIND_SIGNALS[kind]:
                key = f"{signal}|{scope}"
                overlapping[key] = [a for a in annotations if _overlaps(a, window, scope)]
                m = measure(signal, scope, current, [c for excluded, c in looked if key not in excluded], ms)
                if m is not None:
                    measures[key] = m
    position = {scope: i for i, scope in enumerate(scopes)}  # a dimension's never-seen values go after its scopes

    def order(key: str) -> tuple[int, int, str]:
        signal, scope = key.split("|", 1)
        return ORDER[signal], position.get(scope, len(position)), scope
    return {k: measures[k] for k in sorted(measures, key=order)}, overlapping


def _covers(a: Annotation, window: Window, share: segments.Share) -> bool:
    """Whether an annotation explains a segment share: it overlaps the window and names no segment, or the value
    itself; for the never-seen values together, one of them."""
    if not _overlaps(a, window, ""):
        return False
    if not a.segment:
        return True
    if share.value == segments.NEW:
        return a.segment.get(share.dimension) in {v for v, _ in share.new_values}
    return a.segment.get(share.dimension) == share.value


def _advance(state: State, measures: Mapping[str, Measure], shifts: Mapping[str, tuple[float, float]],
             candidates: set[str],
             overlapping: Mapping[str, list[Annotation]], excluded: set[str], done: Collection[str], final: bool,
             start: int, ms: ModelSettings) -> tuple[State, list[tuple[str, str, str]], set[str]]:
    """Step the track of every measured key this look decides and an earlier look of the window did not (`done`):
    a candidate, or clean (its `practical` shift under half the minimum). Returns the new state, the (key, status,
    classification) changes to publish and the keys decided. An untested or undecided key holds (no data is no
    evidence); at the final look a key still shifted by half the minimum keeps a sustained alert from counting
    towards its resolution.
    A window's key joins `excluded` when it is decided inside a sustained (or expected) alert (a segment share's
    already as a candidate), or stays undecided to the end of one: exclusion is settled with the window's
    decision, never by a later window's."""
    new = State({k: Track(t.streak, t.clean, t.status, t.recommendation, t.since, t.folded)
                 for k, t in state.tracks.items()})
    news: list[tuple[str, str, str]] = []
    decided: set[str] = set()
    for key, m in measures.items():
        track = new.tracks.setdefault(key, Track())
        if key in done:
            continue
        shift, minimum = shifts[key]
        if key in candidates or shift < minimum / 2:
            decided.add(key)
            if key in candidates and track.streak == 0:
                track.since = start
            change = step(track, key in candidates, bool(overlapping[key]), ms, shift >= minimum / 2)
            if change:
                news.append((key, *change))
            if track.status in ("sustained", "expected") or (key in candidates and m.signal == "segment_shift"):
                # a shifted window must not become the baseline it is judged against. A rate's transient window
                # stays in (one window moves a pooled rate little); a share's leaves at once: one window where a
                # never-seen value was half the traffic would make it "seen", and the spread it adds to the
                # baseline windows would hide the next ones
                excluded.add(key)
        elif final and track.status == "sustained":
            track.clean = 0  # still shifted, if not significantly: not clean (the hysteresis of `step`)
            excluded.add(key)
    return new, news, decided


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
    # a changed objective or a changed population is work for the owners, not a pager
    return "ticket" if signal in ("proxy_divergence", "segment_shift") else "page"


def age_text(age_ms: int) -> str:
    """An age as the diagnosis names it: '1d', '6h', '30m', '45s'."""
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000)):
        if age_ms >= size and age_ms % size == 0:
            return f"{age_ms // size}{unit}"
    return f"{age_ms / 1000:g}s"


def _diagnosis(m: Measure, p_adj: float, tests: int, look: Look, track: Track, classification: str, status: str,
               ms: ModelSettings, measures: Mapping[str, Measure], why: str) -> list[str]:
    lo, hi = m.interval(1 - ms.alpha)
    what: str = m.signal
    if m.signal == "proxy_divergence":
        (tk, tn), (qk, qn), (tk0, tn0), (qk0, qn0) = m.raw
        what = (f"truth mismatch {tk / tn:.1%} vs proxy mismatch {qk / qn:.1%} (baseline {tk0 / tn0:.1%} vs "
                f"{qk0 / qn0:.1%}); their difference")
    elif m.signal == "segment_shift":
        what = f"share of predictions in {m.scope}"
    elif m.signal == "outcome_value":
        what = "truth outcome value per prediction"
    # a staged follow-up look names the age its counts stand at: the baseline windows are taken at the same age
    at = "" if look is WHOLE or look.kinds == ("n",) else \
        f"at age {age_text(look.age_ms)} (follow-ups within {age_text(look.age_ms)} of their prediction): "
    over = f"{tests} tests" if look.looks == 1 else f"{tests} tests at this look, x{look.looks} looks"
    if m.signal == "outcome_value":  # money in its own unit, and the change relative: 1.2 -> 1.5 is +25%
        figures = (f"{m.observed:.4g} vs baseline {m.baseline:.4g} over {m.windows} windows (n={m.n}, baseline "
                   f"n={m.baseline_n}): {m.observed / m.baseline - 1:+.0%} (gap {m.gap:+.4g}), {1 - ms.alpha:.0%} "
                   f"interval [{lo:+.4g}, {hi:+.4g}]")
    else:
        figures = (f"{m.observed:.1%} vs baseline {m.baseline:.1%} over {m.windows} windows (n={m.n}, baseline "
                   f"n={m.baseline_n}): gap {m.gap:+.1%}, {1 - ms.alpha:.0%} interval [{lo:+.1%}, {hi:+.1%}]")
    lines = [f"{at}{what} {figures}, p={p_adj:.2g} Holm-adjusted over {over}"]
    if status == "firing" and classification == "sustained":
        lines.append(f"{track.streak} consecutive windows (persistence {ms.persistence}), since the window starting "
                     f"{iso_ms(track.since)}")
    elif classification == "transient":
        lines.append(f"{track.streak} consecutive window(s), {ms.persistence} make it sustained")
    if m.signal == "segment_shift" and status == "firing":
        lines.append(cast(segments.Share, m.raw[0]).describe())
    if not m.scope and status == "firing":
        c = concentration(m, {x.scope: x for x in measures.values() if x.signal == m.signal and x.scope})
        if c is not None:
            moved = f"{c.rest_gap:+.4g} per prediction" if m.signal == "outcome_value" else f"{c.rest_gap:+.1%}"
            lines.append(f"{c.scope} carries {c.share:.0%} of the {c.what(m.signal)} with {c.traffic:.0%} of the "
                         f"traffic; the rest of the model moved {moved}")
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
