"""The lab's client (tests/kernel/twobox_traffic.py) does not count a stall of its own as
failed requests: on loopback, on the host.

Why: the two-box cases assert that no request fails after a takeover, with a 1 s timeout.
A CI run's guest stood still for ~1.5 s and every request in flight then "timed out",
although the boxes had answered them. The client now gives its requests a stall's time
back (and reports the stall); this proves it by stopping the client's process for 1.5 s
(SIGSTOP) and holding the server's answers as long (the whole lab stood still), then
letting both go on.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

CLIENT = """
import json, sys, time
from tests.kernel.twobox_traffic import Traffic
port = int(sys.argv[1])
traffic = Traffic("/proc/self/ns/net", "127.0.0.1", port, interval=0.02, timeout=1.0)
traffic.start()
print("started", flush=True)
sys.stdin.readline()  # the parent stopped and continued us meanwhile
time.sleep(1.5)  # requests started after the stall, for a while
records = traffic.stop()
print(json.dumps({"outcomes": [r.outcome for r in records], "stalls": traffic.stalls}))
"""


# Cleared while the lab "stands still": the server answers nothing meanwhile.
RUNNING = threading.Event()


@pytest.fixture
def server() -> Iterator[int]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            RUNNING.wait(10.0)
            body = b"boxa\n"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    class Server(ThreadingHTTPServer):
        request_queue_size = 512
        daemon_threads = True

    RUNNING.set()
    httpd = Server(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield httpd.server_address[1]
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.mark.skipif(os.geteuid() != 0, reason="setns() into its own namespace needs root")
def test_a_stall_of_the_client_fails_no_request_and_is_reported(server: int) -> None:
    with subprocess.Popen(
        [sys.executable, "-c", CLIENT, str(server)],
        cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    ) as proc:  # fmt: skip
        assert proc.stdin is not None and proc.stdout is not None
        try:
            assert proc.stdout.readline().strip() == "started"
            time.sleep(1.0)  # requests in flight at every moment (50 a second)
            RUNNING.clear()
            proc.send_signal(signal.SIGSTOP)
            time.sleep(1.5)  # longer than the client's 1 s timeout
            proc.send_signal(signal.SIGCONT)
            time.sleep(0.1)  # the client runs again before the answers come
            RUNNING.set()
            proc.stdin.write("go\n")
            proc.stdin.flush()
            out = json.loads(proc.stdout.readline())
        finally:
            proc.kill()
    outcomes, stalls = out["outcomes"], out["stalls"]
    assert len(outcomes) > 100
    assert [o for o in outcomes if o != "boxa"] == []
    assert len(stalls) == 1 and 1.3 < stalls[0][1] < 3.0, stalls
