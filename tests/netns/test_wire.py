"""On the wire: tshark's dissectors check what lvsagent sends (VRRP checksums, ARP)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.netns.conftest import Pair
from tests.netns.lab import agent_config, capture, fields, start_agent


def capture_agent_start(
    pair: Pair, capture_filter: str, count: int, version: int, extra: str = ""
) -> Path:
    """Capture ``count`` frames on B's side while agent A starts and becomes master."""
    pcap = pair.tmp / "capture.pcap"
    with capture(pair.b, capture_filter, count, pcap):
        cfg = agent_config(
            pair.tmp / "a.toml",
            interface="eth0",
            priority=100,
            version=version,
            advert_int=0.1 if version == 3 else 1,
            extra=extra,
        )
        pair.track(start_agent(pair.a, cfg, "agent-a"))
    return pcap


@pytest.mark.parametrize(
    ("version", "extra", "prefs"),
    [
        pytest.param(2, "", [], id="v2-pass"),
        pytest.param(3, 'v3_checksum = "pseudo_header"', [], id="v3-pseudo-header"),
        # RFC 9568's form; Wireshark checks it when told to sum the message alone.
        pytest.param(
            3,
            'v3_checksum = "message_only"',
            ["-o", "vrrp.v3_checksum_as_in_v2:TRUE"],
            id="v3-message-only",
        ),
    ],
)
def test_tshark_reports_good_checksums(
    pair: Pair, version: int, extra: str, prefs: list[str]
) -> None:
    pcap = capture_agent_start(pair, "ip proto 112", 3, version, extra)
    rows = fields(
        pcap,
        ["ip.ttl", "vrrp.version", "vrrp.checksum.status", "vrrp.virt_rtr_id", "vrrp.ip_addr"],
        prefs,
    )
    assert len(rows) == 3
    for ttl, ver, status, vrid, addr in rows:
        assert (ttl, ver, vrid, addr) == ("255", str(version), "51", "10.99.0.100")
        assert status == "1", "Wireshark's checksum status 1 is Good"


def test_gratuitous_arp_bursts_on_becoming_master(pair: Pair) -> None:
    """5 announcements at the takeover and 5 more garp_master_delay (1 s here) later.

    garp_repeat is 5, so ten announcements exist only if the second burst came;
    its timing is pinned on the fake clock (test_machine), not measured here.
    """
    pcap = capture_agent_start(pair, "arp", 10, version=3)
    mac = pair.a.run("cat", "/sys/class/net/eth0/address").stdout.strip()
    rows = fields(
        pcap,
        ["eth.dst", "arp.opcode", "arp.src.hw_mac", "arp.src.proto_ipv4", "arp.dst.proto_ipv4"],
    )
    assert len(rows) == 10
    for dst, op, src_mac, spa, tpa in rows:
        announcement = ("ff:ff:ff:ff:ff:ff", "1", mac, "10.99.0.100", "10.99.0.100")
        assert (dst, op, src_mac, spa, tpa) == announcement
