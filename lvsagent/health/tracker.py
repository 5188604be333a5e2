"""One real server's health verdict, from check results and the time (pure).

The tracker never runs a check or reads a clock: the monitor tells it when a
check begins and what came back, with ``now``, and asks when the next check
is due.  So every rule here is tested with a hand-advanced clock.

How retry and fall combine (keepalived-compatible)
--------------------------------------------------
A *round* is one check as an operator counts them: a first attempt plus up
to ``retry`` retries, each ``delay_before_retry`` after the failed attempt
before it.  The first attempt that passes ends the round as passed; a round
fails only when its last attempt fails.  This is keepalived's TCP_CHECK and
HTTP_GET logic (``retry_it`` counts up to ``retry`` before the checker goes
DOWN; any success resets it).  As keepalived, retries are for a server that
is up or not yet checked ("additional checks if check of an alive server
fails", keepalived.conf(5)): a server already down gets one attempt per
round, so a fleet of dead or blackholed servers costs one socket and one
timeout each per interval, not ``retry + 1``.

``fall`` and ``rise`` then count rounds, as keepalived's vrrp_script and
HAProxy do: ``fall`` failed rounds in a row take an up server DOWN, ``rise``
passed rounds in a row bring a down one UP.  With keepalived's checker
behaviour (it has no rise/fall there) being ``rise = fall = 1``, a config
that sets only ``retry`` and ``delay_before_retry`` gets keepalived's
verdicts.

When rounds start
-----------------
Rounds start on a fixed grid: ``interval`` apart from the server's first
(jittered) check, skipping grid points that passed while a round was still
running, so a slow round never overlaps the next one and checks never come
faster than one per ``interval``.  keepalived instead starts the next round
``interval`` after the last one *ended*; for a check that takes a
millisecond the two are the same, but at thousands of checks a second
"after it ended" phase-locks servers together: every check that a busy loop
iteration finishes becomes due again at the same instant, clumps grow by
themselves, and a clump of a thousand completions stalls the loop (and the
VRRP adverts on it) for tens of milliseconds (measured: p99 advert lag
66 ms at 7,500 servers).  A grid keeps the spread the jitter gave.

Start ("alpha")
---------------
With ``alpha`` a server has no verdict (``up is None``: no traffic) until
its first round ends: a passed round makes it UP at once, whatever ``rise``
says, because "no traffic until the first passed check" is the promise; a
failed round makes it DOWN at once (nothing changes in IPVS, but VRRP
tracking and status now know).  Without ``alpha`` it starts UP and needs
``fall`` failed rounds to go DOWN, like any up server.

A box that fell silent
----------------------
When the VRRP peer stops sending adverts and this box takes over, the real
servers at the peer's address are re-checked at once (:meth:`Tracker.recheck`
with ``silent``), and until that check answers they are *suspect*.  The
silence is evidence of its own, so the re-check is conclusive: if it fails,
the server is DOWN at once, without the retries and the ``fall`` rounds that
guard against a single lost packet.  Waiting for them cost a dead box's
clients a connect timeout, a delay and another timeout of failures.

Unreachable or failing
----------------------
A failed round records whether the server answered at all
(:attr:`CheckResult.unreachable`): a refused or reset connection, an HTTP
error or a slow reply come from a host that is there and may still finish
what it has open; a connect timeout or an unreachable host means that
nothing it has open can finish.  :func:`disposition` turns that into what
IPVS does with the server.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

__all__ = ["CheckResult", "Disposition", "Policy", "Tracker", "VerdictChange", "disposition"]


@dataclass(frozen=True, slots=True)
class Policy:
    """The timing and hysteresis of one server's checks (HealthCheck's numbers)."""

    interval: float = 6.0
    retry: int = 1
    delay_before_retry: float = 1.0
    rise: int = 1
    fall: int = 1
    alpha: bool = True


@dataclass(frozen=True, slots=True)
class CheckResult:
    """What one attempt found: ``reason`` is what an operator reads in the log."""

    ok: bool
    reason: str  # "connected", "status 200", "connection refused", "connect timeout 1.0 s"
    latency: float  # seconds from the start of the attempt to this result
    # A passed MISC_CHECK with misc_dynamic: the server's weight from now on (health/misc.py).
    weight: int | None = None
    # Nothing answered: a connect timeout, or the host or its network unreachable.
    unreachable: bool = False


@dataclass(frozen=True, slots=True)
class VerdictChange:
    up: bool
    message: str  # "RS 172.16.0.32:80 of 172.16.0.30:80 DOWN (connect timeout 1.0 s, 3 of 3)"
    at: float
    first: bool = False  # the first verdict of an alpha start, not a change of one


class Tracker:
    """Rise/fall hysteresis and retry scheduling for one real server.

    ``due`` is when the next attempt should start, or None while one is in
    flight (between :meth:`begin` and :meth:`finish`): one attempt at a time.
    """

    # Thousands of these live for the daemon's lifetime: no per-instance dict.
    __slots__ = (
        "attempt", "due", "fails", "last", "name", "passes", "policy", "slot", "suspect",
        "transitions", "unreachable", "up",
    )  # fmt: skip

    def __init__(self, name: str, policy: Policy, now: float, first_delay: float = 0.0) -> None:
        self.name = name  # "RS 172.16.0.32:80 of 172.16.0.30:80", the start of every message
        self.policy = policy
        self.up: bool | None = None if policy.alpha else True
        self.due: float | None = now + max(0.0, first_delay)
        self.slot = self.due  # the grid point of the current round
        self.attempt = 0  # retries taken in the current round
        self.passes = 0  # rounds passed in a row
        self.fails = 0  # rounds failed in a row
        self.transitions = 0
        self.last: CheckResult | None = None
        self.suspect = False  # its box fell silent; the next attempt decides, at once
        self.unreachable = False  # the last failed round had no answer at all

    def begin(self, now: float) -> None:
        """An attempt starts now; no other is due until it finishes."""
        if self.due is None:
            raise RuntimeError(f"{self.name}: a check is already in flight")
        self.due = None

    def finish(self, result: CheckResult, now: float) -> VerdictChange | None:
        """Take one attempt's result; return the verdict change it causes, if any."""
        if self.due is not None:
            raise RuntimeError(f"{self.name}: finish() without begin()")
        self.last = result
        p = self.policy
        conclusive, self.suspect = self.suspect, False
        if not result.ok and not conclusive and self.attempt < p.retry and self.up is not False:
            # Not a failed round yet: keepalived's delay_before_retry, then again.
            self.attempt += 1
            self.due = now + p.delay_before_retry
            return None
        retries, self.attempt = self.attempt, 0
        self.slot = self._next_slot(now)
        self.due = self.slot
        if result.ok:
            self.passes, self.fails, self.unreachable = self.passes + 1, 0, False
            if self.up is None:
                return self._change(True, f"{result.reason}, first check passed", now, True)
            if self.up is False and self.passes >= p.rise:
                return self._change(True, f"{result.reason}, {self.passes} of {p.rise}", now)
            return None
        self.fails, self.passes, self.unreachable = self.fails + 1, 0, result.unreachable
        after = f", after {retries} {'retry' if retries == 1 else 'retries'}" if retries else ""
        if conclusive and self.up is not False:
            why = f"{result.reason}, re-checked after its box fell silent{after}"
            return self._change(False, why, now, self.up is None)
        if self.up is None:
            return self._change(False, f"{result.reason}, first check failed{after}", now, True)
        if self.up and self.fails >= p.fall:
            return self._change(False, f"{result.reason}, {self.fails} of {p.fall}{after}", now)
        return None

    def recheck(self, now: float, silent: bool = False) -> None:
        """Check as soon as possible instead of at the scheduled time.

        ``silent``: the server's box stopped sending VRRP adverts.  The server is
        then suspect until the next attempt ends, and that attempt decides alone:
        a failure is a failed round and a DOWN verdict at once, whatever
        ``retry`` and ``fall`` say.  An attempt in flight is left to finish (and
        decides): it ends after the silence, so its result is as fresh as a new
        one's.  The grid stays: the round after this one is at the grid point it
        came early for.
        """
        if silent:
            self.suspect = True
        if self.due is None or self.due <= now:
            return
        if self.attempt == 0 and self.due == self.slot:
            # An extra round, not the grid point's own: that one still comes.
            self.slot -= self.policy.interval
        self.due = now

    def reconfigure(self, name: str, policy: Policy, now: float) -> bool:
        """A reload changed this server's check: keep the verdict and the counters.

        A shorter interval takes effect at once (an operator who shortens it
        wants faster checks now, not after the old, longer wait).  True if
        ``due`` moved (the scheduler must then queue the new time).
        """
        self.name = name
        if policy == self.policy:
            return False
        self.policy = policy
        self.attempt = min(self.attempt, policy.retry)
        if self.due is not None and self.attempt == 0 and self.due > now + policy.interval:
            self.due = self.slot = now + policy.interval
            return True
        return False

    def _next_slot(self, now: float) -> float:
        """The first grid point after this round's that is not already past."""
        interval = self.policy.interval
        nxt = self.slot + interval
        if nxt < now:
            nxt += interval * math.ceil((now - nxt) / interval)
        return nxt

    def _change(self, up: bool, detail: str, now: float, first: bool = False) -> VerdictChange:
        self.up = up
        self.transitions += 1
        return VerdictChange(up, f"{self.name} {'UP' if up else 'DOWN'} ({detail})", now, first)


