"""lvsagent under a real systemd as PID 1: the unit file and the daemon agree.

Two halves in one module:

* on the HOST, ``test_lvsagent_under_systemd_pid1`` boots the lab with
  systemd as PID 1 (tests/kernel/systemd_boot.py; ~8 s to boot, ~65 s in all) and runs this same
  module's ``inside`` tests there, as a oneshot service;
* INSIDE, the tests install systemd/lvsagent.service and its user
  (systemd/lvsagent.sysusers, through systemd-sysusers) as shipped (ExecStart
  points at this tree through a small wrapper), a config root:lvsagent 0640
  with one VRRP instance on a veth whose other end is a "peer" namespace, and
  one virtual service, then drive it with systemctl:

  - start returns only once the daemon said READY=1, and the unit is running;
    its STATUS= names the instance's state as the daemon reports it;
  - ``lvsagent status`` and /metrics answer; the transition to MASTER is a
    journal entry an operator can filter on;
  - the daemon runs as lvsagent, not root, with CAP_NET_ADMIN and CAP_NET_RAW only;
  - ``systemctl reload`` keeps the process and ends active again; with an
    invalid file it fails and the daemon is not even signalled;
  - ``systemctl stop`` makes the master send a priority-0 advert (seen by the peer);
  - a daemon whose event loop alone is stuck (a test hook, the process and its
    other threads running on) is killed by the watchdog and restarted.

Waiting is on events: systemd's and lvsagent's journal entries, read with
``journalctl -f`` from a cursor taken before each action, so nothing is missed.
Elsewhere (the ordinary lab guest of ``make test-kernel``) everything skips.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import re
import select
import signal
import socket
import stat
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
from tests.kernel.systemd_boot import inside_systemd_lab, run_guest_half

ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
WAIT = 30.0
UNIT = "lvsagent.service"
CONFIG = Path("/etc/lvsagent/lvsagent.toml")
WRAPPER = Path("/usr/sbin/lvsagent")  # the unit's ExecStart (the package installs it there)
PEER = "lvsagent-peer"
USER = "lvsagent"  # systemd/lvsagent.sysusers
SYSUSERS = Path("/usr/lib/sysusers.d/lvsagent.conf")
DROPIN = Path("/etc/systemd/system") / f"{UNIT}.d"
CONTROL = Path("/run/lvsagent/control.sock")
METRICS = "http://127.0.0.1:9650/metrics"
CAP_NET_ADMIN, CAP_NET_RAW = 12, 13  # linux/capability.h

inside = pytest.mark.skipif(
    not inside_systemd_lab(),
    reason="runs under the lab's systemd: see test_lvsagent_under_systemd_pid1",
)


# ----- the host half ------------------------------------------------------------------------


@pytest.mark.skipif(uml.inside_lab(), reason="boots a lab of its own: needs the host")
def test_lvsagent_under_systemd_pid1() -> None:
    run_guest_half(__file__, timeout=240)


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
    # A PYTHONPATH from the unit's environment stays, after this tree (the watchdog test's hook).
    pythonpath = f"{ROOT}${{PYTHONPATH:+:$PYTHONPATH}}"
    command = f'exec env PYTHONPATH={pythonpath} {PYTHON} -m lvsagent.cli "$@"'
    WRAPPER.write_text(f"#!/bin/sh\n{command}\n")
    WRAPPER.chmod(0o755)
    # The user, as a package would create it: the sysusers file, then systemd-sysusers.
    SYSUSERS.parent.mkdir(parents=True, exist_ok=True)
    SYSUSERS.write_text((ROOT / "systemd" / "lvsagent.sysusers").read_text())
    run("systemd-sysusers", str(SYSUSERS))
    # The config as README.md says: it holds the VRRP password, so root:lvsagent 0640.
    CONFIG.parent.mkdir(parents=True, exist_ok=True)
    CONFIG.write_text(CONFIG_TEXT)
    os.chown(CONFIG, 0, grp.getgrnam(USER).gr_gid)
    CONFIG.chmod(0o640)
    _let_others_through(ROOT, Path(PYTHON))
    unit = Path("/etc/systemd/system") / UNIT
    unit.write_text((ROOT / "systemd" / UNIT).read_text())
    # The unit hides homes and temporary directories: a clone there must stay visible.
    dropin = DROPIN
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


def _let_others_through(*paths: Path) -> None:
    """The daemon's user must reach this tree and the venv: a clone under /root (0700) would
    hide them.  Only the directories above them get o+x, in the guest (its root is an overlay
    whose upper layer is a tmpfs), never on the host."""
    for path in paths:
        for parent in path.parents:
            mode = parent.stat().st_mode
            if not mode & stat.S_IXOTH:
                parent.chmod(stat.S_IMODE(mode) | stat.S_IXOTH)


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


def instance_state() -> str:
    """VI_1's state as the daemon itself reports it (``lvsagent status --json``); "" if unsure."""
    out = run(str(WRAPPER), "status", "--json", check=False).stdout
    try:
        instances = json.loads(out).get("instances") or []
    except ValueError:
        return ""
    return next((str(i["state"]) for i in instances if i.get("name") == "VI_1"), "")


