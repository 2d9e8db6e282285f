"""Stages (stream.windows): when each signal of a prediction window is judged, the checkpoint a follow-up's age
reaches, and the one order every (window, stage) is judged in."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stream.settings import ModelSettings
from stream.windows import Window, checkpoint_of, due_stages, format_cursor, parse_cursor, stages

H = 3600 * 1000
D = 24 * H
ALL = stages([H, D], [H, D, 7 * D])  # the defaults for 1 h windows


def test_the_default_checkpoints_are_one_window_one_day_and_the_horizon() -> None:
    ms = ModelSettings()
    assert ms.checkpoints_ms("a") == (H, D)          # the action horizon is one day
    assert ms.checkpoints_ms("o") == (H, D, 7 * D)
    assert [s.name for s in ms.stages()] == ["n", "a0", "a1", "o0", "o1", "o2"]
    assert ModelSettings(window_seconds=86400).checkpoints_ms("o") == (D, 7 * D)  # one window is one day
    assert ModelSettings(checkpoints_seconds=[600, 10 * 86400]).checkpoints_ms("o") == (600_000, 7 * D)


@pytest.mark.parametrize(("age", "index"), [
    (0, 0),            # at once
    (-5_000, 0),       # stamped before its prediction (clock skew): age 0
    (H - 1, 0),        # the last millisecond of the first checkpoint
    (H, 1),            # a checkpoint's limit is exclusive
    (D - 1, 1),
    (D, None),         # the action horizon is one day: beyond it
])
def test_a_follow_up_counts_at_the_first_checkpoint_its_age_is_below(age: int, index: int | None) -> None:
    assert checkpoint_of(age, [H, D]) == index


def test_stages_are_due_in_event_time_order_predictions_first_on_a_tie() -> None:
    got = [(d.window.start // H, d.stage.name) for d in due_stages(0, None, 3 * H, H, ALL)]
    # window 0's predictions at 1 h; window 1's predictions and window 0's first looks at 2 h; ...
    assert got == [(0, "n"), (1, "n"), (0, "a0"), (0, "o0"), (2, "n"), (1, "a0"), (1, "o0")]


def test_nothing_before_the_cursor_is_due_again() -> None:
    first = due_stages(0, None, 3 * H, H, ALL)
    cursor = first[3].cursor  # window 0's o0
    assert due_stages(0, cursor, 3 * H, H, ALL) == first[4:]
    assert parse_cursor(format_cursor(cursor)) == cursor and parse_cursor("") is None


def test_an_empty_window_between_data_is_judged_too() -> None:
    got = {(d.window.start // H, d.stage.name) for d in due_stages(0, None, 4 * H, H, ALL)}
    assert (2, "n") in got and (2, "a0") in got  # nothing happened in window 2: that is news


@given(steps=st.lists(st.integers(0, 9 * H), min_size=1, max_size=40), limits=st.integers(1, 6))
def test_judging_as_the_watermark_steps_on_is_judging_all_at_once(steps: list[int], limits: int) -> None:
    """Whatever steps the watermark takes and however few pairs a tick may judge, the sequence of judgements is
    the one a single jump to the end gives: what a worker decides does not depend on how it caught up."""
    end = sum(steps)
    whole = [d.cursor for d in due_stages(0, None, end, H, ALL)]
    cursor, got, wm = None, [], 0
    for step in [*steps, 0]:
        wm += step
        while part := due_stages(0, cursor, wm, H, ALL, limit=limits):
            got += [d.cursor for d in part]
            cursor = part[-1].cursor
    assert got == whole
    assert all(d.window == Window(d.window.start, H) for d in due_stages(0, None, end, H, ALL))
