"""Memory habits of a long-lived daemon: freed heap handed back, start-up objects frozen.

Freed heap.

libnftables (through jansson) and the JSON readback of a 1000-service table
allocate ~13 MB for a moment on every apply or check; a first IPVS pass of
11 000 entries does the same in Python.  glibc keeps freed memory mapped, so
the daemon's RSS would stay at that peak (measured: 70 MB against a 60 MB
budget at 1000 services x 10).  ``malloc_trim(0)`` hands it back; it costs
about a millisecond, so it is called after those operations only.

Frozen start-up objects.  Almost everything the daemon allocates before it is
ready (modules, the config, a tracker and an entry per real server) lives until
it stops, yet every full collection of the cyclic garbage collector walks all
of it: at 6,000 checked real servers a full collection took ~50 ms of the
event loop that VRRP shares.  ``settle()`` runs one collection and then
``gc.freeze()``, before the VRRP instances start: later collections walk only
what came after.  After the first IPVS pass, with VRRP running, ``freeze()``
freezes what that pass left without collecting.  Frozen objects
are still freed by reference counting; only a reference cycle among them would
outlive its use, and the config, trackers and tables have none.

Full collections.  After a freeze CPython counts the objects left in the oldest
generation as its whole population, so the checks' first rounds (a metrics
child, a verdict and their tasks per server) made it run a full collection every
few hundred ms, each walking all of them with the GIL held: VRRP's thread waited
(measured on this host at a cold start with 10,000 TCP-checked servers: adverts
45 ms late at p99; with full collections a hundred times rarer, 1.5-5 ms).
Young generations are still collected as often as CPython does, so cyclic
garbage (a failed check's traceback) still goes young.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging

log = logging.getLogger("lvsagent")

# Collector thresholds once settled: gen0 and gen1 as CPython's, full collections a
# hundred times rarer (see "Full collections" above).
GEN0, GEN1, GEN2 = 700, 10, 1000

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


def settle() -> None:
    """Before VRRP runs, or after a reload: collect, freeze what is left, hand freed heap back."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GEN0, GEN1, GEN2)
    trim()


def freeze() -> None:
    """While VRRP runs: freeze what is left and hand freed heap back, without a collection.

    A full collection holds the loop for as long as it walks the heap; garbage without
    reference cycles (encoded requests, dumps) is already freed by reference counting.
    """
    gc.freeze()
    trim()
