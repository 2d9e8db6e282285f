"""Event-time scenarios: live-like traffic over three models, the counts the prediction-window attribution must
produce (computed here, without the Lua), and readers of what a worker stored.

Windows belong to predictions: a prediction counts `n` in the window of its own time; an action or outcome counts
in its *prediction's* window, under the checkpoint index its age (its time minus the prediction's) falls in
(`a:<action>#<k>`, `o:<kind>#<k>`, and `m:<kind>#<k>` when the outcome's label differs from the prediction's).
A follow-up older than its kind's horizon is not in any window (`beyond` counts it).
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
import urllib.request
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

from stream.embedded import free_port
from stream.settings import ModelSettings, Settings
from stream.state import Store, WindowCounts, keys, progress
from stream.state.redis_io import sync_client
from stream.times import epoch_ms, iso_ms, minute, parse_ms, utcnow
from stream.windows import checkpoint_of
from tests.support.aio import run
from tests.support.harness import Deployment, metric_value, metrics_text, wait_for

MODELS = ("claims", "fraud", "churn")
ACTIONS = ("accept", "accept", "accept", "override", "bypass", "escalate")
LABELS = ("approve", "review")
HOUR_MS = 3600 * 1000
DAY_MS = 24 * HOUR_MS

Event = dict[str, Any]
Truth = Counter[tuple[str, int, str, str, str]]
"""(model, window start ms, model version, scope, counter) -> count, as the window hashes hold them."""


@dataclass
class Traffic:
    """Generated events of the three kinds; `in_time_order` interleaves them as a live system emits them."""

    predictions: list[Event] = field(default_factory=list)
    actions: list[Event] = field(default_factory=list)
    outcomes: list[Event] = field(default_factory=list)

    def in_time_order(self) -> list[tuple[str, Event]]:
        """(topic, event) for every event, ordered by event time (a prediction before its follow-ups)."""
        tagged = ([(parse_ms(e["ts"]), 0, "predictions", e) for e in self.predictions]
                  + [(parse_ms(e["ts"]), 1, "actions", e) for e in self.actions]
                  + [(parse_ms(e["ts"]), 2, "outcomes", e) for e in self.outcomes])
        tagged.sort(key=lambda t: (t[0], t[1]))
        return [(topic, e) for _, _, topic, e in tagged]

    def by_topic(self) -> dict[str, list[Event]]:
        return {"predictions": self.predictions, "actions": self.actions, "outcomes": self.outcomes}

    @property
    def size(self) -> int:
        return len(self.predictions) + len(self.actions) + len(self.outcomes)


def live(rng: random.Random, start_ms: int, seconds: float, rate: float, prefix: str = "",
         action_delay: tuple[float, float] = (1, 60), outcome_delay: tuple[float, float] = (60, 300),
         acted: float = 0.98, outcome: float = 0.93, slow: float = 0.0,
         slow_delay: tuple[float, float] = (86400, 10 * 86400)) -> Traffic:
    """`rate` predictions per second (Poisson arrivals) over MODELS for `seconds` from `start_ms`; a prediction is
    followed by an action `action_delay` seconds later (with probability `acted`) and by a truth outcome
    `outcome_delay` seconds later (probability `outcome`). With probability `slow` a follow-up comes
    `slow_delay` seconds later instead (days: past a checkpoint or the horizon), and is not sent if that is after
    the traffic's end (it has not happened yet). Times are whole milliseconds."""
    out = Traffic()
    t = float(start_ms)
    end = start_ms + seconds * 1000

    def after(ms: int, delay: tuple[float, float]) -> int | None:
        if slow and rng.random() < slow:
            at = ms + int(rng.uniform(*slow_delay) * 1000)
            return at if at < end else None
        return ms + int(rng.uniform(*delay) * 1000)

    i = 0
    while True:
        t += rng.expovariate(rate) * 1000
        if t >= end:
            return out
        ms = int(t)
        pid = f"{prefix}p{i}"
        label = rng.choice(LABELS)
        out.predictions.append({
            "schema_version": 1, "event_id": f"{prefix}ep{i}", "prediction_id": pid, "model": rng.choice(MODELS),
            "model_version": rng.choice(["v1", "v2"]), "ts": iso_ms(ms), "label": label,
            "band": rng.choice(["low", "high"]), "segment": {"region": rng.choice(["eu", "us", "apac"])}})
        if rng.random() < acted and (at := after(ms, action_delay)) is not None:
            out.actions.append({"schema_version": 1, "event_id": f"{prefix}ea{i}", "prediction_id": pid,
                                "ts": iso_ms(at), "action": rng.choice(ACTIONS)})
        if rng.random() < outcome and (at := after(ms, outcome_delay)) is not None:
            other = LABELS[1] if label == LABELS[0] else LABELS[0]
            out.outcomes.append({"schema_version": 1, "event_id": f"{prefix}eo{i}", "prediction_id": pid,
                                 "ts": iso_ms(at), "kind": "truth",
                                 "label": other if rng.random() < 0.15 else label})
        i += 1


