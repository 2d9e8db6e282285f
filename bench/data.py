"""A reproducible data set: contract-v1 events from a seeded generator, already encoded for the producer."""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import orjson

REGIONS = ("eu-west", "eu-central", "us-east", "us-west", "ap-south")
CHANNELS = ("web", "mobile", "branch", "partner")
COUNTRIES = ("DE", "FR", "US", "IN", "GB", "NL")
T0 = datetime(2025, 6, 1, tzinfo=timezone.utc)  # in the past, so no event is rejected as from the future


def _ts(t: datetime) -> str:
    return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def prediction(rng: random.Random, t: datetime, model: str = "claims-triage") -> dict[str, Any]:
    """One ~386-byte prediction event, shaped like what a model service sends."""
    score = rng.random()
    return {"schema_version": 1, "event_id": f"e-{uuid.UUID(int=rng.getrandbits(128))}",
            "prediction_id": f"p-{uuid.UUID(int=rng.getrandbits(128))}", "model": model,
            "model_version": "v3.2.1-gbm", "ts": _ts(t), "label": "approve" if score < 0.6 else "refer",
            "score": round(score, 4), "band": "high" if score > 0.8 else "mid" if score > 0.4 else "low",
            "segment": {"region": rng.choice(REGIONS), "channel": rng.choice(CHANNELS)},
            "features": {"amount": round(rng.uniform(10, 5000), 2), "age_days": rng.randint(0, 4000),
                         "country": rng.choice(COUNTRIES), "device": rng.choice(CHANNELS)}}


def predictions(n: int, seed: int = 7, step_ms: int = 100) -> Iterator[dict[str, Any]]:
    """`n` predictions `step_ms` apart in event time from T0 (one model: the single-tenant worst case)."""
    rng = random.Random(seed)
    for i in range(n):
        yield prediction(rng, T0 + timedelta(milliseconds=i * step_ms))


def encode_single(events: Iterator[dict[str, Any]]) -> list[tuple[bytes, bytes]]:
    """One event per message, keyed by prediction id (how a naive producer sends)."""
    return [(e["prediction_id"].encode(), orjson.dumps(e)) for e in events]


def encode_batched(events: Iterator[dict[str, Any]], size: int) -> list[tuple[bytes, bytes]]:
    """JSON-array messages of `size` events (the contract's batch form, what stream.client sends)."""
    out: list[tuple[bytes, bytes]] = []
    buf: list[dict[str, Any]] = []
    for e in events:
        buf.append(e)
        if len(buf) == size:
            out.append((buf[0]["prediction_id"].encode(), orjson.dumps(buf)))
            buf = []
    if buf:
        out.append((buf[0]["prediction_id"].encode(), orjson.dumps(buf)))
    return out
