"""A virtual address that is one of the box's own is refused, before anything changes.

Why: an instance starts in BACKUP and removes its virtual addresses; if one of them is
the interface's own (primary) address, the kernel deletes the addresses of that subnet
with it, and the box is left with none.  A VIP left behind by a killed agent must still
be removed at start: the rule that tells them apart is in lvsagent/vrrp/ownaddr.py.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.netns.conftest import Pair
from tests.netns.lab import Named, agent_config, namespaces, start_agent


def run_cli(ns: Named, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ip", "netns", "exec", ns.name, sys.executable, "-m", "lvsagent.cli", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def own_vip_config(pair: Pair, vip: str, extra: str = "") -> Path:
    return agent_config(pair.tmp / "b.toml", interface="eth0", priority=50, vip=vip, extra=extra)


def test_run_refuses_a_vip_that_is_the_primary_address(pair: Pair) -> None:
    pair.b.run("ip", "addr", "add", "10.99.0.3/24", "dev", "eth0")  # a secondary of the box
    before = pair.b.addresses("eth0")
    res = run_cli(pair.b, "run", "--config", str(own_vip_config(pair, "10.99.0.2/24")))
    assert res.returncode == 78, res.stderr
    assert "VI_1" in res.stderr and "10.99.0.2/24" in res.stderr and "eth0" in res.stderr
    assert "nothing was changed" in res.stderr
    assert "virtual_addresses" in res.stderr  # what to do: where to change it
    assert pair.b.addresses("eth0") == before == {"10.99.0.2/24", "10.99.0.3/24"}


def test_run_refuses_a_vip_that_is_the_vrrp_source(pair: Pair) -> None:
    pair.b.run("ip", "addr", "add", "10.99.0.3/24", "dev", "eth0")
    before = pair.b.addresses("eth0")
    cfg = own_vip_config(pair, "10.99.0.3/24", extra='unicast_src = "10.99.0.3"\n'
                         'unicast_peers = ["10.99.0.1"]')  # fmt: skip
    res = run_cli(pair.b, "run", "--config", str(cfg))
    assert res.returncode == 78, res.stderr
    # The config itself says so (a VIP equal to unicast_src), before any address is read.
    assert "virtual_addresses[0]" in res.stderr and "unicast_src" in res.stderr
    assert pair.b.addresses("eth0") == before


def test_run_refuses_a_vip_that_is_the_interfaces_source_address(pair: Pair) -> None:
    """No unicast_src: VRRP sends from the interface's own address; a VIP equal to its only
    one leaves it none to send from."""
    before = pair.b.addresses("eth0")
    res = run_cli(pair.b, "run", "--config", str(own_vip_config(pair, "10.99.0.2/32")))
    assert res.returncode == 78, res.stderr
    assert "eth0 has no IPv4 address of its own" in res.stderr
    assert "nothing was changed" in res.stderr
    assert pair.b.addresses("eth0") == before


def test_check_refuses_it_where_the_interface_exists_and_not_elsewhere(pair: Pair) -> None:
    cfg = own_vip_config(pair, "10.99.0.2/24")
    pair.b.run("ip", "addr", "add", "10.99.0.3/24", "dev", "eth0")
    here = run_cli(pair.b, "check", str(cfg))
    assert here.returncode == 78, here.stderr
    # file:line: key: message, as every config problem.
    assert f"{cfg}:" in here.stderr and "vrrp_instance[0].virtual_addresses" in here.stderr
    assert "10.99.0.2/24" in here.stderr and "eth0" in here.stderr
    with namespaces("elsewhere") as (other,):
        there = run_cli(other, "check", str(cfg))
    assert there.returncode == 0, there.stderr


def test_a_leftover_vip_alone_in_its_subnet_is_still_removed_at_start(pair: Pair) -> None:
    pair.b.run("ip", "addr", "add", "10.99.0.100/32", "dev", "eth0")
    cfg = own_vip_config(pair, "10.99.0.100/32")
    db = pair.track(start_agent(pair.b, cfg, "agent-b"))
    db.wait_for(r"INIT -> BACKUP", 5)
    pair.b.wait_address("eth0", "10.99.0.100", present=False, timeout=2)
    assert pair.b.addresses("eth0") == {"10.99.0.2/24"}


@pytest.mark.parametrize(
    ("extra", "why"),
    [
        ("", "VRRP sends from"),  # 10.99.0.2 is the source: the first address not a VIP
        ('unicast_src = "10.99.0.3"\nunicast_peers = ["10.99.0.1"]', "primary address of"),
    ],
)
def test_a_reload_that_adds_the_primary_address_as_a_vip_leaves_it_alone(
    pair: Pair, extra: str, why: str
) -> None:
    pair.b.run("ip", "addr", "add", "10.99.0.3/24", "dev", "eth0")
    cfg = own_vip_config(pair, "10.99.0.100/24", extra=extra)
    db = pair.track(start_agent(pair.b, cfg, "agent-b", log_level="info"))
    db.wait_for(r"INIT -> BACKUP", 5)
    db.wait_for(r"lvsagent started", 5)
    mark = db.mark()
    cfg.write_text(cfg.read_text().replace('"10.99.0.100/24"', '"10.99.0.100/24", "10.99.0.2/24"'))
    db.signal(signal.SIGHUP)
    line = db.wait_for(r"virtual address 10\.99\.0\.2/24 is ", 5, after=mark)
    assert why in line and "not managing it" in line
    # Two read-backs (2 s apart) would have removed it by now, had it been managed.
    db.assert_quiet(r"removed virtual address 10\.99\.0\.2", 4.5, after=mark)
    assert {"10.99.0.2/24", "10.99.0.3/24"} <= pair.b.addresses("eth0")