@dataclass
class Expected:
    """The truth of a traffic: window counts, and the follow-ups beyond their horizon per (model, signal)."""

    counts: Truth
    beyond: Counter[tuple[str, str]]

    @property
    def models(self) -> set[str]:
        return {k[0] for k in self.counts}

    @property
    def starts(self) -> set[int]:
        return {k[1] for k in self.counts}

    def predictions_in(self, start: int) -> int:
        return sum(n for (_, s, _, scope, counter), n in self.counts.items() if s == start and not scope
                   and counter == "n")


def expected(traffic: Traffic, ms: ModelSettings | None = None) -> Expected:
    """Reference counts as the prediction-window attribution counts them, written independently of the Lua."""
    ms = ms or ModelSettings()
    size = ms.window_seconds * 1000
    ages = {"a": ms.checkpoints_ms("a"), "o": ms.checkpoints_ms("o")}
    counts: Truth = Counter()
    beyond: Counter[tuple[str, str]] = Counter()
    by_pid = {p["prediction_id"]: p for p in traffic.predictions}

    def bump(p: Event, counter: str) -> None:
        at = parse_ms(p["ts"])
        start = at - at % size
        scopes = ["", f"band={p['band']}"] + [f"{k}={v}" for k, v in sorted(p["segment"].items())]
        for scope in scopes:
            counts[(p["model"], start, p["model_version"], scope, counter)] += 1

    def checkpoint(p: Event, e: Event, kind: str, signal: str) -> int | None:
        k = checkpoint_of(parse_ms(e["ts"]) - parse_ms(p["ts"]), ages[kind])
        if k is None:
            beyond[(p["model"], signal)] += 1
        return k

    for p in traffic.predictions:
        bump(p, "n")
    for a in traffic.actions:
        p = by_pid[a["prediction_id"]]
        if (k := checkpoint(p, a, "a", "actions")) is not None:
            bump(p, f"a:{a['action']}#{k}")
    for o in traffic.outcomes:
        p = by_pid[o["prediction_id"]]
        if (k := checkpoint(p, o, "o", "outcomes")) is not None:
            bump(p, f"o:{o['kind']}#{k}")
            if o["label"] != p["label"]:
                bump(p, f"m:{o['kind']}#{k}")
    return Expected(counts, beyond)


# --- what the worker stored ---------------------------------------------------------------------------------

@dataclass
class Stored:
    """Window counts read from Redis (summed over buckets) and each window's late counts by stage kind."""

    counts: Truth
    late: dict[tuple[str, int], dict[str, int]]


