"""Event-time window arithmetic: epoch-aligned tumbling windows and the watermark that closes them.

All times are integer milliseconds since the epoch. A window [start, start + size) closes when the watermark
(newest event time seen minus the allowed lateness) reaches its end; an event whose window has closed is late.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass


def window_start(ts_ms: int, size_ms: int) -> int:
    """Start of the epoch-aligned window holding `ts_ms` (floor division keeps pre-1970 times correct)."""
    return ts_ms - ts_ms % size_ms


def watermark(max_ts_ms: int, lateness_ms: int) -> int:
    """Event time up to which every window is complete."""
    return max_ts_ms - lateness_ms


@dataclass(frozen=True, slots=True)
class Window:
    start: int
    size: int

    @property
    def end(self) -> int:
        return self.start + self.size


def closable(first_start_ms: int, closed_until_ms: int | None, watermark_ms: int, size_ms: int) -> Iterator[Window]:
    """Windows that the watermark has passed and that were not closed yet, oldest first.

    `first_start_ms` is the earliest window that ever saw data; `closed_until_ms` is the end of the last window
    closed (None when none was). Windows with no data in between are yielded too: an empty window is news.
    """
    start = first_start_ms if closed_until_ms is None else max(closed_until_ms, first_start_ms)
    start = window_start(start, size_ms)
    while start + size_ms <= watermark_ms:
        yield Window(start, size_ms)
        start += size_ms
