"""The bench's round-trip proxy counts round trips exactly: RESP framing both ways, a pipeline once."""

from __future__ import annotations

from typing import Any

import pytest
import redis

from bench.rtproxy import RespCounter, RoundTripProxy

# Two pipelined commands and, in RESP3, the replies a server could send them.
REQUESTS = b"*3\r\n$4\r\nHSET\r\n$1\r\nh\r\n$5\r\nab\r\nc\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"
REPLIES = (b"%2\r\n+a\r\n*2\r\n:1\r\n$-1\r\n$2\r\nxy\r\n_\r\n"   # a map: 'a' -> [1, nil], 'xy' -> null
           b"-ERR no\r\n"                                      # an error reply is a value too
           b"*0\r\n")                                            # an empty array


@pytest.mark.parametrize("stream, values", [
    (REQUESTS, 2),  # a bulk payload holding CRLF is passed over by its length, not split at the CRLF
    (REPLIES, 3),   # nested aggregates, null bulk, RESP3 null, an error, empty array
])
def test_resp_counter_counts_top_level_values_whatever_the_pieces(stream: bytes, values: int) -> None:
    for size in (1, 2, 3, 7, len(stream)):
        counter = RespCounter()
        for i in range(0, len(stream), size):
            counter.feed(stream[i:i + size])
        assert (counter.complete, counter.idle) == (values, True), f"pieces of {size}"


@pytest.mark.integration
def test_proxy_counts_a_pipeline_once_and_sequential_commands_each(stack: Any, redis_client: Any) -> None:
    # The pipeline's first command keeps Redis busy for 0.2 s, so its ~2 MB arrive in many reads while nothing is
    # answered yet: the old count (a trip per request read after any reply byte) and this one must both say one.
    busy = ("local t = redis.call('TIME') "
            "repeat local n = redis.call('TIME') until (n[1] - t[1]) * 1e6 + n[2] - t[2] > 2e5")
    proxy = RoundTripProxy(stack.redis_port).start()
    client = redis.Redis(port=proxy.port)
    try:
        client.ping()
        before = proxy.trips
        with client.pipeline(transaction=False) as pipe:
            pipe.eval(busy, 0)
            for i in range(200):
                pipe.set(f"k{i}", b"x" * 10_000)
            pipe.execute()
        pipelined = proxy.trips - before
        before = proxy.trips
        for i in range(3):
            client.get(f"k{i}")
        sequential = proxy.trips - before
    finally:
        client.close()
        proxy.stop()
    assert (pipelined, sequential) == (1, 3)
