"""The retrain gate: whether retraining a model on its recent data is advisable, why, and what to leave out.

Pure: it reads the model's alerts (as the alerts topic carries them), its annotations and the clock, and decides
from the recommendations trustgap already gave, so the gate and the alerts never disagree:

| in force                                                        | verdict | first                                   |
|-----------------------------------------------------------------|---------|-----------------------------------------|
| a feature-health alert, or an alert that blames a feature       | block   | fix the upstream feature                |
| `review_objective` (proxy divergence, or mismatch beside it)    | hold    | review the objective, not on the proxy  |
| `investigate_trust` (overrides up, outcomes not)                | hold    | talk to the reviewers                   |
| `review_segments` (who the model sees changed)                  | hold    | re-segment first                        |
| `investigate_segment` (one scope carries the rise)              | hold    | look at what changed there              |
| an annotated change still running                               | hold    | wait for it to end                      |
| `retrain_candidate` (a broad outcome rise nothing explains)     | go      | retrain                                 |

The verdict is the strictest of its reasons (block > hold > go); with no reason, `go`. An alert is in force when
it is a sustained one not yet resolved, or a feature-health one (transient too) or an expected one in the model's
latest closed window. The training-data exclusions are the prediction-time windows to leave out, as half-open UTC
intervals with their reasons (and segment, where an annotation or an alert's scope names one): every transient
window, every annotated span, every window from a feature-health alert's first firing window to its resolution
(or now), and every window of a sustained alert's streak to its resolution (or now), merged where they touch.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from .events import AlignmentAlert, Annotation
from .times import epoch_ms, iso_ms

Verdict = Literal["go", "hold", "block"]
RANK: dict[str, int] = {"go": 0, "hold": 1, "block": 2}
EXIT_CODE: dict[str, int] = {"go": 0, "hold": 3, "block": 4}
"""The CLI's exit code per verdict: a CI step fails on hold and block; 1 and 2 stay errors and usage."""

# recommendation -> (verdict, reason code, the action to take first)
RULES: dict[str, tuple[Verdict, str, str]] = {
    "fix_upstream_feature": ("block", "feature_broken", "fix the upstream feature before anything learns from it"),
    "review_objective": ("hold", "proxy_divergence", "review the objective; do not retrain on the proxy"),
    "investigate_trust": ("hold", "trust", "a trust problem, not a model one: talk to the reviewers"),
    "review_segments": ("hold", "segment_shift", "who the model sees changed: re-segment before retraining"),
    "investigate_segment": ("hold", "concentrated", "one scope carries the rise: look at what changed there"),
    "retrain_candidate": ("go", "broad_outcome_rise", "a broad outcome rise nothing else explains: retrain"),
}
ANNOTATED: tuple[Verdict, str, str] = ("hold", "annotated_change",
                                       "an annotated change is still running: wait for it to end")


@dataclass(frozen=True, slots=True)
class Reason:
    """One cause behind the verdict: its verdict, code and action, and the alerts (in force) behind it."""

    verdict: Verdict
    code: str
    action: str
    alerts: tuple[AlignmentAlert, ...]

    def to_json(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "reason": self.code, "action": self.action,
                "alerts": [{"alert_id": a.alert_id, "signal": a.signal, "scope": a.scope,
                            "classification": a.classification, "window_start": iso_ms(epoch_ms(a.window.start)),
                            "recommendation": a.recommendation} for a in self.alerts]}


@dataclass(frozen=True, slots=True)
class Exclusion:
    """Prediction-time data to leave out of training: [start, end) in ms, for one segment (empty: all of it)."""

    start: int
    end: int
    segment: tuple[tuple[str, str], ...] = ()
    reasons: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"start": iso_ms(self.start), "end": iso_ms(self.end), "segment": dict(self.segment),
                "reasons": list(self.reasons)}


@dataclass(frozen=True, slots=True)
class Gate:
    model: str
    verdict: Verdict
    reasons: tuple[Reason, ...]
    exclusions: tuple[Exclusion, ...] = field(default=())

    @property
    def exit_code(self) -> int:
        return EXIT_CODE[self.verdict]

    def sentence(self) -> str:
        """The verdict and its first cause in one sentence, for the top of a page."""
        if not self.reasons:
            return f"{self.verdict}: no alert argues against retraining {self.model}"
        first = self.reasons[0]
        more = f" (and {len(self.reasons) - 1} more reason{'s' if len(self.reasons) > 2 else ''})" \
            if len(self.reasons) > 1 else ""
        return f"{self.verdict}: {first.action}{more}"

    def to_json(self) -> dict[str, Any]:
        return {"model": self.model, "verdict": self.verdict, "summary": self.sentence(),
                "reasons": [r.to_json() for r in self.reasons],
                "exclusions": [e.to_json() for e in self.exclusions]}


def latest_alerts(alerts: Iterable[AlignmentAlert]) -> dict[str, AlignmentAlert]:
    """The newest alert per fingerprint (by window, then publication time)."""
    latest: dict[str, AlignmentAlert] = {}
    for a in alerts:
        cur = latest.get(a.fingerprint)
        if cur is None or (a.window.start, a.ts) >= (cur.window.start, cur.ts):
            latest[a.fingerprint] = a
    return latest


