"""A loopback TCP proxy in front of Redis that counts request/response round trips.

Redis counts commands, not round trips (a pipeline of 18 commands is one trip), so the bench puts this proxy
between the worker and Redis. It follows the RESP framing both ways (hiredis's reader), counting the commands a
connection sent and the replies it got back; a round trip is counted when a connection starts a command while
every earlier one has been answered. The count is an upper bound: a pipeline counts once unless one of its reads
ends exactly between two commands after Redis answered all before it (the wire cannot tell that from a new
request). Counting "client sends after the server spoke" instead over-counted every pipeline larger than one read.
"""

from __future__ import annotations

import asyncio
import threading

import hiredis


class RespCounter:
    """Counts complete top-level RESP values (requests or replies) in a byte stream fed in arbitrary pieces, with
    hiredis's reader. RESP2, as the worker speaks it, and RESP3's maps, sets and nulls; not RESP3 attributes, which
    a RESP2 connection never receives."""

    def __init__(self) -> None:
        self.complete = 0
        self._reader = hiredis.Reader()

    @property
    def idle(self) -> bool:
        """Between values: nothing partial buffered."""
        return not self._reader.has_data()

    def feed(self, data: bytes) -> None:
        self._reader.feed(data)
        while self._reader.gets() is not False:
            self.complete += 1


class RoundTripProxy:
    """Forward 127.0.0.1:<port> to Redis in a background thread; `trips` is the running count."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.trips = 0
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._server: asyncio.Server

    def start(self) -> RoundTripProxy:
        self._thread.start()
        self._ready.wait(10)
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _shutdown(self) -> None:
        """Close the listener and every forwarded connection inside the loop, so nothing outlives it."""
        self._server.close()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", 0))
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        sent, answered = RespCounter(), RespCounter()

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, counter: RespCounter,
                       request: bool) -> None:
            try:
                while data := await src.read(1 << 16):
                    if request and counter.idle and sent.complete == answered.complete:
                        self.trips += 1
                    counter.feed(data)
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, asyncio.CancelledError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pump(reader, up_writer, sent, True), pump(up_reader, writer, answered, False))
