"""Grafana dashboards as code (grafana-foundation-sdk): an overview and a per-model drill-down.

One small function per panel; `python -m deploy.generate` writes the JSON to `deploy/grafana/dashboards/`.
Every panel's PromQL is also run against a real Prometheus by the end-to-end test, so a query that returns
nothing fails a test, not an on-call engineer.
"""

from __future__ import annotations

import json
from typing import Any

from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.builders import common, prometheus, stat, table, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.common import ScaleDistribution
from grafana_foundation_sdk.models.dashboard import DataSourceRef, VariableOption, VariableRefresh

from .alerts import THRESHOLDS

DS = DataSourceRef(type_val="prometheus", uid="${datasource}")
JOB = "trustgap"


def query(expr: str, legend: str = "", instant: bool = False) -> prometheus.Dataquery:
    q = prometheus.Dataquery().expr(expr).legend_format(legend or "__auto")
    return q.instant() if instant else q.range()


def series(title: str, unit: str, *queries: prometheus.Dataquery, span: int = 12,
           description: str = "") -> timeseries.Panel:
    panel = timeseries.Panel().title(title).unit(unit).datasource(DS).span(span).height(8)
    if description:
        panel = panel.description(description)
    for q in queries:
        panel = panel.with_target(q)
    return panel


def single(title: str, unit: str, q: prometheus.Dataquery, span: int = 4, description: str = "") -> stat.Panel:
    panel = stat.Panel().title(title).unit(unit).datasource(DS).span(span).height(4).with_target(q)
    return panel.description(description) if description else panel


def datasource_variable() -> dash.DatasourceVariable:
    return dash.DatasourceVariable("datasource").label("Prometheus").type("prometheus")


def model_variable(multi: bool) -> dash.QueryVariable:
    v = (dash.QueryVariable("model").label("Model").datasource(DS)
         .query("label_values(trustgap_window_rate, model)").refresh(VariableRefresh.ON_TIME_RANGE_CHANGED))
    if multi:
        v = v.multi(True).include_all(True).all_value(".*").current(
            VariableOption(selected=True, text="All", value="$__all"))
    return v


# --- overview panels ------------------------------------------------------------------------------------------

RATES = 'signal!~"segment_shift|outcome_value"'  # the percentages: a share and an amount have panels of their own


def rate_vs_baseline() -> timeseries.Panel:
    sel = f'model=~"$model", {RATES}'
    return series("Window rate vs baseline", "percentunit",
                  query(f"max by (model, signal, scope) (trustgap_window_rate{{{sel}}})",
                        "{{model}} {{signal}} {{scope}}"),
                  query(f"max by (model, signal, scope) (trustgap_baseline_rate{{{sel}}})",
                        "{{model}} {{signal}} {{scope}} baseline"),
                  span=24, description="Rate of each signal in the newest judged window per model and scope, "
                  "against the baseline it was compared with.")


def active_alerts() -> stat.Panel:
    return single("Alignment alerts firing", "none", query(
        'count(max by (model, signal, scope) (trustgap_alert_active{model=~"$model"}) == 1) or vector(0)',
        instant=True), description="Alignment-gap alerts trustgap currently reports as firing.")


def firing_table() -> table.Panel:
    q = query('max by (model, signal, scope, classification, severity, recommendation) '
              '(trustgap_alert_active{model=~"$model"}) == 1', instant=True)
    return (table.Panel().title("Firing alignment alerts").datasource(DS).span(16).height(8).with_target(q)
            .description("What trustgap says is broken and what it recommends."))


def workers_up() -> stat.Panel:
    return single("Workers up", "none", query(f'sum(up{{job="{JOB}"}})', instant=True))


def throughput() -> timeseries.Panel:
    return series("Events per second by topic and result", "ops", query(
        "sum by (topic, result) (rate(trustgap_events_total[$__rate_interval]))", "{{topic}} {{result}}"),
        span=12)


def dead_letters() -> timeseries.Panel:
    return series("Dead letters per second by reason", "ops", query(
        "sum by (topic, reason) (rate(trustgap_invalid_events_total[$__rate_interval]))", "{{topic}} {{reason}}"),
        span=12)


