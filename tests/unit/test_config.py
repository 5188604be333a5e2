"""The TOML loader: examples load, every rule rejects, every problem is located."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from lvsagent.config.errors import ConfigError, Problem, format_problems
from lvsagent.config.loader import load_config
from lvsagent.config.locate import Locator
from lvsagent.config.schema import (
    Global,
    HealthCheck,
    RealServer,
    TcpCheck,
    TrackInterface,
    VirtualServer,
    VrrpInstance,
)
from tests.unit.configs import (
    GLOBAL,
    HEALTH,
    HTTP,
    INSTANCE,
    REAL,
    SECOND,
    SERVICE,
    TCP,
    load,
    problems_of,
    rule_rejects,
)

ETC = Path(__file__).parents[2] / "etc"

# --- the shipped examples ---------------------------------------------------


@pytest.mark.parametrize("name", ["box-a.toml", "box-b.toml", "lvsagent.example.toml"])
def test_examples_load(name: str) -> None:
    config = load_config(str(ETC / name))
    assert config.vrrp_instances and config.virtual_servers


def test_boxes_follow_the_article() -> None:
    a, b = load_config(str(ETC / "box-a.toml")), load_config(str(ETC / "box-b.toml"))
    assert (a.vrrp_instances[0].priority, b.vrrp_instances[0].priority) == (100, 50)
    for config in (a, b):
        (vi,) = config.vrrp_instances
        assert (vi.interface, vi.vrid, vi.advert_int, vi.auth_pass) == ("enp0s3", 51, 1.0, "1111")
        assert vi.virtual_addresses == (ipaddress.IPv4Interface("172.16.0.30/24"),)
        assert config.global_.loop_guard == "bypass"
        (vs,) = config.virtual_servers
        assert vs.label == "172.16.0.30:80/tcp"
        assert (vs.scheduler, vs.forwarding, vs.persistence_timeout) == ("rr", "dr", 0)
        assert (vs.health.interval, vs.health.tcp) == (30.0, TcpCheck(connect_timeout=3.0))
        assert [(str(r.address), r.port) for r in vs.real_servers] == [
            ("172.16.0.31", 80),
            ("172.16.0.32", 80),
        ]


def test_example_states_the_schema_defaults() -> None:
    """Every key the example sets carries schema.py's default: the documentation cannot drift."""
    config = load_config(str(ETC / "lvsagent.example.toml"))
    assert config.global_ == Global()
    (vi,) = config.vrrp_instances
    assert vi == VrrpInstance(
        name="VI_1", interface="eth0", vrid=51, virtual_addresses=vi.virtual_addresses
    )
    (vs,) = config.virtual_servers
    assert vs == VirtualServer(
        address=vs.address, port=80, instance="VI_1", real_servers=vs.real_servers
    )
    assert all(r == RealServer(address=r.address, port=80) for r in vs.real_servers)


# --- defaults and conversions -----------------------------------------------


def test_expire_nodest_conn_is_managed_unless_turned_off() -> None:
    assert Global().ipvs_expire_nodest_conn is True
    off = load(GLOBAL + "ipvs_expire_nodest_conn = false\n" + INSTANCE)
    assert off.global_.ipvs_expire_nodest_conn is False


def test_defaults_come_from_the_schema() -> None:
    config = load(INSTANCE + SERVICE + REAL)
    assert config.global_ == Global()
    assert config.vrrp_instances == (
        VrrpInstance(
            name="VI_1",
            interface="eth0",
            vrid=51,
            virtual_addresses=(ipaddress.IPv4Interface("10.0.0.100/32"),),
        ),
    )
    real = RealServer(address=ipaddress.IPv4Address("10.0.0.1"), port=80)
    # The only instance is the one a service follows when none is named.
    assert config.virtual_servers == (
        VirtualServer(
            address=ipaddress.IPv4Address("10.0.0.100"),
            port=80,
            instance="VI_1",
            real_servers=(real,),
        ),
    )


