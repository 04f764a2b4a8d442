"""A TCP proxy on loopback that injects latency, or stops answering, on demand.

Chaos tests put it between the service and Redis: every reply from the upstream server is
held for ``delay_ms`` before it reaches the client (order and bytes unchanged), so a slow
store is real network latency, not a mocked client. ``pause()`` holds replies until
``resume()`` (a hung server); ``kill()`` drops every connection and stops listening (a dead
server) until ``revive()`` listens again on the same port.

The proxy runs in its own process (its asyncio loop in a thread there), driven from the
test over a pipe: in the test's process it would share the GIL with the load driver, and
a busy driver would then look like a slow Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import threading
import time
from collections.abc import Coroutine
from typing import Any


class LatencyProxy:
    """Forwards ``127.0.0.1:port`` to ``upstream``; replies are delayed by ``delay_ms``."""

    def __init__(self, upstream_host: str, upstream_port: int, delay_ms: float = 0.0) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(
            target=_serve, args=(child, upstream_host, upstream_port, delay_ms), daemon=True
        )
        self.port = 0

    def _send(self, *command: Any) -> Any:
        self._conn.send(command)
        if not self._conn.poll(15):
            raise RuntimeError(f"latency proxy did not answer {command[0]!r}")
        return self._conn.recv()

    def start(self) -> LatencyProxy:
        self._proc.start()
        self.port = self._send("start")
        return self

    def set_delay(self, delay_ms: float) -> None:
        """Hold each upstream reply this long from now on (milliseconds)."""
        self._send("set_delay", delay_ms)

    def pause(self) -> None:
        """Stop delivering replies (connections stay open): the upstream seems hung."""
        self._send("pause")

    def resume(self) -> None:
        self._send("resume")

    def kill(self) -> None:
        """Close every connection and stop listening: the upstream seems dead."""
        self._send("kill")

    def revive(self) -> None:
        """Listen again on the same port."""
        self._send("revive")

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._send("close")
        self._proc.join(5)
        if self._proc.is_alive():
            self._proc.kill()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def __enter__(self) -> LatencyProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def _serve(conn: Any, upstream_host: str, upstream_port: int, delay_ms: float) -> None:
    """The proxy process: obey commands from the pipe until ``close``."""
    proxy = _ProxyLoop(upstream_host, upstream_port, delay_ms)
    while True:
        command, *args = conn.recv()
        if command == "start":
            conn.send(proxy.start().port)
        elif command == "close":
            proxy.close()
            conn.send(None)
            return
        else:
            conn.send(getattr(proxy, command)(*args))


class _ProxyLoop:
    """The proxy itself: an asyncio loop in a daemon thread of the proxy process."""

    def __init__(self, upstream_host: str, upstream_port: int, delay_ms: float = 0.0) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.delay_s = delay_ms / 1000
        self.port = 0
        self._paused: asyncio.Event | None = None  # set = flowing
        self._server: asyncio.AbstractServer | None = None
        self._conns: set[asyncio.StreamWriter] = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    # ---- control (thread-safe, synchronous) ---------------------------------------------
    def start(self) -> _ProxyLoop:
        self._thread.start()
        self._call(self._init())
        self._call(self._listen())
        return self

    def set_delay(self, delay_ms: float) -> None:
        """Hold each upstream reply this long from now on (milliseconds)."""
        self.delay_s = delay_ms / 1000

    def pause(self) -> None:
        """Stop delivering replies (connections stay open): the upstream seems hung."""
        self._loop.call_soon_threadsafe(self._flowing.clear)

    def resume(self) -> None:
        self._loop.call_soon_threadsafe(self._flowing.set)

    def kill(self) -> None:
        """Close every connection and stop listening: the upstream seems dead."""
        self._call(self._kill())

    def revive(self) -> None:
        """Listen again on the same port."""
        self._call(self._listen())

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._call(self._kill())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)

    # ---- inside the loop ---------------------------------------------------------------
    def _call(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=10)

    async def _init(self) -> None:
        self._flowing = asyncio.Event()
        self._flowing.set()

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _kill(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._conns):
            writer.transport.abort()
        self._conns.clear()

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            up_r, up_w = await asyncio.open_connection(*self.upstream)
        except OSError:
            client_w.transport.abort()
            return
        self._conns |= {client_w, up_w}
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        tasks = [
            asyncio.ensure_future(self._pipe(client_r, up_w)),
            asyncio.ensure_future(self._read_replies(up_r, queue)),
            asyncio.ensure_future(self._deliver(queue, client_w)),
        ]
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for t in tasks:
            t.cancel()
        for w in (client_w, up_w):
            self._conns.discard(w)
            w.transport.abort()

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()

    async def _read_replies(
        self, reader: asyncio.StreamReader, queue: asyncio.Queue[tuple[float, bytes]]
    ) -> None:
        while data := await reader.read(65536):
            queue.put_nowait((time.monotonic() + self.delay_s, data))
        queue.put_nowait((0.0, b""))

    async def _deliver(
        self, queue: asyncio.Queue[tuple[float, bytes]], writer: asyncio.StreamWriter
    ) -> None:
        while True:
            due, data = await queue.get()
            if not data:
                return
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            await self._flowing.wait()
            writer.write(data)
            await writer.drain()