def read_windows(settings: Settings, models: Iterable[str], starts: Iterable[int]) -> Stored:
    """Plain reads of the window hashes keys.py names, without closing anything."""
    store = Store.from_settings(settings)
    models, starts = sorted(models), sorted(starts)

    async def go() -> Stored:
        got: Truth = Counter()
        late: dict[tuple[str, int], dict[str, int]] = {}
        async with store.redis.pipeline(transaction=False) as pipe:
            for model in models:
                for start in starts:
                    for b in range(settings.state_buckets):
                        pipe.hgetall(keys.window_counts(b, model, start))
            replies = iter(await pipe.execute())
        for model in models:
            for start in starts:
                wc = WindowCounts()
                for _ in range(settings.state_buckets):
                    wc.merge([x for kv in next(replies).items() for x in kv])
                for (version, scope, counter), n in wc.counts.items():
                    got[(model, start, version, scope, counter)] += n
                if any(wc.late.values()):
                    late[(model, start)] = dict(wc.late)
        return Stored(got, late)

    return run(go(), store)


def judged_until(settings: Settings, model: str) -> int | None:
    """The due time (ms) of the last (window, stage) the model's evaluator judged, or None before the first.

    The model state's `closed` field holds the stage cursor `<due>:<order>`; the layout before stages held the
    end of the last closed window, which is the due time of that window's predictions stage, so both read as a
    due time and a test waiting for a window's predictions to be judged reads the same on either."""
    store = Store.from_settings(settings)

    async def go() -> Any:
        return await store.redis.hget(keys.model_state(model), "closed")

    raw = run(go(), store)
    if not raw:
        return None
    return int(bytes(raw).decode().partition(":")[0])


def applied_per_topic(settings: Settings) -> Counter[str]:
    """Next offsets Redis holds, summed per topic (short name: predictions, actions, outcomes, annotations)."""
    store = Store.from_settings(settings)
    names = {getattr(settings.topics, t): t for t in ("predictions", "actions", "outcomes", "annotations")}

    out: Counter[str] = Counter()
    for (topic, _), value in run(store.applied(), store).items():
        if topic in names:
            out[names[topic]] += value
    return out


def end_offsets(dep: Deployment, topics: Iterable[str] = ("predictions", "actions", "outcomes")) -> Counter[str]:
    """The broker's end offsets summed per topic (short name): the messages on it, from a fresh topic.

    Read, not asked: Tansu answers ListOffsets with the first offset of a partition's last record batch, plus one,
    so each partition is read from there to its end (EOF) and its last offset taken."""
    consumer = Consumer({"bootstrap.servers": dep.stack.bootstrap_servers, "group.id": "end-offsets",
                         "enable.auto.commit": False, "enable.partition.eof": True})
    ends: dict[tuple[str, int], int] = {}
    try:
        assign = []
        for topic in topics:
            name = dep.topic(topic)
            for p in consumer.list_topics(name, timeout=10).topics[name].partitions:
                listed = consumer.get_watermark_offsets(TopicPartition(name, p), timeout=10)[1]
                ends[(name, p)] = listed
                assign.append(TopicPartition(name, p, max(0, listed - 1)))
        consumer.assign(assign)
        open_ = set(ends)
        deadline = time.monotonic() + 60
        while open_ and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            tp = (msg.topic(), msg.partition())
            if msg.error() is None:
                ends[tp] = max(ends[tp], msg.offset() + 1)
            elif msg.error().code() == KafkaError._PARTITION_EOF:
                open_.discard(tp)
        assert not open_, f"partitions without an end after 60 s: {sorted(open_)}"
    finally:
        consumer.close()
    out: Counter[str] = Counter()
    for (name, _), n in ends.items():
        out[name.rpartition(".")[2]] += n
    return out


def late_events(dep: Deployment, ports: Iterable[int]) -> Counter[str]:
    """Events the workers on `ports` counted late, per signal (predictions, actions, outcomes), by either metric
    that counts them (per topic and result, or per model and signal)."""
    out: Counter[str] = Counter()
    for port in ports:
        text = metrics_text(port)
        for signal in ("predictions", "actions", "outcomes"):
            out[signal] += int(metric_value(text, "trustgap_events_total", topic=dep.topic(signal), result="late")
                               + metric_value(text, "trustgap_late_events_total", signal=signal))
    return +out


