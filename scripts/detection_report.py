"""Measure the detector on the simulator: detection delays per scenario next to a plain ADWIN and a +-3 sigma band
measured on the same events, and the false alarms on quiet data.

    pip install river   # ADWIN; a development tool, not a dependency of trustgap
    python scripts/detection_report.py [--seeds 5] [--days 3] [--rate 250]

Runs in memory (stream.offline: the store's twin and the judge, the same counts and decisions the worker makes;
tests/test_scenarios.py checks that the alerts topic equals the twin's alerts). Delays are in event time, from the
change to the moment the newest event makes the alarm possible: for trustgap and the band, when the watermark
reaches the look's due time (the window's end plus the look's age, plus the allowed lateness); for ADWIN, the
event that tripped it.
- ADWIN is river's, with its defaults, on each follow-up stream as it arrives: one 0/1 value per action
  (overridden or bypassed) and per truth and proxy outcome (mismatched), in event-time order. (Fed one value per
  window instead, ADWIN never fires on these runs: its Hoeffding bound needs hundreds of values per side.)
- The band sees the per-window rates trustgap sees at each look: every window's model-level rate at each
  checkpoint (override rate at the action looks; outcome mismatch, truth-minus-proxy mismatch and the truth
  outcomes' value per prediction at the outcome looks); it alarms when a window's rate is above the mean + 3 sigma
  of the `baseline_windows` windows before it (ten at least).
Both watch the whole model's follow-ups only, trustgap every scope, the shares of the segments and the features
too (the twin's feature statistics are exact where the store's distinct counts and top values are estimates). An
alarm is false when it is about data from before the change (a window that ended before it, an event whose
prediction came before it).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from river.drift import ADWIN

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stream import detect  # noqa: E402
from stream.offline import Twin, run_events, settings_for  # noqa: E402
from stream.settings import ModelSettings  # noqa: E402
from stream.simulate import PROFILES, SCENARIOS, generate, plan  # noqa: E402
from stream.times import epoch_ms, parse_ms  # noqa: E402
from stream.windows import window_start  # noqa: E402

HOUR = 3_600_000
END_AT = datetime(2026, 11, 20, tzinfo=timezone.utc)
END = epoch_ms(END_AT)


@dataclass(frozen=True, slots=True)
class Alarms:
    """One detector on one run: alarms about data from before the change, and the first and the first page after
    it (ms after the change; None: never)."""

    false: int
    first: int | None
    page: int | None = None
    recommendation: str = ""  # of the first sustained alert about data after the change (else of the first alert)
    pages: int = 0  # sustained pages fired (distinct alerts): one cause should be one page


def looks(twin: Twin) -> Iterator[list[tuple[int, int, float]]]:
    """Per follow-up look and rate, every window's model-level rate: (window start, due ms, rate)."""
    ms = twin.ms
    size = ms.window_seconds * 1000
    for stage in ms.stages():
        if stage.kind == "n":
            continue
        for signal in ("override_rate",) if stage.kind == "a" else ("outcome_mismatch", "proxy_divergence",
                                                                     "outcome_value"):
            points = []
            for start in sorted(twin.counts):
                whole = {k: v for (_, scope, k), v in twin.counts[start].items() if scope == ""}
                counts = detect.at_look(whole, stage.kind, stage.index)
                due = start + size + stage.age_ms + ms.allowed_lateness_seconds * 1000
                if signal == "proxy_divergence":
                    (t, tn), (q, qn) = detect.rate(counts, "outcome_mismatch"), detect.rate(counts, "proxy_mismatch")
                    if tn and qn:
                        points.append((start, due, t / tn - q / qn))
                    continue
                if signal == "outcome_value":
                    amounts = detect.value(counts)
                    if amounts.n and amounts.total:
                        points.append((start, due, amounts.total / amounts.n))
                    continue
                k, n = detect.rate(counts, signal)
                if n:
                    points.append((start, due, k / n))
            yield points


def band_alarms(points: Sequence[tuple[int, int, float]], window: int) -> list[tuple[int, int]]:
    """(window start, due) of every window above the mean + 3 sigma of the windows before it."""
    out = []
    for i, (start, due, value) in enumerate(points):
        before = [v for _, _, v in points[max(0, i - window):i]]
        if len(before) >= 10 and value > statistics.fmean(before) + 3 * statistics.pstdev(before):
            out.append((start, due))
    return out


def adwin_alarms(events: Sequence[tuple[str, dict[str, Any]]]) -> list[tuple[int, int]]:
    """(prediction time, event time) of every drift a plain ADWIN finds on the follow-up streams."""
    predictions: dict[str, dict[str, Any]] = {}
    streams = {"action": ADWIN(), "truth": ADWIN(), "proxy": ADWIN()}
    out = []
    for kind, e in events:
        if kind == "prediction":
            predictions[e["prediction_id"]] = e
            continue
        p = predictions.get(e.get("prediction_id", ""))
        if p is None:
            continue
        if kind == "action":
            stream, bit = streams["action"], e["action"] in ("override", "bypass")
        else:
            stream, bit = streams[e["kind"]], e["label"] != p["label"]
        stream.update(float(bit))
        if stream.drift_detected:
            out.append((parse_ms(p["ts"]), parse_ms(e["ts"])))
    return out


