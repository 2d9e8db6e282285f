"""Hostile messages for `events.parse`: hypothesis strategies shared by the fuzz tests of the parser and the worker.

`messages` draws arbitrary bytes, deep nesting, oversized messages, non-finite numbers, Unicode edge cases and
valid predictions with fields replaced, dropped or added, each alone or in batch messages.
"""

from __future__ import annotations

import math
from datetime import timezone
from typing import Any

import orjson
from hypothesis import strategies as st

from stream.events import Limits

LIMITS = Limits(max_event_bytes=4096, max_message_bytes=16384, max_batch_events=20)

GOOD = {"schema_version": 1, "event_id": "e", "prediction_id": "p", "model": "m", "model_version": "v1",
        "ts": "2026-11-20T00:10:00Z", "label": "a"}

extreme_numbers = st.sampled_from([math.nan, math.inf, -math.inf, 1e308, -1e308, 5e-324, 2**63, -(2**64), 0])
unicode_edge = st.sampled_from(["", "\u0000", "\ud7ff", "\U0010ffff", "e\u0301", "\u202e", "\ufeff", "|", "}",
                                "\x1f", "a" * 300, "😀" * 70, "{tg:b1}", "__other__"])
timestamps = st.one_of(
    st.sampled_from(["0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z", "1970-01-01T00:00:00Z",
                     "2026-11-20T00:10:00", "2026-13-40T99:99:99Z", "2026-11-20T00:10:00+14:00", "now", ""]),
    st.datetimes(timezones=st.just(timezone.utc)).map(lambda d: d.isoformat().replace("+00:00", "Z")),
    st.integers(), extreme_numbers)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | extreme_numbers | unicode_edge | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=30)


@st.composite
def mutated_events(draw: Any) -> dict[str, Any]:
    """A valid prediction with some fields replaced, dropped or added."""
    event = dict(GOOD, event_id=draw(st.text(min_size=1, max_size=12)),
                 prediction_id=draw(st.text(min_size=1, max_size=12)))
    for key in draw(st.lists(st.sampled_from(sorted(GOOD) + ["score", "segment", "band", "features", "x"]),
                             max_size=3)):
        choice = draw(st.integers(0, 3))
        if choice == 0:
            event.pop(key, None)
        elif choice == 1:
            event[key] = draw(json_values)
        elif choice == 2:
            event[key] = draw(timestamps) if key == "ts" else draw(unicode_edge)
        else:
            event[key] = draw(extreme_numbers)
    return event


def deep(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def encode(value: Any) -> bytes:
    try:
        return orjson.dumps(value)
    except (TypeError, orjson.JSONEncodeError):
        return repr(value).encode()  # not JSON at all: a fine hostile message too


messages = st.one_of(
    st.binary(max_size=200),                                                          # arbitrary bytes
    st.integers(1, 5000).map(deep),                                                    # deep nesting
    st.integers(1, 3).map(lambda n: b'{"s": "' + b"x" * (LIMITS.max_message_bytes * n) + b'"}'),  # huge
    st.sampled_from([b'{"ts": NaN}', b'{"score": Infinity}', b'{"score": 1e309}', b'[' + b'1,' * 30 + b'1]']),
    json_values.map(encode),
    mutated_events().map(encode),
    st.lists(mutated_events(), max_size=25).map(encode),                               # batch messages
)
