"""What the agent looks like at one moment: the one value that status and metrics read.

Why a snapshot: the control socket answers from the event loop, but the
Prometheus endpoint serves from its own thread.  If both read the live
runners, the HTTP thread would see objects half-way through a decision.  So
the daemon builds an immutable :class:`AgentSnapshot` on the loop and
publishes it by replacing one reference (atomic in CPython); readers in any
thread only ever see a whole one.

Plain values only (no enums, no addresses), so the JSON form is the same
thing and ``from_json(to_json(s)) == s``.  ``from_json`` checks every field's
type: the client must say "the daemon answered something unexpected", not
crash on a KeyError.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, is_dataclass
from types import MappingProxyType
from typing import Any

# Adverts from another router while we are master, within this many of its
# advert intervals, mean two masters: the split-brain indicator.
SPLIT_BRAIN_INTERVALS = 3.0


@dataclass(frozen=True)
class InstanceStatus:
    """One VRRP instance.  Counters are totals since the daemon started."""

    name: str
    vrid: int
    interface: str
    state: str  # the RFC's names: INIT, BACKUP, MASTER, FAULT
    priority: int  # configured
    effective_priority: int  # after tracking adjustments
    master_seen: str | None = None  # the master a backup follows
    last_transition_at: float | None = None  # wall clock (time.time())
    last_transition_reason: str | None = None
    transitions: int = 0
    adverts_sent: int = 0
    adverts_received: int = 0
    priority_zero_sent: int = 0
    priority_zero_received: int = 0
    become_master: int = 0  # keepalived's become_master / release_master statistics
    release_master: int = 0
    discards: Mapping[str, int] = field(default_factory=dict)  # keepalived's counter names
    split_brain: bool = False

    def __post_init__(self) -> None:
        # A frozen dataclass holding a caller's dict would still change under the reader.
        object.__setattr__(self, "discards", MappingProxyType(dict(self.discards)))


@dataclass(frozen=True)
class ServerStatus:
    """One real server of one virtual service, as the health checks see it."""

    service: str  # the service's label, e.g. "172.16.0.30:80/tcp"
    address: str
    port: int
    up: bool | None  # None: not checked yet
    weight_configured: int
    reason: str | None = None  # why it is in its current state
    latency: float | None = None  # seconds, of the last completed check
    transitions: int = 0
    weight_kernel: int | None = None  # what IPVS has now; None: not in the kernel
    drained_since: float | None = None  # wall clock; None: not drained (lvsagent drain)


@dataclass(frozen=True)
class GuardStatus:
    """The loop guard (bypass, fwmark or backup_only) and whether it is in force."""

    mode: str
    active: bool | None
    detail: str = ""


@dataclass(frozen=True)
class ReloadStatus:
    """The last reload (SIGHUP): applied, or refused with the first reason."""

    at: float  # wall clock
    ok: bool
    detail: str


@dataclass(frozen=True)
class IpvsStatus:
    """Whether the kernel's IPVS table is as desired, and if not, why and since when."""

    up: bool | None  # None: no pass yet
    errors: int  # refusals and failed passes since the start
    detail: str = ""  # the first reason of the current trouble
    since: float | None = None  # wall clock of the first failure of the current trouble


@dataclass(frozen=True)
class ServiceStatus:
    """A virtual service with a quorum rule or a sorry server."""

    service: str  # its label
    quorum_lost: bool
    sorry_server: str | None = None  # "ip:port", when it replaces the real servers now


@dataclass(frozen=True)
class AgentSnapshot:
    instances: tuple[InstanceStatus, ...] = ()
    servers: tuple[ServerStatus, ...] = ()
    loop_guard: GuardStatus | None = None
    config_path: str = ""
    started_at: float = 0.0  # wall clock
    loop_lag: float = 0.0  # seconds: the largest recent event-loop lag
    last_reload: ReloadStatus | None = None  # None: none since the start
    ipvs: IpvsStatus | None = None  # None: no virtual servers (or an older daemon)
    services: tuple[ServiceStatus, ...] = ()

    def to_json(self) -> str:
        return json.dumps(_plain(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> AgentSnapshot:
        """Parse and type-check; ValueError names the first field that is wrong."""
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"not JSON: {exc}") from exc
        return snapshot_from_dict(data)


def _plain(value: object) -> object:
    """Dataclasses, tuples and mappings as JSON's objects and lists (asdict cannot copy proxies)."""
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value


class _Reader:
    """Typed access to one JSON object, naming the path of whatever is wrong."""

    def __init__(self, data: object, where: str) -> None:
        if not isinstance(data, dict):
            raise ValueError(f"{where}: expected an object, got {type(data).__name__}")
        self.data: dict[str, Any] = data
        self.where = where

    def _get(self, key: str, kinds: tuple[type, ...], optional: bool) -> Any:
        if key not in self.data:
            raise ValueError(f"{self.where}.{key}: missing")
        value = self.data[key]
        if value is None and optional:
            return None
        # bool is an int in Python; a count must not be accepted as true/false or vice versa.
        ok = isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds)
        if not ok:
            names = "/".join(k.__name__ for k in kinds)
            raise ValueError(f"{self.where}.{key}: expected {names}, got {value!r}")
        return value

    def text(self, key: str) -> str:
        return str(self._get(key, (str,), False))

    def opt_text(self, key: str) -> str | None:
        value = self._get(key, (str,), True)
        return None if value is None else str(value)

    def integer(self, key: str) -> int:
        return int(self._get(key, (int,), False))

    def opt_integer(self, key: str) -> int | None:
        value = self._get(key, (int,), True)
        return None if value is None else int(value)

    def number(self, key: str) -> float:
        return float(self._get(key, (int, float), False))

    def opt_number(self, key: str) -> float | None:
        value = self._get(key, (int, float), True)
        return None if value is None else float(value)

    def added_number(self, key: str) -> float | None:
        """A field newer daemons send: absent from an older one's answer means None."""
        return self.opt_number(key) if key in self.data else None

    def flag(self, key: str) -> bool:
        return bool(self._get(key, (bool,), False))

    def opt_flag(self, key: str) -> bool | None:
        value = self._get(key, (bool,), True)
        return None if value is None else bool(value)

    def items(self, key: str) -> list[object]:
        return list(self._get(key, (list,), False))

    def counts(self, key: str) -> dict[str, int]:
        inner = _Reader(self._get(key, (dict,), False), f"{self.where}.{key}")
        return {name: inner.integer(name) for name in inner.data}