def describe(truth: Truth, got: Truth, late: dict[tuple[str, int], dict[str, int]] | None = None,
             show: int = 6) -> str:
    """How the stored counts differ from the truth: predictions, actions and outcomes counted of the truth's, in
    all and in the first `show` windows that differ (model scope, every checkpoint), e.g.
    `fraud 2026-11-20 18:00: 2102 of 6433 predictions, 33 of 6300 actions, 27 of 6000 outcomes`."""
    def totals(c: Truth) -> Counter[tuple[str, int, str]]:
        out: Counter[tuple[str, int, str]] = Counter()
        for (model, start, _, scope, counter), n in c.items():
            signal = {"n": "predictions", "a": "actions", "o": "outcomes"}.get(counter.split(":", 1)[0])
            if signal and not scope:
                out[(model, start, signal)] += n
        return out

    def line(want: int, have: int, what: str) -> str:
        return f"{have} of {want} {what}"

    want, have = totals(truth), totals(got)
    signals = ("predictions", "actions", "outcomes")
    whole = ", ".join(line(sum(n for k, n in want.items() if k[2] == s), sum(n for k, n in have.items()
                                                                             if k[2] == s and k in want), s)
                      for s in signals)
    differ = sorted({k[:2] for k in set(truth) | set(got) if truth.get(k) != got.get(k)})
    lines = []
    for model, start in differ[:show]:
        parts = ", ".join(line(want[(model, start, s)], have[(model, start, s)], s) for s in signals)
        extra = f" (late {late[(model, start)]})" if late and (model, start) in late else ""
        lines.append(f"{model} {minute(start)}: {parts}{extra}")
    more = f"; and {len(differ) - show} more windows" if len(differ) > show else ""
    missing, double = sum((truth - got).values()), sum((got - truth).values())
    return (f"{len(differ)} windows differ ({missing} counts missing, {double} extra or misnamed); in all windows "
            f"{whole}; " + "; ".join(lines) + more)


# --- sending ------------------------------------------------------------------------------------------------

def produce(dep: Deployment, events: Iterable[tuple[str, Event]], partitions: int | None = None) -> Counter[str]:
    """Single-event messages keyed by prediction_id, in the order given, from one plain producer; returns the
    messages sent per topic. `partitions`: only the first that many partitions of each topic get any (by a hash
    of the key), so the others stay empty."""
    producer = Producer({"bootstrap.servers": dep.stack.bootstrap_servers, "linger.ms": 5})
    sent: Counter[str] = Counter()
    for topic, event in events:
        value, key = orjson.dumps(event), event["prediction_id"].encode()
        where = {} if partitions is None else {"partition": zlib.crc32(key) % partitions}
        while True:
            try:
                producer.produce(dep.topic(topic), value=value, key=key, **where)
                break
            except BufferError:
                producer.poll(0.1)
        sent[topic] += 1
    assert producer.flush(60) == 0, "messages left undelivered"
    return sent


def write_jsonl(path: Path, events: Iterable[tuple[str, Event]]) -> Path:
    """The events as a `trustgap replay` file: one contract event per line."""
    with path.open("wb") as f:
        for _, event in events:
            f.write(orjson.dumps(event) + b"\n")
    return path


def chunks(events: list[tuple[str, Event]], n: int) -> Iterator[list[tuple[str, Event]]]:
    for i in range(0, len(events), n):
        yield events[i:i + n]