def test_values_take_schema_types() -> None:
    config = load(
        INSTANCE
        + 'unicast_src = "10.0.0.2"\nunicast_peers = ["10.0.0.3"]\nunicast_ttl = 64\n'
        + 'check_ttl = false\ntrack_interfaces = ["eth1", { name = "eth2", weight = -20 }]\n'
        + "nopreempt = true\n"
        + SERVICE
        + 'forwarding = "DR"\nscheduler = "sh"\nscheduler_flags = ["sh-port"]\n'
        + 'sorry_server = "10.0.0.9:8080"\npersistence_netmask = "255.255.255.0"\n'
    )
    (vi,) = config.vrrp_instances
    assert vi.unicast_peers == (ipaddress.IPv4Address("10.0.0.3"),)
    assert vi.unicast_src == ipaddress.IPv4Address("10.0.0.2")
    assert vi.track_interfaces == (TrackInterface("eth1"), TrackInterface("eth2", -20))
    assert (vi.preempt, vi.check_ttl, vi.unicast_ttl) == (False, False, 64)
    (vs,) = config.virtual_servers
    assert (vs.forwarding, vs.scheduler_flags) == ("dr", ("sh-port",))
    assert vs.sorry_server == (ipaddress.IPv4Address("10.0.0.9"), 8080)
    assert vs.persistence_netmask == ipaddress.IPv4Address("255.255.255.0")


def test_v3_centiseconds_and_fwmark_service() -> None:
    config = load(
        INSTANCE + 'version = 3\nadvert_int = 0.25\nv3_checksum = "message_only"\n'
        "[[virtual_server]]\nfwmark = 3\n" + REAL
    )
    assert config.vrrp_instances[0].advert_int == 0.25
    assert config.virtual_servers[0].label == "fwmark 3"


def test_real_server_health_merges_over_the_service_check() -> None:
    config = load(
        INSTANCE
        + SERVICE
        + HEALTH
        + "interval = 10\n"
        + TCP
        + "connect_timeout = 5\n"
        + REAL
        + "[virtual_server.real_server.health.tcp]\nport = 8080\n"
        + REAL.replace("10.0.0.1", "10.0.0.2")
    )
    (vs,) = config.virtual_servers
    assert vs.health == HealthCheck(interval=10.0, tcp=TcpCheck(connect_timeout=5.0))
    first, second = vs.real_servers
    assert first.health == HealthCheck(interval=10.0, tcp=TcpCheck(connect_timeout=5.0, port=8080))
    assert second.health is None


def test_same_address_and_port_with_another_protocol_is_another_service() -> None:
    udp = 'protocol = "udp"\n[virtual_server.health]\ntype = "udp"\n'
    config = load(INSTANCE + SERVICE + SERVICE + udp)
    assert [vs.protocol for vs in config.virtual_servers] == ["tcp", "udp"]


# --- every problem, located -------------------------------------------------

MANY_ERRORS = """\
[global]
loop_guard = "bypas"
bogus = 1

[[vrrp_instance]]
name = "VI_1"
interface = "eth0"
vrid = 51
priority = 300
virtual_addresses = ["10.0.0.300"]

[[vrrp_instance]]
name = "VI_2"
interface = "eth0"
vrid = 51
priorty = 50
virtual_addresses = [
  "10.0.0.1",
  "10.0.0.1/24",
]

[[virtual_server]]
address = "10.0.0.1"
port = 80
instance = "VI_3"

[[virtual_server.real_server]]
address = "10.0.0.2"
port = 80
weight = true

[[virtual_server.real_server]]
address = "10.0.0.2"
port = 80
"""


def test_all_problems_reported_with_lines_and_keys() -> None:
    found = [(p.line, p.key) for p in problems_of(MANY_ERRORS)]
    assert found == [
        (2, "global.loop_guard"),
        (3, "global.bogus"),
        (9, "vrrp_instance[0].priority"),
        (10, "vrrp_instance[0].virtual_addresses[0]"),
        (15, "vrrp_instance[1].vrid"),
        (16, "vrrp_instance[1].priorty"),
        (19, "vrrp_instance[1].virtual_addresses[1]"),
        (25, "virtual_server[0].instance"),
        (30, "virtual_server[0].real_server[0].weight"),
        (33, "virtual_server[0].real_server[1].address"),
    ]


