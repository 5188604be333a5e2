"""What tracked interfaces, scripts, processes and files mean for a VRRP instance (pure).

keepalived's semantics, which operators already rely on: the instance's own
interface, and any tracked interface with weight 0, put the instance in FAULT
when down.  A negative weight is added to the priority while the interface is
down; a positive weight is added while it is up.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from lvsagent.config.schema import TrackInterface


@dataclass(frozen=True)
class TrackVerdict:
    fault: bool
    adjustment: int  # added to the configured priority
    why: str


def weigh(weight: int, up: bool) -> tuple[bool, int]:
    """keepalived's rule for one tracked object: (FAULT, priority adjustment).

    Weight 0: FAULT while down.  Positive: added while up.  Negative: added
    while down.  Interfaces and real servers (health/track.py) share it.
    """
    if weight == 0:
        return not up, 0
    return False, weight if (weight > 0) == up else 0


def evaluate(
    own_interface: str, tracked: tuple[TrackInterface, ...], up: Mapping[str, bool | None]
) -> TrackVerdict:
    """``up`` holds each interface's state: None for one that does not exist.

    A missing interface counts as down, as in keepalived, but is named as missing:
    an operator told "down" looks at cables, while the fix is the config or the
    interface's creation.
    """
    down: list[str] = []
    gone: list[str] = []

    def fatal(name: str) -> None:
        (gone if up.get(name) is None else down).append(name)

    if not up.get(own_interface):
        fatal(own_interface)
    adjustment = 0
    changed = []
    for t in tracked:
        state = up.get(t.name)
        fault, adjust = weigh(t.weight, bool(state))
        if fault:
            fatal(t.name)
        adjustment += adjust
        if adjust < 0:
            what = "does not exist" if state is None else "down"
            changed.append(f"{t.name} {what} (weight {t.weight})")
    if down or gone:
        why = [f"interface {', '.join(down)} down"] if down else []
        why += [f"interface {', '.join(gone)} does not exist"] if gone else []
        return TrackVerdict(True, adjustment, "; ".join(why))
    if changed:
        return TrackVerdict(False, adjustment, f"tracked {', '.join(changed)}")
    return TrackVerdict(False, adjustment, "tracked interfaces up")


@dataclass(frozen=True)
class Tracked:
    """One tracked script, process or file as the instance weighs it now.

    ``up``: a script's or a process's verdict (None: no result yet); ``value``: the
    number a track_file holds (None for the others).
    """

    what: str  # "script chk_haproxy", "process haproxy", "file maint"
    weight: int
    up: bool | None = None
    value: int | None = None


# keepalived clamps a tracked file's weighted value to -254..253; -254 means FAULT.
FILE_FAULT_BELOW = -253
FILE_MAX = 253


def weigh_file(weight: int, value: int) -> tuple[bool, int]:
    """keepalived's track_file rule: (FAULT, priority adjustment).

    Weight 0: any value but 0 means FAULT.  Otherwise value x weight is added,
    at most 253; below -253 it means FAULT.
    """
    if weight == 0:
        return value != 0, 0
    status = value * weight
    if status < FILE_FAULT_BELOW:
        return True, 0
    return False, min(status, FILE_MAX)


def evaluate_tracked(items: Iterable[Tracked]) -> TrackVerdict:
    """The verdict of the scripts, processes and files an instance tracks.

    A script without a result yet changes no priority, but holds a weight-0
    instance in FAULT: keepalived keeps such an instance out of the election
    until the script has run.
    """
    fatal: list[str] = []
    changed: list[str] = []
    adjustment = 0
    for t in items:
        if t.value is not None:
            fault, adjust = weigh_file(t.weight, t.value)
            state = f"holds {t.value}"
        elif t.up is None:
            fault, adjust = t.weight == 0, 0
            state = "has no result yet"
        else:
            fault, adjust = weigh(t.weight, t.up)
            state = "OK" if t.up else "KO"
        if fault:
            fatal.append(f"{t.what} {state}")
        adjustment += adjust
        if adjust:
            changed.append(f"{t.what} {state} (weight {t.weight}: {adjust:+d})")
    if fatal:
        return TrackVerdict(True, adjustment, "; ".join(fatal))
    if changed:
        return TrackVerdict(False, adjustment, f"tracked {', '.join(changed)}")
    return TrackVerdict(False, 0, "tracked scripts, processes and files OK")
