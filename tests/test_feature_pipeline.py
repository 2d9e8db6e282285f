"""Feature health end to end: the simulator's feature_breakage scenario through a real worker, broker and Redis."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone
from itertools import groupby
from typing import Any

import pytest

from stream.simulate import generate
from tests.support.harness import Deployment, eventually, metric_value, metrics_text

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
    events = list(generate("feature_breakage", days=DAYS, rate=60, seed=11, end=END))
    worker = deployment.start_worker()
    send_in_event_time_order(deployment, events)

    def feature_alerts() -> list[dict[str, Any]]:
        feature = [a for a in deployment.read("alerts", 1) if a["signal"].startswith("feature_")]
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
        outcome = [a for a in deployment.read("alerts", 1) if a["signal"] == "outcome_mismatch"
                   and a["scope"] == {} and a["status"] == "firing" and a["window"]["start"] >= BREAK[:19]]
        assert outcome, "the scenario's mismatch rise after the break raised no model-wide outcome alert"
        assert {a["recommendation"] for a in outcome} == {"fix_upstream_feature"}
        assert all("'income' (frozen)" in " ".join(a["diagnosis"]) for a in outcome)

    eventually(outcome_alerts, 120, interval=2, what="a model-wide outcome alert that blames the feature")

    def gauges() -> None:
        text = metrics_text(worker.web_port)  # type: ignore[attr-defined]
        assert metric_value(text, "trustgap_feature_alert_active", signal="feature_frozen", feature="income") == 1
        assert metric_value(text, "trustgap_feature_alert_active", signal="feature_missing",
                            feature="days_since_signup") == 1
        assert metric_value(text, "trustgap_feature_distinct", feature="income") == 1
        assert 0.5 < metric_value(text, "trustgap_feature_null_rate", feature="days_since_signup") < 0.9
        assert metric_value(text, "trustgap_feature_null_rate", feature="age") == 0

    eventually(gauges, 30, what="the feature gauges of the broken windows")
    assert worker.poll() is None
