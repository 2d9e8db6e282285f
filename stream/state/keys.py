"""Every Redis key name, in one place, with its hash tag and its lifetime.

Per-prediction state lives in one of `state_buckets` buckets chosen by a hash of `prediction_id`, tagged
`{tg:b<N>}`: a prediction, its actions and outcomes always meet in one Cluster slot, so a batch is applied with
one atomic Lua call per bucket. Per-model state (detector, history, alert outbox) is tagged `{tg:m:<model>}`.
Window counters are kept per bucket and summed when a window closes.
"""

from __future__ import annotations

import zlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..settings import ModelSettings

PREFIX = "tg"


def bucket_of(prediction_id: str, buckets: int) -> int:
    """Stable bucket for a prediction id (crc32: fast, and identical in every worker and language)."""
    return zlib.crc32(prediction_id.encode()) % buckets


def bucket_tag(bucket: int) -> str:
    """Hash tag and prefix of every key in a bucket: `<tag>:c:<slot>` prediction contexts (see `context_slot`),
    `<tag>:q:<pid>` actions/outcomes parked until their prediction arrives (see `parked`), `<tag>:w:<model>:<start>`
    window counters (TTL `window_ttl`), `<tag>:meta` first windows, closed marks and interned context triples.
    A script that names keys it cannot know in advance (the apply script's slots, windows and parked keys) is
    handed their prefixes from here (`context_prefix` and its siblings) and appends only the parts documented
    there, so a script touches only keys of its bucket's Cluster slot and every name is spelled here."""
    return f"{{{PREFIX}:b{bucket}}}"


def model_tag(model: str) -> str:
    # A '}' in a model name would end the hash tag early; it is rare enough to replace rather than escape.
    return f"{{{PREFIX}:m:{model.replace('}', '_')}}}"


# --- bucket keys (slot {tg:b<N>}) ---

def bucket_meta(bucket: int) -> str:
    """Hash: `first:<model>` earliest window start, `closed:<model>` end of the last window whose predictions stage
    was judged and `closed:<model>:<stage>` (`a0`, `o1`, ...) of each follow-up stage (stream.windows.Stage),
    `i:<triple json>` / `j:<id>` / `i#` the interned context triples. Refreshed by every batch; expires after
    META_TTL without traffic."""
    return f"{bucket_tag(bucket)}:meta"


def closed_field(model: str, stage: str) -> str:
    """The bucket meta field of a model's closed mark for one stage ('n', 'a0', 'o1', ...)."""
    return f"closed:{model}" if stage == "n" else f"closed:{model}:{stage}"


def bucket_pending(bucket: int) -> str:
    """Sorted set: prediction ids holding actions/outcomes that wait for their prediction, scored by deadline."""
    return f"{bucket_tag(bucket)}:pending"


def bucket_offsets(bucket: int) -> str:
    """Hash, on a Redis Cluster: `<topic>:<partition>` -> next offset to read, as far as this bucket's state goes
    (everything of the partition below it that belongs to the bucket is applied). Written by the apply call that
    writes the bucket's effects, and by its worker's vouching (Store.vouch) once every chunk below was applied, so
    a shard that rolls back rolls the record back with the effects. A partition resumes at the minimum over every
    bucket's record (a bucket with none: from the first retained offset). One node keeps OFFSETS instead."""
    return f"{bucket_tag(bucket)}:offsets"


def bucket_event_time(bucket: int) -> str:
    """Hash, on a Redis Cluster: `<topic>:<partition>` -> newest event ms of the partition's messages below the
    bucket's offset (a monotonic max, written with `bucket_offsets`); a partition's event time is the minimum over
    every bucket's. One node keeps EVENT_TIME instead."""
    return f"{bucket_tag(bucket)}:offsets:et"


def window_prefix(bucket: int) -> str:
    """Prefix of the bucket's window counter hashes; the apply script appends `<model>:<start_ms>`."""
    return f"{bucket_tag(bucket)}:w:"


def window_counts(bucket: int, model: str, start_ms: int) -> str:
    """Hash: `<version>|<scope>|<counter>` -> count of one window in one bucket. The outcomes that carry a value
    add `v:<outcome kind>#<k>` their values' sum and, of the positive ones, `vn:` their count, `vl:` and `vq:`
    the sum and sum of squares of their natural logs (FLOAT_COUNTERS are floats). TTL `window_ttl`."""
    return f"{window_prefix(bucket)}{model}:{start_ms}"


FLOAT_COUNTERS = ("v:", "vl:", "vq:")
"""Prefixes of the window counters that hold sums of outcome values (floats) rather than counts."""