def status_text_agrees() -> bool:
    """systemd's StatusText names VI_1's state as the daemon reports it, read at one moment."""
    said = instance_state()
    return said != "" and f"VI_1 {said}" in show("StatusText")["StatusText"]


def proc_status(pid: str) -> dict[str, str]:
    """/proc/PID/status as a dict: Uid, Gid, CapEff, ..."""
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {k: v.strip() for k, v in (line.split(":", 1) for line in lines if ":" in line)}


def scrape() -> str:
    with urllib.request.urlopen(METRICS, timeout=WAIT) as reply:
        return str(reply.read().decode())


def control_answer(timeout: float) -> bytes:
    """Ask the control socket for the status; what it said within ``timeout`` (b"" if nothing).

    Raw, not ``lvsagent status``: no interpreter start-up inside the time that is measured.
    """
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(CONTROL))
        sock.sendall(b'{"cmd": "status"}')
        sock.shutdown(socket.SHUT_WR)
        try:
            return sock.recv(65536)
        except TimeoutError:
            return b""


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
    # STATUS= says what state VI_1 is in (BACKUP at first, MASTER a few seconds later, with
    # nobody else on the link), the same as the daemon answers on its control socket.
    wait_until("StatusText naming VI_1's state as `lvsagent status` does", status_text_agrees)
    assert instance_state() in ("BACKUP", "MASTER")


@inside
def test_inside_transition_is_a_filterable_journal_entry(
    installed: None, journal: Callable[..., Journal]
) -> None:
    # Follow first, then look back: an entry written between the two is in one or the other.
    j = journal("LVSAGENT_INSTANCE=VI_1", "LVSAGENT_STATE=MASTER")
    entries = run(
        "journalctl", "-u", UNIT, "-o", "json", "--no-pager",
        "LVSAGENT_INSTANCE=VI_1", "LVSAGENT_STATE=MASTER",
    ).stdout.splitlines()  # fmt: skip
    # Not master yet: wait for it.
    entry = json.loads(entries[-1]) if entries else j.wait_for("VI_1 -> MASTER", lambda e: True)
    assert "-> MASTER" in message(entry)
    assert entry["SYSLOG_IDENTIFIER"] == "lvsagent"
    assert entry["PRIORITY"] == "5"  # NOTICE: a routine transition (FAULT is WARNING)


@inside
def test_inside_status_and_metrics_answer(installed: None) -> None:
    wait_until("MASTER", lambda: '"MASTER"' in run(str(WRAPPER), "status", "--json").stdout)
    snap = json.loads(run(str(WRAPPER), "status", "--json").stdout)
    (instance,) = snap["instances"]
    assert (instance["name"], instance["state"]) == ("VI_1", "MASTER")
    human = run(str(WRAPPER), "status").stdout
    assert "VI_1  vrid 51 on lab0: MASTER, priority 100" in human
    # systemctl status shows the same (STATUS= is re-sent within a second of a change).
    wait_until("STATUS= VI_1 MASTER", lambda: "VI_1 MASTER" in show("StatusText")["StatusText"])
    text = scrape()
    assert 'lvsagent_vrrp_state{state="MASTER",vrrp_instance="VI_1"} 1.0' in text
    # What Prometheus would read: every family parses, and the state has one series per state.
    families = {f.name: f for f in text_string_to_metric_families(text)}
    states = {s.labels["state"]: s.value for s in families["lvsagent_vrrp_state"].samples}
    assert states == {"INIT": 0.0, "BACKUP": 0.0, "MASTER": 1.0, "FAULT": 0.0}, states
    # IPVS read from the kernel at scrape time, inside the service's sandbox.
    assert 'lvsagent_ipvs_service_connections_total{service="10.77.0.100:80/tcp"}' in text


