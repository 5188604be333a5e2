"""etc/lvsagent.example.toml's commented script sections load when uncommented.

The example leaves [[vrrp_script]], [[track_file]], [[track_process]],
[[vrrp_sync_group]] and [health.misc] commented out (they have required keys with
no default); uncommented as written, they must still pass `lvsagent check`.
"""

from __future__ import annotations

import re
from pathlib import Path

from lvsagent.config.loader import parse_config

EXAMPLE = (Path(__file__).resolve().parents[2] / "etc" / "lvsagent.example.toml").read_text()
_LINE = re.compile(r"# (\[\[?[\w.]+\]\]?.*|[a-z_]+ = .*)$")

INSTANCES = """
[[vrrp_instance]]
name = "VI_OUT"
interface = "eth0"
vrid = 51
virtual_addresses = ["192.0.2.100/24"]
track_scripts = ["chk_haproxy"]
track_files = [{ name = "maintenance", weight = 0 }]
track_processes = [{ name = "haproxy", weight = 0 }]
[[vrrp_instance]]
name = "VI_IN"
interface = "eth1"
vrid = 52
virtual_addresses = ["10.0.0.1/24"]
[[virtual_server]]
address = "192.0.2.100"
port = 80
instance = "VI_OUT"
[virtual_server.health]
type = "misc"
"""


def uncomment(start: str, end: str | None = None) -> str:
    block = EXAMPLE[EXAMPLE.index(start) : EXAMPLE.index(end) if end else None]
    found = (_LINE.match(line) for line in block.splitlines())
    return "\n".join(m.group(1) for m in found if m)


def test_the_commented_sections_load() -> None:
    instance = EXAMPLE[EXAMPLE.index("[[vrrp_instance]]") : EXAMPLE.index("[[virtual_server]]")]
    hooks = "\n".join(
        line for line in uncomment("# notify_master", "# One [[virtual_server]]").splitlines()
        if line.startswith("notify")
    )  # fmt: skip
    text = (
        "[global]\n" + uncomment("# script_user", "notify_timeout")
        + INSTANCES.replace('vrid = 51\n', "vrid = 51\n" + hooks + "\n")
        + uncomment("# [virtual_server.health.misc]", "# One [[virtual_server.real_server]]")
        + '\n[[virtual_server.real_server]]\naddress = "10.0.0.5"\nport = 80\n'
        + uncomment("# What instances track")
    )  # fmt: skip
    assert "notify_master" in instance  # the instance's hooks are documented there
    config = parse_config(text, "example-scripts.toml")
    assert config.global_.notify_fifo is not None and config.global_.script_user == "nobody"
    assert [s.name for s in config.vrrp_scripts] == ["chk_haproxy"]
    assert [f.name for f in config.track_files] == ["maintenance"]
    assert [p.name for p in config.track_processes] == ["haproxy"]
    assert [g.name for g in config.sync_groups] == ["NAT"]
    assert config.vrrp_instances[0].hooks is not None
    assert config.vrrp_instances[0].hooks.master is not None
    assert config.virtual_servers[0].health.misc.script is not None
