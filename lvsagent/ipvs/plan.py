"""Plan the kernel operations that turn the actual IPVS table into the desired one.

The daemon never flushes: a restart or reload must keep the connection table,
so it dumps the kernel, plans against the dump and applies only the
difference.  Planning is pure (no pyroute2, no clock) so that every rule is
pinned by a table-driven test and by the property
``plan(d, apply_ops(a, plan(d, a).ops)).ops == ()``.

Ownership is by configuration: a service named in the desired table belongs to
us and is converged entry by entry; a service only the kernel holds was put
there by somebody else (an operator with ipvsadm, another tool) and is either
reported or removed, as ``[global] foreign_services`` says.  Reporting is the
default because deleting a service drops its connections, and that should be
a decision somebody made, not a side effect of a typo in the config.

Edits always carry the whole desired entry, never a delta: pyroute2 fills any
omitted attribute with its own default (``wlc``, DR, weight 1), so a partial
edit would silently reset the fields it left out.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Literal, TypeAlias

from lvsagent.ipvs.model import Dest, DestKey, Service, ServiceKey, Table

__all__ = [
    "AddDest",
    "AddService",
    "DelDest",
    "DelService",
    "EditDest",
    "EditService",
    "ForeignPolicy",
    "Op",
    "Plan",
    "apply_ops",
    "plan",
]

ForeignPolicy = Literal["report", "remove"]

_FULL_NETMASK = Service(ServiceKey()).persistence_netmask


def _describe_service(service: Service) -> str:
    """The ipvsadm-like words for a service's attributes, defaults left out to stay short."""
    words = [str(service.key), service.scheduler]
    if service.flags:
        words.append(f"flags {_flags(service.flags)}")
    if service.persistence_timeout:
        words.append(f"persistent {service.persistence_timeout}")
        if service.persistence_netmask != _FULL_NETMASK:
            words.append(f"netmask {service.persistence_netmask}")
    return " ".join(words)


def _describe_dest(dest: Dest) -> str:
    words = [dest.forwarding, f"weight {dest.weight}"]
    if dest.u_threshold:
        words.append(f"u_threshold {dest.u_threshold}")
    if dest.l_threshold:
        words.append(f"l_threshold {dest.l_threshold}")
    return " ".join(words)


def _flags(flags: frozenset[str]) -> str:
    return ",".join(sorted(flags)) if flags else "none"


def _changes(pairs: Iterable[tuple[str, object, object]]) -> str:
    """``name old -> new`` for each field that differs: the log line says what moved."""
    return ", ".join(f"{name} {old} -> {new}" for name, old, new in pairs if old != new)


@dataclass(frozen=True)
class AddService:
    """Create a service; its destinations follow as AddDest ops of their own."""

    service: Service

    def __post_init__(self) -> None:
        # One op, one kernel message: carrying dests here would leave the
        # adapter to decide whether to send them, and the simulation with it.
        if self.service.dests:
            raise ValueError("AddService carries the service's attributes only, not its dests")

    def __str__(self) -> str:
        return f"+ service {_describe_service(self.service)}"


@dataclass(frozen=True)
class EditService:
    """Set every attribute of an existing service; ``old`` is only for the log line."""

    service: Service
    old: Service

    def __post_init__(self) -> None:
        if self.service.key != self.old.key:
            raise ValueError(f"EditService of {self.service.key} with old {self.old.key}")
        if self.service.dests or self.old.dests:
            raise ValueError("EditService carries service attributes only, not dests")

    def __str__(self) -> str:
        new, old = self.service, self.old
        changed = _changes(
            [
                ("scheduler", old.scheduler, new.scheduler),
                ("flags", _flags(old.flags), _flags(new.flags)),
                ("persistent", old.persistence_timeout, new.persistence_timeout),
                ("netmask", old.persistence_netmask, new.persistence_netmask),
            ]
        )
        return f"~ service {new.key} {changed}"


@dataclass(frozen=True)
class DelService:
    """Delete a service and, with it, its destinations and their connections."""

    key: ServiceKey

    def __str__(self) -> str:
        return f"- service {self.key}"


@dataclass(frozen=True)
class AddDest:
    service: ServiceKey
    dest: Dest

    def __str__(self) -> str:
        return f"+ dest {self.dest.key} of {self.service} {_describe_dest(self.dest)}"


@dataclass(frozen=True)
class EditDest:
    """Set every field of an existing destination; ``old`` is only for the log line."""

    service: ServiceKey
    dest: Dest
    old: Dest

    def __post_init__(self) -> None:
        if self.dest.key != self.old.key:
            raise ValueError(f"EditDest of {self.dest.key} with old {self.old.key}")

    def __str__(self) -> str:
        new, old = self.dest, self.old
        changed = _changes(
            [
                ("weight", old.weight, new.weight),
                ("forwarding", old.forwarding, new.forwarding),
                ("u_threshold", old.u_threshold, new.u_threshold),
                ("l_threshold", old.l_threshold, new.l_threshold),
            ]
        )
        return f"~ dest {new.key} of {self.service} {changed}"


@dataclass(frozen=True)
class DelDest:
    service: ServiceKey
    dest: DestKey

    def __str__(self) -> str:
        return f"- dest {self.dest} of {self.service}"


Op: TypeAlias = AddService | EditService | DelService | AddDest | EditDest | DelDest

# The order counts() reports in: the order the planner emits op kinds.
_KINDS = ("AddService", "EditService", "DelDest", "EditDest", "AddDest", "DelService")


