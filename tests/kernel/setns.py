"""Move the calling thread into a named network namespace (``ip netns`` name).

setns() moves only the calling thread, and sockets keep the namespace they
were created in; so a test or bench thread can drive the adapter in a
namespace without pyroute2's ``netns=``, which forks a helper process.
Python gains ``os.setns`` in 3.12; on 3.11 we call libc.
"""

from __future__ import annotations

import ctypes
import os

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