def test_problem_text() -> None:
    problems = problems_of(MANY_ERRORS)
    text = format_problems(problems)
    assert text.splitlines()[0] == (
        "t.toml:2: global.loop_guard: expected one of 'bypass', 'fwmark', 'backup_only', "
        "got 'bypas'"
    )
    assert "t.toml:16: vrrp_instance[1].priorty: unknown key; did you mean 'priority'?" in text
    assert (
        "t.toml:30: virtual_server[0].real_server[0].weight: expected an integer, got boolean"
        in (text)
    )
    assert "t.toml:15: vrrp_instance[1].vrid: VRID 51 on eth0 is already used by " in text
    assert "vrrp_instance[0].vrid (line 8)" in text
    assert (
        str(Problem("f.toml", None, "vrrp_instance", "missing")) == "f.toml: vrrp_instance: missing"
    )


def test_problems_are_sorted_by_line() -> None:
    error = ConfigError(
        [Problem("f", None, "a", "x"), Problem("f", 9, "b", "y"), Problem("f", 2, "c", "z")]
    )
    assert [p.line for p in error.problems] == [2, 9, None]
    assert str(error) == "f:2: c: z\nf:9: b: y\nf: a: x"


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("[global]\nrouter_id = \n", 2),
        ('[global]\nrouter_id = "x"\nloop_guard = bypass\n', 3),
        (INSTANCE + "vrid = 52\n", 7),  # a key given twice
        ('[global]\nrouter_id = "x', 2),  # unterminated at the end of the file
    ],
)
def test_toml_syntax_error_has_a_line(text: str, line: int) -> None:
    (problem,) = problems_of(text)
    assert problem.line == line
    assert problem.message.startswith("TOML syntax error: ")
    assert str(problem).startswith(f"t.toml:{line}: TOML syntax error: ")


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as missing:
        load_config(str(tmp_path / "absent.toml"))
    assert missing.value.problems[0].line is None
    binary = tmp_path / "latin1.toml"
    binary.write_bytes(b'[global]\nrouter_id = "caf\xe9"\n')
    with pytest.raises(ConfigError) as undecodable:
        load_config(str(binary))
    assert [(p.line, p.message) for p in undecodable.value.problems] == [
        (2, "TOML files must be UTF-8")
    ]


def test_no_instance_at_all() -> None:
    (problem,) = problems_of(GLOBAL)
    assert (problem.line, problem.key) == (1, "vrrp_instance")  # every problem has a line


def test_unknown_nested_table_suggests() -> None:
    (problem,) = problems_of(INSTANCE + SERVICE + "\n[virtual_server.helth]\ntype = 'tcp'\n")
    assert problem.key == "virtual_server[0].helth"
    assert problem.message == "unknown key; did you mean 'health'?"
    assert problem.line == 12


# --- one negative case per rule -----------------------------------------------

