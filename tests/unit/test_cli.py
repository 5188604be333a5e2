"""The command line as scripts and operators meet it: --version, sysexits for usage errors,
one way to name the config for every verb, check's interface warnings and --print."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

import pytest

from lvsagent import __version__, cli
from lvsagent.config.effective import effective_toml
from lvsagent.config.loader import load_config, parse_config
from lvsagent.config.schema import Config
from tests.unit.sample_configs import MINIMAL

ROOT = Path(__file__).resolve().parents[2]
ETC = sorted((ROOT / "etc").glob("*.toml"))

# Most of what a config can say, in keys that a default would not give: the round trip
# through --print must keep each of them.
RICH = """
[global]
router_id = "rich"
loop_guard = "fwmark"
peer_mac = "02:00:00:00:00:02"
ipvs_sync_daemon = true
ipvs_sync_interface = "lo"
ipvs_sync_id = 7
decommission_on_stop = true

[[vrrp_instance]]
name = "VI_1"
interface = "lo"
vrid = 51
priority = 150
advert_int = 0.5
version = 3
v3_checksum = "message_only"
preempt = false
unicast_src = "192.0.2.1"
unicast_peers = ["192.0.2.2"]
unicast_ttl = 64
check_ttl = false
virtual_addresses = ["192.0.2.100/24", "192.0.2.101/32"]
track_interfaces = ["lo", { name = "lvsagent-no0", weight = -20 }]
track_real_servers = [{ address = "192.0.2.11:80", weight = -30 }]
garp_repeat = 3
garp_master_delay = 0
garp_master_repeat = 0

[[virtual_server]]
address = "192.0.2.100"
port = 80
fwmark = 3
scheduler = "mh"
scheduler_flags = ["mh-port"]
persistence_timeout = 300
persistence_netmask = "255.255.255.0"
forwarding = "nat"
instance = "VI_1"
quorum = 2
quorum_hysteresis = 1
sorry_server = "192.0.2.200:8080"

[virtual_server.health]
type = "http"
interval = 2.5
rise = 2
fall = 3
alpha = false
on_failure = "remove"

[virtual_server.health.http]
path = "/health"
status_codes = [200, "300-302", 404]
body_contains = "ok \\"quoted\\""
host = "www.example.com"
port = 8081

[[virtual_server.real_server]]
address = "192.0.2.11"
port = 80
weight = 3
u_threshold = 100
l_threshold = 50

[[virtual_server.real_server]]
address = "192.0.2.12"
port = 80
forwarding = "nat"

[virtual_server.real_server.health]
type = "tcp"

[virtual_server.real_server.health.tcp]
connect_timeout = 1.5
port = 81
"""


@pytest.fixture
def rich(tmp_path: Path) -> Path:
    path = tmp_path / "rich.toml"
    path.write_text(RICH)
    return path


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out == f"lvsagent {__version__}\n"


def test_the_version_is_the_packages() -> None:
    """pyproject.toml and debian/changelog take the version from one place."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "version" in project["dynamic"]
    changelog = (ROOT / "debian" / "changelog").read_text().splitlines()[0]
    assert changelog.startswith(f"lvsagent ({__version__}) ")


