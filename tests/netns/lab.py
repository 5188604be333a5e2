"""Network-namespace lab on the host kernel: hosts, links and real daemon processes.

Every namespace and process here is made by the test and removed by it: the
namespaces by name (all carry this process's PID), the processes by the PID
we started.  Traffic goes only to addresses inside these namespaces.
Waiting is on events (a log line, an address appearing), never on sleeps.
"""

from __future__ import annotations

import itertools
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, TypeVar

import pytest

ROOT = Path(__file__).resolve().parents[2]
_seq = itertools.count()
T = TypeVar("T")

# How long a process may take from exec to its first log line: Python's imports and the
# config, which a loaded 2-core machine stretches past 5 s. A wait for an event, not a figure.
STARTUP = 30.0


class Named(Protocol):
    """Any namespace handle: this module's Netns or the kernel lab's."""

    name: str


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, check=check, capture_output=True, text=True)


class Netns:
    def __init__(self, role: str) -> None:
        self.name = f"lvst{os.getpid()}-{next(_seq)}-{role}"[:40]
        sh("ip", "netns", "add", self.name)
        self.run("ip", "link", "set", "lo", "up")

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return sh("ip", "netns", "exec", self.name, *args, check=check)

    def popen(self, args: list[str], **kw: object) -> subprocess.Popen[str]:
        return subprocess.Popen(  # type: ignore[call-overload, no-any-return]
            ["ip", "netns", "exec", self.name, *args], text=True, **kw
        )

    def addresses(self, ifname: str) -> set[str]:
        out = self.run("ip", "-4", "-o", "addr", "show", "dev", ifname).stdout
        return set(re.findall(r"inet (\S+)", out))

    def has_address(self, ifname: str, address: str) -> bool:
        return any(a.split("/")[0] == address for a in self.addresses(ifname))

    def wait_address(self, ifname: str, address: str, present: bool, timeout: float) -> None:
        """Wait for ``address`` to appear on (or vanish from) ``ifname``, driven by `ip monitor`."""
        mon = self.popen(
            ["ip", "-4", "monitor", "address"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
        )
        try:
            events: queue.Queue[str] = queue.Queue()

            def pump() -> None:
                assert mon.stdout is not None
                for line in mon.stdout:
                    events.put(line)

            reader = threading.Thread(target=pump, daemon=True)
            reader.start()
            deadline = time.monotonic() + timeout
            while self.has_address(ifname, address) != present:
                left = deadline - time.monotonic()
                if left <= 0:
                    state = "appear on" if present else "leave"
                    raise AssertionError(
                        f"{address} did not {state} {ifname} in {self.name} "
                        f"within {timeout} s: {self.addresses(ifname)}"
                    )
                with suppress(queue.Empty):
                    events.get(timeout=left)
        finally:
            mon.kill()
            mon.wait()
            reader.join(5)
            assert mon.stdout is not None
            mon.stdout.close()

    def delete(self) -> None:
        sh("ip", "netns", "del", self.name, check=False)


def in_namespace(ns: Named, fn: Callable[[], T]) -> T:
    """Run ``fn`` in a fresh thread inside ``ns`` (setns moves only that thread).

    Sockets keep the namespace they were made in, so a socket made here can be
    served from any thread afterwards.
    """
    from tests.kernel.setns import run_in

    return run_in(f"/run/netns/{ns.name}", fn)


def veth(a: Netns, a_if: str, a_addr: str, b: Netns, b_if: str, b_addr: str) -> None:
    """A veth pair between two namespaces, both ends up and addressed."""
    tmp = f"v{os.getpid() % 100000}{next(_seq)}"
    sh("ip", "link", "add", tmp + "a", "type", "veth", "peer", "name", tmp + "b")
    sh("ip", "link", "set", tmp + "a", "netns", a.name, "name", a_if)
    sh("ip", "link", "set", tmp + "b", "netns", b.name, "name", b_if)
    for ns, ifname, addr in ((a, a_if, a_addr), (b, b_if, b_addr)):
        ns.run("ip", "addr", "add", addr, "dev", ifname)
        ns.run("ip", "link", "set", ifname, "up")


@dataclass
class Daemon:
    """A process we started, with its stderr collected line by line."""

    name: str
    proc: subprocess.Popen[str]
    # keepalived's VRRP child, which outlives a parent killed with SIGKILL and
    # then stops cleanly (priority 0): a hard kill must reach it directly.
    child_pidfile: Path | None = None
    lines: list[str] = field(default_factory=list)
    _new: queue.Queue[str] = field(default_factory=queue.Queue)
    _reader: threading.Thread | None = None

    def start_reader(self) -> None:
        def pump() -> None:
            assert self.proc.stderr is not None
            for line in self.proc.stderr:
                self.lines.append(line.rstrip("\n"))
                self._new.put(line)
            self._new.put("")  # EOF marker

        self._reader = threading.Thread(target=pump, daemon=True)
        self._reader.start()

    def wait_for(self, pattern: str, timeout: float, after: int = 0) -> str:
        """The first log line at index >= ``after`` matching ``pattern``; fail after ``timeout``.

        ``timeout`` counts from the process's first log line: until it has written one (still
        importing), the wait is up to STARTUP longer.
        """
        rx = re.compile(pattern)
        if not self.lines:
            self._first_line()
        deadline = time.monotonic() + timeout
        seen = after
        while True:
            while seen < len(self.lines):
                if rx.search(self.lines[seen]):
                    return self.lines[seen]
                seen += 1
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(
                    f"{self.name}: no log line matching {pattern!r} within {timeout} s; "
                    f"log:\n" + "\n".join(self.lines[-40:])
                )
            try:
                self._new.get(timeout=left)
            except queue.Empty:
                continue

    def _first_line(self) -> None:
        deadline = time.monotonic() + STARTUP
        while not self.lines and self.proc.poll() is None and time.monotonic() < deadline:
            with suppress(queue.Empty):
                self._new.put(self._new.get(timeout=0.1))  # peek: wait_for reads it again

    def assert_quiet(self, pattern: str, duration: float, after: int | None = None) -> None:
        """Watch the log for ``duration`` seconds: ``pattern`` must not appear."""
        start = self.mark() if after is None else after
        try:
            line = self.wait_for(pattern, duration, after=start)
        except AssertionError:
            return
        raise AssertionError(f"{self.name}: unexpected log line: {line}")

    def mark(self) -> int:
        return len(self.lines)

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)

    def hard_kill(self) -> None:
        """kill -9 of the whole daemon, so that nothing of it can say goodbye."""
        if self.child_pidfile is None:
            self.signal(signal.SIGKILL)
            return
        child = int(self.child_pidfile.read_text().split()[0])
        self.signal(signal.SIGSTOP)  # the parent must not restart the child
        os.kill(child, signal.SIGKILL)
        self.signal(signal.SIGKILL)

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM, then SIGKILL if it does not stop; returns the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._close()
        return self.proc.returncode

    def _close(self) -> None:
        if self._reader is not None:
            self._reader.join(5)
        for stream in (self.proc.stderr, self.proc.stdout):
            if stream is not None and not stream.closed:
                stream.close()

    def exited(self, timeout: float) -> int:
        status = self.proc.wait(timeout)
        self._close()
        return status