VI, VS, RS = INSTANCE, INSTANCE + SERVICE, INSTANCE + SERVICE + REAL
# fmt: off
CASES: list[tuple[str, str, str, str]] = [
    # id, text, key of the one problem expected, fragment of its message
    ("global-type", GLOBAL + "router_id = 5\n" + VI,
        "global.router_id", "expected a string, got integer"),
    ("loop-guard", GLOBAL + 'loop_guard = "mark"\n' + VI, "global.loop_guard", "expected one of"),
    ("listen-host", GLOBAL + 'metrics_listen = "localhost:9650"\n' + VI,
        "global.metrics_listen", "IP literal"),
    ("listen-v6-bare", GLOBAL + 'metrics_listen = "::1:9650"\n' + VI,
        "global.metrics_listen", "IP literal"),
    ("listen-port", GLOBAL + 'metrics_listen = "127.0.0.1:0"\n' + VI,
        "global.metrics_listen", "IP literal"),
    ("listen-non-ascii-port", GLOBAL + 'metrics_listen = "127.0.0.1:\u0668\u0660"\n' + VI,
        "global.metrics_listen", "IP literal"),
    ("socket-relative", GLOBAL + 'control_socket = "lvs.sock"\n' + VI,
        "global.control_socket", "absolute"),
    ("foreign", GLOBAL + 'foreign_services = "keep"\n' + VI,
        "global.foreign_services", "'report', 'remove'"),
    ("expire-nodest", GLOBAL + 'ipvs_expire_nodest_conn = "yes"\n' + VI,
        "global.ipvs_expire_nodest_conn", "expected a boolean, got string"),
    ("single-table", '[vrrp_instance]\nname = "x"\n', "vrrp_instance", "array of tables"),
    ("name-missing", VI.replace('name = "VI_1"\n', ""), "vrrp_instance[0].name", "required"),
    ("name-chars", VI.replace('"VI_1"', '"VI 1"'), "vrrp_instance[0].name", "1-32 characters"),
    ("name-long", VI.replace('"VI_1"', '"' + "v" * 33 + '"'),
        "vrrp_instance[0].name", "1-32 characters"),
    ("name-dup", VI + SECOND.replace("VI_2", "VI_1"),
        "vrrp_instance[1].name", "duplicate instance name"),
    ("ifname-slash", VI.replace('"eth0"', '"eth0/1"'),
        "vrrp_instance[0].interface", "interface name"),
    ("ifname-long", VI.replace('"eth0"', '"' + "e" * 16 + '"'),
        "vrrp_instance[0].interface", "1-15"),
    ("ifname-blank", VI.replace('"eth0"', '"eth 0"'),
        "vrrp_instance[0].interface", "interface name"),
    ("interface-missing", VI.replace('interface = "eth0"\n', ""),
        "vrrp_instance[0].interface", "required"),
    ("vrid-missing", VI.replace("vrid = 51\n", ""), "vrrp_instance[0].vrid", "required"),
    ("vrid-zero", VI.replace("vrid = 51", "vrid = 0"),
        "vrrp_instance[0].vrid", "between 1 and 255"),
    ("vrid-256", VI.replace("vrid = 51", "vrid = 256"),
        "vrrp_instance[0].vrid", "between 1 and 255"),
    ("vrid-bool", VI.replace("vrid = 51", "vrid = true"),
        "vrrp_instance[0].vrid", "expected an integer, got boolean"),
    ("vrid-dup", VI + SECOND.replace("vrid = 52", "vrid = 51"),
        "vrrp_instance[1].vrid", "already used"),
    ("priority", VI + "priority = 0\n", "vrrp_instance[0].priority", "between 1 and 255"),
    ("advert-string", VI + 'advert_int = "1"\n',
        "vrrp_instance[0].advert_int", "expected a number, got string"),
    ("advert-v2-frac", VI + "advert_int = 0.5\n", "vrrp_instance[0].advert_int", "whole seconds"),
    ("advert-v2-big", VI + "advert_int = 256\n", "vrrp_instance[0].advert_int", "whole seconds"),
    ("advert-v3-step", VI + "version = 3\nadvert_int = 0.015\n",
        "vrrp_instance[0].advert_int", "0.01"),
    ("advert-v3-big", VI + "version = 3\nadvert_int = 41\n",
        "vrrp_instance[0].advert_int", "40.95"),
    ("advert-nan", VI + "advert_int = nan\n", "vrrp_instance[0].advert_int", "finite"),
    ("version", VI + "version = 4\n", "vrrp_instance[0].version", "2 or 3"),
    ("v3-checksum-on-v2", VI + 'v3_checksum = "message_only"\n',
        "vrrp_instance[0].v3_checksum", "version = 3"),
    ("v3-checksum-value", VI + 'version = 3\nv3_checksum = "none"\n',
        "vrrp_instance[0].v3_checksum", "expected one of"),
    ("preempt-type", VI + 'preempt = "yes"\n', "vrrp_instance[0].preempt", "expected a boolean"),
    ("nopreempt-contradicts", VI + "preempt = true\nnopreempt = true\n",
        "vrrp_instance[0].nopreempt", "contradicts"),
    ("delay-without-preempt", VI + "preempt = false\npreempt_delay = 5\n",
        "vrrp_instance[0].preempt_delay", "but preempt = false"),
    ("delay-with-nopreempt", VI + "nopreempt = true\npreempt_delay = 0\n",
        "vrrp_instance[0].preempt_delay", "but nopreempt = true"),
    ("delay-range", VI + "preempt_delay = 1001\n",
        "vrrp_instance[0].preempt_delay", "at most 1000"),
    ("delay-negative", VI + "preempt_delay = -1\n", "vrrp_instance[0].preempt_delay", "at least 0"),
    ("src-invalid", VI + 'unicast_src = "10.0.0.300"\n',
        "vrrp_instance[0].unicast_src", "not an IPv4 address"),
    ("peer-invalid", VI + 'unicast_peers = ["10.0.0.1", "10.0.0.300"]\n',
        "vrrp_instance[0].unicast_peers[1]", "'10.0.0.300'"),
    ("peer-v6", VI + 'unicast_peers = ["::1"]\n',
        "vrrp_instance[0].unicast_peers[0]", "not an IPv4 address"),
    ("peer-dup", VI + 'unicast_peers = ["10.0.0.1", "10.0.0.1"]\n',
        "vrrp_instance[0].unicast_peers[1]", "duplicate peer"),
    ("peer-is-src", VI + 'unicast_src = "10.0.0.1"\nunicast_peers = ["10.0.0.1"]\n',
        "vrrp_instance[0].unicast_peers[0]", "unicast_src"),
    ("ttl-without-peers", VI + "unicast_ttl = 64\n",
        "vrrp_instance[0].unicast_ttl", "only meaningful with unicast_peers"),
    ("ttl-range", VI + 'unicast_peers = ["10.0.0.1"]\nunicast_ttl = 0\n',
        "vrrp_instance[0].unicast_ttl", "between 1 and 255"),
    ("check-ttl-multicast", VI + "check_ttl = false\n", "vrrp_instance[0].check_ttl", "RFC 5798"),
    ("auth-v3", VI + 'version = 3\nauth_pass = "1111"\n',
        "vrrp_instance[0].auth_pass", "VRRPv3 has no authentication"),
    ("auth-long", VI + 'auth_pass = "123456789"\n', "vrrp_instance[0].auth_pass", "1 to 8 ASCII"),
    ("auth-empty", VI + 'auth_pass = ""\n', "vrrp_instance[0].auth_pass", "1 to 8 ASCII"),
    ("auth-ascii", VI + 'auth_pass = "pässwd"\n', "vrrp_instance[0].auth_pass", "1 to 8 ASCII"),
    ("vips-missing", VI.replace('virtual_addresses = ["10.0.0.100"]\n', ""),
        "vrrp_instance[0].virtual_addresses", "required"),
    ("vips-empty", VI.replace('["10.0.0.100"]', "[]"),
        "vrrp_instance[0].virtual_addresses", "at least one"),
    ("vip-invalid", VI.replace('"10.0.0.100"', '"10.0.0.300"'),
        "vrrp_instance[0].virtual_addresses[0]", "not an IPv4"),
    ("vip-prefix", VI.replace('"10.0.0.100"', '"10.0.0.100/33"'),
        "vrrp_instance[0].virtual_addresses[0]", "prefix length"),
    ("vip-netmask", VI.replace('"10.0.0.100"', '"10.0.0.100/255.255.255.0"'),
        "vrrp_instance[0].virtual_addresses[0]", "prefix length"),
    ("vip-non-ascii-digits", VI.replace('"10.0.0.100"', '"10.0.0.100/\u0662\u0664"'),
        "vrrp_instance[0].virtual_addresses[0]", "prefix length"),
    ("vip-dup", VI.replace('"10.0.0.100"', '"10.0.0.100/24", "10.0.0.100"'),
        "vrrp_instance[0].virtual_addresses[1]", "duplicate address"),
    ("track-weight", VI + 'track_interfaces = [{ name = "eth1", weight = 255 }]\n',
        "vrrp_instance[0].track_interfaces[0].weight", "-254 and 254"),
    ("track-type", VI + "track_interfaces = [1]\n",
        "vrrp_instance[0].track_interfaces[0]", "got integer"),
    ("track-dup", VI + 'track_interfaces = ["eth1", { name = "eth1" }]\n',
        "vrrp_instance[0].track_interfaces[1].name", "tracked twice"),
    ("track-unknown", VI + 'track_interfaces = [{ name = "eth1", wieght = 1 }]\n',
        "vrrp_instance[0].track_interfaces[0].wieght", "did you mean 'weight'"),
    ("track-name", VI + "track_interfaces = [{ weight = 1 }]\n",
        "vrrp_instance[0].track_interfaces[0].name", "required"),
    ("garp-repeat", VI + "garp_repeat = 0\n", "vrrp_instance[0].garp_repeat", "between 1 and 100"),
    ("garp-delay", VI + "garp_master_delay = -1\n",
        "vrrp_instance[0].garp_master_delay", "at least 0"),
    ("garp-master-repeat", VI + "garp_master_repeat = 101\n",
        "vrrp_instance[0].garp_master_repeat", "between 0 and 100"),
    ("instance-unknown", VI + "priorty = 1\n",
        "vrrp_instance[0].priorty", "did you mean 'priority'"),
    ("vs-both-forms", VS + "fwmark = 3\n", "virtual_server[0].fwmark", "not both"),
    ("vs-no-form", VI + '[[virtual_server]]\nscheduler = "rr"\n',
        "virtual_server[0]", "address and port, or fwmark"),
    ("vs-no-port", VS.replace("port = 80\n", ""), "virtual_server[0].port", "required"),
    ("vs-port", VS.replace("port = 80", "port = 65536"),
        "virtual_server[0].port", "between 1 and 65535"),
    ("vs-address", VS.replace('address = "10.0.0.100"', 'address = "10.0.0.300"'),
        "virtual_server[0].address", "'10.0.0.300'"),
    ("vs-protocol", VS + 'protocol = "icmp"\n', "virtual_server[0].protocol", "'tcp', 'udp'"),
    ("fwmark-zero", VI + "[[virtual_server]]\nfwmark = 0\n",
        "virtual_server[0].fwmark", "between 1 and 4294967295"),
    ("fwmark-big", VI + "[[virtual_server]]\nfwmark = 4294967296\n",
        "virtual_server[0].fwmark", "between 1"),
    ("scheduler", VS + 'scheduler = "fifo"\n', "virtual_server[0].scheduler", "expected one of"),
    ("flags-on-rr", VS + 'scheduler = "rr"\nscheduler_flags = ["sh-port"]\n',
        "virtual_server[0].scheduler_flags[0]", "takes no flags"),
    ("flags-default-wlc", VS + 'scheduler_flags = ["sh-port"]\n',
        "virtual_server[0].scheduler_flags[0]", "'wlc' takes no flags"),
    ("flags-wrong", VS + 'scheduler = "sh"\nscheduler_flags = ["mh-port"]\n',
        "virtual_server[0].scheduler_flags[0]", "'sh-fallback'"),
    ("flags-dup", VS + 'scheduler = "mh"\nscheduler_flags = ["mh-port", "mh-port"]\n',
        "virtual_server[0].scheduler_flags[1]", "duplicate flag"),
    ("persistence", VS + "persistence_timeout = 2147483648\n",
        "virtual_server[0].persistence_timeout", "between 0"),
    ("netmask-holes", VS + 'persistence_netmask = "255.0.255.0"\n',
        "virtual_server[0].persistence_netmask", "contiguous"),
    ("netmask-invalid", VS + 'persistence_netmask = "255.255.255.256"\n',
        "virtual_server[0].persistence_netmask", "not an IPv4"),
    ("forwarding", VS + 'forwarding = "masq"\n',
        "virtual_server[0].forwarding", "'dr', 'nat', 'tun'"),
    ("vs-instance", VS + 'instance = "VI_9"\n',
        "virtual_server[0].instance", "no vrrp_instance is named 'VI_9'"),
    ("vs-instance-needed", VI + SECOND + SERVICE, "virtual_server[0].instance", "2 vrrp_instances"),
    ("quorum", VS + "quorum = -1\n", "virtual_server[0].quorum", "between 0"),
    ("sorry-invalid", VS + 'sorry_server = "10.0.0.300:80"\n',
        "virtual_server[0].sorry_server", "'10.0.0.300'"),
    ("sorry-no-port", VS + 'sorry_server = "10.0.0.9"\n',
        "virtual_server[0].sorry_server", "'IPv4:port'"),
    ("sorry-port-zero", VS + 'sorry_server = "10.0.0.9:0"\n',
        "virtual_server[0].sorry_server", "between 1 and 65535"),
    ("vs-dup", VS + SERVICE,
        "virtual_server[1].address", "already defined at virtual_server[0].address (line 9)"),
    ("fwmark-dup", VI + "[[virtual_server]]\nfwmark = 3\n[[virtual_server]]\nfwmark = 3\n",
        "virtual_server[1].fwmark", "fwmark 3 is already defined"),
    ("vs-keepalived", VS + 'lb_algo = "rr"\n',
        "virtual_server[0].lb_algo", "keepalived's lb_algo is 'scheduler' here"),
    ("vs-delay-loop", VS + "delay_loop = 6\n", "virtual_server[0].delay_loop", "'health.interval'"),
    ("vs-inhibit", VS + "inhibit_on_failure = true\n",
        "virtual_server[0].inhibit_on_failure", "'health.on_failure'"),
    ("vs-hysteresis", VS + "hysteresis = 2\n",
        "virtual_server[0].hysteresis", "'quorum_hysteresis'"),
    ("health-delay-loop", VS + HEALTH + "delay_loop = 6\n",
        "virtual_server[0].health.delay_loop", "is 'interval' here"),
    ("health-type", VS + HEALTH + 'type = "ping"\n',
        "virtual_server[0].health.type", "'tcp', 'http', 'https', 'udp', 'dns', 'misc', 'none'"),
    ("health-interval", VS + HEALTH + "interval = 0\n",
        "virtual_server[0].health.interval", "greater than 0"),
    ("health-interval-inf", VS + HEALTH + "interval = inf\n",
        "virtual_server[0].health.interval", "finite"),
    ("health-retry", VS + HEALTH + "retry = -1\n",
        "virtual_server[0].health.retry", "between 0 and 100"),
    ("health-delay", VS + HEALTH + "delay_before_retry = -0.5\n",
        "virtual_server[0].health.delay_before_retry", "at least 0"),
    ("health-rise", VS + HEALTH + "rise = 0\n",
        "virtual_server[0].health.rise", "between 1 and 100"),
    ("health-fall", VS + HEALTH + "fall = 0\n",
        "virtual_server[0].health.fall", "between 1 and 100"),
    ("health-alpha", VS + HEALTH + "alpha = 1\n",
        "virtual_server[0].health.alpha", "expected a boolean, got integer"),
    ("health-on-failure", VS + HEALTH + 'on_failure = "kill"\n',
        "virtual_server[0].health.on_failure", "'drain', 'remove'"),
    ("health-not-table", VS + "health = 1\n", "virtual_server[0].health", "expected a table"),
    ("tcp-timeout", VS + TCP + "connect_timeout = 0\n",
        "virtual_server[0].health.tcp.connect_timeout", "greater than 0"),
    ("tcp-port", VS + TCP + "port = 0\n",
        "virtual_server[0].health.tcp.port", "between 1 and 65535"),
    ("tcp-unknown", VS + TCP + "timeout = 3\n",
        "virtual_server[0].health.tcp.timeout", "unknown key"),
    ("http-path", VS + HTTP + 'path = "index.html"\n',
        "virtual_server[0].health.http.path", "start with '/'"),
    ("http-code", VS + HTTP + "status_codes = [200, 600]\n",
        "virtual_server[0].health.http.status_codes[1]", "between 100 and 599"),
    ("http-code-range", VS + HTTP + 'status_codes = ["299-200"]\n',
        "virtual_server[0].health.http.status_codes[0]", 'a range such as "200-299"'),
    ("http-code-overlap", VS + HTTP + 'status_codes = ["200-299", 204]\n',
        "virtual_server[0].health.http.status_codes[1]", "duplicate status code 204"),
    ("http-codes-empty", VS + HTTP + "status_codes = []\n",
        "virtual_server[0].health.http.status_codes", "at least one"),
    ("http-timeout", VS + HTTP + "timeout = -3\n",
        "virtual_server[0].health.http.timeout", "greater than 0"),
    ("http-unknown", VS + HTTP + 'uri = "/"\n', "virtual_server[0].health.http.uri", "unknown key"),
    ("real-address", VS + REAL.replace('address = "10.0.0.1"\n', ""),
        "virtual_server[0].real_server[0].address", "required"),
    ("real-port", VS + REAL.replace("port = 80\n", ""),
        "virtual_server[0].real_server[0].port", "required"),
    ("real-weight", RS + "weight = 65536\n",
        "virtual_server[0].real_server[0].weight", "between 0 and 65535"),
    ("real-upper", RS + "u_threshold = -1\n",
        "virtual_server[0].real_server[0].u_threshold", "between 0"),
    ("real-lower", RS + "u_threshold = 10\nl_threshold = 11\n",
        "virtual_server[0].real_server[0].l_threshold", "must not exceed u_threshold (10)"),
    ("real-forwarding", RS + 'forwarding = "route"\n',
        "virtual_server[0].real_server[0].forwarding", "expected one of"),
    ("real-dup", RS + REAL, "virtual_server[0].real_server[1].address", "already a real server"),
    ("real-unknown", RS + "wieght = 2\n",
        "virtual_server[0].real_server[0].wieght", "did you mean 'weight'"),
    ("real-health", RS + "[virtual_server.real_server.health]\nrise = 0\n",
        "virtual_server[0].real_server[0].health.rise", "between 1 and 100"),
    ("top-unknown", VI + "[globl]\n", "globl", "did you mean 'global'"),
]
# fmt: on


