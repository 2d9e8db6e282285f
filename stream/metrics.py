"""Prometheus metrics, all on an injected registry (tests build a fresh `CollectorRegistry`)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    """Every metric trustgap exports. Labels are bounded: topics, reasons, models, signals, capped scopes."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        """Declare every metric on the registry.

        Long because it is the list of every metric, one declaration each, so the whole set reads in one place."""
        r = self.registry = registry if registry is not None else CollectorRegistry()
        self.events = Counter("trustgap_events", "Events by topic and what happened to them (applied, duplicate, "
                              "pending, late, beyond_horizon, invalid, future)", ["topic", "result"], registry=r)
        # what happened to each model's events against its windows: counted into their (prediction's) window,
        # late (that window's stage was already judged: the event is kept out of a decision already made), or
        # beyond the horizon (older than the kind's last checkpoint: outside the definition). `signal` is one of
        # windows.STAGE_SIGNAL's values; models are capped by admission. late / (late + counted) is what
        # TrustgapLateData watches.
        self.counted_events = Counter("trustgap_counted_events", "Events counted into their window, by model "
                                      "and signal (predictions, actions, outcomes)", ["model", "signal"], registry=r)
        self.late_events = Counter("trustgap_late_events", "Events that came after their window's stage was "
                                   "judged, by model and signal", ["model", "signal"], registry=r)
        self.beyond_horizon_events = Counter("trustgap_beyond_horizon_events", "Actions/outcomes older than "
                                             "their kind's horizon after their prediction: counted here, in no "
                                             "window", ["model", "signal"], registry=r)
        self.invalid = Counter("trustgap_invalid_events", "Events sent to the dead-letter topic, by reason",
                               ["topic", "reason"], registry=r)
        self.orphans = Counter("trustgap_orphaned_events", "Actions/outcomes whose prediction never arrived",
                               ["kind"], registry=r)
        self.rate = Gauge("trustgap_window_rate", "Rate in the newest window judged for the signal, at its latest "
                          "look (segment_shift: the scope's share of the window's predictions)",
                          ["model", "signal", "scope"], registry=r)
        self.baseline = Gauge("trustgap_baseline_rate", "Baseline the newest judged window was compared with, "
                              "per measured scope", ["model", "signal", "scope"], registry=r)
        self.samples = Gauge("trustgap_window_samples", "Trials behind trustgap_window_rate",
                             ["model", "signal", "scope"], registry=r)
        self.alerts = Counter("trustgap_alerts_published", "Alignment alerts published",
                              ["model", "signal", "classification", "severity", "status"], registry=r)
        self.alert_active = Gauge("trustgap_alert_active", "1 while an alignment alert is firing",
                                  ["model", "signal", "scope", "classification", "severity", "recommendation"],
                                  registry=r)
        self.watermark = Gauge("trustgap_watermark_timestamp_seconds", "Event-time watermark per model",
                               ["model"], registry=r)
        # per input partition: labels bounded by the event topics' partitions
        self.partition_event_time = Gauge("trustgap_partition_event_time_seconds", "Newest event time applied from "
                                          "a partition of the event topics (the watermark is their minimum over "
                                          "the partitions that are not idle)", ["topic", "partition"], registry=r)
        self.partition_idle = Gauge("trustgap_partition_idle", "1 while a partition of the event topics is idle "
                                    "(read to its end, nothing new for idle_timeout): it does not hold the "
                                    "watermark back", ["topic", "partition"], registry=r)
        self.consumer_lag = Gauge("trustgap_consumer_lag", "Messages of an input partition this worker owns not "
                                  "applied yet: the broker's end offset minus the offset Redis holds as applied. "
                                  "Only the partition's owner exports it, and drops it when the partition is "
                                  "revoked, so a sum over workers counts each partition once",
                                  ["topic", "partition"], registry=r)
        self.watermark_lag = Gauge("trustgap_watermark_lag_seconds", "Wall clock minus the watermark per model",
                                   ["model"], registry=r)
        self.closed = Gauge("trustgap_last_closed_window_end_seconds", "End of the last evaluated window",
                            ["model"], registry=r)
        self.windows = Counter("trustgap_windows_evaluated", "Windows closed and evaluated by this worker",
                               ["model"], registry=r)
        self.redis_errors = Counter("trustgap_redis_errors", "Redis calls that failed (retried with back-off)",
                                    registry=r)
        self.label_overflow = Counter("trustgap_label_overflow", "Producer-chosen names over their cap, counted "
                                      "as __other__, by kind (model, dimension, value)", ["kind"], registry=r)
        self.offset_seeks = Counter("trustgap_offset_seeks", "Partitions sought back to the offset Redis holds, by "
                                    "cause (assignment, redis_restart)", ["cause"], registry=r)
        self.topics_recreated = Counter("trustgap_topics_recreated", "Topics found missing and re-created (a "
                                        "broker that restarted on empty storage)", registry=r)
        self.healthy = Gauge("trustgap_healthy", "1 when Redis and the broker answer, 0 while degraded", registry=r)
        self.batch_seconds = Histogram("trustgap_batch_seconds",
                                       "Time from a chunk's first message parsed to its events applied in Redis",
                                       ["topic"], registry=r,
                                       buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
        # feature health: feature labels are bounded by each model's `max_features`
        self.feature_null_rate = Gauge("trustgap_feature_null_rate", "Share of the last closed window's "
                                       "predictions where the feature was null or absent", ["model", "feature"],
                                       registry=r)
        self.feature_distinct = Gauge("trustgap_feature_distinct", "Approximate distinct values of the feature "
                                      "in the last closed window", ["model", "feature"], registry=r)
        self.feature_alert_active = Gauge("trustgap_feature_alert_active", "1 while a feature-health alert is "
                                          "open (transient or sustained)", ["model", "signal", "feature"],
                                          registry=r)
        self.features_untracked = Counter("trustgap_feature_values_untracked", "Feature values not tracked "
                                          "because the model already tracks `max_features` features",
                                          ["model"], registry=r)
