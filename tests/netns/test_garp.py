"""The first gratuitous ARP burst after a link flap goes out.

Why: the ARP packet socket, bound to its interface, was told ENETDOWN when the link
went down, and kept that error until its next send: the next takeover's burst failed
at its first frame, and with garp_master_delay = 0 no announcement went out at all.
"""

from __future__ import annotations

import signal

from tests.netns.conftest import Pair
from tests.netns.lab import capture, fields

VIP = "10.99.0.100"


def test_takeover_after_a_link_flap_announces_the_vip(pair: Pair) -> None:
    # One burst of 5 at the takeover, none later: the first burst is all there is.
    ca, cb = pair.configs(version=3, advert_int=0.1, extra="garp_master_delay = 0")
    for cfg in (ca, cb):
        cfg.write_text(cfg.read_text().replace("garp_master_delay = 1\n", ""))
    da, db = pair.settled_pair(ca, cb)
    mark = db.mark()
    pair.b.run("ip", "link", "set", "eth0", "down")
    db.wait_for(r"BACKUP -> FAULT", 5, after=mark)
    pair.b.run("ip", "link", "set", "eth0", "up")
    db.wait_for(r"FAULT -> BACKUP", 5, after=mark)
    db.wait_for(r"master is 10\.99\.0\.1 ", 5, after=mark)

    mac = pair.b.run("cat", "/sys/class/net/eth0/address").stdout.strip()
    pcap = pair.tmp / "garp.pcap"
    with capture(pair.a, f"arp and ether src {mac}", 5, pcap):  # ends at its fifth frame
        mark = db.mark()
        da.signal(signal.SIGKILL)
        db.wait_for(r"BACKUP -> MASTER", 5, after=mark)
    assert not [line for line in db.lines[mark:] if "cannot send gratuitous ARP" in line]
    rows = fields(pcap, ["arp.opcode", "arp.src.proto_ipv4", "arp.dst.proto_ipv4"])
    assert rows == [["1", VIP, VIP]] * 5
