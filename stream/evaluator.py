"""The window evaluator: every tick, judge each (window, stage) the watermark has passed, one model at a time.

A window is judged in stages (stream.windows.Stage): its predictions and feature health when the watermark passes
its end, each follow-up signal at its checkpoints after that. One stage is a chain of small steps: read (close the
stage and read what judging needs) → judge (pure, stream.judge) → commit (compare-and-set on the model's cursor,
alerts into the outbox) → publish (the outbox burst, then forget what the broker acknowledged). An alert decided
is published at least once and decided only once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

from . import detect, features, segments
from .events import AlignmentAlert, Annotation
from .judge import Closed, Memory, Verdict, decode, judge
from .metrics import Metrics
from .partitions import confirm_idle, event_partitions, export_lag
from .reconcile import with_redis
from .runtime import Partition, Runtime
from .state import ModelState, ModelTick, Tick, keys
from .times import epoch_ms
from .windows import Due, due_stages, format_cursor, parse_cursor, partition_watermark, watermark

log = logging.getLogger("trustgap")

# the rates a follow-up stage exports: overrides from actions; the outcome rates (the proxy's own mismatch shows
# what proxy_divergence compares) from outcomes
EXPORTED = {"a": ("override_rate",), "o": ("outcome_mismatch", "proxy_mismatch")}
MAX_WINDOWS_PER_TICK = 200  # (window, stage) pairs judged per model and tick after a long outage; the next goes on


async def evaluate(rt: Runtime) -> int:
    """Close and evaluate every window the watermark has passed, for every model; returns windows closed.

    At steady state a tick is one Redis round trip (Store.tick); a window that closes costs one more to close
    it and read what judging it needs, one to commit, and one to forget its acknowledged alerts."""
    started = time.monotonic()
    partitions = event_partitions(rt) or []  # unknown yet: no partition, so no event time (windows wait)
    tick = await with_redis(rt, "tick", lambda: rt.store.tick(rt.models, rt.worker_id, epoch_ms(rt.clock()),
                                                              partitions))
    if tick.idle:  # an idle partition that got messages since its owner's assertion holds the watermark again
        tick.idle = await confirm_idle(rt, tick.idle, tick.offsets)
        tick.event_time = partition_watermark(partitions, tick.partition_time, tick.idle)
    export_partitions(rt, tick, partitions)
    export_lag(rt, tick.offsets)
    new = [m for m in tick.models if m not in tick.seen]
    if new:  # models this worker has not seen yet: read them now rather than a tick later
        more = await with_redis(rt, "tick", lambda: rt.store.tick(new, rt.worker_id, None))
        tick.seen.update(more.seen)
    rt.models = tick.models
    for kind, n in zip(("action", "outcome"), tick.orphans, strict=True):
        if n:
            rt.metrics.orphans.labels(kind).inc(n)
    closed = 0
    for model in tick.models:
        closed += await evaluate_model(rt, model, tick.seen[model], tick.event_time, started)
    return closed


async def evaluate_model(rt: Runtime, model: str, seen: ModelTick, event_time: int | None,
                         tick_started: float) -> int:
    """Judge the model's (window, stage) pairs the watermark has passed, in (due, order) order; returns how many
    were committed."""
    if not await _ready(rt, model, seen, tick_started):
        return 0
    dues = due_windows(rt, model, seen, event_time)
    cursor = seen.closed
    memory: Memory | None = None
    annotations: list[Annotation] = []
    done = 0
    for due in dues:
        closed, stored = await read(rt, model, due, with_state=memory is None)
        if stored is not None:  # the first stage of the tick: the state comes with it
            if stored.closed != cursor:  # another evaluator moved on since the tick; next tick
                return 0
            memory, annotations = decode(stored.state, stored.history), stored.annotations
        assert memory is not None
        verdict = judge(model, closed, due.stage, memory, annotations, rt.settings.for_model(model), rt.clock())
        if not await commit(rt, model, cursor, due, verdict):
            break  # another worker evaluated it; pick up from its state next tick
        done += 1
        cursor = format_cursor(due.cursor)
        export(rt, model, due, verdict, memory)
        memory = verdict.memory
        if verdict.outbox and not await publish(rt, model, verdict.outbox):
            break  # what failed stays in the outbox and goes first next tick; newer windows wait for it
    return done


async def _ready(rt: Runtime, model: str, seen: ModelTick, tick_started: float) -> bool:
    """Whether this worker may judge the model's new windows now: it holds the lease, the outbox is empty."""
    # One worker at a time evaluates and publishes a model: the compare-and-set commit already makes each
    # evaluation happen once, the lease also keeps two workers from publishing the same outbox entry.
    if not seen.leased:
        return False
    if time.monotonic() - tick_started > keys.LEASE_MS / 3000:  # a long tick: the lease taken may run out
        if not await with_redis(rt, "lease", lambda: rt.store.lease(model, rt.worker_id)):
            return False
    # Left over from a crash between decision and publication, or from a failed send: published before any
    # newer window is judged, so that a fingerprint's resolution never reaches the topic before its firing.
    return not seen.outbox or await publish(rt, model, seen.outbox)


