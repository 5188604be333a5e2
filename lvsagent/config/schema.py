"""The whole product's configuration, as frozen value objects.

Every default lives here, written out, so that no behaviour is inherited from a
library's default (pyroute2 silently gives a service ``wlc`` and a destination
DR with weight 1; we never rely on that).  The loader fills these from TOML;
everything downstream reads only these types.
"""

from __future__ import annotations

import functools
import ipaddress
from dataclasses import dataclass, field
from typing import Literal

from lvsagent.config.scriptschema import (
    Command,
    Hooks,
    ParamMatch,
    SyncGroup,
    TrackFile,
    TrackProcess,
    TrackRef,
    VrrpScript,
)

__all__ = [
    "DEFAULT_CONFIG_PATH",
    "VRRP_MULTICAST_GROUP",
    "CheckType",
    "Command",
    "Config",
    "DnsCheck",
    "Forwarding",
    "Global",
    "GuardMode",
    "HealthCheck",
    "Hooks",
    "HttpCheck",
    "MiscCheck",
    "OnFailure",
    "ParamMatch",
    "RealServer",
    "Scheduler",
    "ServiceProtocol",
    "SyncGroup",
    "TcpCheck",
    "TlsCheck",
    "TrackFile",
    "TrackInterface",
    "TrackProcess",
    "TrackRealServer",
    "TrackRef",
    "UdpCheck",
    "V3Checksum",
    "VirtualServer",
    "VrrpInstance",
    "VrrpScript",
    "VrrpVersion",
]

VrrpVersion = Literal[2, 3]
# "pseudo_header" is what keepalived sends by default for VRRPv3 over IPv4;
# "message_only" is RFC 9568's reading.  Receive accepts both either way.
V3Checksum = Literal["pseudo_header", "message_only"]
GuardMode = Literal["bypass", "fwmark", "backup_only"]
ServiceProtocol = Literal["tcp", "udp", "sctp"]
# Every scheduler Linux's IPVS has (net/netfilter/ipvs/ip_vs_*.c), as ipvsadm -s names them.
Scheduler = Literal[
    "rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "fo", "ovf", "mh", "twos"
]
Forwarding = Literal["dr", "nat", "tun"]
# keepalived: TCP_CHECK, HTTP_GET, SSL_GET, UDP_CHECK, DNS_CHECK, MISC_CHECK.
CheckType = Literal["tcp", "http", "https", "udp", "dns", "misc", "none"]
OnFailure = Literal["drain", "remove"]

DEFAULT_CONFIG_PATH = "/etc/lvsagent/lvsagent.toml"
VRRP_MULTICAST_GROUP = "224.0.0.18"


@dataclass(frozen=True)
class TrackInterface:
    """An interface whose loss lowers priority by ``weight``, or means FAULT when weight is 0."""

    name: str
    weight: int = 0


@dataclass(frozen=True)
class TrackRealServer:
    """A real server whose health decides this instance's priority, as keepalived's track_script.

    It must be a real server of some virtual server, so that it is health-checked.
    Same weight rule as TrackInterface: 0 means FAULT while it is down, a negative
    weight is added while it is down, a positive one while it is up.  A box whose own
    service is dead then hands the VIP over.
    """

    address: ipaddress.IPv4Address
    port: int
    weight: int = 0


@dataclass(frozen=True)
class VrrpInstance:
    name: str
    interface: str
    vrid: int
    priority: int = 100
    advert_int: float = 1.0  # seconds; v2 needs whole seconds, v3 takes centiseconds
    version: VrrpVersion = 2
    v3_checksum: V3Checksum = "pseudo_header"
    preempt: bool = True
    preempt_delay: float = 0.0  # seconds after startup / first lower master seen
    unicast_src: ipaddress.IPv4Address | None = None
    unicast_peers: tuple[ipaddress.IPv4Address, ...] = ()
    unicast_ttl: int = 255
    # RFC 5798 7.1 requires TTL 255 on receive; unicast across a router can relax it.
    check_ttl: bool = True
    auth_pass: str | None = None  # VRRPv2 simple password (auth type 1), at most 8 bytes
    virtual_addresses: tuple[ipaddress.IPv4Interface, ...] = ()
    track_interfaces: tuple[TrackInterface, ...] = ()
    track_real_servers: tuple[TrackRealServer, ...] = ()
    track_scripts: tuple[TrackRef, ...] = ()
    track_files: tuple[TrackRef, ...] = ()
    track_processes: tuple[TrackRef, ...] = ()
    hooks: Hooks = field(default_factory=Hooks)
    # keepalived defaults: 5 gratuitous ARPs at once, 5 more after 5 s.
    garp_repeat: int = 5
    garp_master_delay: float = 5.0
    garp_master_repeat: int = 5
    # A master hearing a lower-priority master announces the VIP again (keepalived's default).
    garp_lower_prio_repeat: int = 5
    # keepalived's use_vmac: the VIPs, adverts and gratuitous ARP go through a macvlan
    # interface with the RFC's virtual MAC 00:00:5e:00:01:VRID (RFC 5798 7.3).
    use_vmac: bool = False
    vmac_interface: str | None = None  # None: keepalived's name, "vrrp.VRID"

    @property
    def is_unicast(self) -> bool:
        return bool(self.unicast_peers)

    @property
    def vmac_name(self) -> str:
        """The macvlan interface's name when use_vmac is on."""
        return self.vmac_interface or f"vrrp.{self.vrid}"