@dataclass(frozen=True)
class Plan:
    """The ops to send, in order, and the foreign services left alone."""

    ops: tuple[Op, ...] = ()
    foreign: tuple[ServiceKey, ...] = ()

    def counts(self) -> dict[str, int]:
        """Ops per kind, every kind present even at 0, so metrics and logs keep one shape."""
        counts = dict.fromkeys(_KINDS, 0)
        for op in self.ops:
            counts[type(op).__name__] += 1
        return counts

    def __str__(self) -> str:
        lines = [str(op) for op in self.ops]
        lines.extend(f"# foreign: {key}" for key in self.foreign)
        return "\n".join(lines)


def _services(table: Table) -> dict[ServiceKey, Service]:
    """Services by key, refusing duplicates: two entries for one key cannot both be true."""
    services: dict[ServiceKey, Service] = {}
    for service in table.services:
        if service.key in services:
            raise ValueError(f"desired table has service {service.key} twice")
        _dests(service)
        services[service.key] = service
    return services


def _dests(service: Service) -> dict[DestKey, Dest]:
    dests: dict[DestKey, Dest] = {}
    for dest in service.dests:
        if dest.key in dests:
            raise ValueError(f"desired service {service.key} has dest {dest.key} twice")
        dests[dest.key] = dest
    return dests


def plan(desired: Table, actual: Table, foreign: ForeignPolicy = "report") -> Plan:
    """The ops that make ``actual`` hold what ``desired`` says, and nothing else we own.

    Order: service adds and edits, then per service destination deletes, edits
    and adds, then service deletes, each group sorted by key.  Services come
    first because a destination needs its service; within a service, deletes
    go first so a retired server stops taking new connections before anything
    else is touched; foreign services go last so that a failure part-way still
    leaves our own services converged.  Sorting makes a dry run and the log of
    a reload the same on both boxes and between runs.
    """
    if foreign not in ("report", "remove"):
        raise ValueError(f"foreign must be 'report' or 'remove', not {foreign!r}")
    want = _services(desired)
    have = actual.service_map()

    service_ops: list[Op] = []
    dest_ops: list[Op] = []
    for key in sorted(want):
        new = want[key]
        old = have.get(key)
        if old is None:
            service_ops.append(AddService(new.attributes()))
            old_dests: dict[DestKey, Dest] = {}
        else:
            if new.attributes() != old.attributes():
                service_ops.append(EditService(new.attributes(), old.attributes()))
            old_dests = old.dest_map()
        dest_ops.extend(_plan_dests(key, _dests(new), old_dests))

    others = sorted(key for key in have if key not in want)
    if foreign == "remove":
        return Plan(ops=(*service_ops, *dest_ops, *(DelService(key) for key in others)))
    return Plan(ops=(*service_ops, *dest_ops), foreign=tuple(others))


def _plan_dests(
    service: ServiceKey, want: dict[DestKey, Dest], have: dict[DestKey, Dest]
) -> list[Op]:
    deletes: list[Op] = [DelDest(service, key) for key in sorted(have) if key not in want]
    edits: list[Op] = [
        EditDest(service, want[key], have[key])
        for key in sorted(want)
        if key in have and want[key] != have[key]
    ]
    adds: list[Op] = [AddDest(service, want[key]) for key in sorted(want) if key not in have]
    return deletes + edits + adds


def apply_ops(actual: Table, ops: Iterable[Op]) -> Table:
    """What the kernel would hold after ``ops``: for dry runs and the convergence property.

    Follows the kernel, not the plan's intent: an add of an existing entry
    (EEXIST) keeps the existing one, and a delete or edit of a missing one
    (ENOENT/ESRCH) changes nothing, as does adding a dest to a missing
    service.  Those are the errors the adapter reads as "already converged",
    so the simulation must not be kinder than the kernel, or the property
    test would pass plans that do not converge.  The result is sorted by key:
    order means nothing to the kernel and sorting makes it print the same
    every time.
    """
    services: dict[ServiceKey, Service] = {s.key: s for s in actual.services}
    # Each touched service's dests as a dict, opened once: a pass that edits every
    # dest of a 250-dest service must not rebuild that dict 250 times.
    opened: dict[ServiceKey, dict[DestKey, Dest]] = {}
    for op in ops:
        if isinstance(op, AddService):
            if op.service.key not in services:
                services[op.service.key] = op.service.attributes()
                opened[op.service.key] = {}
        elif isinstance(op, EditService):
            key = op.service.key
            if key in services:
                opened.setdefault(key, services[key].dest_map())
                services[key] = op.service.attributes()
        elif isinstance(op, DelService):
            services.pop(op.key, None)
            opened.pop(op.key, None)
        elif op.service in services:
            dests = opened.get(op.service)
            if dests is None:
                dests = opened[op.service] = services[op.service].dest_map()
            _apply_dest_op(dests, op)
    return Table(
        tuple(
            replace(
                services[key],
                dests=tuple(sorted(
                    opened[key].values() if key in opened else services[key].dests,
                    key=_dest_key,
                )),
            )
            for key in sorted(services)
        )
    )  # fmt: skip


def _dest_key(dest: Dest) -> DestKey:
    return dest.key


def _apply_dest_op(dests: dict[DestKey, Dest], op: AddDest | EditDest | DelDest) -> None:
    if isinstance(op, AddDest):
        dests.setdefault(op.dest.key, op.dest)
    elif isinstance(op, EditDest):
        if op.dest.key in dests:
            dests[op.dest.key] = op.dest
    else:
        dests.pop(op.dest, None)
