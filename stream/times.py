"""The one set of time helpers: epoch milliseconds (the unit of windows and state) to and from UTC datetimes.

Domain code takes `now` as an argument; the shell reads the wall clock through `utcnow`, or a `Clock` it was given,
so a test can inject time and a month of history replays in seconds.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone

Clock = Callable[[], datetime]
"""Something that says what time it is now (UTC, zone-aware); `utcnow` unless a test injects another."""


def utcnow() -> datetime:
    """The wall clock, zone-aware UTC."""
    return datetime.now(timezone.utc)


def epoch_ms(ts: datetime) -> int:
    """Milliseconds since the epoch: the one time unit the windows and the store use."""
    return int(ts.timestamp() * 1000)


def from_ms(ms: int) -> datetime:
    """The zone-aware UTC datetime of an epoch-milliseconds instant."""
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc)


def iso_ms(ms: int) -> str:
    """RFC 3339 in UTC with a `Z`, as the contract writes timestamps."""
    return from_ms(ms).isoformat().replace("+00:00", "Z")


def parse_ms(ts: str) -> int:
    """Epoch milliseconds of an RFC 3339 string (a bare date or naive time is taken as UTC)."""
    parsed = datetime.fromisoformat(ts.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return epoch_ms(parsed)


def minute(ms: int) -> str:
    """`YYYY-MM-DD HH:MM` in UTC: how tables and logs name a window's start."""
    return from_ms(ms).strftime("%Y-%m-%d %H:%M")
