"""The IPVS table the configuration asks for, as plan() compares it with the kernel.

This is the one place where config types become IPVS types, so that the
planner never reads the config and the config never learns kernel spelling.
Every field is filled explicitly from schema.py's values (never from a
model or library default): a field left to default here would plan against
whatever the kernel dump reports and could flap between the two.

Health checking does not edit the config.  It passes its verdicts in as
``weights`` (drain: the failed server stays, at weight 0, so established
connections finish) and ``removed`` (on_failure = "remove": the server is
taken out, which is what keepalived's default does).  Keeping them as
arguments, not state, means the table is always recomputed from the config
plus the current verdicts, so a reload and a health change go through the
same path and cannot disagree.

The quorum rule reaches the table the same way: ``sorry`` names the services
whose sorry server must be present now (their live weight is below quorum);
the health monitor takes their real servers out through ``weights`` and
``removed`` (keepalived: the sorry server replaces them).  When quorum is
back the caller stops naming the service and the entry goes.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from lvsagent.config.schema import Config, RealServer, VirtualServer
from lvsagent.ipvs.model import Dest, DestKey, Service, ServiceKey, Table

__all__ = [
    "SORRY_WEIGHT", "DestId", "desired_table", "dest_key", "service_key", "update_services",
]  # fmt: skip

# A destination named across the whole table: the same real server behind
# two virtual servers is two kernel entries with two weights.
DestId = tuple[ServiceKey, DestKey]

MAX_WEIGHT = 65535  # the loader's bound; the kernel takes any non-negative int32
# keepalived gives its sorry server weight 1: it takes every new connection.
SORRY_WEIGHT = 1


def service_key(vs: VirtualServer) -> ServiceKey:
    """The kernel identity of a virtual server.

    A fwmark service keeps only the mark: the kernel looks fwmark services up
    by mark alone and dumps them without address or port, so keeping the
    configured protocol here would make a converged service look different
    from its own dump.
    """
    if vs.fwmark is not None:
        if vs.fwmark <= 0:
            # ServiceKey uses fwmark 0 for "not a fwmark service".
            raise ValueError(f"{vs.label}: fwmark must be positive")
        return ServiceKey(fwmark=vs.fwmark)
    if vs.address is None or vs.port is None:
        # The loader refuses this; a hand-built Config may not have.
        raise ValueError(f"{vs.label}: needs address and port, or fwmark")
    return ServiceKey(protocol=vs.protocol, address=vs.address, port=vs.port)


def dest_key(rs: RealServer) -> DestKey:
    """The kernel identity of a real server inside its service."""
    return DestKey(rs.address, rs.port)


def desired_table(
    config: Config,
    weights: Mapping[DestId, int] | None = None,
    removed: Collection[DestId] = (),
    sorry: Collection[ServiceKey] = (),
) -> Table:
    """The table for ``config``, with health verdicts laid over the configured weights.

    ``weights`` and ``removed`` only adjust servers the config names: entries
    for anything else are ignored, because the health tracker may still hold a
    verdict for a server that a reload has just taken out, and the config, not
    the tracker, decides what exists.  A server both overridden and removed is
    removed: removal is the stronger verdict.

    Without ``weights`` every server gets its configured weight.  The
    ``alpha`` rule (no traffic before the first passed check) is the caller's
    to apply, as a weight-0 override, because only the health checker knows
    whether a check has passed yet.

    ``sorry`` adds the sorry server of each named service (one without a
    sorry server in the config is left as it is).  If the sorry server is
    also one of the service's real servers, the sorry entry replaces that
    server's (drained or removed) entry: one kernel entry per address and
    port, and the sorry role is the one in force.
    """
    overrides = _checked(weights)
    dropped = frozenset(removed)
    needs_sorry = frozenset(sorry)
    return Table(
        tuple(_service(vs, overrides, dropped, needs_sorry) for vs in config.virtual_servers)
    )


def update_services(
    table: Table,
    services: Mapping[ServiceKey, VirtualServer],
    changed: Collection[ServiceKey],
    weights: Mapping[DestId, int] | None = None,
    removed: Collection[DestId] = (),
    sorry: Collection[ServiceKey] = (),
) -> Table:
    """``table`` (a desired_table of the same config) with the ``changed`` services rebuilt.

    The verdicts need only cover the changed services.  A health verdict
    touches one service; rebuilding every service of a 10 000-server config
    for it costs ~20 ms of the event loop that VRRP shares, each time.
    ``services`` maps each service key of the config to its virtual server.
    """
    overrides = _checked(weights)
    dropped, needs_sorry = frozenset(removed), frozenset(sorry)
    fresh = {
        key: _service(services[key], overrides, dropped, needs_sorry)
        for key in changed
        if key in services
    }
    return Table(tuple(fresh.get(s.key, s) for s in table.services))


def _checked(weights: Mapping[DestId, int] | None) -> Mapping[DestId, int]:
    overrides: Mapping[DestId, int] = weights if weights is not None else {}
    for ident, weight in overrides.items():
        if not 0 <= weight <= MAX_WEIGHT:
            raise ValueError(f"weight {weight} for {ident[1]} of {ident[0]} is out of range")
    return overrides


def _service(
    vs: VirtualServer,
    overrides: Mapping[DestId, int],
    dropped: frozenset[DestId],
    needs_sorry: frozenset[ServiceKey],
) -> Service:
    key = service_key(vs)
    sorry = _sorry_dest(vs) if key in needs_sorry else None
    dests: list[Dest] = []
    for rs in vs.real_servers:  # one key and one lookup of each kind per server: a hot loop
        dk = dest_key(rs)
        ident = (key, dk)
        if ident in dropped or (sorry is not None and dk == sorry.key):
            continue
        dests.append(_dest(vs, rs, dk, overrides.get(ident)))
    if sorry is not None:
        dests.append(sorry)
    return Service(
        key=key,
        scheduler=vs.scheduler,
        flags=frozenset(vs.scheduler_flags),
        persistence_timeout=vs.persistence_timeout,
        persistence_netmask=vs.persistence_netmask,
        dests=tuple(dests),
    )


def _sorry_dest(vs: VirtualServer) -> Dest | None:
    if vs.sorry_server is None:
        return None
    address, port = vs.sorry_server
    return Dest(key=DestKey(address, port), weight=SORRY_WEIGHT, forwarding=vs.forwarding)


def _dest(vs: VirtualServer, rs: RealServer, key: DestKey, weight: int | None) -> Dest:
    return Dest(
        key=key,
        weight=rs.weight if weight is None else weight,
        # A real server may differ from its service (e.g. one NAT backend in
        # a DR service); None means "as the service says".
        forwarding=rs.forwarding if rs.forwarding is not None else vs.forwarding,
        u_threshold=rs.u_threshold,
        l_threshold=rs.l_threshold,
    )
