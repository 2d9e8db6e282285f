"""`parse` reads a wholly valid message in one pydantic-core call; it must return exactly what the per-element path
(`_parse_elements`, the reference) returns, for every input: same events, same rejects (reason, detail, raw, index).
"""

from __future__ import annotations

import itertools
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.events import Limits, _parse_elements, _parse_valid, parse
from tests.support.hostile import LIMITS as HOSTILE_LIMITS
from tests.support.hostile import messages as hostile_messages

PRED = {"schema_version": 1, "event_id": "e1", "prediction_id": "p1", "model": "claims", "model_version": "3",
        "ts": "2026-11-01T12:00:00Z", "label": "approve"}
FULL = {**PRED, "score": 0.25, "band": "low", "segment": {"region": "eu"},
        "features": {"age": 41, "country": "fr", "income": None, "ratio": 0.5}}
ACTION = {"schema_version": 1, "event_id": "e2", "prediction_id": "p1", "ts": "2026-11-01T12:05:00+01:00",
          "action": "override"}
OUTCOME = {"schema_version": 1, "event_id": "e3", "prediction_id": "p1", "ts": "2026-12-01T00:00:00Z",
           "label": "claim", "kind": "proxy", "value": 1.5}
ANNOTATION = {"schema_version": 1, "event_id": "e4", "model": "claims", "kind": "campaign",
              "start": "2026-11-01T00:00:00Z", "note": "weekend push, all regions"}
SMALL = Limits(max_event_bytes=1000, max_message_bytes=20_000, max_batch_events=10)


def dumps(value: Any) -> bytes:
    return orjson.dumps(value)


def pred(**fields: Any) -> dict[str, Any]:
    return {**PRED, **fields}


def batch(*events: Any) -> bytes:
    return orjson.dumps(list(events))


def with_extra(event: dict[str, Any], json_text: bytes, name: bytes = b"x") -> bytes:
    """An event with one more field written as raw JSON text (for numbers orjson would not write)."""
    return dumps(event)[:-1] + b',"' + name + b'":' + json_text + b"}"


