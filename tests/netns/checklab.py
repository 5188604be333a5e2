"""Two namespaces for check tests: a checker's event loop in one, servers in the other.

``mon`` (10.97.0.1) runs an asyncio loop in a thread that setns()ed into it,
so every check socket is made there; ``srv`` (10.97.0.2) holds the servers,
whose sockets a short-lived thread makes inside it and whose own threads then
serve them (a socket keeps the namespace it was made in).  The servers are
the tests' own: a TLS web server with a certificate made for the test, a
UDP responder, a DNS responder.  Every namespace, socket and thread is made
here and closed here; traffic stays on the veth link between the two.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import subprocess
import threading
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from tests.kernel.setns import enter
from tests.netns.lab import Netns, in_namespace, namespaces, veth

T = TypeVar("T")
MON = "10.97.0.1"
SRV = "10.97.0.2"
WAIT = 15.0  # seconds: generous on a loaded machine, never a measurement


@dataclass
class CheckLab:
    mon: Netns
    srv: Netns
    loop: asyncio.AbstractEventLoop = field(default_factory=asyncio.new_event_loop)
    sockets: list[socket.socket] = field(default_factory=list)
    threads: list[threading.Thread] = field(default_factory=list)
    stopping: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    def start(self) -> None:
        ready = threading.Event()

        def run() -> None:
            enter(f"/run/netns/{self.mon.name}")
            asyncio.set_event_loop(self.loop)
            ready.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, name="check-loop")
        self.thread.start()
        ready.wait(WAIT)

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine (a check) on the loop in ``mon``; its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(WAIT)

    def stop(self) -> None:
        self.stopping.set()
        for sock in self.sockets:
            sock.close()  # wakes the servers' blocking calls
        for thread in self.threads:
            thread.join(WAIT)
        self.loop.call_soon_threadsafe(self.loop.stop)
        if self.thread is not None:
            self.thread.join(WAIT)
        self.loop.close()

    # ----- servers in srv ----------------------------------------------------------

    def socket(self, kind: int, port: int) -> socket.socket:
        def make() -> socket.socket:
            s = socket.socket(socket.AF_INET, kind)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((SRV, port))
            if kind == socket.SOCK_STREAM:
                s.listen(16)
            s.settimeout(0.2)  # so that a stopping server notices
            return s

        sock = in_namespace(self.srv, make)
        self.sockets.append(sock)
        return sock

    def serve(self, name: str, loop: Callable[[], None]) -> None:
        thread = threading.Thread(target=loop, name=name, daemon=True)
        self.threads.append(thread)
        thread.start()

    def datagrams(self, port: int, answer: Callable[[bytes], list[bytes]]) -> None:
        """A UDP server on ``port`` that sends ``answer(request)``'s datagrams back."""
        sock = self.socket(socket.SOCK_DGRAM, port)

        def loop() -> None:
            while not self.stopping.is_set():
                try:
                    data, peer = sock.recvfrom(65535)
                except (TimeoutError, OSError):
                    continue
                for out in answer(data):
                    sock.sendto(out, peer)

        self.serve(f"udp-{port}", loop)

    def tls_web(self, port: int, context: ssl.SSLContext, response: bytes) -> list[str | None]:
        """An HTTPS server answering every request with ``response``; the SNI names it saw."""
        sock = self.socket(socket.SOCK_STREAM, port)
        names: list[str | None] = []

        def note(_obj: ssl.SSLObject | ssl.SSLSocket, name: str | None, _ctx: object) -> None:
            names.append(name)

        context.sni_callback = note  # type: ignore[assignment]

        def loop() -> None:
            while not self.stopping.is_set():
                try:
                    conn, _ = sock.accept()
                except (TimeoutError, OSError):
                    continue
                conn.settimeout(WAIT)
                try:
                    with context.wrap_socket(conn, server_side=True) as tls:
                        request = b""
                        while b"\r\n\r\n" not in request:
                            chunk = tls.recv(4096)
                            if not chunk:
                                break
                            request += chunk
                        tls.sendall(response)
                except (ssl.SSLError, OSError):
                    pass  # a client that refused our certificate hangs up mid-handshake
                finally:
                    conn.close()

        self.serve(f"https-{port}", loop)
        return names


@contextmanager
def check_lab() -> Iterator[CheckLab]:
    with namespaces("cmon", "csrv") as (mon, srv):
        veth(mon, "eth0", f"{MON}/24", srv, "eth0", f"{SRV}/24")
        lab = CheckLab(mon, srv)
        lab.start()
        try:
            yield lab
        finally:
            lab.stop()


def self_signed(directory: Path, name: str) -> tuple[Path, Path]:
    """A certificate for ``name`` (its own CA) and its key, made with openssl for this test."""
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", f"/CN={name}", "-addext", f"subjectAltName=DNS:{name}",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key
