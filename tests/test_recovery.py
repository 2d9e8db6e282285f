"""Where a partition is sought on assignment or after a Redis restart (pure rule, stream.recovery.plan_seeks)."""

from __future__ import annotations

import pytest

from stream.recovery import ReadOffsets, plan_seeks


@pytest.mark.parametrize(("position", "held", "earliest", "expected"), [
    (100, 100, 0, None),   # Redis holds exactly where the consumer stands: nothing to do
    (100, 80, 0, 80),      # Redis rolled back (AOF lost its tail) under Kafka's commit: replay from 80
    (100, 120, 0, None),   # Redis ahead (fresh broker restarted offsets, or a faster worker): never seek forward
    (100, None, 0, 0),     # Redis lost the partition entirely: replay what the topic still retains
    (100, None, 40, 40),   # ... which starts at the earliest retained offset
    (100, 10, 40, 40),     # Redis behind retention: the earliest retained offset is as far back as we can go
    (None, 10, 0, None),   # nothing committed: the consumer starts at the earliest offset anyway
    (0, None, 0, None),    # an empty or unread partition: nothing to replay
])
def test_seek_back_only_to_what_redis_holds_and_the_topic_retains(
        position: int | None, held: int | None, earliest: int, expected: int | None) -> None:
    tp = ("t", 0)
    seeks = plan_seeks([tp], {tp: position}, {} if held is None else {tp: held}, {tp: earliest})
    assert seeks.get(tp) == expected


def test_read_offsets_never_make_faust_drop_a_redelivered_message() -> None:
    offsets = ReadOffsets()
    offsets[("t", 0)] = 500
    assert offsets[("t", 0)] is None  # Faust drops offsets below this mark; there is none
    assert offsets[("t", 1)] is None
