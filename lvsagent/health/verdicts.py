"""Every checked server's verdict, aggregated into what IPVS and VRRP tracking need (pure).

The monitor (health/monitor.py) schedules checks and records their results in the
entries; this book indexes the entries and answers from them: the weight
overrides and removals desired_table takes, the services whose sorry server
must stand in (quorum), and a real server's verdict across every service it is
in, for VRRP tracking.  No clock, no loop, no logging (the monitor journals what
changed): the tests drive it with entries alone.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lvsagent.config.schema import RealServer, VirtualServer
from lvsagent.health.quorum import QuorumState, quorum_state
from lvsagent.ipvs.desired import DestId, dest_key
from lvsagent.ipvs.model import ServiceKey

if TYPE_CHECKING:  # entries are the monitor's (entry.py logs); only their type is read here
    from lvsagent.health.entry import Entry


@dataclass(frozen=True)
class Verdicts:
    """What the health checks say IPVS must hold for some services (None: every one).

    The monitor hands one to the daemon with each change, and the daemon builds the
    desired IPVS state from it (desired_table / update_services): data flows forward,
    nothing reads back into the monitor.
    """

    services: frozenset[ServiceKey] | None
    weights: Mapping[DestId, int]  # 0: drained; a misc_dynamic weight while it serves
    removed: frozenset[DestId]
    sorry: frozenset[ServiceKey]  # every service whose sorry server stands in (all services)


# No health checks at all (a config without virtual servers' checks): nothing to lay over.
NO_VERDICTS = Verdicts(None, {}, frozenset(), frozenset())


class VerdictBook:
    """The entries of one config, indexed by server and by service, and the quorum state."""

    def __init__(self) -> None:
        self.entries: dict[DestId, Entry] = {}
        self.services: dict[ServiceKey, VirtualServer] = {}
        self._by_server: dict[tuple[ipaddress.IPv4Address, int], list[Entry]] = {}
        self._by_service: dict[ServiceKey, list[Entry]] = {}
        self._quorum: dict[ServiceKey, QuorumState] = {}

    def adopt(
        self, entries: dict[DestId, Entry], services: Mapping[ServiceKey, VirtualServer]
    ) -> list[tuple[VirtualServer, QuorumState]]:
        """A (re)loaded config's entries (those the book held and the new ones lack die);
        the services whose quorum is lost from the start, or regained, for the journal."""
        for ident, entry in self.entries.items():
            if entries.get(ident) is not entry:
                entry.live = False
        self.entries = entries
        self.services = dict(services)
        self._by_server = {}
        self._by_service = {}
        for entry in entries.values():
            self._by_server.setdefault((entry.rs.address, entry.rs.port), []).append(entry)
            self._by_service.setdefault(entry.ident[0], []).append(entry)
        self._quorum = {k: v for k, v in self._quorum.items() if k in services}
        changed = [(self.services[k], self.update_quorum(k)) for k in services]
        return [(vs, state) for vs, state in changed if state is not None]

    def verdicts(self, services: Collection[ServiceKey] | None = None) -> Verdicts:
        """The verdicts of ``services`` (default: all) as one value, in one pass."""
        sorry = self.sorry()
        weights: dict[DestId, int] = {}
        removed = []
        for e in self.of(services):
            what = e.disposition(e.ident[0] in sorry)
            if what == "drain":
                weights[e.ident] = 0
            elif what == "remove":
                removed.append(e.ident)
            elif e.dynamic is not None:  # serving, at misc_dynamic's weight
                weights[e.ident] = e.dynamic
        chosen = None if services is None else frozenset(services)
        return Verdicts(chosen, weights, frozenset(removed), sorry)

    def weights(self, services: Collection[ServiceKey] | None = None) -> dict[DestId, int]:
        """Weight overrides for desired_table: 0 for every drained server.

        Which are drained and which removed is :func:`disposition`'s rule (a
        failed server per ``on_failure``, an unreachable one removed, a suspect
        one drained; "replaced" while its service's sorry server serves).  One
        with no verdict yet (alpha) and not replaced is drained, not removed: it
        enters the table with the first pass at start, and its first passed check
        is then one weight edit that lets it serve at once, not an add that waits
        behind the start's other work.  ``services``: only theirs (default: all).
        """
        return dict(self.verdicts(services).weights)

    def removed(self, services: Collection[ServiceKey] | None = None) -> frozenset[DestId]:
        """Servers to leave out of IPVS (see :meth:`weights`)."""
        return self.verdicts(services).removed

    def of(self, services: Collection[ServiceKey] | None) -> Iterable[Entry]:
        if services is None:
            return self.entries.values()
        return (e for key in services for e in self._by_service.get(key, ()))

    def sorry(self) -> frozenset[ServiceKey]:
        """Services whose sorry server must be in IPVS now (desired_table's ``sorry``)."""
        return frozenset(
            key for key, q in self._quorum.items() if q.wants_sorry(self.services[key])
        )

    def quorum_lost(self) -> frozenset[ServiceKey]:
        """Services below their quorum now (with a sorry server or not), for status."""
        return frozenset(key for key, q in self._quorum.items() if q.lost)

    def server_up(self, address: ipaddress.IPv4Address, port: int) -> bool | None:
        """The verdict on a real server for VRRP tracking, across every service it is in.

        False if any of its checks says DOWN; None while any has no verdict
        (or nothing checks it); True when every check says UP.
        """
        verdicts = [e.up for e in self._by_server.get((address, port), ())]
        if False in verdicts:
            return False
        if not verdicts or None in verdicts:
            return None
        return True

    def update_quorum(self, key: ServiceKey) -> QuorumState | None:
        """Redo ``key``'s quorum after a verdict in it changed: its new state if it was lost
        or regained just now (for the journal), else None."""
        vs = self.services.get(key)
        if vs is None:
            return None
        before = self._quorum.get(key)
        was_lost = before is not None and before.lost
        state = quorum_state(vs, lambda rs: self._entry_up(key, rs), was_lost)
        if state is None:
            self._quorum.pop(key, None)
            return None
        self._quorum[key] = state
        if (before is None and state.lost) or (before is not None and before.lost != state.lost):
            return state
        return None

    def _entry_up(self, key: ServiceKey, rs: RealServer) -> bool:
        entry = self.entries.get((key, dest_key(rs)))
        return entry is not None and entry.up is True
