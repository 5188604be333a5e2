"""The VRRP state machine of one virtual router: sans-IO, clock passed in.

Every entry point takes ``now`` (seconds, any monotonic origin) and returns a
list of actions for the daemon to carry out *in order*.  Nothing here sleeps,
reads a clock or touches a socket, so a unit test drives two routers over a
fake link with a hand-advanced clock.  The daemon asks :meth:`next_deadline`
when to call :meth:`on_timer` again.

States follow RFC 5798 section 6.4 (Initialize, Backup, Master) plus Fault,
which keepalived users know: a tracked interface is down, so the router
neither claims nor holds the addresses.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from lvsagent.vrrp.actions import (
    Action,
    AddAddresses,
    RemoveAddresses,
    SendAdvert,
    SendGratuitousArp,
    SetLoopGuard,
    State,
    Transition,
)
from lvsagent.vrrp.packet import Advert
from lvsagent.vrrp.timers import master_down_interval, skew_time

# The actions are re-exported: callers import them from here with the machine.
__all__ = [
    "PRIORITY_OWNER", "PRIORITY_STOP", "Action", "AddAddresses", "PeerSeen", "RemoveAddresses",
    "RouterParams", "SendAdvert", "SendGratuitousArp", "SetLoopGuard", "State", "Transition",
    "VirtualRouter",
]  # fmt: skip

PRIORITY_OWNER = 255
PRIORITY_STOP = 0


@dataclass(frozen=True)
class RouterParams:
    version: int
    vrid: int
    priority: int
    advert_int: float  # seconds
    primary_address: ipaddress.IPv4Address  # ours, for the equal-priority tie-break
    preempt: bool = True
    preempt_delay: float = 0.0
    garp_repeat: int = 5
    garp_master_delay: float = 5.0
    garp_master_repeat: int = 5
    garp_lower_prio_repeat: int = 5


@dataclass(frozen=True)
class PeerSeen:
    """The last advert heard, for status and for explaining transitions."""

    address: ipaddress.IPv4Address
    priority: int
    interval: float
    at: float


# Which transitions exist; anything else is a bug, not a network event.
_ALLOWED: frozenset[tuple[State, State]] = frozenset(
    {
        (State.INITIALIZE, State.BACKUP),
        (State.INITIALIZE, State.MASTER),
        (State.INITIALIZE, State.FAULT),
        (State.BACKUP, State.MASTER),
        (State.BACKUP, State.FAULT),
        (State.BACKUP, State.INITIALIZE),
        (State.MASTER, State.BACKUP),
        (State.MASTER, State.FAULT),
        (State.MASTER, State.INITIALIZE),
        (State.FAULT, State.BACKUP),
        (State.FAULT, State.MASTER),
        (State.FAULT, State.INITIALIZE),
    }
)


class VirtualRouter:
    def __init__(self, params: RouterParams) -> None:
        self.params = params
        self.state = State.INITIALIZE
        self.adjustment = 0  # from tracked interfaces with a weight (keepalived semantics)
        self.faulted = False
        self.master_adver_interval = params.advert_int
        self.adver_timer: float | None = None
        self.master_down_timer: float | None = None
        self.garp_timer: float | None = None
        self.peer: PeerSeen | None = None
        self.last_transition: Transition | None = None
        self._down_reason = ""
        self._lower_master_since: float | None = None  # for preempt_delay
        self._lower_garp_at: float | None = None  # the last burst for a lower master
        # A backup whose master went silent but whose sync group held it back
        # (keepalived prefers BACKUP): it takes over when the group moves.
        self.wants_master = False

    # ----- derived values -------------------------------------------------

    @property
    def priority(self) -> int:
        """Configured priority plus tracking adjustments; only an untouched owner is 255."""
        base = self.params.priority
        if base == PRIORITY_OWNER and self.adjustment == 0:
            return PRIORITY_OWNER
        return max(1, min(254, base + self.adjustment))

    def skew_time(self) -> float:
        return skew_time(self.params.version, self.priority, self.master_adver_interval)

    def master_down_interval(self) -> float:
        return master_down_interval(self.params.version, self.priority, self.master_adver_interval)

    def next_deadline(self) -> float | None:
        timers = (self.adver_timer, self.master_down_timer, self.garp_timer)
        pending = [t for t in timers if t is not None]
        return min(pending) if pending else None

    # ----- events ---------------------------------------------------------

    def start(
        self, now: float, fault: bool = False, adjustment: int = 0, why: str = ""
    ) -> list[Action]:
        """RFC 5798 6.4.1, the Startup event, with the tracked interfaces' verdict (and why)."""
        self.faulted, self.adjustment = fault, adjustment
        if self.faulted:
            return self._to_fault(now, f"starting with {why or 'a tracked interface down'}")
        return self._leave_initialize(now, "startup")

    def on_advert(self, adv: Advert, src: ipaddress.IPv4Address, now: float) -> list[Action]:
        """An advert that already passed :func:`lvsagent.vrrp.receive.accept`."""
        self.peer = PeerSeen(src, adv.priority, adv.interval, now)
        if self.state == State.BACKUP:
            return self._backup_rx(adv, src, now)
        if self.state == State.MASTER:
            return self._master_rx(adv, src, now)
        return []

    def master_down_expired(self, now: float) -> bool:
        """A backup's Master_Down_Timer has run out: on_timer would take over."""
        return (
            self.state == State.BACKUP
            and self.master_down_timer is not None
            and now >= self.master_down_timer
        )

    def on_timer(self, now: float, may_take_over: bool = True) -> list[Action]:
        """Due timers.  ``may_take_over`` False: a sync group holds this backup back when its
        Master_Down_Timer runs out (the others still hear their master); it then waits,
        with no timer, for an advert or for the group to move (:meth:`follow`)."""
        actions: list[Action] = []
        if self.master_down_expired(now):
            if not may_take_over:
                self.wants_master = True
                self.master_down_timer = None
                return []
            actions += self._to_master(now, self._down_reason)
        if self.state == State.MASTER:
            if self.adver_timer is not None and now >= self.adver_timer:
                actions.append(SendAdvert(self.priority))
                self.adver_timer = max(self.adver_timer + self.params.advert_int, now)
            if self.garp_timer is not None and now >= self.garp_timer:
                self.garp_timer = None
                actions.append(SendGratuitousArp(self.params.garp_master_repeat))
        return actions

    def set_tracking(self, fault: bool, adjustment: int, why: str, now: float) -> list[Action]:
        """Tracked interfaces changed: FAULT, or a priority adjustment (see vrrp.track)."""
        self.adjustment = adjustment
        if fault and not self.faulted:
            self.faulted = True
            if self.state != State.INITIALIZE:
                return self._to_fault(now, why)
        elif not fault and self.faulted:
            self.faulted = False
            if self.state == State.FAULT:
                return self._leave_initialize(now, why)
        return []

    def follow(self, state: State, now: float, why: str) -> list[Action]:
        """Its sync group moved to ``state``: a backup follows to MASTER, a master to BACKUP.

        keepalived's vrrp_sync_group: "transition of one instance will be reflected
        to others group members".  FAULT travels as tracking (set_tracking) instead,
        so that leaving it waits for every member's own tracking.
        """
        if state == State.MASTER and self.state == State.BACKUP:
            return self._to_master(now, why)
        if state == State.BACKUP and self.state == State.MASTER:
            return self._to_backup(now, why)
        return []

    def reconfigure(self, params: RouterParams, now: float) -> list[Action]:
        """A reload changed the tunables (priority, interval, preempt, GARP): no new election.

        A master announces a changed priority or interval at once, so a backup
        that now outranks it preempts within its Master_Down_Interval and one
        that it now outranks keeps following it; a backup's own v2 interval
        follows the config (v2 adverts must carry it), and whatever it heard
        last still decides when the master is down.  The identity (VRID,
        version, address) never changes here: that is a new instance.
        """
        old, self.params = self.params, params
        if self.state == State.MASTER and (
            params.priority != old.priority or params.advert_int != old.advert_int
        ):
            self.master_adver_interval = params.advert_int
            self.adver_timer = now + params.advert_int
            return [SendAdvert(self.priority)]
        if self.state == State.BACKUP and params.version == 2:
            self.master_adver_interval = params.advert_int
        return []

    def shutdown(self, now: float) -> list[Action]:
        """RFC 5798 6.4.3 Shutdown: a master says priority 0 so a backup takes over in Skew_Time.

        The addresses go in every state: a stopped agent must not keep a VIP.  The
        loop guard stays engaged, as in BACKUP: the stopped box is still a real
        server the new master balances to, and must not balance that traffic again.
        """
        actions: list[Action] = []
        if self.state == State.MASTER:
            actions.append(SendAdvert(PRIORITY_STOP))
        actions += self._change(State.INITIALIZE, "shutdown")
        actions += [SetLoopGuard(True), RemoveAddresses()]
        self._stop_timers()
        return actions

    # ----- per-state receive (RFC 5798 6.4.2, 6.4.3) ----------------------

    def _backup_rx(self, adv: Advert, src: ipaddress.IPv4Address, now: float) -> list[Action]:
        if adv.priority == PRIORITY_STOP:
            # "If the Priority in the ADVERTISEMENT is zero, then: Set the
            # Master_Down_Timer to Skew_Time"
            self.master_down_timer = now + self.skew_time()
            self._down_reason = f"master {src} released (priority 0), skew_time elapsed"
            self.wants_master = False  # asks again when the skew runs out
            return []
        if self.params.preempt and adv.priority < self.priority and not self._holding_preempt(now):
            # "Otherwise: Discard the ADVERTISEMENT" -- the down timer runs out and we preempt.
            self._down_reason = (
                f"preempting lower-priority master {src} ({adv.priority} < {self.priority})"
            )
            return []
        if adv.priority >= self.priority:
            self._lower_master_since = None
        self.wants_master = False
        # "If Preempt_Mode is False, or if the Priority in the ADVERTISEMENT is
        # greater than or equal to the local Priority, then: ... Set
        # Master_Adver_Interval to Adver Interval contained in the ADVERTISEMENT"
        if self.params.version == 3:
            self.master_adver_interval = adv.interval
        self.master_down_timer = now + self.master_down_interval()
        self._down_reason = (
            f"no advert from master {src} for master_down_interval "
            f"{self.master_down_interval():.3f} s"
        )
        return []

    def _holding_preempt(self, now: float) -> bool:
        """preempt_delay (keepalived): tolerate a lower master this long after first seeing it."""
        if self.params.preempt_delay <= 0:
            return False
        if self._lower_master_since is None:
            self._lower_master_since = now
        return now < self._lower_master_since + self.params.preempt_delay

    def _master_rx(self, adv: Advert, src: ipaddress.IPv4Address, now: float) -> list[Action]:
        if adv.priority == PRIORITY_STOP:
            # "If the Priority in the ADVERTISEMENT is zero, then: Send an
            # ADVERTISEMENT; Reset the Adver_Timer to Advertisement_Interval"
            self.adver_timer = now + self.params.advert_int
            return [SendAdvert(self.priority)]
        higher = adv.priority > self.priority
        tie_lost = adv.priority == self.priority and src > self.params.primary_address
        if higher or tie_lost:
            if self.params.version == 3:
                self.master_adver_interval = adv.interval
            why = (
                f"higher priority {adv.priority} from {src} (ours {self.priority})"
                if higher
                else f"equal priority {adv.priority} from higher address {src}"
            )
            return self._to_backup(now, why)
        if src == self.params.primary_address:
            return []
        # RFC 9568 6.4.3: a lower-priority advert is discarded and the master
        # sends an ADVERTISEMENT at once, so the other side yields quickly.
        self.adver_timer = now + self.params.advert_int
        return [SendAdvert(self.priority), *self._lower_master_garp(now)]

    def _lower_master_garp(self, now: float) -> list[Action]:
        """Another master (a healed split, a peer that missed our adverts) has told the LAN the
        VIP is at its MAC: say again it is ours, or clients keep sending to the box that steps
        back until their ARP entries age out (keepalived's garp_lower_prio_repeat).  At most
        one burst per advert interval: a flood of forged lower adverts is not multiplied."""
        n = self.params.garp_lower_prio_repeat
        last = self._lower_garp_at
        if n == 0 or (last is not None and now < last + self.params.advert_int):
            return []
        self._lower_garp_at = now
        return [SendGratuitousArp(n)]

    # ----- transitions ------------------------------------------------------

    def _leave_initialize(self, now: float, why: str) -> list[Action]:
        if self.priority == PRIORITY_OWNER:
            return self._to_master(now, f"{why}: address owner (priority 255)")
        return self._to_backup(now, f"{why}: priority {self.priority}, waiting for a master")

    def _to_master(self, now: float, why: str) -> list[Action]:
        # RFC 5798 6.4.1: "Send an ADVERTISEMENT; Broadcast a gratuitous ARP
        # request ...; Set the Adver_Timer to Advertisement_Interval"
        actions = self._change(State.MASTER, why)
        self._stop_timers()
        self._lower_master_since = None
        self.adver_timer = now + self.params.advert_int
        if self.params.garp_master_delay > 0 and self.params.garp_master_repeat > 0:
            self.garp_timer = now + self.params.garp_master_delay
        # The address first: it is what clients reach, and a takeover counts
        # until it is there.  Then the advert, then the ARP that announces an
        # address we now hold; the loop guard is released last.
        return [
            *actions,
            AddAddresses(),
            SendAdvert(self.priority),
            SendGratuitousArp(self.params.garp_repeat),
            SetLoopGuard(False),
        ]

    def _to_backup(self, now: float, why: str) -> list[Action]:
        # From Master the caller already adopted the new master's interval (v3);
        # from Initialize or Fault, RFC 5798 6.4.1 starts from our own.
        if self.state != State.MASTER:
            self.master_adver_interval = self.params.advert_int
        actions = self._change(State.BACKUP, why)
        self._stop_timers()
        self.master_down_timer = now + self.master_down_interval()
        self._down_reason = (
            f"no advert for master_down_interval {self.master_down_interval():.3f} s"
        )
        return [*actions, SetLoopGuard(True), RemoveAddresses()]

    def _to_fault(self, now: float, why: str) -> list[Action]:
        actions: list[Action] = []
        if self.state == State.MASTER:
            actions.append(SendAdvert(PRIORITY_STOP))
        actions += self._change(State.FAULT, why)
        self._stop_timers()
        return [*actions, SetLoopGuard(True), RemoveAddresses()]

    def _change(self, new: State, why: str) -> list[Action]:
        old = self.state
        if old == new:
            return []
        if (old, new) not in _ALLOWED:
            raise AssertionError(f"VRRP transition {old.value} -> {new.value} is not defined")
        self.state = new
        self.last_transition = Transition(old, new, why)
        return [self.last_transition]

    def _stop_timers(self) -> None:
        self.adver_timer = self.master_down_timer = self.garp_timer = None
        self.wants_master = False
