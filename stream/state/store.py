"""The worker's one handle on Redis: applying batches idempotently, their offsets, annotations; the evaluator's
calls and the feature reads are parts of it (`Evaluation`, `FeatureStore`).

The one rule: every write that must not happen twice is guarded inside the same Lua call that does it. `apply`
runs one script per bucket touched by a batch (one round trip for the whole batch). The script dedups each
prediction by its id in its context slot and each action/outcome by a hash of its `event_id` kept in its
prediction's context, joins actions/outcomes to their prediction (or parks them until it arrives), bumps the
window counters, refusing events whose window is already closed, and records the features of a prediction it
newly stored.
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import redis.asyncio as aioredis

from ..events import Annotation, Event, HumanActionEvent, OutcomeEvent, PredictionEvent
from ..settings import Settings
from ..times import epoch_ms
from ..windows import STAGE_SIGNAL
from . import keys, scripts
from .evaluation import ClosedWindow, Evaluation, Tick
from .features import STRING_MAX, FeaturePlan, FeatureStore
from .labels import OTHER, Admission, Labels, admit_names
from .progress import PartitionEnd, Progress, assert_idle, by_partition, queue_progress
from .redis_io import execute


@dataclass(slots=True)
class Flow:
    """What happened to one model's events of one kind in a batch."""

    counted: int = 0         # counted into their (prediction's) window
    late: int = 0            # their window's stage was already judged
    beyond_horizon: int = 0  # older than the kind's horizon: outside the definition, not counted in a window


@dataclass(slots=True)
class ApplyResult:
    """What one batch did; `late` events were valid but their window had closed."""

    applied: int = 0
    duplicates: int = 0
    pending: int = 0
    late: int = 0
    drained: int = 0  # parked actions/outcomes applied because their prediction arrived
    beyond_horizon: int = 0  # actions/outcomes older than their kind's horizon: counted in no window
    untracked_features: dict[str, int] = field(default_factory=dict)  # model -> feature values over the cap
    overflow: Counter[str] = field(default_factory=Counter)  # label values capped into __other__, by kind
    flows: dict[tuple[str, str], Flow] = field(default_factory=dict)  # (model, windows.STAGE_SIGNAL value) ->

    def add(self, other: Sequence[Any]) -> None:
        """Add one apply script's reply: {applied, duplicates, pending, late, drained, beyond the horizon, flows
        JSON (model -> kind -> [counted, late, beyond])}."""
        self.applied += int(other[0])
        self.duplicates += int(other[1])
        self.pending += int(other[2])
        self.late += int(other[3])
        self.drained += int(other[4])
        self.beyond_horizon += int(other[5])
        for model, kinds in orjson.loads(other[6]).items():
            for kind, (counted, late, beyond) in kinds.items():
                f = self.flows.setdefault((model, STAGE_SIGNAL[kind]), Flow())
                f.counted += counted
                f.late += late
                f.beyond_horizon += beyond


@dataclass(frozen=True, slots=True)
class Prepared:
    """A batch encoded for the apply pipeline (Store.prepare), sendable again as is after a Redis restart."""

    buckets: dict[int, tuple[bytes, bytes]]  # bucket -> its records and triples for apply.lua (JSON)
    features: FeaturePlan
    models: set[str]           # admitted model names the batch touches
    overflow: Counter[str]


def dedup_token(event_id: str) -> str:
    """16 hex digits kept in a prediction's context per applied action/outcome: its dedup, in 16 bytes instead of a
    hash field holding the event_id. Two events of one prediction collide with probability ~2**-64."""
    return hashlib.blake2b(event_id.encode(), digest_size=8).hexdigest()


def follower_record(event: HumanActionEvent | OutcomeEvent) -> tuple[Any, ...]:
    """An action's or outcome's fields in apply.lua's flat record layout."""
    ts = epoch_ms(event.ts)
    if isinstance(event, HumanActionEvent):
        return "a", event.prediction_id, event.event_id, dedup_token(event.event_id), ts, event.action
    return "o", event.prediction_id, event.event_id, dedup_token(event.event_id), ts, event.label, event.kind


