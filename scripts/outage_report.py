"""Measure a worker's catch-up after an outage on two versions of trustgap, side by side on the same events: the
window before the outage's hour boundary, counted against the truth, and the events each version counted late.

    python scripts/outage_report.py [--checkout DIR_OR_REV ...] [--seed 7] [--rate 20] [--partitions 8]

The traffic is an hour of live-like events from this script's own seeded generator (never stream.simulate, so both
versions get exactly the same events): `--rate` predictions per second (Poisson arrivals) spread over three models,
each followed by a human action 1-60 s later and a truth outcome 1-5 min later; event times are the wall clock,
the hour running from 40 min before an hour boundary to 20 min after it and its last event at least 5 min before
the script started. Messages are single events keyed by prediction_id, sent in event-time order to the topics the
version's settings name, as a live producer would have sent them while no worker ran.

Per `--checkout` (a directory holding a trustgap tree, or a git revision, checked out into a temporary worktree
that is removed at the end; default: 3a08324, the code before event time was rebuilt, and this tree), in order:
a fresh embedded broker and Redis (this tree's stream.embedded: the harness, not what is measured); the topics,
created by that version's own `ensure_topics` with `--partitions` partitions (default 8, both versions'
`topic_partitions` default, so the worker needs no partition setting); the hour produced with no worker running;
then `python -m stream.cli worker` from the checkout (cwd and PYTHONPATH), with only the broker and Redis URLs and
a free web port set (and TMPDIR, so that Faust's data directory is the run's own). The worker has caught up when
the consumer group's committed offsets reach the ends the producer was acknowledged, `trustgap_events_total`
covers every message sent and has stopped moving, and `trustgap status --json` lists the window before the
boundary for every model.

What is read is public: the window's counts from `trustgap status --json` (predictions; actions as the override
rate's trials; outcomes as the outcome mismatch's trials), the late counts from /metrics. A follow-up belongs to
a different window in each version: the old code counted it in the window of its own timestamp, the new code in
its prediction's window. Each version's counts are set against the truth of its own definition.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from stream.embedded import StackInfo, free_port, running_stack, stop  # noqa: E402

OLD_REV = "3a08324"  # the last commit whose watermark was the newest event seen, minus the lateness
HOUR = 3_600_000
MINUTE = 60_000
MODELS = ("claims", "fraud", "churn")
REGIONS = ("eu", "us", "apac")
LABELS = ("approve", "review")
ACTIONS = (("accept", 0.80), ("override", 0.12), ("bypass", 0.05), ("escalate", 0.03))
KINDS = ("predictions", "actions", "outcomes")
POLL_S = 5.0
Samples = dict[str, list[tuple[dict[str, str], float]]]
"""A /metrics page: sample name -> [(labels, value)]."""


# --- the traffic and its truth ---------------------------------------------------------------------------------

@dataclass(slots=True)
class Traffic:
    """Messages in event-time order, (topic kind, key, value), and the truth about the window before the boundary."""

    boundary: int
    messages: list[tuple[str, bytes, bytes]] = field(default_factory=list)
    sent: Counter[str] = field(default_factory=Counter)
    predictions: int = 0                                           # predictions in the window
    by_prediction: Counter[str] = field(default_factory=Counter)   # follow-ups of the window's predictions
    by_own_time: Counter[str] = field(default_factory=Counter)     # follow-ups whose own ts is in the window

    @property
    def window(self) -> tuple[int, int]:
        return self.boundary - HOUR, self.boundary


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


def generate(seed: int, rate: float, boundary: int) -> Traffic:
    """An hour from `boundary` - 40 min, `rate` predictions/s, each with one action and one truth outcome."""
    rng = random.Random(seed)
    out = Traffic(boundary)
    lo, hi = out.window
    timed: list[tuple[int, int, str, bytes, dict[str, Any]]] = []
    start, end = boundary - 40 * MINUTE, boundary + 20 * MINUTE
    t, i = float(start), 0
    actions, weights = [a for a, _ in ACTIONS], [w for _, w in ACTIONS]
    while True:
        t += rng.expovariate(rate) * 1000
        if t >= end:
            break
        ms, pid = int(t), f"p{i}"
        key = pid.encode()
        label = rng.choice(LABELS)
        acted = ms + int(rng.uniform(1, 60) * 1000)
        known = ms + int(rng.uniform(60, 300) * 1000)
        timed.append((ms, 3 * i, "predictions", key, {
            "schema_version": 1, "event_id": f"ep{i}", "prediction_id": pid, "model": rng.choice(MODELS),
            "model_version": "v1", "ts": iso(ms), "label": label, "score": round(rng.random(), 3),
            "segment": {"region": rng.choice(REGIONS)}}))
        timed.append((acted, 3 * i + 1, "actions", key, {
            "schema_version": 1, "event_id": f"ea{i}", "prediction_id": pid, "ts": iso(acted),
            "action": rng.choices(actions, weights)[0]}))
        other = LABELS[1] if label == LABELS[0] else LABELS[0]
        timed.append((known, 3 * i + 2, "outcomes", key, {
            "schema_version": 1, "event_id": f"eo{i}", "prediction_id": pid, "ts": iso(known), "kind": "truth",
            "label": other if rng.random() < 0.1 else label}))
        if lo <= ms < hi:
            out.predictions += 1
            out.by_prediction.update(("actions", "outcomes"))
        out.by_own_time.update(k for k, at in (("actions", acted), ("outcomes", known)) if lo <= at < hi)
        i += 1
    timed.sort(key=lambda e: (e[0], e[1]))
    out.messages = [(kind, key, json.dumps(event, separators=(",", ":")).encode()) for _, _, kind, key, event in timed]
    out.sent = Counter(kind for kind, _, _ in out.messages)
    return out


def pick_boundary(now_ms: int) -> int:
    """The latest hour boundary whose traffic (its last outcome at most 25 min after it) ends 5 min before now."""
    return (now_ms - 30 * MINUTE) // HOUR * HOUR


# --- one version -----------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Version:
    """A checkout of trustgap to run, and what it calls itself."""

    path: Path
    label: str


@dataclass(slots=True)
class Measured:
    """What one version reported once it had caught up."""

    version: Version
    by_prediction: bool                              # follow-ups counted in their prediction's window
    predictions: int
    actions: int
    outcomes: int
    events: dict[tuple[str, str], int]               # (topic kind, result) -> trustgap_events_total
    late_by_signal: dict[str, int] | None            # trustgap_late_events_total (all windows), where it exists
    window_late: dict[str, int] | None               # the window's own late counts in `status --json`, likewise
    produce_s: float
    catch_up_s: float


def child_env(version: Version, stack: StackInfo, tmp: Path, **settings: str) -> dict[str, str]:
    """The environment of a process of `version`: no TRUSTGAP_* from ours, the stack's URLs and `settings`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRUSTGAP_")}
    env.update(PYTHONPATH=str(version.path), TMPDIR=str(tmp), TRUSTGAP_BROKER_URL=stack.broker_url,
               TRUSTGAP_REDIS_URL=stack.redis_url)
    env.update({f"TRUSTGAP_{k.upper()}": v for k, v in settings.items()})
    return env


