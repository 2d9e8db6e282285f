"""Judging one stage of one window of one model: the rate detector and the feature detector together, and the one
codec of their stored state.

The evaluator calls `judge` for every (window, stage) in `windows.due_stages` order, stores
`Verdict.summary_json()` as the window's history entry (rewritten at each of its stages) and `state_json()` as the
model's state, and trims history older than `Verdict.keep_from`.

Pure: it gets what the store read and the prior state, and `now`, and returns decisions and the next state; the
evaluator (stream.evaluator) does the reading, committing and publishing around it.

Both detectors keep their state, and one summary per window, in the same two Redis values (the model's state
hash and its history hash): the rate detector's JSON, with the feature detector's part under
`features.STATE_KEY`. `decode` and `encode_*` are the only code that knows that layout.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from . import detect, features
from .events import Annotation
from .settings import ModelSettings
from .windows import Stage, Window

Counts = Mapping[tuple[str, str, str], float]
"""A window's counters: (version, scope, counter) -> count (a `v:` counter: a sum of outcome values)."""


@dataclass(slots=True)
class Memory:
    """What judging a model's next window starts from: each detector's state and its history of summaries."""

    rate: detect.State
    feature: features.State
    rate_history: dict[int, detect.Summary]              # window start -> summary
    feature_history: dict[int, features.WindowFeatures]  # window start -> summary


@dataclass(frozen=True, slots=True)
class Closed:
    """What the store read of one window at one stage: its raw counters (follow-up counters carry their
    checkpoint index, `a:override#0`) and, meaningful at stage 'n' only, its feature statistics."""

    window: Window
    counts: Counts
    n: int                                         # predictions the feature statistics cover
    feature_stats: Mapping[str, features.FeatureStats]


@dataclass(frozen=True, slots=True)
class Verdict:
    """Both detectors' decisions on one window, and the memory the next window starts from."""

    rate: detect.Evaluation
    feature: features.Evaluation
    memory: Memory
    keep_from: int  # history older than this window start is out of every baseline: the store forgets it
    outbox: dict[str, bytes]  # every alert of both detectors, alert_id -> JSON, as the outbox holds them

    def state_json(self) -> bytes:
        return encode_state(self.memory.rate, self.memory.feature)

    def summary_json(self) -> bytes:
        return encode_summary(self.rate.summary, self.feature.summary)


def judge(model: str, closed: Closed, stage: Stage, prior: Memory, annotations: Sequence[Annotation],
          ms: ModelSettings, now: datetime) -> Verdict:
    """Judge one stage of one window (stream.windows.Stage): at 'n' feature health first (the rate alerts'
    recommendations cite it) and the window's counts into history; at a follow-up stage that signal's look, the
    feature part of the window's history entry passing through unchanged."""
    window = closed.window
    if stage.kind == "n":
        fres = features.evaluate(model, dominant_version(closed.counts), window, closed.n, closed.feature_stats,
                                 prior.feature_history.values(), prior.feature, annotations, ms, now)
    else:  # the window's feature statistics were judged at 'n': its entry keeps them as they were
        kept = prior.feature_history.get(window.start) or features.WindowFeatures(window.start, 0, {})
        fres = features.Evaluation(kept, prior.feature, [])
    result = detect.evaluate(model, window, closed.counts, list(prior.rate_history.values()), prior.rate,
                             annotations, ms, now, feature_alerts=fres.state.active(), stage=stage)
    keep_from = history_from(window, stage, ms)
    memory = Memory(result.state, fres.state,
                    {**{k: v for k, v in prior.rate_history.items() if k >= keep_from}, window.start: result.summary},
                    {**{k: v for k, v in prior.feature_history.items() if k >= keep_from},
                     window.start: fres.summary})
    outbox = {a.alert_id: a.model_dump_json().encode() for a in [*result.alerts, *fres.alerts]}
    return Verdict(result, fres, memory, keep_from, outbox)


def history_from(window: Window, stage: Stage, ms: ModelSettings) -> int:
    """The oldest window start any later look still needs: the oldest window with a look still to come (its last
    one is due up to the slowest horizon after its end) and that window's baseline windows before it."""
    size = ms.window_seconds * 1000
    due = window.end + stage.age_ms
    slowest = max(s.age_ms for s in ms.stages())
    return due - slowest - size - ms.baseline_windows * size


def dominant_version(counts: Counts) -> str:
    """The model version with most predictions in the window (ties: the greatest name); '' with none."""
    per_version: dict[str, float] = {}
    for (version, scope, counter), k in counts.items():
        if scope == "" and counter == "n":
            per_version[version] = per_version.get(version, 0) + k
    return max(per_version, key=lambda v: (per_version[v], v)) if per_version else ""


def decode(state_json: bytes | None, history: Mapping[int, bytes]) -> Memory:
    """A model's memory from its stored state JSON and history (window start -> summary JSON).

    A history entry without a feature part (written before feature health existed) still has its rate summary."""
    doc: dict[str, Any] = orjson.loads(state_json) if state_json else {}
    fstate = features.State.from_json(doc.pop(features.STATE_KEY, None))
    rate_history: dict[int, detect.Summary] = {}
    feature_history: dict[int, features.WindowFeatures] = {}
    for start, raw in history.items():
        entry = orjson.loads(raw)
        if features.STATE_KEY in entry:
            feature_history[start] = features.WindowFeatures.from_json(entry.pop(features.STATE_KEY))
        rate_history[start] = detect.Summary.from_json(entry)
    return Memory(detect.State.from_json(doc), fstate, rate_history, feature_history)


def encode_state(rate: detect.State, feature: features.State) -> bytes:
    """The state JSON as stored: the rate detector's, with the feature detector's under features.STATE_KEY."""
    return orjson.dumps({**rate.to_json(), features.STATE_KEY: feature.to_json()})


def encode_summary(rate: detect.Summary, feature: features.WindowFeatures) -> bytes:
    """One window's history entry as stored, laid out as encode_state."""
    return orjson.dumps({**rate.to_json(), features.STATE_KEY: feature.to_json()})


def encode(memory: Memory) -> tuple[bytes, dict[int, bytes]]:
    """A memory as `decode` reads it: (state JSON, window start -> summary JSON). Every history entry needs
    both summaries: the store only ever writes the two together."""
    return (encode_state(memory.rate, memory.feature),
            {start: encode_summary(summary, memory.feature_history[start])
             for start, summary in memory.rate_history.items()})
