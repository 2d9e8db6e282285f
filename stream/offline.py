"""Replay a simulated scenario through `detect.evaluate` in memory: the detector's own figures, no broker.

A memory twin of the store's window counters, for simulated (in-order, duplicate-free) events only: it is what
the unit tests and the detection report use to measure false alarms and detection delay in seconds; the
integration tests check the same scenarios through the real broker and Redis.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from . import detect
from .events import Annotation, EventKind
from .settings import ModelSettings
from .simulate import generate, plan
from .times import epoch_ms, from_ms, parse_ms
from .windows import Window, window_start


def window_counts(events: Iterable[tuple[EventKind, dict[str, Any]]], size_ms: int
                  ) -> tuple[dict[int, dict[tuple[str, str, str], int]], list[Annotation]]:
    """Counters per window start as the store keeps them: (version, scope, counter) -> n, by each event's time."""
    windows: dict[int, dict[tuple[str, str, str], int]] = defaultdict(lambda: defaultdict(int))
    preds: dict[str, dict[str, Any]] = {}
    annotations = []

    def bump(p: dict[str, Any], ts: str, counter: str) -> None:
        w = windows[window_start(parse_ms(ts), size_ms)]
        scopes = ["", f"band={p['band']}"] + [f"{k}={v}" for k, v in sorted(p["segment"].items())]
        for scope in scopes:
            w[(p["model_version"], scope, counter)] += 1

    for kind, e in events:
        if kind == "annotation":
            annotations.append(Annotation.model_validate(e))
        elif kind == "prediction":
            preds[e["prediction_id"]] = e
            bump(e, e["ts"], "n")
        elif kind == "action":
            bump(preds[e["prediction_id"]], e["ts"], f"a:{e['action']}")
        else:
            p = preds[e["prediction_id"]]
            bump(p, e["ts"], f"o:{e['kind']}")
            if e["label"] != p["label"]:
                bump(p, e["ts"], f"m:{e['kind']}")
    return {k: dict(v) for k, v in windows.items()}, annotations


@dataclass(frozen=True, slots=True)
class Run:
    """A scenario replayed: every closed window in order with its evaluation, and the scenario's change window."""

    windows: list[Window]
    evaluations: list[detect.Evaluation]
    change_window: int | None  # index of the first window holding the change

    def alerts(self) -> list[tuple[int, Any]]:
        return [(i, a) for i, e in enumerate(self.evaluations) for a in e.alerts]

    def first_sustained(self) -> int | None:
        return next((i for i, a in self.alerts() if a.classification == "sustained" and a.status == "firing"),
                    None)


def replay(scenario: str, ms: ModelSettings, days: float = 4.0, rate: float = 300.0, seed: int = 1,
           end: datetime = datetime(2026, 11, 20, tzinfo=timezone.utc), model: str = "claims",
           close_until: datetime | None = None) -> Run:
    """Generate a scenario and evaluate every window that would close (all that end by `close_until`, by default
    those the run's own watermark passes), as the worker does."""
    size = ms.window_seconds * 1000
    counts, annotations = window_counts(generate(scenario, days, rate, seed, model, end), size)
    starts = sorted(counts)
    last_closed = (window_start(epoch_ms(end) - ms.allowed_lateness_seconds * 1000, size)
                   if close_until is None else epoch_ms(close_until) - size + 1)
    history: list[detect.Summary] = []
    state = detect.State()
    windows, evaluations = [], []
    for start in range(starts[0], last_closed, size):
        w = Window(start, size)
        ev = detect.evaluate(model, w, counts.get(start, {}), history[-ms.baseline_windows:], state, annotations,
                             ms, from_ms(w.end))
        history.append(ev.summary)
        state = ev.state
        windows.append(w)
        evaluations.append(ev)
    layout = plan(scenario, days, end)
    change = None
    if layout.change_hours is not None:
        at = epoch_ms(end) - int(days * 24 * 3600 * 1000) + int(layout.change_hours * 3600 * 1000)
        change = next((i for i, w in enumerate(windows) if w.start <= at < w.end), None)
    return Run(windows, evaluations, change)
