"""keepalived's track_file: a number in a file, watched, for the instances that track it.

What the number means is vrrp/track.py's (``weigh_file``); this module reads it.
keepalived reads the first bytes of the file as C's ``strtol(text, NULL, 0)``
does: leading blanks, a sign, then decimal, ``0x`` hexadecimal or ``0`` octal
digits, up to the first other character; no digits at all, a missing or an
unreadable file read as 0.  A number outside 32 bits is ignored (the last value
stays), as keepalived ignores it.

keepalived watches with inotify; lvsagent looks every POLL_INTERVAL: a stat of
each file (a change of inode, size or modification time means a re-read), in a
worker thread, so that a file on a hung network mount stalls only the next look,
never the event loop.  A change is seen within about a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
from collections.abc import Callable, Iterable

from lvsagent.config.schema import TrackFile

__all__ = ["POLL_INTERVAL", "TrackedFiles", "parse_value"]

log = logging.getLogger("lvsagent.track")

POLL_INTERVAL = 1.0
READ_BYTES = 127  # keepalived reads into a 128-byte buffer
_NUMBER = re.compile(rb"\s*([+-]?)(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)")
_INT32 = (-(2**31), 2**31)  # keepalived accepts INT32_MIN .. INT32_MAX + 1


def parse_value(data: bytes) -> int | None:
    """The number at the start of ``data`` as strtol(…, 0) reads it; 0 if there is none,
    None if it is outside what keepalived accepts (the caller keeps the last value)."""
    found = _NUMBER.match(data)
    if found is None:
        return 0
    sign, digits = found.groups()
    if digits[:2] in (b"0x", b"0X"):
        value = int(digits[2:], 16)
    elif digits.startswith(b"0"):
        value = int(digits, 8)
    else:
        value = int(digits)
    value = -value if sign == b"-" else value
    return value if _INT32[0] <= value <= _INT32[1] else None


Stamp = tuple[int, int, int] | None  # (inode, size, mtime_ns); None: no file


class _File:
    def __init__(self, spec: TrackFile) -> None:
        self.spec = spec
        self.stamp: Stamp = None
        self.value = 0


class TrackedFiles:
    """The track_files some instance tracks; ``value(name)`` for the verdicts."""

    def __init__(self, files: Iterable[TrackFile], on_change: Callable[[str], None]) -> None:
        self.on_change = on_change
        self._files = {f.name: _File(f) for f in files}
        self._polling = False

    def value(self, name: str) -> int:
        entry = self._files.get(name)
        return entry.value if entry is not None else 0

    async def start(self) -> None:
        """keepalived's init_file, then a first read of every file (before VRRP starts)."""
        await asyncio.to_thread(self._init_files)
        await self.poll()

    def _init_files(self) -> None:
        for entry in self._files.values():
            spec = entry.spec
            if spec.init_file is None:
                continue
            if os.path.exists(spec.file) and not spec.init_overwrite:
                continue
            try:
                with open(spec.file, "w") as out:
                    out.write(f"{spec.init_file}\n")
            except OSError as exc:
                log.error(
                    "track_file %s: cannot initialise %s with %d: %s; it reads as 0 until "
                    "it exists (under the systemd unit only /run/lvsagent is writable)",
                    spec.name, spec.file, spec.init_file, exc.strerror,
                )  # fmt: skip

    async def run(self) -> None:
        while True:
            await asyncio.sleep(POLL_INTERVAL)
            await self.poll()

    async def poll(self) -> None:
        """Look at every file once; re-read those that changed; tell of changed values."""
        if self._polling:  # the last look is stuck on a file: never pile up threads
            return
        self._polling = True
        try:
            stamps = await asyncio.to_thread(self._stat_all)
            for name, (stamp, value) in stamps.items():
                entry = self._files.get(name)
                if entry is None:
                    continue
                entry.stamp = stamp
                if value is not None and value != entry.value:
                    log.info(
                        "track_file %s: %s now holds %d (was %d)",
                        name, entry.spec.file, value, entry.value,
                    )  # fmt: skip
                    entry.value = value
                    self.on_change(name)
        finally:
            self._polling = False

    def _stat_all(self) -> dict[str, tuple[Stamp, int | None]]:
        """(stamp, new value or None when unchanged) of each file; runs in a worker thread."""
        out: dict[str, tuple[Stamp, int | None]] = {}
        for name, entry in list(self._files.items()):
            stamp: Stamp = None
            with contextlib.suppress(OSError):
                st = os.stat(entry.spec.file)
                stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
            if stamp == entry.stamp and stamp is not None:
                out[name] = (stamp, None)
                continue
            out[name] = (stamp, _read(entry.spec.file, entry.value))
        return out

    def reconfigure(self, files: Iterable[TrackFile]) -> None:
        """A reload: new or changed files are read at the next look."""
        wanted = {f.name: f for f in files}
        self._files = {
            n: self._files[n] if n in self._files and self._files[n].spec == f else _File(f)
            for n, f in wanted.items()
        }


def _read(path: str, last: int) -> int:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return 0
    try:
        data = os.read(fd, READ_BYTES)
    except OSError:
        return 0
    finally:
        os.close(fd)
    value = parse_value(data)
    if value is None:
        log.warning("track_file: %s holds %r, outside 32 bits; keeping %d", path, data, last)
        return last
    return value
