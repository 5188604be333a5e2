"""The /metrics HTTP endpoint: one thread, a bounded number of connections, bounded time.

Why not prometheus-client's own server: it answers each connection in a new
thread with no timeout and no cap, so any local user could open connections
that never finish a request and have the daemon hold a thread and a
descriptor for each, for good (1,500 idle connections gave 1,502 threads and
48 MB; with a low descriptor limit the health checks then failed to open
sockets and marked healthy servers down).

So this is a small server of its own.  It runs an event loop in one thread,
not on the daemon's: a scrape reads IPVS statistics from the kernel and
builds the text, which takes long enough at 10,000 real servers to delay an
advert if it ran there.  Bounds, each a constant below:

* at most MAX_CONNECTIONS connections; at the cap, a new one replaces the
  oldest that has not finished its request (an idle one), and with none
  such, accepting pauses until one ends.  A scraper sends its request as
  soon as it connects, so idle connections cannot push it out;
* REQUEST_TIMEOUT to send a request of at most MAX_REQUEST bytes, and
  WRITE_TIMEOUT to take the answer;
* one answer rendered at a time, in this thread.

The descriptors it can hold (MAX_CONNECTIONS and its listening socket) are
thus a constant, outside the half of the open-files limit the health checks
take for themselves (health/monitor.py).  HTTP/1.0 style: GET or HEAD of
/metrics (or /), one request per connection, ``Connection: close``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import logging
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import CONTENT_TYPE_LATEST

log = logging.getLogger("lvsagent.metrics")

MAX_CONNECTIONS = 16
REQUEST_TIMEOUT = 5.0
WRITE_TIMEOUT = 10.0
MAX_REQUEST = 8192
BACKLOG = 64
PATHS = ("/metrics", "/")


@dataclass
class _Conn:
    sock: socket.socket
    task: asyncio.Task[None] | None = None
    answering: bool = False  # its request is in: never evicted
    evicted: bool = False
    done: bool = False


class ScrapeServer:
    """Serves ``render()`` (the exposition text) on ``host:port`` from a thread of its own."""

    def __init__(self, render: Callable[[], bytes], host: str, port: int) -> None:
        self.render = render
        family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
        self.listener = socket.socket(family, socket.SOCK_STREAM)
        try:
            self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.listener.bind((host, port))  # OSError here: the caller's to log
            self.listener.listen(BACKLOG)
            self.listener.setblocking(False)
        except BaseException:
            self.listener.close()
            raise
        self.port: int = self.listener.getsockname()[1]
        self._conns: list[_Conn] = []  # oldest first
        self._accepting = False
        self._unwinding = 0  # evicted, their sockets not yet closed
        self._closing = False
        self._render_failed = False
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="lvsagent-metrics", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        """Stop serving; every connection is closed.  Blocks until the thread ends."""
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
        else:
            self._loop.close()
        self.listener.close()

    # ----- the thread -------------------------------------------------------------------

    def _run(self) -> None:
        loop = self._loop
        asyncio.set_event_loop(loop)
        self._resume()
        try:
            loop.run_forever()
        finally:
            self._closing = True
            if self._accepting:
                loop.remove_reader(self.listener.fileno())
            for conn in list(self._conns):
                if conn.task is not None:
                    conn.task.cancel()
            pending = [c.task for c in self._conns if c.task is not None]
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.close()

    def _resume(self) -> None:
        if not self._accepting:
            self._loop.add_reader(self.listener.fileno(), self._on_acceptable)
            self._accepting = True

    def _pause(self) -> None:
        if self._accepting:
            self._loop.remove_reader(self.listener.fileno())
            self._accepting = False

    def _on_acceptable(self) -> None:
        """Take waiting connections up to the cap; at the cap, one replaces an idle one.

        A replaced connection's socket closes once its task has unwound, a few turns
        of the loop later; at most MAX_CONNECTIONS of those at a time, so the sockets
        open at once never exceed twice the cap.
        """
        while True:
            at_cap = len(self._conns) >= MAX_CONNECTIONS
            if at_cap and (self._unwinding >= MAX_CONNECTIONS or not self._evict_idle()):
                self._pause()  # the backlog waits for a slot
                return
            try:
                sock, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE and the like: try again on the next wake
                log.warning("metrics: cannot accept a connection: %s", exc)
                return
            sock.setblocking(False)
            conn = _Conn(sock)
            self._conns.append(conn)
            conn.task = self._loop.create_task(self._serve(conn))
            # Closed when the task ends, even one cancelled before it ever ran.
            conn.task.add_done_callback(functools.partial(self._closed, conn))

    def _evict_idle(self) -> bool:
        for conn in self._conns:
            if not conn.answering:
                self._forget(conn)
                conn.evicted = True
                self._unwinding += 1
                if conn.task is not None:
                    conn.task.cancel()  # closed when the task is done
                return True
        return False

    def _forget(self, conn: _Conn) -> None:
        if not conn.done:
            conn.done = True
            self._conns.remove(conn)

    async def _serve(self, conn: _Conn) -> None:
        loop = self._loop
        try:
            try:
                request = await asyncio.wait_for(self._read_request(conn.sock), REQUEST_TIMEOUT)
            except TimeoutError:
                return
            conn.answering = True
            reply = self._answer(request)
            await asyncio.wait_for(loop.sock_sendall(conn.sock, reply), WRITE_TIMEOUT)
        except (TimeoutError, OSError):
            pass  # the client went away or would not read: nothing to tell it
        except Exception as exc:  # a bug here must not end the server
            log.error("metrics: a request failed: %r", exc)

    def _closed(self, conn: _Conn, task: asyncio.Task[None]) -> None:
        conn.sock.close()
        self._forget(conn)
        if conn.evicted:
            self._unwinding -= 1
        if not self._closing:
            self._resume()

    async def _read_request(self, sock: socket.socket) -> bytes | None:
        """The request head, or None if it grew past MAX_REQUEST; OSError if the peer left."""
        data = b""
        while b"\r\n\r\n" not in data and b"\n\n" not in data:
            if len(data) > MAX_REQUEST:
                return None
            chunk = await self._loop.sock_recv(sock, 4096)
            if not chunk:
                raise ConnectionResetError("closed before its request was complete")
            data += chunk
        return data

    def _answer(self, request: bytes | None) -> bytes:
        if request is None:
            return _reply(431, "Request Header Fields Too Large", b"request too large\n")
        line = request.split(b"\n", 1)[0].decode("latin-1").strip().split()
        if len(line) != 3 or not line[2].startswith("HTTP/"):
            return _reply(400, "Bad Request", b"bad request\n")
        method, target = line[0], line[1]
        if method not in ("GET", "HEAD"):
            return _reply(405, "Method Not Allowed", b"GET or HEAD only\n", ("Allow: GET, HEAD",))
        if target.split("?", 1)[0] not in PATHS:
            return _reply(404, "Not Found", b"see /metrics\n")
        try:
            body = self.render()
        except Exception as exc:
            if not self._render_failed:
                self._render_failed = True
                log.error("metrics: cannot render a scrape: %r (further failures not logged)", exc)
            return _reply(500, "Internal Server Error", b"cannot render the metrics\n")
        reply = _reply(200, "OK", body, content_type=CONTENT_TYPE_LATEST)
        if method == "HEAD":
            with contextlib.suppress(ValueError):
                reply = reply[: reply.index(b"\r\n\r\n") + 4]
        return reply


def _reply(
    code: int,
    reason: str,
    body: bytes,
    extra: tuple[str, ...] = (),
    content_type: str = "text/plain; charset=utf-8",
) -> bytes:
    head = [
        f"HTTP/1.1 {code} {reason}",
        f"Content-Type: {content_type}",
        f"Content-Length: {len(body)}",
        "Connection: close",
        *extra,
    ]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body
