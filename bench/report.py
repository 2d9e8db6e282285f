"""The bench's printout: each figure's median on each broker side by side, the ratios within each broker's runs,
and what could not be run where."""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# (label, numerator figure, denominator figure or a constant); a ratio is taken within one broker's runs only.
RATIOS: list[tuple[str, str, str | float]] = [
    ("single-event worker / faust per-event count (worker on uvloop, faust on asyncio; target >= 0.9)",
     "trustgap single-event ev/s", "faust count per event ev/s"),
    ("like for like, uvloop: single-event worker / faust per-event count on uvloop",
     "trustgap single-event ev/s", "faust count per event, uvloop ev/s"),
    ("like for like, asyncio: single-event worker on asyncio / faust per-event count",
     "trustgap single-event, asyncio ev/s", "faust count per event ev/s"),
    ("single-event worker on asyncio / faust per-event count with the worker's gc settings",
     "trustgap single-event, asyncio ev/s", "faust count per event, worker's gc settings ev/s"),
    ("batched worker / aiokafka+pydantic single (target >= 0.45)",
     "trustgap batched ev/s", "aiokafka getmany pydantic ev/s"),
    ("batched worker / 60k ev/s target", "trustgap batched ev/s", 60_000.0),
    ("single-event worker / Quix stateless count, single-event",
     "trustgap single-event ev/s", "quix count single-event ev/s"),
    ("single-event worker / Quix 1 h window count, single-event",
     "trustgap single-event ev/s", "quix window single-event ev/s"),
    ("batched worker / Quix stateless count, batched", "trustgap batched ev/s", "quix count batched ev/s"),
    ("batched worker / Quix 1 h window count, batched", "trustgap batched ev/s", "quix window batched ev/s"),
    ("2 workers / 1 worker (target >= 1.7)", "scale-out 2 worker(s) ev/s", "scale-out 1 worker(s) ev/s"),
]
NAN = float("nan")


@dataclass
class BrokerResult:
    """Every figure measured on one broker, run by run, and why any figure is missing."""

    broker: str
    runs: int
    results: dict[str, list[float]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def record(self, name: str, value: float) -> None:
        self.results.setdefault(name, []).append(value)
        print(f"  {name}: {value:,.1f}", flush=True)

    def note(self, text: str) -> None:
        self.notes.append(text)
        print(f"  note: {text}", flush=True)

    @property
    def medians(self) -> dict[str, float]:
        return {k: statistics.median(v) for k, v in self.results.items()}

    @property
    def ratios(self) -> dict[str, float]:
        med = self.medians
        return {label: med.get(num, NAN) / (den if isinstance(den, float) else med.get(den, NAN))
                for label, num, den in RATIOS}

    def as_json(self) -> dict[str, Any]:
        return {"runs": self.runs, "medians": self.medians, "all": self.results, "ratios": self.ratios,
                "notes": self.notes}


def _cell(value: float | None, fmt: str) -> str:
    return "n/a" if value is None or value != value else format(value, fmt)


def side_by_side(blocks: list[BrokerResult], redis: Mapping[str, float]) -> str:
    """The medians and ratios, a column per broker (n/a: not measured there; the notes say why)."""
    names = list(dict.fromkeys(k for b in blocks for k in b.results))
    width = max(len(k) for k in names + [label for label, _, _ in RATIOS])
    heads = [f"{b.broker} ({b.runs} run{'s' if b.runs > 1 else ''})" for b in blocks]
    cols = [max(14, len(h)) for h in heads]
    row = "  {:<{w}}" + "".join(f"  {{:>{c}}}" for c in cols)
    out = ["medians", row.format("figure", *heads, w=width)]
    meds = [b.medians for b in blocks]
    out += [row.format(k, *(_cell(m.get(k), ",.1f") for m in meds), w=width) for k in names]
    out += ["ratios (each within one broker's runs)", row.format("ratio", *heads, w=width)]
    rats = [b.ratios for b in blocks]
    out += [row.format(label, *(_cell(r[label], ".2f") for r in rats), w=width) for label, _, _ in RATIOS]
    if redis:
        out.append("Redis footprint (Store.apply straight into Redis, no broker: measured once)")
        out += [f"  {k:<{width}}  {v:>{cols[0]},.1f}" for k, v in redis.items()]
    notes = [f"  {b.broker}: {n}" for b in blocks for n in b.notes]
    if notes:
        out += ["not measured", *notes]
    return "\n".join(out)
