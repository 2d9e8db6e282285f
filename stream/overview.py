"""What `trustgap status`, `trustgap report` and the demo show: per model, the closed windows' rates against their
baseline, and the alerts published on the alerts topic.

The one reader of Redis for those commands (they render what `load` returns, and never read keys themselves).
Reading is read-only and outside the detector: window summaries come from the model's Redis history
(`detect.Summary`), rates from `detect.RATE_SIGNALS`, each window's late events from the `~late|<kind>` fields of
its counter hashes (while Redis keeps them), alerts from the alerts topic (the record of what was published). The
pure part (`window_rows`, `active_alerts`; `gate.latest_alerts`) is separate from the reads.

The consumer lag status shows is measured as the workers measure it (`recovery.partition_lag`): each input
partition's end on the broker minus the offset Redis holds as applied (`keys.OFFSETS`, the authority on progress;
the consumer group's committed offsets may run ahead of it).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson
from pydantic import ValidationError

from . import detect, segments
from .detect import RATE_SIGNALS, Summary
from .errors import BrokerUnreachable, RedisUnreachable, Unreachable
from .events import TOPIC_OF, AlignmentAlert, Annotation
from .gate import Gate, decide, latest_alerts
from .recovery import partition_lag
from .settings import Settings
from .times import epoch_ms, iso_ms, utcnow
from .windows import STAGE_SIGNAL

if TYPE_CHECKING:
    import redis

Late = dict[str, int]
"""Stage kind (n/a/o, `windows.STAGE_SIGNAL`) -> events of one window that came after that stage was judged."""

Partition = tuple[str, int]
LAG_TIMEOUT_S = 5.0  # how long status waits for the broker before it says the lag is unknown


@dataclass(frozen=True, slots=True)
class Rate:
    """Successes over trials in one window, and the pooled baseline it is compared with."""

    k: int
    n: int
    baseline_k: int
    baseline_n: int

    @property
    def rate(self) -> float | None:
        return self.k / self.n if self.n else None

    @property
    def baseline(self) -> float | None:
        return self.baseline_k / self.baseline_n if self.baseline_n else None

    def to_json(self) -> dict[str, Any]:
        return {"rate": self.rate, "n": self.n, "baseline": self.baseline, "baseline_n": self.baseline_n}


@dataclass(frozen=True, slots=True)
class WindowRow:
    start: int
    end: int
    version: str
    predictions: int
    rates: dict[str, Rate]
    late: Late = field(default_factory=dict)  # by stage kind; empty when none came (or Redis no longer keeps it)
    segments: dict[str, dict[str, int]] = field(default_factory=dict)  # dimension -> value -> predictions
    # scope ('' the model, `band=...`) -> truth outcomes' value per prediction so far, where outcomes carry values
    values: dict[str, float] = field(default_factory=dict)

    def late_by_signal(self) -> dict[str, int]:
        """Late events per signal name (predictions, actions, outcomes), 0 where none came."""
        return {signal: self.late.get(kind, 0) for kind, signal in STAGE_SIGNAL.items()}

    def to_json(self) -> dict[str, Any]:
        return {"start": iso_ms(self.start), "end": iso_ms(self.end), "version": self.version,
                "predictions": self.predictions, "signals": {s: r.to_json() for s, r in self.rates.items()},
                "late": self.late_by_signal(), "outcome_value": {k or "all": v for k, v in self.values.items()}}


@dataclass(slots=True)
class ModelOverview:
    model: str
    windows: list[WindowRow] = field(default_factory=list)  # oldest first, all that Redis history keeps
    alerts: list[AlignmentAlert] = field(default_factory=list)  # every alert read, oldest first
    active: list[AlignmentAlert] = field(default_factory=list)
    gate: Gate | None = None  # the retrain gate over these alerts and the model's annotations

    def to_json(self, last: int | None = None) -> dict[str, Any]:
        windows = self.windows[-last:] if last else self.windows
        return {"model": self.model, "windows": [w.to_json() for w in windows],
                "active_alerts": [orjson.loads(a.model_dump_json()) for a in self.active],
                "retrain_gate": self.gate.to_json() if self.gate else None}


@dataclass(frozen=True, slots=True)
class PartitionLag:
    """One input partition: its end on the broker, the offset Redis holds as applied (None: none yet), and the
    messages between them (`recovery.partition_lag`)."""

    topic: str
    partition: int
    end: int
    applied: int | None
    lag: int

    def to_json(self) -> dict[str, Any]:
        return {"topic": self.topic, "partition": self.partition, "end": self.end, "applied": self.applied,
                "lag": self.lag}


@dataclass(frozen=True, slots=True)
class ConsumerLag:
    """Messages of the input topics not applied yet, per partition; `unknown` says why the lag could not be
    measured (the broker did not answer), and then no partition is listed."""

    topics: tuple[str, ...]
    partitions: tuple[PartitionLag, ...] = ()
    unknown: str | None = None

    def by_topic(self) -> dict[str, int | None]:
        """Each input topic's lag summed over its partitions; None for every topic while the lag is unknown."""
        if self.unknown is not None:
            return dict.fromkeys(self.topics)
        totals: dict[str, int | None] = dict.fromkeys(self.topics, 0)
        for p in self.partitions:
            totals[p.topic] = (totals.get(p.topic) or 0) + p.lag
        return totals

    def to_json(self) -> dict[str, Any]:
        return {"topics": self.by_topic(), "partitions": [p.to_json() for p in self.partitions],
                "unknown": self.unknown}