# What IPVS does with a real server: its configured weight, weight 0, or no entry.
Disposition = Literal["serve", "drain", "remove"]


def disposition(
    up: bool | None, unreachable: bool, suspect: bool, on_failure: str, replaced: bool = False
) -> Disposition:
    """What IPVS does with one real server, from its verdict and its service's state.

    - UP: served, unless its service's sorry server ``replaced`` the real servers
      (quorum lost; then as a failed one), or it is ``suspect`` (its box fell
      silent and the re-check has not answered yet): weight 0 then, which keeps
      the connections it has (a synced one may be alive) and sends it no new one.
    - DOWN and ``unreachable``: removed, whatever ``on_failure`` says.  Nothing
      it has open can finish, and the kernel forwards a drained server's packets,
      including a new connection from a client port whose old entry points at it.
    - no verdict yet (alpha: before its first check ends, which is also every
      server's state when the agent restarts): weight 0.  No new connection
      before the check says it is up, but the ones it has go on: removing it,
      with ``net.ipv4.vs.expire_nodest_conn``, would end every established
      connection of every server at each restart of the agent.
    - otherwise (DOWN while it answers): ``on_failure``, "drain" (weight 0:
      established connections finish) or "remove".
    """
    if up is True and not replaced:
        return "drain" if suspect else "serve"
    if up is None and not replaced:
        return "drain"
    if up is False and unreachable:
        return "remove"
    return "drain" if on_failure == "drain" else "remove"
