"""Event contract v1: the models model services send, and `parse` for raw Kafka messages.

A message's value is one event object or a JSON array of up to `max_batch_events` of them; each element is
validated on its own, so one bad element is rejected alone while its siblings are kept. Unknown extra fields are
kept and ignored (forward compatible). Nothing here knows about Kafka or Redis.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal, Union

import orjson
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, TypeAdapter, ValidationError


SCHEMA_VERSION = 1
DLQ_SAMPLE = 4096  # bytes of a message kept with a reject whose element cannot be re-encoded on its own
# Names, labels and ids become Redis key parts and (capped) metric labels: keep them short and printable.
_ID_MAX = 256


def _rfc3339(value: Any) -> datetime:
    """Accept only RFC 3339 strings that carry a zone; a bare number or a naive time is a producer bug."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("timestamp has no zone")
        return value
    if not isinstance(value, str):
        raise ValueError("timestamp must be an RFC 3339 string such as 2026-11-01T12:00:00Z")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"not an RFC 3339 timestamp: {value[:40]!r}") from None
    if parsed.tzinfo is None:
        raise ValueError("timestamp has no zone (add Z or +00:00)")
    return parsed


Timestamp = Annotated[datetime, BeforeValidator(_rfc3339)]
Id = Annotated[str, Field(min_length=1, max_length=_ID_MAX)]
Name = Annotated[str, Field(min_length=1, max_length=128)]
FeatureValue = Union[float, str, None]
Action = Literal["accept", "override", "bypass", "escalate"]
OutcomeKind = Literal["truth", "proxy"]
AnnotationKind = Literal["campaign", "experiment", "deploy", "data_fix", "other"]


class _Event(BaseModel):
    # strict: a number where a string belongs (or "1" for a number) is a wrong type, not something to guess at.
    model_config = ConfigDict(extra="allow", strict=True, allow_inf_nan=False, frozen=True)

    schema_version: Literal[1]
    event_id: Id


class PredictionEvent(_Event):
    """One model decision."""

    prediction_id: Id
    model: Name
    model_version: Annotated[str, Field(max_length=128)]
    ts: Timestamp
    label: Annotated[str, Field(max_length=_ID_MAX)]
    score: float | None = None
    band: Name | None = None
    segment: dict[Name, Annotated[str, Field(max_length=_ID_MAX)]] | None = None
    features: dict[Name, FeatureValue] | None = None


class HumanActionEvent(_Event):
    """What a person did with a prediction; override rate = (override + bypass) / all actions."""

    prediction_id: Id
    ts: Timestamp
    action: Action
    final_label: str | None = None
    actor: str | None = None
    reason: str | None = None


class OutcomeEvent(_Event):
    """What actually happened; `proxy` is a cheap stand-in signal, `truth` the real outcome."""

    prediction_id: Id
    ts: Timestamp
    label: Annotated[str, Field(max_length=_ID_MAX)]
    kind: OutcomeKind = "truth"
    value: float | None = None


class Annotation(_Event):
    """A deliberate change (campaign, experiment, deploy, data fix) that explains a shift."""

    model: Name
    kind: AnnotationKind
    start: Timestamp
    end: Timestamp | None = None
    segment: dict[Name, str] | None = None
    note: str


Event = Union[PredictionEvent, HumanActionEvent, OutcomeEvent, Annotation]
EventKind = Literal["prediction", "action", "outcome", "annotation"]
TOPIC_OF: dict[EventKind, str] = {"prediction": "predictions", "action": "actions", "outcome": "outcomes",
                                  "annotation": "annotations"}
"""Each event kind's topic, as the field of `settings.topics` (and of the SDK's topic names) that holds it."""
MODELS: dict[str, type[_Event]] = {
    "prediction": PredictionEvent,
    "action": HumanActionEvent,
    "outcome": OutcomeEvent,
    "annotation": Annotation,
}


_LISTS: dict[str, TypeAdapter[list[Event]]] = {kind: TypeAdapter(list[model]) for kind, model in MODELS.items()}  # type: ignore[valid-type]


@dataclass(frozen=True, slots=True)
class Limits:
    """Size limits from the contract (both configurable)."""

    max_event_bytes: int = 64 * 1024
    max_message_bytes: int = 1024 * 1024
    max_batch_events: int = 1000


@dataclass(frozen=True, slots=True)
class Reject:
    """An invalid message or batch element: `reason` is a short code (a metric label), `detail` says what to fix."""

    reason: str
    detail: str
    raw: bytes
    index: int | None = None  # position inside a batch message, None for the whole message

    def describe(self) -> str:
        where = f"element {self.index}: " if self.index is not None else ""
        return f"{self.reason}: {where}{self.detail}"