def input_topics(settings: Settings) -> tuple[str, ...]:
    """The topics the workers consume, in the settings' names (predictions, actions, outcomes, annotations)."""
    return tuple(str(getattr(settings.topics, name)) for name in TOPIC_OF.values())


def consumer_lag(topics: Sequence[str], ends: Mapping[Partition, tuple[int, int]], applied: Mapping[Partition, int]
                 ) -> ConsumerLag:
    """The lag of every partition of `ends` ((first, end) offset on the broker) against the offsets Redis holds
    as `applied`."""
    rows = tuple(PartitionLag(t, p, end, applied.get((t, p)), partition_lag(end, first, applied.get((t, p))))
                 for (t, p), (first, end) in sorted(ends.items()))
    return ConsumerLag(tuple(topics), rows)


def window_rows(history: Mapping[int, Summary], baseline_windows: int,
                late: Mapping[int, Mapping[str, int]] | None = None) -> list[WindowRow]:
    """Each window's whole-model rates next to the pooled rate of the `baseline_windows` windows before it
    (windows the detector excluded from baselines stay out, as they do for the detector), and its late events
    (`late`: window start -> stage kind -> count)."""
    late = late or {}
    ordered = [history[k] for k in sorted(history)]
    rows = []
    for i, s in enumerate(ordered):
        before = ordered[max(0, i - baseline_windows):i]
        rates = {}
        for signal in RATE_SIGNALS:
            # every follow-up counted so far, whatever its checkpoint: a young window's outcomes are still coming
            k, n = detect.rate(detect.totals(s.scopes.get("", {})), signal)
            base = [detect.rate(detect.totals(b.scopes.get("", {})), signal) for b in before
                    if f"{signal}|" not in b.excluded]
            rates[signal] = Rate(k, n, sum(b[0] for b in base), sum(b[1] for b in base))
        came_late = {kind: n for kind, n in late.get(s.start, {}).items() if n}
        values = {}
        for scope, counts in s.scopes.items():
            amounts = detect.value(detect.totals(counts))
            valued = any(k.startswith(f"v:{detect.VALUE}") for k in counts)
            if (scope == "" or scope.startswith("band=")) and amounts.n and valued:
                values[scope] = amounts.total / amounts.n
        rows.append(WindowRow(s.start, s.end, s.version, int(s.scopes.get("", {}).get("n", 0)), rates, came_late,
                              segments.dimensions(s.scopes), values))
    return rows


