"""Label admission: producer-chosen names (models, versions, bands, segments, features) capped in Redis sets.

The admitted values live in Redis sets (per deployment, not per worker) so every worker and every restart agrees
on them; a value once admitted stays admitted, so a replay maps an event the same way. A worker remembers what was
admitted and asks Redis only about what it has not seen admitted yet.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from ..events import PredictionEvent
from ..settings import Settings
from . import keys, scripts

OTHER = "__other__"
"""What a label value over its cap is counted as."""

ADMIT_REFRESH_S = 3600.0
"""How long a worker trusts its memory of admitted label values before asking Redis again (refreshing TTLs)."""
LABELS_MEMO_MAX = 100_000
"""Distinct (model, version, band, segment) combinations a worker remembers as wholly admitted."""


@dataclass(frozen=True, slots=True)
class Labels:
    """A prediction's admitted model and labels, as its record carries them to the apply script."""

    model: str
    version: str  # '|' separates version, scope and counter in a counter field; kept out of the parts
    scopes: str   # scopes_of the labels, '\x1f'-separated

    @classmethod
    def of(cls, model: str, labels: Sequence[tuple[str, str]]) -> Labels:
        version = next(v for d, v in labels if d == "version")
        return cls(model, version.replace("|", "/"), "\x1f".join(x.replace("|", "/") for x in scopes_of(labels)))


def label_candidates(event: PredictionEvent, band: str) -> list[tuple[str, str]]:
    """(dimension, value) pairs of a prediction that become Redis scopes and metric labels, before capping."""
    pairs = [("version", event.model_version), ("band", band)]
    pairs += [(f"s:{dim}", value) for dim, value in sorted((event.segment or {}).items())]
    return pairs


def scopes_of(labels: Sequence[tuple[str, str]]) -> list[str]:
    """Scopes a prediction counts in besides the whole model: its band and each segment dimension=value.

    Capped-away dimensions all collapse into one `__other__=__other__` scope, counted once."""
    scopes: list[str] = []
    for dim, value in labels:
        if dim == "version":
            continue
        scope = f"{dim.removeprefix('s:')}={value}"
        if scope not in scopes:
            scopes.append(scope)
    return scopes


def admit_args(max_names: int, max_values: int, refused: str, values_prefix: str,
               pairs: Sequence[tuple[str, str]]) -> list[Any]:
    """ARGV of admit.lua: the caps, the TTL of the sets, the answer for a refused name, the prefix of the value
    sets, then the pairs."""
    return [max_names, max_values, keys.MODEL_TTL, refused, values_prefix, *(x for pair in pairs for x in pair)]


async def admit_names(client: aioredis.Redis, names_key: str, cap: int, names: Sequence[str],
                      refused: str = OTHER) -> list[str]:
    """Admit names into one capped set (model names, feature names): the answer per name, `refused` if over."""
    # EVAL with the (small) source: asked only on admission misses, and no script object to build or NOSCRIPT to
    # recover from
    reply = await client.eval(scripts.ADMIT.source, 1, names_key,
                              *admit_args(cap, 0, refused, "", [("", n) for n in names]))
    return [v.decode() for v in reply[1::2]]


