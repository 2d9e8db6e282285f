"""`create_app(settings)`: the Faust app with thin agents, the window evaluator timer and the HTTP endpoints.

Agents parse at the edge (events.parse), hand valid events to the store in one batch and rejects to the
dead-letter topic; the evaluator reads what the store closed, asks detect.evaluate, and publishes through an
outbox so that an alert decided is published at least once and decided only once.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from itertools import islice
from pathlib import Path
from typing import Any

import faust
import orjson
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from redis.exceptions import RedisError

from . import detect, features
from .errors import RedisRestarted
from .events import AlignmentAlert, Annotation, EventKind, Limits, Reject, epoch_ms, parse
from .metrics import Metrics
from .settings import Settings
from .recovery import ReadOffsets, plan_seeks
from .state import ModelTick, Prepared, Store, keys
from .windows import Window, closable, watermark

log = logging.getLogger("trustgap")

DLQ_RAW_MAX = 4096          # bytes of the offending payload kept in a dead letter
HANDOVER_S = 0.05            # longest Faust's take waits to hand messages over (chunks wait take_within)
SEND_TURNS = 3               # event-loop turns an agent yields after starting an apply (see Runtime.submit)
MAX_WINDOWS_PER_TICK = 200  # bounds one evaluator tick after a long outage; the next tick goes on


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


@dataclass
class Chunk:
    """Valid events collected for one Redis call, and the (partition, offset) of every message they came from: a
    chunk claims only its own messages, so a retry after a Redis rollback cannot claim an earlier chunk's messages,
    whose effects may be gone."""

    since: float  # monotonic time its first message was parsed
    events: list[Any] = field(default_factory=list)
    seen: list[tuple[tuple[str, int], int]] = field(default_factory=list)


@dataclass
class Runtime:
    """What the agents and the timer share in one worker process."""

    settings: Settings
    store: Store
    metrics: Metrics
    topics: dict[str, Any] = field(default_factory=dict)
    degraded: str | None = None  # why the worker is not healthy, for /health
    worker_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    app: Any = None
    broker_down: str | None = None  # set by watch_broker while the admin client cannot reach the broker
    read_offsets: ReadOffsets = field(default_factory=ReadOffsets)
    # (topic, partition) -> offset it was sought back to; its Redis offset waits until that message is re-read
    rewinding: dict[tuple[str, int], int] = field(default_factory=dict)
    # per event kind: the chunk being collected, the one being applied to Redis meanwhile, and the lock that keeps
    # the agent and the flush timer from submitting at once (see submit)
    chunks: dict[EventKind, Chunk] = field(default_factory=dict)
    inflight: dict[EventKind, asyncio.Task[None]] = field(default_factory=dict)
    submitting: dict[EventKind, asyncio.Lock] = field(default_factory=dict)
    _models: list[str] = field(default_factory=list)  # the models the evaluator's last tick found
    limits: Limits = field(init=False)  # the parse limits, built once rather than per batch

    def __post_init__(self) -> None:
        self.limits = self.settings.limits

    def event_topics(self) -> set[str]:
        t = self.settings.topics
        return {t.predictions, t.actions, t.outcomes, t.annotations}

    async def on_assigned(self, committed: Mapping[Any, int]) -> dict[Any, int]:
        """After Faust sought to the committed offsets: seek back where Redis holds less (see stream.recovery)."""
        out = dict(committed)
        mine = [tp for tp in committed if tp.topic in self.event_topics()]
        for tp in mine:
            self.rewinding.pop((tp.topic, tp.partition), None)
        try:
            run_id = await asyncio.wait_for(self.store.server_run_id(), 5)
            held = await asyncio.wait_for(self.store.offsets(), 5)
        except (RedisError, OSError, asyncio.TimeoutError) as err:
            # Unknown run_id: the first batch is refused by the guard and reconciles once Redis answers.
            log.warning("redis unreachable at assignment (%s); reconciling offsets on the first batch", err)
            self.store.run_id = "unknown"
            return out
        earliest = await self.app.consumer.earliest_offsets(*mine) if mine else {}
        seeks = plan_seeks(mine, {tp: committed.get(tp) for tp in mine},
                           {tp: held[(tp.topic, tp.partition)] for tp in mine if (tp.topic, tp.partition) in held},
                           earliest)
        for tp, target in seeks.items():
            log.warning("assignment: %s:%d committed %s but redis holds %d; seeking back", tp.topic, tp.partition,
                        committed.get(tp), target)
            await self.app.consumer.seek(tp, target)
            self.rewinding[(tp.topic, tp.partition)] = target
            out[tp] = target
        self.store.run_id = run_id  # adopted only once the seeks are in place (see reconcile)
        self.metrics.offset_seeks.labels("assignment").inc(len(seeks))
        return out

    async def reconcile(self) -> None:
        """Redis restarted: seek every assigned partition back to the offset it still holds, then adopt its run_id.

        The run_id is adopted last: until then every other agent's write is refused by the guard, so none can
        claim offsets across the hole between what Redis kept and what the consumer had read. It is read first,
        so that a second restart during the reconcile leaves a stale run_id and trips the guard again."""
        run_id = await self.with_redis("run_id", self.store.server_run_id)
        held = await self.with_redis("offsets", self.store.offsets)
        consumer = self.app.consumer
        mine = [tp for tp in consumer.assignment() if tp.topic in self.event_topics()]
        positions = {tp: await consumer.position(tp) for tp in mine}
        earliest = await consumer.earliest_offsets(*mine) if mine else {}
        seeks = plan_seeks(mine, positions,
                           {tp: held[(tp.topic, tp.partition)] for tp in mine if (tp.topic, tp.partition) in held},
                           earliest)
        for tp, target in seeks.items():
            await consumer.seek(tp, target)
            self.rewinding[(tp.topic, tp.partition)] = target
        self.store.run_id = run_id
        self.metrics.offset_seeks.labels("redis_restart").inc(len(seeks))
        log.warning("redis restarted (run_id %s): sought %d partitions back to the offsets it holds: %s",
                    self.store.run_id, len(seeks), {f"{tp.topic}:{tp.partition}": o for tp, o in seeks.items()})

    async def watch_broker(self) -> None:
        """Re-create missing topics: a broker restarted on empty storage comes back without them.

        The consumer's positions then point past the new, empty partitions; aiokafka resets them to the earliest
        offset on OFFSET_OUT_OF_RANGE, and Faust's local commit marks are dropped so the new offsets get committed.
        Redis's offsets stay ahead of the new partitions and are never sought to (only seeks back happen)."""
        from .admin import BrokerUnreachable, ensure_topics

        loop = asyncio.get_running_loop()
        try:
            created = await loop.run_in_executor(None, ensure_topics, self.settings, 5.0)
        except (BrokerUnreachable, Exception) as err:  # noqa: BLE001 - any admin failure means "not reachable"
            if not self.broker_down:
                log.warning("broker unreachable (%s); the consumer keeps retrying", str(err).splitlines()[0][:200])
            self.broker_down = "broker unreachable"
            return
        self.broker_down = None
        if created:
            log.warning("topics %s were missing (a broker restarted empty?); re-created them", created)
            consumer = self.app.consumer
            for tp in list(consumer._committed_offset):
                if tp.topic in self.event_topics():
                    consumer._committed_offset[tp] = None
            self.metrics.topics_recreated.inc(len(created))

    def _progress(self, seen: Sequence[tuple[tuple[str, int], int]]) -> dict[tuple[str, int], int]:
        """Next offset per partition covered by a batch, leaving out a rewinding partition until its target.

        Evaluated on every attempt, because a Redis restart found while applying the batch may have just sought
        some of its partitions back: the batch is still applied, but must not claim the hole before it."""
        out: dict[tuple[str, int], int] = {}
        reached: set[tuple[str, int]] = set()
        for tp, offset in seen:
            target = self.rewinding.get(tp)
            if target is not None and tp not in reached:
                if offset != target:
                    continue
                reached.add(tp)
            out[tp] = max(out.get(tp, 0), offset + 1)
        for tp in reached:  # cleared now, applied below; a crash before that leaves Redis's offset where it was
            self.rewinding.pop(tp, None)
        return out

    async def apply_guarded(self, what: str, call: Any) -> Any:
        """Run a guarded store call; on a Redis restart, reconcile the offsets and run it again."""
        while True:
            try:
                return await self.with_redis(what, call)
            except RedisRestarted:
                try:
                    await self.reconcile()
                except Exception as err:  # the consumer may be mid-rebalance; the guard will trip again
                    log.warning("reconcile after a redis restart failed (%s); retrying", err)
                    self.store.run_id = "unknown"
                    await asyncio.sleep(1)

    async def with_redis(self, what: str, call: Any) -> Any:
        """Retry a Redis call with capped back-off; meanwhile the agent waits, and Redis's offsets decide where a
        worker resumes whatever Kafka committed (see `submit`)."""
        delay = 0.1
        while True:
            try:
                result = await call()
                if self.degraded:
                    log.warning("redis reachable again after %s failures", what)
                    self.degraded = None
                    self.metrics.healthy.set(1)
                return result
            except (RedisError, OSError) as err:
                self.metrics.redis_errors.inc()
                self.metrics.healthy.set(0)
                self.degraded = f"redis: {type(err).__name__}"
                log.warning("redis %s failed (%s); retrying in %.1fs", what, err, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def dead_letter(self, topic: str, partition: int, offset: int, reject: Reject) -> None:
        record = {"reason": reject.describe(), "source_topic": topic, "partition": partition, "offset": offset,
                  "raw": reject.raw[:DLQ_RAW_MAX].decode("utf-8", "replace")}
        await self.topics["dlq"].send(key=str(offset).encode(), value=orjson.dumps(record))
        self.metrics.invalid.labels(topic, reject.reason).inc()
        self.metrics.events.labels(topic, "invalid").inc()

    async def handle(self, kind: EventKind, batch: Sequence[Any]) -> None:
        """Parse a batch of Faust events, dead-letter the bad ones, and collect the good ones into chunks.

        A chunk goes to Redis once it holds `take_max` events or its oldest event waited `take_within` (here or in
        the `flush_chunks` timer), so Redis round trips follow events, not Faust's takes (which hold at most
        `take_max_messages` messages, bounding the memory big batch messages take)."""
        limits = self.limits
        # compared as datetimes: converting every event's timestamp to epoch ms cost more than the comparison
        horizon = utcnow() + timedelta(seconds=self.settings.max_future_seconds)
        for ev in batch:
            msg = ev.message
            events, rejects = parse(kind, msg.value, limits)
            for r in rejects:
                await self.dead_letter(msg.topic, msg.partition, msg.offset, r)
            chunk = self.chunks.get(kind)
            if chunk is None:
                chunk = self.chunks[kind] = Chunk(time.monotonic())
            # the chunk claims this message's offset even when none of its events is valid (see _progress)
            chunk.seen.append(((msg.topic, msg.partition), msg.offset))
            for e in events:
                if (e.start if isinstance(e, Annotation) else e.ts) > horizon:
                    await self.dead_letter(msg.topic, msg.partition, msg.offset, Reject(
                        "future", f"timestamp more than {self.settings.max_future_seconds}s ahead of the clock",
                        e.model_dump_json().encode()))
                    continue
                chunk.events.append(e)
            # whole messages only: a chunk's offsets must cover exactly the events it applies
            if len(chunk.events) >= self.settings.take_max:
                await self.submit(kind)
        await self.flush(kind)

    def topic_of(self, kind: EventKind) -> str:
        return str(getattr(self.settings.topics, _TOPIC_FIELD[kind]))

    async def flush(self, kind: EventKind | None = None) -> None:
        """Submit the chunks (of `kind`, or of every kind) whose oldest event waited `take_within` or more."""
        for k in [kind] if kind else list(self.chunks):
            chunk = self.chunks.get(k)
            if chunk is not None and time.monotonic() - chunk.since >= self.settings.take_within:
                await self.submit(k)

    async def submit(self, kind: EventKind) -> None:
        """Start applying the kind's chunk once its previous chunk is applied: one in flight per kind, in order.

        Faust commits a batch's offsets to Kafka once `handle` returns, possibly before its events are applied;
        that is safe because Redis's own offsets, written in the same pipeline as the effects, are the ones that
        count: on assignment the consumer seeks back to them (stream.recovery), so a crash meanwhile re-reads and
        deduplicates."""
        async with self.submitting.setdefault(kind, asyncio.Lock()):  # the agent and the timer take turns
            chunk = self.chunks.pop(kind, None)
            if chunk is None or not chunk.seen:
                return
            prepared = None if kind == "annotation" else await self.with_redis(
                "prepare", lambda: self.store.prepare(chunk.events))  # while the previous chunk runs in Redis
            await self.drain(kind)
            self.inflight[kind] = asyncio.create_task(self._apply(kind, chunk, prepared))
            # Let it run until its pipeline is written, so Redis runs it while this agent parses the next chunk:
            # redis-py suspends once checking the pooled connection before it writes (a scheduling hint).
            for _ in range(SEND_TURNS):
                await asyncio.sleep(0)

    async def drain(self, kind: EventKind) -> None:
        """Wait until the in-flight chunk of `kind` is applied."""
        task = self.inflight.pop(kind, None)
        if task is not None:
            await task

    async def _apply(self, kind: EventKind, chunk: Chunk, prepared: Prepared | None) -> None:
        topic, valid, seen, now = self.topic_of(kind), chunk.events, chunk.seen, utcnow()
        if kind == "annotation":
            new = await self.apply_guarded("annotations",
                                           lambda: self.store.add_annotations(valid, self._progress(seen)))
            self.metrics.events.labels(topic, "applied").inc(new)
            self.metrics.events.labels(topic, "duplicate").inc(len(valid) - new)
        else:
            assert prepared is not None
            res = await self.apply_guarded("apply", lambda: self.store.send(prepared, self._progress(seen),
                                                                            epoch_ms(now)))
            for model, n in res.untracked_features.items():
                self.metrics.features_untracked.labels(model).inc(n)
            for dimension, n in res.overflow.items():
                if n:
                    self.metrics.label_overflow.labels(dimension).inc(n)
            for result, n in (("applied", res.applied + res.drained), ("duplicate", res.duplicates),
                              ("pending", res.pending), ("late", res.late)):
                if n:
                    self.metrics.events.labels(topic, result).inc(n)
        self.metrics.batch_seconds.labels(topic).observe(time.monotonic() - chunk.since)

    async def evaluate(self) -> int:
        """Close and evaluate every window the watermark has passed, for every model; returns windows closed.

        At steady state a tick is one Redis round trip (Store.tick); a window that closes costs one more to close
        it and read what judging it needs, one to commit, and one to forget its acknowledged alerts."""
        started = time.monotonic()
        tick = await self.with_redis("tick", lambda: self.store.tick(self._models, self.worker_id,
                                                                     epoch_ms(utcnow())))
        new = [m for m in tick.models if m not in tick.seen]
        if new:  # models this worker has not seen yet: read them now rather than a tick later
            more = await self.with_redis("tick", lambda: self.store.tick(new, self.worker_id, None))
            tick.seen.update(more.seen)
        self._models = tick.models
        for kind, n in zip(("action", "outcome"), tick.orphans):
            if n:
                self.metrics.orphans.labels(kind).inc(n)
        closed = 0
        for model in tick.models:
            closed += await self._evaluate_model(model, tick.seen[model], started)
        return closed

    async def _evaluate_model(self, model: str, seen: ModelTick, tick_started: float) -> int:
        ms = self.settings.for_model(model)
        size = ms.window_seconds * 1000
        # One worker at a time evaluates and publishes a model: the compare-and-set commit already makes each
        # evaluation happen once, the lease also keeps two workers from publishing the same outbox entry.
        if not seen.leased:
            return 0
        if time.monotonic() - tick_started > keys.LEASE_MS / 3000:  # a long tick: the lease taken may run out
            if not await self.with_redis("lease", lambda: self.store.lease(model, self.worker_id)):
                return 0
        # Left over from a crash between decision and publication, or from a failed send: published before any
        # newer window is judged, so that a fingerprint's resolution never reaches the topic before its firing.
        if seen.outbox and not await self.publish(model, seen.outbox):
            return 0
        if seen.newest is None or seen.first is None:
            return 0
        wm = watermark(seen.newest, ms.allowed_lateness_seconds * 1000)
        self.metrics.watermark.labels(model).set(wm / 1000)
        self.metrics.watermark_lag.labels(model).set(time.time() - wm / 1000)
        closed_mark = seen.closed
        windows = list(islice(closable(seen.first, int(closed_mark) if closed_mark else None, wm, size),
                              MAX_WINDOWS_PER_TICK))
        if not windows:  # the common tick: the state, history and annotations are not even read
            return 0
        done = 0
        for window in windows:
            read = await self.with_redis("close", lambda: self.store.close_and_read(
                model, window.start, window.end, with_state=not done))
            if read.state is not None:  # the first window of the tick: the state comes with it
                if read.state.closed != closed_mark:  # another evaluator moved on since the tick; next tick
                    return 0
                state_raw, hist_raw, fstate, fhist = _take_features(read.state.state, read.state.history)
                annotations = read.state.annotations
                state = detect.State.from_json(orjson.loads(state_raw) if state_raw else None)
                history = {start: detect.Summary.from_json(orjson.loads(v)) for start, v in hist_raw.items()}
            counts = read.counts
            fres = await self._evaluate_features(model, window, counts.counts, fhist, fstate, annotations,
                                                 read.feature_stats)
            result = detect.evaluate(model, window, counts.counts, list(history.values()), state, annotations, ms,
                                     utcnow(), feature_alerts=fres.state.active())
            keep_from = window.end - ms.baseline_windows * size
            alerts = {a.alert_id: a.model_dump_json().encode() for a in [*result.alerts, *fres.alerts]}
            ok = await self.with_redis("commit", lambda: self.store.commit_evaluation(
                model, closed_mark, window.end, window.start,
                orjson.dumps({**result.summary.to_json(), features.STATE_KEY: fres.summary.to_json()}),
                orjson.dumps({**result.state.to_json(), features.STATE_KEY: fres.state.to_json()}),
                list(alerts.items()), keep_from))
            if not ok:  # another worker evaluated it; pick up from its state next tick
                break
            done += 1
            closed_mark, state = str(window.end), result.state
            history = {k: v for k, v in history.items() if k >= keep_from}
            history[window.start] = result.summary
            self._export_features(model, fres, fstate)
            fstate, fhist = fres.state, {**{k: v for k, v in fhist.items() if k >= keep_from},
                                         window.start: fres.summary}
            self._export(model, result)
            if alerts and not await self.publish(model, alerts):
                break  # what failed stays in the outbox and goes first next tick; newer windows wait for it
        return done

    async def _evaluate_features(self, model: str, window: Window, counts: Mapping[tuple[str, str, str], int],
                                 history: Mapping[int, features.WindowFeatures], state: features.State,
                                 annotations: Sequence[Annotation], read: Sequence[Mapping[bytes, bytes]] | None = None
                                 ) -> features.Evaluation:
        """Judge the closed window's feature statistics against the features' own baseline windows."""
        n, stats = await self.with_redis("features", lambda: self.store.features.read(model, window.start, read))
        per_version: dict[str, int] = {}
        for (version, scope, counter), k in counts.items():
            if scope == "" and counter == "n":
                per_version[version] = per_version.get(version, 0) + k
        version = max(per_version, key=lambda v: (per_version[v], v)) if per_version else ""
        return features.evaluate(model, version, window, n, stats, history.values(), state, annotations,
                                 self.settings.for_model(model), utcnow())

    def _export_features(self, model: str, result: features.Evaluation, before: features.State) -> None:
        m = self.metrics
        for name in result.summary.stats:
            stats = result.summary.get(name)
            m.feature_null_rate.labels(model, name).set(stats.null_rate)
            m.feature_distinct.labels(model, name).set(stats.distinct)
        active = set(result.state.active())
        for item in set(before.active()) | active:
            signal, _, name = item.partition(":")
            m.feature_alert_active.labels(model, signal, name).set(1 if item in active else 0)

    def _export(self, model: str, result: detect.Evaluation) -> None:
        m = self.metrics
        m.windows.labels(model).inc()
        m.closed.labels(model).set(result.summary.end / 1000)
        for scope, counts in result.summary.scopes.items():
            for signal in detect.EXPORTED_RATES:
                k, n = detect.rate(counts, signal)
                if n:
                    m.rate.labels(model, signal, scope or "all").set(k / n)
                    m.samples.labels(model, signal, scope or "all").set(n)
        for alert in result.alerts:
            scope = ",".join(f"{k}={v}" for k, v in alert.scope.items()) or "all"
            m.baseline.labels(model, alert.signal, scope).set(alert.baseline)
            labels = (model, alert.signal, scope, alert.classification, alert.severity, alert.recommendation)
            # Only sustained alerts have a lifetime (firing .. resolved); transient and expected are one-off news.
            if alert.classification == "sustained":
                m.alert_active.labels(*labels).set(1 if alert.status == "firing" else 0)

    async def publish(self, model: str, entries: Mapping[str, bytes]) -> bool:
        """Publish outbox entries (alert_id -> JSON) as one burst: send them all, await the broker's acks
        together, then forget the acknowledged ones with one call. An entry leaves the outbox only after its
        ack; one whose send failed stays for the next tick. True when every entry was acknowledged."""
        alerts = sorted(((alert_id, AlignmentAlert.model_validate_json(body), body)
                         for alert_id, body in entries.items()), key=lambda x: (x[1].window.end, x[0]))
        sent: list[tuple[str, AlignmentAlert, Any]] = []
        for alert_id, alert, body in alerts:
            try:
                sent.append((alert_id, alert, await self.topics["alerts"].send(key=alert.fingerprint.encode(),
                                                                              value=body)))
            except Exception as err:  # noqa: BLE001 - the broker's failure must not stop the timer
                log.warning("alert %s not sent (%s); it stays in the outbox", alert_id, err)
                break  # in order: a later entry must not overtake this one
        acks = await asyncio.gather(*(fut for _, _, fut in sent), return_exceptions=True)
        acked = []
        for (alert_id, alert, _), ack in zip(sent, acks):
            if isinstance(ack, BaseException):
                log.warning("alert %s not acknowledged (%s); it stays in the outbox", alert_id, ack)
                continue
            acked.append(alert_id)
            self.metrics.alerts.labels(model, alert.signal, alert.classification, alert.severity,
                                       alert.status).inc()
            log.info("alert %s %s %s %s scope=%s observed=%.3f baseline=%.3f -> %s", alert.status,
                     alert.classification, alert.signal, model, alert.scope, alert.observed, alert.baseline,
                     alert.recommendation)
        if acked:
            await self.with_redis("ack", lambda: self.store.ack_alerts(model, acked))
        return len(acked) == len(alerts)


def _take_features(state_raw: bytes | None, hist_raw: dict[int, bytes]
                   ) -> tuple[bytes | None, dict[int, bytes], features.State, dict[int, features.WindowFeatures]]:
    """Split the feature detector's part (under features.STATE_KEY) off the model's state and history JSON."""
    fstate = features.State()
    if state_raw:
        doc = orjson.loads(state_raw)
        fstate = features.State.from_json(doc.pop(features.STATE_KEY, None))
        state_raw = orjson.dumps(doc)
    fhist: dict[int, features.WindowFeatures] = {}
    rest: dict[int, bytes] = {}
    for start, raw in hist_raw.items():
        doc = orjson.loads(raw)
        if features.STATE_KEY in doc:
            fhist[start] = features.WindowFeatures.from_json(doc.pop(features.STATE_KEY))
        rest[start] = orjson.dumps(doc)
    return state_raw, rest, fstate, fhist


_TOPIC_FIELD: dict[EventKind, str] = {"prediction": "predictions", "action": "actions", "outcome": "outcomes",
                                      "annotation": "annotations"}


def faust_broker_options(settings: Settings) -> dict[str, Any]:
    """Broker credentials for Faust/aiokafka from the settings (secrets stay SecretStr until here)."""
    opts: dict[str, Any] = {}
    if settings.broker_security_protocol != "PLAINTEXT":
        import ssl

        from faust.auth import SASLCredentials, SSLCredentials

        context = None
        if "SSL" in settings.broker_security_protocol:
            context = ssl.create_default_context(cafile=str(settings.broker_ssl_cafile)
                                                 if settings.broker_ssl_cafile else None)
        if settings.broker_security_protocol.startswith("SASL"):
            opts["broker_credentials"] = SASLCredentials(
                username=settings.broker_sasl_username or "",
                password=settings.broker_sasl_password.get_secret_value() if settings.broker_sasl_password else "",
                mechanism=settings.broker_sasl_mechanism, ssl_context=context)
        else:
            opts["broker_credentials"] = SSLCredentials(context)
    return opts


class _App(faust.App):
    """Faust's App with its consumer wired to trustgap's offset reconciliation (stream.recovery)."""

    trustgap: Runtime

    def _new_consumer(self) -> Any:
        consumer: Any = super()._new_consumer()
        runtime = self.trustgap
        consumer._read_offset = runtime.read_offsets  # before the fetcher binds its methods
        # Faust hard-codes aiokafka's fetch_max_wait_ms=1500; a broker that answers a waiting fetch only when the
        # wait ends (Tansu) then delays every event by up to that much, and alerts with them (issue 7).
        create = consumer._thread._create_worker_consumer

        def create_with_wait(transport: Any) -> Any:
            client = create(transport)
            client._fetch_max_wait_ms = int(runtime.settings.broker_fetch_max_wait * 1000)
            return client

        consumer._thread._create_worker_consumer = create_with_wait
        seek_to_committed = consumer.seek_to_committed

        async def seek_then_reconcile() -> Mapping[Any, int]:
            return await runtime.on_assigned(await seek_to_committed())

        consumer.seek_to_committed = seek_then_reconcile
        return consumer


def create_app(settings: Settings, registry: CollectorRegistry | None = None) -> faust.App:
    """Build the Faust app; importing this module connects to nothing."""
    if settings.event_loop == "uvloop":
        import uvloop

        # Before faust.App and faust.Worker ask asyncio for their loop, so both get a uvloop one.
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    metrics = Metrics(registry)
    app = _App(
        settings.app_id,
        broker=settings.broker_url,
        value_serializer="raw",
        key_serializer="raw",
        store="memory://",
        # Faust creates its data directory on start; with the memory store nothing is written there, so keep it
        # out of the working directory (it used to leave an `<app_id>-data` folder wherever a worker ran).
        datadir=str(Path(tempfile.gettempdir()) / f"trustgap-{settings.app_id}-data"),
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=settings.topic_replication,
        broker_session_timeout=settings.broker_session_timeout,
        broker_heartbeat_interval=settings.broker_heartbeat_interval,
        web_bind=settings.web_host,
        web_host=settings.web_host,
        web_port=settings.web_port,
        web_enabled=True,
        producer_acks=-1,
        # messages Faust buffers per stream before it pauses fetching: batch messages can be ~200 kB each
        stream_buffer_maxsize=2 * settings.take_max_messages,
        **faust_broker_options(settings),
    )
    runtime = Runtime(settings, Store.from_settings(settings), metrics, app=app)
    app.trustgap = runtime
    t = settings.topics
    for name in ("predictions", "actions", "outcomes", "annotations", "alerts", "dlq"):
        runtime.topics[name] = app.topic(getattr(t, name), partitions=settings.topic_partitions,
                                         key_type=bytes, value_type=bytes)

    for kind, name in _TOPIC_FIELD.items():
        _register_agent(app, runtime, kind, runtime.topics[name])

    @app.timer(settings.evaluate_interval)  # type: ignore[untyped-decorator]  # faust ships no types here
    async def evaluate_windows() -> None:
        await runtime.evaluate()

    @app.timer(settings.take_within / 4)  # type: ignore[untyped-decorator]  # a chunk waits <= 1.25 take_within
    async def flush_chunks() -> None:
        await runtime.flush()  # a chunk's tail when no more messages come

    @app.timer(settings.topic_check_interval)  # type: ignore[untyped-decorator]
    async def watch_broker() -> None:
        await runtime.watch_broker()

    @app.page("/metrics")
    async def metrics_page(web: Any, request: Any) -> Any:
        return web.bytes(generate_latest(metrics.registry), content_type=CONTENT_TYPE_LATEST.split(";")[0])

    @app.page("/health")
    async def health_page(web: Any, request: Any) -> Any:
        reason = runtime.degraded or runtime.broker_down
        body = {"status": "degraded" if reason else "ok", "reason": reason}
        return web.json(body, status=503 if reason else 200)

    metrics.healthy.set(1)
    return app


def _register_agent(app: faust.App, runtime: Runtime, kind: EventKind, topic: Any) -> None:
    settings = runtime.settings

    async def consume(stream: Any) -> None:
        # Faust's take only hands messages over (promptly); the chunks they go into wait up to take_within
        async for batch in stream.take_events(settings.take_max_messages, min(settings.take_within, HANDOVER_S)):
            await runtime.handle(kind, batch)

    app.agent(topic, name=f"trustgap.{kind}")(consume)
