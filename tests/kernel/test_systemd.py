"""lvsagent under a real systemd as PID 1: the unit file and the daemon agree.

Two halves in one module:

* on the HOST, ``test_lvsagent_under_systemd_pid1`` boots the lab with
  systemd as PID 1 (tests/kernel/systemd_boot.py; ~8 s to boot, ~50 s in all) and runs this same
  module's ``inside`` tests there, as a oneshot service;
* INSIDE, the tests install systemd/lvsagent.service as shipped (ExecStart
  points at this tree through a small wrapper), a config with one VRRP
  instance on a veth whose other end is a "peer" namespace, and one virtual
  service, then drive it with systemctl:

  - start returns only once the daemon said READY=1, and the unit is running;
  - ``lvsagent status`` and /metrics answer; the transition to MASTER is a
    journal entry an operator can filter on;
  - ``systemctl reload`` keeps the process and ends active again;
  - ``systemctl stop`` makes the master send a priority-0 advert (seen by the peer);
  - a frozen daemon (SIGSTOP) is killed by the watchdog and restarted.

Waiting is on events: systemd's and lvsagent's journal entries, read with
``journalctl -f`` from a cursor taken before each action, so nothing is missed.
Elsewhere (the ordinary lab guest of ``make test-kernel``) everything skips.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.kernel import uml
from tests.kernel.systemd_boot import inside_systemd_lab, run_under_systemd

ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
WAIT = 30.0
UNIT = "lvsagent.service"
CONFIG = Path("/etc/lvsagent/lvsagent.toml")
WRAPPER = Path("/usr/local/bin/lvsagent")
PEER = "lvsagent-peer"

inside = pytest.mark.skipif(
    not inside_systemd_lab(),
    reason="runs under the lab's systemd: see test_lvsagent_under_systemd_pid1",
)


# ----- the host half ------------------------------------------------------------------------


@pytest.mark.skipif(uml.inside_lab(), reason="boots a lab of its own: needs the host")
def test_lvsagent_under_systemd_pid1() -> None:
    try:
        uml.kernel_path()
    except uml.KernelMissing as exc:
        if uml.lab_required():
            pytest.fail(f"CI=true and the kernel lab cannot boot: {exc}")
        pytest.skip(str(exc))
    # -x: the steps build on each other; after the first failure the rest says nothing new.
    cmd = [PYTHON, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", __file__, "-k", "inside"]
    status, output = run_under_systemd(cmd, timeout=240, cwd=ROOT)
    assert status == 0, output
    assert " passed" in output and "skipped" not in output, output


# ----- the guest half: helpers ---------------------------------------------------------------


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, check=check, capture_output=True, text=True, timeout=WAIT * 2)


def diagnosis() -> str:
    """What the unit and its journal say, for a failure message."""
    status = run("systemctl", "status", "--no-pager", "-l", UNIT, check=False).stdout
    logs = run("journalctl", "-u", UNIT, "--no-pager", "-n", "60", check=False).stdout
    return f"{status}\n{logs}"


def systemctl(*args: str) -> None:
    """A systemctl command that must succeed."""
    try:
        run("systemctl", *args)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        pytest.fail(f"systemctl {' '.join(args)}: {exc}\n{diagnosis()}")


def show(*props: str) -> dict[str, str]:
    out = run("systemctl", "show", UNIT, *(f"--property={p}" for p in props)).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def wait_until(what: str, condition: Callable[[], bool], timeout: float = WAIT) -> None:
    """For states systemd does not log (READY=1 taking effect): re-check until true."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}\n{diagnosis()}")
        time.sleep(0.2)


def cursor() -> str:
    """The journal's position now: entries after it are what the next action caused."""
    out = run("journalctl", "-n", "1", "-o", "json", "--no-pager").stdout.strip()
    return str(json.loads(out.splitlines()[-1])["__CURSOR"]) if out else ""


