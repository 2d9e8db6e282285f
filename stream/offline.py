"""The store and the evaluator in memory: events counted as the store counts them, every (window, stage) judged
in `windows.due_stages` order as the watermark advances, and the alerts the worker publishes, in order.

A memory twin for simulated (duplicate-free) events: it is what the unit tests and the detection report use to
measure false alarms and detection delay; the integration tests check that the worker publishes the same alerts
for the same events. It counts as the store does: by prediction window; a follow-up in the checkpoint index of its
age after its prediction (beyond the horizon: not counted, `beyond_horizon`), into the first checkpoint >= its
index still open, and as late when its own checkpoint was already judged. It does not dedup or park: a follow-up
whose prediction it has not seen is an orphan and dropped. Feature statistics are exact here (`Features`): the
store's distinct counts are HyperLogLog estimates and its top values Space-Saving summaries per bucket, so the
twin's feature alerts are what the store's approximate, not equal (tests/test_feature_pipeline.py runs the
feature scenarios through the worker).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Literal

from .events import AlignmentAlert, Annotation, EventKind
from .features import TOPS_KEPT, FeatureStats, cut, watched
from .judge import Closed, Memory, Verdict, decode, judge
from .settings import ModelSettings
from .simulate import PROFILES, generate, plan
from .times import epoch_ms, from_ms, parse_ms
from .windows import Cursor, Due, checkpoint_of, due_stages, window_start

Counts = dict[tuple[str, str, str], float]


@dataclass(slots=True)
class Features:
    """One window's feature statistics as the store records them, exactly: predictions recorded, and per tracked
    feature its numbers' count, sum, sum of squares and range, its strings (cut as the store cuts them), nulls."""

    n: int = 0
    numbers: dict[str, list[float]] = field(default_factory=dict)
    strings: dict[str, Counter[str]] = field(default_factory=dict)
    nulls: Counter[str] = field(default_factory=Counter)

    def add(self, fx: dict[str, Any], tracked: Collection[str]) -> None:
        self.n += 1
        for name, v in fx.items():
            if name not in tracked:
                continue
            if v is None:
                self.nulls[name] += 1
            elif isinstance(v, str):
                self.strings.setdefault(name, Counter())[cut(v)] += 1
            else:
                self.numbers.setdefault(name, []).append(float(v))

    def stats(self) -> dict[str, FeatureStats]:
        out = {}
        for name in set(self.numbers) | set(self.strings) | set(self.nulls):
            xs, ss = self.numbers.get(name, []), self.strings.get(name, Counter())
            tops = tuple(sorted(ss.items(), key=lambda kv: (-kv[1], kv[0]))[:TOPS_KEPT])
            out[name] = FeatureStats(self.n, len(xs), sum(xs), sum(x * x for x in xs), min(xs, default=None),
                                     max(xs, default=None), sum(ss.values()), self.nulls[name],
                                     len(set(xs)) + len(ss), tops[0][0] if tops else None,
                                     tops[0][1] if tops else 0, tops)
        return out


