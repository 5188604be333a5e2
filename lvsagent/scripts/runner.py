"""Start a script and wait for it on the event loop: no shell, no thread, a hard timeout.

Why no ``asyncio.create_subprocess_exec``: on Python 3.11 its child watcher starts
one thread per running child, and the unit allows the daemon 64 tasks; a script
that hangs would hold a thread.  Here the child is started with ``subprocess.Popen``
(a vfork-and-exec, or a fork when it must switch users; the event loop waits
for the exec alone, not the script) and its exit is awaited through a pidfd
(Linux 5.3) that the loop watches like a socket.

A script runs in a session of its own, so that at its timeout the whole process
group gets SIGTERM, then SIGKILL after TERM_GRACE (keepalived's two steps): a shell
script's ``sleep`` dies with it.  Its output goes to /dev/null, as keepalived's
does (log from a script with logger(1)).  A script that cannot be started (no
such file, not executable, an unknown user) is a result like any other, with
the reason, never an exception in the caller.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import logging
import os
import pwd
import signal
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lvsagent.config.schema import Command
from lvsagent.scripts.command import (
    DEFAULT_ROOT_USER,
    Identity,
    Launch,
    PrivilegeError,
    ambient_caps,
    argv_of,
    launch,
    script_env,
)

__all__ = ["TERM_GRACE", "Launcher", "ScriptRun", "ScriptRunner"]

log = logging.getLogger("lvsagent.scripts")

# keepalived waits 2 s between its SIGTERM and its SIGKILL of a script that overran.
TERM_GRACE = 2.0


@dataclass(frozen=True)
class ScriptRun:
    """How one run ended: an exit status, a signal, a timeout, or an error starting it."""

    status: int | None = None
    signal: int | None = None
    timed_out: bool = False
    error: str | None = None
    duration: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status == 0 and not self.timed_out

    @property
    def outcome(self) -> str:
        """For metrics: ok, failed, timeout or error (could not be started)."""
        if self.error is not None:
            return "error"
        if self.timed_out:
            return "timeout"
        return "ok" if self.ok else "failed"

    def describe(self) -> str:
        """What an operator reads: ``exit 0``, ``killed by SIGSEGV``, ``timed out`` ..."""
        took = f"after {self.duration:.3f} s"
        if self.error is not None:
            return f"could not be started: {self.error}"
        if self.timed_out:
            return f"timed out and was killed {took}"
        if self.signal is not None:
            return f"killed by {signal.Signals(self.signal).name} {took}"
        return f"exit {self.status} {took}"


class Launcher:
    """Who scripts run as on this host, and how to start one as that user.

    Users are looked up at each run (a user created after start works), with the
    result of a lookup kept only until the next reload would change it.
    """

    def __init__(self, script_user: str | None, script_group: str | None) -> None:
        self.own_uid, self.own_gid = os.geteuid(), os.getegid()
        try:
            with open("/proc/self/status") as status:
                self.ambient = ambient_caps(status.read())
        except OSError:
            self.ambient = 0
        self.reconfigure(script_user, script_group)

    def reconfigure(self, script_user: str | None, script_group: str | None) -> None:
        self.script_user, self.script_group = script_user, script_group

    def identity(self, user: str | None, group: str | None) -> Identity:
        """The script's user (its own, else script_user, else the default); LookupError if
        this host does not know the user or the group."""
        name = user or self.script_user
        if name is None:
            if self.own_uid != 0:
                entry = pwd.getpwuid(self.own_uid)
                return Identity(entry.pw_name, self.own_uid, self.own_gid)
            name = DEFAULT_ROOT_USER
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            raise LookupError(f"no user {name!r} on this host") from None
        gid = entry.pw_gid
        group_name = group if user else (group or self.script_group)
        if group_name is not None:
            try:
                gid = grp.getgrnam(group_name).gr_gid
            except KeyError:
                raise LookupError(f"no group {group_name!r} on this host") from None
        groups = tuple(os.getgrouplist(name, gid)) if self.own_uid == 0 else ()
        return Identity(name, entry.pw_uid, gid, groups)

    def plan(self, command: Command, extra: Sequence[str] = ()) -> Launch:
        who = self.identity(command.user, command.group)
        return launch(argv_of(command, extra), self.own_uid, self.own_gid, self.ambient, who)

    def problems(self, commands: Iterable[tuple[str, Command]]) -> list[str]:
        """Every script this host cannot run as configured, as ``key: why`` (checked at start)."""
        found = []
        for key, command in commands:
            try:
                self.plan(command)
            except (LookupError, PrivilegeError) as exc:
                found.append(f"{key}: {exc}")
        return found


Observer = Callable[[str, str, ScriptRun], None]


class ScriptRunner:
    """Runs scripts for the daemon; ``observe(kind, name, run)`` hears every run (metrics)."""

    def __init__(self, launcher: Launcher, observe: Observer | None = None) -> None:
        self.launcher = launcher
        self.observe = observe
        self._running: dict[int, subprocess.Popen[bytes]] = {}
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def running(self) -> int:
        return len(self._running)

    async def run(
        self,
        command: Command,
        timeout: float,
        *,
        kind: str,
        name: str,
        extra: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
    ) -> ScriptRun:
        """Run ``command`` (``extra`` appended) to its end or ``timeout``; never raises for
        what the script does."""
        started = time.monotonic()
        result = await self._run(command, timeout, extra, env, started, kind, name)
        if self.observe is not None:
            self.observe(kind, name, result)
        return result

    async def _run(
        self,
        command: Command,
        timeout: float,
        extra: Sequence[str],
        env: Mapping[str, str] | None,
        started: float,
        kind: str,
        name: str,
    ) -> ScriptRun:
        try:
            plan = self.launcher.plan(command, extra)
        except (LookupError, PrivilegeError) as exc:
            return ScriptRun(error=str(exc))
        try:
            proc = _spawn(plan, script_env(os.environ, env))
        except OSError as exc:
            program = plan.argv[0] if plan.switch_to is None else command.argv[0]
            return ScriptRun(error=f"{program}: {exc.strerror or exc}")
        except subprocess.SubprocessError as exc:  # the child failed before exec (setuid)
            return ScriptRun(error=str(exc))
        self._running[proc.pid] = proc
        self._idle.clear()
        log.debug("%s %s: started pid %d: %s", kind, name, proc.pid, " ".join(plan.argv))
        try:
            timed_out = await _wait(proc, timeout)
        finally:
            if proc.returncode is None:  # cancelled: take the script and its children down
                _signal_group(proc.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(1.0)
            del self._running[proc.pid]
            if not self._running:
                self._idle.set()
        code = proc.returncode
        return ScriptRun(
            status=code if code is not None and code >= 0 else None,
            signal=-code if code is not None and code < 0 else None,
            timed_out=timed_out,
            duration=time.monotonic() - started,
        )

    async def close(self, grace: float) -> None:
        """At stop: let running scripts (notify_stop) end within ``grace``, then kill them."""
        if self._running:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), grace)
        for pid in list(self._running):
            _signal_group(pid, signal.SIGKILL)


def _spawn(plan: Launch, env: dict[str, str]) -> subprocess.Popen[bytes]:
    who: dict[str, Any] = {}
    if plan.switch_to is not None:
        who = {
            "user": plan.switch_to.uid,
            "group": plan.switch_to.gid,
            "extra_groups": list(plan.switch_to.groups),
        }
    return subprocess.Popen(
        plan.argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd="/",
        env=env,
        close_fds=True,
        start_new_session=True,
        **who,
    )


async def _wait(proc: subprocess.Popen[bytes], timeout: float) -> bool:
    """Until ``proc`` exits; at ``timeout`` its group gets SIGTERM, SIGKILL after TERM_GRACE.

    Returns whether it had to be killed.  Reaps it.
    """
    loop = asyncio.get_running_loop()
    fd = os.pidfd_open(proc.pid)
    exited: asyncio.Future[None] = loop.create_future()
    loop.add_reader(fd, _settle, exited)
    try:
        done, _ = await asyncio.wait({exited}, timeout=timeout)
        timed_out = not done
        if timed_out:
            _signal_group(proc.pid, signal.SIGTERM)
            done, _ = await asyncio.wait({exited}, timeout=TERM_GRACE)
            _signal_group(proc.pid, signal.SIGKILL)  # what is left of its group, or itself
            await exited
    finally:
        loop.remove_reader(fd)
        os.close(fd)
    proc.wait()  # exited: returns at once, and reaps it
    return timed_out


def _settle(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def _signal_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
