"""`trustgap replay`, `status` and `report` as a person or a script runs them: real processes, real broker, Redis.

Status and report read what the evaluator leaves behind (window summaries in Redis, alerts on the alerts topic);
the tests write exactly that, so every number shown can be checked against a hand-computed value.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest

from stream.state import keys
from stream.detect import RATE_SIGNALS, Summary, fingerprint
from stream.events import AlertWindow, AlignmentAlert
from tests.support.browser import CHROMIUM, visit
from tests.support.harness import Deployment, trustgap

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 20, 0, 0, tzinfo=timezone.utc)
HOUR = 3600 * 1000
T0_MS = int(T0.timestamp() * 1000)


@pytest.fixture
def deployment(deploy: Callable[..., Deployment]) -> Deployment:
    return deploy()


def _ts(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def events_on(dep: Deployment, topic: str, messages: int) -> list[dict[str, Any]]:
    """Every event on a topic, batch messages flattened."""
    out: list[dict[str, Any]] = []
    for m in dep.read(topic, messages, timeout=30):
        out += m if isinstance(m, list) else [m]
    return out


# --- replay ------------------------------------------------------------------------------------------------

PRED = {"schema_version": 1, "event_id": "e1", "prediction_id": "p1", "model": "claims", "model_version": "v1",
        "ts": "2026-11-20T00:10:00Z", "label": "approve"}


def test_replay_sends_good_lines_to_their_topics_and_lists_bad_lines_by_number(deployment: Deployment,
                                                                                tmp_path: Path) -> None:
    lines = [
        orjson.dumps(PRED),                                                                      # 1 prediction
        orjson.dumps({"schema_version": 1, "event_id": "e2", "prediction_id": "p1",
                      "ts": "2026-11-20T00:12:00Z", "action": "override"}),                      # 2 action
        b"this is not json",                                                                     # 3 bad
        orjson.dumps({"schema_version": 1, "event_id": "e3", "prediction_id": "p1",
                      "ts": "2026-11-20T01:00:00Z", "label": "review", "kind": "truth"}),        # 4 outcome
        orjson.dumps({"topic": "predictions", "key": "p9",
                      "value": {**PRED, "event_id": "e9", "prediction_id": "p9"}}),              # 5 raw message
        b"",                                                                                     # 6 blank: skipped
        orjson.dumps({**PRED, "event_id": "e4", "ts": "2026-11-20T00:10:00"}),                   # 7 naive ts
        orjson.dumps({"foo": 1}),                                                                # 8 unknown kind
        orjson.dumps({"schema_version": 1, "event_id": "e5", "model": "claims", "kind": "deploy",
                      "start": "2026-11-20T00:00:00Z", "note": "v2"}),                           # 9 annotation
        orjson.dumps({"schema_version": 1, "prediction_id": "p1", "ts": "2026-11-20T00:12:00Z",
                      "action": "accept"}),                                                      # 10 no event_id
    ]
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    run = trustgap(deployment, "replay", str(path), "--rate", "1000")
    assert run.returncode == 3, run.stderr
    assert "sent 4 events and 1 raw messages from 1 file(s)" in run.stdout
    assert "4 invalid lines" in run.stdout
    bad = re.findall(r"invalid .*events\.jsonl:(\d+): (\S+)", run.stdout)
    assert bad == [("3", "not_json:"), ("7", "invalid"), ("8", "unknown_kind:"), ("10", "invalid")]
    assert "bad_timestamp" in run.stdout and "missing required field 'event_id'" in run.stdout
    assert sorted(e["event_id"] for e in events_on(deployment, "predictions", 2)) == ["e1", "e9"]
    assert [e["event_id"] for e in events_on(deployment, "actions", 1)] == ["e2"]
    assert [e["event_id"] for e in events_on(deployment, "outcomes", 1)] == ["e3"]
    assert [e["event_id"] for e in events_on(deployment, "annotations", 1)] == ["e5"]


def test_replay_of_a_clean_file_exits_zero_and_dry_run_sends_nothing(deployment: Deployment, tmp_path: Path
                                                                      ) -> None:
    path = tmp_path / "clean.jsonl"
    path.write_bytes(b"\n".join(orjson.dumps({**PRED, "event_id": f"e{i}", "prediction_id": f"p{i}"})
                                for i in range(50)))
    dry = trustgap(deployment, "replay", "--dry-run", str(path))
    assert dry.returncode == 0 and "checked 50 events" in dry.stdout
    run = trustgap(deployment, "replay", str(path), str(path))  # the same file twice: 100 sends
    assert run.returncode == 0, run.stderr
    assert "sent 100 events and 0 raw messages from 2 file(s)" in run.stdout
    assert len(events_on(deployment, "predictions", 1)) == 100  # the dry run added none


@pytest.mark.parametrize("args, env, code, message", [
    (["replay", "missing.jsonl"], {}, 2, "cannot read missing.jsonl: no such file"),              # bad usage
    (["replay", "--rate", "0", "x"], {}, 2, "--rate must be above 0"),                            # bad option
    (["status"], {"TRUSTGAP_REDIS_URL": "redis://127.0.0.1:1/0"}, 1, "redis unreachable"),       # Redis down
    (["status"], {"TRUSTGAP_BROKER_URL": "kafka://127.0.0.1:1"}, 1, "broker 127.0.0.1:1 unreachable"),  # broker
    (["status"], {"TRUSTGAP_STATE_BUCKETS": "many"}, 2, "bad setting state_buckets"),             # bad config
    (["report", "--model", "nope"], {}, 2, "no data for model 'nope'"),                           # unknown model
])
def test_failures_are_one_line_with_a_documented_exit_code(deployment: Deployment, tmp_path: Path,
                                                           args: list[str], env: dict[str, str], code: int,
                                                           message: str) -> None:
    if args[0] == "replay":
        (tmp_path / "x").write_text("")
        args = [a if a != "x" else str(tmp_path / "x") for a in args]
    run = trustgap(deployment, *args, **env)
    assert run.returncode == code
    assert run.stderr.strip().count("\n") == 0 and "Traceback" not in run.stderr
    assert run.stderr.startswith("trustgap: ") and message in run.stderr


def test_every_command_has_help_with_examples_and_exit_codes() -> None:
    for command in ("up", "down", "worker", "simulate", "status", "replay", "report", "gate", "exclusions", "demo",
                    "schemas"):
        run = trustgap(None, command, "--help")
        assert run.returncode == 0
        assert "examples:\n  trustgap " + command in run.stdout and "exit codes:" in run.stdout


# --- status and report -------------------------------------------------------------------------------------

def summary(i: int, overrides: int, excluded: bool = False) -> Summary:
    """Window i after T0: 100 predictions, 100 actions of which `overrides` overridden, 50 truths, 5 mismatches;
    the model's truths paid 1,000 * (i + 1) in all."""
    counts: dict[str, float] = {"n": 100, "a:accept": 100 - overrides, "a:override": overrides, "o:truth": 50,
                                "m:truth": 5}
    paid = {"v:truth#0": 1000.0 * (i + 1), "vn:truth#0": 5, "vl:truth#0": 5 * math.log(200 * (i + 1)),
            "vq:truth#0": 5 * math.log(200 * (i + 1)) ** 2}
    return Summary(T0_MS + i * HOUR, T0_MS + (i + 1) * HOUR, "v1", {"": {**counts, **paid}, "region=eu": counts},
                   frozenset({"override_rate|"}) if excluded else frozenset())


