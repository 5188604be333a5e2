"""IPVS services and destinations as value objects with explicit identity keys.

Equality compares configured fields only: kernel counters and rates never
make two entries differ (seesaw's rule), so a dump of an unchanged table
plans to nothing.  Every field that the kernel would otherwise default is
written here, because pyroute2 fills omitted ones with its own defaults
(``wlc``, DR, weight 1): we always send whole entries.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Literal

Protocol = Literal["tcp", "udp", "sctp"]
Forwarding = Literal["dr", "nat", "tun"]

# Kernel values (include/uapi/linux/ip_vs.h).
IPPROTO = {"tcp": 6, "udp": 17, "sctp": 132}
FWD_METHOD = {"nat": 0, "tun": 2, "dr": 3}  # IP_VS_CONN_F_MASQ / TUNNEL / DROUTE
IP_VS_SVC_F_PERSISTENT = 0x0001
IP_VS_SVC_F_HASHED = 0x0002  # set by the kernel; never compared
SCHED_FLAGS = {  # IP_VS_SVC_F_SCHED1/2 mean different things per scheduler
    "sh-fallback": 0x0008,
    "sh-port": 0x0010,
    "mh-fallback": 0x0008,
    "mh-port": 0x0010,
}


@dataclass(frozen=True, order=True)
class ServiceKey:
    """Either (protocol, address, port) or a firewall mark."""

    fwmark: int = 0
    protocol: Protocol = "tcp"
    address: ipaddress.IPv4Address = ipaddress.IPv4Address(0)  # noqa: RUF009 - immutable
    port: int = 0
    _hash: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Keys are hashed by the thousand in every plan and health reaction, and the default
        # dataclass hash goes through IPv4Address's, hex() each time: computed once here.
        hashed = hash((self.fwmark, IPPROTO[self.protocol], int(self.address), self.port))
        object.__setattr__(self, "_hash", hashed)

    def __hash__(self) -> int:
        return self._hash

    def __str__(self) -> str:
        if self.fwmark:
            return f"fwmark {self.fwmark}"
        return f"{self.protocol.upper()} {self.address}:{self.port}"


@dataclass(frozen=True, order=True)
class DestKey:
    address: ipaddress.IPv4Address
    port: int
    _hash: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_hash", hash((int(self.address), self.port)))  # as ServiceKey

    def __hash__(self) -> int:
        return self._hash

    def __str__(self) -> str:
        return f"{self.address}:{self.port}"


@dataclass(frozen=True)
class Dest:
    key: DestKey
    weight: int = 1
    forwarding: Forwarding = "dr"
    u_threshold: int = 0
    l_threshold: int = 0


@dataclass(frozen=True)
class Service:
    key: ServiceKey
    scheduler: str = "wlc"
    flags: frozenset[str] = frozenset()  # scheduler flags by name, e.g. "sh-port"
    persistence_timeout: int = 0  # 0 = not persistent
    persistence_netmask: ipaddress.IPv4Address = ipaddress.IPv4Address("255.255.255.255")  # noqa: RUF009
    dests: tuple[Dest, ...] = field(default=())

    def attributes(self) -> Service:
        """The service alone, without destinations: what a service "set" compares."""
        return Service(
            self.key,
            self.scheduler,
            self.flags,
            self.persistence_timeout,
            self.persistence_netmask,
        )

    def dest_map(self) -> dict[DestKey, Dest]:
        return {d.key: d for d in self.dests}


@dataclass(frozen=True)
class Table:
    """A whole IPVS table (one network namespace), keyed for diffing."""

    services: tuple[Service, ...] = ()

    def service_map(self) -> dict[ServiceKey, Service]:
        return {s.key: s for s in self.services}