# Reason codes are a closed set so that the dead-letter metric's label stays bounded.
REASONS = (
    "not_json",
    "message_too_large",
    "event_too_large",
    "batch_too_large",
    "not_an_object",
    "unsupported_schema_version",
    "missing_field",
    "wrong_type",
    "bad_timestamp",
    "bad_value",
    "future",
)


def _classify(err: ValidationError) -> tuple[str, str]:
    first = err.errors(include_url=False)[0]
    loc = ".".join(str(p) for p in first["loc"]) or "(event)"
    kind = first["type"]
    msg = first["msg"]
    if loc == "schema_version" and kind != "missing":
        return "unsupported_schema_version", f"schema_version must be {SCHEMA_VERSION}"
    if kind == "missing":
        return "missing_field", f"missing required field {loc!r}"
    if loc.split(".")[0] in ("ts", "start", "end"):
        return "bad_timestamp", f"{loc}: {msg}"
    if kind.endswith("_type") or kind in ("literal_error", "is_instance_of", "model_type", "dict_type"):
        return "wrong_type", f"{loc}: {msg}"
    return "bad_value", f"{loc}: {msg}"


def validate(kind: EventKind, obj: Any, raw: bytes, index: int | None = None) -> Event | Reject:
    """Validate one decoded element against its topic's model."""
    if not isinstance(obj, dict):
        return Reject("not_an_object", f"expected a JSON object, got {type(obj).__name__}", raw, index)
    try:
        return MODELS[kind].model_validate(obj)  # type: ignore[return-value]
    except ValidationError as err:
        reason, detail = _classify(err)
        return Reject(reason, detail, raw, index)
    except (OverflowError, ValueError) as err:  # e.g. a year beyond datetime's range
        return Reject("bad_value", str(err)[:200], raw, index)


# orjson reads an integer outside these bounds as a float; pydantic-core keeps it an int.
_ORJSON_INT_MIN, _ORJSON_INT_MAX = -(2**63), 2**64 - 1
# Re-encoding a JSON text with orjson makes it at most 4.5 times longer: only a float in exponent form grows
# (`1e15` becomes `1000000000000000.0`); strings, integers and literals never do and whitespace goes away.
_REENCODE_GROWTH_NUM, _REENCODE_GROWTH_DEN = 9, 2


def _as_orjson_reads(value: Any) -> bool:
    """Whether an extra field read by pydantic-core is what orjson reads for the same JSON text."""
    if isinstance(value, float):
        return math.isfinite(value)  # pydantic-core reads NaN, Infinity and 1e999; orjson rejects them
    if isinstance(value, int) and not isinstance(value, bool):
        return _ORJSON_INT_MIN <= value <= _ORJSON_INT_MAX
    if isinstance(value, dict):
        return all(_as_orjson_reads(v) for v in value.values())
    if isinstance(value, list):
        return all(_as_orjson_reads(v) for v in value)
    return True


def _parse_valid(kind: EventKind, raw: bytes, limits: Limits) -> list[Event] | None:
    """The events of a wholly valid message, read by pydantic-core in one call (far cheaper than one validation per
    element, which is what batched throughput rests on); None means "not sure", and `_parse_elements`, which alone
    decides what is rejected and why, reads the message instead.

    Accepting here must mean the per-element path would accept the same events: pydantic-core's JSON reader
    agrees with orjson on every document both read, except that it also reads NaN/Infinity, numbers that
    overflow a double and integers beyond 64 bits (caught below or by the models' finite-float rule) and that
    it stops at 201 levels of nesting (orjson at 1024), which sends deeper messages down the other path.
    """
    head = raw[:1]
    if head == b"{":
        if len(raw) > limits.max_event_bytes:
            return None
        try:
            events: list[Event] = [MODELS[kind].model_validate_json(raw)]  # type: ignore[list-item]
        except (ValidationError, OverflowError, ValueError):
            return None
    elif head == b"[":
        try:
            events = _LISTS[kind].validate_json(raw)
        except (ValidationError, OverflowError, ValueError):
            return None
        if len(events) > limits.max_batch_events:
            return None
        # The per-element path rejects an element whose orjson re-encoding exceeds max_event_bytes. It cannot
        # when the whole message, grown by the most re-encoding can add, fits; otherwise find each element's
        # bytes: with no whitespace anywhere every boundary between the objects is exactly `},{`, and when
        # there are exactly len(events) - 1 of those, none lies inside an element.
        room = limits.max_event_bytes * _REENCODE_GROWTH_DEN // _REENCODE_GROWTH_NUM
        if len(raw) > room:
            if b" " in raw or b"\n" in raw or b"\t" in raw or b"\r" in raw:
                return None
            pieces = raw[1:-1].split(b"},{")
            if len(pieces) != len(events) or max(map(len, pieces)) + 2 > room:
                return None
    else:
        return None
    for event in events:
        if event.__pydantic_extra__ and not _as_orjson_reads(event.__pydantic_extra__):
            return None
    return events


