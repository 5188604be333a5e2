"""The control socket: ``lvsagent status`` asks the running daemon, over AF_UNIX.

Why a unix socket: only local users who may write to the socket file (its
owner and group: mode 0660 in a 0755 directory) can ask, and there is no port
to configure or firewall.  The kernel enforces that at connect(2) (EACCES for
anyone else; root passes), so the same check guards ``status`` and the
commands that change something (``drain``, ``undrain``); under systemd the
socket belongs to the user and group ``lvsagent``.  The protocol is one JSON
object per connection, in each direction: the client sends ``{"cmd":
"status"}`` (or ``{"cmd": "drain", "service": ..., "rs": ...}``) and closes its
side; the daemon answers with the snapshot, or ``{"ok": true, "message": ...}``
(``{"error": ...}`` for anything wrong) and closes.  One request per
connection keeps both ends free of framing state.

The server runs on the daemon's event loop and answers from the published
snapshot; it never does I/O on the daemon's behalf, so a slow or malicious
client costs one bounded read and nothing else.

``format_status`` is the report for people: pure (a snapshot and the wall
time in, text out), so its wording is tested without a daemon.  What an
operator looks for first comes first: each instance's state and why, then
which real servers are out of rotation, then the loop guard.  Anything
alarming (split brain, a server down, the guard off) is in capitals.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
import socket
import stat
import struct
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from lvsagent.observe.snapshot import (
    AgentSnapshot,
    InstanceStatus,
    IpvsStatus,
    ServerStatus,
    snapshot_from_dict,
)

log = logging.getLogger("lvsagent.control")

REQUEST_LIMIT = 4096  # bytes; a status request is a few dozen
CLIENT_TIMEOUT = 5.0  # seconds the daemon waits for a request, and a client for the answer
SOCKET_MODE = 0o660
DIR_MODE = 0o755
ACTIONS = ("drain", "undrain")  # commands answered by the daemon's ``act``
_UCRED = struct.Struct("3i")  # SO_PEERCRED: pid, uid, gid

# A command that changes something: (request, "uid N") -> the answer object.
Act = Callable[[Mapping[str, Any], str], Mapping[str, Any]]


class ControlError(Exception):
    """Why the daemon could not be asked; ``unavailable`` when nobody is listening."""

    def __init__(
        self,
        message: str,
        *,
        unavailable: bool = False,
        denied: bool = False,
        refused: bool = False,
    ) -> None:
        super().__init__(message)
        self.unavailable = unavailable
        self.denied = denied
        self.refused = refused  # the daemon answered, and said no (an unknown server, say)


def _is_live(path: str) -> bool:
    """Whether something accepts connections on the socket at ``path``."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(path)
    except OSError:
        return False
    finally:
        probe.close()
    return True


class ControlServer:
    """Serves ``status`` from ``snapshot()``, and ACTIONS through ``act``, at ``path``."""

    def __init__(
        self, path: str, snapshot: Callable[[], AgentSnapshot | None], act: Act | None = None
    ) -> None:
        self.path = path
        self._snapshot = snapshot
        self._act = act
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        """Create the directory (0755) and socket (0660), replacing a stale socket.

        ControlError if another process answers on the path (a second lvsagent)
        or the path is something other than a socket; OSError if it cannot be
        created.  The daemon should log either and run without the socket.
        """
        os.makedirs(os.path.dirname(self.path) or ".", mode=DIR_MODE, exist_ok=True)
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            pass
        else:
            if not stat.S_ISSOCK(st.st_mode):
                raise ControlError(f"{self.path} exists and is not a socket; remove it")
            if _is_live(self.path):
                raise ControlError(f"another process answers on {self.path} (a second lvsagent?)")
            os.unlink(self.path)  # left by a killed predecessor
        self._server = await asyncio.start_unix_server(self._serve, path=self.path)
        # After bind: until now the umask (022 under systemd) made it stricter, never looser.
        # Not through a symlink: had someone who can write to the directory swapped the
        # socket for a link since the bind, a following chmod would make its target 0660.
        try:
            os.chmod(self.path, SOCKET_MODE, follow_symlinks=False)
        except NotImplementedError:  # Linux cannot chmod a symlink itself: it is one now
            await self.stop()
            raise ControlError(
                f"{self.path} was replaced by a symlink while lvsagent created it; "
                "put control_socket in a directory only lvsagent and root can write"
            ) from None

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        await server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            raw = await asyncio.wait_for(reader.read(REQUEST_LIMIT), CLIENT_TIMEOUT)
            writer.write(self.answer(raw, _peer(writer)).encode() + b"\n")
            await asyncio.wait_for(writer.drain(), CLIENT_TIMEOUT)
        except (TimeoutError, ConnectionError) as exc:
            log.debug("control: client went away: %r", exc)
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, TimeoutError):
                await asyncio.wait_for(writer.wait_closed(), CLIENT_TIMEOUT)

    def answer(self, raw: bytes, peer: str = "an unknown peer") -> str:
        """The reply to one request (pure but for the snapshot and ``act``)."""
        try:
            request = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            return json.dumps({"error": 'expected one JSON object such as {"cmd": "status"}'})
        cmd = request.get("cmd") if isinstance(request, dict) else None
        if cmd in ACTIONS and self._act is not None:
            return json.dumps(dict(self._act(request, peer)))
        if cmd != "status":
            known = ", ".join(("status", *ACTIONS)) if self._act is not None else "status"
            return json.dumps({"error": f"unknown command {cmd!r}; known: {known}"})
        snap = self._snapshot()
        if snap is None:
            return json.dumps({"error": "the daemon is still starting; try again", "retry": True})
        return snap.to_json()