def active_alerts(alerts: Iterable[AlignmentAlert], last_window_start: int | None) -> list[AlignmentAlert]:
    """Firing alerts still in force: a sustained one until its `resolved`; a transient or expected one only while
    its window is the model's latest closed window (they describe one window and are never resolved)."""
    out = []
    for a in latest_alerts(alerts).values():
        if a.status != "firing":
            continue
        if a.classification == "sustained" or (last_window_start is not None
                                               and epoch_ms(a.window.start) >= last_window_start):
            out.append(a)
    order = {"page": 0, "ticket": 1, "info": 2}
    return sorted(out, key=lambda a: (order.get(a.severity, 3), a.signal, sorted(a.scope.items())))


def parse_alerts(values: Iterable[bytes]) -> tuple[list[AlignmentAlert], int]:
    """Alerts from raw alert-topic values; returns (alerts, how many could not be read)."""
    alerts, bad = [], 0
    for v in values:
        try:
            alerts.append(AlignmentAlert.model_validate_json(v))
        except ValidationError:
            bad += 1
    return alerts, bad


# --- reads ----------------------------------------------------------------------------------------------------

def read_history(settings: Settings) -> tuple[dict[str, dict[int, Summary]], dict[str, dict[int, Late]]]:
    """Every model's closed-window summaries kept in Redis, and each of those windows' late events.

    Three round trips whatever the number of models, windows and buckets: the models, their histories, the late
    counts."""

    from .state import keys
    from .state.redis_io import UNAVAILABLE, sync_client

    r = sync_client(settings)
    try:
        models = sorted(m.decode() for m in r.smembers(keys.MODELS))  # type: ignore[union-attr]
        pipe = r.pipeline(transaction=False)
        for model in models:
            pipe.hgetall(keys.model_history(model))
        history = {model: {int(k): Summary.from_json(orjson.loads(v)) for k, v in hist.items()}
                   for model, hist in zip(models, pipe.execute(), strict=True)}
        return history, read_late(r, history, settings.state_buckets)
    except UNAVAILABLE as err:
        raise RedisUnreachable(f"redis unreachable ({type(err).__name__}); check redis_url / TRUSTGAP_REDIS_URL"
                               ) from None
    finally:
        r.close()


def read_late(r: redis.Redis, history: Mapping[str, Mapping[int, Summary]], buckets: int) -> dict[str, dict[int, Late]]:
    """Per model and window of `history`, its late events by stage kind: the `~late|<kind>` fields summed over the
    window's counter hash in every bucket, all read in one pipeline. A window whose keys expired reads as none."""
    from .state import keys

    kinds = list(STAGE_SIGNAL)
    fields = [keys.LATE_FIELD + kind for kind in kinds]
    asked = [(model, start) for model in sorted(history) for start in sorted(history[model])]
    pipe = r.pipeline(transaction=False)
    for model, start in asked:
        for b in range(buckets):
            pipe.hmget(keys.window_counts(b, model, start), fields)
    replies = iter(pipe.execute())
    out: dict[str, dict[int, Late]] = {}
    for model, start in asked:
        sums = dict.fromkeys(kinds, 0)
        for _ in range(buckets):
            for kind, v in zip(kinds, next(replies), strict=True):
                sums[kind] += int(v or 0)
        out.setdefault(model, {})[start] = {kind: n for kind, n in sums.items() if n}
    return out


