"""`python -m bench --quick` still runs end to end on Apache Kafka, Quix Streams included, and prints every figure
(no timing is asserted); the report puts brokers side by side and says what was not measured where."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from bench.peers import QUIX_PYTHON
from bench.report import RATIOS, BrokerResult, side_by_side

ROOT = Path(__file__).resolve().parent.parent

# Every figure and ratio the bench must print: the worker's, its baselines' and its peer's.
FIGURES = [
    "aiokafka getmany none ev/s", "aiokafka getmany orjson ev/s", "aiokafka getmany pydantic ev/s",
    "faust count per event ev/s", "faust count take(1000) ev/s",
    "trustgap single-event ev/s", "trustgap single-event redis trips/1000 ev",
    "trustgap batched ev/s", "trustgap batched redis trips/1000 ev", "trustgap worker peak RSS MiB",
    "quix count single-event ev/s", "quix window single-event ev/s", "quix count batched ev/s",
    "quix window batched ev/s",
    "scale-out 1 worker(s) ev/s", "scale-out 2 worker(s) ev/s", "alert latency p50 ms", "alert latency p99 ms",
]
RATIO_NAMES = ["single-event worker / faust per-event count", "batched worker / aiokafka+pydantic single",
               "batched worker / 60k ev/s target", "single-event worker / Quix stateless count",
               "single-event worker / Quix 1 h window count", "batched worker / Quix stateless count, batched",
               "batched worker / Quix 1 h window count, batched", "2 workers / 1 worker"]


def _measured(value: object) -> bool:
    """A figure that was measured: a positive number (JSON has no NaN, so a NaN arrives as null)."""
    return isinstance(value, float | int) and value > 0


@pytest.mark.integration
@pytest.mark.slow
def test_quick_bench_prints_every_figure_and_ratio_on_kafka(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, "-m", "bench", "--quick", "--json", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=480)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for name in FIGURES + RATIO_NAMES:
        assert name in proc.stdout, f"{name!r} missing from the output"
    result = orjson.loads(out.read_bytes())
    assert list(result["brokers"]) == ["kafka"]  # --quick runs on Apache Kafka only
    kafka = result["brokers"]["kafka"]
    assert kafka["runs"] == 1 and kafka["notes"] == []
    for name in FIGURES:
        assert _measured(kafka["medians"].get(name)), f"{name} not measured: {kafka['medians'].get(name)}"
    for name in RATIO_NAMES:
        [label] = [k for k in kafka["ratios"] if k.startswith(name)]
        assert _measured(kafka["ratios"][label]), f"{label} is {kafka['ratios'][label]}"
    assert any(k.startswith("redis bytes per prediction") and _measured(v) for k, v in result["redis"].items())


def test_the_report_puts_brokers_side_by_side_and_says_what_is_missing() -> None:
    kafka, tansu = BrokerResult("kafka", 3), BrokerResult("tansu", 1)
    for value in (10_000.0, 12_000.0, 11_000.0):
        kafka.record("trustgap single-event ev/s", value)
    for value in (20_000.0, 22_000.0, 24_000.0):
        kafka.record("quix window single-event ev/s", value)
    tansu.record("trustgap single-event ev/s", 9_000.0)
    tansu.note("quix window single-event: exited 1 without a figure")
    text = side_by_side([kafka, tansu], {"redis bytes per prediction": 105.0})
    rows = {line.split("  ")[1].strip(): line for line in text.splitlines() if line.startswith("  ")}
    # a median per broker, each in its own column
    assert re.search(r"11,000\.0\s+9,000\.0$", rows["trustgap single-event ev/s"])
    assert re.search(r"22,000\.0\s+n/a$", rows["quix window single-event ev/s"])
    # ratios are taken within each broker: 11,000 / 22,000 on Kafka, nothing to divide by on Tansu
    label = next(label for label, _, _ in RATIOS if label.startswith("single-event worker / Quix 1 h window"))
    assert re.search(r"0\.50\s+n/a$", rows[label])
    assert "tansu: quix window single-event: exited 1 without a figure" in text
    assert "(3 runs)" in text and "(1 run)" in text


def test_the_bench_finds_quix_where_the_makefile_installs_it() -> None:
    [venv] = re.findall(r"^BENCH_VENV := (\S+)$", (ROOT / "Makefile").read_text(), re.MULTILINE)
    assert QUIX_PYTHON == ROOT / venv / "bin" / "python"


@pytest.mark.integration
@pytest.mark.slow
def test_phases_bench_prints_each_phase() -> None:
    proc = subprocess.run([sys.executable, "-m", "bench.phases", "--events", "3000", "--chunk", "1000", "--rounds",
                           "1"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = {line.split()[0]: line.split()[1] for line in proc.stdout.splitlines()[1:]}
    assert set(lines) == {"parse", "prepare", "send", "redis"}
    assert all(float(v) > 0 for v in lines.values())  # each phase measured something