_CREATE_TOPICS = """
import json
from stream.admin import ensure_topics
from stream.settings import ModelSettings, Settings
s = Settings()
ensure_topics(s)
print(json.dumps({"topics": s.topics.model_dump(), "app_id": s.app_id,
                  "default_partitions": Settings.model_fields["topic_partitions"].default,
                  "by_prediction": "checkpoints_seconds" in ModelSettings.model_fields}))
"""


def create_topics(version: Version, env: dict[str, str]) -> dict[str, Any]:
    """Create the topics with the version's own code; returns its topic names, app id, partition default, and
    whether it counts a follow-up in its prediction's window (it has follow-up checkpoints)."""
    out = subprocess.run([sys.executable, "-c", _CREATE_TOPICS], cwd=version.path, env=env, capture_output=True,
                         text=True, timeout=120)
    if out.returncode != 0:
        raise RuntimeError(f"{version.label}: creating the topics failed: {out.stderr.strip()[-2000:]}")
    info: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return info


def produce(stack: StackInfo, topics: dict[str, str], traffic: Traffic) -> dict[tuple[str, int], int]:
    """Send the traffic in order; returns each partition's end as the broker acknowledged it."""
    ends: dict[tuple[str, int], int] = {}
    failed: list[str] = []

    def delivered(err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            failed.append(str(err))
            return
        tp = (msg.topic() or "", msg.partition() or 0)
        ends[tp] = max(ends.get(tp, 0), (msg.offset() or 0) + 1)

    producer = Producer({"bootstrap.servers": stack.bootstrap_servers, "linger.ms": 20})
    for n, (kind, key, value) in enumerate(traffic.messages):
        while True:
            try:
                producer.produce(topics[kind], value=value, key=key, on_delivery=delivered)
                break
            except BufferError:
                producer.poll(0.1)
        if n % 10_000 == 0:
            producer.poll(0)
    left = producer.flush(300)
    if left or failed:
        raise RuntimeError(f"{left} messages undelivered, {len(failed)} failed (first: {failed[:1]})")
    return ends


def scrape(port: int) -> Samples:
    """The worker's /metrics: sample name -> [(labels, value)]."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def events_by_result(metrics: Samples, topics: dict[str, str]) -> dict[tuple[str, str], int]:
    """trustgap_events_total by (topic kind, result)."""
    kind_of = {name: kind for kind, name in topics.items()}
    out: Counter[tuple[str, str]] = Counter()
    for labels, value in metrics.get("trustgap_events_total", []):
        out[(kind_of.get(labels["topic"], labels["topic"]), labels["result"])] += int(value)
    return dict(out)


def committed_to_end(group: str, stack: StackInfo, ends: dict[tuple[str, int], int]) -> bool:
    """Whether the consumer group committed every partition to the end the producer was acknowledged."""
    consumer = Consumer({"bootstrap.servers": stack.bootstrap_servers, "group.id": group,
                         "enable.auto.commit": False, "log_level": 0})
    try:
        got = consumer.committed([TopicPartition(t, p) for t, p in ends], timeout=10)
    except KafkaException:
        return False
    finally:
        consumer.close()
    return all(tp.error is None and tp.offset >= ends[(tp.topic, tp.partition)] for tp in got)


def status(version: Version, env: dict[str, str]) -> dict[str, Any] | None:
    """`trustgap status --json` of the version, or None when it failed."""
    out = subprocess.run([sys.executable, "-m", "stream.cli", "status", "--json", "--windows", "48"],
                         cwd=version.path, env=env, capture_output=True, text=True, timeout=180)
    if out.returncode != 0:
        return None
    doc: dict[str, Any] = json.loads(out.stdout)
    return doc


def window_of(doc: dict[str, Any], start: int) -> dict[str, dict[str, Any]]:
    """Per model, the status window that starts at `start` (epoch ms)."""
    out = {}
    for model in doc.get("models", []):
        for w in model.get("windows", []):
            if int(datetime.fromisoformat(w["start"]).timestamp() * 1000) == start:
                out[model["model"]] = w
    return out


@contextmanager
def worker(version: Version, env: dict[str, str], log: Path) -> Iterator[int]:
    """Run the version's worker as a user would; yields its web port once /metrics answers."""
    port = free_port()
    with log.open("ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "stream.cli", "worker"], cwd=version.path,
                                env={**env, "TRUSTGAP_WEB_PORT": str(port)}, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{version.label}: the worker exited with {proc.returncode}; see {log}")
            try:
                scrape(port)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{version.label}: no /metrics after 120 s; see {log}") from None
                time.sleep(0.5)
        yield port
    finally:
        stop(proc, 30)


def measure(version: Version, traffic: Traffic, partitions: int, timeout: float, say: Console) -> Measured:
    """Produce the hour into a fresh stack, start the version's worker, and read it once it has caught up."""
    with tempfile.TemporaryDirectory(prefix="outage-") as tmp_name:
        tmp = Path(tmp_name)
        with running_stack(tmp / "stack", appendonly=False) as stack:
            env = child_env(version, stack, tmp)
            info = create_topics(version, {**env, "TRUSTGAP_TOPIC_PARTITIONS": str(partitions)})
            if partitions != info["default_partitions"]:
                env["TRUSTGAP_TOPIC_PARTITIONS"] = str(partitions)  # the worker declares its topics with it
            topics = {kind: info["topics"][kind] for kind in KINDS}
            t0 = time.monotonic()
            ends = produce(stack, topics, traffic)
            produce_s = time.monotonic() - t0
            say.print(f"[dim]{version.label}: {len(traffic.messages):,} messages sent in {produce_s:.0f} s; "
                      "worker starting[/]")
            log = tmp / "worker.log"
            t0 = time.monotonic()
            try:
                with worker(version, env, log) as port:
                    metrics, doc = wait_caught_up(version, env, port, info["app_id"], stack, ends, topics, traffic,
                                                  timeout, say)
            except BaseException:
                tail = log.read_text(errors="replace").splitlines()[-40:] if log.exists() else []
                say.print(f"[red]{version.label}: failed; the worker log ends with:[/]\n" + "\n".join(tail))
                raise
            return read_result(version, info["by_prediction"], metrics, doc, topics, traffic, produce_s,
                               time.monotonic() - t0)


def wait_caught_up(version: Version, env: dict[str, str], port: int, group: str, stack: StackInfo,
                   ends: dict[tuple[str, int], int], topics: dict[str, str], traffic: Traffic, timeout: float,
                   say: Console) -> tuple[Samples, dict[str, Any]]:
    """Poll until every message was consumed and counted (stable) and the window was judged for every model."""
    start = traffic.window[0]
    deadline = time.monotonic() + timeout
    before: dict[tuple[str, str], int] | None = None
    last_note = 0.0
    while True:
        metrics = scrape(port)
        events = events_by_result(metrics, topics)
        seen = Counter({kind: sum(n for (k, _), n in events.items() if k == kind) for kind in KINDS})
        covered = all(seen[k] >= traffic.sent[k] for k in KINDS)
        committed = covered and committed_to_end(group, stack, ends)
        doc = status(version, env) if committed else None
        judged = doc is not None and set(window_of(doc, start)) >= set(MODELS)
        if judged and events == before and doc is not None:
            return metrics, doc
        before = events if committed else None
        if time.monotonic() > deadline:
            raise RuntimeError(f"{version.label}: not caught up after {timeout:g} s: counted {dict(seen)} of "
                               f"{dict(traffic.sent)}, committed to the end: {committed}, window judged: {judged}")
        if time.monotonic() - last_note > 60:
            last_note = time.monotonic()
            say.print(f"[dim]{version.label}: counted {sum(seen.values()):,} of {len(traffic.messages):,} "
                      f"events; committed to the end: {committed}; window judged: {judged}[/]")
        time.sleep(POLL_S)


def read_result(version: Version, by_prediction: bool, metrics: Samples, doc: dict[str, Any],
                topics: dict[str, str], traffic: Traffic, produce_s: float, catch_up_s: float) -> Measured:
    windows = window_of(doc, traffic.window[0]).values()

    def trials(signal_name: str) -> int:
        return sum(int(w["signals"].get(signal_name, {}).get("n") or 0) for w in windows)

    late_by_signal = None
    if "trustgap_late_events_total" in metrics:
        late_by_signal = dict.fromkeys(KINDS, 0)
        for labels, value in metrics["trustgap_late_events_total"]:
            late_by_signal[labels["signal"]] = late_by_signal.get(labels["signal"], 0) + int(value)
    window_late = None
    if all("late" in w for w in windows):
        window_late = {k: sum(int(w["late"].get(k, 0)) for w in windows) for k in KINDS}
    return Measured(version, by_prediction, sum(int(w["predictions"]) for w in windows), trials("override_rate"),
                    trials("outcome_mismatch"), events_by_result(metrics, topics), late_by_signal, window_late,
                    produce_s, catch_up_s)


# --- checkouts -------------------------------------------------------------------------------------------------

def describe(path: Path) -> str:
    out = subprocess.run(["git", "-C", str(path), "describe", "--always", "--dirty", "--abbrev=7"],
                         capture_output=True, text=True)
    return out.stdout.strip() or path.name


def checkouts(specs: Sequence[str], stack: ExitStack, tmp: Path) -> list[Version]:
    """A directory as it is; anything else a git revision of this repository, checked out into a worktree that
    `stack` removes."""
    versions = []
    for i, spec in enumerate(specs):
        path = Path(spec)
        if path.is_dir():
            versions.append(Version(path.resolve(), f"{describe(path)} ({path.resolve()})"))
            continue
        tree = tmp / f"checkout{i}"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "--quiet", str(tree), spec],
                       check=True)
        stack.callback(subprocess.run, ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)],
                       check=False)
        versions.append(Version(tree, describe(tree)))
    return versions


