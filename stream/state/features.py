"""Feature statistics beside the window counters: what a batch writes besides the apply script, and the read of a
closed window's statistics summed over buckets.

A prediction's window statistics are written by the apply script itself, in the call that newly stores it (see
`record_features` in apply.lua, and store.encode, which sends them summed per group): being newly stored is the
once-guard. The distinct-count HyperLogLogs follow in
the same pipeline; PFADD is idempotent, so they need no guard.
"""

from __future__ import annotations

import math
import struct
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import redis.asyncio as aioredis

from .. import features
from ..features import STRING_MAX as STRING_MAX, GroupStats, cut as cut
from ..events import PredictionEvent
from ..settings import Settings
from . import keys, scripts
from .labels import admit_names



@dataclass
class FeaturePlan:
    """What one batch writes for features besides the apply script: HLL elements per key, values over the cap."""

    # model -> its tracked names (the apply script counts their values)
    tracked: dict[str, frozenset[str]] = field(default_factory=dict)
    # HLL key -> its distinct numbers packed as 8-byte doubles and its distinct strings as a JSON array (see
    # distinct.lua): a batch carries a value per prediction of a continuous feature, and two arguments per HLL
    # cost redis-py two packing steps where an argument per value cost it one each
    distinct: dict[str, tuple[bytes, bytes]] = field(default_factory=dict)
    ttl: dict[str, int] = field(default_factory=dict)
    untracked: dict[str, int] = field(default_factory=dict)  # model -> feature values not tracked (over the cap)
    window_ms: dict[str, int] = field(default_factory=dict)  # tracked model -> its window size (store.encode groups)


class FeatureStore:
    """Feature statistics beside the window counters: written in the apply pipeline, read when a window closes."""

    def __init__(self, client: aioredis.Redis, settings: Settings) -> None:
        self.redis = client
        self.settings = settings
        self._tracked: dict[str, set[str]] = {}  # per model, as far as this worker knows; the set only grows
        self._full: dict[str, bool] = {}

    async def tracked(self, model: str, names: set[str]) -> set[str]:
        """Which of `names` are tracked for the model: first come first tracked, up to `max_features`."""
        known = self._tracked.get(model, set())
        unknown = names - known
        if unknown and not self._full.get(model, False):
            cap = self.settings.for_model(model).max_features
            # '' answers a refusal: no feature is named '' (names are at least one character)
            answers = await admit_names(self.redis, keys.model_features(model), cap, sorted(unknown), refused="")
            got = [a for a in answers if a]
            known = known | set(got)
            self._tracked[model] = known
            self._full[model] = len(got) < len(unknown) or len(known) >= cap
        return names & known

    async def plan(self, predictions: Sequence[PredictionEvent]) -> FeaturePlan:
        """Register new feature names and list the tracked ones per model, with the window size of each.

        The statistics themselves are summed per group by store.encode and added by the apply script; the
        distinct values follow from those sums (`add_distinct`)."""
        plan = FeaturePlan()
        settings = self.settings
        seen: dict[str, set[str]] = {}  # the feature names each model sent
        for p in predictions:
            names = seen.get(p.model)
            if names is None:
                names = seen[p.model] = set()
            if p.features:
                names.update(p.features)
        over: dict[str, set[str]] = {}  # per model: watched names this batch carries that are not tracked
        for model, names in seen.items():
            if not names:
                continue
            watched = {f for f in names if features.watched(f, settings.for_model(model))}
            untracked = watched - await self.tracked(model, watched)
            if untracked:
                over[model] = untracked
        for model in seen:
            if self._tracked.get(model):  # a model that never sent a watched feature keeps no feature statistics
                plan.tracked[model] = frozenset(self._tracked[model])
                plan.window_ms[model] = settings.for_model(model).window_seconds * 1000
        for p in predictions:
            if p.features and p.model in over and p.model in plan.tracked:
                plan.untracked[p.model] = plan.untracked.get(p.model, 0) + len(over[p.model] & p.features.keys())
        return plan

    def add_distinct(self, plan: FeaturePlan, summaries: Mapping[tuple[str, int], Sequence[GroupStats]]) -> None:
        """The HyperLogLog elements of each (model, window start) from its groups' summaries (one per bucket)."""
        for (model, start), sums in summaries.items():
            ttl = keys.window_ttl(self.settings.for_model(model))
            for name in plan.tracked[model]:
                numbers = set().union(*(s.numbers.get(name, ()) for s in sums))
                strings = set().union(*(s.strings.get(name, ()) for s in sums))
                if numbers or strings:
                    hll = keys.feature_distinct(model, start, name)
                    plan.distinct[hll] = (struct.pack(f"<{len(numbers)}d", *numbers), orjson.dumps(list(strings)))
                    plan.ttl[hll] = ttl

    def queue(self, pipe: Any, plan: FeaturePlan) -> None:
        """Add a batch's distinct-count writes to the apply pipeline (after the counters, before the offsets)."""
        for hll, (numbers, strings) in plan.distinct.items():
            pipe.eval(scripts.DISTINCT.source, 1, hll, plan.ttl[hll], numbers, strings)

    async def read(self, model: str, start_ms: int, stats: Sequence[Mapping[bytes, bytes]] | None = None
                   ) -> tuple[int, dict[str, features.FeatureStats]]:
        """A closed window's feature statistics summed over buckets: (predictions recorded, stats per feature).

        `stats`: the per-bucket statistics hashes when already read (Store.close_and_read), saving a round trip."""
        buckets = range(self.settings.state_buckets)
        if stats is None:
            async with self.redis.pipeline(transaction=False) as pipe:
                for b in buckets:
                    pipe.hgetall(keys.feature_stats(b, model, start_ms))
                stats = await pipe.execute()
        replies = list(stats)
        n = 0
        sums: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        lo: dict[str, float] = {}
        hi: dict[str, float] = {}
        for reply in replies:
            for k, v in reply.items():
                kind, _, name = k.decode().partition("|")
                if kind == "_n":
                    n += int(v)
                elif kind == "lo":
                    lo[name] = min(float(v), lo.get(name, math.inf))
                elif kind == "hi":
                    hi[name] = max(float(v), hi.get(name, -math.inf))
                else:
                    sums[name][kind] += float(v)
        names = sorted(sums)
        async with self.redis.pipeline(transaction=False) as pipe:
            for name in names:
                # by name: a Redis Cluster pipeline refuses pfcount() (it may name keys of several slots); one key
                # is one slot
                pipe.execute_command("PFCOUNT", keys.feature_distinct(model, start_ms, name))
                for b in buckets:
                    pipe.hgetall(keys.feature_top(b, model, start_ms, name))
            replies = await pipe.execute()
        out: dict[str, features.FeatureStats] = {}
        step = 1 + len(buckets)
        for i, name in enumerate(names):
            tops: dict[str, int] = defaultdict(int)
            for reply in replies[i * step + 1:(i + 1) * step]:
                for value, count in reply.items():
                    tops[value.decode()] += int(count)  # Space-Saving summaries merge by adding counts
            top_value, top_count = max(tops.items(), key=lambda kv: (kv[1], kv[0])) if tops else (None, 0)
            kept = tuple(sorted(tops.items(), key=lambda kv: (-kv[1], kv[0]))[:features.TOPS_KEPT])
            s = sums[name]
            out[name] = features.FeatureStats(
                n=n, values=int(s["c"]), total=s["s"], squares=s["q"], lo=lo.get(name), hi=hi.get(name),
                strings=int(s["k"]), explicit_nulls=int(s["z"]), distinct=int(replies[i * step]),
                top_value=top_value, top_count=top_count, tops=kept)
        return n, out