def watermark_lag() -> timeseries.Panel:
    return series("Watermark lag", "s", query(
        'min by (model) (trustgap_watermark_lag_seconds{model=~"$model"})', "{{model}}"), span=12,
        description="Wall clock minus the event-time watermark: how late windows close.")


def consumer_lag() -> timeseries.Panel:
    # per topic, summed over the workers: each partition's lag is exported by its owner only
    return series("Consumer lag", "short", query(
        "sum by (topic) (trustgap_consumer_lag)", "{{topic}}"), span=12,
        description="Messages of each input topic not applied yet: the broker's end minus the offsets Redis holds "
        f"as applied. TrustgapConsumerLag pages when it stays over {THRESHOLDS['consumer_lag_messages']:,.0f} and "
        "stops shrinking.")


def late_events() -> timeseries.Panel:
    sel = 'model=~"$model"'
    # log scale: late events are meant to be a sliver of the counted ones and would lie flat on a linear axis
    return (series("Late vs counted events per model and signal", "ops",
                   query(f"sum by (model, signal) (rate(trustgap_counted_events_total{{{sel}}}[$__rate_interval]))",
                         "{{model}} {{signal}} counted"),
                   query(f"sum by (model, signal) (rate(trustgap_late_events_total{{{sel}}}[$__rate_interval]))",
                         "{{model}} {{signal}} late"),
                   span=24, description="Events counted into their window against those that came after their "
                   "window was judged for their signal. TrustgapLateData fires when late is over 1% of a model's "
                   "events; `trustgap status` names the windows.")
            .scale_distribution(common.ScaleDistributionConfig().type(ScaleDistribution.LOG).log(10)))


def batch_latency() -> timeseries.Panel:
    return series("Batch apply time (p99)", "s", query(
        "histogram_quantile(0.99, sum by (le, topic) (rate(trustgap_batch_seconds_bucket[$__rate_interval])))",
        "{{topic}}"), span=12)


def redis_errors() -> timeseries.Panel:
    return series("Redis errors and worker health", "none",
                  query("sum by (instance) (rate(trustgap_redis_errors_total[$__rate_interval]))",
                        "{{instance}} errors/s"),
                  query("min by (instance) (trustgap_healthy)", "{{instance}} healthy"), span=12)


def overview() -> dash.Dashboard:
    return (dash.Dashboard("trustgap — overview").uid("trustgap-overview").tags(["trustgap"])
            .refresh("30s").time("now-6h", "now").timezone("utc").editable()
            .with_variable(datasource_variable()).with_variable(model_variable(multi=True))
            .with_row(dash.Row("Alignment"))
            .with_panel(active_alerts()).with_panel(workers_up()).with_panel(firing_table())
            .with_panel(rate_vs_baseline())
            .with_row(dash.Row("Pipeline"))
            .with_panel(throughput()).with_panel(dead_letters()).with_panel(late_events())
            .with_panel(watermark_lag()).with_panel(consumer_lag())
            .with_panel(batch_latency()).with_panel(redis_errors()))


# --- model drill-down panels ----------------------------------------------------------------------------------

def by_scope(dimension: str, scopes: str) -> timeseries.Panel:
    sel = f'model="$model", {RATES}, {scopes}'
    return series(f"Rates by {dimension}", "percentunit",
                  query(f"max by (signal, scope) (trustgap_window_rate{{{sel}}})", "{{signal}} {{scope}}"),
                  query(f"max by (signal, scope) (trustgap_baseline_rate{{{sel}}})", "{{signal}} {{scope}} baseline"),
                  span=12)


def shares(scopes: str) -> timeseries.Panel:
    sel = f'model="$model", signal="segment_shift", {scopes}'
    return series("Share of the predictions by segment", "percentunit",
                  query(f"max by (scope) (trustgap_window_rate{{{sel}}})", "{{scope}}"),
                  span=24, description="Each segment value's share of the newest judged window's predictions "
                  "(dimension=*new*: the values never seen in the baseline, together, while segment_shift alerts "
                  "on them); the firing table says what segment_shift makes of a change.")