# --- the report ------------------------------------------------------------------------------------------------

def of(got: int, want: int) -> str:
    return f"{got:,} of {want:,} ({100 * got / want:.1f}%)" if want else f"{got:,} of 0"


def report(traffic: Traffic, results: Sequence[Measured], say: Console) -> None:
    lo, hi = traffic.window
    table = Table(title=f"window {iso(lo)[:16]}-{iso(hi)[11:16]} UTC, the hour before the boundary; "
                        f"traffic {iso(hi - 40 * MINUTE)[11:16]}-{iso(hi + 20 * MINUTE)[11:16]}")
    table.add_column("")
    for m in results:
        table.add_column(m.version.label, justify="right")

    def follow_ups(m: Measured, kind: str) -> str:
        truth = traffic.by_prediction if m.by_prediction else traffic.by_own_time
        return of(getattr(m, kind), truth[kind]) + (" (2)" if m.by_prediction else " (1)")

    def missing(m: Measured) -> dict[str, int]:
        truth = traffic.by_prediction if m.by_prediction else traffic.by_own_time
        return {"predictions": traffic.predictions - m.predictions, "actions": truth["actions"] - m.actions,
                "outcomes": truth["outcomes"] - m.outcomes}

    def three(counts: dict[str, int] | None) -> str:
        return "-" if counts is None else " / ".join(f"{counts.get(k, 0):,}" for k in KINDS)

    table.add_row("predictions counted", *(of(m.predictions, traffic.predictions) for m in results))
    table.add_row("actions counted", *(follow_ups(m, "actions") for m in results))
    table.add_row("outcomes counted", *(follow_ups(m, "outcomes") for m in results))
    table.add_row("missing from the window p / a / o", *(three(missing(m)) for m in results))
    table.add_row("late p / a / o, events_total{result=late} (3)",
                  *(three({k: m.events.get((k, "late"), 0) for k in KINDS}) for m in results))
    table.add_row("late p / a / o, late_events_total", *(three(m.late_by_signal) for m in results))
    table.add_row("late p / a / o in this window (status)", *(three(m.window_late) for m in results))
    table.add_row("sending the hour / catching up", *(f"{m.produce_s:.0f} s / {m.catch_up_s:.0f} s" for m in results))
    say.print(table)
    say.print(f"(1) a version without follow-up checkpoints counts a follow-up in the window of its own timestamp "
              f"(truth: {traffic.by_own_time['actions']:,} actions, {traffic.by_own_time['outcomes']:,} outcomes "
              "with their timestamp in the window)")
    say.print(f"(2) a version with them counts it in its prediction's window (truth: "
              f"{traffic.by_prediction['actions']:,} actions, {traffic.by_prediction['outcomes']:,} outcomes of the "
              "window's predictions), as `status` shows it: the follow-ups counted by the time the window's "
              "predictions were judged")
    say.print("(3) by the topic of the message whose apply counted it: a follow-up parked before its prediction "
              "came is counted `pending` on its own topic, then `applied` or `late` on the predictions topic when "
              "the prediction drains it (trustgap_late_events_total is by the event's own kind)")

    results_table = Table(title="trustgap_events_total by topic and result (every window)")
    results_table.add_column("topic")
    results_table.add_column("result")
    for m in results:
        results_table.add_column(m.version.label, justify="right")
    keys = sorted({k for m in results for k in m.events if k[0] in KINDS},
                  key=lambda k: (KINDS.index(k[0]), k[1]))
    for kind, result in keys:
        results_table.add_row(kind, result, *(f"{m.events.get((kind, result), 0):,}" for m in results))
    say.print(results_table)
    say.print("sent: " + ", ".join(f"{traffic.sent[k]:,} {k}" for k in KINDS) + "; the predictions topic's "
              "results include the follow-ups its predictions drained, see (3)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkout", action="append", metavar="DIR_OR_REV",
                    help=f"a trustgap tree or a git revision; repeatable (default: {OLD_REV} and this tree)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--rate", type=float, default=20.0, help="predictions per second (default 20)")
    ap.add_argument("--partitions", type=int, default=8, help="partitions of every topic (default 8)")
    ap.add_argument("--timeout", type=float, default=1800.0, help="longest catch-up per version, seconds")
    args = ap.parse_args()
    # Stop the broker, Redis, the worker and the worktrees on `kill` as on Ctrl-C: the finally blocks run.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    say = Console()
    if not say.is_terminal:
        say = Console(width=132)  # rich's 80 columns would fold the table when the output is a file
    now = int(time.time() * 1000)
    traffic = generate(args.seed, args.rate, pick_boundary(now))
    say.print(f"seed {args.seed}: {len(traffic.messages):,} events from {iso(traffic.boundary - 40 * MINUTE)} to "
              f"{iso(traffic.boundary + 20 * MINUTE)}; boundary {iso(traffic.boundary)}; "
              f"{traffic.predictions:,} predictions in the window before it")
    results = []
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="outage-checkouts-")))
        for version in checkouts(args.checkout or [OLD_REV, str(ROOT)], stack, tmp):
            results.append(measure(version, traffic, args.partitions, args.timeout, say))
    report(traffic, results, say)
    return 0


if __name__ == "__main__":
    sys.exit(main())
