"""Scenario generators: contract-v1 events for realistic cases, in event-time order, reproducible by seed.

A scenario lays out a run (`Plan`): a function of (hours since the start, segment, band) -> Behaviour, the
probabilities that a person overrides, that the real outcome differs from the prediction, that the cheap proxy
does; when the change starts; the annotations teams would send; and how long after its prediction each kind of
follow-up comes (`Delays`: minutes for actions, days for slow claims). A scenario with a `Profile` is meant to run
with its own settings and length (one-day windows). Event time runs as fast as the producer can
send, so a month of traffic replays in seconds. Each scenario's `expect` says what trustgap should publish.
"""

from __future__ import annotations

import heapq
import math
import random
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from .events import EventKind
from .times import utcnow

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
    claims: float = 0.3           # P(a truth outcome reports a claim); above 0 every truth outcome carries its
    #                               `value`, the amount paid (0 without a claim)
    severity: float = 1000.0      # median claim amount (lognormal, sigma 1: most small, a few huge)
    uncategorised: float = 0.0    # share of predictions whose `country` the upstream categoriser does not know


Scenario = Callable[[float, dict[str, str], str], Behaviour]
Mix = Callable[[random.Random, float], dict[str, str]]
"""Who arrives: a prediction's segment drawn for a moment (hours since the start)."""


@dataclass(frozen=True, slots=True)
class Delays:
    """How long after its prediction each follow-up comes, uniform in (low, high) minutes."""

    action: tuple[float, float] = (1, 20)     # a reviewer acts within minutes
    truth: tuple[float, float] = (5, 30)      # a fast-settling truth (a click, a chargeback check)
    proxy: tuple[float, float] = (1, 10)      # the cheap proxy comes first


@dataclass(frozen=True, slots=True)
class Plan:
    """A scenario laid out over one run: its behaviour, when the change starts, and the annotations it sends."""

    behaviour: Scenario
    change_hours: float | None = None  # hours after the start when the change begins (None: nothing changes)
    annotations: tuple[dict[str, Any], ...] = ()  # Annotation bodies without schema_version/event_id/model
    expect: str = ""  # what trustgap should say, for the README, the tests and the detection report
    delays: Delays = Delays()
    mix: Mix | None = None  # None: every region and channel equally likely, all run long


@dataclass(frozen=True, slots=True)
class Profile:
    """How a scenario is meant to be run when it needs more than the defaults: its length, traffic and the model
    settings (ModelSettings fields) it is judged with."""

    days: float
    rate: float
    settings: dict[str, Any]


CALM = Behaviour()


def quiet(hours: float, segment: dict[str, str], band: str) -> Behaviour:
    """Nothing changes: the false-alarm baseline."""
    return CALM


def _hour_after(start: datetime, hours: float) -> float:
    """Hours from `start` to the first whole hour at or after `start + hours` (so a change fills whole windows)."""
    t = start + timedelta(hours=hours)
    aligned = t.replace(minute=0, second=0, microsecond=0)
    if aligned < t:
        aligned += timedelta(hours=1)
    return (aligned - start).total_seconds() / 3600


def _day_after(start: datetime, hours: float) -> float:
    """Hours from `start` to the first midnight (UTC) at or after `start + hours` (whole one-day windows)."""
    t = start + timedelta(hours=hours)
    aligned = t.replace(hour=0, minute=0, second=0, microsecond=0)
    if aligned < t:
        aligned += timedelta(days=1)
    return (aligned - start).total_seconds() / 3600


def _from(change: float, changed: Behaviour, where: Callable[[dict[str, str]], bool] = lambda s: True,
          until: float = float("inf")) -> Scenario:
    def behaviour(hours: float, segment: dict[str, str], band: str) -> Behaviour:
        return changed if change <= hours < until and where(segment) else Behaviour()
    return behaviour


def feature_breakage(total_hours: float, start: datetime) -> Plan:
    """From half-way, `income` freezes and `days_since_signup` goes missing; the model, fed junk, errs more."""
    change = _hour_after(start, 0.5 * total_hours)
    return Plan(_from(change, Behaviour(mismatch=0.35, frozen=("income",), missing=("days_since_signup",))), change,
                expect="feature_frozen (income) and feature_missing (days_since_signup) sustained (ticket); the "
                       "model's outcome_mismatch alerts -> fix_upstream_feature")


