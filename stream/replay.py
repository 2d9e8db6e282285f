"""`trustgap replay`: send JSONL files to the right topics.

A line is either one contract event (its kind told by its fields, validated as the worker would) or a captured
message `{"topic": ..., "key": ..., "value": ...}` sent as is (so that bad messages can be replayed too). Invalid
lines are not sent; they are reported with their file and line number.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import orjson

from .events import EventKind, Limits, Reject, validate

RAW_FIELDS = {"topic", "key", "value"}
CONTRACT_LIMITS = Limits()  # the contract's own limits, when the caller has no settings


class Sink(Protocol):
    def send(self, kind: EventKind, event: Mapping[str, Any]) -> str: ...
    def produce_raw(self, topic: str, value: bytes, key: bytes | None = None) -> None: ...


@dataclass(frozen=True, slots=True)
class BadLine:
    path: str
    line: int
    reason: str

    def describe(self) -> str:
        return f"{self.path}:{self.line}: {self.reason}"


@dataclass(slots=True)
class ReplayResult:
    events: int = 0     # contract events sent
    raw: int = 0        # captured messages sent as is
    bad: list[BadLine] = field(default_factory=list)

    @property
    def sent(self) -> int:
        return self.events + self.raw


def kind_of(obj: Mapping[str, Any]) -> EventKind | None:
    """Which contract event a JSON object is, from the fields only its kind has."""
    if "action" in obj:
        return "action"
    if "prediction_id" not in obj:
        return "annotation" if "model" in obj and ("note" in obj or "start" in obj) else None
    return "prediction" if "model" in obj else "outcome"


def classify(raw: bytes, limits: Limits = CONTRACT_LIMITS) -> tuple[str, Any] | str:
    """('event', (kind, obj)) or ('raw', (topic, key, value)) for a good line, or the reason it is bad."""
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as err:
        return f"not_json: {str(err)[:120]}"
    if not isinstance(obj, dict):
        return f"not_an_object: expected a JSON object, got {type(obj).__name__}"
    if "topic" in obj and "value" in obj and set(obj) <= RAW_FIELDS:
        topic, key, value = obj["topic"], obj.get("key"), obj["value"]
        if not isinstance(topic, str) or not topic or not (key is None or isinstance(key, str)):
            return "bad_raw_line: `topic` must be a non-empty string and `key` a string or null"
        body = value.encode() if isinstance(value, str) else orjson.dumps(value)
        return "raw", (topic, key.encode() if key is not None else None, body)
    kind = kind_of(obj)
    if len(raw.strip()) > limits.max_event_bytes:
        return f"event_too_large: {len(raw.strip())} bytes > {limits.max_event_bytes}"
    if kind is None:
        return "unknown_kind: not a prediction, action, outcome, annotation or {topic, key, value} line"
    result = validate(kind, obj, raw)
    if isinstance(result, Reject):
        return f"invalid {kind}: {result.describe()}"
    return "event", (kind, obj)


def lines(paths: Iterable[Path]) -> Iterable[tuple[str, int, bytes]]:
    """(path, line number from 1, line) for every non-blank line of every file, in order."""
    for path in paths:
        with path.open("rb") as f:
            for n, line in enumerate(f, 1):
                if line.strip():
                    yield str(path), n, line


def replay(paths: Iterable[Path], sink: Sink | None, rate: float | None = None, limits: Limits = CONTRACT_LIMITS,
           progress: Callable[[int], None] | None = None, sleep: Callable[[float], None] = time.sleep,
           clock: Callable[[], float] = time.monotonic) -> ReplayResult:
    """Send every good line to `sink` (None: only check), at most `rate` lines per second; `progress` gets the
    bytes consumed per line."""
    result = ReplayResult()
    started = clock()
    for path, n, line in lines(paths):
        if progress is not None:
            progress(len(line))
        verdict = classify(line, limits)
        if isinstance(verdict, str):
            result.bad.append(BadLine(path, n, verdict))
            continue
        if rate:
            ahead = started + result.sent / rate - clock()
            if ahead > 0:
                sleep(ahead)
        what, payload = verdict
        if what == "raw":
            if sink is not None:
                topic, key, value = payload
                sink.produce_raw(topic, value, key)
            result.raw += 1
        else:
            if sink is not None:
                try:
                    sink.send(*payload)
                except ValueError as err:  # the sink's own checks (e.g. its size limit) refused it
                    result.bad.append(BadLine(path, n, f"refused: {err}"))
                    continue
            result.events += 1
    return result