def read_alert_values(settings: Settings, timeout: float = 10.0) -> list[bytes]:
    """Every message on the alerts topic, from the beginning up to its current end."""
    import time
    import uuid

    from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

    from .admin import bootstrap, confluent_config

    topic = settings.topics.alerts
    # The end is where each partition reports EOF: some brokers' (Tansu's) high watermarks lag behind.
    consumer = Consumer(confluent_config(settings, **{"group.id": f"trustgap-status-{uuid.uuid4().hex}",
                                                      "enable.auto.commit": False, "enable.partition.eof": True,
                                                      "log_level": 0}))
    try:
        try:
            meta = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
        except KafkaException:
            raise BrokerUnreachable(f"broker {bootstrap(settings)} unreachable; check broker_url / TRUSTGAP_BROKER_URL"
                              ) from None
        if meta is None or meta.error is not None or not meta.partitions:
            return []
        open_partitions = set(meta.partitions)
        consumer.assign([TopicPartition(topic, p, 0) for p in open_partitions])
        values: list[bytes] = []
        deadline = time.monotonic() + timeout
        while open_partitions:
            if time.monotonic() > deadline:
                raise Unreachable(f"the alerts topic {topic} could not be read to its end in {timeout:g}s")
            msg = consumer.poll(0.2)
            if msg is None:
                continue
            err, value = msg.error(), msg.value()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    open_partitions.discard(msg.partition())
                continue
            if value is not None:
                values.append(value)
        return values
    finally:
        consumer.close()


def read_applied(settings: Settings) -> dict[Partition, int]:
    """The offset Redis holds as applied per partition (the next offset to read: `keys.OFFSETS`, on a cluster the
    minimum over the buckets' records), in one round trip."""

    from .state import progress
    from .state.redis_io import UNAVAILABLE, sync_client

    r = sync_client(settings)
    buckets = settings.state_buckets if settings.redis_cluster else 0
    try:
        pipe = r.pipeline(transaction=False)
        progress.queue_read(pipe, [], buckets)
        return progress.parse_read([], pipe.execute(), buckets).offsets
    except UNAVAILABLE as err:
        raise RedisUnreachable(f"redis unreachable ({type(err).__name__}); check redis_url / TRUSTGAP_REDIS_URL"
                               ) from None
    finally:
        r.close()


def read_partition_ends(settings: Settings, topics: Sequence[str], timeout: float = LAG_TIMEOUT_S
                        ) -> dict[Partition, tuple[int, int]]:
    """The (first, end) offset of every partition of `topics` on the broker (a topic it does not have has none).

    The end is where a consumer assigned at the partition's end reports EOF: the high watermark of a fetch
    response, exact where a ListOffsets answer may not be (Tansu's is a record batch short); the first offset is
    the log start that fetch reported."""
    import time
    import uuid

    from confluent_kafka import OFFSET_END, Consumer, KafkaError, KafkaException, TopicPartition

    from .admin import bootstrap, confluent_config

    consumer = Consumer(confluent_config(settings, **{"group.id": f"trustgap-status-{uuid.uuid4().hex}",
                                                      "enable.auto.commit": False, "enable.partition.eof": True,
                                                      "fetch.wait.max.ms": 100, "log_level": 0}))
    try:
        try:
            meta = consumer.list_topics(timeout=timeout).topics
        except KafkaException:
            raise BrokerUnreachable(f"broker {bootstrap(settings)} unreachable; check broker_url / "
                                    "TRUSTGAP_BROKER_URL") from None
        wanted = [(t, p) for t in topics if t in meta and meta[t].error is None for p in sorted(meta[t].partitions)]
        if not wanted:
            return {}
        consumer.assign([TopicPartition(t, p, OFFSET_END) for t, p in wanted])
        pending, out = set(wanted), {}
        deadline = time.monotonic() + timeout
        while pending:
            if time.monotonic() > deadline:
                raise Unreachable(f"the ends of {len(pending)} input partitions were not read in {timeout:g}s")
            msg = consumer.poll(0.2)
            err = None if msg is None else msg.error()
            if msg is None or err is None or err.code() != KafkaError._PARTITION_EOF:
                continue  # nothing yet, or a message before the end (the ListOffsets answer was short)
            key = (str(msg.topic()), int(msg.partition() or 0))
            if key in pending:
                tp = TopicPartition(*key)
                first = consumer.get_watermark_offsets(tp, cached=True)[0]
                if first < 0:  # the fetch did not say: ask
                    first = consumer.get_watermark_offsets(tp, timeout=timeout)[0]
                out[key] = (first, int(msg.offset() or 0))
                pending.discard(key)
        return out
    finally:
        consumer.close()