def stale_taxonomy(total_hours: float, start: datetime) -> Plan:
    """From half-way, 35% of the predictions come from markets the upstream geo categoriser does not know: their
    `country` is `other` or a code it never produced before; the feature is alive, varied, on scale and present."""
    change = _hour_after(start, 0.5 * total_hours)
    return Plan(_from(change, Behaviour(uncategorised=0.35)), change,
                expect="feature_novel_values (country: 'other', 'NG', 'KE') sustained (ticket) -> "
                       "fix_upstream_feature")


def feature_rescale(total_hours: float, start: datetime) -> Plan:
    """From half-way, `income` arrives in cents instead of units (x100); nothing else changes."""
    change = _hour_after(start, 0.5 * total_hours)
    return Plan(_from(change, Behaviour(rescaled=(("income", 100.0),))), change,
                expect="feature_scale_shift (income, x100) sustained (ticket) -> fix_upstream_feature")


def trust_decay(total_hours: float, start: datetime) -> Plan:
    """From 70% of the run on, officers in region=eu override four times as often; outcomes do not move."""
    change = _hour_after(start, 0.7 * total_hours)
    return Plan(_from(change, Behaviour(override=0.40), lambda s: s["region"] == "eu"), change,
                expect="override_rate sustained (page) for the model and region=eu -> investigate_segment "
                       "(region=eu carries the excess)")


def trust_erosion(total_hours: float, start: datetime) -> Plan:
    """From 70% on, reviewers everywhere override 2.5 times as often, while outcomes stay as good as before."""
    change = _hour_after(start, 0.7 * total_hours)
    return Plan(_from(change, Behaviour(override=0.25)), change,
                expect="override_rate sustained (page) for the model -> investigate_trust")


def outcome_drift(total_hours: float, start: datetime) -> Plan:
    """From 70% on, the world moves: truth and proxy mismatch both rise everywhere (e.g. a new fraud pattern)."""
    change = _hour_after(start, 0.7 * total_hours)
    return Plan(_from(change, Behaviour(mismatch=0.24, proxy_mismatch=0.44)), change,
                expect="outcome_mismatch sustained (page) for the model -> retrain_candidate")


def clickbait(total_hours: float, start: datetime) -> Plan:
    """From 70% on, a ranking change wins clicks (proxy mismatch falls) while real engagement gets worse."""
    change = _hour_after(start, 0.7 * total_hours)
    return Plan(_from(change, Behaviour(mismatch=0.20, proxy_mismatch=0.15)), change,
                expect="proxy_divergence sustained (ticket) and outcome_mismatch sustained (page) for the model "
                       "-> review_objective on both")


def campaign(total_hours: float, start: datetime) -> Plan:
    """A promotion from 50% to 75% of the run brings unusual customers (more overrides and mismatches); marketing
    annotated it in advance, so it is expected."""
    begin, end = _hour_after(start, 0.5 * total_hours), _hour_after(start, 0.75 * total_hours)
    note = {"kind": "campaign", "start": _ts(start + timedelta(hours=begin)),
            "end": _ts(start + timedelta(hours=end)), "note": "weekend promotion: new-customer discount"}
    return Plan(_from(begin, Behaviour(override=0.25, mismatch=0.20), until=end), begin, (note,),
                expect="expected (info) once per signal and scope -> none; no sustained alert")


def blip(total_hours: float, start: datetime) -> Plan:
    """At 70% of the run, a 90-minute review-tool outage makes editors bypass the model, then all is normal."""
    change = _hour_after(start, 0.7 * total_hours)
    return Plan(_from(change, Behaviour(override=0.45), until=change + 1.5), change,
                expect="override_rate transient (info) for two windows -> exclude_window_from_training; no "
                       "sustained alert")