@dataclass(slots=True)
class Twin:
    """One model's window counters and judgements in memory: `apply` events, `advance` the watermark."""

    model: str
    ms: ModelSettings
    counts: dict[int, Counts] = field(default_factory=dict)   # window start -> (version, scope, counter) -> n
    late: Counter[str] = field(default_factory=Counter)        # stage kind (n/a/o) -> events after their stage
    beyond_horizon: Counter[str] = field(default_factory=Counter)  # kind (a/o) -> follow-ups past the horizon
    annotations: list[Annotation] = field(default_factory=list)
    judged: list[tuple[Due, Verdict]] = field(default_factory=list)
    newest: int | None = None  # newest event time applied (ms)
    first: int | None = None   # earliest window start with data
    cursor: Cursor | None = None
    memory: Memory = field(default_factory=lambda: decode(None, {}))
    # prediction id -> (the event, its time in ms, the (version, scope) pairs it counts under)
    _predictions: dict[str, tuple[dict[str, Any], int, tuple[tuple[str, str], ...]]] = field(default_factory=dict)
    _closed: set[tuple[int, str]] = field(default_factory=set)  # (window start, stage name) judged
    _features: dict[int, Features] = field(default_factory=dict)  # window start -> its statistics until judged
    _tracked: dict[str, None] = field(default_factory=dict)  # feature names, first come first tracked (ordered)
    _checkpoints: dict[str, tuple[int, ...]] = field(default_factory=dict)  # kind (a/o) -> ms.checkpoints_ms(kind)

    def __post_init__(self) -> None:
        # once per twin: every follow-up reads its kind's twice
        self._checkpoints = {"a": self.ms.checkpoints_ms("a"), "o": self.ms.checkpoints_ms("o")}

    @property
    def size(self) -> int:
        return self.ms.window_seconds * 1000

    def apply(self, kind: EventKind, event: dict[str, Any]) -> None:
        """Count one event as the store's apply script does."""
        if kind == "annotation":
            self.annotations.append(Annotation.model_validate(event))
            return
        ts = parse_ms(event["ts"])
        self.newest = ts if self.newest is None else max(self.newest, ts)
        if kind == "prediction":
            start = window_start(ts, self.size)
            # its follow-ups still count at open checkpoints; its time and scopes are found once, not per follow-up
            scoped = self._scoped(event)
            self._predictions[event["prediction_id"]] = (event, ts, scoped)
            if (start, "n") in self._closed:
                self.late["n"] += 1
                return
            self.first = start if self.first is None else min(self.first, start)
            self._bump(scoped, start, "n")
            self._record(start, event.get("features"))
            return
        known = self._predictions.get(event["prediction_id"])
        if known is None:
            return  # an orphan: the store parks it and sweeps it when its prediction never comes
        p, p_ts, scoped = known
        short: Literal["a", "o"] = "a" if kind == "action" else "o"
        checkpoints = self._checkpoints[short]
        index = checkpoint_of(ts - p_ts, checkpoints)
        if index is None:
            self.beyond_horizon[short] += 1
            return
        start = window_start(p_ts, self.size)
        if (start, f"{short}{index}") in self._closed:
            self.late[short] += 1
        into = next((j for j in range(index, len(checkpoints))
                     if (start, f"{short}{j}") not in self._closed), None)
        if into is None:
            return
        if kind == "action":
            self._bump(scoped, start, f"a:{event['action']}#{into}")
        else:
            self._bump(scoped, start, f"o:{event['kind']}#{into}")
            if event["label"] != p["label"]:
                self._bump(scoped, start, f"m:{event['kind']}#{into}")
            x = event.get("value")
            if x is not None:
                self._bump(scoped, start, f"v:{event['kind']}#{into}", x)
                if x > 0:
                    self._bump(scoped, start, f"vn:{event['kind']}#{into}")
                    self._bump(scoped, start, f"vl:{event['kind']}#{into}", math.log(x))
                    self._bump(scoped, start, f"vq:{event['kind']}#{into}", math.log(x) ** 2)

    def _record(self, start: int, fx: dict[str, Any] | None) -> None:
        """A counted prediction's features, as the apply script records them: tracked names only (first come up to
        `max_features`), none at all until the model has sent a watched feature."""
        for name in fx or {}:
            if name not in self._tracked and len(self._tracked) < self.ms.max_features and watched(name, self.ms):
                self._tracked[name] = None
        if self._tracked:
            self._features.setdefault(start, Features()).add(fx or {}, self._tracked)

    def _scoped(self, p: dict[str, Any]) -> tuple[tuple[str, str], ...]:
        """The (version, scope) pairs a prediction's counters are kept under: the whole model, its band and each
        segment dimension=value."""
        band = p.get("band") or self.ms.band_for(p.get("score"))  # as Settings.band_of
        scopes = ["", f"band={band}", *(f"{k}={v}" for k, v in sorted(p["segment"].items()))]
        return tuple((p["model_version"], scope) for scope in scopes)

    def _bump(self, scoped: tuple[tuple[str, str], ...], start: int, counter: str, by: float = 1) -> None:
        w = self.counts.setdefault(start, {})
        for version, scope in scoped:
            key = (version, scope, counter)
            w[key] = w.get(key, 0) + by

    def advance(self, watermark_ms: int) -> list[tuple[Due, Verdict]]:
        """Judge every (window, stage) the watermark has passed, in (due, order) order, as the evaluator does."""
        if self.first is None:
            return []
        out = []
        for d in due_stages(self.first, self.cursor, watermark_ms, self.size, self.ms.stages()):
            self._closed.add((d.window.start, d.stage.name))
            fx = self._features.pop(d.window.start, Features()) if d.stage.kind == "n" else Features()
            closed = Closed(d.window, dict(self.counts.get(d.window.start, {})), fx.n, fx.stats())
            verdict = judge(self.model, closed, d.stage, self.memory, self.annotations, self.ms, from_ms(d.due))
            self.memory, self.cursor = verdict.memory, d.cursor
            out.append((d, verdict))
        self.judged.extend(out)
        return out

    def watermark(self) -> int | None:
        """The model's watermark: in-order events make every partition's newest event the newest of all."""
        return None if self.newest is None else self.newest - self.ms.allowed_lateness_seconds * 1000

    def published(self) -> list[AlignmentAlert]:
        """Every alert decided so far in the order the evaluator publishes them: judgement by judgement, each
        one's outbox burst by (window end, alert_id)."""
        out: list[AlignmentAlert] = []
        for _, verdict in self.judged:
            alerts = [*verdict.rate.alerts, *verdict.feature.alerts]
            out += sorted(alerts, key=lambda a: (a.window.end, a.alert_id))
        return out