def tshark() -> str:
    path = shutil.which("tshark")
    if path is None:
        raise pytest.UsageError("tshark is not installed: run `make deps`")
    return path


@contextmanager
def capture(ns: Netns, capture_filter: str, count: int, pcap: Path) -> Iterator[None]:
    """tshark on ``ns``'s eth0 until ``count`` frames are in ``pcap``; live when this yields.

    "Capturing on" means its filter is set, so nothing sent after the yield is missed.
    On leaving, it is given 20 s to reach its count (it stops by itself), then killed.
    """
    cap = ns.popen(
        [tshark(), "-i", "eth0", "-f", capture_filter, "-c", str(count), "-w", str(pcap)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        assert cap.stderr is not None
        for line in cap.stderr:
            if "Capturing on" in line:
                break
        yield
        cap.wait(20)
    finally:
        if cap.poll() is None:
            cap.kill()
            cap.wait()
        if cap.stderr is not None:
            cap.stderr.close()


def fields(pcap: Path, names: list[str], prefs: list[str] | None = None) -> list[list[str]]:
    args = [tshark(), "-r", str(pcap), *(prefs or []), "-T", "fields"]
    for name in names:
        args += ["-e", name]
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    return [line.split("\t") for line in out.split("\n") if line]


def start_agent(ns: Named, config: Path, name: str, log_level: str = "debug") -> Daemon:
    """``lvsagent run`` in ``ns``; ``ip netns exec`` execs it, so its PID is the agent's."""
    proc = subprocess.Popen(
        ["ip", "netns", "exec", ns.name, sys.executable, "-m", "lvsagent.cli", "run",
         "--config", str(config), "--log-level", log_level],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        cwd=str(ROOT),
    )  # fmt: skip
    d = Daemon(name, proc)
    d.start_reader()
    return d


def start_keepalived(
    ns: Named, config: Path, workdir: Path, name: str, checker: bool = False
) -> Daemon:
    """keepalived in the foreground in ``ns``, logging to the console: VRRP only, or with
    ``checker`` its IPVS checker too (a third pid file, ``<name>-check.pid``).

    Own pid files, so that two keepalived run side by side and a hard kill can reach each
    process.  A pid file left by a killed run makes keepalived refuse to start when its
    PID has been reused since: they are removed first.
    """
    pid, vrrp_pid, check_pid = (workdir / f"{name}{s}.pid" for s in ("", "-vrrp", "-check"))
    for stale in (pid, vrrp_pid, check_pid):
        stale.unlink(missing_ok=True)
    which = ["--checkers_pid", str(check_pid)] if checker else ["--vrrp"]
    proc = subprocess.Popen(
        ["ip", "netns", "exec", ns.name, "keepalived", *which, "--dont-fork", "--log-console",
         "--log-detail", "--no-syslog", "--use-file", str(config), "--pid", str(pid),
         "--vrrp_pid", str(vrrp_pid)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    d = Daemon(name, proc, child_pidfile=vrrp_pid)
    # keepalived logs to stdout with --log-console; fold it into the same reader.
    d.proc.stderr = d.proc.stdout
    d.start_reader()
    return d


@contextmanager
def namespaces(*roles: str) -> Iterator[list[Netns]]:
    made: list[Netns] = []
    try:
        for r in roles:
            made.append(Netns(r))
        yield made
    finally:
        for ns in made:
            ns.delete()


def agent_config(
    path: Path,
    *,
    interface: str,
    priority: int,
    vip: str = "10.99.0.100/24",
    version: int = 2,
    advert_int: float = 1.0,
    extra: str = "",
) -> Path:
    auth = 'auth_pass = "1111"\n' if version == 2 else ""
    path.write_text(
        f"""[global]
router_id = "{path.stem}"
# Several agents share this filesystem: each its own socket and state (the state
# directory is locked by its agent); no metrics port.
control_socket = "{path.with_suffix(".sock")}"
state_dir = "{path.parent / (path.stem + "-state")}"
metrics_listen = ""

[[vrrp_instance]]
name = "VI_1"
interface = "{interface}"
vrid = 51
priority = {priority}
advert_int = {advert_int}
version = {version}
virtual_addresses = ["{vip}"]
garp_master_delay = 1
{auth}{extra}
"""
    )
    return path


def checked_service(interval: float, connect_timeout: float, port: int = 8080) -> str:
    """A virtual service on 10.99.0.100:80 whose real servers are the pair's boxes (TCP
    checked on ``port``), to append to an agent_config."""
    servers = "".join(
        f'[[virtual_server.real_server]]\naddress = "{address}"\nport = {port}\n'
        for address in ("10.99.0.1", "10.99.0.2")
    )
    return (
        '\n[[virtual_server]]\naddress = "10.99.0.100"\nport = 80\n'
        f'[virtual_server.health]\ntype = "tcp"\ninterval = {interval}\n'
        f"[virtual_server.health.tcp]\nconnect_timeout = {connect_timeout}\n{servers}"
    )


def web_server(ns: Named, address: str, port: int = 8080) -> subprocess.Popen[str]:
    """A listener on ``address:port`` in ``ns`` (the caller stops it, by PID)."""
    return subprocess.Popen(  # type: ignore[call-overload, no-any-return]
        ["ip", "netns", "exec", ns.name, sys.executable, "-m", "http.server", str(port),
         "--bind", address],
        text=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def keepalived_config(
    path: Path,
    *,
    interface: str,
    priority: int,
    vip: str = "10.99.0.100/24",
    version: int = 2,
    advert_int: float = 1.0,
    state: str = "BACKUP",
    nopreempt: bool = False,
) -> Path:
    auth = (
        "    authentication {\n        auth_type PASS\n        auth_pass 1111\n    }\n"
        if version == 2
        else ""
    )
    path.write_text(
        f"""global_defs {{
    router_id {path.stem}
    vrrp_version {version}
    enable_script_security
}}
vrrp_instance VI_1 {{
    state {state}
    interface {interface}
    virtual_router_id 51
    priority {priority}
    advert_int {advert_int}
{"    nopreempt" if nopreempt else ""}
{auth}    virtual_ipaddress {{
        {vip}
    }}
}}
"""
    )
    return path
