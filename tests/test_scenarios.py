"""Every simulator scenario yields the alerts it should: in memory (replay), and through the real broker and Redis.

The integration run sends all scenarios at once, one model each, into one worker, and checks that the alerts
topic carries exactly the alerts the in-memory replay decides for the same events (byte for byte but for the
publication time), plus each scenario's expected story.
"""

from __future__ import annotations

import functools
import heapq
import math
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from stream.admin import confluent_config
from stream.client import BatchProducer
from stream import detect, gate
from stream.events import EventKind
from stream.offline import Run, replay, settings_for
from stream.settings import ModelSettings
from stream.simulate import PROFILES, SCENARIOS, generate
from stream.times import epoch_ms, parse_ms
from tests.support.harness import Deployment, metric_value, metrics_text, wait_for
from tests.support.ops import http_json

DAYS, RATE, SEED = 3.0, 250.0, 1
END = datetime(2026, 11, 12, tzinfo=timezone.utc)  # more than LATENESS + 1 h before "now" (see max_future_seconds)
LATENESS = ModelSettings().allowed_lateness_seconds  # the default: the topics are consumed concurrently, and
#                        windows wait for the slowest partition; a final event then closes the last windows

# scenario -> (signal, scope, recommendation, severity) of every sustained alert it fires: one page (or ticket) per
# cause, the scopes whose rise is the cause's in its diagnosis; classifications it must and must not publish
STORY: dict[str, tuple[set[tuple[str, str, str, str]], set[str], set[str]]] = {
    "quiet": (set(), set(), {"sustained"}),
    "trust_decay": ({("override_rate", "region=eu", "investigate_segment", "page")}, {"sustained"}, set()),
    "trust_erosion": ({("override_rate", "all", "investigate_trust", "page")}, {"sustained"}, set()),
    "outcome_drift": ({("outcome_mismatch", "all", "retrain_candidate", "page")}, {"sustained"}, set()),
    "clickbait": ({("proxy_divergence", "all", "review_objective", "ticket"),
                   ("outcome_mismatch", "all", "review_objective", "page")}, {"sustained"}, set()),
    "campaign": (set(), {"expected"}, {"sustained"}),
    "blip": (set(), {"transient"}, {"sustained"}),
    "flash_sale": (set(), {"transient"}, {"sustained", "expected"}),
    "slow_claims": ({("outcome_mismatch", "all", "retrain_candidate", "page")}, {"sustained"}, set()),
    "cohort_shift": ({("segment_shift", "channel=*new*", "review_segments", "ticket")}, {"sustained"}, {"expected"}),
    "loss_ratio_low_band": ({("outcome_value", "band=low", "investigate_segment", "page")}, {"sustained"},
                            {"expected"}),
}


# scenario -> the retrain gate's verdict and reasons once the run is judged (stream.gate): retraining is the fix only
# where the world moved broadly; a campaign that ended leaves its windows to exclude and nothing to wait for
GATE: dict[str, tuple[str, list[str]]] = {
    "quiet": ("go", []), "trust_decay": ("hold", ["concentrated"]), "trust_erosion": ("hold", ["trust"]),
    "outcome_drift": ("go", ["broad_outcome_rise"]), "clickbait": ("hold", ["proxy_divergence"]),
    "campaign": ("go", []), "blip": ("go", []), "cohort_shift": ("hold", ["segment_shift"]),
    "loss_ratio_low_band": ("hold", ["concentrated"]),
}


def twin_gate(scenario: str, run: Run) -> gate.Gate:
    """The gate over the in-memory twin's alerts (now: a day after the run)."""
    last = max(run.windows(), default=None)
    return gate.decide(scenario, run.twin.published(), run.twin.annotations, epoch_ms(END) + 86_400_000, last)


