"""The operations path for real: a worker on the embedded broker and Redis, the real Prometheus with the project's
rules and scrape config, the real Alertmanager with the project's routing, and a simulated loss of trust that must
page. In the same run, every Grafana panel's query must parse and return data from that Prometheus."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import yaml

from deploy import alerts, dashboards
from stream.admin import confluent_config
from stream.client import BatchProducer
from stream.settings import ModelSettings
from stream.simulate import generate as simulate
from tests.support.harness import Deployment, metric_value, metrics_text, wait_for
from tests.support.ops import DEPLOY, alertmanager, http_json, prometheus, promql

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MODEL = "claims"
LATENESS_S = ModelSettings().allowed_lateness_seconds  # the default: two days replayed in seconds need no more
# Substitutions Grafana would make; $__rate_interval is four scrapes of the test's 1 s interval, plus margin.
GRAFANA_VARIABLES = {"$model": MODEL, "$__rate_interval": "15s"}


@pytest.fixture
def deployment(deploy: Callable[..., Deployment]) -> Deployment:
    return deploy(env={"TRUSTGAP_DEFAULTS__MIN_SAMPLES": "20"})


def prometheus_config(worker_port: int, alertmanager_url: str, rules_dir: Path) -> dict[str, Any]:
    """The project's prometheus.yml with the test's target, intervals, Alertmanager and short-`for:` rules."""
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    config["rule_files"] = [str(rules_dir / "*.yml")]
    config["alerting"]["alertmanagers"][0]["static_configs"] = [
        {"targets": [alertmanager_url.removeprefix("http://")]}]
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == alerts.JOB]
    job["static_configs"] = [{"targets": [f"127.0.0.1:{worker_port}"]}]
    return dict(config)


def write_rules(rules_dir: Path) -> None:
    """The project's rules, every `for:` cut to 1 s so that the test does not wait minutes."""
    rules_dir.mkdir()
    for area, doc in alerts.rule_files(for_override="1s").items():
        (rules_dir / f"{area}.yml").write_text(yaml.safe_dump(doc))


def paged(am_url: str) -> list[dict[str, Any]]:
    return [a for a in http_json(f"{am_url}/api/v2/alerts")
            if a["labels"]["alertname"] == "TrustgapOverrideRateGap" and a["labels"].get("scope") == "region=eu"]


def test_trust_decay_pages_through_alertmanager_and_every_panel_query_returns_data(
        deployment: Deployment, tmp_path: Path) -> None:
    worker = deployment.start_worker()
    write_rules(tmp_path / "rules")
    with alertmanager(tmp_path) as am, prometheus(tmp_path, prometheus_config(
            worker.web_port, am.url, tmp_path / "rules")) as prom:  # type: ignore[attr-defined]
        settings = deployment.settings
        producer = BatchProducer(confluent_config(settings), settings.topics.model_dump())
        # Two days at 240 predictions an hour, ending before the lateness so that a prediction past it is not from
        # the future; officers in region=eu start overriding from hour 34 on.
        events = list(simulate("trust_decay", days=2, rate=240, seed=3, model=MODEL,
                               end=datetime.now(timezone.utc) - timedelta(seconds=LATENESS_S, days=1)))
        sent = producer.send_all(events)
        assert sent > 10_000
        wait_for(lambda: metric_value(metrics_text(worker.web_port), "trustgap_events_total",  # type: ignore
                                      result="applied") == sent, 90, what=f"{sent} events applied")
        # one prediction past the lateness: every window of the replay closes now, with all its events in
        newest = max(datetime.fromisoformat(e["ts"]) for _, e in events)
        tick = newest + timedelta(seconds=LATENESS_S, hours=1)
        producer.send_all([("prediction", {**next(e for k, e in events if k == "prediction"), "event_id": "tick",
                                           "prediction_id": "tick", "ts": tick.isoformat()})])
        producer.close()
        deployment.send("predictions", [b"not json", {"schema_version": 1}])  # two dead letters for the panels

        (alert,) = wait_for(lambda: paged(am.url), 90, interval=1, what="the override-rate page in Alertmanager")

        labels = alert["labels"]
        assert labels == {"alertname": "TrustgapOverrideRateGap", "model": MODEL, "signal": "override_rate",
                          "scope": "region=eu", "severity": "page"}
        assert [r["name"] for r in alert["receivers"]] == ["page"]
        assert alert["status"]["state"] == "active"
        notes = alert["annotations"]
        assert notes["summary"] == f"Sustained override_rate gap on model {MODEL} (region=eu)"
        assert notes["runbook_url"].endswith("/deploy/RUNBOOK.md#override-rate")
        found = re.fullmatch(r"override_rate of model claims in scope region=eu was ([\d.]+)% in the newest judged "
                             r"window against a baseline of ([\d.]+)%, for several windows in a row\. trustgap "
                             r"recommends: (\w+)\.", notes["description"])
        assert found, notes["description"]
        observed, baseline = float(found[1]), float(found[2])
        assert observed - baseline >= 10  # the scenario more than triples a 10% override rate
        (active,) = promql(prom.url, 'trustgap_alert_active{signal="override_rate", scope="region=eu", '
                                     'classification="sustained"} == 1')
        assert found[3] == active["metric"]["recommendation"]

        queries = [(name, title, expr) for name in sorted(dashboards.DASHBOARDS) for title, expr in
                   dashboards.panel_queries(json.loads(
                       (DEPLOY / "grafana" / "dashboards" / f"{name}.json").read_text()))]
        assert len(queries) == 26
        def without_data() -> list[str]:
            empty = []
            for name, title, expr in queries:
                for var, value in GRAFANA_VARIABLES.items():
                    expr = expr.replace(var, value)
                assert "$" not in expr, f"{name}/{title}: unsubstituted variable in {expr}"
                if not promql(prom.url, expr):  # a query that does not parse fails inside promql
                    empty.append(f"{name}/{title}: {expr}")
            return empty

        # The dead letters were sent last: rates need two scrapes of them before their panel has data.
        try:
            wait_for(lambda: not without_data(), 30, interval=1, what="every panel query to return data")
        except AssertionError:
            assert without_data() == []
