"""Scenario generators: contract-v1 events for realistic cases, in event-time order, reproducible by seed.

A scenario is a function of (hours since the start, segment, band) -> Behaviour: the probabilities that a person
overrides, that the real outcome differs from the prediction, that the cheap proxy does. Event time runs as fast
as the producer can send, so a month of traffic replays in seconds.
"""

from __future__ import annotations

import heapq
import random
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from .events import EventKind

REGIONS = ("eu", "us", "apac")
CHANNELS = ("web", "app")
BANDS = ((0.3, "low"), (0.7, "medium"), (1.01, "high"))
LABELS = ("approve", "review")


@dataclass(frozen=True, slots=True)
class Behaviour:
    """Per-prediction probabilities at one moment for one cohort."""

    override: float = 0.10        # P(person overrides or bypasses | acted)
    acted: float = 0.9            # P(a person looked at the prediction)
    mismatch: float = 0.10        # P(truth outcome differs from the prediction)
    truth: float = 0.8            # P(a truth outcome arrives)
    proxy: float = 0.6            # P(a proxy outcome arrives)
    proxy_mismatch: float = 0.30  # P(proxy outcome differs from the prediction)
    frozen: tuple[str, ...] = ()  # features stuck at their last value (the upstream stopped updating)
    missing: tuple[str, ...] = ()  # features that are null or absent in 70% of predictions
    rescaled: tuple[tuple[str, float], ...] = ()  # (feature, factor): a new unit upstream


Scenario = Callable[[float, dict[str, str], str], Behaviour]


def quiet(hours: float, segment: dict[str, str], band: str) -> Behaviour:
    """Nothing changes: the false-alarm baseline."""
    return Behaviour()


def trust_decay(total_hours: float) -> Scenario:
    """From 70% of the run on, officers in region=eu override three times as often; outcomes do not move."""
    def behaviour(hours: float, segment: dict[str, str], band: str) -> Behaviour:
        if hours >= 0.7 * total_hours and segment["region"] == "eu":
            return Behaviour(override=0.35)
        return Behaviour()
    return behaviour


def feature_breakage(total_hours: float) -> Scenario:
    """From half-way, `income` freezes and `days_since_signup` goes missing; the model, fed junk, errs more."""
    def behaviour(hours: float, segment: dict[str, str], band: str) -> Behaviour:
        if hours >= 0.5 * total_hours:
            return Behaviour(mismatch=0.35, frozen=("income",), missing=("days_since_signup",))
        return Behaviour()
    return behaviour


def feature_rescale(total_hours: float) -> Scenario:
    """From half-way, `income` arrives in cents instead of units (x100); nothing else changes."""
    def behaviour(hours: float, segment: dict[str, str], band: str) -> Behaviour:
        return Behaviour(rescaled=(("income", 100.0),)) if hours >= 0.5 * total_hours else Behaviour()
    return behaviour


SCENARIOS: dict[str, Callable[[float], Scenario]] = {
    "quiet": lambda total: quiet,
    "trust_decay": trust_decay,
    "feature_breakage": feature_breakage,
    "feature_rescale": feature_rescale,
}

COUNTRIES = (("DE", 0.3), ("US", 0.25), ("FR", 0.15), ("GB", 0.12), ("IN", 0.1), ("BR", 0.08))


def features_of(rng: random.Random, segment: dict[str, str], b: Behaviour, last: dict[str, Any]
                ) -> dict[str, Any]:
    """A realistic feature snapshot; `last` remembers each feature's latest healthy value for freezing."""
    healthy: dict[str, Any] = {
        "age": float(rng.randint(18, 80)),
        "income": round(rng.lognormvariate(10.8, 0.5), 2),
        "country": rng.choices([c for c, _ in COUNTRIES], [w for _, w in COUNTRIES])[0],
        "days_since_signup": float(int(rng.expovariate(1 / 400))),
    }
    out: dict[str, Any] = {}
    for name, value in healthy.items():
        if name in b.frozen:
            value = last.setdefault(name, value)
        else:
            last[name] = value
        for feature, factor in b.rescaled:
            if feature == name:
                value = round(value * factor, 2)
        if name in b.missing:
            roll = rng.random()
            if roll < 0.35:
                continue  # absent from the snapshot
            if roll < 0.7:
                value = None
        out[name] = value
    return out


def _ts(t: datetime) -> str:
    return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def generate(scenario: str, days: float = 30.0, rate: float = 120.0, seed: int = 1, model: str = "claims",
             end: datetime | None = None) -> Iterator[tuple[EventKind, dict[str, Any]]]:
    """Yield (kind, event) in event-time order: `rate` predictions per hour for `days`, ending at `end`."""
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}; choose from {', '.join(sorted(SCENARIOS))}")
    rng = random.Random(seed)
    frng = random.Random(seed * 7919 + 4)  # features draw from their own stream: the events stay as they were
    last: dict[str, Any] = {}
    total_hours = days * 24
    behave = SCENARIOS[scenario](total_hours)
    end = end or datetime.now(timezone.utc).replace(microsecond=0)
    start = end - timedelta(hours=total_hours)
    pending: list[tuple[datetime, int, EventKind, dict[str, Any]]] = []
    seq = 0
    t = start
    step = timedelta(hours=1) / rate
    while t < end:
        t += timedelta(seconds=rng.expovariate(1.0) * step.total_seconds())
        hours = (t - start).total_seconds() / 3600
        segment = {"region": rng.choice(REGIONS), "channel": rng.choice(CHANNELS)}
        score = rng.random()
        band = next(name for cut, name in BANDS if score < cut)
        b = behave(hours, segment, band)
        pid = f"p-{uuid.UUID(int=rng.getrandbits(128))}"
        label = LABELS[0] if score < 0.5 else LABELS[1]
        other = LABELS[1] if label == LABELS[0] else LABELS[0]

        def emit(when: datetime, kind: EventKind, body: dict[str, Any]) -> None:
            nonlocal seq
            seq += 1
            event = {"schema_version": 1, "event_id": f"e-{uuid.UUID(int=rng.getrandbits(128))}", **body}
            if when <= end:
                heapq.heappush(pending, (when, seq, kind, event))

        emit(t, "prediction", {"prediction_id": pid, "model": model, "model_version": "v1", "ts": _ts(t),
                               "label": label, "score": round(score, 4), "band": band, "segment": segment,
                               "features": features_of(frng, segment, b, last)})
        if rng.random() < b.acted:
            at = t + timedelta(minutes=rng.uniform(1, 20))
            action = ("override" if rng.random() < 0.8 else "bypass") if rng.random() < b.override else "accept"
            emit(at, "action", {"prediction_id": pid, "ts": _ts(at), "action": action})
        if rng.random() < b.truth:
            at = t + timedelta(minutes=rng.uniform(5, 30))
            emit(at, "outcome", {"prediction_id": pid, "ts": _ts(at), "kind": "truth",
                                 "label": other if rng.random() < b.mismatch else label})
        if rng.random() < b.proxy:
            at = t + timedelta(minutes=rng.uniform(1, 10))
            emit(at, "outcome", {"prediction_id": pid, "ts": _ts(at), "kind": "proxy",
                                 "label": other if rng.random() < b.proxy_mismatch else label})
        while pending and pending[0][0] <= t:
            _, _, kind, event = heapq.heappop(pending)
            yield kind, event
    while pending:
        _, _, kind, event = heapq.heappop(pending)
        yield kind, event
