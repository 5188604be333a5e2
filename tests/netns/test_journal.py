"""Structured logging read back from a real journald.

journald runs standalone in a private mount namespace:
``unshare -m`` with tmpfs on /run/systemd and /run/log, so its sockets and its
volatile journal exist only there and the host's logs are untouched (a
drop-in in that tmpfs sets Storage=volatile and turns off kmsg and
forwarding).  A small "agent" process logs through lvsagent's handler, its
stderr a file whose device:inode is in JOURNAL_STREAM, exactly as systemd
starts a service; the entries are then read back with ``journalctl -D`` and
the filters an operator would type.

This module is also the program that runs inside the namespace
(``python -m tests.netns.test_journal --inside DIR``): it prints what
journalctl found as one JSON document on stdout.
"""

from __future__ import annotations

import json
import os
import select
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
JOURNALD = "/lib/systemd/systemd-journald"
WAIT = 30.0

DROP_IN = """[Journal]
Storage=volatile
ReadKMsg=no
ForwardToSyslog=no
ForwardToKMsg=no
ForwardToConsole=no
ForwardToWall=no
"""

# The "agent": what the daemon's transition, health and reload lines look like.
AGENT = """
import logging
from lvsagent.observe.journal import fields, setup_logging

setup_logging("info")
vrrp = logging.getLogger("lvsagent.vrrp")
vrrp.warning(
    "VI_1 (vrid 51 on eth0): BACKUP -> MASTER (no advert from master for 3.6 s)",
    extra=fields(instance="VI_1", state="MASTER", old_state="BACKUP", event="transition"),
)
vrrp.warning(
    "VI_2 (vrid 52 on eth1): MASTER -> BACKUP (higher priority 200 from 10.99.0.2)",
    extra=fields(instance="VI_2", state="BACKUP", old_state="MASTER", event="transition"),
)
logging.getLogger("lvsagent.health").error(
    "RS 10.99.0.20:80 of 10.99.0.100:80/tcp DOWN (connect refused, 3 of 3)",
    extra=fields(event="health", service="10.99.0.100:80/tcp", rs="10.99.0.20:80", state="DOWN"),
)
logging.getLogger("lvsagent").info("reload: applied", extra=fields(event="reload"))
"""

PLAIN = """
import logging
from lvsagent.observe.journal import fields, setup_logging

setup_logging("info")
logging.getLogger("lvsagent").warning("plain line", extra=fields(event="plain"))
"""