def check_story(scenario: str, alerts: list[dict[str, Any]]) -> None:
    sustained, must, must_not = STORY[scenario]
    pages = [(a["signal"], ",".join(f"{k}={v}" for k, v in a["scope"].items()) or "all", a["recommendation"],
              a["severity"]) for a in alerts if a["classification"] == "sustained" and a["status"] == "firing"]
    classes = {a["classification"] for a in alerts}
    assert sorted(pages) == sorted(sustained), scenario  # each once: one page per cause
    assert must <= classes and not (must_not & classes), (scenario, classes)
    if scenario == "trust_decay":
        [page] = [a for a in alerts if a["classification"] == "sustained"]
        assert any(d.startswith("region=eu carries") for d in page["diagnosis"]), page["diagnosis"]
        assert any(d.startswith("also visible in") and "the whole model" in d for d in page["diagnosis"])
    if scenario == "campaign":
        assert {a["recommendation"] for a in alerts if a["classification"] == "expected"} == {"none"}
        assert {a["severity"] for a in alerts if a["classification"] == "expected"} == {"info"}
    if scenario == "blip":
        assert {a["recommendation"] for a in alerts} == {"exclude_window_from_training"}
        assert {a["signal"] for a in alerts} == {"override_rate"}
        assert len({a["window"]["start"] for a in alerts}) == 2  # the 90-minute outage touches two windows
    if scenario == "flash_sale":
        # the promotion's two prediction days, not the third day its late outcomes arrive in
        days = sorted({a["window"]["start"] for a in alerts})
        assert len(days) == 2 and {a["signal"] for a in alerts} == {"override_rate", "outcome_mismatch"}
        assert {a["recommendation"] for a in alerts} == {"exclude_window_from_training"}
    if scenario == "cohort_shift":
        # one cause, one ticket: the never-seen channel, named, and no rate signal moved
        tickets = [a for a in alerts if a["classification"] == "sustained" and a["status"] == "firing"]
        assert [(a["signal"], a["scope"], a["recommendation"], a["severity"]) for a in tickets] == [
            ("segment_shift", {"channel": "*new*"}, "review_segments", "ticket")]
        assert any(d.startswith("values of channel never seen in the baseline went from 0% to 4")
                   and "channel=campaign" in d for d in tickets[0]["diagnosis"])
        assert {a["signal"] for a in alerts} == {"segment_shift"}
    if scenario == "loss_ratio_low_band":
        # dearer claims in one band: its value per prediction pages, naming the band; the model as a whole (the
        # band's third of the traffic diluted) only blips, and nothing about the labels moves
        pages = [a for a in alerts if a["classification"] == "sustained" and a["status"] == "firing"]
        assert [(a["signal"], a["scope"], a["recommendation"], a["severity"]) for a in pages] == [
            ("outcome_value", {"band": "low"}, "investigate_segment", "page")]
        assert pages[0]["diagnosis"][-1].startswith("band=low carries"), pages[0]["diagnosis"]
        assert {a["signal"] for a in alerts} == {"outcome_value"}
    if scenario == "slow_claims":
        # claims settle 1-6 days after the decision: nothing at age 1d, the first look with enough claims is 2d
        first = next(a for a in alerts if not a["scope"])
        assert first["diagnosis"][0].startswith("at age 2d "), first["diagnosis"][0]


def _same(x: Any, y: Any) -> bool:
    """Equal, floats to 1e-9 relative: an outcome value's sums are added in another order in Redis (per bucket,
    then over buckets) than in the twin, which moves their last bits."""
    if isinstance(x, float) and isinstance(y, float):
        return math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-300)
    if isinstance(x, dict) and isinstance(y, dict):
        return x.keys() == y.keys() and all(_same(x[k], y[k]) for k in x)
    if isinstance(x, list) and isinstance(y, list):
        return len(x) == len(y) and all(_same(a, b) for a, b in zip(x, y, strict=True))
    return bool(x == y)


@functools.cache
def profiled_run(scenario: str, bands: bool = True) -> Run:
    """A scenario with a profile, run with its own settings and length to its own watermark. Several tests read
    the same run (they never change it), and these are the slowest to judge: weeks of traffic."""
    return replay(scenario, seed=SEED, end=END, model=scenario, bands=bands)


