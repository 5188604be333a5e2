"""keepalived's notify FIFO: one line per state change, written without ever blocking.

A FIFO delivers the changes in the order they happened, which notify scripts
(started concurrently) do not; that is why keepalived users read one.  The
daemon must never wait for the reader, so the FIFO is opened and written with
O_NONBLOCK: with no reader the open fails (ENXIO) and the line is dropped; with
a full pipe (a reader that stopped reading) the write fails (EAGAIN) and the line
is dropped.  Each is logged once per outage, not per line.  A line is far below
PIPE_BUF, so it arrives whole or not at all.

The FIFO is created (mode 0660: lvsagent's group may read it) when the path does
not exist; a path that is something else (a regular file) is never written to.
"""

from __future__ import annotations

import errno
import logging
import os
import stat

__all__ = ["NotifyFifo"]

log = logging.getLogger("lvsagent.scripts")


class NotifyFifo:
    def __init__(self, path: str) -> None:
        self.path = path
        self._fd: int | None = None
        self._trouble: str | None = None  # the last problem logged, until a write succeeds
        self.dropped = 0

    def write(self, line: str) -> bool:
        """Write one line now, or drop it; True if the reader got it."""
        data = line.encode()
        for attempt in (1, 2):
            try:
                fd = self._open()
                written = os.write(fd, data)
            except OSError as exc:
                self._close()
                if exc.errno == errno.EPIPE and attempt == 1:
                    continue  # the reader went away and maybe another came: reopen once
                self._drop(line, exc)
                return False
            if written != len(data):  # cannot happen below PIPE_BUF; never leave half a line
                self._drop(line, OSError(errno.EAGAIN, "short write"))
                return False
            if self._trouble is not None:
                log.info("notify_fifo %s: a reader is back; writing state changes again",
                         self.path)  # fmt: skip
                self._trouble = None
            return True
        return False

    def close(self) -> None:
        self._close()

    def _open(self) -> int:
        if self._fd is not None:
            return self._fd
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOFOLLOW)
        except FileNotFoundError:
            os.mkfifo(self.path)
            os.chmod(self.path, 0o660)  # whatever the umask (the unit's is 0077)
            fd = os.open(self.path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOFOLLOW)
        if not stat.S_ISFIFO(os.fstat(fd).st_mode):
            os.close(fd)
            raise OSError(errno.EINVAL, "not a FIFO")
        self._fd = fd
        return fd

    def _close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _drop(self, line: str, exc: OSError) -> None:
        self.dropped += 1
        why = {
            errno.ENXIO: "no process reads it",
            errno.EAGAIN: "its reader is not reading (the pipe is full)",
            errno.EINVAL: "it is not a FIFO (lvsagent writes only to a FIFO)",
        }.get(exc.errno or 0, exc.strerror or str(exc))
        if why != self._trouble:
            self._trouble = why
            log.warning(
                "notify_fifo %s: %s; state changes are dropped until that changes "
                "(first dropped: %s)",
                self.path, why, line.strip(),
            )  # fmt: skip