def _run_agent(code: str, stderr_path: Path, journal_stream: bool) -> int:
    """Run ``code`` with stderr to a file; as systemd would, name that file in JOURNAL_STREAM."""
    env = {k: v for k, v in os.environ.items() if k not in ("JOURNAL_STREAM", "LVSAGENT_LOG")}
    with open(stderr_path, "w") as err:
        if journal_stream:
            st = os.fstat(err.fileno())
            env["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"
        proc = subprocess.Popen([sys.executable, "-c", code], stderr=err, env=env, cwd=ROOT)
        assert proc.wait(WAIT) == 0
    return proc.pid


def _journalctl(directory: str, *matches: str) -> list[dict[str, Any]]:
    out = subprocess.run(
        ["journalctl", "-D", directory, "-o", "json", "--no-pager", *matches],
        check=True,
        capture_output=True,
        text=True,
        timeout=WAIT,
    ).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def inside(workdir: Path) -> dict[str, Any]:
    """In the private mount namespace: journald up, two agents, what journalctl reads back."""
    for where in ("/run/systemd", "/run/log"):
        subprocess.run(["mount", "-t", "tmpfs", "tmpfs", where], check=True)
    os.makedirs("/run/systemd/journald.conf.d")
    Path("/run/systemd/journald.conf.d/lvsagent-test.conf").write_text(DROP_IN)
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind("/run/systemd/test-notify")
    journald = subprocess.Popen(
        [JOURNALD], env={**os.environ, "NOTIFY_SOCKET": "/run/systemd/test-notify"}
    )
    try:
        # journald is Type=notify: READY=1 means its sockets are open.
        while True:
            ready, _, _ = select.select([notify], [], [], WAIT)
            assert ready, "journald never said READY=1"
            if b"READY=1" in notify.recv(4096).split(b"\n"):
                break
        agent = _run_agent(AGENT, workdir / "agent.stderr", journal_stream=True)
        plain = _run_agent(PLAIN, workdir / "plain.stderr", journal_stream=False)
        # Everything sent before this is processed and written when it returns.
        subprocess.run(["journalctl", "--sync"], check=True, timeout=WAIT)
        (machine,) = os.listdir("/run/log/journal")
        directory = f"/run/log/journal/{machine}"
        return {
            "agent_pid": agent,
            "plain_pid": plain,
            "ours": _journalctl(directory, "SYSLOG_IDENTIFIER=lvsagent"),
            "masters": _journalctl(directory, "LVSAGENT_INSTANCE=VI_1", "LVSAGENT_STATE=MASTER"),
            "rs": _journalctl(directory, "LVSAGENT_RS=10.99.0.20:80"),
            "plain": _journalctl(directory, "LVSAGENT_EVENT=plain"),
        }
    finally:
        journald.terminate()
        journald.wait(WAIT)
        notify.close()


@pytest.fixture(scope="module")
def readback(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    if not os.access(JOURNALD, os.X_OK):
        pytest.skip(f"{JOURNALD} is not installed")
    workdir = tmp_path_factory.mktemp("journal")
    proc = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "--",
         sys.executable, "-m", "tests.netns.test_journal", "--inside", str(workdir)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout)
    result["agent_stderr"] = (workdir / "agent.stderr").read_text()
    result["plain_stderr"] = (workdir / "plain.stderr").read_text()
    return result


def test_under_journal_stream_nothing_goes_to_stderr(readback: dict[str, Any]) -> None:
    assert readback["agent_stderr"] == ""
    assert len(readback["ours"]) == 4


def test_an_operator_filters_transitions_by_instance_and_state(readback: dict[str, Any]) -> None:
    (entry,) = readback["masters"]
    assert entry["MESSAGE"].startswith("VI_1 (vrid 51 on eth0): BACKUP -> MASTER")
    assert entry["LVSAGENT_OLD_STATE"] == "BACKUP"
    assert entry["LVSAGENT_EVENT"] == "transition"
    assert entry["PRIORITY"] == "4"
    assert entry["SYSLOG_IDENTIFIER"] == "lvsagent"
    assert entry["LOGGER"] == "lvsagent.vrrp"
    assert entry["CODE_FUNC"] == "<module>"
    assert entry["CODE_LINE"].isdigit()
    # journald's own trusted field: this came over the native socket from the agent.
    assert entry["_PID"] == str(readback["agent_pid"])


def test_health_entries_carry_the_real_server(readback: dict[str, Any]) -> None:
    (entry,) = readback["rs"]
    assert entry["LVSAGENT_SERVICE"] == "10.99.0.100:80/tcp"
    assert entry["LVSAGENT_EVENT"] == "health"
    assert entry["PRIORITY"] == "3"


def test_events_are_all_there(readback: dict[str, Any]) -> None:
    events = [e.get("LVSAGENT_EVENT") for e in readback["ours"]]
    assert events == ["transition", "transition", "health", "reload"]


def test_without_journal_stream_it_is_plain_stderr(readback: dict[str, Any]) -> None:
    assert readback["plain"] == []
    assert readback["plain_stderr"].endswith(" lvsagent WARNING plain line\n")


if __name__ == "__main__":
    if sys.argv[1:2] != ["--inside"] or len(sys.argv) != 3:
        sys.exit("usage: python -m tests.netns.test_journal --inside DIR (in a private mount ns)")
    print(json.dumps(inside(Path(sys.argv[2]))))
