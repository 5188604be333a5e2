"""lvsagent on Debian's packaged kernel, where everything it needs is a module not yet loaded.

Runs only inside the Debian-kernel guest (``make test-distro``), first in its pytest run: the
cases depend on what is loaded, and say so. The first checks the premise (Debian builds ip_vs,
nf_tables, nft_redir, nf_nat and nf_conntrack as modules, and the guest booted with none of
them); then an agent started as the systemd unit runs it (user nobody, CAP_NET_ADMIN and
CAP_NET_RAW only) gets all of them loaded by the kernel on demand, in backup_only mode, whose
sysctl needs ip_vs before anything else; then, with ip_vs blacklisted (so the kernel no longer
loads it on demand), an unprivileged agent names the modprobe to run, keeps VRRP running and
programs IPVS once an operator ran it, and a root agent loads ip_vs itself, as keepalived does.

Addresses: 10.97.0.0/24 on a veth pair inside namespaces made here.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.distro.guest import (
    LVSAGENT_MODULES,
    blacklisted,
    distro_only,
    loaded,
    module_names,
    service_dir,
    shared_dir,
    start_agent_as,
    unload,
)
from tests.netns.lab import Netns, namespaces, veth

pytestmark = [distro_only(__file__), pytest.mark.timeout(300)]

# The daemon's import alone takes 10-20 s under TCG: these bound a start, not a transition.
START = 120.0
# Its clean stop (decommission included) is bounded at 9 s of work, then the interpreter exits:
# more than the lab's 10 s before SIGKILL under TCG.
STOP = 60.0
LOADED_ON_DEMAND = r"kernel: modules loaded on demand by the kernel: (.*)"


def config(directory: Path, mode: str) -> Path:
    path = directory / "lvsagent.toml"
    path.write_text(f"""[global]
loop_guard = "{mode}"
state_dir = "{directory}/state"
control_socket = "{directory}/control.sock"
metrics_listen = ""
decommission_on_stop = true
ipvs_resync_interval = 1

[[vrrp_instance]]
name = "VI_1"
interface = "eth0"
vrid = 61
priority = 200
virtual_addresses = ["10.97.0.100/24"]

[[virtual_server]]
address = "10.97.0.100"
port = 80
protocol = "tcp"
scheduler = "rr"
[virtual_server.health]
type = "none"
[[virtual_server.real_server]]
address = "10.97.0.1"
port = 80
[[virtual_server.real_server]]
address = "10.97.0.2"
port = 80
""")
    path.chmod(0o644)
    return path


@pytest.fixture
def box() -> Iterator[Netns]:
    with namespaces("box", "peer") as (ns, peer):
        veth(ns, "eth0", "10.97.0.1/24", peer, "eth0", "10.97.0.2/24")
        yield ns


def test_debian_builds_them_as_modules_and_the_guest_boots_without_them() -> None:
    release = subprocess.run(["uname", "-r"], capture_output=True, text=True).stdout.strip()
    dep = Path(f"/lib/modules/{release}/modules.dep").read_text()
    as_modules = {m for m in LVSAGENT_MODULES if re.search(rf"/{m}\.ko(\.\w+)?:", dep)}
    assert as_modules == set(LVSAGENT_MODULES)
    at_boot = module_names((shared_dir() / "modules-at-boot").read_text())
    assert at_boot, "modules-at-boot is empty: guest-init.sh did not record /proc/modules"
    assert set(LVSAGENT_MODULES) & at_boot == set()


def test_the_service_user_gets_every_module_loaded_by_the_kernel_on_demand(box: Netns) -> None:
    """backup_only: its sysctl net.ipv4.vs.backup_only exists only once ip_vs is loaded, and
    is written before any IPVS request; lvsagent asks for IPVS first."""
    before = set(LVSAGENT_MODULES) & loaded()
    assert before == set(), f"already loaded (an earlier test?): {sorted(before)}"
    with service_dir() as directory:
        agent = start_agent_as(box, config(directory, "backup_only"), "agent", as_service=True)
        try:
            line = agent.wait_for(LOADED_ON_DEMAND, START)
            agent.wait_for(r"ipvs: start: done, 3 change\(s\) applied", START)
            agent.wait_for(r"-> MASTER", 30)
            on_demand = set(re.search(LOADED_ON_DEMAND, line).group(1).split())  # type: ignore[union-attr]
            print(f"\ndistro: the service user's agent: {line.split(' INFO ', 1)[-1]}")
            assert set(LVSAGENT_MODULES) <= on_demand, on_demand
            assert "ip_vs_rr" in loaded()  # the service's scheduler, with its first service
            # Written (1) at start, before any IPVS request; 0 now that the agent is MASTER.
            assert agent.wait_for(r"sysctl net\.ipv4\.vs\.backup_only set: 0 -> 1", 1)
            assert box.run("sysctl", "-n", "net.ipv4.vs.backup_only").stdout.strip() == "0"
            assert "-A -t 10.97.0.100:80 -s rr" in box.run("ipvsadm", "-Sn").stdout
            assert "redirect" in box.run("nft", "list", "table", "ip", "lvsagent").stdout
            assert not [x for x in agent.lines if "kernel: not available" in x]
        finally:
            status = agent.stop(STOP)
    assert status == 0, agent.lines[-20:]
    assert set(LVSAGENT_MODULES) <= loaded()


@pytest.fixture
def without_ip_vs() -> Iterator[None]:
    """ip_vs unloaded (the agent above decommissioned its services and sync daemon, so
    nothing holds it) and blacklisted: the kernel no longer loads it on demand."""
    unload("ip_vs_rr", "ip_vs")
    with blacklisted("ip_vs"):
        yield


@pytest.mark.usefixtures("without_ip_vs")
def test_the_service_user_names_the_modprobe_to_run_and_keeps_vrrp(box: Netns) -> None:
    with service_dir() as directory:
        agent = start_agent_as(box, config(directory, "bypass"), "agent", as_service=True)
        try:
            line = agent.wait_for(r"kernel: not available: IPVS", START)
            assert "Fix: run `modprobe -a ip_vs` as root" in line, line
            assert "lacks CAP_SYS_MODULE" in line, line
            assert "/etc/modules-load.d/lvsagent.conf" in line, line
            agent.wait_for(r"-> MASTER", 30)  # as keepalived: VRRP runs without IPVS
            assert "ip_vs" not in loaded()
            # The operator follows the advice; the reconciler's retry needs no restart.
            subprocess.run(["modprobe", "-a", "ip_vs"], check=True)
            agent.wait_for(r"ipvs: \w+: done, 3 change\(s\) applied", 30)
        finally:
            status = agent.stop(STOP)
    assert status == 0, agent.lines[-20:]


@pytest.mark.usefixtures("without_ip_vs")
def test_root_loads_what_the_kernel_would_not_as_keepalived_does(box: Netns) -> None:
    with service_dir() as directory:
        agent = start_agent_as(box, config(directory, "bypass"), "agent", as_service=False)
        try:
            agent.wait_for(r"kernel: modules loaded with `modprobe -a ip_vs`", START)
            agent.wait_for(r"ipvs: start: done, 3 change\(s\) applied", START)
            assert not [x for x in agent.lines if "kernel: not available" in x]
        finally:
            status = agent.stop(STOP)
    assert status == 0, agent.lines[-20:]