def split(alarms: Sequence[tuple[int, int]], change: int | None, size: int) -> tuple[int, int | None]:
    """(false alarms, delay of the first real one): an alarm about data before the change is false."""
    if change is None:
        return len(alarms), None
    real = [t - change for about, t in alarms if about + size > change]
    return len(alarms) - len(real), min(real, default=None)


def measure(scenario: str, seed: int, days: float, rate: float) -> dict[str, Alarms]:
    """trustgap, ADWIN and the band on one run of a scenario."""
    profile = PROFILES.get(scenario)
    ms: ModelSettings = settings_for(scenario)
    days, rate = (profile.days, profile.rate) if profile else (days, rate)
    events = list(generate(scenario, days, rate, seed, scenario, END_AT))
    twin = run_events(events, scenario, ms)
    layout = plan(scenario, days, END_AT)
    change = None if layout.change_hours is None else END - int(days * 24 * HOUR) + int(layout.change_hours * HOUR)
    size, lateness = ms.window_seconds * 1000, ms.allowed_lateness_seconds * 1000
    firing = [(d.due + lateness, a) for d, a in ((d, a) for d, v in twin.judged
                                                 for a in [*v.rate.alerts, *v.feature.alerts]) if a.status == "firing"]
    tg = [(epoch_ms(a.window.start), t) for t, a in firing]
    pages = [(epoch_ms(a.window.start), t) for t, a in firing if a.severity == "page"]
    band = [x for points in looks(twin) for x in band_alarms(points, ms.baseline_windows)]
    false, first = split(tg, change, size)
    after = [a for _, a in firing if change is not None and epoch_ms(a.window.start) + size > change]
    said = next((a for a in after if a.classification == "sustained"), after[0] if after else None)
    paged = len({a.fingerprint for _, a in firing if a.severity == "page" and a.classification == "sustained"})
    out = {"trustgap": Alarms(false, first, split(pages, change, size)[1],
                              f"{said.signal}: {said.recommendation}" if said else "", paged),
           "adwin": Alarms(*split(adwin_alarms(events), change, size)), "band": Alarms(*split(band, change, size))}
    if change is None:  # quiet: the share of windows holding any alert
        out["windows"] = Alarms(len({window_start(parse_ms(e["ts"]), size) for k, e in events if k == "prediction"}),
                                None)
        out["noisy"] = Alarms(len({start for start, _ in tg}), None)
    return out


def hours(values: Sequence[int | None], runs: int) -> str:
    got = sorted(v / HOUR for v in values if v is not None)
    if not got:
        return "never"
    text = f"{statistics.median(got):.1f} h" if got[0] == got[-1] else \
        f"{statistics.median(got):.1f} h ({got[0]:.1f}-{got[-1]:.1f})"
    return text if len(got) == runs else f"{text} {len(got)}/{runs}"


def word(runs: Sequence[dict[str, Alarms]]) -> str:
    said = Counter(r["trustgap"].recommendation for r in runs if r["trustgap"].recommendation)
    if not said:
        return "-"
    text, k = said.most_common(1)[0]
    return text if k == len(runs) else f"{text} {k}/{len(runs)}"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--days", type=float, default=3.0, help="run length of the scenarios without a profile")
    ap.add_argument("--rate", type=float, default=250.0, help="predictions per hour of those scenarios")
    ap.add_argument("--scenarios", nargs="+", choices=sorted(SCENARIOS), default=list(SCENARIOS),
                    help="only these (default: every scenario)")
    args = ap.parse_args()
    print(f"{args.seeds} seeds per scenario; scenarios without a profile: {args.days:g} days at {args.rate:g} "
          "predictions/hour, default settings (1 h windows; actions looked at 1 h and 1 d, outcomes at 1 h, 1 d, 7 d)")
    print("delay from the change to the first alarm (median, range over seeds); pages = sustained pages fired "
          "(median over seeds; quiet: all of them); false = alarms about windows before the change; trustgap's "
          "word = the signal and recommendation of its first sustained alert after the change (else of its first "
          "alert), the most common over seeds\n")
    head = f"{'scenario':20}{'trustgap first':>20}{'trustgap page':>20}{'pages':>7}{'ADWIN':>20}{'3 sigma':>20}" \
           f"{'false (tg/ADWIN/3s)':>22}   trustgap's word"
    print(head)
    print("-" * len(head))
    for scenario in args.scenarios:
        runs = [measure(scenario, seed, args.days, args.rate) for seed in range(1, args.seeds + 1)]
        n = len(runs)
        false = "/".join(str(sum(r[k].false for r in runs)) for k in ("trustgap", "adwin", "band"))
        if "windows" in runs[0]:
            windows = sum(r["windows"].false for r in runs)
            noisy = sum(r["noisy"].false for r in runs)
            paged = sum(r["trustgap"].pages for r in runs)
            print(f"{scenario:20}{'-':>20}{'-':>20}{paged:>7}{'-':>20}{'-':>20}{false:>22}   "
                  f"trustgap: {noisy}/{windows} windows with an alert ({noisy / windows:.2%})")
            continue
        pages = statistics.median(r["trustgap"].pages for r in runs)
        print(f"{scenario:20}{hours([r['trustgap'].first for r in runs], n):>20}"
              f"{hours([r['trustgap'].page for r in runs], n):>20}{pages:>7g}"
              f"{hours([r['adwin'].first for r in runs], n):>20}"
              f"{hours([r['band'].first for r in runs], n):>20}{false:>22}   {word(runs)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
