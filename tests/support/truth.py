"""The generated truth: a reproducible event stream and the counts it must produce, computed without the Lua."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

from stream.settings import ModelSettings
from tests.support.eventtime import read_windows
from tests.support.harness import Deployment

T0 = datetime(2026, 11, 20, 0, 0, tzinfo=timezone.utc)
HOUR_MS = 3600 * 1000


def _ts(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


Events = list[dict[str, Any]]


def generate(rng: random.Random, n: int, prefix: str = "") -> tuple[Events, Events, Events]:
    preds, actions, outcomes = [], [], []
    for i in range(n):
        model = rng.choice(["claims", "fraud"])
        t = T0 + timedelta(minutes=rng.uniform(0, 180))
        pid = f"{prefix}p{i}"
        preds.append({"schema_version": 1, "event_id": f"{prefix}ep{i}", "prediction_id": pid, "model": model,
                      "model_version": rng.choice(["v1", "v2"]), "ts": _ts(t), "label": rng.choice("ab"),
                      "band": rng.choice(["low", "high"]), "segment": {"region": rng.choice(["eu", "us"])},
                      "extra_field_from_the_future": True})
        if rng.random() < 0.8:
            actions.append({"schema_version": 1, "event_id": f"{prefix}ea{i}", "prediction_id": pid,
                            "ts": _ts(t + timedelta(minutes=rng.uniform(0, 30))),
                            "action": rng.choice(["accept", "accept", "override", "bypass", "escalate"])})
        for kind in ("truth", "proxy"):
            if rng.random() < 0.6:
                outcomes.append({"schema_version": 1, "event_id": f"{prefix}eo{kind}{i}", "prediction_id": pid,
                                 "ts": _ts(t + timedelta(minutes=rng.uniform(0, 90))), "kind": kind,
                                 "label": rng.choice("ab")})
    return preds, actions, outcomes


def expected_counts(preds: list[dict[str, Any]], actions: list[dict[str, Any]], outcomes: list[dict[str, Any]],
                    ms: ModelSettings | None = None) -> Counter[tuple[str, int, str, str, str]]:
    """Reference counts (model, window start, version, scope, counter), written independently of the Lua: every
    event in its prediction's window, a follow-up under the checkpoint its age (its time minus its prediction's)
    reaches, `#<index>` after its counter; one beyond the horizon in none."""
    ms = ms or ModelSettings()
    truth: Counter[tuple[str, int, str, str, str]] = Counter()
    by_pid = {p["prediction_id"]: p for p in preds}
    size = ms.window_seconds * 1000

    def at(ts: str) -> int:
        return int(datetime.fromisoformat(ts).timestamp() * 1000)

    def bump(p: dict[str, Any], counter: str) -> None:
        start = at(p["ts"]) - at(p["ts"]) % size
        for scope in ("", f"band={p['band']}", f"region={p['segment']['region']}"):
            truth[(p["model"], start, p["model_version"], scope, counter)] += 1

    def follow(p: dict[str, Any], e: dict[str, Any], kind: str, counters: list[str]) -> None:
        ages = ms.checkpoints_ms(kind)  # type: ignore[arg-type]
        age = max(0, at(e["ts"]) - at(p["ts"]))
        index = next((i for i, limit in enumerate(ages) if age < limit), None)
        if index is not None:
            for c in counters:
                bump(p, f"{c}#{index}")

    for p in preds:
        bump(p, "n")
    for a in actions:
        follow(by_pid[a["prediction_id"]], a, "a", [f"a:{a['action']}"])
    for o in outcomes:
        p = by_pid[o["prediction_id"]]
        follow(p, o, "o", [f"o:{o['kind']}"] + ([f"m:{o['kind']}"] if o["label"] != p["label"] else []))
    return truth


def with_duplicates(rng: random.Random, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The events plus ~20% of them sent again (same event_id), shuffled."""
    out = events + [e for e in events if rng.random() < 0.2]
    rng.shuffle(out)
    return out


def in_time_order(rng: random.Random, preds: Events, actions: Events, outcomes: Events
                  ) -> list[tuple[str, dict[str, Any]]]:
    """(topic, event) in the order live traffic sends them: by event time, each follow-up after its prediction,
    and ~20% of the events sent again a few messages later (a producer's retry), as a user's services would."""
    stream = sorted([("predictions", e) for e in preds] + [("actions", e) for e in actions]
                    + [("outcomes", e) for e in outcomes], key=lambda te: te[1]["ts"])
    out: list[tuple[str, dict[str, Any]]] = []
    retries: list[tuple[int, tuple[str, dict[str, Any]]]] = []
    for i, item in enumerate(stream):
        out.append(item)
        if rng.random() < 0.2:
            retries.append((i + rng.randint(1, 20), item))
        out.extend(r for due, r in retries if due == i)
        retries = [(due, r) for due, r in retries if due != i]
    out.extend(r for _, r in retries)
    return out


def batches(events: list[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    for i in range(0, len(events), size):
        yield events[i:i + size]


def read_counts(dep: Deployment, models: set[str], starts: set[int]) -> Counter[tuple[str, int, str, str, str]]:
    """The window counts Redis holds for these models and window starts, read without closing anything."""
    return read_windows(dep.settings, models, starts).counts


