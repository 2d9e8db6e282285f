"""Prometheus alerting rules for trustgap, as data: every threshold and `for:` in one place, one file per area.

`python -m deploy.generate` writes them to `deploy/prometheus/rules/`; the promtool tests in
`deploy/prometheus/tests/` are written by hand against the generated files, so a changed threshold shows up there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

RUNBOOK = "https://github.com/trustgap/trustgap/blob/main/deploy/RUNBOOK.md"
JOB = "trustgap"  # the scrape job of the workers in prometheus.yml

# Every number an alert compares with. Change it here, regenerate, and update the promtool tests.
THRESHOLDS: dict[str, float] = {
    "dead_letter_ratio": 0.01,         # share of a topic's events sent to the dead-letter topic
    "watermark_lag_seconds": 2 * 3600,  # wall clock minus event-time watermark: two default windows behind
    "redis_errors": 10,                # failed Redis calls per worker in the rate window
    "late_ratio": 0.01,                # share of a model's events that came after their window was judged
    # messages of a topic not applied yet, over its partitions. A healthy group holds at most what its consumers
    # fetched ahead (aiokafka's 1 MiB per partition, a few thousand single-event messages) plus the chunks in
    # flight: under 30k for a topic of 8 partitions at full speed. A stuck worker's topic at a few hundred
    # messages a second crosses this within minutes.
    "consumer_lag_messages": 100_000,
}
RATE_WINDOW = "10m"

# How long a condition must hold before it fires. trustgap's own alignment alerts are already sustained over
# `persistence` windows, so their `for:` only rides out a missed scrape.
FOR: dict[str, str] = {
    "gap": "5m",
    "feature": "5m",
    "dead_letter": "15m",
    "lag": "15m",
    "consumer_lag": "15m",
    "late": "15m",
    "redis": "5m",
    "down": "3m",
    "absent": "5m",
    "degraded": "5m",
}

# Signals tested against a baseline that trustgap can alert on; the alert's severity comes from trustgap itself.
GAP_SIGNALS: dict[str, str] = {
    "override_rate": "TrustgapOverrideRateGap",
    "outcome_mismatch": "TrustgapOutcomeMismatchGap",
    "proxy_divergence": "TrustgapProxyDivergenceGap",
    "segment_shift": "TrustgapSegmentShift",
    "outcome_value": "TrustgapOutcomeValueGap",
}
AMOUNT_SIGNALS = {"outcome_value"}  # a value per prediction (money), not a share: formatted as a number


@dataclass(frozen=True)
class Alert:
    name: str
    expr: str
    for_key: str
    summary: str
    description: str
    anchor: str
    severity: str | None = None  # None: keep the series' own `severity` label (trustgap decided it)
    labels: dict[str, str] = field(default_factory=dict)

    def rule(self, for_override: str | None = None) -> dict[str, Any]:
        labels = dict(self.labels)
        if self.severity:
            labels["severity"] = self.severity
        rule: dict[str, Any] = {"alert": self.name, "expr": self.expr, "for": for_override or FOR[self.for_key]}
        if labels:
            rule["labels"] = labels
        rule["annotations"] = {"summary": self.summary, "description": self.description,
                               "runbook_url": f"{RUNBOOK}#{self.anchor}"}
        return rule


def _query_value(metric: str, fmt: str) -> str:
    """Template that looks up one of the alert's series on another metric and formats its value."""
    q = f'max({metric}{{model=%q,signal=%q,scope=%q}})'
    return (f'{{{{ with printf "{q}" $labels.model $labels.signal $labels.scope | query }}}}'
            f'{{{{ . | first | value | {fmt} }}}}{{{{ else }}}}unknown{{{{ end }}}}')


def _recommendation() -> str:
    q = 'max by (recommendation) (trustgap_alert_active{model=%q,signal=%q,scope=%q} == 1)'
    return (f'{{{{ with printf "{q}" $labels.model $labels.signal $labels.scope | query }}}}'
            f'{{{{ . | first | label "recommendation" }}}}{{{{ else }}}}unknown{{{{ end }}}}')


