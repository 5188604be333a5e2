"""The interfaces a config names, and what a missing one would mean on this host.

``lvsagent check`` warns about a name this host does not have, but does not
fail: a config is often checked on another machine than the box it is for (a
CI job, the other box of the pair).  What the daemon would do differs by key,
and the warning says which: a VRRP instance's own interface stops ``run``
(exit 78), a tracked one counts as down (FAULT with weight 0), the sync
daemon's makes the IPVS sync daemon fail.

Pure: the host's interfaces come in as a predicate; the CLI passes one that
asks the kernel (``socket.if_nametoindex``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from lvsagent.config.errors import Problem
from lvsagent.config.locate import Locator
from lvsagent.config.schema import Config

__all__ = ["NamedInterface", "missing_interfaces", "named_interfaces"]


@dataclass(frozen=True)
class NamedInterface:
    key: str  # the TOML path that names it, e.g. vrrp_instance[0].interface
    name: str
    consequence: str  # what the daemon would do here without it


def named_interfaces(config: Config) -> Iterator[NamedInterface]:
    """Every interface name in the config, in file order, with the key that names it."""
    for i, inst in enumerate(config.vrrp_instances):
        yield NamedInterface(
            f"vrrp_instance[{i}].interface",
            inst.interface,
            "`lvsagent run` would refuse to start here (exit 78)",
        )
        for j, track in enumerate(inst.track_interfaces):
            yield NamedInterface(
                f"vrrp_instance[{i}].track_interfaces[{j}]",
                track.name,
                f"{inst.name} would be in FAULT here"
                if track.weight == 0
                else f"it would count as down for {inst.name} here (weight {track.weight})",
            )
    sync = config.global_.ipvs_sync_interface
    if sync is not None:
        yield NamedInterface(
            "global.ipvs_sync_interface",
            sync,
            "the IPVS sync daemon could not start here",
        )


def missing_interfaces(config: Config, text: str, exists: Callable[[str], bool]) -> list[Problem]:
    """A located warning for each interface that ``exists`` says this host does not have.

    ``text`` is the file's content, read only to give each warning its line.
    """
    locator = Locator(text)
    warnings = []
    for named in named_interfaces(config):
        if exists(named.name):
            continue
        message = (
            f"warning: no interface {named.name!r} on this host: {named.consequence} "
            "(fine if the file is for another box)"
        )
        warnings.append(Problem(config.path, locator.line_of(named.key), named.key, message))
    return warnings