def cohort_shift(total_hours: float, start: datetime) -> Plan:
    """From 70% of the run on, a partner campaign brings new customers through a channel never seen before, 45% of
    the traffic; they are decided as well as everyone else: only who the model sees changed."""
    change = _hour_after(start, 0.7 * total_hours)

    def mix(rng: random.Random, hours: float) -> dict[str, str]:
        region = rng.choice(REGIONS)
        if hours >= change and rng.random() < 0.45:
            return {"region": region, "channel": "campaign"}
        return {"region": region, "channel": rng.choice(CHANNELS)}
    return Plan(quiet, change, expect="segment_shift sustained (ticket) for channel=*new* naming channel=campaign "
                "-> review_segments; no rate alert", mix=mix)


def loss_ratio_low_band(total_hours: float, start: datetime) -> Plan:
    """Every truth outcome reports the amount paid on it (30% carry a claim); from 70% of the run on, claims in the
    low-risk band cost three times as much (a repair-cost surge the score does not price); how often claims come,
    and every label, stay as they were."""
    change = _hour_after(start, 0.7 * total_hours)
    dearer = Behaviour(severity=3000.0)

    def behaviour(hours: float, segment: dict[str, str], band: str) -> Behaviour:
        return dearer if hours >= change and band == "low" else CALM
    return Plan(behaviour, change, expect="outcome_value sustained (page) for band=low -> investigate_segment "
                "(band=low carries the excess); no other signal")


DAY = 86400


def flash_sale(total_hours: float, start: datetime) -> Plan:
    """A two-day promotion from 2/3 of the run brings unusual customers (more overrides and mismatches), not
    annotated; the truth comes 2-20 h after the prediction, so the second day's outcomes arrive on the third."""
    begin = _day_after(start, 2 / 3 * total_hours)
    return Plan(_from(begin, Behaviour(override=0.25, mismatch=0.20), until=begin + 48), begin,
                expect="override_rate and outcome_mismatch transient (info) naming exactly the two promotion days "
                       "-> exclude_window_from_training; no sustained alert",
                delays=Delays(truth=(120, 1200)))


def slow_claims(total_hours: float, start: datetime) -> Plan:
    """Claims settle 1-6 days after the decision; from 60% of the run the world moves (truth and proxy mismatch
    rise everywhere, as in outcome_drift)."""
    change = _day_after(start, 0.6 * total_hours)
    return Plan(_from(change, Behaviour(mismatch=0.24, proxy_mismatch=0.44)), change,
                expect="outcome_mismatch transient at the first look with enough claims (age 2d), then sustained "
                       "(page) for the model -> retrain_candidate",
                delays=Delays(truth=(DAY / 60, 6 * DAY / 60)))


SCENARIOS: dict[str, Callable[[float, datetime], Plan]] = {
    "quiet": lambda total, start: Plan(quiet, expect="no sustained alert"),
    "trust_decay": trust_decay,
    "trust_erosion": trust_erosion,
    "outcome_drift": outcome_drift,
    "clickbait": clickbait,
    "campaign": campaign,
    "blip": blip,
    "feature_breakage": feature_breakage,
    "feature_rescale": feature_rescale,
    "stale_taxonomy": stale_taxonomy,
    "flash_sale": flash_sale,
    "slow_claims": slow_claims,
    "cohort_shift": cohort_shift,
    "loss_ratio_low_band": loss_ratio_low_band,
}

PROFILES: dict[str, Profile] = {
    # one-day windows, the follow-ups' default checkpoints: actions at 1d, outcomes at 1d and 7d
    "flash_sale": Profile(21, 100, {"window_seconds": DAY}),
    # claims take days: outcome looks at 1, 2 and 4 days and the 7-day horizon
    "slow_claims": Profile(28, 60, {"window_seconds": DAY, "checkpoints_seconds": [DAY, 2 * DAY, 4 * DAY]}),
}
"""Scenarios judged with their own settings and run length (the others run with the defaults)."""

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
        if name == "country" and b.uncategorised and rng.random() < b.uncategorised:
            value = rng.choice(("other", "NG", "KE"))
        if name in b.missing:
            roll = rng.random()
            if roll < 0.35:
                continue  # absent from the snapshot
            if roll < 0.7:
                value = None
        out[name] = value
    return out


def plan(scenario: str, days: float, end: datetime) -> Plan:
    """The scenario's plan for a run of `days` ending at `end`."""
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}; choose from {', '.join(sorted(SCENARIOS))}")
    return SCENARIOS[scenario](days * 24, end - timedelta(hours=days * 24))


