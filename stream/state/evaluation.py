"""The evaluator's Redis traffic: what a tick reads, closing a window and reading it, committing an evaluation
(compare-and-set on the model's closed mark, alerts into the outbox), the evaluation lease, and outbox acks.

`close_and_read` marks a window closed in every bucket and returns its counts in the same call, so nothing can be
added to a window after it was read. `commit_evaluation` advances a model's closed mark only from the value the
evaluator read, so two workers, or one worker after a restart, evaluate each window exactly once; its alerts go to
an outbox that is emptied only once the broker acknowledged them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis

from ..events import Annotation
from ..settings import Settings
from ..windows import partition_watermark
from . import keys, progress, scripts
from .progress import Partition
from .redis_io import as_bytes, as_text, bucket_slots


@dataclass(slots=True)
class WindowCounts:
    """Counters of one closed window: (version, scope, counter) -> count, summed over buckets (the outcome value
    sums, keys.FLOAT_COUNTERS, are floats)."""

    counts: dict[tuple[str, str, str], float] = field(default_factory=dict)
    late: dict[str, int] = field(default_factory=dict)  # stage kind (n/a/o) -> events that came after its stage

    def merge(self, flat: Sequence[bytes]) -> None:
        for i in range(0, len(flat), 2):
            name = flat[i].decode()
            if name.startswith(keys.LATE_FIELD):
                kind = name[len(keys.LATE_FIELD):]
                self.late[kind] = self.late.get(kind, 0) + int(flat[i + 1])
                continue
            version, scope, counter = name.split("|", 2)
            key = (version, scope, counter)
            x = float(flat[i + 1]) if counter.startswith(keys.FLOAT_COUNTERS) else int(flat[i + 1])
            self.counts[key] = self.counts.get(key, 0) + x


@dataclass(slots=True)
class ModelTick:
    """One model as an evaluator tick found it."""

    leased: bool                # this worker holds (or just renewed) the model's evaluation lease
    outbox: dict[str, bytes]    # alert_id -> alert JSON decided but not yet acknowledged by the broker
    closed: str                 # the model's closed mark as stored ('' before the first evaluation)
    first: int | None = None    # earliest window start over all buckets


@dataclass(slots=True)
class Tick:
    """What `Store.tick` read: every admitted model, the ones asked about, the orphans swept, and the event time."""

    models: list[str]
    seen: dict[str, ModelTick] = field(default_factory=dict)
    orphans: tuple[int, int] = (0, 0)  # (actions, outcomes) whose prediction never came
    # The event time every partition asked about has reached (windows.partition_watermark), before any model's
    # lateness; None while one that is not idle has no record yet, or when no partitions were asked about.
    event_time: int | None = None
    partition_time: dict[Partition, int] = field(default_factory=dict)  # newest event ms of every partition
    offsets: dict[Partition, int] = field(default_factory=dict)  # the offset Redis holds as applied, per partition
    idle: set[Partition] = field(default_factory=set)  # the partitions asked about that are asserted idle


@dataclass(slots=True)
class ModelState:
    """A model's detector state as stored: the closed mark it belongs to, state JSON, history, annotations."""

    closed: str
    state: bytes | None
    history: dict[int, bytes]
    annotations: list[Annotation]


@dataclass(slots=True)
class ClosedWindow:
    """A window just closed: its counts, its feature statistics per bucket, and the model state if asked for."""

    counts: WindowCounts = field(default_factory=WindowCounts)
    feature_stats: list[dict[bytes, bytes]] = field(default_factory=list)
    state: ModelState | None = None


