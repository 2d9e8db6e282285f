"""`create_app(settings)`: the Faust app with thin agents, the timers and the HTTP endpoints.

Agents hand each batch to ingest (stream.ingest: parse at the edge, valid events to Redis in chunks, rejects to
the dead-letter topic); a timer runs the window evaluator (stream.evaluator: read, judge, commit, publish through
an outbox, so an alert decided is published at least once and decided only once); another re-creates missing
topics (stream.reconcile). What they share is a `Runtime` (stream.runtime); what reaches into Faust's internals
is in stream.faust_patches.
"""

from __future__ import annotations

import asyncio
import tempfile
from functools import partial
from pathlib import Path
from typing import Any

import faust
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from . import evaluator, ingest, partitions, reconcile
from .events import TOPIC_OF, EventKind
from .faust_patches import App, NoTables, Wiring
from .metrics import Metrics
from .runtime import Runtime
from .settings import Settings
from .state import Store

HANDOVER_S = 0.05  # longest Faust's take waits to hand messages over (chunks wait take_within)


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
    app = App(
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
        TableManager=NoTables,  # no table: no pause for one at start-up (stream.faust_patches)
        **faust_broker_options(settings),
    )
    runtime = Runtime(settings, Store.from_settings(settings), metrics, app=app)

    app.wiring = Wiring(runtime.read_offsets, int(settings.broker_fetch_max_wait * 1000),
                        partial(reconcile.on_assigned, runtime))
    _declare(app, runtime)
    metrics.healthy.set(1)
    return app


def _declare(app: faust.App, runtime: Runtime) -> None:
    """The topics, agents, timers and pages of a worker."""
    settings, metrics = runtime.settings, runtime.metrics
    t = settings.topics
    for name in ("predictions", "actions", "outcomes", "annotations", "alerts", "dlq"):
        runtime.topics[name] = app.topic(getattr(t, name), partitions=settings.topic_partitions,
                                         key_type=bytes, value_type=bytes)

    for kind, name in TOPIC_OF.items():
        _register_agent(app, runtime, kind, runtime.topics[name])

    @app.timer(settings.evaluate_interval)  # type: ignore[untyped-decorator]  # faust ships no types here
    async def evaluate_windows() -> None:
        await evaluator.evaluate(runtime)

    @app.timer(settings.evaluate_interval)  # type: ignore[untyped-decorator]
    async def watch_idle() -> None:
        await reconcile.vouch(runtime)  # first: the idleness below compares the ends with the buckets' records
        await partitions.watch_idle(runtime)  # re-asserted within an assertion's lifetime (keys.idle_ttl_ms)

    @app.on_partitions_revoked.connect
    async def forget_revoked(_app: Any, /, *revoked: Any, signal: Any, **kwargs: Any) -> None:
        for tps in revoked:  # Faust sends one set: the partitions taken from this worker
            partitions.forget(runtime, tps)  # at once, not at the next tick, which may wait on Redis

    @app.timer(settings.take_within / 4)  # type: ignore[untyped-decorator]  # a chunk waits <= 1.25 take_within
    async def flush_chunks() -> None:
        await ingest.flush(runtime)  # a chunk's tail when no more messages come

    @app.timer(settings.topic_check_interval)  # type: ignore[untyped-decorator]
    async def watch_broker() -> None:
        await reconcile.watch_broker(runtime)

    @app.page("/metrics")
    async def metrics_page(web: Any, request: Any) -> Any:
        return web.bytes(generate_latest(metrics.registry), content_type=CONTENT_TYPE_LATEST.split(";")[0])

    @app.page("/health")
    async def health_page(web: Any, request: Any) -> Any:
        reason = runtime.degraded or runtime.broker_down
        body = {"status": "degraded" if reason else "ok", "reason": reason}
        return web.json(body, status=503 if reason else 200)

    @app.page("/v1/models/{model}/retrain-gate")
    async def retrain_gate_page(web: Any, request: Any, model: str) -> Any:
        # reads the alerts topic and Redis with blocking clients, as `trustgap gate` does: off the event loop
        doc, status = await asyncio.to_thread(gate_answer, settings, model, request.query.get("since"))
        return web.json(doc, status=status)


def gate_answer(settings: Settings, model: str, since: str | None = None) -> tuple[dict[str, Any], int]:
    """The retrain gate's JSON and HTTP status: 200 with the verdict, 400 for a `since` that is not a time, 404
    for a model without data, 503 when the broker or Redis does not answer."""
    from . import gate, overview
    from .errors import TrustgapError
    from .times import epoch_ms, parse_ms, utcnow

    try:
        since_ms = parse_ms(since) if since else None
    except ValueError:
        return {"error": f"since={since!r} is not a time; use ISO 8601, e.g. 2026-11-20T00:00:00Z"}, 400
    try:
        alerts, annotations, last = overview.read_gate(settings, model)
    except TrustgapError as err:
        return {"error": str(err)}, 503
    if not alerts and last is None:
        return {"error": f"no data for model {model!r}: no closed window and no alert yet"}, 404
    return gate.decide(model, alerts, annotations, epoch_ms(utcnow()), last, since_ms).to_json(), 200


def _register_agent(app: faust.App, runtime: Runtime, kind: EventKind, topic: Any) -> None:
    settings = runtime.settings

    async def consume(stream: Any) -> None:
        # Faust's take only hands messages over (promptly); the chunks they go into wait up to take_within
        async for batch in stream.take_events(settings.take_max_messages, min(settings.take_within, HANDOVER_S)):
            await ingest.handle(runtime, kind, batch)

    app.agent(topic, name=f"trustgap.{kind}")(consume)
