"""Bad input, bad config, stale and drifting kernel state, interface faults."""

from __future__ import annotations

import subprocess
import sys

from tests.netns.conftest import Pair
from tests.netns.lab import ROOT, agent_config, start_agent, veth

VIP = "10.99.0.100"


def test_invalid_packet_flood_changes_nothing_and_delays_nothing(pair: Pair) -> None:
    # v3 at 0.1 s: B's Master_Down_Interval is 0.33 s, so an advert A fails to
    # send on time for a third of a second shows up as a takeover by B.
    da, db = pair.settled_pair(*pair.configs(version=3, advert_int=0.1))
    mark_a, mark_b = da.mark(), db.mark()
    out = pair.b.run(sys.executable, "-m", "tests.netns.flood", "eth0", "10.99.0.2", "40000")
    assert out.stdout.strip() == "sent 40000"
    for reason in (
        "ip_ttl_err",
        "checksum_err",
        "vrid_err",
        "packet_len_err",
        "version_err",
        "invalid_type_rcvd",
    ):
        da.wait_for(f"discarding VRRP packet: {reason}", 5, after=mark_a)
    db.assert_quiet(r"-> ", 1.0, after=mark_b)
    assert not any("->" in line for line in da.lines[mark_a:])
    assert pair.a.has_address("eth0", VIP) and not pair.b.has_address("eth0", VIP)


def test_invalid_config_is_refused_and_nothing_changes(pair: Pair) -> None:
    bad = pair.tmp / "bad.toml"
    bad.write_text(
        '[[vrrp_instance]]\nname = "VI_1"\ninterface = "eth0"\nvrid = 300\n'
        'virtual_addresses = ["10.99.0.300"]\n'
    )
    pair.a.run("ip", "addr", "add", f"{VIP}/24", "dev", "eth0")
    before = pair.a.addresses("eth0")
    res = pair.a.run(sys.executable, "-m", "lvsagent.cli", "run", "--config", str(bad), check=False)
    assert res.returncode == 78
    assert "bad.toml:4" in res.stderr and "vrid" in res.stderr
    assert "10.99.0.300" in res.stderr and "nothing was changed" in res.stderr
    assert pair.a.addresses("eth0") == before


def test_missing_interface_is_refused_and_nothing_changes(pair: Pair) -> None:
    cfg = agent_config(
        pair.tmp / "a.toml", interface="eth0", priority=100, extra='track_interfaces = ["nosuch0"]'
    )
    cfg2 = agent_config(pair.tmp / "a2.toml", interface="eth9", priority=100)
    pair.a.run("ip", "addr", "add", f"{VIP}/24", "dev", "eth0")
    before = pair.a.addresses("eth0")
    res = pair.a.run(
        sys.executable,
        "-m",
        "lvsagent.cli",
        "run",
        "--config",
        str(cfg2),
        check=False,
    )
    assert res.returncode == 78, res.stderr
    assert "interface eth9 does not exist" in res.stderr
    assert pair.a.addresses("eth0") == before
    del cfg


def test_check_verb_reports_every_error(tmp_path: object) -> None:
    res = subprocess.run(
        [sys.executable, "-m", "lvsagent.cli", "check", str(ROOT / "tests/netns/nosuch.toml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert res.returncode == 78 and "cannot read" in res.stderr
    ok = subprocess.run(
        [sys.executable, "-m", "lvsagent.cli", "check", str(ROOT / "etc/box-a.toml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert ok.returncode == 0, ok.stderr


def test_stale_vip_is_cleared_on_start(pair: Pair) -> None:
    pair.b.run("ip", "addr", "add", f"{VIP}/24", "dev", "eth0")
    ca = agent_config(pair.tmp / "a.toml", interface="eth0", priority=100)
    cb = agent_config(pair.tmp / "b.toml", interface="eth0", priority=50)
    da = pair.track(start_agent(pair.a, ca, "agent-a"))
    db = pair.track(start_agent(pair.b, cb, "agent-b"))
    db.wait_for(r"INIT -> BACKUP", 5)
    db.wait_for(rf"removed virtual address {VIP}/24", 2)
    assert not pair.b.has_address("eth0", VIP)
    da.wait_for(r"-> MASTER", 10)


def test_vip_removed_by_hand_is_restored(pair: Pair) -> None:
    ca = agent_config(
        pair.tmp / "a.toml", interface="eth0", priority=100, version=3, advert_int=0.1
    )
    da = pair.track(start_agent(pair.a, ca, "agent-a"))
    da.wait_for(r"-> MASTER", 5)
    pair.a.wait_address("eth0", VIP, present=True, timeout=2)
    mark = da.mark()
    pair.a.run("ip", "addr", "del", f"{VIP}/24", "dev", "eth0")
    da.wait_for(rf"added virtual address {VIP}/24", 5, after=mark)
    pair.a.wait_address("eth0", VIP, present=True, timeout=2)


def test_tracked_interface_down_means_fault_and_handover(pair: Pair) -> None:
    # A second link on A, whose loss must put A's instance in FAULT.
    veth(pair.a, "up0", "10.98.0.1/24", pair.b, "up0", "10.98.0.2/24")
    ca, cb = pair.configs(version=3, advert_int=0.1, a_extra='track_interfaces = ["up0"]')
    da, db = pair.settled_pair(ca, cb)
    mark_a, mark_b = da.mark(), db.mark()
    pair.a.run("ip", "link", "set", "up0", "down")
    assert "interface up0 down" in da.wait_for(r"MASTER -> FAULT", 3, after=mark_a)
    assert "priority 0" in db.wait_for(r"BACKUP -> MASTER", 3, after=mark_b)
    pair.a.wait_address("eth0", VIP, present=False, timeout=2)
    mark_a, mark_b = da.mark(), db.mark()
    pair.a.run("ip", "link", "set", "up0", "up")
    da.wait_for(r"FAULT -> BACKUP", 3, after=mark_a)
    da.wait_for(r"BACKUP -> MASTER", 3, after=mark_a)
    db.wait_for(r"MASTER -> BACKUP", 3, after=mark_b)
