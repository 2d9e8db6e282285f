"""Event-time window arithmetic: epoch-aligned tumbling windows and the watermark that closes them.

All times are integer milliseconds since the epoch. Windows hold predictions; a window [start, start + size) is
judged in stages (its predictions at its end, each follow-up signal at checkpoints after it), each once the
watermark (the event time every input partition has reached, `partition_watermark`, minus the allowed lateness)
passes its due time; an event whose stage was judged is late.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, TypeVar

P = TypeVar("P")


def window_start(ts_ms: int, size_ms: int) -> int:
    """Start of the epoch-aligned window holding `ts_ms` (floor division keeps pre-1970 times correct)."""
    return ts_ms - ts_ms % size_ms


def watermark(max_ts_ms: int, lateness_ms: int) -> int:
    """Event time up to which every window is complete."""
    return max_ts_ms - lateness_ms


def partition_watermark(partitions: Iterable[P], event_time: Mapping[P, int], idle: Collection[P]) -> int | None:
    """The event time every input partition has reached: the minimum, over the partitions that are not idle, of
    each one's newest event time applied; None while one of them has no record yet (it may still bring anything).

    A partition is read in order, so once its newest event time is t nothing older than t is still to come from
    it, unless its own events are out of order, which the lateness allows for: the minimum is the event time below
    which no partition can still bring an event, however far one partition runs ahead of another (a maximum would
    close windows for every partition on the fastest one's word). Idle partitions (read to their end, nothing new
    for a while) are skipped, so one that gets nothing does not hold windows open forever; when every partition is
    idle, everything was applied and the newest event time of all stands (None when there is none)."""
    base: int | None = None
    newest: int | None = None
    active = False
    for p in partitions:
        t = event_time.get(p)
        if t is not None:
            newest = t if newest is None else max(newest, t)
        if p in idle:
            continue
        if t is None:
            return None
        active = True
        base = t if base is None else min(base, t)
    return base if active else newest


def confirmed_idle(idle: Collection[P], held: Mapping[P, int], ends: Mapping[P, tuple[int, int]]) -> set[P]:
    """The partitions asserted idle that are still read to their end: `held` the offset applied (Redis's), `ends`
    each one's (first, end) offsets on the broker, read after `held`.

    An assertion lives a few evaluator rounds, and messages can reach its partition meanwhile: a replay sent into
    partitions that sat idle lands on all of them at once, and the first one applied would otherwise set the
    watermark alone, hours ahead of the others (their events late). A partition with messages unread holds the
    watermark again at once; one whose end is unknown is not taken for idle (windows wait)."""
    return {p for p in idle if p in ends and held.get(p, ends[p][0]) >= ends[p][1]}


@dataclass(frozen=True, slots=True)
class Window:
    start: int
    size: int

    @property
    def end(self) -> int:
        return self.start + self.size


# --- stages: when each signal of a window is judged ---
# Windows belong to predictions. A window is judged in stages: its predictions and feature health once the
# watermark passes its end ('n'); each follow-up signal (actions 'a', outcomes 'o') at a few fixed ages after the
# window's end (checkpoints), each time on the follow-ups that came within that age of their prediction.

StageKind = Literal["n", "a", "o"]
STAGE_SIGNAL: dict[StageKind, str] = {"n": "predictions", "a": "actions", "o": "outcomes"}
"""The `signal` label of the per-model event counts (counted, late, beyond the horizon) for each stage kind."""


@dataclass(frozen=True, slots=True)
class Stage:
    """One look at a window: its kind, its checkpoint index, the age it waits for, and whether it is the last."""

    kind: StageKind
    index: int      # checkpoint index among its kind's (0 for 'n')
    age_ms: int     # judged once the watermark passes the window's end plus this
    final: bool     # the last checkpoint of its kind (always True for 'n')
    order: int      # position in `stages`: breaks ties between stages due at the same event time

    @property
    def name(self) -> str:
        """'n', 'a0', 'o2': how closed marks and metrics name the stage."""
        return "n" if self.kind == "n" else f"{self.kind}{self.index}"


def stages(action_ages_ms: Sequence[int], outcome_ages_ms: Sequence[int]) -> tuple[Stage, ...]:
    """Every stage of a window, in tie-break order: predictions, then the action and outcome checkpoints."""
    out = [Stage("n", 0, 0, True, 0)]
    for kind, ages in (("a", action_ages_ms), ("o", outcome_ages_ms)):
        for i, age in enumerate(ages):
            out.append(Stage(kind, i, age, i == len(ages) - 1, len(out)))  # type: ignore[arg-type]
    return tuple(out)


def checkpoint_of(age_ms: int, ages_ms: Sequence[int]) -> int | None:
    """Index of the first checkpoint a follow-up of this age (its time minus its prediction's) counts in, or None
    beyond the last one (the horizon). A follow-up stamped before its prediction (clock skew) has age 0."""
    age = max(0, age_ms)
    for i, limit in enumerate(ages_ms):
        if age < limit:
            return i
    return None


Cursor = tuple[int, int]
"""(due ms, stage order) of the last (window, stage) judged: a model's progress, in the one order both the worker
and the in-memory replay judge in, whatever steps the watermark advanced by."""


@dataclass(frozen=True, slots=True)
class Due:
    """A (window, stage) the watermark has passed."""

    window: Window
    stage: Stage

    @property
    def due(self) -> int:
        return self.window.end + self.stage.age_ms

    @property
    def cursor(self) -> Cursor:
        return self.due, self.stage.order


def due_stages(first_start_ms: int, cursor: Cursor | None, watermark_ms: int, size_ms: int,
               all_stages: Sequence[Stage], limit: int | None = None) -> list[Due]:
    """The (window, stage) pairs after `cursor` whose due time the watermark has reached, in (due, order) order.

    Judging in this order makes the sequence of judgements independent of how the watermark advanced (a tick at a
    time or a month at once): every pair due by a tick comes after every pair due by the tick before. Windows with
    no data between `first_start_ms` and the watermark are judged too: an empty window is news."""
    first = window_start(first_start_ms, size_ms)
    out: list[Due] = []
    for stage in all_stages:
        start = first
        if cursor is not None:
            # the first window whose (due, order) comes after the cursor: start + size + age > due, or equal to
            # it with a later order
            due_c, order_c = cursor
            lowest = due_c - size_ms - stage.age_ms + (0 if stage.order > order_c else 1)
            start = max(first, -(-lowest // size_ms) * size_ms)
        taken = 0
        while start + size_ms + stage.age_ms <= watermark_ms and (limit is None or taken < limit):
            out.append(Due(Window(start, size_ms), stage))  # the first `limit` of each stage hold the answer
            start += size_ms
            taken += 1
    out.sort(key=lambda d: d.cursor)
    return out[:limit] if limit is not None else out


def format_cursor(cursor: Cursor) -> str:
    """A cursor as the model's state hash stores it."""
    return f"{cursor[0]}:{cursor[1]}"


def parse_cursor(raw: str) -> Cursor | None:
    """The stored cursor ('' before the first judgement); ValueError for anything else (an older layout)."""
    if not raw:
        return None
    due, _, order = raw.partition(":")
    return int(due), int(order)
