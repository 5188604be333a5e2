"""The loop-guard, sync-daemon and real-server tracking keys: values, and one rule each."""

from __future__ import annotations

import ipaddress

import pytest

from lvsagent.config.loader import format_problems
from lvsagent.config.schema import TrackRealServer
from tests.unit.configs import GLOBAL, INSTANCE, REAL, SECOND, SERVICE, load, problems_of

RS = INSTANCE + SERVICE + REAL
MARKED = """
[[virtual_server]]
address = "10.0.0.100"
port = 80
fwmark = 3
[[virtual_server.real_server]]
address = "10.0.0.1"
port = 80
"""


def test_guard_globals_take_schema_types() -> None:
    config = load(
        GLOBAL
        + 'peer_mac = "08:00:27:E1:3C:C5"\ndecommission_on_stop = true\nstate_dir = "/var/lib/x"\n'
        + 'loop_guard = "backup_only"\nipvs_sync_interface = "eth1"\nipvs_sync_id = 7\n'
        + RS
    )
    g = config.global_
    assert g.peer_mac == "08:00:27:e1:3c:c5"  # one spelling, whatever the operator typed
    assert (g.decommission_on_stop, g.state_dir) == (True, "/var/lib/x")
    assert (g.ipvs_sync_interface, g.ipvs_sync_id) == ("eth1", 7)


def test_fwmark_guard_takes_address_port_and_mark() -> None:
    config = load(GLOBAL + 'loop_guard = "fwmark"\n' + INSTANCE + MARKED)
    (vs,) = config.virtual_servers
    assert (vs.fwmark, vs.address, vs.port) == (3, ipaddress.IPv4Address("10.0.0.100"), 80)
    assert vs.label == "fwmark 3 (10.0.0.100:80/tcp)"


def test_track_real_servers_bare_and_weighted() -> None:
    config = load(
        INSTANCE.replace(
            'vrid = 51\n',
            'vrid = 51\ntrack_real_servers = ["10.0.0.1:80", '
            '{ address = "10.0.0.1:8080", weight = -60 }]\n',
        )
        + SERVICE
        + REAL
        + REAL.replace("80", "8080")
    )
    (vi,) = config.vrrp_instances
    ip = ipaddress.IPv4Address("10.0.0.1")
    assert vi.track_real_servers == (TrackRealServer(ip, 80), TrackRealServer(ip, 8080, -60))


def track(entry: str) -> str:
    return INSTANCE.replace("vrid = 51\n", f"vrid = 51\ntrack_real_servers = [{entry}]\n")


# fmt: off
CASES: list[tuple[str, str, str, str]] = [
    ("peer-mac", GLOBAL + 'peer_mac = "08:00:27:e1:3c"\n' + RS, "global.peer_mac", "MAC address"),
    ("state-dir", GLOBAL + 'state_dir = "run"\n' + RS, "global.state_dir", "absolute path"),
    ("sync-id", GLOBAL + "ipvs_sync_id = 256\n" + RS, "global.ipvs_sync_id", "between 0"),
    ("sync-if-off", GLOBAL + 'ipvs_sync_daemon = false\nipvs_sync_interface = "eth0"\n' + RS,
        "global.ipvs_sync_interface", "only meaningful"),
    ("fwmark-without-mark", GLOBAL + 'loop_guard = "fwmark"\n' + RS,
        "virtual_server[0]", "give address, port and fwmark"),
    ("mark-and-address-bypass", INSTANCE + MARKED, "virtual_server[0].fwmark", "not both"),
    # Each service may follow its own instance, but the box has one IPVS sync daemon.
    ("two-instances-one-sync-daemon", GLOBAL + "ipvs_sync_daemon = true\n" + INSTANCE + SECOND
        + SERVICE + 'instance = "VI_1"\n'
        + SERVICE.replace("port = 80", 'port = 81\ninstance = "VI_2"'),
        "virtual_server", "must follow the same VRRP instance"),
    ("track-unchecked", track('"10.0.0.9:80"') + SERVICE + REAL,
        "vrrp_instance[0].track_real_servers[0]", "no virtual server's real server"),
    ("track-form", track('"10.0.0.1"') + SERVICE + REAL,
        "vrrp_instance[0].track_real_servers[0]", "'IPv4:port'"),
    ("track-dup", track('"10.0.0.1:80", "10.0.0.1:80"') + SERVICE + REAL,
        "vrrp_instance[0].track_real_servers[1]", "tracked twice"),
    ("track-weight", track('{ address = "10.0.0.1:80", weight = 300 }') + SERVICE + REAL,
        "vrrp_instance[0].track_real_servers[0].weight", "between -254"),
]
# fmt: on


@pytest.mark.parametrize(
    ("text", "key", "fragment"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_rule_rejects(text: str, key: str, fragment: str) -> None:
    problems = problems_of(text)
    assert [p.key for p in problems] == [key], format_problems(problems)
    assert fragment in problems[0].message, problems[0].message
    assert problems[0].line is not None
