"""Give freed heap back to the system after the few big, transient allocations.

libnftables (through jansson) and the JSON readback of a 1000-service table
allocate ~13 MB for a moment on every apply or check; a first IPVS pass of
11 000 entries does the same in Python.  glibc keeps freed memory mapped, so
the daemon's RSS would stay at that peak (measured: 70 MB against a 60 MB
budget at 1000 services x 10).  ``malloc_trim(0)`` hands it back; it costs
about a millisecond, so it is called after those operations only.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger("lvsagent")

_libc: ctypes.CDLL | None = None
_missing = False


def trim() -> None:
    """Return freed heap to the system; a no-op where glibc's malloc_trim is missing."""
    global _libc, _missing
    if _missing:
        return
    if _libc is None:
        try:
            _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            _libc.malloc_trim.argtypes = [ctypes.c_size_t]
        except (OSError, AttributeError):
            _missing = True
            log.debug("malloc_trim is not available; RSS keeps its peaks")
            return
    _libc.malloc_trim(0)
