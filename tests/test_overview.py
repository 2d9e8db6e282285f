"""What status and report compute from history, late counts, alerts and consumer lag (pure), and how they read
Redis."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
import redis
from rich.console import Console

from stream.detect import Summary
from stream.events import AlertWindow, AlignmentAlert
from stream.overview import (
    ConsumerLag,
    ModelOverview,
    active_alerts,
    build,
    consumer_lag,
    read_history,
    window_rows,
)
from stream.report import late_section
from stream.settings import Settings
from stream.state import keys
from stream.views import lag_view, late_cell, model_panel, status_view

H = 3600 * 1000
T0 = datetime(2026, 11, 20, tzinfo=timezone.utc)


def s(i: int, overrides: int, excluded: bool = False) -> Summary:
    counts = {"n": 10, "a:accept": 100 - overrides, "a:override": overrides}
    return Summary(i * H, (i + 1) * H, "v1", {"": counts}, frozenset({"override_rate|"}) if excluded else frozenset())


def test_baseline_pools_the_trailing_windows_and_skips_excluded_ones() -> None:
    rows = window_rows({w.start: w for w in [s(0, 10), s(1, 20), s(2, 90, excluded=True), s(3, 30), s(4, 40)]},
                       baseline_windows=3)
    r = [row.rates["override_rate"] for row in rows]
    assert [(x.k, x.n) for x in r] == [(10, 100), (20, 100), (90, 100), (30, 100), (40, 100)]
    assert r[0].baseline is None                      # nothing before the first window
    assert (r[1].baseline_k, r[1].baseline_n) == (10, 100)
    assert (r[3].baseline_k, r[3].baseline_n) == (30, 200)  # windows 0-2, window 2 excluded
    assert (r[4].baseline_k, r[4].baseline_n) == (50, 200)  # windows 1-3 (only 3 trailing), 2 excluded


def a(i: int, status: str, classification: str, fp: str = "f") -> AlignmentAlert:
    start = T0 + timedelta(hours=i)
    return AlignmentAlert(alert_id=f"{fp}{i}{status}", fingerprint=fp, status=status,  # type: ignore[arg-type]
                          classification=classification, severity="page", signal="override_rate", model="m",
                          model_version="v1", scope={}, window=AlertWindow(start=start, end=start + timedelta(hours=1)),
                          observed=0.3, baseline=0.1, gap=0.2, n=100, baseline_n=100, persistence=1,
                          diagnosis=[], recommendation="none", ts=start + timedelta(hours=1))


def test_active_alerts_are_the_newest_firing_per_fingerprint_sustained_or_about_the_latest_window() -> None:
    latest = int((T0 + timedelta(hours=5)).timestamp() * 1000)
    alerts = [a(1, "firing", "sustained", "resolved-later"), a(3, "resolved", "sustained", "resolved-later"),
              a(2, "firing", "sustained", "still-firing"),
              a(4, "firing", "transient", "old-transient"),
              a(5, "firing", "expected", "current-expected")]
    assert sorted(x.fingerprint for x in active_alerts(alerts, latest)) == ["current-expected", "still-firing"]


# --- late events per window -----------------------------------------------------------------------------------

@pytest.mark.parametrize(("late", "expected"), [
    ({}, {"predictions": 0, "actions": 0, "outcomes": 0}),                 # none came late
    ({"a": 2, "o": 0}, {"predictions": 0, "actions": 2, "outcomes": 0}),   # a zero count is no late event
    ({"n": 1, "a": 2, "o": 3}, {"predictions": 1, "actions": 2, "outcomes": 3}),
])
def test_window_rows_carry_each_windows_late_events_by_signal(late: dict[str, int], expected: dict[str, int]) -> None:
    rows = window_rows({0: s(0, 10), H: s(1, 10)}, baseline_windows=3, late={H: late})
    assert rows[0].late_by_signal() == {"predictions": 0, "actions": 0, "outcomes": 0}  # no entry for window 0
    assert rows[1].late_by_signal() == expected
    assert rows[1].to_json()["late"] == expected
    assert rows[1].late == {k: n for k, n in late.items() if n}


def test_status_shows_late_events_as_p_a_o_and_leaves_the_cell_blank_without_any() -> None:
    rows = window_rows({0: s(0, 10), H: s(1, 10)}, baseline_windows=3, late={H: {"a": 12, "o": 3}})
    assert [late_cell(r).plain for r in rows] == ["", "0/12/3"]
    console = Console(width=200, record=True)
    console.print(model_panel(ModelOverview("m", rows), Settings(), last=2))
    text = console.export_text()
    assert "late p/a/o" in text
    # the late column is the last: blank for window 0, "0/12/3" after window 1's empty mismatch rate
    cells = [re.sub(r"\s+", " ", line).split(" v1 ")[1] for line in text.splitlines() if "1970-" in line]
    assert [c.endswith(end) for c, end in zip(cells, ["— │", "— 0/12/3 │"], strict=True)] == [True, True]


def test_report_lists_only_the_windows_with_late_events_newest_first() -> None:
    rows = window_rows({i * H: s(i, 10) for i in range(4)}, baseline_windows=3,
                       late={H: {"n": 1}, 3 * H: {"a": 4, "o": 2}})
    page = "".join(late_section(ModelOverview("m", rows)))
    assert re.findall(r"<tr class='late'>(.*?)</tr>", page) == [
        "<td>1970-01-01 03:00</td><td>0</td><td>4</td><td>2</td>",
        "<td>1970-01-01 01:00</td><td>1</td><td>0</td><td>0</td>"]
    quiet = "".join(late_section(ModelOverview("m", rows[:1])))
    assert "id='no-late-events'" in quiet and "<table" not in quiet


# --- consumer lag ---------------------------------------------------------------------------------------------

TOPICS = ("p", "a", "o", "n")


def test_consumer_lag_per_partition_and_per_topic_from_the_ends_and_what_redis_applied() -> None:
    ends = {("p", 1): (0, 8), ("p", 0): (0, 10), ("a", 0): (30, 50), ("o", 0): (0, 0)}
    lag = consumer_lag(TOPICS, ends, {("p", 0): 4, ("p", 1): 8, ("a", 0): 10, ("x", 0): 3})
    assert [(p.topic, p.partition, p.end, p.applied, p.lag) for p in lag.partitions] == [
        ("a", 0, 50, 10, 20),    # Redis behind retention: from the log's start
        ("o", 0, 0, None, 0),    # empty, nothing applied
        ("p", 0, 10, 4, 6),
        ("p", 1, 8, 8, 0)]       # caught up
    # the annotations topic has no partition on the broker: nothing waits there
    assert lag.by_topic() == {"p": 6, "a": 20, "o": 0, "n": 0}
    assert lag.to_json() == {"topics": {"p": 6, "a": 20, "o": 0, "n": 0}, "unknown": None, "partitions": [
        {"topic": "a", "partition": 0, "end": 50, "applied": 10, "lag": 20},
        {"topic": "o", "partition": 0, "end": 0, "applied": None, "lag": 0},
        {"topic": "p", "partition": 0, "end": 10, "applied": 4, "lag": 6},
        {"topic": "p", "partition": 1, "end": 8, "applied": 8, "lag": 0}]}


def test_an_unknown_lag_is_null_for_every_topic_and_says_why() -> None:
    lag = ConsumerLag(TOPICS, unknown="broker b:9092 unreachable")
    assert lag.to_json() == {"topics": dict.fromkeys(TOPICS), "partitions": [], "unknown": "broker b:9092 unreachable"}


def rendered(renderable: Any) -> str:
    console = Console(width=120, record=True)
    console.print(renderable)
    return re.sub(r"[ \t]+", " ", console.export_text())


def test_status_shows_each_topics_lag_and_how_many_partitions_hold_it_or_that_it_is_unknown() -> None:
    lag = consumer_lag(TOPICS, {("p", 0): (0, 10), ("p", 1): (0, 8), ("a", 0): (0, 3)}, {("p", 1): 8})
    text = rendered(lag_view(lag))
    assert "consumer lag (messages not applied yet)" in text
    assert [line.strip() for line in text.splitlines()[2:]] == ["p 10 1 of 2", "a 3 1 of 1", "o 0 0 of 0",
                                                               "n 0 0 of 0"]
    assert rendered(lag_view(ConsumerLag(TOPICS, unknown="broker b:9092 unreachable"))).strip() == (
        "consumer lag unknown: broker b:9092 unreachable")
    # without any model yet, the lag still shows (a worker far behind has judged nothing)
    text = rendered(status_view([], Settings(), 5, lag=lag))
    assert "no models yet" in text and "p 10 1 of 2" in text


@pytest.mark.integration
def test_read_history_sums_each_windows_late_fields_over_buckets_in_one_pipeline(
        stack: Any, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings(redis_url=stack.redis_url, state_buckets=8)  # type: ignore[arg-type]
    redis_client.sadd(keys.MODELS, "claims", "fraud")
    for model, windows in (("claims", [s(0, 10), s(1, 10), s(2, 10)]), ("fraud", [s(0, 10)])):
        redis_client.hset(keys.model_history(model), mapping={str(w.start): orjson.dumps(w.to_json()) for w in windows})
    truth: dict[tuple[str, int], dict[str, int]] = {}
    writes = [  # (model, window, bucket, kind, n)
        ("claims", H, 0, "a", 2), ("claims", H, 5, "a", 3), ("claims", H, 5, "o", 1), ("claims", H, 7, "n", 4),
        ("claims", 2 * H, 3, "o", 6),
        ("fraud", 0, 1, "n", 1),
        ("claims", 3 * H, 2, "a", 9),  # a window not closed yet (not in the history): not read
    ]
    for model, start, b, kind, n in writes:
        redis_client.hset(keys.window_counts(b, model, start), mapping={keys.LATE_FIELD + kind: n, "v1||n": 50})
        if start < 3 * H:
            got = truth.setdefault((model, start), {})
            got[kind] = got.get(kind, 0) + n
    executes: list[int] = []  # commands per pipeline round trip
    original = redis.client.Pipeline.execute

    def execute(self: redis.client.Pipeline, *args: Any, **kwargs: Any) -> Any:
        executes.append(len(self.command_stack))
        return original(self, *args, **kwargs)
    monkeypatch.setattr(redis.client.Pipeline, "execute", execute)
    history, late = read_history(settings)
    assert sorted(history) == ["claims", "fraud"] and sorted(history["claims"]) == [0, H, 2 * H]
    assert {(m, start): kinds for m, by in late.items() for start, kinds in by.items() if kinds} == truth
    assert late["claims"][0] == {}  # a closed window nothing came late for
    assert executes == [2, 4 * 8]  # the histories, then every (window, bucket) at once
    models = build(history, [], settings, late)
    assert [(o.model, [w.late_by_signal()["actions"] for w in o.windows]) for o in models] == [
        ("claims", [0, 5, 0]), ("fraud", [0])]