def _paid(rng: random.Random, b: Behaviour) -> dict[str, float]:
    """A truth outcome's `value`: the amount paid on it (0 without a claim); none where the cohort has no claims."""
    if b.claims <= 0:
        return {}
    return {"value": round(rng.lognormvariate(math.log(b.severity), 1.0), 2) if rng.random() < b.claims else 0.0}


def _ts(t: datetime) -> str:
    return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def generate(scenario: str, days: float = 30.0, rate: float = 120.0, seed: int = 1, model: str = "claims",
             end: datetime | None = None, bands: bool = True) -> Iterator[tuple[EventKind, dict[str, Any]]]:
    """Yield (kind, event) in event-time order: `rate` predictions per hour for `days`, ending at `end`; a
    scenario's annotations come first. Without `bands` the predictions name no band (a model without bands)."""
    rng = random.Random(seed)
    frng = random.Random(seed * 7919 + 4)  # features draw from their own stream: the events stay as they were
    vrng = random.Random(seed * 104729 + 7)  # and so do claim amounts
    last: dict[str, Any] = {}
    end = end or utcnow().replace(microsecond=0)
    start = end - timedelta(hours=days * 24)
    layout = plan(scenario, days, end)
    behave, delays = layout.behaviour, layout.delays
    pending: list[tuple[datetime, int, EventKind, dict[str, Any]]] = []
    seq = 0
    t = start
    step = timedelta(hours=1) / rate
    for i, body in enumerate(layout.annotations):
        # announced ahead of the change, as teams do; sent first so it is stored before its windows close
        yield "annotation", {"schema_version": 1, "event_id": f"ann-{model}-{scenario}-{seed}-{i}", "model": model,
                             **body}
    while t < end:
        t += timedelta(seconds=rng.expovariate(1.0) * step.total_seconds())
        hours = (t - start).total_seconds() / 3600
        segment = layout.mix(rng, hours) if layout.mix else {"region": rng.choice(REGIONS),
                                                             "channel": rng.choice(CHANNELS)}
        score = rng.random()
        band = next(name for cut, name in BANDS if score < cut)
        b = behave(hours, segment, band)
        pid = f"p-{model}-{uuid.UUID(int=rng.getrandbits(128))}"  # ids are unique across models too
        label = LABELS[0] if score < 0.5 else LABELS[1]
        other = LABELS[1] if label == LABELS[0] else LABELS[0]

        def emit(when: datetime, kind: EventKind, body: dict[str, Any]) -> None:
            nonlocal seq
            seq += 1
            event = {"schema_version": 1, "event_id": f"e-{model}-{uuid.UUID(int=rng.getrandbits(128))}", **body}
            if when <= end:
                heapq.heappush(pending, (when, seq, kind, event))

        emit(t, "prediction", {"prediction_id": pid, "model": model, "model_version": "v1", "ts": _ts(t),
                               "label": label, "score": round(score, 4), **({"band": band} if bands else {}),
                               "segment": segment, "features": features_of(frng, segment, b, last)})
        if rng.random() < b.acted:
            at = t + timedelta(minutes=rng.uniform(*delays.action))
            action = ("override" if rng.random() < 0.8 else "bypass") if rng.random() < b.override else "accept"
            emit(at, "action", {"prediction_id": pid, "ts": _ts(at), "action": action})
        if rng.random() < b.truth:
            at = t + timedelta(minutes=rng.uniform(*delays.truth))
            emit(at, "outcome", {"prediction_id": pid, "ts": _ts(at), "kind": "truth",
                                 "label": other if rng.random() < b.mismatch else label, **_paid(vrng, b)})
        if rng.random() < b.proxy:
            at = t + timedelta(minutes=rng.uniform(*delays.proxy))
            emit(at, "outcome", {"prediction_id": pid, "ts": _ts(at), "kind": "proxy",
                                 "label": other if rng.random() < b.proxy_mismatch else label})
        while pending and pending[0][0] <= t:
            _, _, kind, event = heapq.heappop(pending)
            yield kind, event
    while pending:
        _, _, kind, event = heapq.heappop(pending)
        yield kind, event