# (kind, message, limits, whether the one-call read is expected to answer)
CASES: list[tuple[str, bytes, Limits, bool]] = [
    # --- valid messages: the one-call read answers ---
    ("prediction", dumps(PRED), Limits(), True),                                   # single event, minimal
    ("prediction", dumps(FULL), Limits(), True),                                   # single event, every field
    ("prediction", batch(FULL, pred(event_id="e2"), PRED), Limits(), True),        # batch of valid events
    ("prediction", batch(*[pred(event_id=f"e{i}") for i in range(10)]), SMALL, True),  # batch over 2/9 of the
    # event limit: each element's bytes are found by splitting at `},{` and all fit
    ("prediction", dumps(pred(future={"nested": [1, {"a": None}]})), Limits(), True),  # extras are kept
    ("prediction", batch(pred(x=-(2**63)), pred(x=2**64 - 1)), Limits(), True),    # 64-bit extremes stay ints
    ("prediction", dumps(pred(score=1e308)), Limits(), True),                      # largest double
    ("prediction", dumps(pred(score=5)), Limits(), True),                          # an int score becomes a float
    ("prediction", b'{"schema_version":1,"event_id":"a","event_id":"b","prediction_id":"p","model":"m",'
                   b'"model_version":"","ts":"2026-11-01T12:00:00Z","label":""}', Limits(), True),  # last key wins
    ("prediction", b'{"sch\\u0065ma_version":1,"event_id":"\\u00e9\\ud83d\\ude00","prediction_id":"p",'
                   b'"model":"m","model_version":"","ts":"2026-11-01T12:00:00Z","label":""}', Limits(), True),
    # escapes in keys and values (a surrogate pair)
    ("prediction", dumps(pred(label="},{")), Limits(), True),                     # the split pattern in a string
    # a 30-digit score: both readers round it to the same double
    ("prediction", with_extra(PRED, b"123456789012345678901234567890", b"score"), Limits(), True),
    ("prediction", dumps(FULL) + b"\n", Limits(), True),                          # trailing whitespace
    ("action", batch(ACTION, {**ACTION, "action": "bypass", "reason": "gut"}), Limits(), True),
    ("outcome", dumps(OUTCOME), Limits(), True),
    ("annotation", batch(ANNOTATION, {**ANNOTATION, "end": "2026-11-03T00:00:00Z"}), Limits(), True),
    ("prediction", b"[]", Limits(), True),                                        # an empty batch
    # --- valid, but the one-call read cannot vouch for it: the per-element path reads it ---
    ("prediction", b" " + dumps(PRED), Limits(), False),                          # leading whitespace
    ("prediction", orjson.dumps([PRED, PRED], option=orjson.OPT_INDENT_2), SMALL, False),  # pretty-printed
    # batch too large for the whole-message size argument
    ("prediction", batch(pred(label="},{"), *[pred(event_id=f"e{i}") for i in range(5)]), SMALL, False),
    # a `},{` inside an element, with no way to tell it from a boundary
    ("prediction", with_extra(PRED, b"123456789012345678901234567890"), Limits(), False),  # orjson reads a
    # float, pydantic-core an int
    ("prediction", with_extra(PRED, b"-9223372036854775809"), Limits(), False),   # just below int64
    ("prediction", with_extra(PRED, b'{"a":[18446744073709551616]}'), Limits(), False),  # nested, above uint64
    ("prediction", dumps(pred(x=[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]])), Limits(), True),  # nested extras
    # --- invalid whole messages ---
    ("prediction", b"", Limits(), False),                                          # empty
    ("prediction", b"{not json", Limits(), False),                                 # not JSON
    ("prediction", b"\xef\xbb\xbf" + dumps(PRED), Limits(), False),               # byte order mark
    ("prediction", with_extra(PRED, b"NaN"), Limits(), False),                    # NaN in an extra field
    ("prediction", with_extra(PRED, b"Infinity"), Limits(), False),               # Infinity in an extra field
    ("prediction", with_extra(PRED, b"-1e999"), Limits(), False),                 # overflows a double
    ("prediction", b'{"schema_version":1,"event_id":"e","prediction_id":"p","model":"m","model_version":"",'
                   b'"ts":"2026-11-01T12:00:00Z","label":"","score":NaN}', Limits(), False),  # NaN score
    ("prediction", b'{"schema_version":1,"event_id":"e","prediction_id":"p","model":"m","model_version":"",'
                   b'"ts":"2026-11-01T12:00:00Z","label":"","score":1e999}', Limits(), False),  # infinite score
    ("prediction", b'{"schema_version":1,"event_id":"e\\ud800","prediction_id":"p","model":"m",'
                   b'"model_version":"","ts":"2026-11-01T12:00:00Z","label":""}', Limits(), False),  # lone surrogate
    ("prediction", b'"a string"', Limits(), False),                               # not an object
    ("prediction", dumps(pred(pad="x" * 2000)), SMALL, False),                    # single event too large
    ("prediction", dumps([PRED] * 200), SMALL, False),                            # message too large
    ("prediction", dumps([PRED] * 11), SMALL, False),                             # batch too large
    ("prediction", b"[" * 300 + b"]" * 300, Limits(), False),                    # deep, but JSON
    ("prediction", b"[" * 2000 + b"]" * 2000, Limits(), False),                  # deeper than orjson reads
    # --- batches with invalid elements ---
    ("prediction", batch(PRED, pred(pad="x" * 2000), PRED), SMALL, False),        # an oversized element
    ("prediction", batch(PRED, orjson.loads(with_extra(PRED, b"[" + b"1e15," * 60 + b"1]"))),
     SMALL, False),                                                               # under the limit as sent,
    # over it re-encoded (1e15 is written 1000000000000000.0)
    ("prediction", batch(PRED, pred(x=orjson.loads(b"[" * 250 + b"]" * 250))), Limits(), False),  # an element
    # nested deeper than orjson writes
    ("prediction", batch(PRED, pred(x=orjson.loads(b"[" * 210 + b"]" * 210))), Limits(), False),  # deeper than
    # pydantic-core reads, shallower than orjson writes
    ("prediction", batch(PRED, 4, "x", None, [PRED]), Limits(), False),            # elements that are not objects
    ("prediction", batch(pred(model=7), pred(score="0.5"), pred(segment={"region": 1}),
                         pred(features={"f": [1]}), pred(score=True)), Limits(), False),  # wrong types, no coercion
    ("prediction", batch(pred(event_id=""), pred(model="m" * 129)), Limits(), False),  # bad values
    ("prediction", batch(pred(schema_version=2), pred(schema_version="1")), Limits(), False),  # versions
    ("prediction", batch(pred(ts="2026-11-01T12:00:00"), pred(ts=1762000000), pred(ts="2026-13-01T00:00:00Z"),
                         pred(ts="soon"), pred(ts="0001-01-01T00:00:00+14:00"), pred(ts=None)), Limits(), False),
    # naive, numeric, impossible, unparseable, before year 1 in UTC, null timestamps
    ("prediction", batch(*[{k: v for k, v in PRED.items() if k != key} for key in PRED]), Limits(), False),
    # each required field missing in turn
    ("action", batch(ACTION, {**ACTION, "action": "shrug"}), Limits(), False),
    ("outcome", batch({**OUTCOME, "kind": "guess"}, OUTCOME), Limits(), False),
    ("annotation", batch({**ANNOTATION, "start": "2026-11-01T00:00:00"}, ANNOTATION), Limits(), False),
    ("prediction", batch(ACTION), Limits(), False),                                # an action on the predictions topic
]


