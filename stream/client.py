"""Producer side: send contract-v1 events to trustgap's topics, batched into JSON-array messages.

Imports confluent-kafka and the contract only (never faust), so a model service can use it cheaply.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson

from .events import EventKind

TOPIC_OF: dict[EventKind, str] = {"prediction": "predictions", "action": "actions", "outcome": "outcomes",
                                  "annotation": "annotations"}


class DeliveryError(Exception):
    """The broker refused or lost messages; `failures` counts them."""


class BatchProducer:
    """Buffers events per topic and sends each topic's buffer as one JSON-array message (up to `batch` events)."""

    def __init__(self, conf: dict[str, Any], topics: dict[str, str], batch: int = 500) -> None:
        from confluent_kafka import Producer

        self._producer = Producer({"linger.ms": 20, "compression.type": "none", **conf})
        self._topics = topics
        self._batch = batch
        self._buffers: dict[EventKind, list[dict[str, Any]]] = {k: [] for k in TOPIC_OF}
        self.sent = 0
        self.failures = 0

    def _on_delivery(self, err: Any, msg: Any) -> None:
        if err is not None:
            self.failures += 1

    def add(self, kind: EventKind, event: dict[str, Any]) -> None:
        buf = self._buffers[kind]
        buf.append(event)
        # Annotations are rare and must be stored before the windows they explain close: never hold them back.
        if len(buf) >= self._batch or kind == "annotation":
            self._send(kind)

    def _send(self, kind: EventKind) -> None:
        buf = self._buffers[kind]
        if not buf:
            return
        key = buf[0].get("prediction_id") or buf[0].get("model") or ""
        value = orjson.dumps(buf)
        while True:
            try:
                self._producer.produce(self._topics[TOPIC_OF[kind]], value=value, key=str(key).encode(),
                                       on_delivery=self._on_delivery)
                break
            except BufferError:  # local queue full: let deliveries drain, then try again
                self._producer.poll(0.1)
        self._producer.poll(0)
        self.sent += len(buf)
        buf.clear()

    def send_all(self, events: Iterable[tuple[EventKind, dict[str, Any]]]) -> int:
        for kind, event in events:
            self.add(kind, event)
        self.flush()
        return self.sent

    def flush(self, timeout: float = 60.0) -> None:
        for kind in TOPIC_OF:
            self._send(kind)
        remaining = self._producer.flush(timeout)
        if remaining or self.failures:
            raise DeliveryError(f"{remaining + self.failures} messages were not delivered")
