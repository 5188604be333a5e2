"""What a script is started with: argv, environment, identity, keepalived's arguments (pure).

A script runs as ``[global] script_user`` (or its own ``user``), never as the
daemon's privileges by accident:

- lvsagent as root (by hand, or a unit that runs it as root): the child switches to
  the script's user, group and that user's supplementary groups before exec; the
  kernel drops every capability of a process that leaves uid 0.  The default user
  is ``nobody``.  ``script_user = "root"`` is honoured, as keepalived does.
- lvsagent as its own user (the shipped unit: user lvsagent with CAP_NET_ADMIN and
  CAP_NET_RAW as *ambient* capabilities, which an exec would pass on): it cannot
  switch users, so scripts run as that same user, and through ``setpriv
  --ambient-caps=-all`` (util-linux), which empties the ambient set before the
  script's exec: the script holds no capability.  Naming another user is refused
  at start (exit 77), since it cannot be honoured.

The environment is built, not inherited: PATH is fixed (a bare program name is
looked up there), the locale and time zone pass through, and nothing of the
daemon's own (NOTIFY_SOCKET, WATCHDOG_*, INVOCATION_ID) reaches a script.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from lvsagent.config.schema import Command, Hooks

__all__ = [
    "DEFAULT_ROOT_USER",
    "SCRIPT_PATH",
    "SETPRIV",
    "Identity",
    "Launch",
    "PrivilegeError",
    "ambient_caps",
    "argv_of",
    "fifo_line",
    "invocations",
    "launch",
    "notify_args",
    "script_env",
]

SCRIPT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
SETPRIV = "/usr/bin/setpriv"
DEFAULT_ROOT_USER = "nobody"
SHELL = "/bin/sh"
_PASSED = ("LANG", "LANGUAGE", "TZ")

Kind = Literal["INSTANCE", "GROUP"]


@dataclass(frozen=True)
class Identity:
    """Whom a script runs as: a user's ids and its supplementary groups."""

    name: str
    uid: int
    gid: int
    groups: tuple[int, ...] = ()


@dataclass(frozen=True)
class Launch:
    """What is executed, and the identity the child takes first (None: the daemon's)."""

    argv: tuple[str, ...]
    switch_to: Identity | None


class PrivilegeError(Exception):
    """The script's user cannot be honoured by a daemon running as this user."""


def argv_of(command: Command, extra: Sequence[str] = ()) -> tuple[str, ...]:
    """The program's argv; ``extra`` words are appended (as ``$1``... under a shell)."""
    if command.shell:
        return (SHELL, "-c", command.argv[0], "lvsagent-script", *extra)
    return (*command.argv, *extra)


def launch(
    argv: Sequence[str], own_uid: int, own_gid: int, ambient: int, who: Identity
) -> Launch:
    """How to start ``argv`` as ``who`` from a daemon with these ids and ambient capabilities."""
    if own_uid == 0:
        return Launch(tuple(argv), who)
    if (who.uid, who.gid) != (own_uid, own_gid):
        raise PrivilegeError(
            f"lvsagent runs as uid {own_uid} gid {own_gid} without CAP_SETUID and cannot run "
            f"scripts as {who.name} (uid {who.uid} gid {who.gid}): leave script_user and the "
            "script's user unset (scripts then run as lvsagent's own user), or run lvsagent as root"
        )
    if ambient:
        return Launch((SETPRIV, "--ambient-caps=-all", "--", *argv), None)
    return Launch(tuple(argv), None)


def ambient_caps(status: str) -> int:
    """The ambient capability set from the text of /proc/self/status (0 when absent)."""
    for line in status.splitlines():
        if line.startswith("CapAmb:"):
            return int(line.split(":", 1)[1].strip(), 16)
    return 0


def script_env(
    environ: Mapping[str, str], extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """A script's whole environment: fixed PATH, the locale, and ``extra``."""
    env = {"PATH": SCRIPT_PATH, "HOME": "/"}
    env.update({k: v for k, v in environ.items() if k in _PASSED or k.startswith("LC_")})
    env.update(extra or {})
    return env


def notify_args(kind: Kind, name: str, state: str, priority: int) -> tuple[str, str, str, str]:
    """keepalived's four arguments to a generic ``notify``: INSTANCE|GROUP, name, state, priority.

    A group's priority is 0, as keepalived sends it.
    """
    return (kind, name, state, str(priority))


def fifo_line(kind: Kind, name: str, state: str, priority: int) -> str:
    """keepalived's notify FIFO line: ``INSTANCE "VI_1" MASTER 100`` and a newline."""
    return f'{kind} "{name}" {state} {priority}\n'


def invocations(
    hooks: Hooks, kind: Kind, name: str, state: str, priority: int
) -> list[tuple[str, Command, tuple[str, ...]]]:
    """The scripts one state change runs, in keepalived's order: the state's own
    (``notify_master`` ...), then the generic ``notify`` with its four arguments.

    Each comes as (key, command, extra arguments); ``state`` is MASTER, BACKUP,
    FAULT or STOP.
    """
    own = {"MASTER": hooks.master, "BACKUP": hooks.backup, "FAULT": hooks.fault,
           "STOP": hooks.stop}.get(state)  # fmt: skip
    out: list[tuple[str, Command, tuple[str, ...]]] = []
    if own is not None:
        out.append((f"notify_{state.lower()}", own, ()))
    if hooks.notify is not None:
        out.append(("notify", hooks.notify, notify_args(kind, name, state, priority)))
    return out
