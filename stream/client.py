"""The producer SDK for model services: one line per prediction, human action, outcome or annotation.

    from stream.client import Client
    with Client("broker:9092") as tg:
        tg.log_prediction("p-1", model="claims", model_version="v3", label="approve", score=0.91)

Every call validates its event against contract v1 (`stream.events`) before it is buffered and raises at the call
site when it is wrong; nothing is dropped silently. Events are batched per topic into the contract's JSON-array
messages (up to 1,000 events or 1 MiB, sent after a short linger), split by partition so that each message is keyed
by a `prediction_id` (annotations: by `model`) and lands where each of its events would land alone.

Imports the contract (pydantic, orjson) and confluent-kafka only: never faust, redis or aiokafka.

Exceptions (defined in `stream.errors`, under its root `TrustgapError`; importable from here):
    ClientError
    ├── InvalidEvent          the event breaks the contract (raised by log_*/annotate/send)
    │   └── NaiveTimestamp    a datetime without a timezone
    ├── BufferFull            the bounded buffer stayed full for `block_timeout` seconds
    ├── DeliveryError         the broker refused or lost messages (raised by flush/close)
    ├── BrokerUnreachable     `check()` got no answer from the broker
    └── ClientClosed          the client was used after close()
    SecurityMismatch          `check()`: the broker refused the credentials or the certificate, or speaks another
                              protocol than `security.protocol` (a ConfigError: the message names the key to fix)
"""

from __future__ import annotations

import asyncio
import numbers
import threading
import time
import uuid
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import orjson
from confluent_kafka import KafkaException, Producer

from .brokerprobe import LIBRDKAFKA, SETTINGS, Security, await_metadata
from .errors import (BrokerUnreachable, BufferFull, ClientClosed, ClientError, DeliveryError, InvalidEvent,
                     NaiveTimestamp, SecurityMismatch)
from .events import TOPIC_OF, Action, AnnotationKind, EventKind, Limits, OutcomeKind, Reject, validate
from .times import utcnow

if TYPE_CHECKING:
    from .settings import Settings

# The errors, the literals and TOPIC_OF are defined once elsewhere; re-exported because callers import them from here.
__all__ = ["Action", "AnnotationKind", "AsyncClient", "BatchProducer", "BrokerUnreachable", "BufferFull", "Client",
           "ClientClosed", "ClientError", "ClientStats", "DeliveryError", "DeliveryFailure", "InvalidEvent",
           "NaiveTimestamp", "OutcomeKind", "SecurityMismatch", "TOPIC_OF"]

DEFAULT_TOPICS = {"predictions": "trustgap.predictions", "actions": "trustgap.actions",
                  "outcomes": "trustgap.outcomes", "annotations": "trustgap.annotations"}


@dataclass(frozen=True, slots=True)
class DeliveryFailure:
    """What a delivery-error callback receives: the topic, how many events the lost message held, and why."""

    topic: str
    events: int
    error: str


@dataclass(slots=True)
class ClientStats:
    """Counters since the client started (events, not messages)."""

    accepted: int = 0      # validated and buffered
    delivered: int = 0     # acknowledged by the broker
    failed: int = 0        # refused or lost by the broker
    messages: int = 0      # Kafka messages produced


def _check_ts(name: str, value: datetime | str | None, default_now: bool) -> datetime | str | None:
    if value is None:
        return utcnow() if default_now else None
    if isinstance(value, datetime) and value.tzinfo is None:
        raise NaiveTimestamp(f"{name} is a naive datetime; pass an aware one, e.g. datetime.now(timezone.utc)")
    return value


def _number(value: Any) -> Any:
    # numpy and Decimal scores are common in model services; a bool or a string is a bug, left to the contract.
    if value is None or isinstance(value, (bool, float)) or not isinstance(value, (numbers.Real, Decimal)):
        return value
    return float(value)


def _crc_partition(key: bytes, partitions: int) -> int:
    # librdkafka's default ("consistent_random") partitioner is CRC-32 of the key: same partition, same math.
    return zlib.crc32(key) % partitions


class _Buffer:
    """One topic's events waiting to become a message: encoded events with their partition keys."""

    __slots__ = ("items", "nbytes", "since")

    def __init__(self) -> None:
        self.items: list[tuple[bytes, bytes]] = []
        self.nbytes = 2  # the array's brackets
        self.since = 0.0