@pytest.mark.parametrize(("kind", "raw", "limits", "one_call"), CASES)
def test_one_call_read_returns_what_the_per_element_path_returns(kind: Any, raw: bytes, limits: Limits,
                                                                 one_call: bool) -> None:
    assert parse(kind, raw, limits) == _parse_elements(kind, raw, limits)
    assert [type(e) for e in parse(kind, raw, limits)[0]] == [type(e) for e in _parse_elements(kind, raw, limits)[0]]
    assert (_parse_valid(kind, raw, limits) is not None) is one_call


@settings(max_examples=1000, deadline=None)
@given(hostile_messages)
def test_both_paths_agree_on_hostile_messages(raw: bytes) -> None:
    assert parse("prediction", raw, HOSTILE_LIMITS) == _parse_elements("prediction", raw, HOSTILE_LIMITS)


numbers = st.one_of(st.integers(), st.floats(allow_nan=False, allow_infinity=False),
                    st.sampled_from(["1e15", "9e15", "-1e999", "1e-7", "123456789012345678901", "-0", "-0.0"]))


@settings(max_examples=500, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["score", "x", "features"]), numbers), max_size=12),
       st.integers(300, 3000))
def test_both_paths_agree_on_numbers_anywhere(fields: list[tuple[str, Any]], event_bytes: int) -> None:
    elements = []
    for key, number in fields:
        text = number.encode() if isinstance(number, str) else str(number).encode()  # also past 64 bits
        value = b'{"f":' + text + b"}" if key == "features" else text
        elements.append(dumps(PRED)[:-1] + b',"' + key.encode() + b'":' + value + b"}")
    raw = b"[" + b",".join(elements) + b"]"
    limits = Limits(max_event_bytes=event_bytes)
    assert parse("prediction", raw, limits) == _parse_elements("prediction", raw, limits)


def test_reencoding_grows_a_json_number_at_most_four_and_a_half_times() -> None:
    # `_parse_valid` relies on this bound (numbers are the only JSON text orjson writes longer than it was sent).
    worst = 0.0
    for length in range(1, 6):
        for chars in itertools.product("0123456789.eE-+", repeat=length):
            text = "".join(chars)
            try:
                value = orjson.loads(text)
            except orjson.JSONDecodeError:
                continue
            worst = max(worst, len(orjson.dumps(value)) / len(text))
    assert worst == 4.5  # 1e15 -> 1000000000000000.0