def replayed_run(scenario: str, ms: ModelSettings, watermark: datetime | None = None) -> Run:
    """The in-memory twin's run; a scenario with a profile runs with its own settings and length."""
    if scenario in PROFILES:
        if watermark is None:
            return profiled_run(scenario)
        return replay(scenario, seed=SEED, end=END, model=scenario, watermark=watermark)
    return replay(scenario, ms, DAYS, RATE, SEED, END, model=scenario, watermark=watermark)


def replayed(scenario: str, ms: ModelSettings, watermark: datetime | None = None) -> list[dict[str, Any]]:
    """The alerts the in-memory twin publishes."""
    return [a.model_dump(mode="json") for a in replayed_run(scenario, ms, watermark).twin.published()]


# the feature scenarios have their own end-to-end test (test_feature_pipeline.py); the broker run below judges
# every model with one deployment's settings, so the scenarios with their own (one-day windows) run in memory only
RATE_SCENARIOS = sorted(STORY)
BROKER_SCENARIOS = sorted(set(STORY) - set(PROFILES))


def test_every_scenario_has_a_story_or_a_feature_test() -> None:
    assert set(SCENARIOS) == set(STORY) | {"feature_breakage", "feature_rescale", "stale_taxonomy"}
    assert set(PROFILES) <= set(STORY)


@pytest.mark.parametrize("scenario", RATE_SCENARIOS)
def test_scenario_story_in_memory(scenario: str) -> None:
    run = replayed_run(scenario, ModelSettings())
    check_story(scenario, [a.model_dump(mode="json") for a in run.twin.published()])
    got = twin_gate(scenario, run)
    if scenario in GATE:
        assert (got.verdict, [r.code for r in got.reasons]) == GATE[scenario]
    if scenario == "campaign":  # the annotated campaign's span is the one thing to leave out
        [span] = got.exclusions
        assert span.reasons == ("annotated campaign: weekend promotion: new-customer discount",)


# every scenario whose story is a rate's page or blip (where the concentration rule and the scopes matter; the
# quiet, annotated and segment stories have no scope to fold), with its profile where it has one
@pytest.mark.parametrize("scenario", ["trust_decay", "trust_erosion", "outcome_drift", "clickbait", "flash_sale",
                                      "slow_claims", "blip"])
def test_a_model_without_bands_tells_the_same_story(scenario: str) -> None:
    # no band in any prediction: band=all is the model itself, tested once, and the pages are the same
    if scenario in PROFILES:
        run = profiled_run(scenario, bands=False)
    else:
        run = replay(scenario, ModelSettings(), DAYS, RATE, SEED, END, model=scenario, bands=False)
    alerts = [a.model_dump(mode="json") for a in run.twin.published()]
    check_story(scenario, alerts)
    assert not [a for a in alerts if "band" in a["scope"]]
    assert not [d for a in alerts for d in a["diagnosis"] if "band=" in d]


def test_a_two_day_campaign_with_outcomes_hours_later_names_exactly_its_two_prediction_days() -> None:
    run = profiled_run("flash_sale")
    assert run.change_ms is not None
    day = 86_400_000
    alerts = run.twin.published()
    assert {int(a.window.start.timestamp() * 1000) for a in alerts} == {run.change_ms, run.change_ms + day}
    assert {a.classification for a in alerts} == {"transient"}
    # not trivially so: outcomes of the second day's predictions came during the third day, and count in the second
    late_truths = sum(1 for kind, e in generate("flash_sale", 21, 100, SEED, "flash_sale", END)
                      if kind == "outcome" and e["kind"] == "truth"
                      and parse_ms(e["ts"]) >= run.change_ms + 2 * day)
    assert late_truths > 0


