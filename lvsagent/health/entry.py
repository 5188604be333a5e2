"""One checked real server as the monitor holds it, and what the monitor says about it.

The entry ties a real server's place in the config to its tracker; its
disposition (serve, drain, remove) is the tracker module's pure rule.  The
log lines are here so that the monitor keeps to scheduling: a verdict's change
is a journal line with fields (down a warning, back up a notice), a change of
disposition alone (suspect, or a down server that stopped or started
answering) an info line.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
from dataclasses import dataclass

from lvsagent.config.schema import HealthCheck, RealServer, VirtualServer
from lvsagent.health.tracker import Disposition, Policy, Tracker, VerdictChange, disposition
from lvsagent.ipvs.desired import DestId
from lvsagent.observe.journal import NOTICE

__all__ = [
    "CheckSample", "Entry", "ServerHealth", "health_of", "log_disposition", "log_transition",
    "policy_of",
]  # fmt: skip

log = logging.getLogger("lvsagent.health")


@dataclass(frozen=True, slots=True)
class ServerHealth:
    """One real server of one service, for status output and metrics."""

    service: str  # VirtualServer.label, "172.16.0.30:80/tcp"
    address: ipaddress.IPv4Address
    port: int
    up: bool | None  # None: no verdict yet (alpha, before the first check ends)
    reason: str  # the last check's reason, "" before the first
    latency: float | None  # seconds, the last check's
    transitions: int
    weight: int  # configured
    ident: DestId  # the IPVS service and dest it stands for


@dataclass(frozen=True, slots=True)
class CheckSample:
    """One finished attempt, for the latency histogram."""

    service: str
    rs: str  # "ip:port", the histogram's label
    ok: bool
    latency: float


class Entry:
    """A checked real server: where it sits in the config, and its tracker (None: type none)."""

    __slots__ = ("dynamic", "health", "ident", "labels", "live", "rs", "tracker", "vs")

    def __init__(self, ident: DestId, vs: VirtualServer, rs: RealServer, health: HealthCheck,
                 tracker: Tracker | None) -> None:  # fmt: skip
        self.ident, self.vs, self.rs, self.health, self.tracker = ident, vs, rs, health, tracker
        # The latency sample's labels, formatted at the first check, not at every one (same
        # key, same text); never for servers nobody checks (memory at 10 000 servers).
        self.labels: tuple[str, str] | None = None
        self.live = True  # False once a reload forgot it (cheaper than a dict lookup per check)
        self.dynamic: int | None = None  # the weight a misc_dynamic check set, while it passes

    @property
    def up(self) -> bool | None:
        return True if self.tracker is None else self.tracker.up

    def view(self) -> tuple[bool | None, bool, bool]:
        """What its disposition depends on in the tracker: up, unreachable, suspect."""
        t = self.tracker
        return (True, False, False) if t is None else (t.up, t.unreachable, t.suspect)

    def disposition(self, replaced: bool) -> Disposition:
        """``replaced``: its service's sorry server stands in for the real servers."""
        return disposition(*self.view(), self.health.on_failure, replaced)


@functools.lru_cache(maxsize=1024)
def policy_of(h: HealthCheck) -> Policy:
    # Shared by every server with the same check: one object, not thousands.
    return Policy(h.interval, h.retry, h.delay_before_retry, h.rise, h.fall, h.alpha)


def health_of(e: Entry) -> ServerHealth:
    t = e.tracker
    last = t.last if t is not None else None
    if last is not None:
        reason, latency = last.reason, last.latency
    else:
        reason, latency = ("not checked (type none)" if t is None else ""), None
    return ServerHealth(
        service=e.vs.label,
        address=e.rs.address,
        port=e.rs.port,
        up=e.up,
        reason=reason,
        latency=latency,
        transitions=t.transitions if t is not None else 0,
        weight=e.rs.weight,
        ident=e.ident,
    )


def log_transition(entry: Entry, t: VerdictChange) -> None:
    # A server passing its first check is the expected start, not a warning.
    level = logging.INFO if t.up and t.first else NOTICE if t.up else logging.WARNING
    message = t.message
    if not t.up and entry.health.on_failure == "drain" and entry.disposition(False) == "remove":
        message += "; unreachable: removed from IPVS, not drained"
    log.log(level, "%s", message, extra={"journal": {
        "LVSAGENT_EVENT": "health",
        "LVSAGENT_RS": f"{entry.rs.address}:{entry.rs.port}",
        "LVSAGENT_SERVICE": entry.vs.label,
        "LVSAGENT_HEALTH": "UP" if t.up else "DOWN",
    }})  # fmt: skip


_DOING: dict[Disposition, str] = {
    "serve": "in service again",
    "drain": "drained (weight 0)",
    "remove": "removed from IPVS",
}


def log_disposition(entry: Entry, was: Disposition, why: str) -> None:
    """The verdict stayed; if what IPVS does with the server did not, say so."""
    t = entry.tracker
    now = entry.disposition(False)
    if t is None or now == was:
        return
    verdict = {True: "UP", False: "DOWN", None: "not checked yet"}[t.up]
    log.info("%s %s (%s): %s", t.name, verdict, why, _DOING[now])