@inside
def test_inside_runs_as_its_own_user_with_two_capabilities(installed: None) -> None:
    """User=lvsagent: not uid 0, and exactly CAP_NET_ADMIN + CAP_NET_RAW, yet all of the above
    (VRRP, IPVS, nftables, net.* sysctls) worked."""
    pid = show("MainPID")["MainPID"]
    uid, gid = pwd.getpwnam(USER).pw_uid, grp.getgrnam(USER).gr_gid
    assert uid != 0 and gid != 0
    fields = proc_status(pid)
    assert fields["Uid"].split() == [str(uid)] * 4, fields["Uid"]  # real, effective, saved, fs
    assert fields["Gid"].split() == [str(gid)] * 4, fields["Gid"]
    assert "0" not in fields["Groups"].split(), fields["Groups"]
    two = (1 << CAP_NET_ADMIN) | (1 << CAP_NET_RAW)
    caps = {k: int(fields[k], 16) for k in ("CapEff", "CapPrm", "CapAmb", "CapBnd")}
    assert caps == dict.fromkeys(caps, two), {k: f"{v:016x}" for k, v in caps.items()}
    assert (fields["NoNewPrivs"], fields["Seccomp"]) == ("1", "2")  # seccomp filters on
    # What it wrote as that user: a net.* sysctl (the loop guard's), its directory, its socket.
    assert Path("/proc/sys/net/ipv4/ip_forward").read_text().strip() == "1"
    assert CONTROL.parent.stat().st_uid == uid
    sock = CONTROL.stat()
    assert (sock.st_uid, stat.S_IMODE(sock.st_mode)) == (uid, 0o660)  # root still asks (above)
    saved = CONTROL.parent / "sysctl-saved.json"
    if saved.exists():  # written before the first change of a sysctl: under UMask=0077
        assert (saved.stat().st_uid, stat.S_IMODE(saved.stat().st_mode)) == (uid, 0o600)
    # Why not root with the same two capabilities: root may write root's /proc/sys files
    # (kernel.core_pattern) without CAP_DAC_OVERRIDE; lvsagent may write net.* only.
    rewrite = "v=$(cat {0}) && echo \"$v\" >{0}"
    caps_only = ["--inh-caps=-all,+net_admin,+net_raw", "--ambient-caps=-all,+net_admin,+net_raw",
                 "--bounding-set=-all,+net_admin,+net_raw"]  # fmt: skip
    as_user = ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", *caps_only]
    as_root = ["setpriv", *caps_only]
    core, forward = "/proc/sys/kernel/core_pattern", "/proc/sys/net/ipv4/ip_forward"
    assert run(*as_root, "sh", "-c", rewrite.format(core), check=False).returncode == 0
    assert run(*as_user, "sh", "-c", rewrite.format(core), check=False).returncode != 0
    result = run(*as_user, "sh", "-c", rewrite.format(forward), check=False)
    assert result.returncode == 0, result.stderr


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
def test_inside_reloads_in_a_row(installed: None, journal: Callable[..., Journal]) -> None:
    """Ten reloads back to back (a config-management run may do that): one process throughout,
    each reload applied.  Each also runs two sandboxed processes that exit (`lvsagent check`,
    kill): on an unpatched UML kernel this froze the guest within a few (systemd_boot.py)."""
    pid = show("MainPID")["MainPID"]
    for _ in range(10):
        j = journal("LVSAGENT_RELOAD=applied")
        systemctl("reload", UNIT)
        j.wait_for("the reload applied", lambda e: e.get("_PID") == pid)
    assert (show("MainPID")["MainPID"], state()) == (pid, "active/running")


@inside
def test_inside_no_errors_so_far(installed: None) -> None:
    """The sandbox (capabilities, read-only /, address families) refused the daemon nothing."""
    out = run("journalctl", "-u", UNIT, "-o", "json", "--no-pager", "-p", "err").stdout
    errors = [message(json.loads(line)) for line in out.splitlines()]
    assert errors == []


@inside
def test_inside_reload_of_an_invalid_file_fails(
    installed: None, journal: Callable[..., Journal]
) -> None:
    """ExecReload= runs `lvsagent check` first: systemctl reload fails, the daemon is untouched."""
    wait_until("MASTER", lambda: instance_state() == "MASTER")
    pid = show("MainPID")["MainPID"]
    kill_before = reload_commands()["/bin/kill"]  # its last run: the reload test's, above
    assert kill_before["pid"] != "0", kill_before
    good = CONFIG.read_text()
    j = journal()
    try:
        CONFIG.write_text(good.replace("priority = 100", 'priority = "high"'))
        result = run("systemctl", "reload", UNIT, check=False)
        assert result.returncode != 0, f"reload of an invalid file succeeded\n{diagnosis()}"
        # The check's own error, file:line: key: message, is the unit's journal.
        j.wait_for(
            "the check's error",
            lambda e: f"{CONFIG}:8: vrrp_instance[0].priority" in message(e),
        )
        commands = reload_commands()
        assert commands[str(WRAPPER)]["status"].startswith("78"), commands
        # The daemon was never signalled: kill's last run is still the earlier one.
        assert commands["/bin/kill"] == kill_before, commands
        assert (show("MainPID")["MainPID"], state()) == (pid, "active/running")
        assert instance_state() == "MASTER"
    finally:
        CONFIG.write_text(good)  # same inode: root:lvsagent 0640 stays


