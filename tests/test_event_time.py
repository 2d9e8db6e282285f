"""Event time end to end: an outage's backlog, history replayed at full speed and a lagging topic are counted
exactly, each follow-up in its prediction's window, and nothing comes late.

A worker catching up reads its partitions at different speeds (the consumer fetches one partition far ahead of
another, and a topic can lag the others), so windows must close on the slowest partition's event time; these
tests produce the traffic a user would (single-event messages keyed by prediction_id, or `trustgap replay`) and
compare every window's counts in Redis with the truth computed in tests/support/eventtime.py.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from stream.settings import ModelSettings
from stream.times import epoch_ms, utcnow
from tests.support.eventtime import (DAY_MS, HOUR_MS, MODELS, Expected, Traffic, applied_per_topic, describe,
                                     expected, judged_until, late_events, live, produce, read_windows,
                                     start_together, write_jsonl)
from tests.support.harness import Deployment, eventually, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

OUTAGE_RATE = 10.0  # predictions/s: ~36k predictions and ~105k messages in the hour, several fetches per partition


def outage_traffic(seed: int, rate: float = OUTAGE_RATE) -> tuple[Traffic, int]:
    """An hour of live-stamped traffic from 40 min before an hour boundary to 20 min after it, ending at least
    five minutes before now; returns it and the boundary. Once it is all read, the watermark (its newest time
    minus the 10 min lateness) is past the boundary: the first window's predictions are due, nothing else is."""
    now = epoch_ms(utcnow())
    boundary = (now - 30 * 60 * 1000) - (now - 30 * 60 * 1000) % HOUR_MS
    return live(random.Random(seed), boundary - 40 * 60 * 1000, 3600, rate), boundary


def caught_up(dep: Deployment, sent: Counter[str], timeout: float) -> None:
    """Wait until Redis holds, for every topic, the offsets past every message sent."""
    wait_for(lambda: all(applied_per_topic(dep.settings)[t] >= n for t, n in sent.items()), timeout, 0.5,
             what=f"the offsets of {dict(sent)} messages applied")


def judged(dep: Deployment, models: tuple[str, ...], until: int, timeout: float = 30) -> None:
    """Wait until every model's predictions stage of the windows ending by `until` is judged."""
    wait_for(lambda: all((judged_until(dep.settings, m) or 0) >= until for m in models), timeout, 0.3,
             what=f"the windows ending by {until} judged for their predictions")


def assert_exact(dep: Deployment, truth: Expected, ports: list[int]) -> None:
    """Every window of the truth holds exactly its counts, no window counted a late event, and no worker did."""
    stored = read_windows(dep.settings, truth.models, truth.starts)
    late = late_events(dep, ports)
    assert stored.counts == truth.counts, f"{describe(truth.counts, stored.counts, stored.late)}; late {dict(late)}"
    assert stored.late == {}
    assert not late


@pytest.mark.parametrize("workers", [1, 2])
def test_an_hours_outage_backlog_is_counted_exactly_once_the_workers_catch_up(
        deploy: Callable[..., Deployment], workers: int) -> None:
    dep = deploy()
    traffic, boundary = outage_traffic(41 + workers)
    truth = expected(traffic)
    assert len(truth.starts) == 2 and truth.predictions_in(boundary - HOUR_MS) > 15_000
    sent = produce(dep, traffic.in_time_order())  # the outage: nobody consumes
    procs = start_together(dep, workers)
    caught_up(dep, sent, 120)
    judged(dep, MODELS, boundary)
    assert_exact(dep, truth, [p.web_port for p in procs])  # type: ignore[attr-defined]
