"""What `check` used to accept and the daemon then tripped over: each refused, with its line.

Why each matters: a VIP in two instances is added and removed in turn by both; a VIP
equal to a router's own address deletes it from the box in BACKUP; an interface name the
kernel refuses fails at start (or, for the sync daemon, at the first transition); CR/LF in
an HTTP check's path or host forges request lines; an unbounded interval overflows timers.
"""

from __future__ import annotations

import pytest

from lvsagent.config.errors import ConfigError, format_problems
from lvsagent.config.loader import parse_config

VI = """\
[[vrrp_instance]]
name = "VI_1"
interface = "eth0"
vrid = 51
virtual_addresses = ["10.0.0.100"]
"""
VI2 = """
[[vrrp_instance]]
name = "VI_2"
interface = "eth0"
vrid = 52
virtual_addresses = ["10.0.0.101"]
"""
VS = VI + """
[[virtual_server]]
address = "10.0.0.100"
port = 80
"""
HEALTH = VS + "[virtual_server.health]\n"
TCP = VS + "[virtual_server.health.tcp]\n"
HTTP = VS + "[virtual_server.health.http]\n"
SYNC = '[global]\nloop_guard = "backup_only"\n'
VIPS_256 = ", ".join(f'"10.1.{i // 250}.{i % 250 + 1}"' for i in range(256))

# fmt: off
CASES: list[tuple[str, str, str, str, int]] = [
    # id, text, key of the one problem, fragment of its message, its line
    ("vip-in-two-instances", VI + VI2.replace("10.0.0.101", "10.0.0.100"),
        "vrrp_instance[1].virtual_addresses[0]", "already a virtual address at", 11),
    ("vip-is-unicast-src", VI + 'unicast_src = "10.0.0.100"\nunicast_peers = ["10.0.0.2"]\n',
        "vrrp_instance[0].virtual_addresses[0]", "unicast_src, this box's own address", 5),
    ("vip-is-a-peer", VI + 'unicast_src = "10.0.0.1"\nunicast_peers = ["10.0.0.100"]\n',
        "vrrp_instance[0].virtual_addresses[0]", "a unicast peer", 5),
    ("src-is-an-earlier-vip",
        VI + VI2 + 'unicast_src = "10.0.0.100"\nunicast_peers = ["10.0.0.2"]\n',
        "vrrp_instance[1].unicast_src", "is a virtual address at vrrp_instance[0]", 12),
    ("ifname-nul", VI.replace('"eth0"', '"eth\\u0000"'),
        "vrrp_instance[0].interface", "control characters", 3),
    ("ifname-escape", VI.replace('"eth0"', '"e\\u001b[0m"'),
        "vrrp_instance[0].interface", "control characters", 3),
    ("ifname-dotdot", VI.replace('"eth0"', '".."'), "vrrp_instance[0].interface", "interface", 3),
    ("track-ifname-nul", VI + 'track_interfaces = ["up\\u0000"]\n',
        "vrrp_instance[0].track_interfaces[0]", "control characters", 6),
    ("sync-interface-path", SYNC + 'ipvs_sync_interface = "../../x"\n' + VI,
        "global.ipvs_sync_interface", "not a Linux interface name", 3),
    ("sync-interface-long", SYNC + f'ipvs_sync_interface = "{"s" * 40}"\n' + VI,
        "global.ipvs_sync_interface", "1-15 bytes", 3),
    ("http-path-crlf", HTTP + 'path = "/\\r\\nX-Forged: 1"\n',
        "virtual_server[0].health.http.path", "control characters", 11),
    ("http-path-blank", HTTP + 'path = "/a b"\n',
        "virtual_server[0].health.http.path", "blanks", 11),
    ("http-path-non-ascii", HTTP + 'path = "/caf\u00e9"\n',
        "virtual_server[0].health.http.path", "printable ASCII", 11),
    ("http-host-lf", HTTP + 'host = "a\\nb"\n',
        "virtual_server[0].health.http.host", "control characters", 11),
    ("status-fullwidth", HTTP + 'status_codes = ["\uff12\uff10\uff10-\uff12\uff19\uff19"]\n',
        "virtual_server[0].health.http.status_codes[0]", "range", 11),
    ("health-interval", HEALTH + "interval = 1e9\n",
        "virtual_server[0].health.interval", "at most 86400", 11),
    ("health-delay", HEALTH + "delay_before_retry = 1e9\n",
        "virtual_server[0].health.delay_before_retry", "at most 86400", 11),
    ("health-retry", HEALTH + "retry = 1000000\n",
        "virtual_server[0].health.retry", "between 0 and 100", 11),
    ("tcp-timeout", TCP + "connect_timeout = 5000\n",
        "virtual_server[0].health.tcp.connect_timeout", "at most 4294", 11),
    ("http-timeout", HTTP + "timeout = 5000\n",
        "virtual_server[0].health.http.timeout", "at most 4294", 11),
    ("garp-delay", VI + "garp_master_delay = 1e12\n",
        "vrrp_instance[0].garp_master_delay", "at most 4294", 6),
    ("ipvs-timeout", "[global]\nipvs_timeout_tcp = 2147484\n" + VI,
        "global.ipvs_timeout_tcp", "between 0 and 2147483", 2),
    ("router-id-long", f'[global]\nrouter_id = "{"r" * 65}"\n' + VI,
        "global.router_id", "1-64 printable", 2),
    ("router-id-newline", '[global]\nrouter_id = "a\\nb"\n' + VI,
        "global.router_id", "printable", 2),
    ("state-dir-nul", '[global]\nstate_dir = "/run/a\\u0000"\n' + VI,
        "global.state_dir", "control characters", 2),
    ("socket-nul", '[global]\ncontrol_socket = "/run/a\\u0000.sock"\n' + VI,
        "global.control_socket", "control characters", 2),
    ("vips-256", VI.replace('["10.0.0.100"]', f"[{VIPS_256}]"),
        "vrrp_instance[0].virtual_addresses", "at most 255", 5),
]
# fmt: on


@pytest.mark.parametrize(
    ("text", "key", "fragment", "line"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_refused_with_its_line(text: str, key: str, fragment: str, line: int) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "t.toml")
    problems = caught.value.problems
    assert [(p.key, p.line) for p in problems] == [(key, line)], format_problems(problems)
    assert fragment in problems[0].message
    assert str(problems[0]).isprintable()


def test_the_limits_themselves_are_accepted() -> None:
    vips = ", ".join(f'"10.1.{i // 250}.{i % 250 + 1}"' for i in range(255))
    text = (
        '[global]\nrouter_id = "' + "r" * 64 + '"\nipvs_timeout_tcp = 2147483\n'
        + VI.replace('["10.0.0.100"]', f'["10.0.0.100", {vips}]')
        .replace('"eth0"', '"e' + "x" * 14 + '"')
        + "garp_master_delay = 4294\n"
        + VI2.replace('"10.0.0.101"', '"10.0.0.102"')
        + '\n[[virtual_server]]\naddress = "10.0.0.100"\nport = 80\ninstance = "VI_1"\n'
        + "[virtual_server.health]\ninterval = 86400\nretry = 100\nrise = 100\nfall = 100\n"
        + "[virtual_server.health.http]\npath = \"/a?b=c&d=%20\"\nhost = \"www.example.org:8080\"\n"
        + 'status_codes = ["200-299", 301]\ntimeout = 4294\n'
    )  # fmt: skip
    text = text.replace('"10.1.0.100", ', "")  # keep 256 - 1 = 255 addresses, none twice
    config = parse_config(text, "t.toml")
    assert len(config.vrrp_instances[0].virtual_addresses) == 255