def reload_commands() -> dict[str, dict[str, str]]:
    """Each ExecReload= command's last run as systemd recorded it: pid, start time, status."""
    out = run("systemctl", "show", UNIT, "--property=ExecReload").stdout
    runs = re.findall(r"path=(\S+) ;.*?start_time=\[([^]]*)\].*?pid=(\d+) ;.*?status=(\S+)", out)
    assert len(runs) == 2, out
    return {path: {"start": start, "pid": pid, "status": st} for path, start, pid, st in runs}


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


HOOK_DIR = Path("/usr/local/lib/lvsagent-test-hook")
HOOK_TAG = "lvsagent-test-hook"
# Imported by every Python the unit starts (PYTHONPATH from the drop-in below; the daemon has
# no SIGUSR2 handler of its own).  Python runs signal handlers in the main thread, the event
# loop's, so SIGUSR2 stalls the loop and nothing else: prometheus-client's thread serves on.
SITECUSTOMIZE = f"""import os, signal, sys, time


def _freeze(signum, frame):
    print(f"{HOOK_TAG}: pid {{os.getpid()}} blocks its main thread", file=sys.stderr, flush=True)
    time.sleep(3600)


signal.signal(signal.SIGUSR2, _freeze)
print(f"{HOOK_TAG}: pid {{os.getpid()}} has the SIGUSR2 hook", file=sys.stderr, flush=True)
"""


@pytest.fixture
def loop_freezer(installed: None) -> Iterator[None]:
    """The test hook: a drop-in puts HOOK_DIR's sitecustomize.py in the daemon's interpreter."""
    HOOK_DIR.mkdir(parents=True, exist_ok=True)
    (HOOK_DIR / "sitecustomize.py").write_text(SITECUSTOMIZE)
    test_conf = DROPIN / "test.conf"
    test_conf.write_text(f"[Service]\nEnvironment=PYTHONPATH={HOOK_DIR}\n")
    systemctl("daemon-reload")
    yield
    test_conf.unlink()
    systemctl("daemon-reload")


def from_pid(pid: str, text: str) -> Callable[[dict[str, Any]], bool]:
    """A journal entry of process ``pid`` (its stderr too) whose message has ``text``."""
    return lambda e: e.get("_PID") == pid and text in message(e)


@inside
def test_inside_the_watchdog_restarts_a_daemon_whose_loop_is_stuck(
    loop_freezer: None, journal: Callable[..., Journal]
) -> None:
    j = journal()
    systemctl("start", UNIT)
    before = show("MainPID", "NRestarts")
    pid = before["MainPID"]
    # The hook is in this very process (not only in ExecStartPre's `lvsagent check`).
    j.wait_for("the hook in the daemon", from_pid(pid, f"{HOOK_TAG}: pid {pid} has the SIGUSR2"))
    assert int(proc_status(pid)["SigCgt"], 16) & (1 << (signal.SIGUSR2 - 1))
    assert control_answer(WAIT)  # the loop answers, before
    os.kill(int(pid), signal.SIGUSR2)
    j.wait_for("the loop blocked", from_pid(pid, f"{HOOK_TAG}: pid {pid} blocks its main thread"))
    # Stuck is the loop, not the process: it lives, and /metrics (its own thread) answers...
    assert proc_status(pid)["State"][0] in "RS", proc_status(pid)["State"]
    families = {f.name: f for f in text_string_to_metric_families(scrape())}
    samples = families["lvsagent_vrrp_state"].samples
    vi_1 = [x for x in samples if x.labels["vrrp_instance"] == "VI_1"]
    assert sum(x.value for x in vi_1) == 1.0, vi_1  # one state, whichever (it has just started)
    # ...while the control socket, served by the loop, takes the request and says nothing.
    assert control_answer(3.0) == b""
    assert show("MainPID")["MainPID"] == pid  # all this within WatchdogSec=10s
    j.wait_for(
        "systemd's watchdog verdict",
        lambda e: by_systemd(e)
        and (e.get("UNIT_RESULT") == "watchdog" or "Watchdog timeout" in message(e)),
    )
    j.wait_for("the restart", started)  # Restart=on-failure covers a watchdog timeout
    after = show("MainPID", "NRestarts")
    assert after["MainPID"] not in ("0", pid)
    assert int(after["NRestarts"]) == int(before["NRestarts"]) + 1
    assert state() == "active/running"