class Admission:
    """One worker's admission of prediction labels, with its memory of what Redis already admitted."""

    def __init__(self, client: aioredis.Redis, settings: Settings) -> None:
        self.redis = client
        self.settings = settings
        self._models_admitted: set[str] = set()
        # (dimension, value) pairs Redis admitted per model: a value once admitted stays admitted, so at steady
        # state a batch needs no admission round trip. Forgotten every ADMIT_REFRESH_S so that the sets' TTL is
        # still refreshed by traffic.
        self._pairs_admitted: dict[str, set[tuple[str, str]]] = defaultdict(set)
        self._admitted_since = time.monotonic()
        self._labels_seen: dict[tuple[Any, ...], Labels] = {}

    def _forget_if_stale(self) -> None:
        if time.monotonic() - self._admitted_since > ADMIT_REFRESH_S or len(self._labels_seen) > LABELS_MEMO_MAX:
            self._models_admitted.clear()
            self._pairs_admitted.clear()
            self._labels_seen.clear()
            self._admitted_since = time.monotonic()

    async def admit(self, predictions: Sequence[PredictionEvent]) -> tuple[list[Labels], Counter[str]]:
        """Cap producer-chosen names: the admitted labels of each prediction, and the overflows by kind.

        A prediction whose (model, version, band, segment) was seen wholly admitted reuses its labels outright."""
        self._forget_if_stale()
        overflow: Counter[str] = Counter()
        out: list[Labels | None] = []
        misses: list[tuple[int, tuple[Any, ...], PredictionEvent, list[tuple[str, str]]]] = []
        for i, p in enumerate(predictions):
            band = self.settings.band_of(p)
            # a memo key only: a segment sent in another key order is one more entry, never other labels
            sig = (p.model, p.model_version, band, tuple(p.segment.items()) if p.segment else ())
            hit = self._labels_seen.get(sig)
            out.append(hit)
            if hit is None:
                misses.append((i, sig, p, label_candidates(p, band)))
        if not misses:
            return out, overflow  # type: ignore[return-value]  # no None left
        models = await self._admit_models({p.model for _, _, p, _ in misses})
        asked = await self._admit_pairs([(models[p.model], pairs) for _, _, p, pairs in misses])
        for i, sig, p, pairs in misses:
            model = models[p.model]
            answers = asked.get(model, {})
            got = [answers.get(pair, pair) for pair in pairs]
            for (dim, value), (gdim, gvalue) in zip(pairs, got, strict=True):
                if gdim != dim:
                    overflow["dimension"] += 1
                elif gvalue != value:
                    overflow["value"] += 1
            if model != p.model:
                overflow["model"] += 1
            labels = Labels.of(model, got)
            out[i] = labels
            if model == p.model and got == pairs:
                self._labels_seen[sig] = labels
        return out, overflow  # type: ignore[return-value]  # every None was a miss, now filled

    async def _admit_models(self, names: set[str]) -> dict[str, str]:
        """Each model name as admitted: itself, or OTHER over max_models."""
        models = {m: m for m in names}
        unknown = sorted(m for m in names if m not in self._models_admitted)
        if unknown:
            got = await admit_names(self.redis, keys.MODELS, self.settings.max_models, unknown)
            for m, answer in zip(unknown, got, strict=True):
                if answer == m:
                    self._models_admitted.add(m)
                else:
                    models[m] = OTHER
        return models

    async def _admit_pairs(self, wanted: Sequence[tuple[str, Sequence[tuple[str, str]]]]
                           ) -> dict[str, dict[tuple[str, str], tuple[str, str]]]:
        """Ask Redis about the (dimension, value) pairs not known admitted, per admitted model: pair -> answer."""
        s = self.settings
        asked: dict[str, dict[tuple[str, str], tuple[str, str]]] = defaultdict(dict)
        for model, pairs in wanted:
            known = self._pairs_admitted[model]
            for pair in pairs:
                if pair not in known:
                    asked[model][pair] = pair
        if not asked:
            return asked
        async with self.redis.pipeline(transaction=False) as pipe:
            for model, answers in asked.items():
                # EVAL in a pipeline: a registered script would cost redis-py a SCRIPT EXISTS round trip first
                pipe.eval(scripts.ADMIT.source, 1, keys.model_labels(model),
                          *admit_args(s.max_dimensions, s.max_label_values, OTHER,
                                      keys.model_label_values_prefix(model), list(answers)))
            replies = await pipe.execute()
        for (model, answers), reply in zip(asked.items(), replies, strict=True):
            flat = iter(x.decode() for x in reply)
            for pair in answers:
                got = (next(flat), next(flat))
                answers[pair] = got
                if got == pair:  # only admissions are remembered: a capped value is asked again next time
                    self._pairs_admitted[model].add(pair)
        return asked
