"""Converting any input ends in valid TOML or a clean refusal: no exception, no hang.

Random bytes, keepalived-looking token soup, deep nesting, include cycles and
self-referencing parameters; every result is either refused with located errors
or TOML that lvsagent check accepts.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lvsagent.config.loader import parse_config
from lvsagent.convert.conversion import convert
from lvsagent.convert.findings import EXIT_REFUSED
from lvsagent.convert.lexer import Limits, Source

TOKENS = [
    "vrrp_instance", "VI_1", "interface", "eth0", "virtual_router_id", "51", "priority",
    "255", "0", "virtual_ipaddress", "192.0.2.1/24", "192.0.2.1", "::1", "authentication",
    "auth_type", "PASS", "AH", "auth_pass", "12345678901", "virtual_server", "80", "fwmark",
    "real_server", "TCP_CHECK", "HTTP_GET", "url", "path", "/", "status_code", "200-299",
    "lb_kind", "DR", "NAT", "lb_algo", "rr", "dh", "protocol", "TCP", "UDP", "delay_loop",
    "persistence_timeout", "sorry_server", "quorum", "unicast_peer", "unicast_src_ip",
    "nopreempt", "preempt_delay", "advert_int", "0.5", "version", "3", "track_interface",
    "weight", "-10", "include", "x.conf", "@a", "@^a", "$V=", "$V", "${V}", "~SEQ(I,1,3)",
    "{", "}", "#", "!", '"', "'", "\\", "global_defs", "router_id", "lvs_sync_daemon",
    "garp_master_repeat", "inhibit_on_failure", "alpha", "connect_port", "nb_get_retry",
]  # fmt: skip
LIMITS = Limits(total_bytes=200_000, total_lines=5_000, line_chars=4_000, substitutions=32)


def source(files: dict[str, bytes]) -> Source:
    def read(path: str) -> bytes:
        if path not in files:
            raise FileNotFoundError(2, "No such file or directory", path)
        return files[path]

    return Source(read=read, glob=lambda pattern: sorted(p for p in files if p == pattern))


def outcome(files: dict[str, bytes]) -> None:
    result = convert("/k/main.conf", source(files), "a", LIMITS)
    if result.toml is None:
        assert result.exit_status == EXIT_REFUSED and result.findings.of("error")
    else:
        parse_config(result.toml, "converted.toml")


lines = st.lists(st.sampled_from(TOKENS), min_size=0, max_size=8).map(" ".join)
texts = st.lists(lines, max_size=60).map("\n".join)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(main=texts, included=texts)
def test_token_soup(main: str, included: str) -> None:
    outcome({"/k/main.conf": main.encode(), "/k/x.conf": included.encode()})


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=4000))
def test_random_bytes(data: bytes) -> None:
    outcome({"/k/main.conf": data})


@settings(max_examples=50, deadline=None)
@given(depth=st.integers(0, 3000), body=lines)
def test_deep_nesting(depth: int, body: str) -> None:
    text = "vrrp_instance VI_1 {\n" * depth + body + "\n" + "}\n" * depth
    outcome({"/k/main.conf": text.encode()})


def test_include_cycle_between_two_files() -> None:
    outcome({"/k/main.conf": b"include x.conf\n", "/k/x.conf": b"include main.conf\n"})


def test_huge_file_is_refused_by_its_size() -> None:
    outcome({"/k/main.conf": b"vrrp_instance VI_1 {\n" + b"priority 1\n" * 100_000 + b"}\n"})


def test_parameter_growing_without_end() -> None:
    outcome({"/k/main.conf": b"$A=${A}${A}\nx ${A}\n"})
