"""keepalived's SSL_GET, UDP_CHECK and DNS_CHECK, and every scheduler and SCTP, converted.

Each case converts a keepalived.conf snippet and reads the TOML back through
``lvsagent check``'s loader (the conversion always passes it).
"""

from __future__ import annotations

import tomllib
from typing import Any

from lvsagent.config.loader import parse_config
from lvsagent.convert.conversion import convert
from lvsagent.convert.lexer import Source

VRRP = """
vrrp_instance VI_1 {
    interface eth0
    virtual_router_id 51
    priority 100
    virtual_ipaddress {
        192.0.2.100
    }
}
"""


PATH = "/etc/keepalived/keepalived.conf"


def one_file(text: str) -> Source:
    """keepalived.conf alone: no includes to read."""
    return Source(read=lambda path: text.encode(), glob=lambda pattern: [])


def converted(service: str) -> tuple[dict[str, Any], list[str]]:
    result = convert(PATH, one_file(VRRP + service), None)
    found = [str(f) for f in result.findings.sorted()]
    assert result.toml is not None, found
    parse_config(result.toml, "converted.toml")  # the TOML passes check
    return tomllib.loads(result.toml), found


def test_ssl_get_is_an_https_check_with_sni_from_virtualhost() -> None:
    toml, _ = converted("""
virtual_server 192.0.2.100 443 {
    protocol TCP
    real_server 192.0.2.1 443 {
        SSL_GET {
            url {
                path /health
                status_code 200
            }
            virtualhost www.example.com
            enable_sni
        }
    }
}
""")
    health = toml["virtual_server"][0]["health"]
    assert health["type"] == "https"
    assert health["http"]["host"] == "www.example.com"
    assert health["tls"] == {"verify": False, "server_name": "www.example.com"}


def test_udp_check_keeps_payload_reply_and_keepalived_reply_limit() -> None:
    toml, _ = converted("""
virtual_server 192.0.2.100 5060 {
    protocol UDP
    real_server 192.0.2.1 5060 {
        UDP_CHECK {
            payload 4f5054494f4e53
            require_reply 5349502f
            connect_timeout 2
        }
    }
}
""")
    health = toml["virtual_server"][0]["health"]
    assert health["type"] == "udp"
    assert health["udp"] == {
        "payload": "4f5054494f4e53", "require_reply": True, "reply": "5349502f",
        "max_reply_length": 255, "connect_timeout": 2,
    }  # fmt: skip


def test_dns_check_has_keepalived_defaults_and_retries() -> None:
    toml, _ = converted("""
virtual_server 192.0.2.100 53 {
    protocol UDP
    real_server 192.0.2.1 53 {
        DNS_CHECK {
            type A
            name www.example.com
        }
    }
}
""")
    health = toml["virtual_server"][0]["health"]
    assert health["type"] == "dns" and health["retry"] == 3
    assert health["dns"] == {"type": "A", "name": "www.example.com", "timeout": 5}


def test_tcp_check_of_a_udp_service_says_allow_tcp_check() -> None:
    toml, found = converted("""
virtual_server 192.0.2.100 53 {
    protocol UDP
    real_server 192.0.2.1 53 {
        TCP_CHECK {
        }
    }
}
""")
    assert toml["virtual_server"][0]["health"]["allow_tcp_check"] is True
    assert any("allow_tcp_check" in f for f in found)


def test_udp_check_of_a_tcp_service_checks_nothing() -> None:
    toml, found = converted("""
virtual_server 192.0.2.100 80 {
    protocol TCP
    real_server 192.0.2.1 80 {
        UDP_CHECK {
        }
    }
}
""")
    assert toml["virtual_server"][0]["health"]["type"] == "none"
    assert any("cannot test a TCP service" in f for f in found)


def test_every_kernel_scheduler_and_sctp_convert() -> None:
    for scheduler in ("lblc", "lblcr", "dh", "sed", "nq", "fo", "ovf", "twos"):
        toml, _ = converted(f"""
virtual_server 192.0.2.100 9 {{
    protocol SCTP
    lb_algo {scheduler}
    real_server 192.0.2.1 9 {{
    }}
}}
""")
        vs = toml["virtual_server"][0]
        assert (vs["scheduler"], vs["protocol"]) == (scheduler, "sctp")


def test_use_vmac_with_a_name() -> None:
    path = PATH
    text = VRRP.replace("    priority 100\n", "    priority 100\n    use_vmac vip51\n")
    result = convert(path, one_file(text), None)
    assert result.toml is not None
    inst = tomllib.loads(result.toml)["vrrp_instance"][0]
    assert (inst["use_vmac"], inst["vmac_interface"]) == (True, "vip51")
