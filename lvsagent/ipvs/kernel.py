"""The kernel's IPVS table: dump(), apply(op), apply_many(ops); no decisions.

Why it looks like this: pyroute2 0.9.7's IPVS helpers hide traps (each seen on Linux 6.1):
``sched`` is silently ignored (the keyword is ``sched_name``), ``"update"`` sends
DELETE, ``"set"`` replaces the whole entry and fills omitted fields with *its*
defaults (``wlc``, DR, weight 1), fwmark services need an explicit netmask.  So
this adapter never uses ``IPVSService``/``IPVSDest``: every request is built from
the model's value objects with every configured field spelled out (codec.py), and
edits use the SET commands.

Changes go out hand-encoded, a window of requests per sendmsg, and dumps are
read with struct, both on batch.py's socket (why, and what it saves, is there);
sync daemons and timeouts go through pyroute2 (genl.py).  This module maps
outcomes.

Errors: EEXIST on add and ENOENT/ESRCH on delete mean "already converged": the
call returns ``False`` (``True`` when it changed the kernel).  Any other refusal
raises IpvsError naming the entry, the errno and what the operator should do.

Dumps read configured fields only (scheduler, flags minus HASHED, persistence,
weight, forwarding, thresholds); entries the model cannot express (IPv6,
local-node forwarding) are skipped and counted in ``last_dump_skipped``.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import os
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any, TypeVar

from lvsagent.ipvs import batch, codec, genl
from lvsagent.ipvs.genl import SyncDaemon, SyncState, Timeouts
from lvsagent.ipvs.model import Dest, DestKey, Service, ServiceKey, Table
from lvsagent.ipvs.plan import Op
from lvsagent.netlink.pyroute import NetlinkError

__all__ = ["IpvsError", "IpvsKernel", "SyncDaemon", "Timeouts"]

_Item = TypeVar("_Item", Service, Dest)

log = logging.getLogger("lvsagent.ipvs")

# Dest dumps between two turns of the event loop (each is a few hundred microseconds).
DUMP_YIELD_EVERY = 50

# Seconds to wait for the answer to a sync daemon stop before re-reading the daemons.
DAEMON_REPLY_TIMEOUT = 2.0


class IpvsError(OSError):
    """The kernel refused an IPVS request that reconciling cannot fix; says what to do.

    An OSError (``.errno`` is the kernel's code) so that callers handling I/O
    failures (the reconciler retries on OSError) handle it too.
    """

    def __init__(self, action: str, target: str, code: int, advice: str) -> None:
        name = errno.errorcode.get(code, str(code))
        super().__init__(code, f"IPVS {action} {target}: {name} ({os.strerror(code)}); {advice}")
        self.action = action
        self.target = target
        self.code = code

    def __str__(self) -> str:
        return str(self.strerror)


def _advice(action: str, code: int, scheduler: str = "") -> str:
    """What the operator should do about ``code`` from ``action``."""
    if code == errno.ENOENT and action in ("add service", "edit service"):
        return (
            f"scheduler {scheduler!r} is not in this kernel: load ip_vs_{scheduler} or pick another"
        )
    if code == errno.ESRCH:
        return "the service is not in the kernel (removed behind our back?): re-dump and re-plan"
    if code == errno.ENOENT:
        return "the destination is not in the kernel: re-dump and re-plan"
    if code == errno.ERANGE:
        return "the lower connection threshold exceeds the upper one: fix the config"
    if code == errno.EINVAL:
        return (
            "the kernel found the entry invalid: check addresses, ports, netmask and flags"
            " (in a fresh network namespace, bring lo up first)"
        )
    if code == errno.EPERM:
        return "changing IPVS needs CAP_NET_ADMIN: run lvsagent as root"
    return "see the kernel log; retry after fixing the cause"


class IpvsKernel:
    """One network namespace's IPVS table, sync daemons and timeouts.

    The socket opens on first use, in the running event loop (pyroute2 binds a
    socket to the loop that set it up), in the caller's network namespace.
    Use ``async with`` or ``close()``.
    """

    def __init__(self, batch_socket: Callable[[], batch.BatchSocket] = batch.BatchSocket) -> None:
        self._sock: genl.IpvsSocket | None = None
        self._batch: batch.BatchSocket | None = None
        self._new_batch = batch_socket  # tests and the bench choose buffer, window, acks
        self.last_dump_skipped: Mapping[str, int] = {}

    async def __aenter__(self) -> IpvsKernel:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self._close_batch()

    async def _socket(self) -> genl.IpvsSocket:
        """The socket, bound to the IPVS family (which exists only if ip_vs is loaded)."""
        if self._sock is None:
            self._sock = genl.IpvsSocket()
        try:
            async with self._sock.request_lock:  # two first calls at once would open two
                await self._sock.setup_endpoint()
        except NetlinkError as exc:
            self.close()
            raise _no_ipvs(exc.code) from exc
        return self._sock

    async def _call(self, cmd: int, attrs: genl.Attrs, flags: int = genl.FLAGS_REQUEST) -> Any:
        sock = await self._socket()
        async with sock.request_lock:
            return await sock.call(cmd, attrs, flags)

    async def _stop(self, state: SyncState) -> bool:
        try:
            await self._call(genl.CMD_DEL_DAEMON, genl.daemon_attrs(state))
        except NetlinkError as exc:
            if exc.code in batch.CONVERGED_DEL:
                return False
            target = f"{state} sync daemon"
            raise IpvsError("stop", target, exc.code, _advice("stop", exc.code)) from exc
        return True

    # -- the table --------------------------------------------------------------------------

    async def dump(self) -> Table:
        """Every IPv4 service with its dests, sorted by key; skips counted in last_dump_skipped.

        Services are read first, then each service's dests, one dump at a time
        (a second one on the socket would be EBUSY), parsed with struct (genl.py).
        """
        skipped: Counter[str] = Counter()
        sock = await self._batch_socket()
        try:
            replies = await sock.dump(genl.CMD_GET_SERVICE)
        except OSError as exc:
            code = exc.errno or errno.EIO
            raise IpvsError("dump", "services", code, _advice("dump", code)) from exc
        heads = _parsed(replies, codec.parse_service, skipped)
        services: list[Service] = []
        for i, head in enumerate(heads):
            if i % DUMP_YIELD_EVERY == DUMP_YIELD_EVERY - 1:
                await asyncio.sleep(0)  # replies are queued at once: let VRRP run
            try:
                replies = await sock.dump(genl.CMD_GET_DEST, codec.encode_selector(head.key))
            except OSError as exc:
                code = exc.errno or errno.EIO
                if code in batch.CONVERGED_DEL:  # deleted since the service dump
                    continue
                raise IpvsError(
                    "dump dests of", str(head.key), code, _advice("dump", code)
                ) from exc
            dests = _parsed(replies, codec.parse_dest, skipped)
            services.append(replace(head, dests=tuple(sorted(dests, key=lambda d: d.key))))
        self.last_dump_skipped = dict(skipped)
        return Table(tuple(sorted(services, key=lambda s: s.key)))

    async def add_service(self, service: Service) -> bool:
        """Create the service (its attributes only; dests are separate ops)."""
        return await self._one(batch.add_service(service))

    async def edit_service(self, service: Service) -> bool:
        """Replace the service's attributes (SET, never pyroute2's "update" = DELETE)."""
        return await self._one(batch.edit_service(service))

    async def del_service(self, key: ServiceKey) -> bool:
        """Delete the service and its dests (the kernel's connections stay until they expire)."""
        return await self._one(batch.del_service(key))

    async def add_dest(self, service: ServiceKey, dest: Dest) -> bool:
        return await self._one(batch.add_dest(service, dest))

    async def edit_dest(self, service: ServiceKey, dest: Dest) -> bool:
        return await self._one(batch.edit_dest(service, dest))

    async def del_dest(self, service: ServiceKey, dest: DestKey) -> bool:
        return await self._one(batch.del_dest(service, dest))

    async def apply(self, op: Op) -> bool:
        """Apply one planner op (lvsagent.ipvs.plan); True if changed."""
        return await self._one(batch.request_for(op))

    async def apply_many(self, ops: Sequence[Op]) -> list[bool | IpvsError | None]:
        """Apply planner ops in order, a window per sendmsg; one outcome per op.

        True: changed; False: already so (EEXIST on add, ENOENT/ESRCH on delete);
        IpvsError: refused, or unknown because its window's replies were lost;
        None: not sent, or in a lost window after the op that carries the error.
        A refusal does not stop the batch (the kernel has run the rest of its
        window anyway); a lost window does: the socket is closed and the caller
        re-reads the table.  The event loop runs between windows: VRRP shares it.
        """
        # TypeError for a foreign object before anything is sent.
        return await self._apply([batch.request_for(op) for op in ops])

    async def _apply(self, requests: Sequence[batch.Request]) -> list[bool | IpvsError | None]:
        outcomes: list[bool | IpvsError | None] = [None] * len(requests)
        if not requests:
            return outcomes
        sock = await self._batch_socket()
        size = sock.window
        for start in range(0, len(requests), size):
            window = requests[start : start + size]
            try:
                codes = await sock.send_window(window)
            except OSError as exc:
                first = window[0]
                outcomes[start] = IpvsError(
                    f"{len(window)} change(s) from {first.action}",
                    first.target,
                    exc.errno or errno.EIO,
                    "their outcome is unknown (replies lost): re-dump and re-plan",
                )
                self._close_batch()
                break
            for i, code in enumerate(codes):
                outcomes[start + i] = _outcome(window[i], code)
            await asyncio.sleep(0)
        return outcomes

    async def _one(self, request: batch.Request) -> bool:
        (outcome,) = await self._apply([request])
        if isinstance(outcome, IpvsError):
            raise outcome
        return bool(outcome)

    async def _batch_socket(self) -> batch.BatchSocket:
        if self._batch is None:
            self._batch = self._new_batch()
        try:
            await self._batch.open()
        except OSError as exc:
            self._close_batch()
            raise _no_ipvs(exc.errno or errno.EIO) from exc
        return self._batch

    def _close_batch(self) -> None:
        if self._batch is not None:
            self._batch.close()
            self._batch = None

    # -- sync daemons and timeouts (pyroute2 has neither) -------------------------------------

    async def sync_daemons(self) -> list[SyncDaemon]:
        """The running connection-sync daemons (at most one master and one backup)."""
        sock = await self._socket()
        async with sock.request_lock:
            try:
                found = [genl.parse_daemon(m) async for m in sock.stream(genl.CMD_GET_DAEMON, [])]
            except NetlinkError as exc:
                raise IpvsError(
                    "dump", "sync daemons", exc.code, _advice("dump", exc.code)
                ) from exc
        return [d for d in found if d is not None]

    async def start_sync_daemon(
        self,
        state: SyncState,
        ifname: str,
        syncid: int,
        *,
        maxlen: int | None = None,
        group: ipaddress.IPv4Address | None = None,
        port: int | None = None,
        ttl: int | None = None,
    ) -> bool:
        """Start the master or backup sync daemon on ``ifname``; False if it already runs so.

        EEXIST from a daemon of that state on another interface or syncid raises:
        the caller must stop it first.  Bounded like a stop (the kernel's answer to
        a daemon request can go missing): on timeout the running daemons decide.
        """
        attrs = genl.daemon_attrs(
            state, ifname, syncid, maxlen=maxlen, group=group, port=port, ttl=ttl
        )
        target = f"{state} sync daemon on {ifname} syncid {syncid}"
        try:
            return await asyncio.wait_for(self._start(attrs, state, ifname, syncid),
                                          DAEMON_REPLY_TIMEOUT)  # fmt: skip
        except TimeoutError:
            running = [d for d in await self.sync_daemons() if d.state == state]
            if any(d.ifname == ifname and d.syncid == syncid for d in running):
                log.warning("ipvs: no reply to starting the %s, but it runs", target)
                return True
            raise IpvsError("start", target, errno.ETIMEDOUT,
                            "no answer and the daemon does not run; check "
                            "`ipvsadm -L --daemon`") from None  # fmt: skip

    async def _start(self, attrs: genl.Attrs, state: SyncState, ifname: str, syncid: int) -> bool:
        target = f"{state} sync daemon on {ifname} syncid {syncid}"
        try:
            await self._call(genl.CMD_NEW_DAEMON, attrs)
        except NetlinkError as exc:
            if exc.code == errno.EEXIST:
                running = [d for d in await self.sync_daemons() if d.state == state]
                if any(d.ifname == ifname and d.syncid == syncid for d in running):
                    return False
                advice = f"another {state} daemon runs ({running}): stop it first"
            elif exc.code == errno.ENODEV:
                advice = f"no interface {ifname} in this namespace: fix the sync interface"
            elif exc.code == errno.EADDRNOTAVAIL:
                advice = f"{ifname} needs an IPv4 address (the master sends from it)"
            else:
                advice = _advice("start", exc.code)
            raise IpvsError("start", target, exc.code, advice) from exc
        return True

    async def stop_sync_daemon(self, state: SyncState) -> bool:
        """Stop the master or backup sync daemon; False if none was running.

        In the lab the acknowledgement of stopping a *backup* daemon sometimes
        never reaches us although the daemon is gone (about one run in three,
        timing-dependent).  So the request is bounded, and on timeout the
        kernel is asked what is running instead: reconciled, not trusted.
        """
        try:
            return await asyncio.wait_for(self._stop(state), DAEMON_REPLY_TIMEOUT)
        except TimeoutError:
            if any(d.state == state for d in await self.sync_daemons()):
                raise IpvsError(
                    "stop",
                    f"{state} sync daemon",
                    errno.ETIMEDOUT,
                    "no answer and the daemon still runs; check `ipvsadm -L --daemon`",
                ) from None
            log.warning("ipvs: no reply to stopping the %s sync daemon, but it is gone", state)
            return True

    async def get_timeouts(self) -> Timeouts:
        try:
            (reply,) = await self._call(genl.CMD_GET_CONFIG, [])
        except NetlinkError as exc:
            raise IpvsError("get", "timeouts", exc.code, _advice("get", exc.code)) from exc
        return genl.parse_timeouts(reply)

    async def set_timeouts(self, tcp: int, tcp_fin: int, udp: int) -> None:
        """Set connection timeouts in seconds; 0 leaves that one unchanged (as ipvsadm --set)."""
        try:
            await self._call(genl.CMD_SET_CONFIG, genl.timeout_attrs(Timeouts(tcp, tcp_fin, udp)))
        except NetlinkError as exc:
            raise IpvsError(
                "set timeouts", f"{tcp} {tcp_fin} {udp}", exc.code, _advice("set", exc.code)
            ) from exc


def _no_ipvs(code: int) -> IpvsError:
    advice = "this kernel has no IPVS: load it (`modprobe ip_vs`) or build it in"
    return IpvsError("open", "generic netlink family", code, advice)


def _outcome(request: batch.Request, code: int) -> bool | IpvsError:
    if code == 0:
        return True
    if code in request.converged:
        return False
    advice = _advice(request.action, code, request.scheduler)
    return IpvsError(request.action, request.target, code, advice)


def _parsed(
    replies: Sequence[bytes],
    parse: Callable[[bytes], tuple[_Item | None, str]],
    skipped: Counter[str],
) -> list[_Item]:
    """The replies ``parse`` understood; the others counted in ``skipped`` by reason."""
    out: list[_Item] = []
    for reply in replies:
        item, reason = parse(reply)
        if item is None:
            skipped[reason] += 1
        else:
            out.append(item)
    return out
