"""Segment shift: who the model sees, per segment dimension, against who it saw in its baseline windows.

A campaign brings unusual users, a product change moves which customers arrive, cohorts drift: the fix is to
re-segment or redefine the modelling universe, not to retrain on the new mix. The window's predictions per segment
value are already counted (the `n` counter of each `dim=value` scope), so this is pure arithmetic on the window's
summary and its baseline:
- each value seen in the baseline: its share of the model's predictions against its share in the baseline windows,
  with their window-to-window spread (`stats.share_rise`, quasi-binomial; who arrives moves with the hour);
- the values of a dimension never seen in the baseline, taken together under the scope value `NEW`: their share
  against none (a new campaign channel, or a hundred new campaign codes each too small to see alone).
Bands are the model's score ranges, not segments: a moved score distribution is the rate signals' business.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from . import stats
from .settings import ModelSettings

SIGNAL = "segment_shift"
NEW = "*new*"
"""The scope value that stands for a dimension's values never seen in the baseline, taken together."""
TOP_NEW = 5  # new values a diagnosis names, largest first


@dataclass(frozen=True, slots=True)
class Share:
    """One segment value's share of the model's predictions in a window, against the baseline windows'."""

    dimension: str
    value: str                      # NEW for the dimension's never-seen values together
    k: int                          # the window's predictions in the value
    n: int                          # the window's predictions
    windows: tuple[tuple[int, int], ...]  # each baseline window's (predictions in the value, predictions)
    test: stats.ShareTest
    new_values: tuple[tuple[str, int], ...] = ()  # NEW only: the values and their predictions, largest first

    @property
    def scope(self) -> str:
        return f"{self.dimension}={self.value}"

    @property
    def share(self) -> float:
        return self.k / self.n

    @property
    def baseline_k(self) -> int:
        return sum(w[0] for w in self.windows)

    @property
    def baseline_n(self) -> int:
        return sum(w[1] for w in self.windows)

    @property
    def baseline(self) -> float:
        return self.baseline_k / self.baseline_n

    def interval(self, confidence: float) -> tuple[float, float]:
        return stats.share_interval(self.k, self.n, self.windows, self.test.dispersion, self.test.df, confidence)

    def describe(self) -> str:
        """The diagnosis's line: what grew, from what to what."""
        if self.value != NEW:
            return f"{self.scope} went from {self.baseline:.1%} to {self.share:.1%} of predictions"
        named = ", ".join(f"{self.dimension}={v} {k / self.n:.1%}" for v, k in self.new_values[:TOP_NEW])
        more = len(self.new_values) - TOP_NEW
        tail = f" and {more} more" if more > 0 else ""
        return (f"values of {self.dimension} never seen in the baseline went from 0% to {self.share:.1%} of "
                f"predictions ({named}{tail})")


def key(scope: str) -> str:
    return f"{SIGNAL}|{scope}"


def dimensions(scopes: Mapping[str, Mapping[str, float]]) -> dict[str, dict[str, int]]:
    """Segment dimension -> value -> predictions, from a window's scopes (`dim=value`; bands and the model left
    out)."""
    out: dict[str, dict[str, int]] = {}
    for scope, counts in scopes.items():
        dim, sep, value = scope.partition("=")
        if sep and dim != "band":
            out.setdefault(dim, {})[value] = int(counts.get("n", 0))
    return out


def measure_all(current: Mapping[str, Mapping[str, float]],
                baseline: Sequence[tuple[frozenset[str], Mapping[str, Mapping[str, float]]]],
                ms: ModelSettings) -> dict[str, Share]:
    """Every segment value's share test of one window, by detector key (`segment_shift|dim=value`).

    `current` is the window's scopes, `baseline` each baseline window's (excluded keys, scopes). A key is left out
    (no data) when the window or its baseline windows have fewer than `min_samples` predictions, or fewer than two
    baseline windows are left for it."""
    n = int(current.get("", {}).get("n", 0))
    if n < ms.min_samples:
        return {}
    now = dimensions(current)
    then = [(excluded, int(scopes.get("", {}).get("n", 0)), dimensions(scopes)) for excluded, scopes in baseline]
    out: dict[str, Share] = {}
    for dim in sorted(set(now) | {d for _, _, dims in then for d in dims}):
        values = now.get(dim, {})
        new_key = key(f"{dim}={NEW}")
        kept = [(total, dims.get(dim, {})) for excluded, total, dims in then if new_key not in excluded and total]
        seen = {v for _, vals in kept for v, k in vals.items() if k > 0}
        fresh = sorted(((v, k) for v, k in values.items() if k > 0 and v not in seen), key=lambda x: (-x[1], x[0]))
        share = _share(dim, NEW, sum(k for _, k in fresh), n, [(0, total) for total, _ in kept], ms)
        if share is not None:
            out[new_key] = Share(dim, NEW, share.k, n, share.windows, share.test, tuple(fresh))
        for value in sorted(seen - {NEW}):
            k = key(f"{dim}={value}")
            windows = [(dims.get(dim, {}).get(value, 0), total) for excluded, total, dims in then
                       if k not in excluded and total]
            share = _share(dim, value, values.get(value, 0), n, windows, ms)
            if share is not None:
                out[k] = share
    return out


def _share(dim: str, value: str, k: int, n: int, windows: list[tuple[int, int]], ms: ModelSettings) -> Share | None:
    if len(windows) < 2 or sum(w[1] for w in windows) < ms.min_samples:
        return None
    return Share(dim, value, k, n, tuple(windows), stats.share_rise(k, n, windows))