def due_windows(rt: Runtime, model: str, seen: ModelTick, event_time: int | None) -> list[Due]:
    """The model's (window, stage) pairs the watermark has passed and no evaluator judged yet (at most
    MAX_WINDOWS_PER_TICK), exporting the watermark on the way. `event_time` is the partitions' event time
    (stream.windows.partition_watermark), before the model's lateness."""
    if event_time is None or seen.first is None:
        return []
    ms = rt.settings.for_model(model)
    wm = watermark(event_time, ms.allowed_lateness_seconds * 1000)
    rt.metrics.watermark.labels(model).set(wm / 1000)
    rt.metrics.watermark_lag.labels(model).set(rt.clock().timestamp() - wm / 1000)
    # the common tick ends here with nothing due: the state, history and annotations are not even read
    return due_stages(seen.first, parse_cursor(seen.closed), wm, ms.window_seconds * 1000, ms.stages(),
                      MAX_WINDOWS_PER_TICK)


def export_value(m: Metrics, model: str, scope: str, counts: Mapping[str, float]) -> None:
    """The truth outcomes' value per prediction of a scope at an outcome look, as the rate of `outcome_value`
    (only where the model's outcomes carry values)."""
    if f"v:{detect.VALUE}" in counts:
        amounts = detect.value(counts)
        if amounts.n:
            m.rate.labels(model, "outcome_value", scope).set(amounts.total / amounts.n)
            m.samples.labels(model, "outcome_value", scope).set(amounts.n)


def export_partitions(rt: Runtime, tick: Tick, partitions: Sequence[Partition]) -> None:
    """Each partition's newest event time and idleness, as the tick read them (the watermark's inputs)."""
    m = rt.metrics
    for tp in partitions:
        topic, partition = tp[0], str(tp[1])
        ms = tick.partition_time.get(tp)
        if ms is not None:
            m.partition_event_time.labels(topic, partition).set(ms / 1000)
        m.partition_idle.labels(topic, partition).set(1 if tp in tick.idle else 0)


async def read(rt: Runtime, model: str, due: Due, with_state: bool) -> tuple[Closed, ModelState | None]:
    """Close the stage and read the window's counts, at stage 'n' its feature statistics (and with `with_state`
    the model's state)."""
    window = due.window
    got = await with_redis(rt, "close", lambda: rt.store.close_and_read(model, window.start, window.end,
                                                                        due.stage.name, with_state=with_state))
    n, stats = 0, dict[str, features.FeatureStats]()
    if due.stage.kind == "n":
        n, stats = await with_redis(rt, "features", lambda: rt.store.features.read(model, window.start,
                                                                                   got.feature_stats))
    return Closed(window, got.counts.counts, n, stats), got.state


async def commit(rt: Runtime, model: str, cursor: str, due: Due, verdict: Verdict) -> bool:
    """Store the verdict if the model's cursor is still `cursor`; False when another worker did."""
    return await with_redis(rt, "commit", lambda: rt.store.commit_evaluation(
        model, cursor, format_cursor(due.cursor), due.window.start, verdict.summary_json(), verdict.state_json(),
        list(verdict.outbox.items()), verdict.keep_from))


def export(rt: Runtime, model: str, due: Due, verdict: Verdict, before: Memory) -> None:
    """Export a committed stage's metrics: feature health, the window count and the segment shares at stage 'n',
    the rates of the signals it judged at the others, and the alerts of each."""
    if due.stage.kind == "n":
        rt.metrics.windows.labels(model).inc()
        rt.metrics.closed.labels(model).set(due.window.end / 1000)
        export_features(rt, model, verdict.feature, before.feature)
    export_rates(rt, model, due, verdict.rate)


def export_features(rt: Runtime, model: str, result: features.Evaluation, before: features.State) -> None:
    """Feature health of the window; an alert that closed since `before` is set back to 0."""
    m = rt.metrics
    for name in result.summary.stats:
        stats = result.summary.get(name)
        m.feature_null_rate.labels(model, name).set(stats.null_rate)
        m.feature_distinct.labels(model, name).set(stats.distinct)
    active = set(result.state.active())
    for item in set(before.active()) | active:
        signal, _, name = item.partition(":")
        m.feature_alert_active.labels(model, signal, name).set(1 if item in active else 0)


