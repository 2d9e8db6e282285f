"""A loopback proxy in front of Redis that holds chosen commands until the test opens the gate.

For a test that must look at a worker *before* it makes progress, without racing it: with the gate closed, the
first command `hold` picks on a connection waits, and every later command of that connection waits behind it
(Redis answers a connection's commands in order, so nothing may overtake it); other connections pass. A client
that gives up on a held connection (its socket timeout) closes it, and what was held there is dropped, never sent:
the worker then retries on a new connection, held the same way. Opening the gate sends what is held, in order.

Commands are read with hiredis's RESP reader and sent on re-encoded (a client's request is an array of bulk
strings, so the encoding is exact); replies are copied as they come.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Iterator

import hiredis

Command = list[bytes]


def encode(command: Command) -> bytes:
    """A command as a client sends it: a RESP array of bulk strings."""
    return b"*%d\r\n" % len(command) + b"".join(b"$%d\r\n%s\r\n" % (len(arg), arg) for arg in command)


class RedisGate:
    """Forward 127.0.0.1:<port> to Redis on `upstream_port` from a background thread; `held` counts the commands
    `hold` stopped so far (each first of its connection)."""

    def __init__(self, upstream_port: int, hold: Callable[[Command], bool]) -> None:
        self.upstream_port = upstream_port
        self.hold = hold
        self.held = 0
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._opened = asyncio.Event()
        self._server: asyncio.Server

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def open(self) -> None:
        """Let every held command through, and stop holding."""
        self._loop.call_soon_threadsafe(self._opened.set)

    @contextlib.contextmanager
    def running(self) -> Iterator[RedisGate]:
        """Serve with the gate closed until the block ends."""
        self._thread.start()
        assert self._ready.wait(10), "the gate did not start"
        try:
            yield self
        finally:
            asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop.close()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", 0))
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()

    async def _shutdown(self) -> None:
        self._server.close()
        await self._server.wait_closed()

    async def _serve(self, client_in: asyncio.StreamReader, client_out: asyncio.StreamWriter) -> None:
        upstream_in, upstream_out = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        queue: asyncio.Queue[Command] = asyncio.Queue()
        tasks = [asyncio.create_task(self._forward(queue, upstream_out)),
                 asyncio.create_task(self._copy(upstream_in, client_out))]
        reader = hiredis.Reader()
        try:
            while data := await client_in.read(65536):
                reader.feed(data)
                while (command := reader.gets()) is not False:
                    queue.put_nowait(command)
        except ConnectionError:
            pass
        finally:  # the client is gone: what is still held goes nowhere
            for task in tasks:
                task.cancel()
            upstream_out.close()
            client_out.close()

    async def _forward(self, queue: asyncio.Queue[Command], upstream: asyncio.StreamWriter) -> None:
        holding = False
        while True:
            command = await queue.get()
            if not self._opened.is_set() and (holding or self.hold(command)):
                if not holding:
                    holding = True
                    self.held += 1
                await self._opened.wait()
            upstream.write(encode(command))
            await upstream.drain()

    @staticmethod
    async def _copy(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await source.read(65536):
                sink.write(data)
                await sink.drain()
        sink.close()
