"""What ingest exports from an apply's result: events by topic and result, and per model and signal how many were
counted into their window, came late, or were beyond the horizon (no Redis: results are built here)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from datetime import datetime, timezone
from types import SimpleNamespace
from typing import Any

from prometheus_client import CollectorRegistry

from stream import ingest
from stream.metrics import Metrics
from stream.runtime import Chunk
from stream.state import ApplyResult, Flow

TOPIC = "trustgap.predictions"


def value(m: Metrics, name: str, **labels: str) -> float | None:
    return m.registry.get_sample_value(name, labels)


def result(**flows: Flow) -> ApplyResult:
    """An ApplyResult whose flows are named `<model>__<signal>`."""
    res = ApplyResult(applied=10, duplicates=2, pending=1, late=4, drained=3)
    res.flows = {tuple(k.split("__")): f for k, f in flows.items()}  # type: ignore[misc]
    return res


def test_flows_are_exported_per_model_and_signal_and_add_up_over_applies() -> None:
    m = Metrics(CollectorRegistry())
    ingest.count(m, TOPIC, result(claims__predictions=Flow(8, 1, 0), claims__actions=Flow(3, 2, 1),
                                  fraud__outcomes=Flow(0, 1, 4)))
    ingest.count(m, TOPIC, result(claims__predictions=Flow(5, 0, 0)))
    got = {(name, model, signal): value(m, f"trustgap_{name}_events_total", model=model, signal=signal)
           for name in ("counted", "late", "beyond_horizon")
           for model, signal in (("claims", "predictions"), ("claims", "actions"), ("fraud", "outcomes"))}
    assert got == {
        ("counted", "claims", "predictions"): 13, ("late", "claims", "predictions"): 1,
        ("beyond_horizon", "claims", "predictions"): 0,  # seen, so the series exists at 0
        ("counted", "claims", "actions"): 3, ("late", "claims", "actions"): 2,
        ("beyond_horizon", "claims", "actions"): 1,
        ("counted", "fraud", "outcomes"): 0, ("late", "fraud", "outcomes"): 1,
        ("beyond_horizon", "fraud", "outcomes"): 4,
    }
    # a (model, signal) never seen has no series at all: labels stay what the events named
    assert value(m, "trustgap_late_events_total", model="fraud", signal="predictions") is None


def test_events_by_topic_count_beyond_horizon_next_to_the_other_results() -> None:
    m = Metrics(CollectorRegistry())
    ingest.count(m, TOPIC, result(claims__actions=Flow(3, 2, 1), fraud__outcomes=Flow(0, 1, 4)))
    by_result = {r: value(m, "trustgap_events_total", topic=TOPIC, result=r)
                 for r in ("applied", "duplicate", "pending", "late", "beyond_horizon")}
    assert by_result == {"applied": 13, "duplicate": 2, "pending": 1, "late": 4, "beyond_horizon": 5}


def test_no_beyond_horizon_series_until_one_is_beyond_the_horizon() -> None:
    m = Metrics(CollectorRegistry())
    ingest.count(m, TOPIC, result(claims__predictions=Flow(8, 0, 0)))
    assert value(m, "trustgap_events_total", topic=TOPIC, result="beyond_horizon") is None


def test_apply_exports_the_flows_of_the_result_the_store_returned() -> None:
    m = Metrics(CollectorRegistry())
    res = result(claims__outcomes=Flow(7, 3, 2))
    sent: list[Any] = []

    async def send(plan: Any, offsets: Any, now_ms: int) -> ApplyResult:
        sent.append(offsets)
        return res

    rt = SimpleNamespace(metrics=m, rewinding={}, vouchable={}, seeks=0, degraded=None,
                         store=SimpleNamespace(send=send), topic_of=lambda kind: TOPIC,
                         clock=lambda: datetime.now(timezone.utc))
    chunk = Chunk(time.monotonic(), events=[], seen=[((TOPIC, 0), 41, None)])
    prepared = SimpleNamespace(overflow=Counter[str]())
    asyncio.run(ingest.apply(rt, "prediction", chunk, prepared))  # type: ignore[arg-type]
    assert [p.offsets for p in sent] == [{(TOPIC, 0): 42}]
    assert rt.vouchable == {(TOPIC, 0): (42, None)}  # a chunk applied in full: its worker vouches for it
    assert [value(m, f"trustgap_{n}_events_total", model="claims", signal="outcomes")
            for n in ("counted", "late", "beyond_horizon")] == [7, 3, 2]


def test_a_flush_the_timer_started_and_nobody_awaits_logs_its_failure(caplog: Any) -> None:
    async def broken() -> None:
        raise ValueError("a defect")

    async def run() -> None:
        task = asyncio.create_task(broken())
        task.add_done_callback(ingest._failed_flush)
        await asyncio.wait([task])
        await asyncio.sleep(0)  # done callbacks run on the next turn

    with caplog.at_level("ERROR", logger="trustgap"):
        asyncio.run(run())
    assert "flushing a chunk failed: ValueError('a defect')" in caplog.text