def start_together(dep: Deployment, n: int) -> list[subprocess.Popen[bytes]]:
    """Start `n` workers of the deployment at once (Deployment.start_worker waits for each before the next), so
    they join the group together; returns them once every one serves its web endpoint."""
    procs = []
    for _ in range(n):
        port = free_port()
        env = {**os.environ, **dep.env, "TRUSTGAP_WEB_PORT": str(port), "TRUSTGAP_WEB_HOST": "127.0.0.1"}
        with (dep.logdir / f"{dep.name}-worker{len(dep.workers)}.log").open("ab") as out:
            proc = subprocess.Popen([sys.executable, "-m", "stream.cli", "worker", "--loglevel", "info"], env=env,
                                    stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        proc.web_port = port  # type: ignore[attr-defined]
        dep.workers.append(proc)  # stopped with the deployment
        procs.append(proc)
    for proc in procs:
        wait_for(lambda p=proc: _serves(p.web_port) or p.poll() is not None, 60,  # type: ignore[misc]
                 what="worker web endpoint")
        assert proc.poll() is None, f"worker exited with {proc.returncode}"
    return procs


def _serves(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


# --- the outage of a live hour, and waiting for it to be counted --------------------------------------------

OUTAGE_RATE = 10.0  # predictions/s: ~36k predictions and ~105k messages in the hour, several fetches per partition


def outage_traffic(seed: int, rate: float = OUTAGE_RATE) -> tuple[Traffic, int]:
    """An hour of live-stamped traffic from 40 min before an hour boundary to 20 min after it, ending at least
    five minutes before now; returns it and the boundary. Once it is all read, the watermark (its newest time
    minus the 10 min lateness) is past the boundary: the first window's predictions are due, nothing else is."""
    now = epoch_ms(utcnow())
    boundary = (now - 30 * 60 * 1000) - (now - 30 * 60 * 1000) % HOUR_MS
    return live(random.Random(seed), boundary - 40 * 60 * 1000, 3600, rate), boundary


def caught_up(dep: Deployment, timeout: float) -> None:
    """Wait until Redis holds, for every event topic, the offsets past every message on it."""
    ends = end_offsets(dep)
    wait_for(lambda: all(applied_per_topic(dep.settings)[t] >= n for t, n in ends.items()), timeout, 0.5,
             what=f"the offsets of {dict(ends)} messages applied")


def applied(dep: Deployment) -> int:
    """Messages of the event topics applied so far (the offsets Redis holds)."""
    return sum(n for t, n in applied_per_topic(dep.settings).items() if t != "annotations")


def judged(dep: Deployment, models: tuple[str, ...], until: int, timeout: float = 60) -> None:
    """Wait until every model's predictions stage of the windows ending by `until` is judged."""
    try:
        wait_for(lambda: all((judged_until(dep.settings, m) or 0) >= until for m in models), timeout, 0.3,
                 what=f"the windows ending by {until} judged for their predictions")
    except AssertionError as err:
        raise AssertionError(f"{err}; {progress_report(dep)}") from None


def progress_report(dep: Deployment) -> str:
    """What the watermark was made of, for a failure message: each partition's event time and idleness."""
    settings = dep.settings
    buckets = settings.state_buckets if settings.redis_cluster else 0
    with sync_client(settings) as r:
        pipe = r.pipeline(transaction=False)
        progress.queue_read(pipe, [], buckets)
        times = progress.parse_read([], pipe.execute(), buckets).event_time
        idle = sorted(k.decode() for k in r.scan_iter(match=f"{keys.IDLE_PREFIX}*"))
    judged_ = {m: judged_until(settings, m) for m in MODELS}
    return f"partition event times {times}, idle {idle}, judged until {judged_}"


def assert_exact(dep: Deployment, truth: Expected, ports: list[int], late_before: Counter[str] | None = None
                 ) -> None:
    """Every window of the truth holds exactly its counts, no window counted a late event, and no worker did
    (`late_before`: what workers that are gone counted)."""
    stored = read_windows(dep.settings, truth.models, truth.starts)
    late = late_events(dep, ports) + (late_before or Counter())
    assert stored.counts == truth.counts, f"{describe(truth.counts, stored.counts, stored.late)}; late {dict(late)}"
    assert stored.late == {}
    assert not late
