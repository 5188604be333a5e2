"""One agent per state directory: an flock on ``<state_dir>/lvsagent.pid``, held while it runs.

Why: a second agent on the same box starts in BACKUP, so it removes the live
master's VIP, engages the loop guard under it, and then both claim MASTER and
rewrite the same nft table.  keepalived refuses to start beside itself with a
pid file; this is the same, with the lock doing the refusing: the kernel
drops an flock when its holder dies, even by kill -9, so a stale file never
blocks a restart.  The holder's PID is written into the file for the refusal
to name.  The lock is taken before anything on the host is changed.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from pathlib import Path

from lvsagent.statedir import open_lock_file

LOCK_NAME = "lvsagent.pid"


class AlreadyRunning(Exception):
    """Another agent holds the state directory's lock; the message names it."""


class StateLock:
    def __init__(self, state_dir: str) -> None:
        self.path = Path(state_dir) / LOCK_NAME
        self.fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise AlreadyRunning (StateDirError if the file cannot be opened)."""
        fd, writable = open_lock_file(str(self.path.parent), self.path.name)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = _read_pid(fd)
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise
            who = f"PID {holder}" if holder else "its PID not yet written"
            raise AlreadyRunning(
                f"another lvsagent ({who}) is running with state directory "
                f"{self.path.parent} (it holds {self.path}): stop it first "
                "(systemctl stop lvsagent, or kill that PID), or give this one "
                "another state_dir"
            ) from None
        if writable:
            # Only what a refusal names: a full file system must not stop the agent here
            # (the state file written next says what is wrong, naming it).
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd

    def release(self) -> None:
        """Drop the lock (closing the file does); the file stays, with a PID nobody holds."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
