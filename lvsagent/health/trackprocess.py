"""keepalived's vrrp_track_process: whether enough processes of a name run.

The rules are keepalived's, as far as a poll can follow them:

- Without ``args`` and ``full_command``, a process matches when its name (the
  kernel's /proc/PID/comm, at most 15 bytes) equals ``process``, exactly: not
  pgrep's regular expression ("sshd" is not "ssh").  With them, its command line
  is compared: argv[0] equals ``process``, and ``args`` match argv[1:] by
  ``param_match``: ``exact`` (all of them, no more), ``partial`` (the first
  len(args)), ``initial`` (the same, the last of them a prefix).  Zombies never
  match.
- OK with ``quorum`` to ``quorum_max`` matching processes.  A change must last
  ``fork_delay`` (to OK) or ``terminate_delay`` (to KO) to count, which rides out a
  restart by a supervisor.

keepalived hears process events from the kernel's proc connector; lvsagent reads
/proc every POLL_INTERVAL in a worker thread (~300 processes: a few ms), so a
change is seen within about a second.  The systemd unit hides other users'
processes (ProtectProc=invisible): lvsagent says so at start, since a
track_process then never sees them; a drop-in with ProtectProc=default fixes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from lvsagent.config.schema import TrackProcess

__all__ = [
    "POLL_INTERVAL",
    "ProcessInfo",
    "ProcessVerdict",
    "TrackedProcesses",
    "count_matches",
    "hidden_processes",
    "matches",
]

log = logging.getLogger("lvsagent.track")

POLL_INTERVAL = 1.0


@dataclass(frozen=True)
class ProcessInfo:
    comm: str
    argv: tuple[str, ...] | None  # None: not read (no spec compares command lines)


def matches(spec: TrackProcess, proc: ProcessInfo) -> bool:
    if spec.args is None and not spec.full_command:
        return proc.comm == spec.process.encode()[:15].decode(errors="ignore")
    argv = proc.argv or ()
    if not argv or argv[0] != spec.process:
        return False
    if spec.args is None:
        return True
    want, have = spec.args, argv[1:]
    if spec.param_match == "exact":
        return have == want
    if len(have) < len(want):
        return False
    if spec.param_match == "partial" or not want:
        return have[: len(want)] == want
    return have[: len(want) - 1] == want[:-1] and have[len(want) - 1].startswith(want[-1])


def count_matches(spec: TrackProcess, procs: Iterable[ProcessInfo]) -> int:
    return sum(1 for p in procs if matches(spec, p))


class ProcessVerdict:
    """OK or KO from counts seen at times ``now``, with keepalived's two delays (pure)."""

    def __init__(self, spec: TrackProcess) -> None:
        self.spec = spec
        self.ok: bool | None = None
        self.count = 0
        self._since: float | None = None  # when the counts started to disagree with ok

    def update(self, count: int, now: float) -> bool:
        """One look's count; True if the verdict changed (the first look decides at once)."""
        self.count = count
        high = self.spec.quorum_max
        wanted = self.spec.quorum <= count and (high is None or count <= high)
        if self.ok is None or wanted == self.ok:
            changed = self.ok is None
            self.ok, self._since = wanted, None
            return changed
        delay = self.spec.fork_delay if wanted else self.spec.terminate_delay
        if self._since is None:
            self._since = now
        if now - self._since >= delay:
            self.ok, self._since = wanted, None
            return True
        return False


def hidden_processes(mountinfo: str) -> bool:
    """Whether /proc is mounted with hidepid (systemd's ProtectProc=invisible or noaccess)."""
    for line in mountinfo.splitlines():
        pre, _, post = line.partition(" - ")
        fields = pre.split()
        if len(fields) > 4 and fields[4] == "/proc" and post.startswith("proc "):
            return "hidepid=" in post and "hidepid=0" not in post and "hidepid=off" not in post
    return False


class TrackedProcesses:
    """The track_processes some instance tracks; ``state(name)`` for the verdicts."""

    def __init__(self, specs: Iterable[TrackProcess], on_change: Callable[[str], None]) -> None:
        self.on_change = on_change
        self._verdicts = {s.name: ProcessVerdict(s) for s in specs}
        self._polling = False

    def state(self, name: str) -> bool | None:
        verdict = self._verdicts.get(name)
        return verdict.ok if verdict is not None else None

    async def start(self) -> None:
        """A first look before VRRP starts; says so when the unit hides processes."""
        if not self._verdicts:
            return
        with contextlib.suppress(OSError), open("/proc/self/mountinfo") as info:
            if hidden_processes(info.read()):
                log.error(
                    "track_process: /proc hides other users' processes from lvsagent (the "
                    "unit's ProtectProc=invisible), so %s will not see them: add a drop-in "
                    "with [Service] ProtectProc=default (systemctl edit lvsagent)",
                    ", ".join(self._verdicts),
                )
        await self.poll()

    async def run(self) -> None:
        while True:
            await asyncio.sleep(POLL_INTERVAL)
            await self.poll()

    async def poll(self) -> None:
        if self._polling or not self._verdicts:
            return
        self._polling = True
        try:
            cmdlines = any(v.spec.args is not None or v.spec.full_command
                           for v in self._verdicts.values())  # fmt: skip
            procs = await asyncio.to_thread(scan_proc, cmdlines)
            now = asyncio.get_running_loop().time()
            for name, verdict in self._verdicts.items():
                before = verdict.ok
                if verdict.update(count_matches(verdict.spec, procs), now):
                    log.log(
                        logging.INFO if verdict.ok else logging.WARNING,
                        "track_process %s: %s (%d process(es) named %r%s)",
                        name, "OK" if verdict.ok else "KO", verdict.count, verdict.spec.process,
                        "" if before is not None else ", first look",
                    )  # fmt: skip
                    self.on_change(name)
        finally:
            self._polling = False

    def reconfigure(self, specs: Iterable[TrackProcess]) -> None:
        wanted = {s.name: s for s in specs}
        self._verdicts = {
            n: self._verdicts[n] if n in self._verdicts and self._verdicts[n].spec == s
            else ProcessVerdict(s)
            for n, s in wanted.items()
        }


def scan_proc(cmdlines: bool) -> list[ProcessInfo]:
    """Every live process's name (and command line, if asked); runs in a worker thread."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as stat:
                raw = stat.read()
            # "pid (comm) S ...": comm may hold ')' itself, so the last one ends it.
            close = raw.rindex(b")")
            if raw[close + 2 : close + 3] in (b"Z", b"X"):
                continue  # zombie or dead: not running
            comm = raw[raw.index(b"(") + 1 : close].decode(errors="replace")
            argv = None
            if cmdlines:
                with open(f"/proc/{entry}/cmdline", "rb") as cmd:
                    parts = cmd.read().split(b"\0")
                argv = tuple(p.decode(errors="replace") for p in parts[:-1] or parts)
        except (OSError, ValueError):
            continue  # gone meanwhile, or hidden
        out.append(ProcessInfo(comm, argv))
    return out