def run_events(events: Iterable[tuple[EventKind, dict[str, Any]]], model: str, ms: ModelSettings,
               watermark_ms: int | None = None, step: int | None = 500) -> Twin:
    """Apply the events of one model, advancing the watermark every `step` events (None: only at the end), never
    past `watermark_ms`, then to `watermark_ms` (by default the events' own watermark). The judgements do not
    depend on `step`."""
    twin = Twin(model, ms)
    for i, (kind, event) in enumerate(events, 1):
        twin.apply(kind, event)
        if step is not None and i % step == 0 and (wm := twin.watermark()) is not None:
            twin.advance(wm if watermark_ms is None else min(wm, watermark_ms))
    final = watermark_ms if watermark_ms is not None else twin.watermark()
    if final is not None:
        twin.advance(final)
    return twin


def published(events: Iterable[tuple[EventKind, dict[str, Any]]], model: str, ms: ModelSettings,
              watermark_ms: int | None = None) -> list[AlignmentAlert]:
    """The alerts the worker publishes for these events once its watermark reaches `watermark_ms` (by default
    the events' newest time minus the allowed lateness), in publication order."""
    return run_events(events, model, ms, watermark_ms).published()


@dataclass(frozen=True, slots=True)
class Run:
    """A scenario replayed: every judgement in order, and when the scenario's change began."""

    twin: Twin
    change_ms: int | None  # event time of the change (None: nothing changes)

    @property
    def judged(self) -> list[tuple[Due, Verdict]]:
        return self.twin.judged

    def alerts(self) -> list[tuple[Due, AlignmentAlert]]:
        """Every alert with the judgement that decided it (its due time is when the worker can publish it)."""
        return [(d, a) for d, v in self.twin.judged for a in sorted([*v.rate.alerts, *v.feature.alerts],
                                                                    key=lambda a: (a.window.end, a.alert_id))]

    def windows(self) -> list[int]:
        """Start of every window judged at stage 'n'."""
        return [d.window.start for d, _ in self.twin.judged if d.stage.kind == "n"]


def settings_for(scenario: str) -> ModelSettings:
    """The model settings a scenario is meant to run with (its profile's overrides on the defaults)."""
    profile = PROFILES.get(scenario)
    return ModelSettings(**profile.settings) if profile else ModelSettings()


def replay(scenario: str, ms: ModelSettings | None = None, days: float | None = None, rate: float | None = None,
           seed: int = 1, end: datetime = datetime(2026, 11, 20, tzinfo=timezone.utc), model: str = "claims",
           watermark: datetime | None = None, step: int | None = 500, bands: bool = True) -> Run:
    """Generate a scenario and judge everything the watermark passes (by default the run's own watermark), as
    the worker does; settings, days and rate default to the scenario's profile."""
    profile = PROFILES.get(scenario)
    ms = ms or settings_for(scenario)
    days = days if days is not None else (profile.days if profile else 4.0)
    rate = rate if rate is not None else (profile.rate if profile else 300.0)
    twin = run_events(generate(scenario, days, rate, seed, model, end, bands), model, ms,
                      epoch_ms(watermark) if watermark else None, step)
    layout = plan(scenario, days, end)
    change = None
    if layout.change_hours is not None:
        change = epoch_ms(end) - int(days * 24 * 3600 * 1000) + int(layout.change_hours * 3600 * 1000)
    return Run(twin, change)
