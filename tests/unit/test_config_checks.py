"""The HTTPS, UDP and DNS checks' keys, every scheduler, SCTP, and the protocol rule.

Each refusal is located (file:line: key) and all come in one pass, as for
every other key.
"""

from __future__ import annotations

import pytest

from lvsagent.config.loader import ConfigError, parse_config
from lvsagent.config.schema import Config, DnsCheck, TlsCheck, UdpCheck
from tests.unit.sample_configs import MINIMAL


def load(text: str) -> Config:
    return parse_config(text, "c.toml")


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(text)
    return [f"{p.line}: {p.key}: {p.message}" for p in info.value.problems]


def line_of(text: str, needle: str) -> int:
    """The 1-based line of the last line of ``text`` that starts with ``needle``."""
    return max(i for i, line in enumerate(text.splitlines(), 1) if line.startswith(needle))


UDP = MINIMAL.replace("port = 80\n[[", 'port = 53\nprotocol = "udp"\n[[', 1)


def test_a_udp_service_refuses_the_default_tcp_check_at_its_protocol_line() -> None:
    (problem,) = problems(UDP)
    at = line_of(UDP, "protocol")
    assert problem.startswith(f"{at}: virtual_server[0].protocol: a tcp check (the default)")
    assert 'type = "udp" or "dns"' in problem and "allow_tcp_check" in problem


def test_allow_tcp_check_lets_it_pass() -> None:
    config = load(UDP + "[virtual_server.health]\nallow_tcp_check = true\n")
    assert config.virtual_servers[0].health.allow_tcp_check


def test_an_https_check_of_an_sctp_service_is_refused_at_its_type() -> None:
    text = MINIMAL.replace("port = 80\n[[", 'port = 80\nprotocol = "sctp"\n[[', 1)
    text += '[virtual_server.health]\ntype = "https"\n'
    (problem,) = problems(text)
    at = line_of(text, "type")
    assert problem.startswith(f"{at}: virtual_server[0].health.type: a https check of a sctp")


def test_a_dns_check_of_a_tcp_service_is_refused() -> None:
    (problem,) = problems(MINIMAL + '[virtual_server.health]\ntype = "dns"\n')
    assert "a dns check cannot test a tcp service" in problem


def test_a_real_server_with_its_own_check_decides_for_itself() -> None:
    text = UDP + '[virtual_server.real_server.health]\ntype = "dns"\n'
    config = load(text)  # the service's default TCP check is used by no real server
    (rs,) = config.virtual_servers[0].real_servers
    assert rs.health is not None and rs.health.type == "dns"
    tcp = UDP + '[virtual_server.real_server.health]\ntype = "http"\n'
    assert any("real_server[0].health.type: a http check" in p for p in problems(tcp))


def test_udp_dns_and_tls_tables_load_into_their_types(tmp_path: object) -> None:
    text = UDP + """
[virtual_server.health]
type = "udp"
[virtual_server.health.udp]
payload = "0a 1B"
reply = "ff"
min_reply_length = 1
max_reply_length = 512
connect_timeout = 0.5
port = 5353
[virtual_server.health.dns]
type = "aaaa"
name = "www.example.com."
require_answer = true
[virtual_server.health.tls]
server_name = "www.example.com"
"""
    health = load(text).virtual_servers[0].health
    assert health.udp == UdpCheck(
        payload="0a1b", reply="ff", min_reply_length=1, max_reply_length=512,
        connect_timeout=0.5, port=5353,
    )  # fmt: skip
    assert health.dns == DnsCheck(type="AAAA", name="www.example.com.", require_answer=True)
    assert health.tls == TlsCheck(server_name="www.example.com")


def test_every_bad_key_of_the_new_tables_is_reported_at_once() -> None:
    text = UDP + """
[virtual_server.health]
type = "udp"
[virtual_server.health.udp]
payload = "abc"
reply = "zz"
min_reply_length = 9
max_reply_length = 8
[virtual_server.health.dns]
type = "ANY"
name = "bad name"
[virtual_server.health.tls]
ca_file = "/etc/ssl/certs/ca-certificates.crt"
server_name = "a b"
"""
    found = problems(text)
    at = {key: line_of(text, key) for key in ("payload", "reply", "min_", "type", "name",
                                                "ca_file", "server_name")}  # fmt: skip
    expected = [
        f"{at['payload']}: virtual_server[0].health.udp.payload: expected bytes as pairs of hex",
        f"{at['reply']}: virtual_server[0].health.udp.reply: expected bytes as pairs of hex",
        f"{at['min_']}: virtual_server[0].health.udp.min_reply_length: must not exceed max_",
        f"{at['type']}: virtual_server[0].health.dns.type: expected one of A, NS, CNAME, SOA",
        f"{at['name']}: virtual_server[0].health.dns.name: expected a domain name",
        f"{at['server_name']}: virtual_server[0].health.tls.server_name: a server name must be",
        f"{at['ca_file']}: virtual_server[0].health.tls.ca_file: a CA file is used only to",
    ]
    for start in expected:
        assert any(p.startswith(start) for p in found), (start, found)
    assert len(found) == len(expected)


@pytest.mark.parametrize(
    "scheduler",
    ["rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "fo", "ovf", "mh", "twos"],
)
def test_every_kernel_scheduler_loads(scheduler: str) -> None:
    text = MINIMAL.replace("port = 80\n[[", f'port = 80\nscheduler = "{scheduler}"\n[[', 1)
    assert load(text).virtual_servers[0].scheduler == scheduler


def test_scheduler_flags_belong_to_sh_and_mh() -> None:
    text = MINIMAL.replace(
        "port = 80\n[[", 'port = 80\nscheduler = "mh"\nscheduler_flags = ["sh-port"]\n[[', 1
    )
    (problem,) = problems(text)
    assert "scheduler 'mh' takes 'mh-fallback', 'mh-port'; got 'sh-port'" in problem


def test_use_vmac_and_its_interface_name() -> None:
    on = MINIMAL.replace('vrid = 1\n', 'vrid = 1\nuse_vmac = true\n', 1)
    assert load(on).vrrp_instances[0].vmac_name == "vrrp.1"  # keepalived's name
    named = on.replace("use_vmac = true\n", 'use_vmac = true\nvmac_interface = "vip1"\n')
    assert load(named).vrrp_instances[0].vmac_name == "vip1"
    (alone,) = problems(MINIMAL.replace('vrid = 1\n', 'vrid = 1\nvmac_interface = "vip1"\n', 1))
    assert "vrrp_instance[0].vmac_interface: names the use_vmac interface" in alone
    same = on.replace("use_vmac = true\n", 'use_vmac = true\nvmac_interface = "lo"\n')
    assert any("must differ from interface (lo)" in p for p in problems(same))