def parse(kind: EventKind, value: bytes | None, limits: Limits = Limits()) -> tuple[list[Event], list[Reject]]:
    """Decode one Kafka message value into valid events and rejects (never raises on bad input)."""
    raw = value or b""
    if len(raw) <= limits.max_message_bytes:
        valid = _parse_valid(kind, raw, limits)
        if valid is not None:
            return valid, []
    return _parse_elements(kind, raw, limits)


def _parse_elements(kind: EventKind, raw: bytes, limits: Limits) -> tuple[list[Event], list[Reject]]:
    """Decode and validate element by element: the reference for what is rejected and why."""
    if len(raw) > limits.max_message_bytes:
        return [], [Reject("message_too_large", f"{len(raw)} bytes > {limits.max_message_bytes}", raw)]
    try:
        doc = orjson.loads(raw)
    except (orjson.JSONDecodeError, RecursionError) as err:
        return [], [Reject("not_json", str(err)[:200], raw)]
    if not isinstance(doc, list):
        if len(raw) > limits.max_event_bytes:
            return [], [Reject("event_too_large", f"{len(raw)} bytes > {limits.max_event_bytes}", raw)]
        result = validate(kind, doc, raw)
        return ([], [result]) if isinstance(result, Reject) else ([result], [])
    if len(doc) > limits.max_batch_events:
        return [], [Reject("batch_too_large", f"{len(doc)} events > {limits.max_batch_events}", raw)]
    sized: list[tuple[Any, bytes]] = []
    rejects: list[Reject] = []
    for i, element in enumerate(doc):
        try:
            element_raw = orjson.dumps(element)
        except (TypeError, orjson.JSONEncodeError):  # orjson writes less nesting (255) than it reads (1024)
            rejects.append(Reject("bad_value", "element nested too deeply", raw[:DLQ_SAMPLE], i))
            element_raw = b""
        else:
            if len(element_raw) > limits.max_event_bytes:
                rejects.append(Reject("event_too_large", f"{len(element_raw)} bytes > {limits.max_event_bytes}",
                                      element_raw, i))
        sized.append((element, element_raw))
    if not rejects:
        # A batch `_parse_valid` was not sure of (a large one with whitespace, say) may still be wholly valid:
        # one call into pydantic-core instead of one per element; any invalid element goes element by element.
        try:
            return _LISTS[kind].validate_python(doc), []
        except (ValidationError, OverflowError, ValueError):
            pass
    events: list[Event] = []
    bad = {r.index for r in rejects}
    for i, (element, element_raw) in enumerate(sized):
        if i in bad:
            continue
        result = validate(kind, element, element_raw, i)
        (rejects if isinstance(result, Reject) else events).append(result)  # type: ignore[arg-type]
    rejects.sort(key=lambda r: r.index or 0)
    return events, rejects


# --- what trustgap publishes -------------------------------------------------------------------------------

Signal = Literal["override_rate", "outcome_mismatch", "proxy_divergence", "feature_frozen", "feature_scale_shift",
                 "feature_missing", "segment_shift", "outcome_value",
                 "feature_novel_values"]
Recommendation = Literal["fix_upstream_feature", "exclude_window_from_training", "investigate_segment",
                         "investigate_trust", "review_objective", "retrain_candidate", "review_segments", "none"]


class AlertWindow(BaseModel):
    start: datetime
    end: datetime


class AlignmentAlert(BaseModel):
    """An alignment-gap alert on the alerts topic, keyed by `fingerprint` (stable per model, signal and scope)."""

    model_config = ConfigDict(frozen=True)

    schema_version: Literal[1] = 1
    alert_id: str
    fingerprint: str
    status: Literal["firing", "resolved"]
    classification: Literal["transient", "sustained", "expected"]
    severity: Literal["page", "ticket", "info"]
    signal: Signal
    model: str
    model_version: str
    scope: dict[str, str]
    window: AlertWindow
    observed: float
    baseline: float
    gap: float
    n: int
    baseline_n: int
    p_value: float | None = None
    interval: tuple[float, float] | None = None
    persistence: int
    diagnosis: list[str]
    recommendation: Recommendation
    annotations: list[Annotation] = []
    ts: datetime
