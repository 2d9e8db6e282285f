"""Feature health end to end: the simulator's feature_breakage and stale_taxonomy scenarios (two models, sent
together) through a real worker, broker and Redis."""

from __future__ import annotations

import heapq
from collections.abc import Callable
from datetime import datetime, timezone
from itertools import groupby
from typing import Any

import orjson
import pytest

from stream.simulate import generate
from stream.times import parse_ms
from tests.support.harness import Deployment, eventually, metric_value, metrics_text, trustgap
from tests.support.ops import http_json

pytestmark = pytest.mark.integration

END = datetime(2026, 11, 22, tzinfo=timezone.utc)
DAYS = 1.5                                     # 36 hourly windows; the break comes at 18 h
BREAK = "2026-11-21T06:00:00Z"                 # END - 18 h: the first broken window starts here
TOPIC = {"prediction": "predictions", "action": "actions", "outcome": "outcomes"}


@pytest.fixture
def deployment(deploy: Callable[..., Deployment]) -> Deployment:
    return deploy(env={"TRUSTGAP_DEFAULTS__MIN_SAMPLES": "30"})


def send_in_event_time_order(dep: Deployment, events: list[tuple[str, dict[str, Any]]]) -> None:
    """Send hour by hour, as live traffic comes: every topic gets each hour's events before the next hour's."""
    for _, chunk in groupby(events, key=lambda ke: ke[1]["ts"][:13]):
        items = list(chunk)
        for kind, topic in TOPIC.items():
            dep.send(topic, [e for k, e in items if k == kind])


def test_frozen_and_missing_features_are_named_and_the_outcome_alerts_blame_them(deployment: Deployment) -> None:
    events = list(heapq.merge(generate("feature_breakage", days=DAYS, rate=60, seed=11, end=END),
                              generate("stale_taxonomy", days=DAYS, rate=60, seed=12, end=END, model="search"),
                              key=lambda ke: ke[1].get("ts", "")))
    worker = deployment.start_worker()
    send_in_event_time_order(deployment, events)

    def stale() -> None:
        # the categoriser that no longer knows every market: one ticket on country, naming what it never carried
        alerts = [a for a in deployment.read("alerts", 1) if a["model"] == "search"]
        sustained = [a for a in alerts if a["classification"] == "sustained" and a["status"] == "firing"]
        assert [(a["signal"], a["scope"], a["severity"], a["recommendation"]) for a in sustained] == [
            ("feature_novel_values", {"feature": "country"}, "ticket", "fix_upstream_feature")]
        assert {a["signal"] for a in alerts} == {"feature_novel_values"}
        first = min((a for a in alerts if a["status"] == "firing"), key=lambda a: a["window"]["start"])
        assert first["window"]["start"].startswith(BREAK[:19])
        assert all(f"'{v}'" in first["diagnosis"][0] for v in ("other", "NG", "KE")), first["diagnosis"]

    eventually(stale, 180, interval=2, what="a sustained feature_novel_values on the search model's country")

    def feature_alerts() -> list[dict[str, Any]]:
        feature = [a for a in deployment.read("alerts", 1) if a["signal"].startswith("feature_")
                   and a["model"] == "claims"]
        # exactly the two broken features, nothing about the healthy age, country, or a scale shift
        assert {(a["signal"], a["scope"]["feature"]) for a in feature if a["classification"] == "sustained"} == {
            ("feature_frozen", "income"), ("feature_missing", "days_since_signup")}
        assert {(a["signal"], a["scope"]["feature"]) for a in feature} == {
            ("feature_frozen", "income"), ("feature_missing", "days_since_signup")}
        return feature

    feature = eventually(feature_alerts, 180, interval=2, what="sustained feature_frozen and feature_missing")
    assert {a["recommendation"] for a in feature} == {"fix_upstream_feature"}
    first = {a["signal"]: a for a in sorted(feature, key=lambda a: a["window"]["start"], reverse=True)}
    assert first["feature_frozen"]["window"]["start"].startswith(BREAK[:19])
    assert first["feature_missing"]["window"]["start"].startswith(BREAK[:19])
    assert "'income' frozen at" in first["feature_frozen"]["diagnosis"][0]
    assert 0.5 < first["feature_missing"]["observed"] < 0.9  # 70% null or absent in the scenario

    def outcome_alerts() -> None:
        # the model-wide outcome alerts from the break on point at the upstream feature, naming it; they are
        # judged an outcome horizon after the feature alerts, so they are waited for on their own
        outcome = [a for a in deployment.read("alerts", 1) if a["signal"] == "outcome_mismatch" and a["model"] ==
                   "claims" and a["scope"] == {} and a["status"] == "firing" and a["window"]["start"] >= BREAK[:19]]
        assert outcome, "the scenario's mismatch rise after the break raised no model-wide outcome alert"
        assert {a["recommendation"] for a in outcome} == {"fix_upstream_feature"}
        assert all("'income' (frozen)" in " ".join(a["diagnosis"]) for a in outcome)

    eventually(outcome_alerts, 120, interval=2, what="a model-wide outcome alert that blames the feature")

    def gauges() -> None:
        text = metrics_text(worker.web_port)  # type: ignore[attr-defined]
        active = lambda model, signal, feature: metric_value(  # noqa: E731
            text, "trustgap_feature_alert_active", model=model, signal=signal, feature=feature)
        assert active("claims", "feature_frozen", "income") == 1
        assert active("search", "feature_novel_values", "country") == 1
        assert active("claims", "feature_missing", "days_since_signup") == 1
        assert metric_value(text, "trustgap_feature_distinct", model="claims", feature="income") == 1
        null_rate = metric_value(text, "trustgap_feature_null_rate", model="claims", feature="days_since_signup")
        assert 0.5 < null_rate < 0.9
        assert metric_value(text, "trustgap_feature_null_rate", model="claims", feature="age") == 0

    eventually(gauges, 30, what="the feature gauges of the broken windows")

    # the retrain gate says block, naming the features, on the worker's endpoint and in the CLI alike
    url = f"http://127.0.0.1:{worker.web_port}/v1/models/claims/retrain-gate"  # type: ignore[attr-defined]
    doc = http_json(url)
    assert doc["verdict"] == "block" and doc["reasons"][0]["reason"] == "feature_broken", doc
    named = {(a["signal"], a["scope"].get("feature")) for a in doc["reasons"][0]["alerts"]}
    assert {("feature_frozen", "income"), ("feature_missing", "days_since_signup")} <= named
    # the broken windows are to be left out of training: from the break on, for the frozen income
    assert any(parse_ms(e["start"]) <= parse_ms(BREAK) < parse_ms(e["end"]) and "feature_frozen income" in e["reasons"]
               for e in doc["exclusions"]), doc["exclusions"]
    cli = trustgap(deployment, "gate", "--model", "claims", "--json")
    assert cli.returncode == 4, cli.stderr
    assert orjson.loads(cli.stdout)["reasons"] == doc["reasons"]
    search = http_json(f"http://127.0.0.1:{worker.web_port}/v1/models/search/retrain-gate")  # type: ignore[attr-defined]
    assert (search["verdict"], [r["reason"] for r in search["reasons"]]) == ("block", ["feature_broken"])
    assert worker.poll() is None