def in_force(alerts: Iterable[AlignmentAlert], last_window_start: int | None) -> list[AlignmentAlert]:
    """The model's alerts still in force (see the module docstring), newest per fingerprint."""
    out = []
    for a in latest_alerts(alerts).values():
        if a.status != "firing":
            continue
        current = last_window_start is not None and epoch_ms(a.window.start) >= last_window_start
        if a.classification == "sustained" or (a.signal.startswith("feature_") and current) or \
                (a.classification == "expected" and current):
            out.append(a)
    return sorted(out, key=lambda a: (a.window.start, a.signal, sorted(a.scope.items())))


def decide(model: str, alerts: Sequence[AlignmentAlert], annotations: Sequence[Annotation], now_ms: int,
           last_window_start: int | None, since_ms: int | None = None) -> Gate:
    """The gate for one model from its alerts and annotations (see the module docstring)."""
    mine = [a for a in alerts if a.model == model]
    by_code: dict[str, tuple[Verdict, str, list[AlignmentAlert]]] = {}
    for a in in_force(mine, last_window_start):
        if a.signal.startswith("feature_"):
            rule = RULES["fix_upstream_feature"]
        elif a.classification == "expected":
            continue  # what an annotation covers holds the gate only while the annotation runs (below)
        elif a.recommendation in RULES:
            rule = RULES[a.recommendation]
        else:
            continue
        by_code.setdefault(rule[1], (rule[0], rule[2], []))[2].append(a)
    running = [n for n in annotations if n.model == model and epoch_ms(n.start) <= now_ms
               and (n.end is None or epoch_ms(n.end) > now_ms)]
    if running:
        notes = "; ".join(f"{n.kind} '{n.note}'" for n in running)
        by_code[ANNOTATED[1]] = (ANNOTATED[0], f"{ANNOTATED[2]} ({notes})", [])
    reasons = tuple(sorted((Reason(v, code, action, tuple(found)) for code, (v, action, found) in by_code.items()),
                           key=lambda r: (-RANK[r.verdict], r.code)))
    strictest: Verdict = max((r.verdict for r in reasons), key=RANK.__getitem__, default="go")
    return Gate(model, strictest, reasons, exclusions(mine, annotations, model, now_ms, since_ms))


def exclusions(alerts: Sequence[AlignmentAlert], annotations: Sequence[Annotation], model: str, now_ms: int,
               since_ms: int | None = None) -> tuple[Exclusion, ...]:
    """The training-data exclusions (see the module docstring), merged per segment and sorted; with `since_ms`,
    only what ends after it."""
    spans: list[Exclusion] = []
    for a in alerts:
        if a.model != model or a.status != "firing":
            continue
        start, end = epoch_ms(a.window.start), epoch_ms(a.window.end)
        if a.classification == "transient" and not a.signal.startswith("feature_"):
            scope = f" {', '.join(f'{k}={v}' for k, v in a.scope.items())}" if a.scope else ""
            spans.append(Exclusion(start, end, tuple(sorted(a.scope.items())), (f"transient {a.signal}{scope}",)))
    spans += _open_spans(alerts, model, now_ms)
    for n in annotations:
        if n.model == model:
            end = epoch_ms(n.end) if n.end else now_ms
            if end > epoch_ms(n.start):
                spans.append(Exclusion(epoch_ms(n.start), end, tuple(sorted((n.segment or {}).items())),
                                       (f"annotated {n.kind}: {n.note}",)))
    if since_ms is not None:
        spans = [s for s in spans if s.end > since_ms]
    return merge(spans)


def _open_spans(alerts: Sequence[AlignmentAlert], model: str, now_ms: int) -> list[Exclusion]:
    """Per fingerprint, what an open alert covers until its resolution (or now): a feature-health alert from its
    first firing window (all the data the broken feature fed), a sustained rate alert from its window on, for its
    scope (the transient windows of its streak before it are excluded as such, and merge with it)."""
    by_fp: dict[str, list[AlignmentAlert]] = {}
    for a in alerts:
        if a.model == model and a.classification != "expected":
            by_fp.setdefault(a.fingerprint, []).append(a)
    out = []
    for found in by_fp.values():
        found.sort(key=lambda a: (a.window.start, a.ts))
        feature = found[0].signal.startswith("feature_")
        segment = () if feature else tuple(sorted(found[0].scope.items()))
        scope = f" {', '.join(f'{k}={v}' for k, v in segment)}" if segment else ""
        what = f"{found[0].signal} {found[0].scope.get('feature', '')}".strip() if feature else \
            f"sustained {found[0].signal}{scope}"
        start: int | None = None
        for a in found:
            if a.status == "firing" and (feature or a.classification == "sustained"):
                start = epoch_ms(a.window.start) if start is None else start
            elif a.status == "resolved" and start is not None:  # the windows from here on are healthy again
                out.append(Exclusion(start, epoch_ms(a.window.start), segment, (what,)))
                start = None
        if start is not None:
            last = max(epoch_ms(a.window.end) for a in found)
            out.append(Exclusion(start, max(last, now_ms) if found[-1].classification == "sustained" else last,
                                 segment, (what,)))
    return out


def merge(spans: Iterable[Exclusion]) -> tuple[Exclusion, ...]:
    """Exclusions of one segment that overlap or touch become one, with every reason; sorted by start."""
    out: list[Exclusion] = []
    for s in sorted(spans, key=lambda s: (s.segment, s.start, s.end)):
        last = out[-1] if out else None
        if last is not None and last.segment == s.segment and s.start <= last.end:
            reasons = last.reasons + tuple(r for r in s.reasons if r not in last.reasons)
            out[-1] = Exclusion(last.start, max(last.end, s.end), last.segment, reasons)
        else:
            out.append(s)
    return tuple(sorted(out, key=lambda s: (s.start, s.segment)))