def gap_alert(signal: str, name: str) -> Alert:
    fmt = "humanize" if signal in AMOUNT_SIGNALS else "humanizePercentage"
    return Alert(
        name=name,
        expr=(f'max by (model, signal, scope, severity) '
              f'(trustgap_alert_active{{signal="{signal}", classification="sustained"}}) == 1'),
        for_key="gap",
        summary=f"Sustained {signal} gap on model {{{{ $labels.model }}}} ({{{{ $labels.scope }}}})",
        description=(f"{signal} of model {{{{ $labels.model }}}} in scope {{{{ $labels.scope }}}} was "
                     f"{_query_value('trustgap_window_rate', fmt)} in the newest judged window "
                     f"against a baseline of {_query_value('trustgap_baseline_rate', fmt)}, "
                     f"for several windows in a row. trustgap recommends: {_recommendation()}."),
        anchor=signal.replace("_", "-"))


ALIGNMENT = [gap_alert(s, n) for s, n in GAP_SIGNALS.items()] + [Alert(
    name="TrustgapFeatureHealth",
    expr='max by (model, signal, scope, severity) (trustgap_alert_active{signal=~"feature_.*"}) == 1',
    for_key="feature",
    summary="Feature health: {{ $labels.signal }} on model {{ $labels.model }}",
    description=("trustgap reports {{ $labels.signal }} for model {{ $labels.model }} ({{ $labels.scope }}): an "
                 "upstream input is dead, frozen, rescaled, missing or out of its categories. Outcome alerts of "
                 "this model are held back while this fires; fix the feature before retraining."),
    anchor="feature-health")]

