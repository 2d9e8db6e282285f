"""A loopback TCP proxy in front of Redis that counts request/response round trips.

Redis counts commands, not round trips (a pipeline of 18 commands is one trip), so the bench puts this proxy
between the worker and Redis: a round trip is counted each time a client starts sending after it last heard
from the server (a whole pipeline, written before its replies are read, counts once).
"""

from __future__ import annotations

import asyncio
import threading


class RoundTripProxy:
    """Forward 127.0.0.1:<port> to Redis in a background thread; `trips` is the running count."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.trips = 0
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> RoundTripProxy:
        self._thread.start()
        self._ready.wait(10)
        return self

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        waiting = [False]  # True from a request's first byte until the server's first reply byte

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, request: bool) -> None:
            try:
                while data := await src.read(1 << 16):
                    if request and not waiting[0]:
                        self.trips += 1
                    waiting[0] = request
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, asyncio.CancelledError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pump(reader, up_writer, True), pump(up_reader, writer, False))
