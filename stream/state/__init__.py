"""Redis state: the Lua scripts (`lua/`), the key names (`keys`), and the worker's handle on them (`Store`).

    keys        every key name and lifetime (pure: no redis import)
    scripts     the Lua scripts, read once, the restart guard prepended where it applies
    redis_io    reply decoding, and a pipeline run that maps the guard's refusal to RedisRestarted
    labels      capped admission of producer-chosen names (models, labels, features)
    features    feature statistics: what a batch writes besides the apply script, and the read of a window
    evaluation  the evaluator's calls: tick, close and read, commit, lease, outbox acks
    progress    partition progress: a chunk's offsets and event time, idleness assertions, the watermark's read
    store       Store: prepare / send / apply a batch, offsets, annotations; the evaluator's calls delegated

The names below are exported lazily, so that importing `stream.state.keys` imports no redis client.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .evaluation import ClosedWindow as ClosedWindow
    from .evaluation import Evaluation as Evaluation
    from .evaluation import ModelState as ModelState
    from .evaluation import ModelTick as ModelTick
    from .evaluation import Tick as Tick
    from .evaluation import WindowCounts as WindowCounts
    from .features import FeaturePlan as FeaturePlan
    from .features import FeatureStore as FeatureStore
    from .labels import OTHER as OTHER
    from .labels import Labels as Labels
    from .progress import PartitionEnd as PartitionEnd
    from .progress import Progress as Progress
    from .store import ApplyResult as ApplyResult
    from .store import Flow as Flow
    from .store import Prepared as Prepared
    from .store import Store as Store

_HOME = {
    "ClosedWindow": "evaluation", "Evaluation": "evaluation", "ModelState": "evaluation", "ModelTick": "evaluation",
    "Tick": "evaluation", "WindowCounts": "evaluation", "FeaturePlan": "features", "FeatureStore": "features",
    "OTHER": "labels", "Labels": "labels", "PartitionEnd": "progress", "Progress": "progress",
    "ApplyResult": "store", "Flow": "store", "Prepared": "store", "Store": "store",
}

__all__ = sorted(_HOME)


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{home}"), name)