def alert(i: int, signal: str, status: str, classification: str, severity: str, scope: dict[str, str],
          recommendation: str) -> AlignmentAlert:
    start = T0 + timedelta(hours=i)
    scope_key = ",".join(f"{k}={v}" for k, v in scope.items())
    return AlignmentAlert(
        alert_id=f"a{i}{signal}{status}", fingerprint=fingerprint("claims", signal, scope_key), status=status,
        classification=classification, severity=severity, signal=signal, model="claims", model_version="v1",
        scope=scope, window=AlertWindow(start=start, end=start + timedelta(hours=1)), observed=0.3, baseline=0.1,
        gap=0.2, n=100, baseline_n=200, persistence=3, diagnosis=[f"{signal} up in {scope_key or 'all'}"],
        recommendation=recommendation, ts=start + timedelta(hours=1, minutes=1))  # type: ignore[arg-type]


ALERTS = [
    alert(1, "outcome_mismatch", "firing", "transient", "info", {}, "exclude_window_from_training"),  # old: gone
    alert(1, "override_rate", "firing", "sustained", "page", {"region": "us"}, "investigate_trust"),
    alert(2, "override_rate", "resolved", "sustained", "page", {"region": "us"}, "investigate_trust"),  # resolved
    alert(3, "override_rate", "firing", "sustained", "page", {"region": "eu"}, "investigate_segment"),  # active
    alert(3, "outcome_mismatch", "firing", "transient", "info", {}, "exclude_window_from_training"),   # active
]


@pytest.fixture
def history(deployment: Deployment, redis_client: Any) -> Deployment:
    """Four closed windows of model `claims` (overrides 10, 10, 20 (excluded from baselines), 30) and 5 alerts; 5
    actions and 2 outcomes of the last window came late (over two buckets' counters)."""
    windows = [summary(0, 10), summary(1, 10), summary(2, 20, excluded=True), summary(3, 30)]
    redis_client.sadd(keys.MODELS, "claims")
    redis_client.hset(keys.model_history("claims"),
                      mapping={str(s.start): orjson.dumps(s.to_json()) for s in windows})
    last = windows[-1].start
    redis_client.hset(keys.window_counts(0, "claims", last), mapping={keys.LATE_FIELD + "a": 4})
    redis_client.hset(keys.window_counts(1, "claims", last), mapping={keys.LATE_FIELD + "a": 1,
                                                                         keys.LATE_FIELD + "o": 2})
    deployment.send("alerts", [a.model_dump_json().encode() for a in ALERTS], key=b"alert")
    return deployment


