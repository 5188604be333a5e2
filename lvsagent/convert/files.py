"""The host's files for the converter's lexer: read and glob, nothing decided here."""

from __future__ import annotations

import glob
import os
import stat

from lvsagent.convert.lexer import Source

__all__ = ["host_source"]


def _read(path: str) -> bytes:
    with open(path, "rb") as file:
        return file.read()


def _glob(pattern: str) -> list[str]:
    """glob(3)'s sorted matches that keepalived would open: regular, not executable files."""
    found = []
    for path in sorted(glob.glob(pattern)):
        try:
            mode = os.stat(path).st_mode
        except OSError:
            continue
        if stat.S_ISREG(mode) and not mode & 0o111:
            found.append(path)
    return found


def host_source() -> Source:
    return Source(read=_read, glob=_glob)