def _peer(writer: asyncio.StreamWriter) -> str:
    """Who is asking, for the log of a change: the kernel's word (SO_PEERCRED), not theirs."""
    sock = writer.get_extra_info("socket")
    try:
        _pid, uid, gid = _UCRED.unpack(
            sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
        )
    except (OSError, AttributeError, struct.error):
        return "an unknown peer"
    return f"uid {uid} (gid {gid})"


def request(
    path: str,
    cmd: str = "status",
    timeout: float = CLIENT_TIMEOUT,
    fields: Mapping[str, str] | None = None,
) -> bytes:
    """Send one command, return the raw answer; ControlError says why it failed."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        try:
            sock.connect(path)
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise ControlError(
                f"no lvsagent answers on {path} ({exc.strerror}): is it running? "
                "(systemctl status lvsagent)",
                unavailable=True,
            ) from exc
        except PermissionError as exc:
            raise ControlError(
                f"{path}: {exc.strerror} (run as root or as a member of the socket's group, "
                "lvsagent under systemd)",
                denied=True,
            ) from exc
        sock.sendall(json.dumps({"cmd": cmd, **(fields or {})}).encode())
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(1 << 16):
            chunks.append(chunk)
        return b"".join(chunks)
    except TimeoutError as exc:
        raise ControlError(
            f"lvsagent did not answer on {path} within {timeout:.0f} s (is its loop stuck?)",
            unavailable=True,
        ) from exc
    except OSError as exc:
        unavailable = exc.errno in (errno.ECONNRESET, errno.EPIPE)
        raise ControlError(f"{path}: {exc}", unavailable=unavailable) from exc
    finally:
        sock.close()


def status(path: str, timeout: float = CLIENT_TIMEOUT) -> AgentSnapshot:
    """The running daemon's snapshot; ControlError if it cannot be had or makes no sense."""
    raw = request(path, "status", timeout)
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ControlError(f"{path}: the daemon's answer is not JSON: {exc}") from exc
    if isinstance(data, dict) and "error" in data:
        raise ControlError(f"the daemon says: {data['error']}", unavailable=bool(data.get("retry")))
    try:
        return snapshot_from_dict(data)
    except ValueError as exc:
        raise ControlError(f"{path}: unexpected answer from the daemon: {exc}") from exc


def act(path: str, cmd: str, service: str, rs: str, timeout: float = CLIENT_TIMEOUT) -> str:
    """Ask the daemon to ``drain`` or ``undrain``; its message, or ControlError with its error."""
    raw = request(path, cmd, timeout, {"service": service, "rs": rs})
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ControlError(f"{path}: the daemon's answer is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ControlError(f"{path}: unexpected answer from the daemon: {data!r}")
    if "error" in data:
        retry = bool(data.get("retry"))
        message = f"the daemon says: {data['error']}"
        raise ControlError(message, unavailable=retry, refused=not retry)
    return str(data.get("message", ""))


# ----- the report for people ---------------------------------------------------------------


def duration(seconds: float) -> str:
    """A short human duration: 42s, 3m05s, 2h07m, 4d03h."""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def moment(at: float, now: float) -> str:
    return f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(at))} ({duration(now - at)} ago)"