def test_status_json_shows_latest_windows_rates_against_baseline_and_active_alerts(history: Deployment) -> None:
    run = trustgap(history, "status", "--json", "--windows", "2")
    assert run.returncode == 0, run.stderr
    doc = orjson.loads(run.stdout)
    assert doc["unreadable_alerts"] == 0
    [model] = doc["models"]
    assert model["model"] == "claims"
    assert [w["start"] for w in model["windows"]] == ["2026-11-20T02:00:00Z", "2026-11-20T03:00:00Z"]
    last = model["windows"][-1]
    assert last["predictions"] == 100
    # baseline of window 3: windows 0 and 1 (10+10 of 200); window 2 was excluded by the detector
    assert last["signals"]["override_rate"] == {"rate": 0.3, "n": 100, "baseline": 0.1, "baseline_n": 200}
    assert last["signals"]["outcome_mismatch"] == {"rate": 0.1, "n": 50, "baseline": 0.1, "baseline_n": 150}
    assert [w["outcome_value"] for w in model["windows"]] == [{"all": 30.0}, {"all": 40.0}]  # paid / predictions
    assert [w["late"] for w in model["windows"]] == [{"predictions": 0, "actions": 0, "outcomes": 0},
                                                     {"predictions": 0, "actions": 5, "outcomes": 2}]
    active = [(a["signal"], a["scope"], a["recommendation"]) for a in model["active_alerts"]]
    assert active == [("override_rate", {"region": "eu"}, "investigate_segment"),
                      ("outcome_mismatch", {}, "exclude_window_from_training")]


def test_status_table_is_readable(history: Deployment) -> None:
    run = trustgap(history, "status")
    assert run.returncode == 0, run.stderr
    out = run.stdout
    assert "claims" in out and "version v1" in out
    assert "30.0% vs 10.0% (n=100)" in out
    assert "late p/a/o" in out and out.count("0/5/2") == 1
    assert "page sustained" in out and "investigate_segment" in out and "region=eu" in out
    assert "investigate_trust" not in out  # the resolved alert is not shown


def test_report_is_one_self_contained_page_with_a_plot_per_signal(history: Deployment, tmp_path: Path) -> None:
    out = tmp_path / "claims.html"
    run = trustgap(history, "report", "--model", "claims", "--out", str(out))
    assert run.returncode == 0, run.stderr
    assert f"wrote {out} (4 windows, 5 alerts)" in run.stdout
    page = out.read_text()
    assert page.count("<figure class='signal-plot'") == len(RATE_SIGNALS)
    assert [m for m in re.findall(r"data-signal='([^']+)'", page)] == list(RATE_SIGNALS)
    # and who the model sees: one share plot per segment dimension the windows carry (region, all of it eu)
    assert re.findall(r"<figure class='segment-plot' data-dimension='([^']+)'", page) == ["region"]
    # and the truth outcomes' value per prediction: 10, 20, 30, 40 for the whole model
    assert page.count("<figure class='value-plot'") == 1
    assert page.count("<svg") == len(RATE_SIGNALS) + 2
    assert "region=eu" in page.split("data-dimension='region'")[1].split("</figure>")[0]
    assert "id='no-feature-data'" in page
    # the gate's verdict first; the alerts one row per cause (3 fingerprints), the diagnosis under each
    assert "<p id='verdict'" in page.split("<h2>")[0]
    assert "Retrain gate: hold: one scope carries the rise: look at what changed there" in page
    assert page.count("<tr class='cause'>") == 3 and page.count("<tr class='diagnosis'>") == 3
    assert re.findall(r"<tr class='late'>(.*?)</tr>", page) == [
        "<td>2026-11-20 03:00</td><td>0</td><td>5</td><td>2</td>"]
    assert not re.search(r"<(script|link|img|iframe)\b|\bsrc=|url\(\s*['\"]?http", page)  # nothing to fetch


@pytest.mark.skipif(CHROMIUM is None, reason="Debian package `chromium` is not installed (apt-get install chromium)")
def test_report_opens_in_headless_chromium_without_errors(history: Deployment, tmp_path: Path) -> None:
    out = tmp_path / "claims.html"
    assert trustgap(history, "report", "--model", "claims", "--out", str(out)).returncode == 0
    seen = visit(out, "[...document.querySelectorAll('figure.signal-plot svg, figure.segment-plot svg, "
                      "figure.value-plot svg')]"
                      ".filter(s => s.getBoundingClientRect().height > 100).length")
    assert seen.errors == []
    assert seen.answer == len(RATE_SIGNALS) + 2  # every plot is rendered at a visible size
    shot = tmp_path / "claims.png"
    verdict = visit(out, "document.getElementById('verdict').getBoundingClientRect().top < 200 && "
                         "document.getElementById('verdict').textContent", screenshot=shot)
    assert verdict.errors == [] and verdict.answer.startswith("Retrain gate: hold")  # at the top of the page
    png = shot.read_bytes()  # the first screen, as a person opening the page sees it (kept with the test's files)
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and int.from_bytes(png[16:20], "big") >= 640 and len(png) > 10_000
