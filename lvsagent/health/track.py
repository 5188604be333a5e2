"""What tracked real servers mean for a VRRP instance (pure).

A box whose own service is dead should hand the VIP over: an instance may
track the local real server(s) the way keepalived's track_script and
track_interface work, with the same weight semantics:

- weight 0: the instance is in FAULT while the server is down;
- weight < 0: added to the priority while the server is down;
- weight > 0: added to the priority while the server is up.

A server with no verdict yet (``server_up`` returns None: its first check
has not ended, or nothing checks it) counts as down.  A box must not claim
the VIP on the strength of a service it has not yet seen working; the cost
is at most one check interval at start (the first check of each server is
jittered within its interval), spent in FAULT or at lower priority while
the peer, if any, keeps the VIP.

The result is :class:`lvsagent.vrrp.track.TrackVerdict`, so the instance
runner can :func:`combine` it with the interface verdict and hand one
verdict to ``VirtualRouter.set_tracking``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable
from typing import Protocol

from lvsagent.vrrp.track import TrackVerdict, weigh

__all__ = ["ServerUp", "TrackedServer", "combine", "evaluate_servers"]

# Whether a real server passes its health check (None: not checked yet).
ServerUp = Callable[[ipaddress.IPv4Address, int], bool | None]


class TrackedServer(Protocol):
    """One tracked real server: config.schema.TrackRealServer (``track_real_servers``) fits."""

    @property
    def address(self) -> ipaddress.IPv4Address: ...

    @property
    def port(self) -> int: ...

    @property
    def weight(self) -> int: ...


def evaluate_servers(tracked: Iterable[TrackedServer], server_up: ServerUp) -> TrackVerdict:
    """The FAULT flag and priority adjustment that ``tracked`` servers ask for now."""
    fatal: list[str] = []
    changed: list[str] = []
    adjustment = 0
    for t in tracked:
        verdict = server_up(t.address, t.port)
        name = f"{t.address}:{t.port}"
        state = "not checked yet" if verdict is None else "down"
        fault, adjust = weigh(t.weight, bool(verdict))
        if fault:
            fatal.append(f"{name} {state}")
        adjustment += adjust
        if adjust < 0:
            changed.append(f"{name} {state} (weight {t.weight})")
    if fatal:
        return TrackVerdict(True, adjustment, f"real server {', '.join(fatal)}")
    if changed:
        return TrackVerdict(False, adjustment, f"tracked real server {', '.join(changed)}")
    return TrackVerdict(False, adjustment, "tracked real servers up")


def combine(*verdicts: TrackVerdict) -> TrackVerdict:
    """One verdict from several sources (interfaces, real servers): the way keepalived adds them.

    FAULT if any source says so; adjustments add up; the reason names the
    sources that matter (the FAULT ones if any, else those that lowered the
    priority), so the transition line says why.
    """
    if not verdicts:
        return TrackVerdict(False, 0, "nothing tracked")
    adjustment = sum(v.adjustment for v in verdicts)
    faults = [v.why for v in verdicts if v.fault]
    if faults:
        return TrackVerdict(True, adjustment, "; ".join(faults))
    lowered = [v.why for v in verdicts if v.adjustment < 0]
    return TrackVerdict(False, adjustment, "; ".join(lowered or [v.why for v in verdicts]))
