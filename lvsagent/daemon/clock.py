"""A precise wake-up for protocol timers: timerfd on CLOCK_MONOTONIC.

Why not ``loop.call_at``: asyncio sleeps in epoll_wait, whose timeout the
kernel may stretch by 0.1 % of its length (select_estimate_accuracy) plus a
rounding up to the next millisecond.  Measured here: a 3.8 s wait woke 5 ms
late, enough to make every takeover later than keepalived's (which uses a
timerfd).  An absolute timerfd only has the task's timer slack (50 us).
Python gains ``os.timerfd_create`` in 3.13; on 3.11 we call libc directly.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os

CLOCK_MONOTONIC = 1
TFD_NONBLOCK = 0o4000
TFD_CLOEXEC = 0o2000000
TFD_TIMER_ABSTIME = 1


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.timerfd_create.argtypes = [ctypes.c_int, ctypes.c_int]
_libc.timerfd_settime.argtypes = [
    ctypes.c_int,
    ctypes.c_int,
    ctypes.POINTER(_Itimerspec),
    ctypes.POINTER(_Itimerspec),
]


def _check(rc: int) -> int:
    if rc < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return rc


class DeadlineTimer:
    """One timer, re-armed to an absolute ``time.monotonic()`` deadline; readable when due.

    asyncio's event loop clock is ``time.monotonic()``, i.e. CLOCK_MONOTONIC,
    so deadlines computed from ``loop.time()`` can be used as they are.
    """

    def __init__(self) -> None:
        self.fd = _check(_libc.timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC))

    def fileno(self) -> int:
        return self.fd

    def arm(self, deadline: float | None) -> None:
        """Fire at ``deadline``, or never for None.  A deadline in the past fires at once."""
        spec = _Itimerspec()
        if deadline is not None:
            # 0 would disarm: the earliest representable instant stands for "now or past".
            ns = max(1, int(deadline * 1e9))
            spec.it_value = _Timespec(ns // 1_000_000_000, ns % 1_000_000_000)
        _check(_libc.timerfd_settime(self.fd, TFD_TIMER_ABSTIME, ctypes.byref(spec), None))

    def consume(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.read(self.fd, 8)

    def close(self) -> None:
        os.close(self.fd)