class Lines:
    """A child's stdout, line by line, with a deadline.

    Reads the raw pipe: a buffered file object may hold the next lines after
    select() has said the pipe is empty, and the wait would miss them.
    """

    def __init__(self, args: list[str]) -> None:
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE)
        assert self.proc.stdout is not None
        self.fd = self.proc.stdout.fileno()
        self.buffer = b""

    def next(self, deadline: float) -> str | None:
        """The next line, or None once ``deadline`` (monotonic) has passed."""
        while b"\n" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.fd], [], [], left)[0]:
                return None
            chunk = os.read(self.fd, 65536)
            if not chunk:
                return None
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line.decode(errors="replace")

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()
        assert self.proc.stdout is not None
        self.proc.stdout.close()


class Journal(Lines):
    """Entries after a cursor, as they come (``journalctl -f``), with lvsagent's or systemd's."""

    def __init__(self, after: str, *matches: str) -> None:
        args = ["journalctl", "-f", "-o", "json", "--no-pager", "-u", UNIT, *matches]
        super().__init__([*args, f"--after-cursor={after}"] if after else args)
        self.seen: list[dict[str, Any]] = []

    def wait_for(self, what: str, match: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        deadline = time.monotonic() + WAIT * 2
        while True:
            line = self.next(deadline)
            if line is None:
                seen = [e.get("MESSAGE") for e in self.seen]
                pytest.fail(f"no journal entry for {what}; saw {seen}\n{diagnosis()}")
            entry = json.loads(line)
            self.seen.append(entry)
            if match(entry):
                return entry

    def wait_for_all(self, **wanted: Callable[[dict[str, Any]], bool]) -> None:
        """An entry for each of ``wanted``, in whatever order journald stored them."""
        left = dict(wanted)
        while left:
            matchers = tuple(left.values())
            entry = self.wait_for(", ".join(left), lambda e, ms=matchers: any(m(e) for m in ms))
            left = {name: m for name, m in left.items() if not m(entry)}


def message(entry: dict[str, Any]) -> str:
    value = entry.get("MESSAGE", "")
    return value if isinstance(value, str) else bytes(value).decode(errors="replace")


def by_systemd(entry: dict[str, Any]) -> bool:
    return entry.get("_PID") == "1"


def started(entry: dict[str, Any]) -> bool:
    """systemd's "Started lvsagent.service": a start job done (not "Starting", not failed)."""
    done = entry.get("JOB_TYPE") == "start" and entry.get("JOB_RESULT") == "done"
    return by_systemd(entry) and done


# ----- the guest half: set-up ------------------------------------------------------------------


CONFIG_TEXT = """[global]
router_id = "systemd-lab"

[[vrrp_instance]]
name = "VI_1"
interface = "lab0"
vrid = 51
priority = 100
advert_int = 1
version = 2
auth_pass = "1111"
virtual_addresses = ["10.77.0.100/24"]

[[virtual_server]]
address = "10.77.0.100"
port = 80
protocol = "tcp"
scheduler = "rr"
forwarding = "dr"
instance = "VI_1"

[[virtual_server.real_server]]
address = "10.77.0.1"
port = 80
"""


@pytest.fixture(scope="module")
def installed() -> Iterator[None]:
    """The unit as shipped, a wrapper running this tree, a config, a link with a peer."""
    run("ip", "netns", "add", PEER)
    run("ip", "link", "add", "lab0", "type", "veth", "peer", "name", "eth0", "netns", PEER)
    run("ip", "addr", "add", "10.77.0.1/24", "dev", "lab0")
    run("ip", "link", "set", "lab0", "up")
    run("ip", "netns", "exec", PEER, "ip", "addr", "add", "10.77.0.2/24", "dev", "eth0")
    run("ip", "netns", "exec", PEER, "ip", "link", "set", "eth0", "up")
    run("ip", "netns", "exec", PEER, "ip", "link", "set", "lo", "up")
    WRAPPER.parent.mkdir(parents=True, exist_ok=True)
    WRAPPER.write_text(f'#!/bin/sh\nexec env PYTHONPATH={ROOT} {PYTHON} -m lvsagent.cli "$@"\n')
    WRAPPER.chmod(0o755)
    CONFIG.parent.mkdir(parents=True, exist_ok=True)
    CONFIG.write_text(CONFIG_TEXT)
    unit = Path("/etc/systemd/system") / UNIT
    unit.write_text((ROOT / "systemd" / UNIT).read_text())
    # The unit hides homes and temporary directories: a clone there must stay visible.
    dropin = unit.with_name(f"{UNIT}.d")
    dropin.mkdir(exist_ok=True)
    where = str(ROOT) + "/"
    lines = ["[Service]"]
    if where.startswith(("/home/", "/root/")):
        lines.append("ProtectHome=read-only")
    if where.startswith(("/tmp/", "/var/tmp/")):
        lines.append("PrivateTmp=no")
    (dropin / "lab.conf").write_text("\n".join(lines) + "\n")
    systemctl("daemon-reload")
    yield
    run("systemctl", "stop", UNIT, check=False)


@pytest.fixture
def journal() -> Iterator[Callable[..., Journal]]:
    opened: list[Journal] = []

    def follow(*matches: str) -> Journal:
        j = Journal(cursor(), *matches)
        opened.append(j)
        return j

    yield follow
    for j in opened:
        j.close()


def state() -> str:
    s = show("ActiveState", "SubState")
    return f"{s['ActiveState']}/{s['SubState']}"


# ----- the guest half: the tests, in order ------------------------------------------------------


@inside
def test_inside_start_waits_for_ready(installed: None, journal: Callable[..., Journal]) -> None:
    j = journal()
    # Type=notify: this returns once READY=1 arrived (or fails at TimeoutStartSec).
    systemctl("start", UNIT)
    assert state() == "active/running"
    props = show("MainPID", "StatusText", "NRestarts")
    assert props["MainPID"] != "0"
    assert "VI_1" in props["StatusText"]
    # The daemon's start line and systemd's "Started" (journald may store them either way round).
    j.wait_for_all(daemon=lambda e: "lvsagent started" in message(e), systemd=started)


@inside
def test_inside_transition_is_a_filterable_journal_entry(
    installed: None, journal: Callable[..., Journal]
) -> None:
    entries = run(
        "journalctl", "-u", UNIT, "-o", "json", "--no-pager",
        "LVSAGENT_INSTANCE=VI_1", "LVSAGENT_STATE=MASTER",
    ).stdout.splitlines()  # fmt: skip
    if not entries:  # not master yet: wait for it
        j = journal("LVSAGENT_INSTANCE=VI_1", "LVSAGENT_STATE=MASTER")
        entry = j.wait_for("VI_1 -> MASTER", lambda e: True)
    else:
        entry = json.loads(entries[-1])
    assert "-> MASTER" in message(entry)
    assert entry["SYSLOG_IDENTIFIER"] == "lvsagent"
    assert entry["PRIORITY"] == "4"


@inside
def test_inside_status_and_metrics_answer(installed: None) -> None:
    wait_until("MASTER", lambda: '"MASTER"' in run(str(WRAPPER), "status", "--json").stdout)
    snap = json.loads(run(str(WRAPPER), "status", "--json").stdout)
    (instance,) = snap["instances"]
    assert (instance["name"], instance["state"]) == ("VI_1", "MASTER")
    human = run(str(WRAPPER), "status").stdout
    assert "VI_1  vrid 51 on lab0: MASTER, priority 100" in human
    with urllib.request.urlopen("http://127.0.0.1:9650/metrics", timeout=WAIT) as reply:
        text = reply.read().decode()
    assert 'lvsagent_vrrp_state{state="MASTER",vrrp_instance="VI_1"} 1.0' in text
    # What Prometheus would read: every family parses, and the state has one series per state.
    families = {f.name: f for f in text_string_to_metric_families(text)}
    states = {s.labels["state"]: s.value for s in families["lvsagent_vrrp_state"].samples}
    assert states == {"INIT": 0.0, "BACKUP": 0.0, "MASTER": 1.0, "FAULT": 0.0}, states
    # IPVS read from the kernel at scrape time, inside the service's sandbox.
    assert 'lvsagent_ipvs_service_connections_total{service="10.77.0.100:80/tcp"}' in text


@inside
def test_inside_reload_keeps_the_process(installed: None, journal: Callable[..., Journal]) -> None:
    pid = show("MainPID")["MainPID"]
    j = journal()
    systemctl("reload", UNIT)
    j.wait_for("the daemon's reload", lambda e: not by_systemd(e) and "reload" in message(e))
    # RELOADING=1 ... READY=1: the unit ends active again, not stuck in "reloading".
    wait_until("active after the reload", lambda: state() == "active/running")
    assert show("MainPID")["MainPID"] == pid


@inside
def test_inside_no_errors_so_far(installed: None) -> None:
    """The sandbox (capabilities, read-only /, address families) refused the daemon nothing."""
    out = run("journalctl", "-u", UNIT, "-o", "json", "--no-pager", "-p", "err").stdout
    errors = [message(json.loads(line)) for line in out.splitlines()]
    assert errors == []


def _sniffer() -> Lines:
    """A raw VRRP socket in the peer namespace printing the priority of every advert."""
    code = (
        "import socket, struct\n"
        "s = socket.socket(socket.AF_INET, socket.SOCK_RAW, 112)\n"
        "mreq = socket.inet_aton('224.0.0.18') + socket.inet_aton('10.77.0.2')\n"
        "s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)\n"
        "print('ready', flush=True)\n"
        "while True:\n"
        "    d = s.recv(2048)\n"
        "    v = d[(d[0] & 15) * 4:]\n"
        "    print(f'vrid={v[1]} priority={v[2]}', flush=True)\n"
    )
    return Lines(["ip", "netns", "exec", PEER, PYTHON, "-c", code])


def _lines_until(lines: Lines, wanted: str) -> None:
    deadline = time.monotonic() + WAIT
    seen: list[str] = []
    while wanted not in seen:
        line = lines.next(deadline)
        assert line is not None, f"never saw {wanted!r}; saw {seen[-5:]}"
        seen.append(line.strip())


@inside
def test_inside_stop_sends_priority_zero(installed: None) -> None:
    sniffer = _sniffer()
    try:
        _lines_until(sniffer, "ready")
        _lines_until(sniffer, "vrid=51 priority=100")  # the master is advertising
        systemctl("stop", UNIT)
        _lines_until(sniffer, "vrid=51 priority=0")
    finally:
        sniffer.close()
    props = show("ActiveState", "Result")
    assert (props["ActiveState"], props["Result"]) == ("inactive", "success")
    assert "10.77.0.100" not in run("ip", "-4", "addr", "show", "dev", "lab0").stdout


@inside
def test_inside_the_watchdog_restarts_a_frozen_daemon(
    installed: None, journal: Callable[..., Journal]
) -> None:
    systemctl("start", UNIT)
    before = show("MainPID", "NRestarts")
    j = journal()
    # SIGSTOP: nothing of the process runs, its loop least of all (the unit tests show that a
    # loop blocked while other threads run stops the pings too).
    os.kill(int(before["MainPID"]), signal.SIGSTOP)
    j.wait_for(
        "systemd's watchdog verdict",
        lambda e: by_systemd(e) and e.get("UNIT_RESULT") == "watchdog",
    )
    j.wait_for("the restart", started)  # Restart=on-failure covers a watchdog timeout
    after = show("MainPID", "NRestarts")
    assert after["MainPID"] not in ("0", before["MainPID"])
    assert int(after["NRestarts"]) == int(before["NRestarts"]) + 1
    assert state() == "active/running"
