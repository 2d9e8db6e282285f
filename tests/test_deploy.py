"""Every file in deploy/ is checked by the tool that consumes it: promtool, amtool, a real Alertmanager,
the compose specification's JSON Schema, and a regeneration of what is generated."""

from __future__ import annotations

import json
import re
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
import yaml

from deploy import alerts, dashboards, generate
from tests.support.harness import wait_for
from tests.support.ops import DEPLOY, REPO, alertmanager, binary, http_json, run

RULE_FILES = sorted((DEPLOY / "prometheus" / "rules").glob("*.yml"))
PROMTOOL_TESTS = sorted((DEPLOY / "prometheus" / "tests").glob("*.yml"))
AM_CONFIG = DEPLOY / "alertmanager" / "alertmanager.yml"


def rules() -> list[dict[str, Any]]:
    return [r for f in RULE_FILES for g in yaml.safe_load(f.read_text())["groups"] for r in g["rules"]]


def minutes(duration: str) -> float:
    units = {"s": 1 / 60, "m": 1, "h": 60}
    return sum(float(n) * units[u] for n, u in re.findall(r"(\d+)([smh])", duration))


# --- generated files ------------------------------------------------------------------------------------------

def test_committed_rules_and_dashboards_equal_what_the_code_generates() -> None:
    assert generate.drift() == [], "run `python -m deploy.generate` and commit the result"