def test_a_slow_outcome_shift_is_seen_at_the_first_look_with_enough_outcomes() -> None:
    run = profiled_run("slow_claims")
    ms = settings_for("slow_claims")
    due, alert = next((d, a) for d, a in run.alerts() if a.signal == "outcome_mismatch" and not a.scope)
    assert (due.window.start, due.stage.name) == (run.change_ms, "o1")  # the change's window, at age 2 days
    scoped = {k: v for (_, scope, k), v in run.twin.counts[due.window.start].items() if scope == ""}
    assert detect.at_look(scoped, "o", 0).get("o:truth", 0) < ms.min_samples  # at 1 day: too few claims to test
    assert detect.at_look(scoped, "o", 1)["o:truth"] >= ms.min_samples
    assert alert.classification == "transient" and alert.diagnosis[0].startswith("at age 2d ")


@pytest.fixture
def deployment(deploy: Callable[..., Deployment]) -> Deployment:
    return deploy()


Stream = Iterator[tuple[EventKind, dict[str, Any]]]


def in_time_order(streams: list[Stream]) -> Stream:
    """Several models' traffic merged by event time, as models that run side by side produce it (a scenario's
    annotations, which come first, stay first)."""
    return heapq.merge(*streams, key=lambda e: -2**62 if e[0] == "annotation" else parse_ms(e[1]["ts"]))


@pytest.mark.integration
def test_every_scenario_publishes_its_alerts_through_broker_and_redis(deployment: Deployment) -> None:
    worker = deployment.start_worker()
    settings = deployment.settings
    producer = BatchProducer(confluent_config(settings), settings.topics.model_dump())
    producer.send_all(in_time_order([generate(s, DAYS, RATE, SEED, model=s, end=END) for s in BROKER_SCENARIOS]))
    sent = producer.sent  # cumulative over the calls
    producer.close()
    # one last prediction per model pushes the watermark past the end of the run: every window closes now
    flush = END + timedelta(seconds=LATENESS, hours=1)
    ms = settings.for_model("quiet")
    # the in-memory twin's alerts at the worker's watermark (the flush minus the lateness), computed while the
    # worker applies the events
    expected = {s: replayed(s, ms, watermark=flush - timedelta(seconds=LATENESS)) for s in BROKER_SCENARIOS}
    total = sum(len(v) for v in expected.values())
    port = worker.web_port  # type: ignore[attr-defined]
    wait_for(lambda: metric_value(metrics_text(port), "trustgap_events_total", result="applied") == sent, 300,
             interval=1.0, what=f"all {sent} events to be applied")
    deployment.send("predictions", [{"schema_version": 1, "event_id": f"flush-{s}", "prediction_id": f"flush-{s}",
                                     "model": s, "model_version": "v1", "ts": flush.isoformat().replace("+00:00", "Z"),
                                     "label": "approve", "band": "low", "segment": {"region": "eu", "channel": "web"}}
                                    for s in BROKER_SCENARIOS])
    got = deployment.read("alerts", total, timeout=120)
    assert len(got) == total
    text = metrics_text(port)
    assert metric_value(text, "trustgap_events_total", result="late") == 0
    for scenario in BROKER_SCENARIOS:
        mine = [a for a in got if a["model"] == scenario]
        strip = lambda alerts: sorted(({**a, "ts": None} for a in alerts), key=lambda a: a["alert_id"])  # noqa
        assert _same(strip(mine), strip(expected[scenario])), (scenario, [
            {k: (x.get(k), y.get(k)) for k in x.keys() | y.keys() if not _same(x.get(k), y.get(k))}
            for x, y in zip(strip(mine), strip(expected[scenario]), strict=False) if not _same(x, y)][:3])
        check_story(scenario, mine)
        # the retrain gate on the worker's endpoint says what the twin's alerts say
        doc = http_json(f"http://127.0.0.1:{port}/v1/models/{scenario}/retrain-gate")
        assert (doc["verdict"], [r["reason"] for r in doc["reasons"]]) == GATE[scenario], (scenario, doc)
        if scenario == "campaign":  # the annotated campaign's span is what a training job leaves out
            assert [e["reasons"] for e in doc["exclusions"]] == [
                ["annotated campaign: weekend promotion: new-customer discount"]], doc["exclusions"]