@pytest.mark.parametrize(
    "argv",
    [
        [],  # no verb
        ["bogus"],
        ["check", "--no-such-option"],
        ["run", "--log-level", "loud"],
        ["check", "--config", "a.toml", "b.toml"],  # two different files
        ["status", "--socket", "/run/x.sock", "--config", "a.toml"],
        ["status", "--socket", "/run/x.sock", "a.toml"],
        ["convert"],
    ],
)
def test_usage_errors_exit_64(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    assert exit_.value.code == cli.EX_USAGE == 64
    err = capsys.readouterr().err
    assert err.startswith("usage: lvsagent") and "error:" in err


@pytest.mark.parametrize("verb", ["run", "check", "plan", "status"])
def test_every_verb_takes_the_config_both_ways(verb: str) -> None:
    parser = cli._parser()
    for argv in ([verb, "--config", "/x/a.toml"], [verb, "/x/a.toml"]):
        args = parser.parse_args(argv)
        assert cli._config_path(parser, args) == "/x/a.toml", argv
    # The same file named twice is no conflict.
    args = parser.parse_args([verb, "--config", "/x/a.toml", "/x/a.toml"])
    assert cli._config_path(parser, args) == "/x/a.toml"
    default = cli._config_path(parser, parser.parse_args([verb]))
    assert default == (None if verb == "status" else "/etc/lvsagent/lvsagent.toml")


def test_status_reads_the_socket_from_a_positional_config(tmp_path: Path) -> None:
    config = tmp_path / "a.toml"
    socket = f'control_socket = "{tmp_path}/none.sock"'
    box_a = (ROOT / "etc/box-a.toml").read_text()
    config.write_text(box_a.replace("[global]", f"[global]\n{socket}"))
    # No daemon at the config's socket: 69, as with --config.
    assert cli.main(["status", str(config)]) == cli.EX_UNAVAILABLE


def test_check_warns_about_interfaces_this_host_lacks(
    rich: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = RICH.replace('\ninterface = "lo"', '\ninterface = "lvsagent-no1"')
    rich.write_text(text)
    assert cli.main(["check", "--config", str(rich)]) == cli.EX_OK
    out, err = capsys.readouterr()
    assert out.startswith(f"{rich}: OK")
    numbers = text.splitlines()
    where = numbers.index('interface = "lvsagent-no1"') + 1
    track = next(i for i, line in enumerate(numbers) if line.startswith("track_interfaces")) + 1
    assert err.splitlines() == [
        f"{rich}:{where}: vrrp_instance[0].interface: warning: no interface 'lvsagent-no1' on "
        "this host: `lvsagent run` would refuse to start here (exit 78) (fine if the file is "
        "for another box)",
        f"{rich}:{track}: vrrp_instance[0].track_interfaces[1]: warning: no interface "
        "'lvsagent-no0' on this host: it would count as down for VI_1 here (weight -20) (fine "
        "if the file is for another box)",
    ]


def test_check_says_nothing_more_when_every_interface_exists(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "a.toml"
    path.write_text((ROOT / "etc/box-a.toml").read_text().replace('"enp0s3"', '"lo"'))
    assert cli.main(["check", str(path)]) == cli.EX_OK
    assert capsys.readouterr().err == ""


def _same(a: Config, b: Config) -> bool:
    """Equal but for the path, and for a default the print spells out (the sync daemons')."""

    def resolved(c: Config) -> Config:
        g = dataclasses.replace(c.global_, ipvs_sync_daemon=c.sync_daemons_on())
        return dataclasses.replace(c, path="", global_=g)

    return resolved(a) == resolved(b)


@pytest.mark.parametrize("path", [*ETC, "rich"], ids=lambda p: getattr(p, "name", p))
def test_print_is_the_effective_config_and_passes_check(
    path: Path | str, rich: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = rich if path == "rich" else Path(path)
    assert cli.main(["check", "--print", str(source)]) == cli.EX_OK
    printed = capsys.readouterr().out
    assert printed.startswith(f"# the effective config of {source}")
    again = tmp_path / "printed.toml"
    again.write_text(printed)
    assert cli.main(["check", str(again)]) == cli.EX_OK
    assert _same(load_config(again), load_config(source))


def test_print_fills_in_every_default(tmp_path: Path) -> None:
    """A minimal file: every key of the schema's defaults is written out."""
    config = parse_config(MINIMAL, "min.toml")
    data = tomllib.loads(effective_toml(config, "x"))
    assert set(data["global"]) == {
        "router_id", "loop_guard", "metrics_listen", "control_socket", "foreign_services",
        "ipvs_resync_interval", "ipvs_timeout_tcp", "ipvs_timeout_tcpfin", "ipvs_timeout_udp",
        "ipvs_expire_nodest_conn", "decommission_on_stop", "state_dir", "ipvs_sync_daemon",
        "ipvs_sync_id", "notify_timeout",
    }  # fmt: skip
    (inst,) = data["vrrp_instance"]
    assert inst["priority"] == 100 and inst["preempt_delay"] == 0 and inst["garp_repeat"] == 5
    assert "v3_checksum" not in inst and "unicast_ttl" not in inst  # v2, multicast
    (vs,) = data["virtual_server"]
    assert (vs["scheduler"], vs["forwarding"], vs["protocol"]) == ("wlc", "dr", "tcp")
    assert vs["health"]["interval"] == 6 and vs["health"]["tcp"]["connect_timeout"] == 3
    assert vs["health"]["http"]["status_codes"] == ["200-299"]
    assert vs["real_server"][0]["weight"] == 1


def test_check_warns_about_a_missing_sync_interface(
    rich: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rich.write_text(RICH.replace('ipvs_sync_interface = "lo"', 'ipvs_sync_interface = "nosync0"'))
    assert cli.main(["check", str(rich)]) == cli.EX_OK
    err = capsys.readouterr().err.splitlines()
    sync = [line for line in err if "global.ipvs_sync_interface" in line]
    assert len(sync) == 1
    assert "no interface 'nosync0' on this host: the IPVS sync daemon could not start" in sync[0]