def snapshot_from_dict(data: object) -> AgentSnapshot:
    r = _Reader(data, "snapshot")
    guard = r.data.get("loop_guard")
    reload = r.data.get("last_reload")
    ipvs = r.data.get("ipvs")
    return AgentSnapshot(
        instances=tuple(
            _instance(_Reader(item, f"instances[{i}]"))
            for i, item in enumerate(r.items("instances"))
        ),
        servers=tuple(
            _server(_Reader(item, f"servers[{i}]")) for i, item in enumerate(r.items("servers"))
        ),
        loop_guard=None if guard is None else _guard(_Reader(guard, "loop_guard")),
        config_path=r.text("config_path"),
        started_at=r.number("started_at"),
        loop_lag=r.number("loop_lag"),
        last_reload=None if reload is None else _reload(_Reader(reload, "last_reload")),
        ipvs=None if ipvs is None else _ipvs(_Reader(ipvs, "ipvs")),
        services=tuple(
            _quorum(_Reader(item, f"services[{i}]"))
            for i, item in enumerate(r.items("services") if "services" in r.data else [])
        ),
    )


def _ipvs(r: _Reader) -> IpvsStatus:
    return IpvsStatus(
        up=r.opt_flag("up"), errors=r.integer("errors"), detail=r.text("detail"),
        since=r.opt_number("since"),
    )  # fmt: skip


def _quorum(r: _Reader) -> ServiceStatus:
    return ServiceStatus(
        service=r.text("service"), quorum_lost=r.flag("quorum_lost"),
        sorry_server=r.opt_text("sorry_server"),
    )  # fmt: skip


def _instance(r: _Reader) -> InstanceStatus:
    return InstanceStatus(
        name=r.text("name"),
        vrid=r.integer("vrid"),
        interface=r.text("interface"),
        state=r.text("state"),
        priority=r.integer("priority"),
        effective_priority=r.integer("effective_priority"),
        master_seen=r.opt_text("master_seen"),
        last_transition_at=r.opt_number("last_transition_at"),
        last_transition_reason=r.opt_text("last_transition_reason"),
        transitions=r.integer("transitions"),
        adverts_sent=r.integer("adverts_sent"),
        adverts_received=r.integer("adverts_received"),
        priority_zero_sent=r.integer("priority_zero_sent"),
        priority_zero_received=r.integer("priority_zero_received"),
        become_master=r.integer("become_master"),
        release_master=r.integer("release_master"),
        discards=r.counts("discards"),
        split_brain=r.flag("split_brain"),
    )


def _server(r: _Reader) -> ServerStatus:
    return ServerStatus(
        service=r.text("service"),
        address=r.text("address"),
        port=r.integer("port"),
        up=r.opt_flag("up"),
        weight_configured=r.integer("weight_configured"),
        reason=r.opt_text("reason"),
        latency=r.opt_number("latency"),
        transitions=r.integer("transitions"),
        weight_kernel=r.opt_integer("weight_kernel"),
        drained_since=r.added_number("drained_since"),
    )


def _reload(r: _Reader) -> ReloadStatus:
    return ReloadStatus(at=r.number("at"), ok=r.flag("ok"), detail=r.text("detail"))


def _guard(r: _Reader) -> GuardStatus:
    return GuardStatus(mode=r.text("mode"), active=r.opt_flag("active"), detail=r.text("detail"))


def split_brain(
    state: str,
    peer_priority: int | None,
    peer_seen_at: float | None,
    peer_interval: float | None,
    now: float,
) -> bool:
    """Whether another router is advertising while we are master.

    Only a master sends adverts (RFC 5798 6.4.3), except the priority-0 one a
    master sends as it leaves; so a non-zero advert heard by a master within
    a few of the sender's intervals means two masters on the link.  A master
    that receives a higher one yields at once, so this stays true only while
    the other side keeps losing: a partition or a config mismatch (VRID, auth).
    All times on one clock (the loop's).  The daemon's ``router.peer`` has
    the priority, interval and time of the last advert heard.
    """
    if state != "MASTER" or peer_priority in (None, 0) or peer_seen_at is None:
        return False
    interval = peer_interval if peer_interval else 1.0
    return now - peer_seen_at < SPLIT_BRAIN_INTERVALS * interval
