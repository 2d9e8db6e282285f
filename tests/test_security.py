"""Secrets stay secret: a password-protected Redis, no secret in logs or /metrics, no free text as a label."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.faultstack import FaultStack, fault_stack
from tests.support.harness import Deployment, metric_value, wait_for

pytestmark = pytest.mark.integration

PASSWORD = "s3cret-Zq9-password"
ACTOR = "officer-jane.doe@example.com"
REASON = "customer-told-me-a-SECRET-story"


@pytest.fixture
def fs(tmp_path: Path) -> Iterator[FaultStack]:
    with fault_stack(tmp_path / "stack", password=PASSWORD) as stack:
        yield stack


def test_no_secret_or_free_text_leaks_into_logs_or_metrics_and_the_endpoint_binds_web_host(
        fs: FaultStack, tmp_path: Path) -> None:
    dep = Deployment(fs, tmp_path)  # type: ignore[arg-type]
    dep.create_topics()
    try:
        # 127.0.0.2 is loopback too: the endpoint must answer there and only there.
        worker = dep.start_worker(web_host="127.0.0.2")
        port = worker.web_port  # type: ignore[attr-defined]
        with pytest.raises(OSError):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
        pred = {"schema_version": 1, "event_id": "e1", "prediction_id": "p1", "model": "m", "model_version": "1",
                "ts": "2026-11-20T00:10:00Z", "label": "a"}
        action = {"schema_version": 1, "event_id": "a1", "prediction_id": "p1", "ts": "2026-11-20T00:11:00Z",
                  "action": "override", "actor": ACTOR, "reason": REASON}
        dep.send("predictions", [pred])
        dep.send("actions", [action])
        text = wait_for(lambda: (t := _metrics(port)) and metric_value(t, "trustgap_events_total", result="applied")
                        == 2 and t, 60, what="both events to be applied")
        fs.pause_redis()  # make the worker log Redis errors too: they must not carry the URL's password
        try:
            wait_for(lambda: metric_value(_metrics(port), "trustgap_redis_errors_total") > 0, 30,
                     what="a redis error to be logged")
        finally:
            fs.resume_redis()
        text = _metrics(port)
    finally:
        dep.stop_all()
    logs = "".join(p.read_text(errors="replace") for p in tmp_path.glob("*-worker*.log"))
    assert "redis" in logs.lower()  # the log did talk about Redis
    for secret in (PASSWORD, ACTOR, REASON):
        assert secret not in logs
        assert secret not in text


def _metrics(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.2:{port}/metrics", timeout=5) as resp:
        return str(resp.read().decode())