@dataclass(frozen=True)
class TcpCheck:
    connect_timeout: float = 3.0
    # The port to probe; None means the real server's own port.
    port: int | None = None


@dataclass(frozen=True)
class HttpCheck:
    path: str = "/"
    # keepalived's default: any 2xx.
    status_codes: tuple[int, ...] = tuple(range(200, 300))
    body_contains: str | None = None
    host: str | None = None
    timeout: float = 3.0
    port: int | None = None


@dataclass(frozen=True)
class TlsCheck:
    """The TLS half of an ``https`` check (keepalived's SSL_GET); the HTTP half is ``http``."""

    # Sent as SNI and, with verify, matched against the certificate.  None: http.host
    # if set (keepalived's virtualhost with enable_sni), else neither.
    server_name: str | None = None
    # keepalived's SSL_GET does not verify the certificate; true verifies the chain
    # (against ca_file, else the system's CAs) and the name when there is one.
    verify: bool = False
    ca_file: str | None = None


@dataclass(frozen=True)
class UdpCheck:
    """keepalived's UDP_CHECK: one datagram out; a reply, or no ICMP error, in time."""

    payload: str = ""  # hex, as keepalived's payload; "" sends an empty datagram
    # False: passes unless an ICMP error (port unreachable...) comes within connect_timeout,
    # as keepalived without require_reply.  True: only a reply within it passes.
    require_reply: bool = False
    reply: str = ""  # hex the reply must start with (implies require_reply)
    min_reply_length: int = 0
    max_reply_length: int = 65507  # the largest UDP payload over IPv4
    connect_timeout: float = 3.0
    port: int | None = None


@dataclass(frozen=True)
class DnsCheck:
    """keepalived's DNS_CHECK: a query over UDP; passes on a NOERROR answer to it."""

    type: str = "SOA"  # keepalived's default query type
    name: str = "."  # keepalived's default name
    # keepalived passes on NOERROR even with no record; true wants at least one.
    require_answer: bool = False
    timeout: float = 3.0
    port: int | None = None


@dataclass(frozen=True)
class MiscCheck:
    """keepalived's MISC_CHECK: a command per real server; exit 0 passes.

    ``dynamic`` (misc_dynamic): exit 2..255 also passes and sets the server's
    weight to the exit status minus 2; exit 1 fails.  ``timeout`` None: the
    check's interval (keepalived's delay_loop).
    """

    script: Command | None = None  # required with type = "misc"
    timeout: float | None = None
    dynamic: bool = False


@dataclass(frozen=True)
class HealthCheck:
    type: CheckType = "tcp"
    interval: float = 6.0  # keepalived's delay_loop default is 60 s; 6 s suits a two-box pair
    retry: int = 1
    delay_before_retry: float = 1.0
    rise: int = 1
    fall: int = 1
    # "alpha": a real server gets no traffic until its first check passes.
    alpha: bool = True
    # keepalived's default: a failed server leaves IPVS ("drain": inhibit_on_failure).
    on_failure: OnFailure = "remove"
    tcp: TcpCheck = field(default_factory=TcpCheck)
    http: HttpCheck = field(default_factory=HttpCheck)
    tls: TlsCheck = field(default_factory=TlsCheck)
    udp: UdpCheck = field(default_factory=UdpCheck)
    dns: DnsCheck = field(default_factory=DnsCheck)
    # A TCP, HTTP or HTTPS check of a UDP or SCTP service tests another socket than the
    # one the service uses; refused unless the operator says the server listens on both.
    allow_tcp_check: bool = False
    misc: MiscCheck = field(default_factory=MiscCheck)


@dataclass(frozen=True)
class RealServer:
    address: ipaddress.IPv4Address
    port: int
    weight: int = 1
    u_threshold: int = 0
    l_threshold: int = 0
    forwarding: Forwarding | None = None  # None: the virtual server's method
    health: HealthCheck | None = None  # None: the virtual server's check


