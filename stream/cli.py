"""The `trustgap` command: up/down the embedded stack, run a worker, simulate, show status, run the demo.

Exit codes: 0 ok, 1 runtime failure (broker or Redis unreachable, delivery failed, the web port held by another
process), 2 bad usage or bad config (also a password, CA or protocol the broker or Redis refused: no retry helps
until a setting changes), 3 `replay` sent the good lines but some lines were invalid, 130 interrupted (Ctrl-C).
Errors are one line without a traceback, saying what to fix.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import BrokerUnreachable, CliError, ClientError, ConfigError, OldLayout, RedisUnreachable, TrustgapError
from .settings import Settings, load
from .times import epoch_ms, minute, parse_ms, utcnow

if TYPE_CHECKING:
    from .overview import ModelOverview, Rate, WindowRow

STATE_DIR_ENV = "TRUSTGAP_STATE_DIR"

def state_dir() -> Path:
    return Path(os.environ.get(STATE_DIR_ENV, ".trustgap"))


def settings_from(args: argparse.Namespace) -> Settings:
    """Settings from --config / TRUSTGAP_CONFIG and env, falling back to the embedded stack's addresses."""
    from .embedded import read_stack

    config = getattr(args, "config", None) or os.environ.get("TRUSTGAP_CONFIG")
    stack = read_stack(state_dir()) or {}
    fallback: dict[str, Any] = {k: stack[k] for k in ("broker_url", "redis_url") if k in stack}
    return load(config, fallback=fallback)  # a ConfigError exits with 2 (see exit_code)


# --- commands ---------------------------------------------------------------------------------------------------

def cmd_up(args: argparse.Namespace) -> int:
    from .embedded import up

    info = up(state_dir())
    print(f"broker {info['broker_url']}  redis {info['redis_url']}  (state in {state_dir()}/stack.json)")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    from .embedded import down

    print("stopped the embedded stack" if down(state_dir()) else "nothing was running")
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    from . import preflight
    from .admin import ensure_topics

    # Before Faust starts: past this point a refused password or a taken port ends in a traceback, not a line.
    preflight.check_web_port(settings)
    preflight.check_broker(settings)
    preflight.check_session_timeout(settings)
    # every check before the first change: a wrong Redis setting then leaves the topics as they were, and no
    # librdkafka client but the checks' silent ones has lived to print its teardown lines under the one line
    _check_redis(settings)
    try:
        ensure_topics(settings)
    except BrokerUnreachable as err:
        raise BrokerUnreachable(f"{err}; check broker_url / TRUSTGAP_BROKER_URL") from None
    from .app import create_app
    from .faust_patches import Worker

    app = create_app(settings)
    # Parsed batches allocate tens of thousands of short-lived objects, and with CPython's default settings the
    # collections they trigger keep walking the long-lived Faust/aiokafka objects. Freezing those (they are set up
    # by now) and collecting the older generations less often took batched throughput from 32.5k to 48.9k ev/s
    # in bench/run.py; the young-generation threshold itself mattered little (700, 5k and 20k measured alike).
    # scipy.stats (the exact tests' tails; scipy.special with it) costs ~1 s of CPU to import: here, before the
    # freeze, so its objects are frozen too. Imported in a thread while the worker joined its group instead, it
    # overlapped the first second of consumption once the join takes less than the import (NoTables), slowing
    # a backlog's first events (the single-event bench figure fell by a quarter).
    importlib.import_module("scipy.stats")
    gc.freeze()
    gc.set_threshold(settings.gc_threshold, 50, 1000)
    worker = Worker(app, loglevel=args.loglevel, quiet=True, redirect_stdouts=False)
    worker.execute_from_commandline()
    return 0


