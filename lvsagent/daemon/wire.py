"""One VRRP instance's packets: adverts in (checked, counted), adverts and ARP out.

Kept apart from the runner (instance.py), which decides what to do with them:
here only what each packet costs or says is counted, and nothing raises into
a decision.  A received datagram is checked in the reader callback, so that a
flood of invalid packets costs a counter increment each and never enters the
runner's event queue; a send that fails is logged, and an advert that does
not fit the wire format (more addresses than its count byte holds) is counted,
since raising there would stop the instance with its addresses up.
"""

from __future__ import annotations

import ipaddress
import logging
from collections import Counter
from dataclasses import dataclass, field

from lvsagent.config.schema import VrrpInstance
from lvsagent.daemon.derive import advert, rx_policy
from lvsagent.vrrp.addresses import LinkInfo
from lvsagent.vrrp.io import VRRP_GROUP, ArpSender, VrrpSocket
from lvsagent.vrrp.packet import Advert, Discard, EncodeError, encode, pass_auth_data
from lvsagent.vrrp.receive import accept

log = logging.getLogger("lvsagent.vrrp")


@dataclass
class Counters:
    adverts_sent: int = 0
    adverts_received: int = 0
    priority_zero_sent: int = 0
    priority_zero_received: int = 0
    transitions: int = 0
    become_master: int = 0
    release_master: int = 0
    # Adverts not sent because they do not fit the wire format (more than 255 VIPs).
    adverts_unencodable: int = 0
    discards: Counter[str] = field(default_factory=Counter)


@dataclass(frozen=True)
class Received:
    advert: Advert
    src: ipaddress.IPv4Address


class InstanceWire:
    def __init__(
        self,
        tag: str,
        inst: VrrpInstance,
        index: int,
        mac: str,
        source: ipaddress.IPv4Address,
        counters: Counters,
        vmac: LinkInfo | None = None,
    ) -> None:
        """``vmac``: use_vmac's interface, which adverts and gratuitous ARP leave from."""
        self.tag, self.inst, self.source, self.counters = tag, inst, source, counters
        self.auth = pass_auth_data(inst.auth_pass if inst.version == 2 else None)
        self.policy = rx_policy(inst, source, self.auth)
        self.destinations = list(inst.unicast_peers) or [VRRP_GROUP]
        self._warned: set[str] = set()
        tx = (vmac.ifname, vmac.index) if vmac is not None else None
        self.sock = VrrpSocket(
            inst.interface, index, source, inst.is_unicast, inst.unicast_ttl, tx
        )
        try:
            self.arp = ArpSender(*((vmac.ifname, vmac.mac) if vmac else (inst.interface, mac)))
        except BaseException:
            self.sock.close()
            raise

    def fileno(self) -> int:
        return self.sock.fileno()

    def reconfigure(self, inst: VrrpInstance) -> None:
        """A reload's tunables (the identity, hence the sockets, never changes)."""
        self.inst = inst
        self.policy = rx_policy(inst, self.source, self.auth)
        self.destinations = list(inst.unicast_peers) or [VRRP_GROUP]

    def receive(self, limit: int | None) -> list[Received]:
        """Check up to ``limit`` waiting datagrams (None: all); the accepted adverts, in order."""
        accepted = []
        taken = 0
        while limit is None or taken < limit:
            taken += 1
            raw = self.sock.recv()
            if raw is None:
                break
            try:
                adv, ip = accept(raw, self.policy)
            except Discard as exc:
                self._count_discard(exc)
                continue
            self.counters.adverts_received += 1
            if adv.priority == 0:
                self.counters.priority_zero_received += 1
            accepted.append(Received(adv, ip.src))
        return accepted

    def _count_discard(self, exc: Discard) -> None:
        reason = exc.reason.value
        self.counters.discards[reason] += 1
        # The first of each kind is worth an operator's attention; the rest are counted.
        if reason not in self._warned:
            self._warned.add(reason)
            log.warning("%s: discarding VRRP packet: %s (further ones only counted)", self.tag, exc)

    def send_advert(self, priority: int) -> None:
        """Never raises: a failed send is logged, an advert that cannot be encoded counted."""
        adv = advert(self.inst, priority, self.auth)
        for dst in self.destinations:
            try:
                message = encode(adv, self.source, dst)
            except EncodeError as exc:
                self.counters.adverts_unencodable += 1
                if self.counters.adverts_unencodable == 1:
                    log.error(
                        "%s: cannot send adverts: %s; the peer will take over. Fix the "
                        "instance in the config (further ones only counted)",
                        self.tag,
                        exc,
                    )
                return
            try:
                self.sock.send(message, dst)
            except OSError as exc:
                log.error("%s: cannot send advert to %s: %s", self.tag, dst, exc)
                continue
            self.counters.adverts_sent += 1
            if priority == 0:
                self.counters.priority_zero_sent += 1

    def announce(self, repeat: int) -> None:
        """Gratuitous ARP for every virtual address, ``repeat`` times; never raises."""
        try:
            self.arp.announce([a.ip for a in self.inst.virtual_addresses], repeat)
        except OSError as exc:
            log.error("%s: cannot send gratuitous ARP: %s", self.tag, exc)

    def close(self) -> None:
        self.sock.close()
        self.arp.close()
