"""Window closing end to end: every closed window is evaluated exactly once across two workers, and alerts reach
the alerts topic in the contract's format."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

import pytest

from stream.admin import confluent_config
from stream.client import BatchProducer
from stream.events import AlignmentAlert
from stream.settings import ModelSettings
from stream.simulate import generate
from tests.support.harness import Deployment, metric_value, metrics_text, wait_for

pytestmark = pytest.mark.integration

END = datetime(2026, 11, 20, tzinfo=timezone.utc)
LATENESS_S = ModelSettings().allowed_lateness_seconds  # the default: two days replayed in seconds need no more


@pytest.fixture(params=["redis", "redis-cluster"])
def deployment(request: pytest.FixtureRequest) -> Deployment:
    """State on one redis-server, or on a Redis Cluster (two workers then share buckets on every master)."""
    deploy: Callable[..., Deployment] = request.getfixturevalue("deploy" if request.param == "redis"
                                                                else "deploy_cluster")
    return deploy(defaults__min_samples="20", defaults__baseline_windows="24")


def test_two_workers_evaluate_each_window_once_and_publish_contract_alerts(deployment: Deployment) -> None:
    # The second worker joins as the replay arrives: the rebalance finds the first holding fetched messages with
    # nothing committed yet, which Faust drops; the partitions it keeps must be read again from where Redis says.
    workers = [deployment.start_worker(), deployment.start_worker()]
    events = list(generate("trust_decay", days=2, rate=300, seed=3, end=END))
    newest = max(e["ts"] for _, e in events)
    producer = BatchProducer(confluent_config(deployment.settings), deployment.settings.topics.model_dump())
    sent = producer.send_all(events)

    def total(name: str, **labels: str) -> float:
        return sum(metric_value(metrics_text(w.web_port), name, **labels) for w in workers)  # type: ignore

    try:
        wait_for(lambda: sum(total("trustgap_events_total", result=r) for r in ("applied", "late")) == sent, 180,
                 what=f"{sent} events applied or late")
    except AssertionError as err:
        texts = [metrics_text(w.web_port) for w in workers]  # type: ignore[attr-defined]
        inputs = [(i, line) for i, text in enumerate(texts) for line in text.splitlines()
                  if line.startswith(("trustgap_consumer_lag", "trustgap_events_total")) and not line.endswith(" 0.0")]
        raise AssertionError(f"{err}; {inputs}") from None
    assert total("trustgap_events_total", result="late") == 0  # the watermark waited for every partition
    # One prediction past the lateness moves the watermark beyond the replay: every window closes now, complete.
    tick = datetime.fromisoformat(newest) + timedelta(seconds=LATENESS_S, hours=1)
    producer.send_all([("prediction", {**next(e for k, e in events if k == "prediction"),
                                       "event_id": "tick", "prediction_id": "tick", "ts": tick.isoformat()})])
    producer.close()
    wm = int(tick.timestamp() * 1000) - LATENESS_S * 1000
    first = min(int(datetime.fromisoformat(e["ts"]).timestamp() * 1000) for k, e in events if k == "prediction")
    expected_windows = wm // 3_600_000 - first // 3_600_000

    def evaluated() -> float:
        return total("trustgap_windows_evaluated_total")

    try:
        wait_for(lambda: evaluated() >= expected_windows, 90, what=f"{expected_windows} windows to be evaluated")
    except AssertionError as err:
        texts = [metrics_text(w.web_port) for w in workers]  # type: ignore[attr-defined]
        inputs = [line for text in texts for line in text.splitlines()
                  if line.startswith(("trustgap_partition_", "trustgap_consumer_lag", "trustgap_watermark_timestamp"))]
        raise AssertionError(f"{err}; evaluated {evaluated()}; what the watermark was made of: {inputs}") from None
    alerts = [AlignmentAlert.model_validate(a) for a in deployment.read("alerts", 1)]
    assert evaluated() == expected_windows                      # once each, shared by two workers
    ids = Counter(a.alert_id for a in alerts)
    assert ids.most_common(1)[0][1] == 1                        # no alert published twice
    per_window = Counter((a.signal, tuple(a.scope.items()), a.window.start) for a in alerts)
    assert per_window.most_common(1)[0][1] == 1                 # one decision per signal, scope and window
    paging = [a for a in alerts if a.severity == "page" and a.signal == "override_rate"]
    assert paging, "the trust-decay scenario must page on the override rate"


def test_every_worker_sees_every_input_partition_whether_it_leads_the_group_or_not(deployment: Deployment) -> None:
    # Any worker may hold a model's evaluation lease, so each must know every partition the watermark ranges over:
    # one that knew none (Faust reads it from metadata only the group's leader keeps) never closed a window.
    workers = [deployment.start_worker(), deployment.start_worker()]
    topics = {deployment.topic(t) for t in ("predictions", "actions", "outcomes")}

    def known(port: int) -> int:
        return sum(1 for line in metrics_text(port).splitlines()
                   if line.startswith("trustgap_partition_idle{") and any(f'"{t}"' in line for t in topics))

    wait_for(lambda: all(known(w.web_port) == 3 * deployment.settings.topic_partitions  # type: ignore[attr-defined]
                         for w in workers), 60, what="both workers to know every input partition")
