"""Window arithmetic: epoch alignment, boundaries, the watermark, which windows close."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stream.windows import Window, closable, watermark, window_start

H = 3600 * 1000


@pytest.mark.parametrize(("ts", "size", "start"), [
    (0, H, 0),                    # the epoch starts a window
    (H - 1, H, 0),                # last millisecond of the first window
    (H, H, H),                    # an end is the next window's start (half-open)
    (1_795_000_123_456, H, 1_794_999_600_000),  # a real 2026 timestamp floors to the hour
    (-1, H, -H),                  # before 1970 floors downwards, not towards zero
    (7 * 60_000, 5 * 60_000, 5 * 60_000),        # 5-minute windows align to the epoch too
])
def test_window_start_is_epoch_aligned(ts: int, size: int, start: int) -> None:
    assert window_start(ts, size) == start


@given(ts=st.integers(-10**13, 10**13), size=st.integers(1, 10**8))
def test_every_event_falls_in_exactly_one_window(ts: int, size: int) -> None:
    start = window_start(ts, size)
    assert start <= ts < start + size
    assert start % size == 0
    # the neighbouring windows do not contain it
    assert not (start - size <= ts < start) and not (start + size <= ts < start + 2 * size)


def test_watermark_subtracts_allowed_lateness() -> None:
    assert watermark(5 * H, 600_000) == 5 * H - 600_000


@pytest.mark.parametrize(("first", "closed_until", "wm", "expected"), [
    (0, None, H - 1, []),                      # the first window is not over yet
    (0, None, H, [0]),                         # watermark at its end closes it
    (0, None, 3 * H + 5, [0, H, 2 * H]),       # several windows, oldest first
    (0, 2 * H, 3 * H + 5, [2 * H]),            # already-closed windows are not repeated
    (5 * H + 7, None, 8 * H, [5 * H, 6 * H, 7 * H]),  # starts at the first window that saw data
])
def test_closable_windows(first: int, closed_until: int | None, wm: int, expected: list[int]) -> None:
    assert [w.start for w in closable(first, closed_until, wm, H)] == expected
    assert all(w == Window(w.start, H) and w.end == w.start + H for w in closable(first, closed_until, wm, H))
