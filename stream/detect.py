"""Alignment-gap detection: pure decisions from window counts, history and the detector's state.

Input: the counts of the window that just closed, the summaries of the trailing closed windows, the detector
state and the model's annotations. Output: a summary of this window (to become history), the new state and the
alerts to publish. No I/O: the evaluator in app.py reads and writes Redis around `evaluate`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from .events import AlertWindow, AlignmentAlert, Annotation, Recommendation, Signal, epoch_ms
from .settings import ModelSettings
from .windows import Window

# signal -> (numerator counters, denominator counters) over a scope's window counts
RATE_SIGNALS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "override_rate": (("a:override", "a:bypass"), ("a:accept", "a:override", "a:bypass", "a:escalate")),
    "outcome_mismatch": (("m:truth",), ("o:truth",)),
}


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
    """(successes, trials) of a rate signal in one scope's counts."""
    num, den = RATE_SIGNALS[signal]
    return sum(counts.get(c, 0) for c in num), sum(counts.get(c, 0) for c in den)


def scope_dict(scope: str) -> dict[str, str]:
    """'' -> {} (whole model); 'band=low' -> {'band': 'low'}."""
    if not scope:
        return {}
    dim, _, value = scope.partition("=")
    return {dim: value}


def fingerprint(model: str, signal: str, scope: str) -> str:
    return hashlib.sha256(f"{model}\x1f{signal}\x1f{scope}".encode()).hexdigest()[:16]


def alert_id(model: str, signal: str, scope: str, window: Window, status: str) -> str:
    """Unique per evaluation, yet the same if a crash makes the same evaluation publish twice."""
    return hashlib.sha256(f"{model}\x1f{signal}\x1f{scope}\x1f{window.start}\x1f{status}".encode()).hexdigest()[:32]


@dataclass(slots=True)
class Track:
    """State of one (signal, scope): consecutive candidate windows, clean windows since, and what was announced."""

    streak: int = 0
    clean: int = 0
    status: str = "idle"  # idle | transient | sustained


@dataclass(slots=True)
class State:
    tracks: dict[str, Track] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {k: [t.streak, t.clean, t.status] for k, t in self.tracks.items() if t.status != "idle" or t.streak}

    @classmethod
    def from_json(cls, d: Mapping[str, Any] | None) -> State:
        return cls({k: Track(*v) for k, v in (d or {}).items()})


@dataclass(frozen=True, slots=True)
class Evaluation:
    summary: Summary
    state: State
    alerts: list[AlignmentAlert]


def _overlaps(a: Annotation, window: Window, scope: str) -> bool:
    start, end = epoch_ms(a.start), epoch_ms(a.end) if a.end else None
    if start >= window.end or (end is not None and end <= window.start):
        return False
    if a.segment:
        return scope_dict(scope).items() <= a.segment.items() or not scope
    return True


def evaluate(model: str, window: Window, counts: Mapping[tuple[str, str, str], int], history: Sequence[Summary],
             state: State, annotations: Sequence[Annotation], ms: ModelSettings, now: datetime,
             active_feature_alerts: Sequence[str] = ()) -> Evaluation:
    """First rule: a rate above the trailing baseline's by `min_gap`, both with `min_samples`.

    `active_feature_alerts` (`signal:feature`, from features.State.active) name upstream features that are
    broken right now: while any is, a firing unexplained alert points at them rather than at the model.
    """
    summary = summarise(window, counts)
    baseline_windows = sorted(history, key=lambda s: s.start)[-ms.baseline_windows:]
    alerts: list[AlignmentAlert] = []
    excluded: set[str] = set()
    new = State({k: Track(t.streak, t.clean, t.status) for k, t in state.tracks.items()})
    scopes = set(summary.scopes) | {s for h in baseline_windows for s in h.scopes}
    for signal in RATE_SIGNALS:
        for scope in sorted(scopes):
            key = f"{signal}|{scope}"
            k, n = rate(summary.scopes.get(scope, {}), signal)
            base = [rate(h.scopes.get(scope, {}), signal) for h in baseline_windows if key not in h.excluded]
            bk, bn = sum(b[0] for b in base), sum(b[1] for b in base)
            observed = k / n if n else 0.0
            baseline = bk / bn if bn else 0.0
            overlapping = [a for a in annotations if _overlaps(a, window, scope)]
            candidate = n >= ms.min_samples and bn >= ms.min_samples and observed - baseline >= ms.min_gap
            track = new.tracks.setdefault(key, Track())
            status = None
            if candidate:
                track.streak += 1
                track.clean = 0
                if overlapping:
                    status, classification = "firing", "expected"
                elif track.streak >= ms.persistence:
                    status, classification = "firing", "sustained"
                else:
                    status, classification = "firing", "transient"
                track.status = classification
                excluded.add(key) if classification != "transient" else None
            else:
                track.streak = 0
                if track.status == "sustained":
                    track.clean += 1
                    excluded.add(key)
                    if track.clean >= ms.resolve_after:
                        status, classification = "resolved", "sustained"
                        track.status, track.clean = "idle", 0
                else:
                    track.status = "idle"
            if status is None:
                continue
            severity = "info" if classification != "sustained" else "page"
            recommendation: Recommendation = "none" if classification == "expected" else (
                "exclude_window_from_training" if classification == "transient" else "investigate_trust")
            diagnosis = [f"{signal} {observed:.1%} vs baseline {baseline:.1%} over {len(base)} windows"]
            if active_feature_alerts and status == "firing" and classification != "expected":
                recommendation = "fix_upstream_feature"
                diagnosis.append(upstream_sentence(active_feature_alerts))
            alerts.append(AlignmentAlert(
                alert_id=alert_id(model, signal, scope, window, status), fingerprint=fingerprint(model, signal, scope), status=status,
                classification=classification, severity=severity, signal=signal_name(signal), model=model,
                model_version=summary.version, scope=scope_dict(scope),
                window=AlertWindow(start=_dt(window.start), end=_dt(window.end)), observed=observed,
                baseline=baseline, gap=observed - baseline, n=n, baseline_n=bn, persistence=track.streak,
                diagnosis=diagnosis, recommendation=recommendation, annotations=overlapping, ts=now))
    summary = Summary(summary.start, summary.end, summary.version, summary.scopes, frozenset(excluded))
    return Evaluation(summary, new, alerts)


def upstream_sentence(active_feature_alerts: Sequence[str]) -> str:
    """The diagnosis sentence naming the broken upstream features (`signal:feature` each)."""
    named = []
    for item in sorted(active_feature_alerts):
        signal, _, feature = item.partition(":")
        named.append(f"{feature!r} ({signal.removeprefix('feature_').replace('_', ' ')})")
    return (f"upstream feature {', '.join(named)} is broken in this window: fix the feature before reading this "
            "shift as the model's")


def signal_name(signal: str) -> Signal:
    return signal  # type: ignore[return-value]


def _dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc)