@dataclass(frozen=True)
class VirtualServer:
    """A virtual service: VIP:port + protocol, or a firewall mark.

    With ``loop_guard = "fwmark"`` a service gives both: packets for
    address:port/protocol that did not come from the peer box are marked with
    ``fwmark``, and the IPVS service is the fwmark service (the design's first scheme).
    """

    address: ipaddress.IPv4Address | None = None
    port: int | None = None
    protocol: ServiceProtocol = "tcp"
    fwmark: int | None = None
    scheduler: Scheduler = "wlc"
    scheduler_flags: tuple[str, ...] = ()
    persistence_timeout: int = 0  # seconds, 0 = no persistence
    # IPv4Address is immutable: one shared default instance is safe.
    persistence_netmask: ipaddress.IPv4Address = ipaddress.IPv4Address(  # noqa: RUF009
        "255.255.255.255"
    )
    forwarding: Forwarding = "dr"
    # The VRRP instance whose state this service follows (loop guard, sync daemon);
    # None only in a file without instances (a single director: always balancing).
    instance: str | None = None
    quorum: int = 0  # minimum live weight; 0 disables the quorum rule
    # keepalived's hysteresis: lost below quorum - this, back at quorum + this.
    quorum_hysteresis: int = 0
    sorry_server: tuple[ipaddress.IPv4Address, int] | None = None
    health: HealthCheck = field(default_factory=HealthCheck)
    real_servers: tuple[RealServer, ...] = ()

    @functools.cached_property  # asked for per real server at every status publish
    def label(self) -> str:
        if self.fwmark is not None and self.address is not None:
            return f"fwmark {self.fwmark} ({self.address}:{self.port}/{self.protocol})"
        if self.fwmark is not None:
            return f"fwmark {self.fwmark}"
        return f"{self.address}:{self.port}/{self.protocol}"


@dataclass(frozen=True)
class Global:
    router_id: str = "lvsagent"
    loop_guard: GuardMode = "bypass"
    metrics_listen: str = "127.0.0.1:9650"
    control_socket: str = "/run/lvsagent/control.sock"
    # Services in the kernel that the config does not name: report, or remove.
    foreign_services: Literal["report", "remove"] = "report"
    # Seconds between full re-reads of the IPVS table, which repair drift (an
    # `ipvsadm -C` by hand).  A failed apply triggers one at once as well.
    ipvs_resync_interval: float = 30.0
    # IPVS connection timeouts in seconds (ipvsadm --set tcp tcpfin udp);
    # 0 leaves the kernel's value alone (900 / 120 / 300 on Linux).
    ipvs_timeout_tcp: int = 0
    ipvs_timeout_tcpfin: int = 0
    ipvs_timeout_udp: int = 0
    # net.ipv4.vs.expire_nodest_conn = 1 once IPVS answers: a removed real server's
    # connection entries expire instead of swallowing its clients' packets.  False
    # leaves the sysctl alone.
    ipvs_expire_nodest_conn: bool = True
    # The other box's MAC on the VRRP link: its packets were balanced already.
    # fwmark does not mark them; bypass serves them locally even in MASTER (so a
    # box whose agent was killed cannot balance them again).  None: learned from
    # the neighbour table once the peer has been heard.
    peer_mac: str | None = None
    # On SIGTERM the box stays a working real server (bypass in place, sysctls
    # kept, IPVS kept).  True removes lvsagent's nft table, restores the sysctls it
    # changed and removes the IPVS services the config owns.
    decommission_on_stop: bool = False
    # Where lvsagent keeps what it must be able to undo (original sysctl values).
    state_dir: str = "/run/lvsagent"
    # The IPVS connection-sync daemon following VRRP state (master daemon in
    # MASTER, backup daemon in BACKUP), so that a connection survives the VIP's move.
    # None: on when the services follow one instance (Config.sync_daemons_on).  Always
    # on with loop_guard = "backup_only".
    ipvs_sync_daemon: bool | None = None
    # None: the interface of the instance the services follow.
    ipvs_sync_interface: str | None = None
    # 0: that instance's VRID.
    ipvs_sync_id: int = 0
    # Whom scripts run as when they name nobody (keepalived's script_user); None:
    # "nobody" when lvsagent runs as root, else lvsagent's own user (it cannot switch).
    script_user: str | None = None
    script_group: str | None = None
    # A FIFO that gets one line per VRRP state change, keepalived's format:
    # INSTANCE "VI_1" MASTER 100 (and GROUP "VG_1" BACKUP 0).
    notify_fifo: str | None = None
    # A notify hook still running after this long is killed (SIGTERM, then SIGKILL).
    notify_timeout: float = 30.0


@dataclass(frozen=True)
class Config:
    path: str
    global_: Global = field(default_factory=Global)
    vrrp_instances: tuple[VrrpInstance, ...] = ()
    virtual_servers: tuple[VirtualServer, ...] = ()
    vrrp_scripts: tuple[VrrpScript, ...] = ()
    track_files: tuple[TrackFile, ...] = ()
    track_processes: tuple[TrackProcess, ...] = ()
    sync_groups: tuple[SyncGroup, ...] = ()

    def sync_daemons_on(self) -> bool:
        """Whether the IPVS sync daemons follow the VRRP state: backup_only needs them; else
        as set, and by default whenever the services follow exactly one instance (the two-box
        pair), so that planned moves of the VIP keep every connection."""
        g = self.global_
        if g.loop_guard == "backup_only":
            return True
        if g.ipvs_sync_daemon is not None:
            return g.ipvs_sync_daemon
        followed = {vs.instance for vs in self.virtual_servers}
        return bool(self.vrrp_instances) and len(followed) == 1

    def instance(self, name: str) -> VrrpInstance:
        for inst in self.vrrp_instances:
            if inst.name == name:
                return inst
        raise KeyError(name)

    def sync_group_of(self, instance: str) -> SyncGroup | None:
        return next((g for g in self.sync_groups if instance in g.instances), None)
