"""The kernel lab's network: namespaces, veth pairs, a bridge, a web server and a client.

Used inside the user-mode Linux guest by the lab's smoke tests (test_lab.py) and the
IPVS, netfilter and agent tests.  Every namespace carries this process's PID in its
name and is deleted by the context that made it; every address is one the test gave
a namespace it made.  Waiting is on events (the server's "Serving HTTP" line).
"""

from __future__ import annotations

import itertools
import os
import selectors
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_seq = itertools.count()
# The Python running pytest is a real binary (not a pyenv shim, ~3 s a call in UML).
PYTHON = sys.executable
# Every scheduler ipvsadm(8) and keepalived can name, in uml.config order.
SCHEDULERS = (
    "rr",
    "wrr",
    "lc",
    "wlc",
    "fo",
    "ovf",
    "lblc",
    "lblcr",
    "dh",
    "sh",
    "mh",
    "sed",
    "nq",
    "twos",
)


def run(
    *args: str, check: bool = True, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a command; on failure the assertion shows its stderr."""
    done = subprocess.run(args, input=stdin, capture_output=True, text=True, check=False)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(args)} -> {done.returncode}: {done.stderr.strip()}")
    return done


class Netns:
    """A network namespace of the guest, loopback up (IPVS needs a local routing table)."""

    def __init__(self, role: str, *, lo_up: bool = True) -> None:
        self.name = f"lab{os.getpid()}-{next(_seq)}-{role}"
        run("ip", "netns", "add", self.name)
        if lo_up:
            self.run("ip", "link", "set", "lo", "up")

    def run(
        self, *args: str, check: bool = True, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        return run("ip", "netns", "exec", self.name, *args, check=check, stdin=stdin)

    def sysctl(self, key: str, value: str) -> None:
        self.run("sh", "-c", f"echo {value} > /proc/sys/{key.replace('.', '/')}")

    def delete(self) -> None:
        run("ip", "netns", "delete", self.name, check=False)


@contextmanager
def namespaces(*roles: str) -> Iterator[list[Netns]]:
    """Fresh namespaces, deleted afterwards (with their veths, bridges and IPVS tables)."""
    made: list[Netns] = []
    try:
        for role in roles:
            made.append(Netns(role))
        yield made
    finally:
        for ns in made:
            ns.delete()


def veth(a: Netns, a_if: str, b: Netns, b_if: str) -> None:
    """A veth pair between two namespaces, both ends up."""
    run("ip", "link", "add", a_if, "netns", a.name, "type", "veth", "peer", b_if, "netns", b.name)
    a.run("ip", "link", "set", a_if, "up")
    b.run("ip", "link", "set", b_if, "up")


def bridge(switch: Netns, hosts: list[Netns]) -> None:
    """Bridge br0 in ``switch``; each host gets eth0 on a veth whose other end is a port."""
    switch.run("ip", "link", "add", "br0", "type", "bridge")
    switch.run("ip", "link", "set", "br0", "up")
    for i, host in enumerate(hosts):
        port = f"port{i}"
        veth(host, "eth0", switch, port)
        switch.run("ip", "link", "set", port, "master", "br0")


@contextmanager
def http_server(
    ns: Netns, address: str, port: int, root: Path, timeout: float = 30.0
) -> Iterator[None]:
    """python -m http.server in ``ns``: ready once it prints its banner (after listen())."""
    proc = subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            ns.name,
            PYTHON,
            "-u",
            "-m",
            "http.server",
            "--bind",
            address,
            "--directory",
            str(root),
            str(port),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    try:
        seen = b""
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            while b"Serving HTTP" not in seen:
                left = deadline - time.monotonic()
                if left <= 0 or not sel.select(left):
                    raise AssertionError(f"http.server in {ns.name} not ready: {seen!r}")
                chunk = os.read(proc.stdout.fileno(), 4096)
                if not chunk:
                    raise AssertionError(f"http.server in {ns.name} exited: {seen!r}")
                seen += chunk
        yield
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        proc.stdout.close()


def http_get(ns: Netns, url: str) -> str:
    """GET ``url`` from inside ``ns`` with urllib, proxies off (the guest has the host's env)."""
    code = (
        "import sys, urllib.request as u\n"
        "o = u.build_opener(u.ProxyHandler({}))\n"
        "sys.stdout.write(o.open(sys.argv[1], timeout=20).read().decode())\n"
    )
    return ns.run(PYTHON, "-c", code, url).stdout


def site(tmp_path: Path, name: str, text: str) -> Path:
    root = tmp_path / name
    root.mkdir()
    (root / "who").write_text(text)
    return root
