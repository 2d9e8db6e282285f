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
from typing import TYPE_CHECKING, Any, NamedTuple, cast

import orjson
import redis.asyncio as aioredis

from ..features import GroupStats, summarize
from ..events import Annotation, Event, HumanActionEvent, OutcomeEvent, PredictionEvent
from ..settings import Settings
from ..times import epoch_ms
from ..windows import STAGE_SIGNAL, window_start
from . import keys, scripts
from .evaluation import ClosedWindow, Evaluation, Tick
from .features import STRING_MAX, FeaturePlan, FeatureStore
from .labels import OTHER, Admission, Labels, admit_names
from .progress import (PartitionEnd, Progress, assert_idle, by_partition, merge_min, parse_read, queue_progress,
                       queue_read, triples)
from .redis_io import async_client, bucket_slots, execute

if TYPE_CHECKING:
    from redis.asyncio.cluster import RedisCluster


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


class Call(NamedTuple):
    """One bucket's share of a batch as apply.lua reads it (JSON each): ARGV[2] to ARGV[5]."""

    records: bytes
    triples: bytes
    groups: bytes     # per feature group: [its size, summarize(its snapshots)]
    snapshots: bytes  # per feature group: its snapshots, read only where the summary cannot be added whole


@dataclass(frozen=True, slots=True)
class Prepared:
    """A batch encoded for the apply pipeline (Store.prepare), sendable again as is after a Redis restart."""

    buckets: dict[int, Call]  # bucket -> its arguments for apply.lua
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
    return ("o", event.prediction_id, event.event_id, dedup_token(event.event_id), ts, event.label, event.kind,
            event.value)


def encode(events: Sequence[Event], labels: Sequence[Labels], stamps: Sequence[int],
           tracked: Mapping[str, frozenset[str]], window_ms: Mapping[str, int], buckets: int
           ) -> tuple[dict[int, Call], dict[tuple[str, int], list[GroupStats]]]:
    """Each bucket's arguments to apply.lua, and the feature summaries of each (model, window start), one per bucket.

    A bucket's records are one flat JSON array, predictions naming their (model, version, scopes) by index into the
    bucket's table of triples and their feature group by number (0: none). A group is one model's predictions of one
    window in the bucket: the script adds its summary (`features.summarize`) whole, or, where it did not newly store
    every prediction of the group, sums the new ones' snapshots (only the tracked names), sent beside it.

    `labels` and `stamps` belong to the predictions of `events`, in order; `window_ms` holds each tracked model's
    window size."""
    records: dict[int, list[Any]] = defaultdict(list)
    triples: dict[int, dict[int, int]] = defaultdict(dict)  # bucket -> id(labels) -> index in `table_of`
    table_of: dict[int, list[Labels]] = defaultdict(list)  # (`labels` keeps every one alive meanwhile)
    groups: dict[int, dict[tuple[str, int], int]] = defaultdict(dict)  # bucket -> (model, window start) -> number
    snapshots: dict[int, list[list[dict[str, Any]]]] = defaultdict(list)  # bucket -> per group, its snapshots
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
        g = 0
        model = got.model
        if model == event.model and model in tracked:
            fx = event.features or {}
            names = tracked[model]
            if not fx.keys() <= names:  # a wide snapshot: only the tracked values travel to Redis
                fx = {k: v for k, v in fx.items() if k in names}
            numbered = groups[b]
            key = (model, window_start(ts, window_ms[model]))
            g = numbered.get(key, 0)
            if not g:
                g = numbered[key] = len(numbered) + 1
                snapshots[b].append([])
            snapshots[b][g - 1].append(fx)
        # no event_id: a prediction is deduplicated by prediction_id in the slot of its ts
        records[b] += ("p", event.prediction_id, index, ts, event.label, g)
    calls: dict[int, Call] = {}
    summaries: dict[tuple[str, int], list[GroupStats]] = defaultdict(list)
    for b, recs in records.items():
        summary = []
        for key, snaps in zip(groups[b], snapshots[b], strict=True):
            s = summarize(snaps)
            summaries[key].append(s)
            summary.append([len(snaps), s.stats])
        calls[b] = Call(orjson.dumps(recs), orjson.dumps([[t.model, t.version, t.scopes] for t in table_of[b]]),
                        orjson.dumps(summary), orjson.dumps(snapshots[b]))
    return calls, summaries