def encode(events: Sequence[Event], labels: Sequence[Labels], stamps: Sequence[int],
           tracked: Mapping[str, frozenset[str]], buckets: int) -> dict[int, tuple[bytes, bytes]]:
    """Each bucket's records and triples as apply.lua reads them: one flat JSON array of records, predictions
    naming their (model, version, scopes) by index into the bucket's table of triples and carrying their
    `features` object as it came (only the tracked names), so the script counts them itself.

    `labels` and `stamps` belong to the predictions of `events`, in order."""
    records: dict[int, list[Any]] = defaultdict(list)
    triples: dict[int, dict[int, int]] = defaultdict(dict)  # bucket -> id(labels) -> index in `table_of`
    table_of: dict[int, list[Labels]] = defaultdict(list)  # (`labels` keeps every one alive meanwhile)
    j = 0
    for event in events:
        if not isinstance(event, PredictionEvent):
            records[keys.bucket_of(event.prediction_id, buckets)] += follower_record(event)  # type: ignore[arg-type, union-attr]
            continue
        got, ts = labels[j], stamps[j]
        j += 1
        b = keys.bucket_of(event.prediction_id, buckets)
        table = triples[b]
        index = table.get(id(got))
        if index is None:
            index = table[id(got)] = len(table)
            table_of[b].append(got)
        # recorded by apply.lua exactly when it newly stores the prediction; {} still counts it (missing)
        fx: dict[str, Any] | bool = False
        if got.model == event.model and got.model in tracked:
            fx = event.features or {}
            names = tracked[got.model]
            if not fx.keys() <= names:  # a wide snapshot: only the tracked values travel to Redis
                fx = {k: v for k, v in fx.items() if k in names}
        # no event_id: a prediction is deduplicated by prediction_id in the slot of its ts
        records[b] += ("p", event.prediction_id, index, ts, event.label, fx)
    return {b: (orjson.dumps(recs), orjson.dumps([[t.model, t.version, t.scopes] for t in table_of[b]]))
            for b, recs in records.items()}


def bucket_args(bucket: int) -> tuple[str, ...]:
    """apply.lua's ARGV[4:]: the prefixes of the bucket's keys it names itself (keys.py spells them)."""
    return (keys.context_prefix(bucket), keys.parked_prefix(bucket), keys.window_prefix(bucket),
            keys.feature_stats_prefix(bucket), keys.feature_top_prefix(bucket))


