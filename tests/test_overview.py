"""What status and report compute from history and alerts (pure)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from stream.detect import Summary
from stream.events import AlertWindow, AlignmentAlert
from stream.overview import active_alerts, window_rows

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
