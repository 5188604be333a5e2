"""The web server each box of the two-box lab runs: every GET is answered with the box's name.

Why a process of its own: it stands for the seed's nginx, a real server that lives on while the
agent is killed or stopped; and a server in the test process would share its GIL with the
traffic generator. Bound to 0.0.0.0:80, so it serves what IPVS delivers locally (addressed to
the VIP) and what the bypass redirects (to the box's own address) alike.

    python -m tests.kernel.twobox_http NAME [PORT]

It prints "ready" once it listens, and exits on SIGTERM.
"""

from __future__ import annotations

import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType


class _Server(ThreadingHTTPServer):
    # The default backlog of 5 drops SYNs when UML stalls for a moment under 50 requests a
    # second, and those would count against the agents.
    request_queue_size = 512
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        """A client that reset or vanished mid-request (failovers do that by the hundred) is
        not news: socketserver's default prints a traceback to stderr for each one."""


def serve(name: str, port: int = 80) -> None:
    body = f"{name}\n".encode()

    class Handler(BaseHTTPRequestHandler):
        # A connection whose request never comes frees its thread, but only long after the
        # lab's held connections (half a request sent before a failover, the rest a minute or
        # more later) have finished: at 30 s the server closed them and they answered nothing.
        timeout = 600

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass  # one line per request would cost more than the request

    server = _Server(("0.0.0.0", port), Handler)

    def on_term(signum: int, frame: FrameType | None) -> None:
        # shutdown() waits for serve_forever() to return, so it runs in another thread.
        threading.Thread(target=server.shutdown).start()

    signal.signal(signal.SIGTERM, on_term)
    print("ready", flush=True)
    server.serve_forever()
    server.server_close()


if __name__ == "__main__":
    serve(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 80)
