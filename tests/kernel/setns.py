"""Move the calling thread into a named network namespace (``ip netns`` name).

setns() moves only the calling thread, and sockets keep the namespace they
were created in; so a test or bench thread can drive the adapter in a
namespace without pyroute2's ``netns=``, which forks a helper process.
Python gains ``os.setns`` in 3.12; on 3.11 we call libc.
"""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def enter(path: str) -> None:
    """setns() into the namespace file at ``path`` (/run/netns/NAME or /proc/self/ns/net)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({path}): {os.strerror(err)}")
    finally:
        os.close(fd)


def run_in(path: str, fn: Callable[[], T]) -> T:
    """``fn()`` in a fresh thread that has entered the namespace at ``path``; its result, or
    its exception raised here.  Sockets ``fn`` makes stay in that namespace, usable from
    any thread afterwards.  The one way every lab helper runs code in a namespace."""
    result: list[T] = []
    failed: list[BaseException] = []

    def body() -> None:
        try:
            enter(path)
            result.append(fn())
        except BaseException as exc:  # handed to the caller's thread
            failed.append(exc)

    worker = threading.Thread(target=body, name=f"setns-{path}")
    worker.start()
    worker.join()
    if failed:
        raise failed[0]
    return result[0]
