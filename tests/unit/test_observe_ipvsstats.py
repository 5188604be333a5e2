"""The IPVS statistics reader: replies encoded by pyroute2 (an independent encoder) parse back.

The kernel side is exercised in the lab; on the host (no IPVS) the reader says
"no IPVS" without raising, which is what a scrape needs.
"""

from __future__ import annotations

import os
import socket
import threading
from typing import Any

import pytest
from pyroute2.netlink.generic import ipvs as pr_ipvs

from lvsagent.observe import ipvsstats
from lvsagent.observe.ipvsstats import Counters, parse_dest, parse_service

ALL_STATS = [
    ("IPVS_STATS_ATTR_CONNS", 7),
    ("IPVS_STATS_ATTR_INPKTS", 70),
    ("IPVS_STATS_ATTR_OUTPKTS", 60),
    ("IPVS_STATS_ATTR_INBYTES", 2**40 + 1),
    ("IPVS_STATS_ATTR_OUTBYTES", 5000),
    ("IPVS_STATS_ATTR_CPS", 1),
    ("IPVS_STATS_ATTR_INPPS", 2),
    ("IPVS_STATS_ATTR_OUTPPS", 3),
    ("IPVS_STATS_ATTR_INBPS", 400),
    ("IPVS_STATS_ATTR_OUTBPS", 500),
]
EXPECTED = Counters(7, 70, 60, 2**40 + 1, 5000, 1, 2, 3, 400, 500)
host_without_ipvs = pytest.mark.skipif(
    os.path.exists("/proc/net/ip_vs"), reason="this kernel has IPVS (the lab tests cover it)"
)


def nested(cmd_attr: str, attrs: list[tuple[str, Any]]) -> bytes:
    """The payload of ``cmd_attr`` in a message pyroute2 encoded."""
    msg = pr_ipvs.ipvsmsg()
    msg["cmd"] = pr_ipvs.IPVS_CMD_NEW_SERVICE
    msg["version"] = 1
    msg["attrs"] = [(cmd_attr, {"attrs": attrs})]
    msg["header"]["type"] = 30
    msg.encode()
    top = dict(ipvsstats.attributes(bytes(msg.data), 20))  # after nlmsghdr and genlmsghdr
    return top[1 if cmd_attr == "IPVS_CMD_ATTR_SERVICE" else 2]


def test_a_tcp_service_with_64_bit_stats() -> None:
    payload = nested(
        "IPVS_CMD_ATTR_SERVICE",
        [
            ("IPVS_SVC_ATTR_AF", socket.AF_INET),
            ("IPVS_SVC_ATTR_PROTOCOL", 6),
            ("IPVS_SVC_ATTR_ADDR", "172.16.0.30"),
            ("IPVS_SVC_ATTR_PORT", 80),
            ("IPVS_SVC_ATTR_SCHED_NAME", "wlc"),
            ("IPVS_SVC_ATTR_STATS64", {"attrs": ALL_STATS}),
        ],
    )
    service, key = parse_service(payload)
    assert service.label == "172.16.0.30:80/tcp"
    assert service.counters == EXPECTED
    # The key echoed into the dest dump: family, protocol, address, port (no stats, no scheduler).
    assert [kind for kind, _ in key] == [1, 2, 3, 4]


def test_a_fwmark_service_falls_back_to_32_bit_stats() -> None:
    payload = nested(
        "IPVS_CMD_ATTR_SERVICE",
        [
            ("IPVS_SVC_ATTR_AF", socket.AF_INET),
            ("IPVS_SVC_ATTR_FWMARK", 5),
            ("IPVS_SVC_ATTR_STATS", {"attrs": [("IPVS_STATS_ATTR_CONNS", 9)]}),
        ],
    )
    service, key = parse_service(payload)
    assert service.label == "fwmark 5"
    assert service.counters == Counters(conns=9)
    assert [kind for kind, _ in key] == [1, 5]


def test_a_dest() -> None:
    payload = nested(
        "IPVS_CMD_ATTR_DEST",
        [
            ("IPVS_DEST_ATTR_ADDR", "172.16.0.31"),
            ("IPVS_DEST_ATTR_PORT", 8080),
            ("IPVS_DEST_ATTR_FWD_METHOD", 3),
            ("IPVS_DEST_ATTR_WEIGHT", 4),
            ("IPVS_DEST_ATTR_ACTIVE_CONNS", 11),
            ("IPVS_DEST_ATTR_INACT_CONNS", 12),
            ("IPVS_DEST_ATTR_PERSIST_CONNS", 13),
            ("IPVS_DEST_ATTR_ADDR_FAMILY", socket.AF_INET),
            ("IPVS_DEST_ATTR_STATS64", {"attrs": ALL_STATS}),
        ],
    )
    dest = parse_dest(payload)
    assert dest.address == "172.16.0.31:8080"
    assert (dest.weight, dest.active_conns, dest.inactive_conns, dest.persistent_conns) == (
        4, 11, 12, 13,
    )  # fmt: skip
    assert dest.counters == EXPECTED


def test_a_truncated_attribute_is_an_error_not_garbage() -> None:
    data = ipvsstats.encode_attribute(1, b"\x01\x00\x00\x00")
    with pytest.raises(ValueError, match="overruns"):
        list(ipvsstats.attributes(data[:-2]))


def test_encode_attribute_pads_to_four_bytes() -> None:
    data = ipvsstats.encode_attribute(2, b"IPVS\0")
    assert len(data) == 12
    assert list(ipvsstats.attributes(data)) == [(2, b"IPVS\0")]


@host_without_ipvs
def test_this_kernel_without_ipvs_reads_as_none_from_any_thread() -> None:
    """The host has no IPVS: the family lookup answers ENOENT and the reader says so."""
    results: list[object] = []
    threads = [
        threading.Thread(target=lambda: results.append(ipvsstats.read_ipvs_stats()))
        for _ in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [None, None, None]


@host_without_ipvs
def test_the_family_lookup_finds_a_family_that_exists() -> None:
    dumper = ipvsstats.GenlDumper()
    try:
        assert dumper.family_id("nlctrl") == ipvsstats.GENL_ID_CTRL
        assert dumper.family_id("IPVS") is None  # the host kernel has no IPVS
    finally:
        dumper.close()