def bucket_args(bucket: int) -> tuple[str, ...]:
    """apply.lua's ARGV[6:10]: the prefixes of the bucket's keys it names itself (keys.py spells them)."""
    return (keys.context_prefix(bucket), keys.parked_prefix(bucket), keys.window_prefix(bucket),
            keys.feature_stats_prefix(bucket), keys.feature_top_prefix(bucket))


class Store:
    """All of trustgap's Redis traffic; one instance per worker process."""

    def __init__(self, client: aioredis.Redis, settings: Settings) -> None:
        self.redis = client
        self.settings = settings
        self.cluster = settings.redis_cluster
        self.labels = Admission(client, settings)
        self.features = FeatureStore(client, settings)
        self.evaluation = Evaluation(client, settings)
        self._cfg_cache: dict[str, Any] | None = None
        self._bucket_args = [bucket_args(b) for b in range(settings.state_buckets)]
        self._slots = bucket_slots(settings)
        # The Redis process (INFO run_id) whose offsets the worker last reconciled with, on a cluster every
        # master's (`server_run_id`); None disables the guard.
        self.run_id: str | None = None
        self._run_ids: tuple[str | None, dict[str, str]] = (None, {})  # run_id parsed, on a cluster

    @classmethod
    def from_settings(cls, settings: Settings) -> Store:
        return cls(async_client(settings), settings)

    async def server_run_id(self) -> str:
        """The Redis process's run_id: it changes on every restart (and on a failover to a replica). On a cluster,
        every master's as `<address>=<run_id>,...`: a master restarted or a replica promoted changes it."""
        if not self.cluster:
            info = await self.redis.info("server")
            return str(info["run_id"])
        from redis.asyncio.cluster import RedisCluster

        cluster = cast(RedisCluster, self.redis)
        infos = await cluster.info("server", target_nodes=RedisCluster.PRIMARIES)
        if "run_id" in infos:  # one master: redis-py answers its reply alone
            infos = {cluster.get_primaries()[0].name: infos}
        return ",".join(f"{name}={info['run_id']}" for name, info in sorted(infos.items()))

    def run_id_of(self, key: str) -> str:
        """The run id the guard expects where `key` lives: on a cluster, of the master serving its slot as this
        client knows it ('unknown' for a master not reconciled with: the guard refuses, and the worker reconciles)."""
        if not self.cluster or self.run_id is None:
            return self.run_id or ""
        if self._run_ids[0] != self.run_id:
            self._run_ids = (self.run_id, dict(pair.split("=", 1) for pair in self.run_id.split(",") if "=" in pair))
        node = cast("RedisCluster", self.redis).get_node_from_key(key)
        return "unknown" if node is None else self._run_ids[1].get(node.name, "unknown")

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
        if overflow["model"]:  # counts every prediction admitted under another name
            feature_plan = await self.features.plan([p for p, got in zip(preds, labels, strict=True)
                                                     if got.model == p.model])
        else:
            feature_plan = await self.features.plan(preds)
        encoded, summaries = encode(events, labels, stamps, feature_plan.tracked, feature_plan.window_ms,
                                    self.settings.state_buckets)
        self.features.add_distinct(feature_plan, summaries)
        return Prepared(encoded, feature_plan, {got.model for got in labels}, overflow)

    async def send(self, prepared: Prepared, progress: Progress, now_ms: int) -> ApplyResult:
        """The Redis half of `apply`: one pipeline with a script per bucket, the HLLs, then the progress."""
        cfg = orjson.dumps({**self._static_cfg(), "now": now_ms,
                            "ft": {m: sorted(names) for m, names in prepared.features.tracked.items()}})
        # on a cluster each bucket's call records the chunk's progress in the bucket's own slot
        claims = triples(progress) if self.cluster else []
        # the run ids the guard expects, read with the progress claimed, before anything awaits: a reconcile
        # between the two could otherwise pair a claim made before it with a run id adopted after it
        run_ids = {b: self.run_id_of(keys.bucket_meta(b)) for b in prepared.buckets}
        offsets_run_id = self.run_id
        result = ApplyResult(overflow=prepared.overflow)
        async with self.redis.pipeline(transaction=False) as pipe:
            for bucket, call in prepared.buckets.items():
                meta = keys.bucket_meta(bucket)
                record = (keys.bucket_offsets(bucket), keys.bucket_event_time(bucket)) if self.cluster else ()
                # EVAL, not EVALSHA: a script object in a pipeline makes redis-py send SCRIPT EXISTS first, a
                # second round trip per batch; EVALSHA alone could fail NOSCRIPT after a Redis restart while the
                # offsets queued behind it still apply. Redis caches the compiled body by its SHA, so a repeated
                # EVAL costs the body's transfer and hashing, not a compile.
                pipe.eval(scripts.APPLY.source, 2 + len(record), meta, keys.bucket_pending(bucket), *record, cfg,
                          *call, *self._bucket_args[bucket], run_ids[bucket], self._slots[bucket], *claims)
            self.features.queue(pipe, prepared.features)
            if prepared.models:
                pipe.sadd(keys.MODELS, *prepared.models)
            if progress and not self.cluster:
                queue_progress(pipe, progress, offsets_run_id)
            replies = await execute(pipe)
        for reply in replies[: len(prepared.buckets)]:
            result.add(reply)
        result.untracked_features = prepared.features.untracked
        return result

    async def offsets(self) -> dict[tuple[str, int], int]:
        """Next offset to read per (topic, partition), as far as Redis's state goes: where a partition resumes.

        On a cluster, the minimum over every bucket's record (progress.merge_min). The annotations' partitions are
        not among them there: annotations live in their models' slots, on other shards than OFFSETS, so they are
        re-read from the first retained offset at every assignment and reconciliation (a small topic; storing one
        twice changes nothing)."""
        if not self.cluster:
            return by_partition(await self.redis.hgetall(keys.OFFSETS))
        async with self.redis.pipeline(transaction=False) as pipe:
            for b in range(self.settings.state_buckets):
                pipe.hgetall(keys.bucket_offsets(b))
            replies = await pipe.execute()
        return merge_min([by_partition(r) for r in replies])

    async def applied(self) -> dict[tuple[str, int], int]:
        """The offset Redis holds as applied per partition, every topic's (the annotations' too): the consumer lag's
        measure. On one node the same as `offsets`."""
        buckets = self.settings.state_buckets if self.cluster else 0
        async with self.redis.pipeline(transaction=False) as pipe:
            queue_read(pipe, [], buckets)
            replies = await pipe.execute()
        return parse_read([], replies, buckets).offsets

    async def vouch(self, progress: Progress) -> None:
        """On a cluster, write into every bucket's record the progress of chunks whose apply calls all succeeded
        (everything below it is applied in every bucket), so that a bucket no recent chunk touched does not hold
        its partitions' resume point and event time back. Guarded like apply: a shard that restarted since the
        worker reconciled refuses (RedisRestarted)."""
        if not self.cluster or not progress:
            return
        run_ids = [self.run_id_of(keys.bucket_meta(b)) for b in range(self.settings.state_buckets)]  # see send
        async with self.redis.pipeline(transaction=False) as pipe:
            for b, run_id in enumerate(run_ids):
                queue_progress(pipe, progress, run_id, bucket=b)
            await execute(pipe)

    async def add_annotations(self, annotations: Sequence[Annotation], progress: Progress | None = None) -> int:
        """Store annotations by event_id (a redelivered one keeps the first), then their offsets; returns how many
        were new. Annotations of models over the model cap are dropped (they could explain nothing)."""
        run_id = self.run_id_of(keys.OFFSETS)  # with the progress claimed, before anything awaits (see send)
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
                queue_progress(pipe, progress, run_id)
            replies = await execute(pipe)
        return sum(int(r) for r in replies[0: 2 * len(kept): 2])

    async def assert_idle(self, ends: Mapping[tuple[str, int], PartitionEnd], now_ms: int, ttl_ms: int
                          ) -> set[tuple[str, int]]:
        """See progress.assert_idle: mark idle the partitions whose Redis offset reached their end."""
        held = await self.offsets() if self.cluster else None
        return await assert_idle(self.redis, ends, now_ms, ttl_ms, held)

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
