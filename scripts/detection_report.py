"""Measure the detector on the simulator: quiet-data false alarms and detection delay per scenario.

    python scripts/detection_report.py [--seeds 20] [--days 3] [--rate 250]

Runs in memory (stream.offline: the same counts and decisions the worker makes; tests/test_scenarios.py checks
that the alerts topic equals the replay exactly). Delay = windows from the window holding the change to the first
model-level sustained alert, counting the change window as 1.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stream.offline import replay  # noqa: E402
from stream.settings import ModelSettings  # noqa: E402
from stream.simulate import SCENARIOS  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--days", type=float, default=3.0)
    ap.add_argument("--rate", type=float, default=250.0)
    args = ap.parse_args()
    ms = ModelSettings()
    print(f"{args.seeds} seeds x {args.days:g} days at {args.rate:g} predictions/hour, 1 h windows, defaults "
          f"(alpha {ms.alpha}, min_gap {ms.min_gap}, persistence {ms.persistence})")
    for scenario in SCENARIOS:
        delays, recs, sustained, windows, transients = [], Counter(), 0, 0, 0
        for seed in range(1, args.seeds + 1):
            run = replay(scenario, ms, args.days, args.rate, seed, model=scenario)
            windows += len(run.windows)
            alerts = [a for _, a in run.alerts()]
            sustained += sum(a.classification == "sustained" and a.status == "firing" for a in alerts)
            transients += sum(a.classification == "transient" for a in alerts)
            first = next(((i, a) for i, a in run.alerts() if a.classification == "sustained"
                          and a.status == "firing" and not a.scope), None)
            if first and run.change_window is not None:
                delays.append(first[0] - run.change_window + 1)
                recs[f"{first[1].signal}->{first[1].recommendation}"] += 1
        delay = (f"median {statistics.median(delays):g}, range {min(delays)}-{max(delays)} windows "
                 f"({len(delays)}/{args.seeds} runs)") if delays else "no model-level sustained alert"
        print(f"{scenario:14} sustained firings {sustained:4} / {windows} model-windows, transient {transients:4}; "
              f"delay {delay}; first model-level recommendation {dict(recs)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
