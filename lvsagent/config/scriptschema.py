"""The configuration of what lvsagent runs and watches: commands, hooks, track scripts,
tracked files and processes, sync groups (frozen value objects; schema.py re-exports them).

keepalived's names beside each: notify_*, vrrp_script, vrrp_track_file,
vrrp_track_process, vrrp_sync_group.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Literal

# How a track_process's arguments compare with a process's (keepalived's param_match).
ParamMatch = Literal["exact", "partial", "initial"]


@dataclass(frozen=True)
class Command:
    """A program lvsagent runs: a notify hook, a track script, a MISC_CHECK.

    ``argv`` is executed as written, never through a shell; with ``shell`` it is one
    line that ``/bin/sh -c`` runs.  ``user`` (and ``group``, else the user's own)
    says whom it runs as; None means ``[global] script_user``.
    """

    argv: tuple[str, ...]
    shell: bool = False
    user: str | None = None
    group: str | None = None

    @property
    def text(self) -> str:
        """The command as an operator would type it, for logs."""
        return self.argv[0] if self.shell else shlex.join(self.argv)


@dataclass(frozen=True)
class Hooks:
    """The scripts run when an instance or a sync group changes state (keepalived's notify_*).

    ``notify`` runs at every change, after the state's own script, with keepalived's
    four arguments appended: INSTANCE|GROUP, the name, the state, the priority.
    """

    master: Command | None = None
    backup: Command | None = None
    fault: Command | None = None
    stop: Command | None = None
    notify: Command | None = None

    def __bool__(self) -> bool:
        return any((self.master, self.backup, self.fault, self.stop, self.notify))


@dataclass(frozen=True)
class VrrpScript:
    """keepalived's vrrp_script: a command run every ``interval``; exit 0 is success.

    ``fall`` failed runs in a row make it KO, ``rise`` successful ones OK again;
    a run past ``timeout`` (None: the interval) is killed and counts as failed.
    ``init_fail``: KO until ``rise`` successes, instead of the first run deciding.
    """

    name: str
    script: Command
    interval: float = 1.0
    timeout: float | None = None
    weight: int = 0
    rise: int = 1
    fall: int = 1
    init_fail: bool = False


@dataclass(frozen=True)
class TrackFile:
    """keepalived's track_file: a number read from ``file`` (0 when absent or unreadable).

    Weight 0: a non-zero number means FAULT.  Otherwise number x weight is added
    to the priority, and below -253 means FAULT.  ``init_file``: write this number
    at start when the file does not exist (``init_overwrite``: even when it does).
    """

    name: str
    file: str
    weight: int = 1
    init_file: int | None = None
    init_overwrite: bool = False


@dataclass(frozen=True)
class TrackProcess:
    """keepalived's vrrp_track_process: how many processes named ``process`` run.

    OK with ``quorum`` to ``quorum_max`` (None: no maximum) of them.  Without
    ``args`` and ``full_command`` the process's name (/proc/PID/comm, 15 bytes)
    is compared; otherwise its command line, ``args`` by ``param_match``.
    ``fork_delay`` / ``terminate_delay``: how long a change must last to count.
    """

    name: str
    process: str
    args: tuple[str, ...] | None = None
    param_match: ParamMatch = "exact"
    full_command: bool = False
    weight: int = 1
    quorum: int = 1
    quorum_max: int | None = None
    fork_delay: float = 0.0
    terminate_delay: float = 0.0


@dataclass(frozen=True)
class TrackRef:
    """An instance's reference to a vrrp_script, track_file or track_process by name.

    ``weight`` None: the tracked object's own weight (keepalived's default).
    """

    name: str
    weight: int | None = None


@dataclass(frozen=True)
class SyncGroup:
    """keepalived's vrrp_sync_group: instances that change state together.

    One in FAULT puts the others in FAULT; one becoming MASTER or BACKUP takes the
    others along.  ``tracking_weight`` allows non-zero tracking weights in its
    instances (keepalived's sync_group_tracking_weight; otherwise refused: the
    members would disagree on who should be master).
    """

    name: str
    instances: tuple[str, ...]
    hooks: Hooks = Hooks()
    tracking_weight: bool = False
