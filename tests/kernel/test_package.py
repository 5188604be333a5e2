"""The Debian package under a real systemd: install, run box A, reload, stop, purge.

Two halves in one module, as test_systemd.py:

* on the HOST, ``test_the_package_under_systemd_pid1`` takes the .deb that
  ``make deb`` builds (a no-op when it is up to date), has apt fetch what
  installing it here would need (Debian's python3-systemd and
  python3-prometheus-client, not on this machine) into a cache, boots the lab
  with systemd as PID 1 (tests/kernel/systemd_boot.py) and runs this module's
  ``inside`` tests there;
* INSIDE, on the guest's overlay root (nothing reaches the host), the tests in
  order: ``apt-get install ./lvsagent_*.deb`` offline; box A's config
  (etc/box-a.toml, its interface renamed to a veth of the lab) in /etc/lvsagent;
  ``systemctl enable --now lvsagent``; READY, MASTER, the VIP and the IPVS
  service; ``systemctl reload`` with a valid and an invalid file; ``systemctl
  stop``; ``apt-get purge``, after which no user, unit or file of it is left.

The daemon runs as the package installed it: /usr/sbin/lvsagent, the code and
pyroute2 from /usr/lib/lvsagent, prometheus-client and systemd from Debian
(lvsagent_build_info says which versions).
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import re
import subprocess
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from lvsagent import __version__
from tests.kernel import uml
from tests.kernel.systemd_boot import inside_systemd_lab, run_guest_half

ROOT = Path(__file__).resolve().parents[2]
DEB = ROOT / "build" / "deb" / f"lvsagent_{__version__}_all.deb"
# apt's downloads for the guest: what installing the .deb on this machine's root needs.
ARCHIVES_ENV = "LVSAGENT_PACKAGE_ARCHIVES"
WAIT = 30.0
UNIT = "lvsagent.service"
CONFIG = Path("/etc/lvsagent/lvsagent.toml")
PROGRAM = "/usr/sbin/lvsagent"
PEER = "lvsagent-peer"
LINK = "lab0"
VIP = "172.16.0.30"  # etc/box-a.toml
BOX_A, BOX_B = "172.16.0.31", "172.16.0.32"  # its real servers: itself and box B
METRICS = "http://127.0.0.1:9650/metrics"

inside = pytest.mark.skipif(
    not inside_systemd_lab(),
    reason="runs under the lab's systemd: see test_the_package_under_systemd_pid1",
)


# ----- the host half ------------------------------------------------------------------------


def _fetch_dependencies(archives: Path) -> None:
    """apt downloads what installing the .deb here would add (the guest's root is this one).

    Afresh each time: an older download of a package beside a newer one would give the
    guest's apt two versions of it.
    """
    (archives / "partial").mkdir(parents=True, exist_ok=True)
    for old in archives.glob("*.deb"):
        old.unlink()
    cmd = [
        "apt-get", "install", "--download-only", "-y", "-q",
        "-o", f"Dir::Cache::archives={archives}", str(DEB),
    ]  # fmt: skip
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if subprocess.run(cmd, capture_output=True, env=env, check=False).returncode != 0:
        # No package lists yet (a fresh machine): read them once, then try again.
        subprocess.run(["apt-get", "update", "-q"], capture_output=True, check=True)
        result = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        assert result.returncode == 0, f"apt cannot fetch the package's dependencies\n{result}"


@pytest.mark.skipif(uml.inside_lab(), reason="boots a lab of its own: needs the host")
def test_the_package_under_systemd_pid1() -> None:
    # Up to date with the tree (a no-op after `make test`'s own `make deb`).
    built = subprocess.run(
        ["make", "-s", "--no-print-directory", "deb"], cwd=ROOT, capture_output=True, text=True
    )
    assert built.returncode == 0 and DEB.is_file(), f"make deb failed\n{built.stdout}{built.stderr}"
    archives = uml.cache_root() / "package-archives"
    _fetch_dependencies(archives)
    run_guest_half(__file__, timeout=300, env={**os.environ, ARCHIVES_ENV: str(archives)})


# ----- the guest half: helpers ---------------------------------------------------------------


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    return subprocess.run(
        args, check=check, capture_output=True, text=True, timeout=WAIT * 4, env=env
    )


def diagnosis() -> str:
    status = run("systemctl", "status", "--no-pager", "-l", UNIT, check=False).stdout
    logs = run("journalctl", "-u", UNIT, "--no-pager", "-n", "60", check=False).stdout
    return f"{status}\n{logs}"


def must(*args: str) -> str:
    result = run(*args, check=False)
    if result.returncode != 0:
        pytest.fail(f"{' '.join(args)}: exit {result.returncode}\n{result.stderr}\n{diagnosis()}")
    return result.stdout


def show(*props: str) -> dict[str, str]:
    out = run("systemctl", "show", UNIT, *(f"--property={p}" for p in props)).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def wait_until(what: str, condition: Callable[[], bool]) -> None:
    """For kernel and daemon state that no event announces to this process: re-check."""
    deadline = time.monotonic() + WAIT
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}\n{diagnosis()}")
        time.sleep(0.2)


def status() -> dict[str, object]:
    out = run(PROGRAM, "status", "--json", check=False).stdout
    try:
        data = json.loads(out)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def instance() -> dict[str, object]:
    instances = status().get("instances") or []
    assert isinstance(instances, list)
    return next((i for i in instances if i.get("name") == "VI_1"), {})


def vip_on_link() -> bool:
    return f"inet {VIP}/24" in run("ip", "-4", "addr", "show", "dev", LINK).stdout


def ipvs_service() -> bool:
    """VIP:80/tcp in the kernel's IPVS table (/proc/net/ip_vs: hex address and port)."""
    hexed = "".join(f"{int(octet):02X}" for octet in VIP.split(".")) + ":0050"
    return f"TCP  {hexed}" in Path("/proc/net/ip_vs").read_text()


def scrape() -> str:
    with urllib.request.urlopen(METRICS, timeout=WAIT) as reply:
        return str(reply.read().decode())


# ----- the guest half: the tests, in order ------------------------------------------------------


@inside
def test_inside_apt_installs_the_package_offline() -> None:
    # The lab has no network: apt gets the dependencies it must add as files beside the
    # package (fetched on the host), and resolves them as it would from a mirror.
    dependencies = sorted(str(p) for p in Path(os.environ[ARCHIVES_ENV]).glob("*.deb"))
    result = run(
        "apt-get", "install", "-y", "-q", str(DEB), *dependencies, check=False
    )  # fmt: skip
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    assert must(PROGRAM, "--version") == f"lvsagent {__version__}\n"
    # The user from sysusers, the unit in systemd's directory: installed, not enabled or started.
    assert pwd.getpwnam("lvsagent").pw_uid != 0
    assert Path("/lib/systemd/system/lvsagent.service").is_file()
    assert run("systemctl", "is-enabled", UNIT, check=False).stdout.strip() == "disabled"
    assert show("ActiveState")["ActiveState"] == "inactive"
    for path in (
        "/usr/share/doc/lvsagent/examples/lvsagent.example.toml",
        "/usr/share/doc/lvsagent/README.md",
        "/usr/share/lvsagent/grafana-lvsagent.json",
        "/usr/share/lvsagent/prometheus-lvsagent-rules.yml",
        "/usr/share/bash-completion/completions/lvsagent",
    ):
        assert Path(path).is_file(), path
    assert must("man", "-w", "8", "lvsagent").strip().endswith("man8/lvsagent.8.gz")
    assert must("man", "-w", "5", "lvsagent.toml").strip().endswith("man5/lvsagent.toml.5.gz")
    # The example config passes the installed check.
    example = "/usr/share/doc/lvsagent/examples/lvsagent.example.toml"
    assert run(PROGRAM, "check", "--config", example, check=False).returncode == 0


@inside
def test_inside_box_a_config_in_etc() -> None:
    """etc/box-a.toml on a veth whose other end is box B's namespace, root:lvsagent 0640."""
    must("ip", "netns", "add", PEER)
    must("ip", "link", "add", LINK, "type", "veth", "peer", "name", "eth0", "netns", PEER)
    must("ip", "addr", "add", f"{BOX_A}/24", "dev", LINK)
    must("ip", "link", "set", LINK, "up")
    must("ip", "netns", "exec", PEER, "ip", "addr", "add", f"{BOX_B}/24", "dev", "eth0")
    must("ip", "netns", "exec", PEER, "ip", "link", "set", "eth0", "up")
    text = (ROOT / "etc" / "box-a.toml").read_text()
    assert 'interface = "enp0s3"' in text
    CONFIG.write_text(text.replace('interface = "enp0s3"', f'interface = "{LINK}"'))
    os.chown(CONFIG, 0, grp.getgrnam("lvsagent").gr_gid)
    CONFIG.chmod(0o640)
    check = run(PROGRAM, "check", "--config", str(CONFIG), check=False)
    assert (check.returncode, check.stderr) == (0, ""), check  # lab0 exists: no warning


@inside
def test_inside_enable_now_is_ready_and_holds_the_vip() -> None:
    # Type=notify: returns once the daemon said READY=1.
    must("systemctl", "enable", "--now", UNIT)
    props = show("ActiveState", "SubState", "MainPID", "StatusText", "UnitFileState")
    assert (props["ActiveState"], props["SubState"]) == ("active", "running"), props
    assert props["UnitFileState"] == "enabled"
    assert "VI_1" in props["StatusText"]
    # Alone on the link: MASTER after master_down_interval, with the VIP and the service.
    wait_until("VI_1 MASTER", lambda: instance().get("state") == "MASTER")
    assert vip_on_link()
    assert ipvs_service()
    # What runs is the package's: Debian's prometheus-client, the vendored pyroute2.
    text = scrape()
    build = re.search(r"^lvsagent_build_info\{(.*)\} 1\.0$", text, re.M)
    assert build is not None, text
    labels = dict(re.findall(r'(\w+)="([^"]*)"', build.group(1)))
    assert labels["version"] == __version__
    assert labels["pyroute2_version"] == "0.9.7"  # debian/vendor.txt
    assert labels["prometheus_client_version"].startswith("0.16"), labels  # Debian 12's
    cmdline = Path(f"/proc/{props['MainPID']}/cmdline").read_bytes().split(b"\0")
    assert cmdline[:3] == [b"/usr/bin/python3", PROGRAM.encode(), b"run"], cmdline


@inside
def test_inside_reload_applies_a_valid_file_in_the_same_process() -> None:
    pid = show("MainPID")["MainPID"]
    good = CONFIG.read_text()
    CONFIG.write_text(good.replace("priority = 100", "priority = 110"))
    must("systemctl", "reload", UNIT)
    wait_until("priority 110", lambda: instance().get("priority") == 110)
    assert show("MainPID", "ActiveState") == {"MainPID": pid, "ActiveState": "active"}
    assert instance().get("state") == "MASTER" and vip_on_link()


@inside
def test_inside_reload_of_an_invalid_file_fails_and_changes_nothing() -> None:
    pid = show("MainPID")["MainPID"]
    good = CONFIG.read_text()
    try:
        CONFIG.write_text(good.replace("priority = 110", 'priority = "high"'))
        result = run("systemctl", "reload", UNIT, check=False)
        assert result.returncode != 0, f"reload of an invalid file succeeded\n{diagnosis()}"
        assert show("MainPID", "ActiveState") == {"MainPID": pid, "ActiveState": "active"}
        assert instance().get("priority") == 110
        assert (instance().get("state"), vip_on_link()) == ("MASTER", True)
    finally:
        CONFIG.write_text(good)


@inside
def test_inside_stop_releases_the_vip_and_keeps_the_kernel_state() -> None:
    """README: on SIGTERM the VIP goes, the loop guard is engaged, IPVS stays."""
    must("systemctl", "stop", UNIT)
    props = show("ActiveState", "Result")
    assert (props["ActiveState"], props["Result"]) == ("inactive", "success"), diagnosis()
    assert not vip_on_link()
    assert ipvs_service()
    table = must("nft", "list", "table", "ip", "lvsagent")
    assert "chain bypass" in table and f"{VIP}" in table, table
    assert Path("/run/lvsagent").is_dir()  # kept across stops: the saved sysctls


@inside
def test_inside_purge_leaves_nothing() -> None:
    files = [Path(p) for p in must("dpkg-query", "-L", "lvsagent").split() if p.startswith("/")]
    owned = [p for p in files if p.is_file()]  # not /lib and the like (usrmerge's links)
    assert len(owned) > 100  # the program, its code, the vendored pyroute2, docs, unit
    uid = pwd.getpwnam("lvsagent").pw_uid
    result = run("apt-get", "purge", "-y", "-q", "lvsagent", check=False)
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    assert run("dpkg-query", "-W", "lvsagent", check=False).returncode != 0
    assert [p for p in owned if p.exists()] == []
    for directory in (
        "/usr/lib/lvsagent",  # byte-compiled files included
        "/usr/share/lvsagent",
        "/usr/share/doc/lvsagent",
        "/etc/lvsagent",
        "/run/lvsagent",
    ):
        assert not Path(directory).exists(), directory
    with pytest.raises(KeyError):
        pwd.getpwnam("lvsagent")
    with pytest.raises(KeyError):
        grp.getgrnam("lvsagent")
    # No unit left, not even a link from `systemctl enable`.
    assert show("LoadState")["LoadState"] == "not-found"
    assert list(Path("/etc/systemd").rglob(f"{UNIT}*")) == []
    assert list(Path("/var/lib/systemd").rglob(f"{UNIT}*")) == []  # deb-systemd-helper
    # Nothing the user owned anywhere it could have written.
    for top in ("/etc", "/run", "/var/lib", "/var/log"):
        left = must("find", top, "-xdev", "-uid", str(uid))
        assert left == "", left