def _check_redis(settings: Settings) -> None:
    """Redis answers, and holds no state of an older layout (an empty Redis gets the current layout's mark)."""
    from . import preflight
    from .state import keys
    from .state.redis_io import UNAVAILABLE

    try:
        with preflight.check_redis(settings) as client:
            # the mark goes in only where no trustgap state is: state without it was written by an older version
            found = client.get(keys.LAYOUT)
            if found is None and not client.exists(keys.MODELS, keys.OFFSETS):
                client.set(keys.LAYOUT, keys.LAYOUT_VERSION, nx=True)
                found = client.get(keys.LAYOUT)
    except UNAVAILABLE as err:
        raise RedisUnreachable(f"redis unreachable ({type(err).__name__}); check redis_url / TRUSTGAP_REDIS_URL"
                               ) from None
    if found is None or found.decode() != keys.LAYOUT_VERSION:
        raise OldLayout(f"redis holds trustgap state of layout {found.decode() if found else 1}, this worker writes "
                        f"layout {keys.LAYOUT_VERSION}: drain the old workers until their windows are judged, or "
                        "start on a fresh Redis and replay the topics (docs/operations.md: Upgrading)")


def cmd_simulate(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    from .admin import confluent_config
    from .client import BatchProducer
    from .simulate import SCENARIOS, generate

    if args.scenario not in SCENARIOS:
        raise CliError(f"unknown scenario {args.scenario!r}; choose from {', '.join(sorted(SCENARIOS))}", 2)
    _ensure_topics(settings)
    producer = BatchProducer(confluent_config(settings), settings.topics.model_dump())
    started = time.monotonic()
    try:
        sent = producer.send_all(generate(args.scenario, args.days, args.rate, args.seed, args.model))
        producer.close()
    except ClientError as err:
        raise CliError(f"simulate failed: {err}") from None
    print(f"sent {sent} events of scenario {args.scenario} in {time.monotonic() - started:.1f}s")
    return 0


def _ensure_topics(settings: Settings) -> None:
    """Create the topics if missing; an unreachable broker or a refused login is one line, not a page of
    librdkafka logs."""
    from . import preflight
    from .admin import ensure_topics

    preflight.check_broker(settings, timeout=5)
    try:
        ensure_topics(settings, timeout=10)
    except BrokerUnreachable as err:
        raise BrokerUnreachable(f"{err}; check broker_url / TRUSTGAP_BROKER_URL") from None


def cmd_status(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    _check_readers(settings, not args.no_alerts)  # before the slow imports: a wrong setting is told at once
    import orjson

    from . import overview

    overviews, unreadable = overview.load(settings, not args.no_alerts)
    lag = overview.load_lag(settings)  # unknown, not an error, while the broker does not answer
    if args.json:
        doc = {"models": [o.to_json(args.windows) for o in overviews], "unreadable_alerts": unreadable,
               "consumer_lag": lag.to_json()}
        sys.stdout.write(orjson.dumps(doc).decode() + "\n")
        return 0
    from rich.console import Console

    from .views import status_view

    Console().print(status_view(overviews, settings, args.windows, unreadable, lag))
    return 0


def _check_readers(settings: Settings, with_alerts: bool) -> None:
    """Redis, and the broker when the alerts topic is read, accept the settings (one line naming what to fix)."""
    from . import preflight

    preflight.check_redis(settings).close()
    if with_alerts:
        preflight.check_broker(settings, timeout=5)


def cmd_replay(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

    from .client import Client
    from .replay import replay

    paths = [Path(f) for f in args.files]
    for path in paths:
        if not path.is_file():
            raise CliError(f"cannot read {path}: no such file", 2)
    if args.rate is not None and args.rate <= 0:
        raise CliError("--rate must be above 0 (lines per second)", 2)
    settings = settings_from(args)
    client = None
    if not args.dry_run:
        _ensure_topics(settings)
        client = Client.from_settings(settings, validate_events=False, conf={"message.timeout.ms": 60000})
    started = time.monotonic()
    err_console = Console(stderr=True)
    with Progress(TextColumn("replay"), BarColumn(), DownloadColumn(), TimeRemainingColumn(),
                  console=err_console, transient=True, disable=args.quiet) as bar:
        task = bar.add_task("replay", total=sum(p.stat().st_size for p in paths))
        try:
            result = replay(paths, client, args.rate, settings.limits, progress=lambda n: bar.advance(task, n))
            if client is not None:
                client.close(60)
        except ClientError as err:
            raise CliError(f"replay failed: {err}") from None
    verb = "checked" if args.dry_run else "sent"
    print(f"{verb} {result.events} events and {result.raw} raw messages from {len(paths)} file(s) in "
          f"{time.monotonic() - started:.1f}s; {len(result.bad)} invalid lines")
    for bad in result.bad[:args.show_invalid]:
        print(f"  invalid {bad.describe()}")
    if len(result.bad) > args.show_invalid:
        print(f"  ... and {len(result.bad) - args.show_invalid} more")
    return 3 if result.bad else 0


def cmd_report(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    _check_readers(settings, not args.no_alerts)
    from . import overview
    from .report import render

    overviews, _ = overview.load(settings, not args.no_alerts)
    mine = [o for o in overviews if o.model == args.model]
    if not mine:
        known = ", ".join(o.model for o in overviews) or "none yet"
        raise CliError(f"no data for model {args.model!r}; models with data: {known}", 2)
    out = Path(args.out)
    try:
        out.write_text(render(mine[0], utcnow()), encoding="utf-8")
    except OSError as err:
        raise CliError(f"cannot write {out}: {err.strerror}", 2) from None
    print(f"wrote {out} ({len(mine[0].windows)} windows, {len(mine[0].alerts)} alerts)")
    return 0


def _gate(args: argparse.Namespace) -> Any:
    """The model's retrain gate from the alerts topic and Redis."""
    from . import gate, overview

    settings = settings_from(args)
    _check_readers(settings, True)
    since = None
    if args.since:
        try:
            since = parse_ms(args.since)
        except ValueError:
            raise CliError(f"--since {args.since!r} is not a time; use ISO 8601, e.g. 2026-11-20T00:00:00Z",
                           2) from None
    alerts, annotations, last = overview.read_gate(settings, args.model)
    if not alerts and last is None:
        raise CliError(f"no data for model {args.model!r}: no closed window and no alert yet", 2)
    return gate.decide(args.model, alerts, annotations, epoch_ms(utcnow()), last, since)


def cmd_gate(args: argparse.Namespace) -> int:
    import orjson

    verdict = _gate(args)
    if args.json:
        sys.stdout.write(orjson.dumps(verdict.to_json()).decode() + "\n")
        return int(verdict.exit_code)
    print(f"{args.model}: {verdict.sentence()}")
    for r in verdict.reasons:
        print(f"  {r.verdict:5} {r.code}: {r.action}")
        for a in r.alerts:
            scope = ", ".join(f"{k}={v}" for k, v in a.scope.items()) or "all"
            when = minute(epoch_ms(a.window.start))
            print(f"        {a.signal} ({scope}) {a.classification}, window of {when}")
    if verdict.exclusions:
        print(f"  leave out of training ({len(verdict.exclusions)} spans): `trustgap exclusions --model {args.model}`")
    return int(verdict.exit_code)


def cmd_exclusions(args: argparse.Namespace) -> int:
    import csv

    import orjson

    verdict = _gate(args)
    if args.format == "json":
        sys.stdout.write(orjson.dumps([e.to_json() for e in verdict.exclusions]).decode() + "\n")
        return 0
    out = csv.writer(sys.stdout, lineterminator="\n")
    out.writerow(["start", "end", "segment", "reasons"])
    for e in verdict.exclusions:
        doc = e.to_json()
        out.writerow([doc["start"], doc["end"], ",".join(f"{k}={v}" for k, v in e.segment), "; ".join(e.reasons)])
    return 0


def _pct(r: Rate) -> str:
    return "—" if r.rate is None else f"{r.rate:.1%} (n={r.n})"


def cmd_demo(args: argparse.Namespace) -> int:
    """Embedded stack + worker + simulator, printing windows and alerts until the simulation is seen through."""
    from .embedded import down, read_stack, stop, up

    started_stack = read_stack(state_dir()) is None
    info = up(state_dir())
    print(f"embedded broker {info['broker_url']}, redis {info['redis_url']}")
    env = {**os.environ, "TRUSTGAP_BROKER_URL": info["broker_url"], "TRUSTGAP_REDIS_URL": info["redis_url"],
           "TRUSTGAP_BROKER_SESSION_TIMEOUT": "6", "TRUSTGAP_BROKER_HEARTBEAT_INTERVAL": "1",
           "TRUSTGAP_WEB_PORT": os.environ.get("TRUSTGAP_WEB_PORT", "6066")}
    os.environ.update(env)
    logs = state_dir() / "worker.log"
    with logs.open("ab") as out:  # the worker keeps its own descriptor
        worker = subprocess.Popen([sys.executable, "-m", "stream.cli", "worker"], env=env,
                                  stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    print(f"worker pid {worker.pid} (log {logs}); metrics on http://127.0.0.1:{env['TRUSTGAP_WEB_PORT']}/metrics")
    try:
        return _demo_loop(args, worker)
    except KeyboardInterrupt:
        print("\nstopping")
        return 0
    finally:
        stop(worker, 15)
        if started_stack and not args.keep:
            down(state_dir())
            print("stopped the embedded stack")


def _demo_loop(args: argparse.Namespace, worker: subprocess.Popen[bytes]) -> int:
    """Print each alert and each newly closed window until the simulation is sent and `--linger` s bring nothing."""
    import threading

    import orjson
    from rich.console import Console

    from . import overview
    from .admin import ensure_topics

    console = Console()
    settings = Settings()
    ensure_topics(settings)
    consumer = _alerts_consumer(settings)
    sent: dict[str, int] = {}
    thread = threading.Thread(target=_simulate_into, args=(settings, args, sent), daemon=True)
    thread.start()
    console.print(f"simulating {args.days:g} days of scenario [bold]{args.scenario}[/] at {args.rate:g} "
                  "predictions/hour; Ctrl-C stops everything")
    seen: set[int] = set()
    alerts = 0
    quiet_since = time.monotonic()
    try:
        while worker.poll() is None:
            msg = consumer.poll(0.5)
            value = msg.value() if msg is not None and not msg.error() else None
            if value is not None:
                alerts += 1
                quiet_since = time.monotonic()
                console.print(_alert_line(orjson.loads(value)))
            for model, window in _new_windows(overview.load(settings, with_alerts=False)[0], seen):
                quiet_since = time.monotonic()
                console.print(_window_line(model, window))
            if not thread.is_alive() and time.monotonic() - quiet_since > args.linger:
                console.print(f"done: {sent.get('n', 0)} events sent, {len(seen)} windows closed, {alerts} alerts")
                _print_gate(console, settings)
                return 0
        raise CliError(f"the worker exited with code {worker.returncode}; see {state_dir() / 'worker.log'}")
    finally:
        consumer.close()  # before the demo stops the broker, so the client logs no reconnect attempts


def _print_gate(console: Any, settings: Settings, model: str = "claims") -> None:
    """The demo's last word: what the retrain gate says about the simulated model, and how to ask it."""
    from . import gate, overview

    alerts, annotations, last = overview.read_gate(settings, model)
    verdict = gate.decide(model, alerts, annotations, epoch_ms(utcnow()), last)
    console.print(f"retrain gate for {model}: [bold]{verdict.sentence()}[/]")
    console.print(f"  ask it yourself (with --keep the stack stays up): trustgap gate --model {model}; "
                  f"what to leave out of training: trustgap exclusions --model {model}")


def _alerts_consumer(settings: Settings) -> Any:
    """A consumer of every alerts partition from the start, assigned directly: a group join would take seconds on
    the embedded broker."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    from .admin import confluent_config

    consumer = Consumer(confluent_config(settings, **{"group.id": f"trustgap-demo-{os.getpid()}",
                                                      "enable.auto.commit": False}))
    topic = settings.topics.alerts
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
    return consumer


def _simulate_into(settings: Settings, args: argparse.Namespace, sent: dict[str, int]) -> None:
    """Send the demo's scenario (run in a thread); `sent["n"]` is how many events went out."""
    from .admin import confluent_config
    from .client import BatchProducer
    from .simulate import generate

    producer = BatchProducer(confluent_config(settings), settings.topics.model_dump())
    try:
        sent["n"] = producer.send_all(generate(args.scenario, args.days, args.rate, args.seed))
    finally:
        producer.close()


def _new_windows(overviews: list[ModelOverview], seen: set[int]) -> list[tuple[str, WindowRow]]:
    """The windows not printed yet (by start), oldest first per model; adds them to `seen`."""
    new = []
    for ov in overviews:
        for w in ov.windows:
            if w.start not in seen:
                seen.add(w.start)
                new.append((ov.model, w))
    return new


def _window_line(model: str, w: WindowRow) -> str:
    return (f"window {minute(w.start)} {model}: {w.predictions} predictions, override "
            f"{_pct(w.rates['override_rate'])}, mismatch {_pct(w.rates['outcome_mismatch'])}")


def _alert_line(a: dict[str, Any]) -> str:
    colour = {"page": "red", "ticket": "yellow"}.get(a["severity"], "cyan")
    return (f"[{colour}]ALERT {a['status']} {a['classification']} {a['signal']}[/] {a['model']} "
            f"scope={a['scope'] or 'all'} window {a['window']['start'][:16]} observed "
            f"{a['observed']:.1%} vs baseline {a['baseline']:.1%} (n={a['n']}) -> "
            f"[bold]{a['recommendation']}[/]  {'; '.join(a['diagnosis'][:2])}")


def cmd_schemas(args: argparse.Namespace) -> int:
    from .schemas import write_schemas

    for path in write_schemas(Path(args.out)):
        print(path)
    return 0


# --- parser -----------------------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="trustgap", description="Watch human overrides and real outcomes after the "
                                "prediction; say what is broken before anyone retrains.",
                                epilog="examples:\n  trustgap demo\n  trustgap replay events.jsonl\n"
                                "  trustgap status\n  trustgap report --model claims --out claims.html\n"
                                "\n`trustgap COMMAND --help` shows each command's examples." + EXIT_CODES,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    def add(name: str, fn: Any, help: str, config: bool = True) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help, description=help, epilog=_examples(name) + EXIT_CODES,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
        if config:
            sp.add_argument("--config", help="YAML settings file (env TRUSTGAP_* wins over it)")
        sp.set_defaults(func=fn)
        return sp

    add("up", cmd_up, "start the embedded broker (Tansu) and redis-server on free local ports", False)
    add("down", cmd_down, "stop exactly what `trustgap up` started", False)
    w = add("worker", cmd_worker, "run a worker (scale out: more workers, same app_id)")
    w.add_argument("--loglevel", default="warning", choices=["debug", "info", "warning", "error"])
    s = add("simulate", cmd_simulate, "send a simulated scenario's events to the broker")
    _sim_args(s)
    s.add_argument("--model", default="claims")
    st = add("status", cmd_status, "per model: latest windows, rates vs baseline, active alerts; the consumer "
             "lag per input topic")
    st.add_argument("--json", action="store_true", help="machine-readable output")
    st.add_argument("--windows", type=int, default=5, help="windows per model (default 5)")
    st.add_argument("--no-alerts", action="store_true", help="do not read the alerts topic (the lag still asks "
                    "the broker, and says unknown when it does not answer)")
    r = add("replay", cmd_replay, "send JSONL files of events (or captured {topic,key,value} messages)")
    r.add_argument("files", nargs="+", metavar="FILE", help="JSONL files, sent in order")
    r.add_argument("--rate", type=float, help="at most this many lines per second (default: as fast as possible)")
    r.add_argument("--dry-run", action="store_true", help="only check the lines; send nothing")
    r.add_argument("--quiet", action="store_true", help="no progress bar")
    r.add_argument("--show-invalid", type=int, default=20, metavar="N", help="invalid lines to list (default 20)")
    rp = add("report", cmd_report, "write a self-contained HTML report for one model")
    rp.add_argument("--model", required=True, help="model name as in its prediction events")
    rp.add_argument("--out", default="report.html", help="HTML file to write (default report.html)")
    rp.add_argument("--no-alerts", action="store_true", help="do not read the alerts topic (Redis only)")
    g = add("gate", cmd_gate, "whether retraining a model on its recent data is advisable: go, hold or block, "
            "with every reason and the action to take first")
    g.add_argument("--model", required=True, help="model name as in its prediction events")
    g.add_argument("--since", help="only exclusions that end after this time (ISO 8601)")
    g.add_argument("--json", action="store_true", help="machine-readable output (the worker's "
                   "/v1/models/{model}/retrain-gate answers the same)")
    x = add("exclusions", cmd_exclusions, "the prediction-time spans to leave out of a model's training data, "
            "with the reason for each (half-open UTC intervals)")
    x.add_argument("--model", required=True, help="model name as in its prediction events")
    x.add_argument("--since", help="only spans that end after this time (ISO 8601)")
    x.add_argument("--format", choices=["json", "csv"], default="json")
    d = add("demo", cmd_demo, "embedded stack + worker + simulator, printing windows and alerts", False)
    _sim_args(d, scenario_default="trust_decay", days=10.0)
    d.add_argument("--linger", type=float, default=20.0, help="seconds without news before the demo ends")
    d.add_argument("--keep", action="store_true", help="leave the embedded stack running afterwards")
    sc = add("schemas", cmd_schemas, "write the contract's JSON Schemas", False)
    sc.add_argument("--out", default="schemas")
    return p


def _sim_args(sp: argparse.ArgumentParser, scenario_default: str | None = None, days: float = 30.0) -> None:
    if scenario_default is None:
        sp.add_argument("scenario", help="scenario name, e.g. quiet, trust_decay")
    else:
        sp.add_argument("scenario", nargs="?", default=scenario_default)
    sp.add_argument("--days", type=float, default=days)
    sp.add_argument("--rate", type=float, default=200.0, help="predictions per hour of event time")
    sp.add_argument("--seed", type=int, default=1)


EXIT_CODES = ("\n\nexit codes: 0 ok, 1 runtime failure (broker/Redis unreachable, delivery failed, web port "
              "taken),\n2 bad usage or config (also a password, CA or TLS/plaintext mismatch the broker or Redis "
              "refused),\n3 replay: some lines invalid (the good ones were sent); gate: hold, 4 gate: block, "
              "130 interrupted")

_EXAMPLES = {
    "up": ["trustgap up", "trustgap up && trustgap worker"],
    "down": ["trustgap down"],
    "worker": ["trustgap worker", "TRUSTGAP_BROKER_URL=kafka://kafka:9092 trustgap worker --config prod.yaml"],
    "simulate": ["trustgap simulate quiet --days 7", "trustgap simulate trust_decay --rate 500 --model claims"],
    "status": ["trustgap status", "trustgap status --windows 10", "trustgap status --json | jq '.models[].model'"],
    "replay": ["trustgap replay events.jsonl", "trustgap replay day1.jsonl day2.jsonl --rate 200",
               "trustgap replay captured.jsonl --dry-run   # check only",
               "lines: a contract event ({\"prediction_id\": ..., \"model\": ...}) or "
               "{\"topic\": \"predictions\", \"key\": \"p-1\", \"value\": ...}"],
    "report": ["trustgap report --model claims", "trustgap report --model claims --out /tmp/claims.html"],
    "gate": ["trustgap gate --model claims", "trustgap gate --model claims --json | jq .verdict",
             "trustgap gate --model claims && python train.py   # retrain only on go"],
    "exclusions": ["trustgap exclusions --model claims", "trustgap exclusions --model claims --format csv "
                   "--since 2026-11-01T00:00:00Z > exclude.csv"],
    "demo": ["trustgap demo", "trustgap demo quiet --days 3 --keep"],
    "schemas": ["trustgap schemas --out schemas"],
}


def _examples(name: str) -> str:
    return "examples:\n" + "\n".join(f"  {line}" for line in _EXAMPLES.get(name, []))


def exit_code(err: TrustgapError) -> int:
    """The documented exit code of an error: its own for a CliError, 2 for bad config, 1 for a runtime failure."""
    if isinstance(err, CliError):
        return err.code
    return 2 if isinstance(err, ConfigError) else 1


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except TrustgapError as err:
        print(f"trustgap: {err}", file=sys.stderr)
        return exit_code(err)
    except KeyboardInterrupt:
        print("trustgap: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