PIPELINE = [
    Alert(
        name="TrustgapDeadLetterRate",
        expr=(f'sum by (job, topic) (rate(trustgap_invalid_events_total[{RATE_WINDOW}])) '
              f'/ sum by (job, topic) (rate(trustgap_events_total[{RATE_WINDOW}])) '
              f'> {THRESHOLDS["dead_letter_ratio"]:g}'),
        for_key="dead_letter", severity="ticket",
        summary="Events on {{ $labels.topic }} are being dead-lettered",
        description=("{{ $value | humanizePercentage }} of the events on {{ $labels.topic }} went to the "
                     f"dead-letter topic over the last {RATE_WINDOW} (threshold "
                     f"{THRESHOLDS['dead_letter_ratio']:.0%}); a producer is sending malformed events."),
        anchor="dead-letters"),
    Alert(
        name="TrustgapWatermarkLag",
        expr=(f'min by (job, model) (trustgap_watermark_lag_seconds) '
              f'> {THRESHOLDS["watermark_lag_seconds"]:g}'),
        for_key="lag", severity="ticket",
        summary="Model {{ $labels.model }}'s windows are falling behind",
        description=("The event-time watermark of model {{ $labels.model }} is {{ $value | humanizeDuration }} "
                     "behind the wall clock (threshold "
                     f"{THRESHOLDS['watermark_lag_seconds'] / 3600:g}h): consumers lag or the model stopped "
                     "sending predictions, and its windows close late."),
        anchor="watermark-lag"),
    Alert(
        # Above the threshold and not shrinking: the slope over the rate window, of the topic's total (a subquery,
        # so a partition that moves to another worker does not break the line), is >= 0. A group catching up
        # after an outage has a large lag that falls, and must not page; one that catches up too slowly for the
        # windows is TrustgapWatermarkLag's case.
        name="TrustgapConsumerLag",
        expr=(f'sum by (job, topic) (trustgap_consumer_lag) > {THRESHOLDS["consumer_lag_messages"]:g} '
              f'and deriv((sum by (job, topic) (trustgap_consumer_lag))[{RATE_WINDOW}:1m]) >= 0'),
        for_key="consumer_lag", severity="page",
        summary="Consumers of {{ $labels.topic }} are not catching up",
        description=("{{ $value | humanize }} messages on {{ $labels.topic }} are not applied yet and the backlog "
                     f"has not shrunk for {FOR['consumer_lag']} (threshold "
                     f"{THRESHOLDS['consumer_lag_messages']:,.0f}): a worker is stuck or the group cannot keep up "
                     "with the producers. Windows close late and no alert is decided on what waits. `trustgap "
                     "status` shows the lag per topic."),
        anchor="consumer-lag"),
    Alert(
        name="TrustgapLateData",
        expr=(f'sum by (job, model) (rate(trustgap_late_events_total[{RATE_WINDOW}])) '
              f'/ (sum by (job, model) (rate(trustgap_late_events_total[{RATE_WINDOW}])) '
              f'+ sum by (job, model) (rate(trustgap_counted_events_total[{RATE_WINDOW}]))) '
              f'> {THRESHOLDS["late_ratio"]:g}'),
        for_key="late", severity="ticket",
        summary="Model {{ $labels.model }}'s events arrive after their windows were judged",
        description=("{{ $value | humanizePercentage }} of model {{ $labels.model }}'s events over the last "
                     f"{RATE_WINDOW} came after their window was judged for their signal (threshold "
                     f"{THRESHOLDS['late_ratio']:.0%}): they are counted as late, and those windows were judged "
                     "without them. `trustgap status` shows which windows."),
        anchor="late-data"),
    Alert(
        name="TrustgapRedisErrors",
        expr=(f'sum by (job, instance) (increase(trustgap_redis_errors_total[{RATE_WINDOW}])) '
              f'> {THRESHOLDS["redis_errors"]:g}'),
        for_key="redis", severity="ticket",
        summary="Worker {{ $labels.instance }} keeps failing Redis calls",
        description=("{{ $value | humanize }} Redis calls failed on {{ $labels.instance }} over the last "
                     f"{RATE_WINDOW} (threshold {THRESHOLDS['redis_errors']:g}); the worker retries with "
                     "back-off, so processing slows down until Redis answers."),
        anchor="redis-errors"),
]

WORKER = [
    Alert(
        name="TrustgapWorkerDown",
        expr=f'up{{job="{JOB}"}} == 0',
        for_key="down", severity="page",
        summary="trustgap worker {{ $labels.instance }} is down",
        description=("Prometheus cannot scrape {{ $labels.instance }}: the worker crashed or is unreachable. "
                     "The other workers take over its partitions after the session timeout."),
        anchor="worker-down"),
    Alert(
        name="TrustgapWorkersAbsent",
        expr=f'absent(up{{job="{JOB}"}})',
        for_key="absent", severity="page",
        summary="No trustgap worker is being scraped",
        description=(f"Prometheus has no target in job {JOB}: no alignment gap can be detected or alerted on."),
        anchor="workers-absent"),
    Alert(
        name="TrustgapWorkerDegraded",
        expr='trustgap_healthy == 0',
        for_key="degraded", severity="page",
        summary="trustgap worker {{ $labels.instance }} is degraded",
        description=("{{ $labels.instance }} reports itself unhealthy (see its /health for the reason): it is "
                     "not applying events while Redis does not answer."),
        anchor="worker-degraded"),
]

AREAS: dict[str, list[Alert]] = {"alignment": ALIGNMENT, "pipeline": PIPELINE, "worker": WORKER}


def rule_files(for_override: str | None = None) -> dict[str, dict[str, Any]]:
    """{file stem: rule-file document}; `for_override` replaces every `for:` (the end-to-end test's copy)."""
    return {area: {"groups": [{"name": f"trustgap-{area}", "rules": [a.rule(for_override) for a in alerts]}]}
            for area, alerts in AREAS.items()}
