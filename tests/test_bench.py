"""`python -m bench --quick` still runs end to end and prints every figure (no timing is asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent

# Every figure and ratio the issue asks the bench to print.
FIGURES = [
    "aiokafka getmany none ev/s", "aiokafka getmany orjson ev/s", "aiokafka getmany pydantic ev/s",
    "faust count per event ev/s", "faust count take(1000) ev/s",
    "trustgap single-event ev/s", "trustgap single-event redis trips/1000 ev",
    "trustgap batched ev/s", "trustgap batched redis trips/1000 ev", "trustgap worker peak RSS MiB",
    "scale-out 1 worker(s) ev/s", "scale-out 2 worker(s) ev/s", "redis MEMORY USAGE per context (slot hashes / n)",
    "alert latency p50 ms", "alert latency p99 ms",
]
RATIOS = ["single-event worker / faust per-event count", "batched worker / aiokafka+pydantic single",
          "batched worker / 60k ev/s target", "2 workers / 1 worker"]


def test_quick_bench_prints_every_figure_and_ratio(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, "-m", "bench", "--quick", "--json", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for name in FIGURES + RATIOS:
        assert name in proc.stdout, f"{name!r} missing from the output"
    result = orjson.loads(out.read_bytes())
    # every figure is a number measured once in quick mode (a NaN would mean nothing was measured)
    assert result["runs"] == 1
    for name in FIGURES:
        assert result["medians"][name] == result["medians"][name], f"{name} is NaN"
    assert any(k.startswith("redis bytes per prediction") for k in result["medians"])


def test_phases_bench_prints_each_phase() -> None:
    proc = subprocess.run([sys.executable, "-m", "bench.phases", "--events", "3000", "--chunk", "1000", "--rounds",
                           "1"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = {line.split()[0]: line.split()[1] for line in proc.stdout.splitlines()[1:]}
    assert set(lines) == {"parse", "prepare", "send", "redis"}
    assert all(float(v) > 0 for v in lines.values())  # each phase measured something