def export_rates(rt: Runtime, model: str, due: Due, result: detect.Evaluation) -> None:
    """The rates the stage judged per scope (at its checkpoint's age; at 'n' each segment value's share of the
    predictions, as the rate of `segment_shift`; at an outcome stage the truth outcomes' value per prediction, as
    the rate of `outcome_value`), the baseline of every scope it measured, and the lifetimes of its alerts.

    The rate and baseline gauges show the newest window judged for the signal, at its latest look: a later
    checkpoint of an older window (judged after the first look at newer ones) must not put its rate next to a
    newer alert's baseline."""
    m = rt.metrics
    key = (model, due.stage.kind)
    if due.window.start < rt.rate_window.get(key, due.window.start):
        newest = False
    else:
        newest, rt.rate_window[key] = True, due.window.start
    if newest:  # every measured scope's baseline, so a panel shows each rate against its own, alert or not
        for measured, baseline in result.baselines.items():
            signal, _, where = measured.partition("|")
            m.baseline.labels(model, signal, where or "all").set(baseline)
    for alert in result.alerts:
        scope = ",".join(f"{k}={v}" for k, v in alert.scope.items()) or "all"
        if newest and alert.signal == segments.SIGNAL:  # a dimension's never-seen values have no counter to read
            m.rate.labels(model, alert.signal, scope).set(alert.observed)
        labels = (model, alert.signal, scope, alert.classification, alert.severity, alert.recommendation)
        # Only sustained alerts have a lifetime (firing .. resolved); transient and expected are one-off news.
        if alert.classification == "sustained":
            m.alert_active.labels(*labels).set(1 if alert.status == "firing" else 0)
    if not newest:
        return
    if due.stage.kind == "n":
        total = result.summary.scopes.get("", {}).get("n", 0)
        for dim, values in segments.dimensions(result.summary.scopes).items():
            for value, k in values.items():
                if total:
                    m.rate.labels(model, segments.SIGNAL, f"{dim}={value}").set(k / total)
                    m.samples.labels(model, segments.SIGNAL, f"{dim}={value}").set(total)
        return
    for scope, raw in result.summary.scopes.items():
        counts = detect.at_look(raw, due.stage.kind, due.stage.index)
        for signal in EXPORTED[due.stage.kind]:
            k, n = detect.rate(counts, signal)
            if n:
                m.rate.labels(model, signal, scope or "all").set(k / n)
                m.samples.labels(model, signal, scope or "all").set(n)
        export_value(m, model, scope or "all", counts)


async def publish(rt: Runtime, model: str, entries: Mapping[str, bytes]) -> bool:
    """Publish outbox entries (alert_id -> JSON) as one burst: send them all, await the broker's acks
    together, then forget the acknowledged ones with one call. An entry leaves the outbox only after its
    ack; one whose send failed stays for the next tick. True when every entry was acknowledged."""
    alerts = sorted(((alert_id, AlignmentAlert.model_validate_json(body), body)
                     for alert_id, body in entries.items()), key=lambda x: (x[1].window.end, x[0]))
    sent: list[tuple[str, AlignmentAlert, Any]] = []
    for alert_id, alert, body in alerts:
        try:
            sent.append((alert_id, alert, await rt.topics["alerts"].send(key=alert.fingerprint.encode(),
                                                                        value=body)))
        except Exception as err:  # noqa: BLE001 - the broker's failure must not stop the timer
            log.warning("alert %s not sent (%s); it stays in the outbox", alert_id, err)
            break  # in order: a later entry must not overtake this one
    acks = await asyncio.gather(*(fut for _, _, fut in sent), return_exceptions=True)
    acked = []
    for (alert_id, alert, _), ack in zip(sent, acks, strict=True):
        if isinstance(ack, BaseException):
            log.warning("alert %s not acknowledged (%s); it stays in the outbox", alert_id, ack)
            continue
        acked.append(alert_id)
        rt.metrics.alerts.labels(model, alert.signal, alert.classification, alert.severity, alert.status).inc()
        log.info("alert %s %s %s %s scope=%s observed=%.3f baseline=%.3f -> %s", alert.status,
                 alert.classification, alert.signal, model, alert.scope, alert.observed, alert.baseline,
                 alert.recommendation)
    if acked:
        await with_redis(rt, "ack", lambda: rt.store.ack_alerts(model, acked))
    return len(acked) == len(alerts)
