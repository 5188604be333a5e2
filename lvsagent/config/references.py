"""Rules between sections for what instances track and run: names resolve, groups agree.

An instance names vrrp_scripts, track_files and track_processes defined elsewhere
in the file; a name that matches nothing is refused with the closest one, since a
typo would otherwise leave the instance tracking nothing (keepalived logs and
goes on).  A sync group's instances must agree on who is master, so tracking
weights inside a group are refused unless the group says ``tracking_weight``
(keepalived silently sets them to 0 instead): with a weight, one member could
outrank the peer and another not, and the group would flap between the boxes.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from lvsagent.config.fields import Checker
from lvsagent.config.schema import Config, TrackRef, VrrpInstance

__all__ = ["check_reference_rules", "effective_weights"]


def check_reference_rules(check: Checker, config: Config) -> None:
    """Unique definitions, resolvable references, weightless sync groups."""
    kinds = (
        ("vrrp_script", "track_scripts", [s.name for s in config.vrrp_scripts]),
        ("track_file", "track_files", [f.name for f in config.track_files]),
        ("track_process", "track_processes", [p.name for p in config.track_processes]),
    )
    for section, _, names in kinds:
        _unique(check, section, names)
    for i, inst in enumerate(config.vrrp_instances):
        for section, key, names in kinds:
            refs: tuple[TrackRef, ...] = getattr(inst, key)
            for j, ref in enumerate(refs):
                if ref.name in names:
                    continue
                close = difflib.get_close_matches(ref.name, names, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                check.problem(
                    f"vrrp_instance[{i}].{key}[{j}]",
                    f"no [[{section}]] is named {ref.name!r}{hint}",
                )
    _misc_rules(check, config)
    for g, group in enumerate(config.sync_groups):
        if group.tracking_weight:
            continue
        for name in group.instances:
            i = next(n for n, inst in enumerate(config.vrrp_instances) if inst.name == name)
            for key, weight in _weights(config, config.vrrp_instances[i]):
                if weight != 0:
                    check.problem(
                        f"vrrp_instance[{i}].{key}",
                        f"{name} is in sync group {group.name} (vrrp_sync_group[{g}]), whose "
                        f"instances must agree on who is master: a tracking weight "
                        f"({weight}) would move one without the others; use weight 0 "
                        "(FAULT) or set tracking_weight = true on the group",
                    )
                    break


def _misc_rules(check: Checker, config: Config) -> None:
    """A MISC_CHECK needs its command, on the service or on each real server that uses it."""
    for i, vs in enumerate(config.virtual_servers):
        for j, rs in enumerate(vs.real_servers):
            health = rs.health or vs.health
            if health.type == "misc" and health.misc.script is None:
                where = f"virtual_server[{i}].real_server[{j}]" if rs.health else (
                    f"virtual_server[{i}]"
                )
                check.problem(
                    f"{where}.health.misc.script",
                    'type = "misc" runs a command: give script in [health.misc] '
                    "(keepalived's misc_path)",
                )
                if rs.health is None:
                    break  # one problem for the service, not one per server


def _unique(check: Checker, section: str, names: list[str]) -> None:
    seen: dict[str, int] = {}
    for i, name in enumerate(names):
        first = seen.setdefault(name, i)
        if first != i:
            check.problem(
                f"{section}[{i}].name",
                f"duplicate {section} name {name!r}; first at "
                f"{check.where(f'{section}[{first}].name')}",
            )


def effective_weights(config: Config, inst: VrrpInstance) -> list[tuple[str, int]]:
    """(key, weight) of everything ``inst`` tracks, each reference's weight resolved; the key
    is the element's path inside the instance (``track_scripts[1]``)."""
    return list(_weights(config, inst))


def _weights(config: Config, inst: VrrpInstance) -> Iterable[tuple[str, int]]:
    for n, t in enumerate(inst.track_interfaces):
        yield f"track_interfaces[{n}]", t.weight
    for n, r in enumerate(inst.track_real_servers):
        yield f"track_real_servers[{n}]", r.weight
    defined = (
        ("track_scripts", {s.name: s.weight for s in config.vrrp_scripts}),
        ("track_files", {f.name: f.weight for f in config.track_files}),
        ("track_processes", {p.name: p.weight for p in config.track_processes}),
    )
    for key, weights in defined:
        for n, ref in enumerate(getattr(inst, key)):
            weight = ref.weight if ref.weight is not None else weights.get(ref.name, 0)
            yield f"{key}[{n}]", weight