def _milliseconds(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def format_status(snap: AgentSnapshot, now: float) -> str:
    """The whole report, ending without a newline."""
    lines = [
        f"lvsagent: up {duration(now - snap.started_at)}, config {snap.config_path}, "
        f"event-loop lag {_milliseconds(snap.loop_lag)} (worst of the last minute)",
    ]
    if snap.last_reload is not None:
        r = snap.last_reload
        verdict = "applied" if r.ok else f"REFUSED, still running the previous config ({r.detail})"
        lines.append(f"last reload {moment(r.at, now)}: {verdict}")
    lines += ["", "VRRP instances:"]
    if not snap.instances:
        lines.append("  (none configured)")
    for inst in snap.instances:
        lines += list(_instance(inst, now))
    lines += ["", "Virtual services:"]
    if snap.ipvs is not None:
        lines.append(f"  {_ipvs(snap.ipvs, now)}")
    for q in snap.services:
        if q.quorum_lost:
            serving = f": sorry server {q.sorry_server} serves" if q.sorry_server else ""
            lines.append(f"  {q.service}  QUORUM LOST{serving}")
    if not snap.servers:
        lines.append("  (none configured)")
    lines += list(_servers(snap.servers, now))
    lines.append("")
    guard = snap.loop_guard
    if guard is None:
        lines.append("Loop guard: not reported")
    else:
        # Released is the normal state of a master; engaged that of a backup.
        words = {True: "engaged (BACKUP state)", False: "released (MASTER state)", None: "unknown"}
        state = words[guard.active]
        detail = f" ({guard.detail})" if guard.detail else ""
        lines.append(f"Loop guard: {guard.mode}, {state}{detail}")
    return "\n".join(lines)


def _instance(inst: InstanceStatus, now: float) -> Iterator[str]:
    prio = str(inst.priority)
    if inst.effective_priority != inst.priority:
        prio += f" (effective {inst.effective_priority})"
    yield f"  {inst.name}  vrid {inst.vrid} on {inst.interface}: {inst.state}, priority {prio}"
    if inst.split_brain:
        yield f"    SPLIT BRAIN: another master advertises on {inst.interface}"
    if inst.state == "BACKUP":
        yield f"    master: {inst.master_seen or 'none heard yet'}"
    if inst.last_transition_at is not None:
        why = f": {inst.last_transition_reason}" if inst.last_transition_reason else ""
        yield f"    last transition {moment(inst.last_transition_at, now)}{why}"
    counts = (
        f"    adverts sent {inst.adverts_sent}, received {inst.adverts_received}; "
        f"transitions {inst.transitions}"
    )
    if inst.priority_zero_sent or inst.priority_zero_received:
        counts += (
            f"; priority 0 sent {inst.priority_zero_sent}, received {inst.priority_zero_received}"
        )
    yield counts
    dropped = {k: v for k, v in sorted(inst.discards.items()) if v}
    if dropped:
        yield "    discarded: " + ", ".join(f"{k} {v}" for k, v in dropped.items())


def _ipvs(ipvs: IpvsStatus, now: float) -> str:
    """The kernel's table: as desired, or failing since when and why (what to do is in it)."""
    if ipvs.up is None:
        return "IPVS: not programmed yet"
    if ipvs.up:
        return f"IPVS: programmed as configured ({ipvs.errors} error(s) since the start)"
    since = f" since {moment(ipvs.since, now)}" if ipvs.since is not None else ""
    return f"IPVS: FAILING{since}: {ipvs.detail}; retrying"


def _health(server: ServerStatus) -> str:
    return {True: "up", False: "DOWN", None: "unchecked"}[server.up]


def _servers(servers: tuple[ServerStatus, ...], now: float) -> Iterator[str]:
    services: dict[str, list[ServerStatus]] = {}
    for s in servers:
        services.setdefault(s.service, []).append(s)
    for service, members in services.items():
        yield f"  {service}"
        names = [f"{s.address}:{s.port}" for s in members]
        width = max(len(n) for n in names)
        for name, s in zip(names, members, strict=True):
            kernel = "not in IPVS" if s.weight_kernel is None else f"kernel {s.weight_kernel}"
            latency = "" if s.latency is None else f", check {_milliseconds(s.latency)}"
            reason = f"  {s.reason}" if s.reason else ""
            yield (
                f"    {name:<{width}}  {_health(s):<9}  weight {s.weight_configured}, "
                f"{kernel}{latency}{reason}"
            )
            if s.drained_since is not None:
                since = moment(s.drained_since, now)
                yield f"    {'':<{width}}  DRAINED by an operator since {since}"
