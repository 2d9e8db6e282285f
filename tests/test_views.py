"""`trustgap status` as a terminal shows it: the gate's verdict first, alerts one line per cause, nothing cut at 80
or 120 columns (rich renders to a fixed width)."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import pytest
from rich.console import Console

from stream import overview
from stream.detect import Summary, fingerprint
from stream.events import AlertWindow, AlignmentAlert
from stream.settings import Settings
from stream.views import status_view

T0 = datetime(2026, 11, 20, tzinfo=timezone.utc)
HOUR = timedelta(hours=1)
DIAGNOSIS = ["outcome_mismatch 35.0% vs baseline 10.2% over 168 windows (n=400, baseline n=60000): gap +24.8%, 99% "
             "interval [+18.1%, +31.5%], p=1e-12 Holm-adjusted over 27 tests at this look, x7 looks",
             "feature-health alerts are active for the model ('income' (frozen)): the inputs changed, not the world; "
             "fix the feature pipeline before judging the model"]


def alert(hour: int, signal: str, scope: dict[str, str], recommendation: str, severity: str = "page",
          classification: str = "sustained") -> AlignmentAlert:
    key = ",".join(f"{k}={v}" for k, v in scope.items())
    start = T0 + hour * HOUR
    return AlignmentAlert.model_validate({
        "alert_id": f"{signal}{key}{hour}", "fingerprint": fingerprint("claims", signal, key), "status": "firing",
        "classification": classification, "severity": severity, "signal": signal, "model": "claims",
        "model_version": "v1", "scope": scope, "window": AlertWindow(start=start, end=start + HOUR),
        "observed": 0.35, "baseline": 0.102, "gap": 0.248, "n": 400, "baseline_n": 60000, "persistence": 3,
        "diagnosis": DIAGNOSIS, "recommendation": recommendation, "ts": start + 2 * HOUR})


def overviews() -> list[overview.ModelOverview]:
    ms = int(T0.timestamp() * 1000)
    counts = {"n": 400, "a:accept": 360, "a:override": 40, "o:truth": 400, "m:truth": 140}
    history = {"claims": {ms + i * 3_600_000: Summary(ms + i * 3_600_000, ms + (i + 1) * 3_600_000, "v1",
                                                      {"": counts}) for i in range(6)}}
    alerts = [alert(5, "feature_frozen", {"feature": "income"}, "fix_upstream_feature", "ticket"),
              alert(5, "outcome_mismatch", {}, "fix_upstream_feature"),
              alert(4, "outcome_mismatch", {"region": "eu"}, "fix_upstream_feature")]
    return overview.build(history, alerts, Settings())


@pytest.mark.parametrize("width", [80, 120])
def test_status_opens_with_the_verdict_and_cuts_nothing(width: int) -> None:
    console = Console(width=width, record=True, color_system=None)
    console.print(status_view(overviews(), Settings(), 3))
    text = console.export_text()
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= width
    flat = re.sub(r"\s+", " ", re.sub(r"[│╭╮╰╯─]", " ", text))
    first = next(line for line in lines if "retrain gate" in line)
    assert lines.index(first) == 1  # right under the model's title
    assert "retrain gate: block: fix the upstream feature before anything learns from it" in flat
    assert "…" not in text  # no cell or line cut short
    # one line per cause: the two outcome alerts (model and region) share one, the feature its own
    assert flat.count("page sustained fix_upstream_feature outcome_mismatch in all, region=eu") == 1
    assert flat.count("ticket sustained fix_upstream_feature feature_frozen in feature=income") == 1
    assert "fix the feature pipeline before judging the model" in flat  # the diagnosis, whole, under its line