class Store:
    """All of trustgap's Redis traffic; one instance per worker process."""

    def __init__(self, client: aioredis.Redis, settings: Settings) -> None:
        self.redis = client
        self.settings = settings
        self.labels = Admission(client, settings)
        self.features = FeatureStore(client, settings)
        self.evaluation = Evaluation(client, settings)
        self._cfg_cache: dict[str, Any] | None = None
        self._bucket_args = [bucket_args(b) for b in range(settings.state_buckets)]
        # The Redis process (INFO run_id) whose offsets the worker last reconciled with; None disables the guard.
        self.run_id: str | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> Store:
        client = aioredis.Redis.from_url(settings.redis_url.get_secret_value(), socket_timeout=10,
                                         socket_connect_timeout=5, health_check_interval=30)
        return cls(client, settings)

    async def server_run_id(self) -> str:
        """The Redis process's run_id: it changes on every restart (and on a failover to a replica)."""
        info = await self.redis.info("server")
        return str(info["run_id"])

    def _static_cfg(self) -> dict[str, Any]:
        """The part of apply.lua's cfg that follows from the settings alone."""
        if self._cfg_cache is None:
            s = self.settings
            win, ttl, cp = {}, {}, {}
            for name, m in [("_", s.defaults), *s.models.items()]:
                win[name] = m.window_seconds * 1000
                ttl[name] = keys.window_ttl(m)
                cp[name] = {"a": list(m.checkpoints_ms("a")), "o": list(m.checkpoints_ms("o"))}
            self._cfg_cache = {"win": win, "ttl": ttl, "cp": cp, "late_field": keys.LATE_FIELD,
                               "ctx_ttl": s.context_ttl_seconds,
                               "span": keys.slot_span_ms(s.context_ttl_seconds),
                               "pend_ttl": s.pending_ttl_seconds, "meta_ttl": keys.META_TTL,
                               "top_k": keys.FEATURE_TOP_K, "str_max": STRING_MAX}
        return self._cfg_cache

    async def admit(self, predictions: Sequence[PredictionEvent]) -> tuple[list[Labels], Counter[str]]:
        """Cap producer-chosen names: the admitted labels of each prediction, and the overflows by kind."""
        return await self.labels.admit(predictions)

    async def apply(self, events: Sequence[Event], progress: Progress, now_ms: int) -> ApplyResult:
        """Apply predictions, actions and outcomes idempotently, then record the progress (offsets, event time)
        they cover.

        One pipeline for the effects: a script per bucket, then the offsets. Redis executes a connection's
        commands in order and its AOF keeps that order, so an offset that survived a crash implies that the
        effects before it survived too; effects past it are replayed and deduplicated. Every script refuses to
        run on a Redis process other than `run_id` (RedisRestarted), so a batch never lands on top of a hole.
        """
        return await self.send(await self.prepare(events), progress, now_ms)

    async def prepare(self, events: Sequence[Event]) -> Prepared:
        """The CPU half of `apply`: cap labels, plan features, encode the records of each bucket.

        Talks to Redis only to admit label values or features this worker has not seen, so the worker can
        prepare the next batch while Redis runs the previous one's scripts."""
        preds = [e for e in events if isinstance(e, PredictionEvent)]
        labels, overflow = await self.labels.admit(preds) if preds else ([], Counter[str]())
        stamps = [epoch_ms(p.ts) for p in preds]
        # features only for models admitted under their own name: a capped-away model keeps no feature keys
        own = [(p, ts) for p, got, ts in zip(preds, labels, stamps, strict=True) if got.model == p.model]
        feature_plan = await self.features.plan([p for p, _ in own], [ts for _, ts in own])
        encoded = encode(events, labels, stamps, feature_plan.tracked, self.settings.state_buckets)
        return Prepared(encoded, feature_plan, {got.model for got in labels}, overflow)

    async def send(self, prepared: Prepared, progress: Progress, now_ms: int) -> ApplyResult:
        """The Redis half of `apply`: one pipeline with a script per bucket, the HLLs, then the progress."""
        cfg = orjson.dumps({**self._static_cfg(), "now": now_ms, "run_id": self.run_id or "",
                            "ft": {m: sorted(names) for m, names in prepared.features.tracked.items()}})
        result = ApplyResult(overflow=prepared.overflow)
        async with self.redis.pipeline(transaction=False) as pipe:
            for bucket, (recs, tri) in prepared.buckets.items():
                # EVAL, not EVALSHA: a script object in a pipeline makes redis-py send SCRIPT EXISTS first, a
                # second round trip per batch; EVALSHA alone could fail NOSCRIPT after a Redis restart while the
                # offsets queued behind it still apply. Redis caches the compiled body by its SHA, so a repeated
                # EVAL costs the body's transfer and hashing, not a compile.
                pipe.eval(scripts.APPLY.source, 2, keys.bucket_meta(bucket), keys.bucket_pending(bucket), cfg, recs,
                          tri, *self._bucket_args[bucket])
            self.features.queue(pipe, prepared.features)
            if prepared.models:
                pipe.sadd(keys.MODELS, *prepared.models)
            if progress:
                queue_progress(pipe, progress, self.run_id)
            replies = await execute(pipe)
        for reply in replies[: len(prepared.buckets)]:
            result.add(reply)
        result.untracked_features = prepared.features.untracked
        return result

    async def offsets(self) -> dict[tuple[str, int], int]:
        """Next offset to read per (topic, partition), as far as Redis's state goes."""
        return by_partition(await self.redis.hgetall(keys.OFFSETS))

    async def add_annotations(self, annotations: Sequence[Annotation], progress: Progress | None = None) -> int:
        """Store annotations by event_id (a redelivered one keeps the first), then their offsets; returns how many
        were new. Annotations of models over the model cap are dropped (they could explain nothing)."""
        admitted = set()
        if annotations:
            admitted = set(await admit_names(self.redis, keys.MODELS, self.settings.max_models,
                                             [a.model for a in annotations], refused=OTHER))
        kept = [a for a in annotations if a.model in admitted]
        async with self.redis.pipeline(transaction=False) as pipe:
            for a in kept:
                pipe.hsetnx(keys.model_annotations(a.model), a.event_id, a.model_dump_json())
                pipe.expire(keys.model_annotations(a.model), keys.MODEL_TTL)
            if progress:
                queue_progress(pipe, progress, self.run_id)
            replies = await execute(pipe)
        return sum(int(r) for r in replies[0: 2 * len(kept): 2])

    async def assert_idle(self, ends: Mapping[tuple[str, int], PartitionEnd], now_ms: int, ttl_ms: int
                          ) -> set[tuple[str, int]]:
        """See progress.assert_idle: mark idle the partitions whose Redis offset reached their end."""
        return await assert_idle(self.redis, ends, now_ms, ttl_ms)

    # --- the evaluator's calls, kept on the Store so the worker holds one handle ---

    async def tick(self, models: Sequence[str], owner: str, sweep_now_ms: int | None,
                   partitions: Sequence[tuple[str, int]] | None = None) -> Tick:
        """See Evaluation.tick: the model set, leases, outboxes, closed marks, the sweep and the event time."""
        return await self.evaluation.tick(models, owner, sweep_now_ms, partitions)

    async def close_and_read(self, model: str, start_ms: int, end_ms: int, stage: str, with_state: bool
                             ) -> ClosedWindow:
        """See Evaluation.close_and_read: close one stage of a window and read what judging it needs."""
        return await self.evaluation.close_and_read(model, start_ms, end_ms, stage, with_state)

    async def commit_evaluation(self, model: str, expected_closed: str, closed: str, start_ms: int,
                                summary: bytes, state: bytes, alerts: Sequence[tuple[str, bytes]],
                                keep_from_ms: int) -> bool:
        """See Evaluation.commit_evaluation: advance the cursor from `expected_closed`, alerts to the outbox."""
        return await self.evaluation.commit_evaluation(model, expected_closed, closed, start_ms, summary, state,
                                                       alerts, keep_from_ms)

    async def lease(self, model: str, owner: str, ttl_ms: int = keys.LEASE_MS) -> bool:
        """Take or renew the model's evaluation lease; False while another live worker holds it."""
        return await self.evaluation.lease(model, owner, ttl_ms)

    async def ack_alerts(self, model: str, alert_ids: Sequence[str]) -> None:
        """Forget outbox entries the broker acknowledged."""
        await self.evaluation.ack_alerts(model, alert_ids)

    async def close(self) -> None:
        await self.redis.aclose()