def values() -> timeseries.Panel:
    sel = 'model="$model", signal="outcome_value"'
    return series("Truth outcome value per prediction", "none",
                  query(f"max by (scope) (trustgap_window_rate{{{sel}}})", "{{scope}}"),
                  span=24, description="The truth outcomes' values (claim amounts, revenue) per prediction of the "
                  "newest judged window at its latest look: the whole model ('all'), each band and segment; the "
                  "firing table says what outcome_value makes of a change.")


def samples(dimension: str, scopes: str) -> timeseries.Panel:
    return series(f"Trials per window by {dimension}", "none", query(
        f'max by (signal, scope) (trustgap_window_samples{{model="$model", {RATES}, {scopes}}})',
        "{{signal}} {{scope}}"), span=12, description="How many actions/outcomes the newest judged window's rate "
        "rests on: thin scopes are not tested.")


def feature_alerts() -> stat.Panel:
    return single("Feature-health alerts firing", "none", query(
        'count(trustgap_alert_active{model="$model", signal=~"feature_.*"} == 1) or vector(0)', instant=True),
        description="Dead, frozen, rescaled or missing inputs; while one fires, outcome alerts point at it.")


def feature_table() -> table.Panel:
    q = query('max by (signal, scope, classification, recommendation) '
              '(trustgap_alert_active{model="$model"}) == 1', instant=True)
    return (table.Panel().title("Firing alerts of this model").datasource(DS).span(20)
            .height(6).with_target(q))


def windows_evaluated() -> timeseries.Panel:
    return series("Windows evaluated per hour", "none", query(
        'sum(increase(trustgap_windows_evaluated_total{model="$model"}[1h]))', "windows"), span=12)


def alerts_published() -> timeseries.Panel:
    return series("Alerts published per hour", "none", query(
        'sum by (signal, status) (increase(trustgap_alerts_published_total{model="$model"}[1h]))',
        "{{signal}} {{status}}"), span=12)


BANDS = 'scope=~"band=.*"'
SEGMENTS = 'scope!~"all|band=.*"'  # every segment dimension


def model_detail() -> dash.Dashboard:
    return (dash.Dashboard("trustgap — model").uid("trustgap-model").tags(["trustgap"])
            .refresh("30s").time("now-6h", "now").timezone("utc").editable()
            .with_variable(datasource_variable()).with_variable(model_variable(multi=False))
            .with_row(dash.Row("Feature health"))
            .with_panel(feature_alerts()).with_panel(feature_table())
            .with_row(dash.Row("By band"))
            .with_panel(by_scope("band", BANDS)).with_panel(samples("band", BANDS))
            .with_row(dash.Row("By segment"))
            .with_panel(by_scope("segment", SEGMENTS)).with_panel(samples("segment", SEGMENTS))
            .with_panel(shares(SEGMENTS))
            .with_row(dash.Row("Outcome value")).with_panel(values())
            .with_row(dash.Row("Evaluation"))
            .with_panel(windows_evaluated()).with_panel(alerts_published()))


DASHBOARDS = {"overview": overview, "model": model_detail}


def render(builder: dash.Dashboard) -> str:
    """Dashboard JSON with unique panel ids and query refIds, which Grafana needs and the SDK leaves to us."""
    document = json.loads(json.dumps(builder.build(), cls=JSONEncoder))
    panels = [p for panel in document["panels"] for p in [panel, *panel.get("panels", [])]]
    for n, panel in enumerate(panels, 1):
        panel["id"] = n
        for i, target in enumerate(panel.get("targets") or []):
            target["refId"] = chr(ord("A") + i)
    return json.dumps(document, indent=2, sort_keys=True) + "\n"


def panel_queries(document: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, PromQL) for every target of every panel, rows included."""
    out = []
    for panel in document.get("panels", []):
        for sub in [panel, *panel.get("panels", [])]:
            for target in sub.get("targets", []) or []:
                if target.get("expr"):
                    out.append((sub.get("title", ""), target["expr"]))
    return out
