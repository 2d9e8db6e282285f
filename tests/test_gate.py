"""The retrain gate's decision table: every reason, their combination, and the exclusions merged and sorted."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from stream import gate
from stream.detect import fingerprint
from stream.events import AlertWindow, AlignmentAlert, Annotation
from stream.times import epoch_ms

T0 = datetime(2026, 11, 20, tzinfo=timezone.utc)
HOUR = timedelta(hours=1)
NOW = epoch_ms(T0 + 48 * HOUR)
LAST = epoch_ms(T0 + 47 * HOUR)  # the model's latest closed window


def alert(hour: int, signal: str, recommendation: str, classification: str = "sustained", status: str = "firing",
          scope: dict[str, str] | None = None, model: str = "m") -> AlignmentAlert:
    scope = scope or {}
    key = ",".join(f"{k}={v}" for k, v in scope.items())
    start = T0 + hour * HOUR
    return AlignmentAlert.model_validate({
        "alert_id": f"{signal}-{key}-{hour}-{status}", "fingerprint": fingerprint(model, signal, key),
        "status": status, "classification": classification, "severity": "page", "signal": signal, "model": model,
        "model_version": "v1", "scope": scope, "window": AlertWindow(start=start, end=start + HOUR),
        "observed": 0.3, "baseline": 0.1, "gap": 0.2, "n": 100, "baseline_n": 1000, "persistence": 3,
        "diagnosis": ["d"], "recommendation": recommendation, "ts": start + 2 * HOUR})


def note(start: int, end: int | None, segment: dict[str, str] | None = None) -> Annotation:
    return Annotation.model_validate({"schema_version": 1, "event_id": f"n{start}", "model": "m",
                                      "kind": "campaign", "start": T0 + start * HOUR,
                                      "end": T0 + end * HOUR if end is not None else None, "segment": segment,
                                      "note": "promo"})


FROZEN = alert(40, "feature_frozen", "fix_upstream_feature", scope={"feature": "income"})
BLAMED = alert(41, "outcome_mismatch", "fix_upstream_feature")
PROXY = alert(30, "proxy_divergence", "review_objective")
TRUST = alert(30, "override_rate", "investigate_trust")
COHORT = alert(30, "segment_shift", "review_segments", scope={"channel": "*new*"})
EU = alert(30, "override_rate", "investigate_segment", scope={"region": "eu"})
BROAD = alert(30, "outcome_mismatch", "retrain_candidate")


@pytest.mark.parametrize("alerts,annotations,verdict,codes", [
    ([], [], "go", []),                                                     # nothing argues against it
    ([BROAD], [], "go", ["broad_outcome_rise"]),                            # the one case retraining is the fix
    ([FROZEN], [], "block", ["feature_broken"]),
    ([BLAMED], [], "block", ["feature_broken"]),                            # an alert that blames a feature
    ([PROXY], [], "hold", ["proxy_divergence"]),
    ([TRUST], [], "hold", ["trust"]),
    ([COHORT], [], "hold", ["segment_shift"]),
    ([EU], [], "hold", ["concentrated"]),
    ([], [note(46, None)], "hold", ["annotated_change"]),                   # still running: wait for its end
    ([], [note(10, 20)], "go", []),                                         # over: only its windows are left out
    # every reason, the strictest first
    ([BROAD, PROXY, FROZEN, TRUST], [note(46, 50)], "block",
     ["feature_broken", "annotated_change", "proxy_divergence", "trust", "broad_outcome_rise"]),
    # what is no longer in force: a resolved page, an old transient, another model's alert
    ([alert(30, "override_rate", "investigate_trust"), alert(33, "override_rate", "investigate_trust",
                                                             status="resolved"),
      alert(44, "outcome_mismatch", "exclude_window_from_training", "transient"),
      alert(30, "proxy_divergence", "review_objective", model="other")], [], "go", []),
])
def test_the_verdict_is_the_strictest_reason(alerts: list[AlignmentAlert], annotations: list[Annotation],
                                             verdict: str, codes: list[str]) -> None:
    got = gate.decide("m", alerts, annotations, NOW, LAST)
    assert (got.verdict, [r.code for r in got.reasons]) == (verdict, codes)
    assert got.exit_code == {"go": 0, "hold": 3, "block": 4}[verdict]
    assert got.sentence().startswith(verdict)


def test_a_reason_names_its_alerts_and_its_action() -> None:
    got = gate.decide("m", [FROZEN, BLAMED], [], NOW, LAST)
    [reason] = got.reasons
    assert [a.alert_id for a in reason.alerts] == [FROZEN.alert_id, BLAMED.alert_id]
    assert reason.action.startswith("fix the upstream feature")
    doc = got.to_json()
    assert doc["verdict"] == "block" and doc["reasons"][0]["alerts"][0]["scope"] == {"feature": "income"}


def test_exclusions_are_transient_windows_annotations_and_broken_feature_spans_merged() -> None:
    alerts = [alert(5, "override_rate", "exclude_window_from_training", "transient"),
              alert(6, "override_rate", "exclude_window_from_training", "transient"),  # touches the one before
              alert(9, "override_rate", "exclude_window_from_training", "transient", scope={"region": "eu"}),
              # income frozen from 20 h (transient, transient, sustained), resolved at 26 h
              alert(20, "feature_frozen", "fix_upstream_feature", "transient", scope={"feature": "income"}),
              alert(21, "feature_frozen", "fix_upstream_feature", "transient", scope={"feature": "income"}),
              alert(22, "feature_frozen", "fix_upstream_feature", scope={"feature": "income"}),
              alert(26, "feature_frozen", "fix_upstream_feature", status="resolved", scope={"feature": "income"}),
              # age missing from 40 h, still broken
              alert(40, "feature_missing", "fix_upstream_feature", scope={"feature": "age"})]
    got = gate.exclusions(alerts, [note(24, 30, {"region": "us"}), note(25, 28)], "m", NOW)
    rows = [(e.start, e.end, dict(e.segment), e.reasons) for e in got]
    h = lambda k: epoch_ms(T0 + k * HOUR)  # noqa: E731
    assert rows == [
        (h(5), h(7), {}, ("transient override_rate",)),
        (h(9), h(10), {"region": "eu"}, ("transient override_rate region=eu",)),
        (h(20), h(28), {}, ("feature_frozen income", "annotated campaign: promo")),  # 20-26 and 25-28 merged
        (h(24), h(30), {"region": "us"}, ("annotated campaign: promo",)),
        (h(40), NOW, {}, ("feature_missing age",)),                                  # until now: still broken
    ]
    assert [e.start for e in gate.exclusions(alerts, [], "m", NOW, since_ms=h(27))] == [h(40)]


def test_a_sustained_streak_is_excluded_whole_from_its_first_transient_window_to_its_resolution() -> None:
    eu = {"region": "eu"}
    streak = [alert(10, "override_rate", "exclude_window_from_training", "transient", scope=eu),
              alert(11, "override_rate", "exclude_window_from_training", "transient", scope=eu),
              alert(12, "override_rate", "investigate_segment", scope=eu),
              alert(16, "override_rate", "investigate_segment", status="resolved", scope=eu),
              alert(30, "override_rate", "investigate_trust")]  # still firing: to now
    h = lambda k: epoch_ms(T0 + k * HOUR)  # noqa: E731
    assert [(e.start, e.end, dict(e.segment), e.reasons) for e in gate.exclusions(streak, [], "m", NOW)] == [
        (h(10), h(16), eu, ("transient override_rate region=eu", "sustained override_rate region=eu")),
        (h(30), NOW, {}, ("sustained override_rate",))]