class Evaluation:
    """The evaluator's calls; one per worker process, sharing the Store's client."""

    def __init__(self, client: aioredis.Redis, settings: Settings) -> None:
        self.redis = client
        self.settings = settings
        # Called alone, so through EVALSHA (registered); inside pipelines scripts go with EVAL (see tick).
        self._commit = client.register_script(scripts.COMMIT.source)
        self._lease = client.register_script(scripts.LEASE.source)
        self._slots = bucket_slots(settings)

    async def commit_evaluation(self, model: str, expected_closed: str, closed: str, start_ms: int,
                                summary: bytes, state: bytes, alerts: Sequence[tuple[str, bytes]],
                                keep_from_ms: int) -> bool:
        """Advance the model's cursor (stream.windows.format_cursor) from `expected_closed` to `closed`; False when
        another evaluator got there first."""
        args: list[Any] = [expected_closed, closed, str(start_ms), summary, state, str(keep_from_ms),
                           str(keys.MODEL_TTL)]
        for alert_id, body in alerts:
            args += [alert_id, body]
        ok = await self._commit(keys=[keys.model_state(model), keys.model_history(model), keys.model_outbox(model)],
                                args=args)
        return bool(ok)

    async def lease(self, model: str, owner: str, ttl_ms: int = keys.LEASE_MS) -> bool:
        """Take or renew the model's evaluation lease; False while another live worker holds it."""
        return bool(await self._lease(keys=[keys.model_lease(model)], args=[owner, str(ttl_ms)]))

    async def ack_alerts(self, model: str, alert_ids: Sequence[str]) -> None:
        """Forget outbox entries the broker acknowledged (one HDEL for a whole burst)."""
        if alert_ids:
            await self.redis.hdel(keys.model_outbox(model), *alert_ids)

    async def tick(self, models: Sequence[str], owner: str, sweep_now_ms: int | None,
                   partitions: Sequence[Partition] | None = None) -> Tick:
        """Everything an evaluator tick needs to know, in one round trip: the model set, and for each of `models`
        its lease (taken or renewed for `owner`), unpublished alerts, closed mark and first window; with
        `sweep_now_ms`, the expired pending actions/outcomes are swept in the same trip; with `partitions` (every
        partition of the event topics), the event time over them (`Tick.event_time`).

        `models` is what the caller knew from its last tick (the keys to read must be named before the reply
        says which models exist); models new to it are in `Tick.models` but not in `Tick.seen`."""
        n = self.settings.state_buckets
        fields = [f"first:{m}" for m in models]
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.smembers(keys.MODELS)
            for m in models:
                # EVAL, not EVALSHA: a script object in a pipeline makes redis-py send SCRIPT EXISTS first
                pipe.eval(scripts.LEASE.source, 1, keys.model_lease(m), owner, str(keys.LEASE_MS))
                pipe.hgetall(keys.model_outbox(m))
                pipe.hget(keys.model_state(m), "closed")
            if fields:
                for b in range(n):
                    pipe.hmget(keys.bucket_meta(b), *fields)
            if sweep_now_ms is not None:
                for b in range(n):
                    pipe.eval(scripts.SWEEP.source, 1, keys.bucket_pending(b), str(sweep_now_ms),
                              keys.parked_prefix(b), self._slots[b])
            buckets = n if self.settings.redis_cluster else 0
            if partitions is not None:
                progress.queue_read(pipe, partitions, buckets)
            replies = await pipe.execute()
        it = iter(replies)
        tick = Tick(sorted(as_text(m) for m in next(it)))
        for m in models:
            leased, outbox, closed = next(it), next(it), next(it)
            tick.seen[m] = ModelTick(bool(leased), {as_text(k): as_bytes(v) for k, v in outbox.items()},
                                     as_text(closed) if closed else "")
        if fields:
            for _ in range(n):
                _merge_first(tick, models, next(it))
        if sweep_now_ms is not None:
            swept = [next(it) for _ in range(n)]
            tick.orphans = (sum(int(r[0]) for r in swept), sum(int(r[1]) for r in swept))
        if partitions is not None:
            read = progress.parse_read(partitions, list(it), buckets)
            tick.partition_time, tick.offsets, tick.idle = read.event_time, read.offsets, read.idle
            tick.event_time = partition_watermark(partitions, tick.partition_time, tick.idle)
        return tick

    async def close_and_read(self, model: str, start_ms: int, end_ms: int, stage: str, with_state: bool
                             ) -> ClosedWindow:
        """Close one stage ('n', 'a0', ...) of a window and read what judging it needs, in one round trip: its
        counts, at stage 'n' its feature statistics per bucket, and with `with_state` the model's detector state,
        history and annotations."""
        n = self.settings.state_buckets
        out = ClosedWindow()
        field = keys.closed_field(model, stage)
        async with self.redis.pipeline(transaction=False) as pipe:
            if with_state:
                pipe.hmget(keys.model_state(model), "closed", "state")
                pipe.hgetall(keys.model_history(model))
                pipe.hgetall(keys.model_annotations(model))
            for b in range(n):
                pipe.eval(scripts.CLOSE.source, 2, keys.bucket_meta(b), keys.window_counts(b, model, start_ms),
                          field, str(end_ms))  # EVAL: see tick
            if stage == "n":
                for b in range(n):  # read after the close: no feature statistic lands in a closed window
                    pipe.hgetall(keys.feature_stats(b, model, start_ms))
            replies = await pipe.execute()
        if with_state:
            (closed, state), hist, ann = replies[:3]
            out.state = ModelState((closed or b"").decode(), state, {int(k): v for k, v in hist.items()},
                                   [Annotation.model_validate_json(v) for v in ann.values()])
            replies = replies[3:]
        for reply in replies[:n]:
            out.counts.merge(reply)
        out.feature_stats = list(replies[n:])
        return out


def _merge_first(tick: Tick, models: Sequence[str], values: Sequence[bytes | None]) -> None:
    """Fold one bucket's `first:` fields into the tick: the first window is a min over buckets."""
    for m, first in zip(models, values, strict=True):
        t = tick.seen[m]
        if first is not None:
            t.first = min(int(first), t.first if t.first is not None else int(first))
