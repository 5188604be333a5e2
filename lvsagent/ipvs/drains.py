"""Real servers an operator drained (``lvsagent drain``): which, since when (pure).

A drained server keeps its IPVS entry at weight 0: established connections
finish, new ones go elsewhere, and its health checks go on, so ``lvsagent
status`` still tells whether it is healthy when the operator wants it back.
Draining is the config's business, not the kernel's: a weight set by hand
(``ipvsadm -e -w 0``) is drift that the next resync repairs, whereas a drain
is part of the desired table, so a resync, a reload and a restart all keep it.

The operator names a service the way the config and ``lvsagent status`` do:
its label (``10.0.0.100:80/tcp``, ``fwmark 3``), or ``VIP:PORT`` when only one
protocol has that address and port; a real server as ``IP:PORT``, or ``IP``
alone when it is unique in the service.  The state file stores labels, and
is read back against whatever config runs then: a drain of a server the
config no longer has is dropped (and said so).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from lvsagent.config.schema import Config, VirtualServer
from lvsagent.ipvs.desired import DestId, dest_key, service_key

__all__ = ["FILE_NAME", "Drained", "TargetError", "decode", "encode", "resolve", "weights"]

FILE_NAME = "drained.json"
FORMAT = 1
LISTED = 8  # known services or servers named in an error, at most


class TargetError(ValueError):
    """The service or real server named is not in the config; the message lists what is."""


@dataclass(frozen=True)
class Drained:
    """One drained real server: its kernel identity, how people name it, since when."""

    ident: DestId
    service: str  # the service's label
    rs: str  # "ip:port"
    since: float  # wall clock


def _names(vs: VirtualServer) -> set[str]:
    names = {vs.label.lower()}
    if vs.fwmark is not None:
        names |= {f"fwmark {vs.fwmark}", f"fwmark:{vs.fwmark}"}
    if vs.address is not None and vs.port is not None:
        names |= {f"{vs.address}:{vs.port}/{vs.protocol}", f"{vs.address}:{vs.port}"}
    return names


def _service(config: Config, text: str) -> VirtualServer:
    wanted = " ".join(text.split()).lower()
    found = [vs for vs in config.virtual_servers if wanted in _names(vs)]
    if len(found) == 1:
        return found[0]
    if found:
        which = ", ".join(vs.label for vs in found)
        raise TargetError(f"{text!r} names {len(found)} services ({which}): add the protocol")
    listed = _listed([vs.label for vs in config.virtual_servers])
    raise TargetError(f"no virtual server {text!r} in {config.path} (it has {listed})")


def _listed(names: list[str]) -> str:
    more = f" and {len(names) - LISTED} more" if len(names) > LISTED else ""
    return ", ".join(names[:LISTED]) + more if names else "none"


def resolve(config: Config, service: str, rs: str, since: float) -> Drained:
    """The real server ``rs`` of ``service``; TargetError naming what the config has."""
    vs = _service(config, service)
    text = rs.strip()
    found = [
        r for r in vs.real_servers if text in (f"{r.address}:{r.port}", str(r.address))
    ]
    if len(found) > 1:
        raise TargetError(f"{text} is {len(found)} real servers of {vs.label}: add the port")
    if not found:
        listed = _listed([f"{r.address}:{r.port}" for r in vs.real_servers])
        raise TargetError(f"{vs.label} has no real server {text} (it has {listed})")
    (real,) = found
    return Drained(
        (service_key(vs), dest_key(real)), vs.label, f"{real.address}:{real.port}", since
    )


def encode(drained: Iterable[Drained]) -> bytes:
    """The state file: labels and times, in a stable order (diffs of it read well)."""
    rows = sorted(
        ({"service": d.service, "rs": d.rs, "since": d.since} for d in drained),
        key=lambda row: (str(row["service"]), str(row["rs"])),
    )
    return json.dumps({"format": FORMAT, "drained": rows}, indent=1).encode() + b"\n"


def decode(data: bytes, config: Config) -> tuple[dict[DestId, Drained], list[str]]:
    """The drains in a state file that ``config`` still has, and why any others were dropped.

    A file that is not ours (bad JSON, another format) drops everything, with the reason:
    the daemon must start, and a drain is an operator's wish, not a safety state.
    """
    try:
        top = json.loads(data)
        rows = top["drained"] if top.get("format") == FORMAT else None
    except (ValueError, TypeError, AttributeError, KeyError):
        rows = None
    if not isinstance(rows, list):
        return {}, [f"{FILE_NAME} is not a drain list of format {FORMAT}; no server is drained"]
    out: dict[DestId, Drained] = {}
    dropped: list[str] = []
    for row in rows:
        try:
            service, rs, since = str(row["service"]), str(row["rs"]), float(row["since"])
        except (TypeError, KeyError, ValueError):
            dropped.append(f"{FILE_NAME}: an entry without service, rs and since: {row!r}")
            continue
        try:
            d = resolve(config, service, rs, since)
        except TargetError as exc:
            dropped.append(f"drain of {rs} of {service} dropped: {exc}")
            continue
        out[d.ident] = d
    return out, dropped


def weights(drained: Mapping[DestId, Drained]) -> dict[DestId, int]:
    """desired_table's weight overrides for the drained servers: 0 each."""
    return dict.fromkeys(drained, 0)
