"""`create_app(settings)`: the Faust app with thin agents, the window evaluator timer and the HTTP endpoints.

Agents parse at the edge (events.parse), hand valid events to the store in one batch and rejects to the
dead-letter topic; the evaluator reads what the store closed, asks detect.evaluate, and publishes through an
outbox so that an alert decided is published at least once and decided only once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from itertools import islice
from typing import Any

import faust
import orjson
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from redis.exceptions import RedisError

from . import detect
from .events import AlignmentAlert, Annotation, EventKind, Reject, epoch_ms, parse
from .metrics import Metrics
from .settings import Settings
from .store import Store
from .windows import closable, watermark

log = logging.getLogger("trustgap")

DLQ_RAW_MAX = 4096          # bytes of the offending payload kept in a dead letter
MAX_WINDOWS_PER_TICK = 200  # bounds one evaluator tick after a long outage; the next tick goes on


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


@dataclass
class Runtime:
    """What the agents and the timer share in one worker process."""

    settings: Settings
    store: Store
    metrics: Metrics
    topics: dict[str, Any] = field(default_factory=dict)
    degraded: str | None = None  # why the worker is not healthy, for /health

    async def with_redis(self, what: str, call: Any) -> Any:
        """Retry a Redis call with capped back-off: the batch is not acked, so Kafka never commits past it."""
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
        """Parse a batch of Faust events, dead-letter the bad ones, apply the good ones once."""
        started = time.perf_counter()
        topic = self.settings.topics.model_dump()[_TOPIC_FIELD[kind]]
        limits = self.settings.limits
        now = utcnow()
        horizon = epoch_ms(now) + self.settings.max_future_seconds * 1000
        valid: list[Any] = []
        offsets: dict[tuple[str, int], int] = {}
        dirty = False  # offsets (or events) not yet written to Redis
        for ev in batch:
            dirty = True
            msg = ev.message
            offsets[(msg.topic, msg.partition)] = max(offsets.get((msg.topic, msg.partition), 0), msg.offset + 1)
            events, rejects = parse(kind, msg.value, limits)
            for r in rejects:
                await self.dead_letter(msg.topic, msg.partition, msg.offset, r)
            for e in events:
                when = epoch_ms(e.start if isinstance(e, Annotation) else e.ts)  # type: ignore[union-attr]
                if when > horizon:
                    await self.dead_letter(msg.topic, msg.partition, msg.offset, Reject(
                        "future", f"timestamp more than {self.settings.max_future_seconds}s ahead of the clock",
                        e.model_dump_json().encode()))
                    continue
                valid.append(e)
            # take_max counts messages, and one message may hold max_batch_events events: apply every take_max
            # events so that one Lua call (which blocks Redis) and the parsed events held stay bounded. The
            # offsets passed cover only whole messages already parsed, so they still follow their effects.
            if len(valid) >= self.settings.take_max:
                await self._apply(kind, topic, valid, offsets, now)
                valid, dirty = [], False
        if dirty:
            await self._apply(kind, topic, valid, offsets, now)
        self.metrics.batch_seconds.labels(topic).observe(time.perf_counter() - started)

    async def _apply(self, kind: EventKind, topic: str, valid: list[Any], offsets: dict[tuple[str, int], int],
                     now: datetime) -> None:
        if kind == "annotation":
            new = await self.with_redis("annotations", lambda: self.store.add_annotations(valid))
            self.metrics.events.labels(topic, "applied").inc(new)
            self.metrics.events.labels(topic, "duplicate").inc(len(valid) - new)
        else:
            res = await self.with_redis("apply", lambda: self.store.apply(valid, dict(offsets), epoch_ms(now)))
            for result, n in (("applied", res.applied + res.drained), ("duplicate", res.duplicates),
                              ("pending", res.pending), ("late", res.late)):
                if n:
                    self.metrics.events.labels(topic, result).inc(n)

    async def evaluate(self) -> int:
        """Close and evaluate every window the watermark has passed, for every model; returns windows closed."""
        closed = 0
        for model in await self.with_redis("models", self.store.models):
            closed += await self._evaluate_model(model)
        orphans = await self.with_redis("sweep", lambda: self.store.sweep_pending(epoch_ms(utcnow())))
        for kind, n in zip(("action", "outcome"), orphans):
            if n:
                self.metrics.orphans.labels(kind).inc(n)
        return closed

    async def _evaluate_model(self, model: str) -> int:
        ms = self.settings.for_model(model)
        size = ms.window_seconds * 1000
        await self.publish_outbox(model)  # left over from a crash between decision and publication
        newest, first = await self.with_redis("event_time", lambda: self.store.event_time(model))
        if newest is None or first is None:
            return 0
        wm = watermark(newest, ms.allowed_lateness_seconds * 1000)
        self.metrics.watermark.labels(model).set(wm / 1000)
        self.metrics.watermark_lag.labels(model).set(time.time() - wm / 1000)
        closed_mark, state_raw, hist_raw = await self.with_redis("state", lambda: self.store.model_state(model))
        annotations = await self.with_redis("annotations", lambda: self.store.annotations(model))
        state = detect.State.from_json(orjson.loads(state_raw) if state_raw else None)
        history = {start: detect.Summary.from_json(orjson.loads(v)) for start, v in hist_raw.items()}
        done = 0
        closed_until = int(closed_mark) if closed_mark else None
        for window in islice(closable(first, closed_until, wm, size), MAX_WINDOWS_PER_TICK):
            counts = await self.with_redis("close", lambda: self.store.close_window(model, window.start, window.end))
            result = detect.evaluate(model, window, counts.counts, list(history.values()), state, annotations, ms,
                                     utcnow())
            keep_from = window.end - ms.baseline_windows * size
            ok = await self.with_redis("commit", lambda: self.store.commit_evaluation(
                model, closed_mark, window.end, window.start, orjson.dumps(result.summary.to_json()),
                orjson.dumps(result.state.to_json()),
                [(a.alert_id, a.model_dump_json().encode()) for a in result.alerts], keep_from))
            if not ok:  # another worker evaluated it; pick up from its state next tick
                break
            done += 1
            closed_mark, state = str(window.end), result.state
            history = {k: v for k, v in history.items() if k >= keep_from}
            history[window.start] = result.summary
            self._export(model, result)
            await self.publish_outbox(model)
        return done

    def _export(self, model: str, result: detect.Evaluation) -> None:
        m = self.metrics
        m.windows.labels(model).inc()
        m.closed.labels(model).set(result.summary.end / 1000)
        for scope, counts in result.summary.scopes.items():
            for signal in detect.RATE_SIGNALS:
                k, n = detect.rate(counts, signal)
                if n:
                    m.rate.labels(model, signal, scope or "all").set(k / n)
                    m.samples.labels(model, signal, scope or "all").set(n)
        for alert in result.alerts:
            scope = ",".join(f"{k}={v}" for k, v in alert.scope.items()) or "all"
            m.baseline.labels(model, alert.signal, scope).set(alert.baseline)
            labels = (model, alert.signal, scope, alert.classification, alert.severity, alert.recommendation)
            if alert.status == "firing":
                m.alert_active.labels(*labels).set(1)
            else:
                m.alert_active.labels(*labels).set(0)

    async def publish_outbox(self, model: str) -> None:
        for body in sorted(await self.with_redis("outbox", lambda: self.store.outbox(model))):
            alert = AlignmentAlert.model_validate_json(body)
            fut = await self.topics["alerts"].send(key=alert.fingerprint.encode(), value=body)
            await fut  # wait for the broker's ack before forgetting it
            await self.with_redis("ack", lambda: self.store.ack_alert(model, alert.alert_id))
            self.metrics.alerts.labels(model, alert.signal, alert.classification, alert.severity,
                                       alert.status).inc()
            log.info("alert %s %s %s %s scope=%s observed=%.3f baseline=%.3f -> %s", alert.status,
                     alert.classification, alert.signal, model, alert.scope, alert.observed, alert.baseline,
                     alert.recommendation)


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


def create_app(settings: Settings, registry: CollectorRegistry | None = None) -> faust.App:
    """Build the Faust app; importing this module connects to nothing."""
    if settings.event_loop == "uvloop":
        import uvloop

        # Before faust.App and faust.Worker ask asyncio for their loop, so both get a uvloop one.
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    metrics = Metrics(registry)
    app = faust.App(
        settings.app_id,
        broker=settings.broker_url,
        value_serializer="raw",
        key_serializer="raw",
        store="memory://",
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=settings.topic_replication,
        broker_session_timeout=settings.broker_session_timeout,
        broker_heartbeat_interval=settings.broker_heartbeat_interval,
        web_bind=settings.web_host,
        web_host=settings.web_host,
        web_port=settings.web_port,
        web_enabled=True,
        producer_acks=-1,
        **faust_broker_options(settings),
    )
    runtime = Runtime(settings, Store.from_settings(settings), metrics)
    app.trustgap = runtime  # type: ignore[attr-defined]
    t = settings.topics
    for name in ("predictions", "actions", "outcomes", "annotations", "alerts", "dlq"):
        runtime.topics[name] = app.topic(getattr(t, name), partitions=settings.topic_partitions,
                                         key_type=bytes, value_type=bytes)

    for kind, name in _TOPIC_FIELD.items():
        _register_agent(app, runtime, kind, runtime.topics[name])

    @app.timer(settings.evaluate_interval)
    async def evaluate_windows() -> None:
        await runtime.evaluate()

    @app.page("/metrics")
    async def metrics_page(web: Any, request: Any) -> Any:
        return web.bytes(generate_latest(metrics.registry), content_type=CONTENT_TYPE_LATEST.split(";")[0])

    @app.page("/health")
    async def health_page(web: Any, request: Any) -> Any:
        body = {"status": "degraded" if runtime.degraded else "ok", "reason": runtime.degraded}
        return web.json(body, status=503 if runtime.degraded else 200)

    metrics.healthy.set(1)
    return app


def _register_agent(app: faust.App, runtime: Runtime, kind: EventKind, topic: Any) -> None:
    settings = runtime.settings

    async def consume(stream: Any) -> None:
        async for batch in stream.take_events(settings.take_max, settings.take_within):
            await runtime.handle(kind, batch)

    app.agent(topic, name=f"trustgap.{kind}")(consume)