LATE_FIELD = "~late|"
"""Field prefix, in a window's counter hash, of the count of events (by stage kind n/a/o) that came after their
stage of the window was judged: `~late|a`. No counter field starts with '~'."""


def window_ttl(ms: ModelSettings) -> int:
    """Seconds a window's keys live after their last write: the window, its longest follow-up horizon (its last
    stage is judged then), its lateness, and WINDOW_MARGIN."""
    horizon = max(ms.action_horizon_seconds, ms.outcome_horizon_seconds)
    return ms.window_seconds + horizon + ms.allowed_lateness_seconds + WINDOW_MARGIN


CONTEXT_SLOTS = 8
"""Event-time slots per context_ttl: the slot span is context_ttl / 8 (whole seconds, rounded up)."""


def slot_span_ms(context_ttl_seconds: int) -> int:
    """Event-time span of one context slot hash."""
    return -(-context_ttl_seconds // CONTEXT_SLOTS) * 1000


def context_prefix(bucket: int) -> str:
    """Prefix of the bucket's context slot hashes; the apply script appends the slot's start ms."""
    return f"{bucket_tag(bucket)}:c:"


def context_slot(bucket: int, slot_ms: int) -> str:
    """Hash: prediction_id -> packed context `<id>,<at>[\x1d<tokens>]\x1e<label>` for the predictions of the bucket
    whose `ts` falls in [slot_ms, slot_ms + span). `<id>` is the interned (model, version, scopes) triple (meta
    `i:`/`j:` fields); `<at>` the prediction's ts in ms after slot_ms (a follow-up's age is measured from it);
    `<tokens>` are 16-hex-digit hashes of the event_ids of the actions/outcomes applied to it
    (their dedup). One hash per slot instead of one key per prediction saves the ~130 bytes of per-key overhead
    that millions of small keys would cost. Its TTL is reset to context_ttl on every write, so a context lives
    between context_ttl and context_ttl + span (wall clock) after it was stored; an action or outcome at `ts` looks
    for its prediction in the slots from slot(ts + span) back to slot(ts - context_ttl), so it joins a prediction
    up to context_ttl older than itself, or up to one span newer (clock skew); anything else is parked and
    orphaned."""
    return f"{context_prefix(bucket)}{slot_ms}"


def parked_prefix(bucket: int) -> str:
    """Prefix of the bucket's parked keys; the apply and sweep scripts append the prediction_id."""
    return f"{bucket_tag(bucket)}:q:"


def parked(bucket: int, prediction_id: str) -> str:
    """Hash: event_id -> record JSON of an action/outcome that arrived before its prediction (the rare path);
    drained and deleted when the prediction arrives, or deleted by the pending sweep as an orphan. TTL twice
    pending_ttl, a backstop only: the sweep deletes it (and counts it) at pending_ttl."""
    return f"{parked_prefix(bucket)}{prediction_id}"


# --- model keys (slot {tg:m:<model>}) ---

def model_state(model: str) -> str:
    """Hash: `closed` the cursor of the last judged (window, stage) (stream.windows.format_cursor), `state` detector
    state JSON. TTL MODEL_TTL."""
    return f"{model_tag(model)}:state"


def model_history(model: str) -> str:
    """Hash: window start -> JSON summary of a closed window (counts per scope); trimmed to the baseline span."""
    return f"{model_tag(model)}:hist"


def model_outbox(model: str) -> str:
    """Hash: alert_id -> alert JSON decided but not yet acknowledged by the broker; republished after a crash."""
    return f"{model_tag(model)}:outbox"


def model_lease(model: str) -> str:
    """String: id of the worker that evaluates and publishes this model now; expires (LEASE_MS) if it dies."""
    return f"{model_tag(model)}:lease"


def model_labels(model: str) -> str:
    """Set of admitted segment dimension names (`s:<dim>`), capped by max_dimensions. TTL MODEL_TTL."""
    return f"{model_tag(model)}:labels"


def model_label_values_prefix(model: str) -> str:
    """Prefix of the model's value sets; the admit script appends the dimension (`version`, `band`, `s:<dim>`)."""
    return f"{model_labels(model)}:"


def model_label_values(model: str, dimension: str) -> str:
    """Set of the admitted values of one dimension, capped by max_label_values. TTL MODEL_TTL."""
    return f"{model_label_values_prefix(model)}{dimension}"


def model_annotations(model: str) -> str:
    """Hash: annotation event_id -> annotation JSON (idempotent by event_id). TTL MODEL_TTL from the last write."""
    return f"{model_tag(model)}:ann"


# --- global keys ---

MODELS = f"{PREFIX}:models"
"""Set of admitted model names (at most max_models, plus `__other__`). TTL MODEL_TTL, refreshed by admission."""

OFFSETS = f"{{{PREFIX}:offsets}}"
"""Hash: `<topic>:<partition>` -> next offset to read, written after the batch effects it covers."""

LAYOUT = f"{PREFIX}:layout"
"""String: the layout version of every key here (LAYOUT_VERSION), written by the first worker on an empty Redis; a
worker that finds trustgap state without it, or with another version, refuses to start (cli._check_redis)."""
LAYOUT_VERSION = "2"  # 2: windows belong to predictions (follow-ups counted by checkpoint), per-partition event time
EVENT_TIME = f"{OFFSETS}:et"
"""Hash: `<topic>:<partition>` -> newest event ms (of a prediction, action or outcome) applied from the partition,
a monotonic max written by the same offsets.lua call as the offsets whose messages carried it (same slot as
OFFSETS), so a Redis that rolls its offsets back rolls the event time back with them. The watermark is the
minimum over the event topics' partitions (windows.partition_watermark)."""


IDLE_PREFIX = f"{OFFSETS}:idle:"
"""Prefix of the idleness keys (slot of OFFSETS); the idle and offsets scripts append `<topic>:<partition>`."""


def idle(topic: str, partition: int) -> str:
    """String: wall-clock ms at which the partition's owner last found it read to its end (by the offsets in
    OFFSETS) with nothing new for idle_timeout; while it exists the partition does not hold the watermark back.
    Refreshed every assertion with TTL `idle_ttl_ms`, so an owner that died stops vouching for it; deleted by the
    offsets.lua call that claims a new event from the partition."""
    return f"{IDLE_PREFIX}{topic}:{partition}"


def idle_ttl_ms(assert_interval_seconds: float) -> int:
    """Lifetime of an idleness assertion: three missed re-assertions (one per evaluate_interval) and 2 s more."""
    return int(1000 * (3 * assert_interval_seconds + 2))

# Lifetimes (seconds).
WINDOW_MARGIN = 3600          # window keys outlive their close by this much, so a slow evaluator still finds them
META_TTL = 90 * 86400         # bucket meta and model state survive three months of silence
MODEL_TTL = 90 * 86400
LEASE_MS = 15_000             # a dead evaluator's models are taken over after this long


# --- feature health ---
# Window statistics are written inside a bucket's slot by the same pipeline as the counters, guarded per
# prediction like them; the distinct-count HyperLogLogs sit under the model tag instead, because PFADD is
# idempotent by nature (a replayed value changes nothing) and one HLL per (model, window, feature) is 16x less
# memory than one per bucket, with nothing to PFMERGE across slots when the window closes.

FEATURE_TOP_K = 16
"""Space-Saving counters per (bucket, window, string feature): any value with a share above 1/16 of a bucket's
strings is guaranteed to be among them, and its count is over-estimated by at most 1/16 of them."""


def feature_stats_prefix(bucket: int) -> str:
    """Prefix of the bucket's feature statistics hashes; the apply script appends `<model>:<start_ms>`."""
    return f"{bucket_tag(bucket)}:f:"


def feature_stats(bucket: int, model: str, start_ms: int) -> str:
    """Hash: `_n` predictions recorded; per feature `c|f` numeric values, `s|f` sum, `q|f` sum of squares,
    `lo|f`/`hi|f` min/max, `k|f` string values, `z|f` explicit nulls. TTL as the window counters."""
    return f"{feature_stats_prefix(bucket)}{model}:{start_ms}"


def feature_top_prefix(bucket: int) -> str:
    """Prefix of the bucket's top-value hashes; the apply script appends `<model>:<start_ms>:<feature>`."""
    return f"{bucket_tag(bucket)}:fv:"


def feature_top(bucket: int, model: str, start_ms: int, feature: str) -> str:
    """Hash: string value -> Space-Saving count (at most FEATURE_TOP_K fields). TTL as the window counters."""
    return f"{feature_top_prefix(bucket)}{model}:{start_ms}:{feature}"


def feature_distinct(model: str, start_ms: int, feature: str) -> str:
    """HyperLogLog of the feature's values in one window (all buckets). TTL as the window counters."""
    return f"{model_tag(model)}:fh:{start_ms}:{feature}"


def model_features(model: str) -> str:
    """Set: the features tracked for a model, first come first tracked up to `max_features`. TTL MODEL_TTL."""
    return f"{model_tag(model)}:feats"