def test_a_changed_duration_makes_the_rules_drift(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(alerts.FOR, "gap", "6m")
    assert generate.drift() == [DEPLOY / "prometheus" / "rules" / "alignment.yml"]


# --- Prometheus -----------------------------------------------------------------------------------------------

@pytest.mark.integration
def test_promtool_accepts_every_rule_file() -> None:
    result = run(binary("promtool"), "check", "rules", *(str(f.relative_to(REPO)) for f in RULE_FILES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert [f.stem for f in RULE_FILES] == sorted(alerts.AREAS)
    for area, defined in alerts.AREAS.items():
        assert f"Checking deploy/prometheus/rules/{area}.yml\n  SUCCESS: {len(defined)} rules found" in result.stdout


@pytest.mark.integration
def test_promtool_accepts_the_scrape_config_and_finds_the_rule_files() -> None:
    result = run(binary("promtool"), "check", "config", str(DEPLOY / "prometheus" / "prometheus.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(RULE_FILES)} rule files found" in result.stdout


@pytest.mark.integration
def test_promtool_unit_tests_pass() -> None:
    result = run(binary("promtool"), "test", "rules", *map(str, PROMTOOL_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(PROMTOOL_TESTS)


def test_every_alert_has_a_quiet_case_just_before_its_for_ends_and_a_full_firing_case() -> None:
    quiet: dict[str, set[float]] = defaultdict(set)
    firing: dict[str, list[tuple[float, dict[str, Any]]]] = defaultdict(list)
    for path in PROMTOOL_TESTS:
        doc = yaml.safe_load(path.read_text())
        step = minutes(doc["evaluation_interval"])
        for case in doc["tests"]:
            for check in case.get("alert_rule_test", []):
                at = minutes(check["eval_time"])
                if check["exp_alerts"]:
                    firing[check["alertname"]] += [(at, a) for a in check["exp_alerts"]]
                else:
                    quiet[check["alertname"]].add(at)
    for rule in rules():
        name = rule["alert"]
        assert firing[name], f"{name}: no firing case"
        for at, alert in firing[name]:
            assert at - step in quiet[name], f"{name}: no quiet case one evaluation before it fires at {at}m"
            assert at >= minutes(rule["for"]), f"{name}: fires at {at}m, before its for: {rule['for']}"
            assert "severity" in alert["exp_labels"]
            assert set(alert["exp_annotations"]) == {"summary", "description", "runbook_url"}


def test_rules_are_prefixed_camelcase_with_severity_and_annotations() -> None:
    names = [r["alert"] for r in rules()]
    assert len(names) == len(set(names)) == sum(len(a) for a in alerts.AREAS.values())
    for rule in rules():
        assert re.fullmatch(r"Trustgap(?:[A-Z][a-z]+)+", rule["alert"]), rule["alert"]
        # Alignment alerts keep the severity trustgap chose; the others set it.
        assert "severity" in rule.get("labels", {}) or "severity" in rule["expr"], rule["alert"]
        assert set(rule["annotations"]) == {"summary", "description", "runbook_url"}


def test_every_runbook_url_points_at_a_section_of_the_runbook() -> None:
    sections = set(re.findall(r"^## (\S+)$", (DEPLOY / "RUNBOOK.md").read_text(), re.M))
    anchors = [r["annotations"]["runbook_url"].split("#")[1] for r in rules()]
    assert sorted(anchors) == sorted(sections)


# --- Alertmanager ---------------------------------------------------------------------------------------------

@pytest.mark.integration
def test_amtool_accepts_the_alertmanager_config() -> None:
    result = run(binary("amtool"), "check-config", str(AM_CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout and "3 inhibit rules" in result.stdout


@pytest.mark.integration
@pytest.mark.parametrize(("labels", "receiver"), [
    # a sustained alignment gap pages
    ({"alertname": "TrustgapOverrideRateGap", "model": "claims", "severity": "page"}, "page"),
    # a worker down pages too, without a model label
    ({"alertname": "TrustgapWorkerDown", "job": "trustgap", "severity": "page"}, "page"),
    # dead letters are a ticket
    ({"alertname": "TrustgapDeadLetterRate", "topic": "trustgap.predictions", "severity": "ticket"}, "ticket"),
    # a feature-health alert with trustgap's ticket severity
    ({"alertname": "TrustgapFeatureHealth", "model": "claims", "severity": "ticket"}, "ticket"),
    # transient or expected gaps are information only
    ({"alertname": "TrustgapOverrideRateGap", "model": "claims", "severity": "info"}, "info"),
    # an alert without a severity still reaches a person, as a ticket
    ({"alertname": "SomethingElse"}, "ticket"),
    # an unknown severity likewise
    ({"alertname": "SomethingElse", "severity": "critical"}, "ticket"),
])
def test_amtool_routes_each_severity_to_its_receiver(labels: dict[str, str], receiver: str) -> None:
    result = run(binary("amtool"), "config", "routes", "test", f"--config.file={AM_CONFIG}",
                 f"--verify.receivers={receiver}", *(f"{k}={v}" for k, v in labels.items()))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == receiver


def _post(url: str, *alerts_: dict[str, str]) -> None:
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    http_json(f"{url}/api/v2/alerts", [{"labels": a, "startsAt": now} for a in alerts_])


def _states(url: str, expected: int) -> dict[tuple[str, str], str]:
    def fetch() -> dict[tuple[str, str], str]:
        got = {(a["labels"]["alertname"], a["labels"].get("model") or a["labels"].get("instance", "")):
               a["status"]["state"] for a in http_json(f"{url}/api/v2/alerts")}
        return got if len(got) == expected else {}
    return wait_for(fetch, 20, what=f"{expected} alerts in Alertmanager")


@pytest.mark.integration
def test_alertmanager_inhibits_what_another_alert_explains(tmp_path: Path) -> None:
    with alertmanager(tmp_path) as am:
        _post(am.url,
              {"alertname": "TrustgapFeatureHealth", "model": "claims", "severity": "ticket"},
              {"alertname": "TrustgapOutcomeMismatchGap", "model": "claims", "severity": "page"},
              {"alertname": "TrustgapOutcomeMismatchGap", "model": "fraud", "severity": "page"},
              {"alertname": "TrustgapOverrideRateGap", "model": "claims", "severity": "page"},
              {"alertname": "TrustgapWorkerDown", "job": "trustgap", "instance": "w2", "severity": "page"},
              {"alertname": "TrustgapWatermarkLag", "job": "trustgap", "model": "claims", "severity": "ticket"},
              {"alertname": "TrustgapWatermarkLag", "job": "other", "model": "fraud", "severity": "ticket"},
              {"alertname": "TrustgapConsumerLag", "job": "trustgap", "topic": "trustgap.predictions",
               "severity": "page"})
        # Inhibition is evaluated when alerts are listed; give the inhibitor a moment to be indexed.
        states = wait_for(lambda: (s := _states(am.url, 8))[("TrustgapWatermarkLag", "claims")] == "suppressed"
                          and s, 20, what="the lag alert to be suppressed")
    assert states == {
        ("TrustgapFeatureHealth", "claims"): "active",
        ("TrustgapOutcomeMismatchGap", "claims"): "suppressed",  # explained by the feature of the same model
        ("TrustgapOutcomeMismatchGap", "fraud"): "active",       # another model's feature is fine
        ("TrustgapOverrideRateGap", "claims"): "active",         # a feature does not explain overrides
        ("TrustgapWorkerDown", "w2"): "active",
        ("TrustgapWatermarkLag", "claims"): "suppressed",        # explained by the worker down in its job
        ("TrustgapWatermarkLag", "fraud"): "active",             # another job's lag is not
        ("TrustgapConsumerLag", ""): "suppressed",               # its partitions are moving to the other workers
    }


# --- Grafana --------------------------------------------------------------------------------------------------

def _dashboard(name: str) -> dict[str, Any]:
    return dict(json.loads((DEPLOY / "grafana" / "dashboards" / f"{name}.json").read_text()))


@pytest.mark.parametrize("name", sorted(dashboards.DASHBOARDS))
def test_dashboard_panels_have_unique_ids_and_use_the_datasource_variable(name: str) -> None:
    doc = _dashboard(name)
    panels = [p for panel in doc["panels"] for p in [panel, *panel.get("panels", [])]]
    assert len({p["id"] for p in panels}) == len(panels)
    queried = [p for p in panels if p["type"] != "row"]
    assert queried and all(p["datasource"] == {"type": "prometheus", "uid": "${datasource}"} for p in queried)
    assert all(p.get("targets") for p in queried)
    assert {v["name"] for v in doc["templating"]["list"]} == {"datasource", "model"}


def test_grafana_provisioning_loads_the_generated_dashboards() -> None:
    provider = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "dashboards" / "trustgap.yml").read_text())
    path = provider["providers"][0]["options"]["path"]
    compose = yaml.safe_load((REPO / "docker-compose.yaml").read_text())
    assert f"./deploy/grafana/dashboards:{path}:ro" in compose["services"]["grafana"]["volumes"]
    ds = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text())
    assert [(d["type"], d["url"]) for d in ds["datasources"]] == [("prometheus", "http://prometheus:9090")]


# --- docker compose -------------------------------------------------------------------------------------------

def compose_schema() -> Path:
    """The Compose Specification schema from the shared folder beside the clone (CI) or above the worktree."""
    for parent in REPO.parents:
        candidate = parent / "shared" / "schemas" / "compose-spec.json"
        if candidate.exists():
            return candidate
    pytest.skip(f"no shared/schemas/compose-spec.json in any parent of {REPO} (CI puts shared/ beside the clone)")


def compose() -> dict[str, Any]:
    return dict(yaml.safe_load((REPO / "docker-compose.yaml").read_text()))


def test_compose_file_is_valid_against_the_compose_specification() -> None:
    import jsonschema

    schema = json.loads(compose_schema().read_text())
    validator = jsonschema.Draft7Validator(schema)  # its $schema names draft-07 by a URL jsonschema does not map
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(compose())]
    assert errors == []


def test_compose_schema_rejects_a_broken_service() -> None:
    import jsonschema

    schema = json.loads(compose_schema().read_text())
    broken = compose()
    broken["services"]["redis"]["restart_policy"] = "always"  # a key Compose does not know
    assert [e.message for e in jsonschema.Draft7Validator(schema).iter_errors(broken)] == [
        "'restart_policy' does not match any of the regexes: '^x-'"]


def test_every_file_the_compose_stack_mounts_or_builds_from_exists() -> None:
    doc = compose()
    named = set(doc.get("volumes", {}))
    mounts = [v.split(":")[0] for s in doc["services"].values() for v in s.get("volumes", [])]
    binds = {m for m in mounts if m not in named}
    assert len(binds) == 5  # trustgap.yaml (the shared worker block), prometheus, alertmanager, grafana x2
    missing = [m for m in binds if not (REPO / m).exists()]
    assert missing == []
    builds = {s["build"] for s in doc["services"].values() if "build" in s}
    assert builds == {"."} and (REPO / "Dockerfile").exists()


def test_compose_runs_two_workers_scraped_by_prometheus_and_the_whole_stack() -> None:
    services = compose()["services"]
    assert {"kafka", "redis", "worker-1", "worker-2", "simulator", "prometheus", "alertmanager",
            "grafana"} <= set(services)
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft
    assert "--appendonly" in services["redis"]["command"]
    scrape = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())["scrape_configs"]
    targets = [t for job in scrape if job["job_name"] == alerts.JOB for sc in job["static_configs"]
               for t in sc["targets"]]
    assert targets == ["worker-1:6066", "worker-2:6066"]
    settings = yaml.safe_load((DEPLOY / "trustgap.yaml").read_text())
    from stream.settings import Settings

    assert Settings(**settings).broker_url == "kafka://kafka:9092"  # the mounted config is valid