def load_lag(settings: Settings, timeout: float = LAG_TIMEOUT_S) -> ConsumerLag:
    """Every input partition's lag, from Redis and the broker. A broker that does not answer leaves the lag
    unknown rather than failing, so status still shows what Redis holds."""
    topics = input_topics(settings)
    applied = read_applied(settings)
    try:
        ends = read_partition_ends(settings, topics, timeout)
    except Unreachable as err:
        return ConsumerLag(topics, unknown=str(err))
    return consumer_lag(topics, ends, applied)


def build(history: Mapping[str, Mapping[int, Summary]], alerts: Sequence[AlignmentAlert], settings: Settings,
          late: Mapping[str, Mapping[int, Mapping[str, int]]] | None = None,
          annotations: Mapping[str, Sequence[Annotation]] | None = None) -> list[ModelOverview]:
    """Per model: windows with baselines and late events, every alert, the active ones, and the retrain gate."""
    models = sorted(set(history) | {a.model for a in alerts})
    late = late or {}
    now = epoch_ms(utcnow())
    out = []
    for model in models:
        rows = window_rows(history.get(model, {}), settings.for_model(model).baseline_windows, late.get(model))
        mine = sorted((a for a in alerts if a.model == model), key=lambda a: (a.window.start, a.ts))
        last = rows[-1].start if rows else None
        verdict = decide(model, mine, (annotations or {}).get(model, ()), now, last)
        out.append(ModelOverview(model, rows, mine, active_alerts(mine, last), verdict))
    return out


def read_gate(settings: Settings, model: str) -> tuple[list[AlignmentAlert], list[Annotation], int | None]:
    """What the retrain gate of one model reads: its alerts (from the alerts topic), its annotations and the start
    of its latest closed window (from Redis: None before its first)."""
    from .state import keys
    from .state.redis_io import UNAVAILABLE, sync_client

    r = sync_client(settings)
    try:
        pipe = r.pipeline(transaction=False)
        pipe.hvals(keys.model_annotations(model))
        pipe.hkeys(keys.model_history(model))
        notes, starts = pipe.execute()
    except UNAVAILABLE as err:
        raise RedisUnreachable(f"redis unreachable ({type(err).__name__}); check redis_url / TRUSTGAP_REDIS_URL"
                               ) from None
    finally:
        r.close()
    alerts, _ = parse_alerts(read_alert_values(settings))
    return ([a for a in alerts if a.model == model], [Annotation.model_validate_json(n) for n in notes],
            max((int(k) for k in starts), default=None))


def read_annotations(settings: Settings, models: Sequence[str]) -> dict[str, list[Annotation]]:
    """Each model's annotations as Redis keeps them, in one round trip."""
    from .state import keys
    from .state.redis_io import UNAVAILABLE, sync_client

    r = sync_client(settings)
    try:
        pipe = r.pipeline(transaction=False)
        for model in models:
            pipe.hvals(keys.model_annotations(model))
        return {m: [Annotation.model_validate_json(v) for v in vals]
                for m, vals in zip(models, pipe.execute(), strict=True)}
    except UNAVAILABLE as err:
        raise RedisUnreachable(f"redis unreachable ({type(err).__name__}); check redis_url / TRUSTGAP_REDIS_URL"
                               ) from None
    finally:
        r.close()


def load(settings: Settings, with_alerts: bool = True) -> tuple[list[ModelOverview], int]:
    """Read Redis (and the alerts topic) and build every model's overview; returns (overviews, unreadable)."""
    history, late = read_history(settings)
    alerts, bad = parse_alerts(read_alert_values(settings)) if with_alerts else ([], 0)
    notes = read_annotations(settings, sorted(set(history) | {a.model for a in alerts}))
    return build(history, alerts, settings, late, notes), bad