@pytest.mark.parametrize(
    ("text", "key", "fragment"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_rule_rejects(text: str, key: str, fragment: str) -> None:
    rule_rejects(text, key, fragment)


def test_no_rule_fires_on_the_valid_bases() -> None:
    """The negative cases above differ from a valid file by exactly their one mistake."""
    for text in (VI, VS, RS, VI + SECOND, VS + HEALTH + TCP + HTTP):
        load(text)


# --- the locator --------------------------------------------------------------

LOCATED = """\
# a comment with [brackets] = "and quotes"
[global]
router_id = "x"   # trailing [comment]

[[virtual_server]]
address = "10.0.0.1"
[virtual_server.health.tcp]
port = 1
[[virtual_server.real_server]]
weight = 1
[[virtual_server.real_server]]
weight = 2
[virtual_server.real_server.health]
rise = 2

[[virtual_server]]
note = '''
[not_a_header]
key = 1
'''
[[virtual_server.real_server]]
weight = 3
list = [
  "a", # first
  { name = "b",
    weight = -20 },
  [1, 2],
]
dotted.inner = 4
"quoted key" = 5
"""


@pytest.mark.parametrize(
    ("path", "line"),
    [
        ("global", 2),
        ("global.router_id", 3),
        ("virtual_server", 5),
        ("virtual_server[0]", 5),
        ("virtual_server[0].address", 6),
        ("virtual_server[0].health.tcp", 7),
        ("virtual_server[0].health.tcp.port", 8),
        ("virtual_server[0].real_server[0]", 9),
        ("virtual_server[0].real_server[0].weight", 10),
        ("virtual_server[0].real_server[1].weight", 12),
        ("virtual_server[0].real_server[1].health.rise", 14),
        ("virtual_server[1]", 16),
        ("virtual_server[1].note", 17),
        ("virtual_server[1].real_server[0]", 21),
        ("virtual_server[1].real_server[0].weight", 22),
        ("virtual_server[1].real_server[0].list", 23),
        ("virtual_server[1].real_server[0].list[0]", 24),
        ("virtual_server[1].real_server[0].list[1].name", 25),
        ("virtual_server[1].real_server[0].list[1].weight", 26),
        ("virtual_server[1].real_server[0].list[2][1]", 27),
        ("virtual_server[1].real_server[0].dotted.inner", 29),
        ("virtual_server[1].real_server[0].quoted key", 30),
    ],
)
def test_locator_finds_keys(path: str, line: int) -> None:
    assert Locator(LOCATED).exact(path) == line


def test_locator_never_sees_inside_strings() -> None:
    locator = Locator(LOCATED)
    assert locator.exact("not_a_header") is None
    assert locator.exact("virtual_server[1].key") is None


def test_locator_falls_back_to_the_enclosing_table() -> None:
    locator = Locator(LOCATED)
    assert locator.exact("virtual_server[0].health") is None  # only created implicitly
    assert locator.line_of("virtual_server[0].health.http.path") == 5
    assert locator.line_of("virtual_server[0].real_server[1].port") == 11
    assert locator.line_of("vrrp_instance[0].vrid") is None


def test_http_status_codes_take_keepalived_ranges(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(VS + HTTP + 'status_codes = [200, "301-302", 404]\n')
    (vs,) = load_config(str(path)).virtual_servers
    assert vs.health.http.status_codes == (200, 301, 302, 404)
    path.write_text(VS + HTTP)
    (vs,) = load_config(str(path)).virtual_servers
    assert vs.health.http.status_codes == tuple(range(200, 300))  # keepalived's default: 2xx
