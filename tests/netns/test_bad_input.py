"""Bad input to real agents: refused with the right exit code and words, nothing changed.

Why: under systemd, exit 78 (and 77) is not retried while 71 or a traceback (1) is,
every second; the journal line is all the operator has.  A reload of a bad file must
show as refused in `lvsagent status` and in /metrics, and must not stall VRRP.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.netns.conftest import Pair
from tests.netns.lab import ROOT, Netns, agent_config, sh, start_agent

VIP = "10.99.0.100"
METRICS = "127.0.0.1:9650"  # the namespace's own loopback
NOBODY = 65534
SERVICE = f"""
[[virtual_server]]
address = "{VIP}"
port = 80
[[virtual_server.real_server]]
address = "10.99.0.1"
port = 80
"""


def run_agent(ns: Netns, config: Path, *wrapper: str) -> subprocess.CompletedProcess[str]:
    """``lvsagent run`` in ``ns`` until it exits (these configs never get as far as running)."""
    return ns.run(
        *wrapper, sys.executable, "-m", "lvsagent.cli", "run", "--config", str(config),
        check=False,
    )  # fmt: skip


def with_state_dir(config: Path, state_dir: Path) -> Path:
    """The config with ``state_dir`` set to ``state_dir`` (whatever the lab put there)."""
    text = re.sub(r'(?m)^state_dir = ".*"$', f'state_dir = "{state_dir}"', config.read_text())
    assert f'state_dir = "{state_dir}"' in text
    config.write_text(text)
    return config


def with_global(config: Path, old: str, new: str) -> Path:
    text = config.read_text()
    assert old in text
    config.write_text(text.replace(old, new, 1))
    return config


# --- reload --------------------------------------------------------------------------


def test_a_reload_of_a_file_that_crashed_the_parser_shows_as_refused(pair: Pair) -> None:
    ca, _ = pair.configs(version=3, advert_int=0.1)
    with_global(ca, 'metrics_listen = ""', f'metrics_listen = "{METRICS}"')
    da = pair.track(start_agent(pair.a, ca, "agent-a"))
    da.wait_for(r"-> MASTER", 10)
    mark = da.mark()
    ca.write_text(ca.read_text() + "odd = " + "[" * 600 + "]" * 600 + "\n")
    da.signal(signal.SIGHUP)
    da.wait_for(r"reload: .*a\.toml:\d+: values nested too deeply", 5, after=mark)
    da.wait_for(r"reload: .* has 1 error\(s\); still running the previous config", 5, after=mark)
    status = pair.a.run(
        sys.executable, "-m", "lvsagent.cli", "status", "--socket", str(ca.with_suffix(".sock"))
    ).stdout
    assert re.search(r"last reload .*: REFUSED, still running the previous config", status)
    scrape = pair.a.run(
        sys.executable, "-c",
        f"import urllib.request; print(urllib.request.urlopen('http://{METRICS}/metrics')"
        ".read().decode())",
    ).stdout  # fmt: skip
    assert "lvsagent_config_last_reload_successful 0.0" in scrape


def test_a_fifo_config_is_refused_at_once_and_adverts_go_on(pair: Pair) -> None:
    # v3 at 0.1 s: B's Master_Down_Interval is 0.33 s, so A's loop blocked on the file
    # for a third of a second shows as a takeover by B.
    ca, cb = pair.configs(version=3, advert_int=0.1)
    da, db = pair.settled_pair(ca, cb)
    mark_a, mark_b = da.mark(), db.mark()
    ca.unlink()
    os.mkfifo(ca)  # nobody ever writes to it
    da.signal(signal.SIGHUP)
    da.wait_for(r"reload: .*a\.toml: not a regular file \(a FIFO\)", 5, after=mark_a)
    db.assert_quiet(r"-> MASTER", 1.0, after=mark_b)
    assert pair.a.has_address("eth0", VIP) and not pair.b.has_address("eth0", VIP)


# --- exit codes at start ---------------------------------------------------------------


def test_files_that_crashed_the_parser_exit_78_and_change_nothing(pair: Pair) -> None:
    deep = pair.tmp / "deep.toml"
    deep.write_text("a = " + "{b = " * 400 + "1" + "}" * 400 + "\n")
    big = pair.tmp / "int.toml"
    big.write_text("[global]\nrouter_id = " + "7" * 5000 + "\n")
    before = pair.a.addresses("eth0")
    cases = (
        ("/dev/zero", "not a regular file (a character device)"),
        (str(deep), "deep.toml:1: values nested too deeply"),
        (str(big), "int.toml:2: an integer with more than 4300 digits"),
    )
    for path, says in cases:
        res = run_agent(pair.a, Path(path))
        assert res.returncode == 78, res.stderr
        assert says in res.stderr and "nothing was changed" in res.stderr
        assert "Traceback" not in res.stderr
    assert pair.a.addresses("eth0") == before


def test_unicast_src_not_on_the_box_exits_78_naming_address_and_interface(pair: Pair) -> None:
    config = agent_config(
        pair.tmp / "a.toml", interface="eth0", priority=100,
        extra='unicast_src = "10.99.0.77"\nunicast_peers = ["10.99.0.2"]',
    )  # fmt: skip
    res = run_agent(pair.a, config)
    assert res.returncode == 78, res.stderr
    assert "10.99.0.77" in res.stderr and "eth0" in res.stderr
    assert "nothing was changed" in res.stderr


def test_a_missing_tracked_interface_is_named_as_missing(pair: Pair) -> None:
    config = agent_config(
        pair.tmp / "a.toml", interface="eth0", priority=100, extra='track_interfaces = ["nosuch0"]'
    )
    da = pair.track(start_agent(pair.a, config, "agent-a"))
    line = da.wait_for(r"-> FAULT", 10)
    assert "interface nosuch0 does not exist" in line


# --- the state directory -----------------------------------------------------------------


@contextmanager
def public_dir() -> Iterator[Path]:
    """A 0755 directory other users can read (pytest's tmp_path is 0700)."""
    path = Path(tempfile.mkdtemp(prefix="lvst-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        sh("rm", "-rf", str(path))


@contextmanager
def full_tmpfs(where: Path) -> Iterator[Path]:
    """A tiny tmpfs at ``where``, filled to the last byte."""
    where.mkdir(mode=0o700)
    sh("mount", "-t", "tmpfs", "-o", "size=16k,mode=0700", "lvstest", str(where))
    try:
        sh("dd", "if=/dev/zero", f"of={where / 'fill'}", "bs=4096", check=False)
        yield where
    finally:
        sh("umount", str(where))


def guarded_config(pair: Pair, state_dir: Path, name: str = "a.toml") -> Path:
    """A config with a virtual server: the loop guard saves the sysctls it changes."""
    config = agent_config(pair.tmp / name, interface="eth0", priority=100)
    return with_state_dir(config, state_dir)


def test_a_full_state_dir_names_the_file_and_leaves_no_temporary(pair: Pair) -> None:
    with full_tmpfs(pair.tmp / "full") as state:
        config = guarded_config(pair, state)
        config.write_text(config.read_text() + SERVICE)
        res = run_agent(pair.a, config)
        assert res.returncode == 73, res.stderr
        assert f"{state}/sysctl-saved.json" in res.stderr
        assert "No space left on device (ENOSPC)" in res.stderr
        # The agent's lock file (empty: no room for its PID) and nothing half-written.
        assert sorted(p.name for p in state.iterdir()) == ["fill", "lvsagent.pid"]
    assert pair.a.run("sysctl", "-n", "net.ipv4.ip_forward").stdout.strip() == "0"


def test_an_unwritable_state_dir_names_it_and_its_errno(pair: Pair) -> None:
    # As the unit runs it: not root, with CAP_NET_ADMIN and CAP_NET_RAW only.
    as_service = (
        "setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
        "--inh-caps=+net_admin,+net_raw", "--ambient-caps=+net_admin,+net_raw",
    )  # fmt: skip
    with public_dir() as public:
        state = public / "state"
        state.mkdir(mode=0o755)  # root's: readable, not writable by nobody
        config = agent_config(public / "a.toml", interface="eth0", priority=100)
        with_state_dir(config, state)
        config.write_text(config.read_text() + SERVICE)
        config.chmod(0o644)
        res = run_agent(pair.a, config, *as_service)
    assert res.returncode == 73, res.stderr
    # The first file it needs there is its lock.
    assert f"cannot open {state}/lvsagent.pid: Permission denied (EACCES)" in res.stderr
    assert f"uid {NOBODY}" in res.stderr
    assert "CAP_NET_ADMIN" not in res.stderr


def test_a_symlinked_state_dir_of_another_user_is_refused(pair: Pair) -> None:
    real = pair.tmp / "real"
    real.mkdir(mode=0o700)
    link = pair.tmp / "state"
    link.symlink_to(real)
    os.lchown(link, NOBODY, NOBODY)  # planted by someone else
    config = guarded_config(pair, link)
    config.write_text(config.read_text() + SERVICE)
    res = run_agent(pair.a, config)
    assert res.returncode == 73, res.stderr
    assert f"state_dir {link} is not safe to use" in res.stderr
    assert f"symlink owned by uid {NOBODY}" in res.stderr
    assert list(real.iterdir()) == []
    assert pair.a.run("sysctl", "-n", "net.ipv4.ip_forward").stdout.strip() == "0"


def test_check_reports_every_hostile_key_on_one_printable_line_each(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[global]\n"x\\nforged: line" = 1\n' + "[[vrrp_instance]]\n")
    res = subprocess.run(
        [sys.executable, "-m", "lvsagent.cli", "check", str(bad)],
        capture_output=True, text=True, check=False, cwd=str(ROOT),
    )  # fmt: skip
    assert res.returncode == 78
    lines = res.stderr.splitlines()
    assert all(line.startswith(f"{bad}:") or line.startswith("lvsagent:") for line in lines)
    assert any('global.x\\nforged: line: unknown key' in line for line in lines)
