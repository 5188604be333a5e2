"""On the wire: tshark's VRRP dissector checks what lvsagent sends."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.netns.conftest import Pair
from tests.netns.lab import agent_config, start_agent


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
    tshark = shutil.which("tshark")
    if tshark is None:
        raise pytest.UsageError("tshark is not installed: run `make deps`")
    pcap = pair.tmp / "vrrp.pcap"
    # Capture first, then start the agent: the capture ends after 3 adverts.
    cap = pair.b.popen(
        [tshark, "-i", "eth0", "-f", "ip proto 112", "-c", "3", "-w", str(pcap)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        assert cap.stderr is not None
        for line in cap.stderr:  # "Capturing on 'eth0'" means the filter is live
            if "Capturing on" in line:
                break
        cfg = agent_config(
            pair.tmp / "a.toml",
            interface="eth0",
            priority=100,
            version=version,
            advert_int=0.1 if version == 3 else 1,
            extra=extra,
        )
        pair.track(start_agent(pair.a, cfg, "agent-a"))
        cap.wait(20)
    finally:
        if cap.poll() is None:
            cap.kill()
            cap.wait()
        if cap.stderr is not None:
            cap.stderr.close()
    out = subprocess.run(
        [
            tshark,
            "-r",
            str(pcap),
            *prefs,
            "-T",
            "fields",
            "-e",
            "ip.ttl",
            "-e",
            "vrrp.version",
            "-e",
            "vrrp.checksum.status",
            "-e",
            "vrrp.virt_rtr_id",
            "-e",
            "vrrp.ip_addr",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\n")
    rows = [line.split("\t") for line in out if line]
    assert len(rows) == 3
    for ttl, ver, status, vrid, addr in rows:
        assert (ttl, ver, vrid, addr) == ("255", str(version), "51", "10.99.0.100")
        assert status == "1", "Wireshark's checksum status 1 is Good"


def test_gratuitous_arp_bursts_on_becoming_master(pair: Pair) -> None:
    """5 announcements at the takeover and 5 more garp_master_delay (1 s here) later."""
    tshark = shutil.which("tshark")
    if tshark is None:
        raise pytest.UsageError("tshark is not installed: run `make deps`")
    pcap = pair.tmp / "arp.pcap"
    cap = pair.b.popen(
        [tshark, "-i", "eth0", "-f", "arp", "-c", "10", "-w", str(pcap)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        assert cap.stderr is not None
        for line in cap.stderr:
            if "Capturing on" in line:
                break
        cfg = agent_config(
            pair.tmp / "a.toml", interface="eth0", priority=100, version=3, advert_int=0.1
        )
        agent = pair.track(start_agent(pair.a, cfg, "agent-a"))
        agent.wait_for(r"-> MASTER", 5)
        cap.wait(20)
    finally:
        if cap.poll() is None:
            cap.kill()
            cap.wait()
        if cap.stderr is not None:
            cap.stderr.close()
    mac = pair.a.run("cat", "/sys/class/net/eth0/address").stdout.strip()
    out = subprocess.run(
        [
            tshark,
            "-r",
            str(pcap),
            "-T",
            "fields",
            "-e",
            "frame.time_relative",
            "-e",
            "eth.dst",
            "-e",
            "arp.opcode",
            "-e",
            "arp.src.hw_mac",
            "-e",
            "arp.src.proto_ipv4",
            "-e",
            "arp.dst.proto_ipv4",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\n")
    rows = [line.split("\t") for line in out if line]
    assert len(rows) == 10
    for _, dst, op, src_mac, spa, tpa in rows:
        assert (dst, op, src_mac, spa, tpa) == (
            "ff:ff:ff:ff:ff:ff",
            "1",
            mac,
            "10.99.0.100",
            "10.99.0.100",
        )
    times = [float(r[0]) for r in rows]
    # Two bursts: the second one starts clearly after the first one ended.
    assert times[5] - times[4] > 0.5 > times[4] - times[0]
