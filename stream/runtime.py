"""What ingest, the evaluator and reconciliation share in one worker process: its state, and nothing that acts.

The jobs are functions over a `Runtime` (stream.ingest, stream.evaluator, stream.reconcile); the wall clock is
the injected `clock`, so a test can set the time every job sees.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .events import TOPIC_OF, EventKind, Limits
from .metrics import Metrics
from .recovery import ReadOffsets
from .settings import Settings
from .state import PartitionEnd, Store
from .times import Clock, utcnow

Partition = tuple[str, int]
"""(topic, partition), as Redis's offsets and a chunk's claims name a partition."""


@dataclass
class Chunk:
    """Valid events collected for one Redis call, and the (partition, offset, newest event time) of every message
    they came from: a chunk claims only its own messages, so a retry after a Redis rollback cannot claim an earlier
    chunk's messages, whose effects may be gone, nor their event time."""

    since: float  # monotonic time its first message was parsed
    events: list[Any] = field(default_factory=list)
    # the newest `ts` of the message's valid predictions/actions/outcomes (None: none, or an annotation)
    seen: list[tuple[Partition, int, datetime | None]] = field(default_factory=list)


@dataclass
class Runtime:
    """What the agents and the timers share in one worker process."""

    settings: Settings
    store: Store
    metrics: Metrics
    topics: dict[str, Any] = field(default_factory=dict)
    degraded: str | None = None  # why the worker is not healthy, for /health
    worker_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    app: Any = None
    clock: Clock = utcnow
    broker_down: str | None = None  # set by watch_broker while the admin client cannot reach the broker
    read_offsets: ReadOffsets = field(default_factory=ReadOffsets)
    # partition -> offset it was sought back to; its Redis offset waits until that message is re-read
    rewinding: dict[Partition, int] = field(default_factory=dict)
    # on a Redis Cluster, per partition the progress (next offset, newest event ms) of the last chunk all of whose
    # calls succeeded since the last seek back (`seeks` counts those), which the worker vouches for in every bucket
    vouchable: dict[Partition, tuple[int, int | None]] = field(default_factory=dict)
    seeks: int = 0
    # per event kind: the chunk being collected, the one being applied to Redis meanwhile, and the lock that keeps
    # the agent and the flush timer from submitting at once (see ingest.submit)
    chunks: dict[EventKind, Chunk] = field(default_factory=dict)
    inflight: dict[EventKind, asyncio.Task[None]] = field(default_factory=dict)
    submitting: dict[EventKind, asyncio.Lock] = field(default_factory=dict)
    flushing: dict[EventKind, asyncio.Task[None]] = field(default_factory=dict)  # the flush timer's, per kind
    models: list[str] = field(default_factory=list)  # the models the evaluator's last tick found
    # per owned partition: where its owner last saw it on the broker (first and end offset), and since when
    # (monotonic) the end stands there; idleness needs it unchanged for idle_timeout, the consumer lag is measured
    # up to it (stream.partitions)
    ends: dict[Partition, tuple[PartitionEnd, float]] = field(default_factory=dict)
    lag_series: set[Partition] = field(default_factory=set)  # partitions whose consumer lag this worker exports
    # per (model, follow-up stage kind): the newest window whose rates the gauges show (evaluator.export_rates)
    rate_window: dict[tuple[str, str], int] = field(default_factory=dict)
    limits: Limits = field(init=False)  # the parse limits, built once rather than per batch

    def __post_init__(self) -> None:
        self.limits = self.settings.limits

    def topic_of(self, kind: EventKind) -> str:
        """The topic events of `kind` are read from."""
        return str(getattr(self.settings.topics, TOPIC_OF[kind]))

    def event_topics(self) -> set[str]:
        """The topics the agents consume (the ones whose offsets Redis holds)."""
        return {self.topic_of(kind) for kind in TOPIC_OF}
