"""Keeps the kernel's IPVS table equal to the desired one: dump, plan, apply.

Never flushes: a restart adopts what is there, so the connection table
survives it.  The whole table is re-read every ``resync_interval`` seconds,
and at once after any failed change, which repairs drift (someone ran
``ipvsadm -C``).  A new desired table (reload, health change) is applied as
the difference only, planned against the table as of the last pass.  If
IPVS is missing from the kernel the error is logged with what to do and
retried at each resync; VRRP keeps running meanwhile,
as keepalived does.

A pass hands its ops to the adapter APPLY_CHUNK at a time (``apply_many``:
windows of requests per sendmsg, 0.16 s for 11 000 in the lab) and reads one
outcome per op.  Not all at once: the adapter encodes every op it is given
before it sends the first window, and 11 000 encodings in one go held the
loop (and VRRP's adverts) ~0.2-0.3 s on a loaded host, longer in the lab.
A refused op does not stop the others (the kernel has already run the rest of
its window); it is logged, counted, and makes the pass fail, so that the next
one re-reads the kernel instead of trusting the remembered table.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import astuple, dataclass
from pathlib import Path
from typing import Literal, Protocol

from lvsagent import memory
from lvsagent.ipvs.genl import Timeouts
from lvsagent.ipvs.model import ServiceKey, Table
from lvsagent.ipvs.plan import AddService, DelService, EditService, Op, Plan, apply_ops, plan
from lvsagent.netfilter.sysctl import DEFAULT_SAVED_PATH, PROC_SYS, apply_sysctls

log = logging.getLogger("lvsagent.ipvs")
# On every error line, so that `journalctl LVSAGENT_EVENT=ipvs` finds IPVS trouble.
TROUBLE = {"journal": {"LVSAGENT_EVENT": "ipvs"}}

RETRY_AFTER_ERROR = 1.0
# A pass this big leaves megabytes of freed heap that glibc would keep (see lvsagent.memory).
TRIM_AFTER_OPS = 1000
LOG_EACH_OP_UP_TO = 50
LOG_ERRORS_UP_TO = 10  # one service that cannot be added fails each of its dests too
# Ops per apply_many call: about one netlink window, ~1.3 ms of encoding on a quiet machine.
APPLY_CHUNK = 256


class Kernel(Protocol):
    async def dump(self) -> Table: ...

    async def apply_many(self, ops: Sequence[Op]) -> Sequence[bool | OSError | None]:
        """One outcome per op, in order: True changed, False already so, OSError refused
        (or lost), None not sent.  Raises OSError only when nothing could be sent."""
        ...

    async def get_timeouts(self) -> Timeouts: ...

    async def set_timeouts(self, tcp: int, tcp_fin: int, udp: int) -> None: ...


@dataclass(frozen=True)
class Settings:
    """What a reload may change in the reconciler (the desired table comes by set_desired)."""

    foreign: Literal["report", "remove"]
    resync_interval: float
    timeouts: Timeouts
    sysctls: Mapping[str, str]


class IpvsReconciler:
    def __init__(
        self,
        kernel: Kernel,
        desired: Table,
        foreign: Literal["report", "remove"],
        resync_interval: float,
        timeouts: Timeouts = Timeouts(0, 0, 0),  # noqa: B008 - frozen value
        sysctls: Mapping[str, str] | None = None,
        saved_sysctls: str = str(DEFAULT_SAVED_PATH),
        sysctl_root: Path = PROC_SYS,
    ) -> None:
        self.kernel = kernel
        self.desired = desired
        self.foreign = foreign
        self.resync_interval = resync_interval
        self.timeouts = timeouts
        # IPVS's own sysctls (netfilter.spec.ipvs_sysctls): set at each pass that read
        # the kernel, since they exist only once IPVS answers (a module loaded on demand).
        self.sysctls: Mapping[str, str] = sysctls or {}
        self.saved_sysctls = saved_sysctls
        self._sysctl_root = sysctl_root
        self._sysctl_error = ""
        self.ops_applied = 0
        self.errors = 0
        # Whether the last pass left the kernel as desired (None: no pass yet), and if
        # not, why and since when (wall clock): `lvsagent status` and lvsagent_ipvs_up.
        self.up: bool | None = None
        self.trouble = ""
        self.trouble_since: float | None = None
        self.known: Table | None = None  # the kernel's table after our last good pass
        self._wake = asyncio.Event()
        self._reported: set[str] = set()
        self._why: list[str] = []  # what asked for the next pass
        # Services changed since the last pass; None: unknown, compare them all.
        self._pending: set[ServiceKey] | None = None

    def reconfigure(self, settings: Settings) -> None:
        """A reload's settings, used from the next pass on."""
        self.foreign = settings.foreign
        self.resync_interval = settings.resync_interval
        self.timeouts = settings.timeouts
        self.sysctls = settings.sysctls

    def set_desired(
        self,
        desired: Table,
        why: str = "config changed",
        changed: Collection[ServiceKey] | None = None,
    ) -> None:
        """A new desired table; the next pass applies only what differs.

        ``why`` names the pass in the log ("config changed", "health"): an operator
        reading "applying 1 change(s)" must tell a reload from a health verdict.
        ``changed``, when known, names the only services that differ from the
        last desired table: the next pass (if it plans against the remembered
        table) compares just those, not every entry of a 10 000-server table.
        """
        if desired == self.desired:  # cheap when unchanged services are the same objects
            return
        self.desired = desired
        if changed is None:
            self._pending = None
        elif self._pending is not None:
            self._pending.update(changed)
        if why not in self._why:
            self._why.append(why)
        self._wake.set()

    async def reconcile(self, why: str, fresh: bool = True) -> bool:
        """One pass; True when the kernel now matches.

        ``fresh=False`` plans against the table as of the last successful pass
        instead of re-reading it: a reload that changes one weight then costs one
        netlink request, not a dump of thousands of entries (2.8 s for 11 000 in
        the lab).  Drift in between is the resync's job, and any failure drops
        the remembered table so that the next pass reads the kernel again.
        """
        scope, self._pending = self._pending, set()
        try:
            actual = self.known if (not fresh and self.known is not None) else None
            if actual is None:
                scope = None  # a dump: compare everything
                actual = await self.kernel.dump()
        except OSError as exc:
            self.known = None
            self.errors += 1
            log.error(
                "ipvs: cannot read the IPVS table (%s): is the ip_vs module loaded? "
                "(`modprobe ip_vs`); retrying",
                exc,
                extra=TROUBLE,
            )
            self._failed(f"cannot read the IPVS table: {exc}")
            return False
        self.known = None
        if not await self._reconcile_timeouts():
            return False
        if scope is None:
            self._reconcile_sysctls()
            result = plan(self.desired, actual, self.foreign)
            self._report_foreign(result)
            await asyncio.sleep(0)  # a whole-table plan is one loop turn, its sending others
        else:
            result = _plan_within(self.desired, actual, scope)
        if result.ops:
            log.info("ipvs: %s: applying %d change(s)", why, len(result.ops))
        elif why != "resync":
            log.info("ipvs: %s: kernel already matches (%d services)", why, len(actual.services))
        ok = await self._apply(why, result.ops)
        if ok and not result.ops:
            self.known = actual
        elif ok and scope is None:
            self.known = apply_ops(actual, result.ops)
        elif ok:
            self.known = _apply_within(actual, result.ops)
        if ok:
            self.up, self.trouble, self.trouble_since = True, "", None
        if len(result.ops) >= TRIM_AFTER_OPS:
            del result, actual  # with the encoded windows, garbage once the table is remembered
            memory.trim()
        return ok

    async def _apply(self, why: str, ops: Sequence[Op]) -> bool:
        """Send the ops (the kernel adapter batches them); count, log, and say if all held."""
        if not ops:
            return True
        try:
            outcomes = await self._apply_chunks(ops)
        except OSError as exc:
            self.errors += 1
            log.error("ipvs: %s: cannot apply %d change(s): %s; retrying", why, len(ops), exc,
                      extra=TROUBLE)  # fmt: skip
            self._failed(f"cannot apply {len(ops)} change(s): {exc}")
            return False
        # A reload's few changes are each worth a line; a first programming of
        # thousands is not (a log line costs about a third of a kernel op).
        op_level = logging.INFO if len(ops) <= LOG_EACH_OP_UP_TO else logging.DEBUG
        applied = failed = unsent = 0
        first = ""
        for op, outcome in zip(ops, outcomes, strict=True):
            if outcome is None:
                unsent += 1
            elif isinstance(outcome, OSError):
                failed += 1
                first = first or f"{op} failed: {outcome}"
                if failed <= LOG_ERRORS_UP_TO:
                    log.error("ipvs: %s failed: %s", op, outcome, extra=TROUBLE)
            elif outcome:
                applied += 1
                log.log(op_level, "ipvs: %s", op)
        self.ops_applied += applied
        self.errors += failed
        if failed or unsent:
            log.error(
                "ipvs: %s: %d change(s) applied, %d failed, %d not sent or unconfirmed; "
                "re-reading the table",
                why,
                applied,
                failed,
                unsent,
                extra=TROUBLE,
            )
            self._failed(first or f"{unsent} change(s) not sent or unconfirmed")
            return False
        log.info("ipvs: %s: done, %d change(s) applied", why, applied)
        return True

    async def _apply_chunks(self, ops: Sequence[Op]) -> list[bool | OSError | None]:
        """apply_many, APPLY_CHUNK ops a call, each call a few loop turns apart.

        Raises OSError only when the first call sent nothing.  After a call that left
        an op unsent or unconfirmed (a lost window) nothing more is sent: the rest
        count as unsent, and the failed pass re-reads the kernel.
        """
        outcomes: list[bool | OSError | None] = []
        for start in range(0, len(ops), APPLY_CHUNK):
            chunk = ops[start : start + APPLY_CHUNK]
            if start:
                await asyncio.sleep(0)
            try:
                got = list(await self.kernel.apply_many(chunk))
            except OSError:
                if not start:
                    raise
                got = [None] * len(chunk)
            outcomes += got
            if None in got:
                break
        return outcomes + [None] * (len(ops) - len(outcomes))

    async def _reconcile_timeouts(self) -> bool:
        """Set the configured connection timeouts where the kernel differs (0 = not ours)."""
        want = self.timeouts
        if not (want.tcp or want.tcp_fin or want.udp):
            return True
        try:
            have = await self.kernel.get_timeouts()
            if all(w in (0, h) for w, h in zip(astuple(want), astuple(have), strict=True)):
                return True
            await self.kernel.set_timeouts(want.tcp, want.tcp_fin, want.udp)
        except OSError as exc:
            self.errors += 1
            log.error("ipvs: cannot set connection timeouts to %s: %s", want, exc, extra=TROUBLE)
            self._failed(f"cannot set connection timeouts: {exc}")
            return False
        log.info("ipvs: connection timeouts tcp/tcpfin/udp %s -> %s", astuple(have), astuple(want))
        return True

    def _failed(self, why: str) -> None:
        """The kernel is not as desired: say why, and since when (the first failure's time)."""
        if self.up is not False:
            self.trouble_since = time.time()
        self.up, self.trouble = False, why

    def _reconcile_sysctls(self) -> None:
        """Set IPVS's sysctls where they differ; a failure is logged once, not fatal."""
        if not self.sysctls:
            return
        try:
            apply_sysctls(self.sysctls, self.saved_sysctls, self._sysctl_root)  # logs each
        except OSError as exc:
            if str(exc) != self._sysctl_error:
                log.error("ipvs: %s; a removed real server's connections stay in IPVS "
                          "until they time out", exc, extra=TROUBLE)  # fmt: skip
            self._sysctl_error = str(exc)
        else:
            self._sysctl_error = ""

    def _report_foreign(self, result: Plan) -> None:
        current = {str(k) for k in result.foreign}
        for key in sorted(current - self._reported):
            log.warning(
                "ipvs: service %s is in the kernel but not in the config; left alone "
                '(set foreign_services = "remove" to have it removed)',
                key,
            )
        self._reported = current

    async def run(self, started: asyncio.Event | None = None) -> None:
        """Reconcile at start, on every new desired table, and every resync_interval.

        ``started`` is set after the first pass, whatever its outcome: the daemon
        tells systemd it is ready then (a kernel without IPVS is logged and retried,
        as keepalived does, and must not hold VRRP's readiness back forever).
        """
        try:
            ok = await self.reconcile("start")
        finally:
            if started is not None:
                started.set()
        failures = 0 if ok else 1
        while True:
            # After a failure retry soon, then back off (a kernel without IPVS would
            # otherwise log an error every second), never beyond the resync interval.
            retry = min(self.resync_interval, RETRY_AFTER_ERROR * 2 ** max(0, failures - 1))
            timeout = self.resync_interval if ok else retry
            try:
                await asyncio.wait_for(self._wake.wait(), timeout)
                why, fresh = " + ".join(self._why) or "config changed", False
            except TimeoutError:
                why, fresh = ("resync" if ok else "retry"), True
            self._wake.clear()
            self._why.clear()
            ok = await self.reconcile(why, fresh)
            failures = 0 if ok else failures + 1


def _plan_within(desired: Table, known: Table, scope: Collection[ServiceKey]) -> Plan:
    """plan() over the ``scope`` services alone (the rest is known to match)."""
    want = Table(tuple(s for s in desired.services if s.key in scope))
    have_map = known.service_map()
    have = Table(tuple(have_map[s.key] for s in want.services if s.key in have_map))
    return plan(want, have, "report")


def _apply_within(known: Table, ops: Sequence[Op]) -> Table:
    """apply_ops() on the services the ops touch; every other service is kept as it is.

    A health verdict's pass edits one service: rebuilding (and re-sorting) the whole
    remembered table for it cost more than the pass itself at 10 000 dests.
    """
    touched = {_service_of(op) for op in ops}
    have = known.service_map()
    after = apply_ops(Table(tuple(have[k] for k in touched if k in have)), ops).service_map()
    kept = []
    for service in known.services:
        if service.key not in touched:
            kept.append(service)
        elif service.key in after:
            kept.append(after.pop(service.key))
    return Table((*kept, *after.values()))


def _service_of(op: Op) -> ServiceKey:
    if isinstance(op, AddService | EditService):
        return op.service.key
    if isinstance(op, DelService):
        return op.key
    return op.service