class Client:
    """Synchronous producer: `log_*` validate and buffer (microseconds), a background thread sends on linger.

    `bootstrap_servers` is librdkafka's `host:port[,host:port]`; `conf` adds librdkafka settings (credentials,
    `message.timeout.ms`, ...). `Client.from_settings()` builds both from trustgap's settings (env TRUSTGAP_*).
    `on_delivery_error` is called from the client's thread with a `DeliveryFailure`; `stats.failed` counts them
    too, and `flush()` raises `DeliveryError` when messages failed and no callback was given.
    """

    def __init__(self, bootstrap_servers: str | None = None, *, conf: Mapping[str, Any] | None = None,
                 topics: Mapping[str, str] | None = None,
                 on_delivery_error: Callable[[DeliveryFailure], None] | None = None,
                 linger_ms: float = 50.0, max_batch_events: int = 1000, max_batch_bytes: int = 1024 * 1024,
                 max_event_bytes: int = 64 * 1024, max_queue_kbytes: int = 64 * 1024,
                 block_timeout: float = 30.0, validate_events: bool = True) -> None:
        full_conf: dict[str, Any] = {"linger.ms": 5, "compression.type": "none",
                                     "queue.buffering.max.kbytes": max_queue_kbytes, **(conf or {})}
        if bootstrap_servers is not None:
            full_conf["bootstrap.servers"] = bootstrap_servers
        if "bootstrap.servers" not in full_conf:
            raise ClientError("no broker given: pass bootstrap_servers='host:9092' or use Client.from_settings()")
        if not 0 < max_batch_events or max_batch_bytes < max_event_bytes + 2:
            raise ClientError("max_batch_events must be > 0 and max_batch_bytes must hold one max-size event")
        # the broker's refusals (a password, a certificate) are kept for check() to say what to fix; the callback
        # holds the deque, not the client: a client the producer referred back to would be freed only by the
        # cycle collector, and its closed producer would keep reconnecting to the broker until then
        errors: deque[Any] = deque(maxlen=32)
        self._errors = errors
        user_error_cb = full_conf.get("error_cb")

        def on_error(err: Any) -> None:
            errors.append(err)
            if user_error_cb is not None:
                user_error_cb(err)

        full_conf["error_cb"] = on_error
        self._servers = str(full_conf["bootstrap.servers"])
        self._security = Security(str(full_conf.get("security.protocol", "PLAINTEXT")).upper(),
                                  full_conf.get("ssl.ca.location"), full_conf.get("sasl.username"))
        self._names = LIBRDKAFKA  # Client.from_settings names trustgap's settings instead
        self._producer = Producer(full_conf)
        self._topics = {**DEFAULT_TOPICS, **(topics or {})}
        self._on_error = on_delivery_error
        self._linger = linger_ms / 1000
        self._limits = Limits(max_event_bytes, max_batch_bytes, max_batch_events)
        self._block_timeout = block_timeout
        self._validate = validate_events
        self._buffers: dict[EventKind, _Buffer] = {k: _Buffer() for k in TOPIC_OF}
        self._partitions: dict[str, int] = {}
        self._event_topics = [self._topics[t] for t in TOPIC_OF.values()]
        self._metadata_retry_at = 0.0
        # Re-entrant: delivery callbacks may run while a send polls for room, and may log events themselves.
        self._lock = threading.RLock()
        self._closed = False
        self._unreported = 0  # failures since the last flush, when nobody is told by a callback
        self.stats = ClientStats()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="trustgap-client", daemon=True)
        self._thread.start()

    @classmethod
    def from_settings(cls, settings: Settings | None = None, **kwargs: Any) -> Client:
        """A client for the broker, credentials and topic names in trustgap's settings (env TRUSTGAP_* if None)."""
        from .admin import confluent_config
        from .settings import load

        s = settings if settings is not None else load()  # a bad TRUSTGAP_* value raises ConfigError (one line)
        kwargs.setdefault("max_batch_events", s.max_batch_events)
        kwargs.setdefault("max_batch_bytes", s.max_message_bytes)
        kwargs.setdefault("max_event_bytes", s.max_event_bytes)
        client = cls(conf={**confluent_config(s), **kwargs.pop("conf", {})}, topics=s.topics.model_dump(), **kwargs)
        client._names = SETTINGS
        return client

    # --- the calls a model service makes ---------------------------------------------------------------------

    def log_prediction(self, prediction_id: str, *, model: str, label: str, model_version: str = "",
                       score: float | None = None, band: str | None = None, segment: Mapping[str, str] | None = None,
                       features: Mapping[str, float | str | None] | None = None, ts: datetime | None = None,
                       event_id: str | None = None) -> str:
        """Record one model decision; returns its event_id (generated when omitted, reuse it to retry safely)."""
        event: dict[str, Any] = {"prediction_id": prediction_id, "model": model, "model_version": model_version,
                                 "ts": _check_ts("ts", ts, True), "label": label}
        if score is not None:
            event["score"] = _number(score)
        if band is not None:
            event["band"] = band
        if segment is not None:
            event["segment"] = dict(segment)
        if features is not None:
            event["features"] = {k: _number(v) for k, v in features.items()}
        return self._add("prediction", event, event_id)

    def log_action(self, prediction_id: str, action: Action, *, final_label: str | None = None,
                   actor: str | None = None, reason: str | None = None, ts: datetime | None = None,
                   event_id: str | None = None) -> str:
        """Record what a person did with a prediction: accept, override, bypass or escalate."""
        event: dict[str, Any] = {"prediction_id": prediction_id, "ts": _check_ts("ts", ts, True), "action": action}
        for name, value in (("final_label", final_label), ("actor", actor), ("reason", reason)):
            if value is not None:
                event[name] = value
        return self._add("action", event, event_id)

    def log_outcome(self, prediction_id: str, label: str, *, kind: OutcomeKind = "truth",
                    value: float | None = None, ts: datetime | None = None, event_id: str | None = None) -> str:
        """Record what actually happened (`kind="truth"`) or a cheap early signal of it (`kind="proxy"`)."""
        event: dict[str, Any] = {"prediction_id": prediction_id, "ts": _check_ts("ts", ts, True), "label": label,
                                 "kind": kind}
        if value is not None:
            event["value"] = _number(value)
        return self._add("outcome", event, event_id)

    def annotate(self, model: str, kind: AnnotationKind, note: str, *, start: datetime | None = None,
                 end: datetime | None = None, segment: Mapping[str, str] | None = None,
                 event_id: str | None = None) -> str:
        """Announce a deliberate change (campaign, experiment, deploy, data fix) so that its shift is expected."""
        event: dict[str, Any] = {"model": model, "kind": kind, "note": note, "start": _check_ts("start", start, True)}
        if end is not None:
            event["end"] = _check_ts("end", end, False)
        if segment is not None:
            event["segment"] = dict(segment)
        return self._add("annotation", event, event_id)

    def send(self, kind: EventKind, event: Mapping[str, Any]) -> str:
        """Send a ready-made contract event (a dict as in the JSON contract); `schema_version`/`event_id` may be
        omitted. Used by `trustgap replay` and the simulator."""
        if kind not in TOPIC_OF:
            raise InvalidEvent(f"unknown event kind {kind!r}; one of {', '.join(TOPIC_OF)}")
        body = dict(event)
        event_id = body.pop("event_id", None)  # a schema_version in `event` overrides the default 1
        return self._add(kind, body, event_id)

    def produce_raw(self, topic: str, value: bytes, key: bytes | None = None) -> None:
        """Produce one message as is (no validation, no batching): for replaying captured messages."""
        self._ensure_open()
        with self._lock:
            self._produce(self._topics.get(topic, topic), value, key, None, 1)

    # --- batching --------------------------------------------------------------------------------------------

    def _add(self, kind: EventKind, body: dict[str, Any], event_id: str | None) -> str:
        self._ensure_open()
        eid = event_id if event_id is not None else uuid.uuid4().hex
        event = {"schema_version": 1, "event_id": eid, **body}
        try:
            raw = orjson.dumps(event, option=orjson.OPT_UTC_Z)
        except TypeError as err:
            raise InvalidEvent(f"{kind} event is not JSON-serialisable: {err}") from None
        if len(raw) > self._limits.max_event_bytes:
            raise InvalidEvent(f"{kind} event is {len(raw)} bytes, over the {self._limits.max_event_bytes}-byte limit")
        if self._validate:
            # Validate the bytes the worker will read (after JSON), not the Python objects: what passes here parses.
            result = validate(kind, orjson.loads(raw), raw)
            if isinstance(result, Reject):
                raise InvalidEvent(f"invalid {kind} event: {result.detail}")
        pkey = str(body.get("model" if kind == "annotation" else "prediction_id", "")).encode()
        with self._lock:
            buf = self._buffers[kind]
            if (len(buf.items) >= self._limits.max_batch_events
                    or buf.nbytes + len(raw) + 1 > self._limits.max_message_bytes):
                self._send_locked(kind)  # may raise BufferFull: then this event was not accepted
            if not buf.items:
                buf.since = time.monotonic()
            buf.items.append((pkey, raw))
            buf.nbytes += len(raw) + 1
            self.stats.accepted += 1
            if len(buf.items) >= self._limits.max_batch_events:
                try:
                    self._send_locked(kind, block=False)
                except BufferFull:
                    pass  # accepted and buffered: the next call (or the linger) sends it
        return eid

    def _refresh_partitions(self) -> None:
        """Learn the event topics' partition counts; a failed lookup is retried 10 s later, not on every send."""
        missing = [t for t in self._event_topics if t not in self._partitions]
        if not missing or time.monotonic() < self._metadata_retry_at:
            return
        try:
            meta = self._producer.list_topics(timeout=2).topics
        except KafkaException:
            meta = {}
        for topic in missing:
            tm = meta.get(topic)
            if tm is not None and tm.error is None and tm.partitions:
                self._partitions[topic] = len(tm.partitions)
        self._metadata_retry_at = time.monotonic() + 10

    def _send_locked(self, kind: EventKind, block: bool = True) -> None:
        """Produce a topic's buffer as one message per partition; what could not be produced stays buffered."""
        buf = self._buffers[kind]
        if not buf.items:
            return
        topic = self._topics[TOPIC_OF[kind]]
        if topic not in self._partitions:
            self._refresh_partitions()  # once (then at most every 10 s while the broker does not answer)
        count = self._partitions.get(topic)
        # Without a partition count (broker not answering yet), one message keyed by its first event's key.
        groups: dict[int | None, list[tuple[bytes, bytes]]] = {}
        for item in buf.items:
            groups.setdefault(_crc_partition(item[0], count) if count else None, []).append(item)
        pending = list(groups.items())
        try:
            while pending:
                partition, items = pending[0]
                value = b"[" + b",".join(raw for _, raw in items) + b"]"
                self._produce(topic, value, items[0][0], partition, len(items), block)
                pending.pop(0)
        finally:
            buf.items = [item for _, items in pending for item in items]
            buf.nbytes = 2 + sum(len(raw) + 1 for _, raw in buf.items)
            buf.since = time.monotonic()

    def _produce(self, topic: str, value: bytes, key: bytes | None, partition: int | None, events: int,
                 block: bool = True) -> None:
        def on_delivery(err: Any, msg: Any) -> None:
            if err is None:
                self.stats.delivered += events
                return
            self.stats.failed += events
            failure = DeliveryFailure(topic, events, str(err))
            if self._on_error is not None:
                self._on_error(failure)
            else:
                self._unreported += events

        deadline = time.monotonic() + (self._block_timeout if block else 0.0)
        kwargs: dict[str, Any] = {"value": value, "key": key, "on_delivery": on_delivery}
        if partition is not None:
            kwargs["partition"] = partition
        while True:
            try:
                self._producer.produce(topic, **kwargs)
                break
            except BufferError:  # librdkafka's bounded queue is full: serve deliveries until there is room
                if time.monotonic() >= deadline:
                    raise BufferFull(f"the send queue stayed full for {self._block_timeout:g}s; is the broker "
                                     "reachable?") from None
                self._producer.poll(0.05)
        self.stats.messages += 1

    def _run(self) -> None:
        """Background: learn partition counts, send buffers older than the linger, serve delivery reports."""
        tick = max(self._linger / 2, 0.005)
        while True:
            now = time.monotonic()
            if any(buf.items and now - buf.since >= self._linger for buf in self._buffers.values()):
                self._refresh_partitions()  # outside the lock: a slow metadata answer blocks no caller
            with self._lock:
                for kind, buf in self._buffers.items():
                    if buf.items and now - buf.since >= self._linger:
                        try:
                            self._send_locked(kind, block=False)
                        except BufferFull:
                            pass  # tried again next tick; callers meet BufferFull on their own sends
            self._producer.poll(0)
            if self._stop.wait(tick):
                return

    # --- lifecycle -------------------------------------------------------------------------------------------

    def check(self, timeout: float = 5.0) -> None:
        """Return once the broker answers a metadata request. Raises SecurityMismatch (a ConfigError) at once when
        it refused the credentials or the certificate, or speaks another protocol than `security.protocol`, and
        BrokerUnreachable when nothing answered within `timeout` seconds; the message says what to fix."""
        await_metadata(self._producer, self._errors, self._servers, self._security, self._names, timeout)

    def flush(self, timeout: float = 30.0) -> None:
        """Send everything buffered and wait for the broker's acknowledgements.

        Raises DeliveryError when messages are still unacknowledged after `timeout`, or when messages failed since
        the last flush and no `on_delivery_error` callback was given (they are in `stats.failed` either way).
        """
        with self._lock:
            for kind in TOPIC_OF:
                self._send_locked(kind)
        remaining = self._producer.flush(timeout)
        failed, self._unreported = self._unreported, 0
        if remaining:
            raise DeliveryError(f"{remaining} messages not acknowledged after {timeout:g}s; is the broker reachable?")
        if failed:
            raise DeliveryError(f"{failed} events were not delivered (see the broker's error in stats / callback)")

    def close(self, timeout: float = 30.0) -> None:
        """Flush, then stop the background thread; the client cannot be used afterwards."""
        if self._closed:
            return
        try:
            self.flush(timeout)
        finally:
            self._closed = True
            self._stop.set()
            self._thread.join()

    def _ensure_open(self) -> None:
        if self._closed:
            raise ClientClosed("this trustgap client was closed")

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncClient:
    """asyncio flavour: the same calls as coroutines; a full buffer makes them wait instead of blocking the loop."""

    def __init__(self, bootstrap_servers: str | None = None, **kwargs: Any) -> None:
        self._block_timeout = kwargs.pop("block_timeout", 30.0)
        self._client = Client(bootstrap_servers, block_timeout=0.0, **kwargs)

    @classmethod
    def from_settings(cls, settings: Settings | None = None, **kwargs: Any) -> AsyncClient:
        self = cls.__new__(cls)
        self._block_timeout = kwargs.pop("block_timeout", 30.0)
        self._client = Client.from_settings(settings, block_timeout=0.0, **kwargs)
        return self

    @property
    def stats(self) -> ClientStats:
        return self._client.stats

    async def _retry(self, call: Callable[[], str]) -> str:
        deadline = time.monotonic() + self._block_timeout
        while True:
            try:
                return call()
            except BufferFull:
                if time.monotonic() >= deadline:
                    raise
                await asyncio.sleep(0.05)

    async def log_prediction(self, prediction_id: str, **kwargs: Any) -> str:
        """See Client.log_prediction."""
        return await self._retry(lambda: self._client.log_prediction(prediction_id, **kwargs))

    async def log_action(self, prediction_id: str, action: Action, **kwargs: Any) -> str:
        """See Client.log_action."""
        return await self._retry(lambda: self._client.log_action(prediction_id, action, **kwargs))

    async def log_outcome(self, prediction_id: str, label: str, **kwargs: Any) -> str:
        """See Client.log_outcome."""
        return await self._retry(lambda: self._client.log_outcome(prediction_id, label, **kwargs))

    async def annotate(self, model: str, kind: AnnotationKind, note: str, **kwargs: Any) -> str:
        """See Client.annotate."""
        return await self._retry(lambda: self._client.annotate(model, kind, note, **kwargs))

    async def send(self, kind: EventKind, event: Mapping[str, Any]) -> str:
        return await self._retry(lambda: self._client.send(kind, event))

    async def check(self, timeout: float = 5.0) -> None:
        await asyncio.to_thread(self._client.check, timeout)

    async def flush(self, timeout: float = 30.0) -> None:
        await asyncio.to_thread(self._client.flush, timeout)

    async def close(self, timeout: float = 30.0) -> None:
        await asyncio.to_thread(self._client.close, timeout)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class BatchProducer:
    """The simulator's bulk sender (kept for its callers): contract dicts in, no per-event validation."""

    def __init__(self, conf: dict[str, Any], topics: dict[str, str], batch: int = 1000) -> None:
        self._client = Client(conf={**conf, "linger.ms": 20}, topics=topics, max_batch_events=batch,
                              validate_events=False, linger_ms=200)
        self.sent = 0

    @property
    def failures(self) -> int:
        return self._client.stats.failed

    def add(self, kind: EventKind, event: dict[str, Any]) -> None:
        self._client.send(kind, event)
        self.sent += 1
        if kind == "annotation":
            # Annotations are rare and must be stored before the windows they explain close: never hold them.
            self._client.flush()

    def send_all(self, events: Iterable[tuple[EventKind, dict[str, Any]]]) -> int:
        for kind, event in events:
            self.add(kind, event)
        self.flush()
        return self.sent

    def flush(self, timeout: float = 60.0) -> None:
        self._client.flush(timeout)

    def close(self, timeout: float = 30.0) -> None:
        self._client.close(timeout)

