"""IPVS requests hand-encoded and sent a window per sendmsg; dumps read by hand.

Why not pyroute2 (measured in the kernel lab, UML 6.1 on 2 shared cores, with
tests/bench/ipvs_guest.py, 1000 services x 10 real servers = 11 000 requests):
through pyroute2's AsyncIPVS, one request and one acknowledgement at a time,
programming took ~850 us a request, no faster than ``ipvsadm -R`` of the same
table; nearly all of it pyroute2 building and parsing messages in Python.  Here
building a request costs ~5 us, and a window of 256 requests is one sendmsg:
all 43 windows took 0.02 s together, the kernel's work included, so the whole
pass (dump, plan, requests, windows) takes ~0.16 s, 0.04-0.05 of ``ipvsadm -R``.
Asking an acknowledgement of every request added ~22 us a request (one recv
each), hence not by default.  Dumps: 11 000 entries read through pyroute2 took
2.2-2.7 s, by hand (codec.parse_*) 0.16 s.

How a window works.  Every request carries its own sequence number.  The
kernel handles the messages of one sendmsg in order and synchronously, and it
answers a request without NLM_F_ACK only when it fails, with an NLMSG_ERROR
carrying that request's sequence number.  So by default only the last request
of a window asks for an acknowledgement: when it arrives, every earlier request
without an error reply succeeded (``ack_each=True`` asks for every one).
Replies go to our socket's receive buffer while the kernel works through the
window; a full buffer drops them (the next recv says ENOBUFS), so the window
is sized to the buffer we obtained, at REPLY_TRUESIZE bytes a reply.

The bytes equal what pyroute2's ipvs message class encodes for the same
request, attribute for attribute (tests/unit/test_ipvs_batch.py).
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from lvsagent.ipvs import codec, genl
from lvsagent.ipvs.model import Dest, DestKey, Service, ServiceKey
from lvsagent.ipvs.plan import AddDest, AddService, DelDest, DelService, EditDest, EditService, Op
from lvsagent.netlink import frames
from lvsagent.netlink.frames import (
    CTRL_ATTR_FAMILY_ID,
    CTRL_ATTR_FAMILY_NAME,
    CTRL_CMD_GETFAMILY,
    GENL_ID_CTRL,
    NLM_F_ACK,
    NLM_F_DUMP,
    NLM_F_REQUEST,
    NLMSG_DONE,
    NLMSG_ERROR,
    NLMSGHDR,
)

# include/uapi/linux/netlink.h, genetlink.h: the socket's own options
SOL_NETLINK = 270
NETLINK_GENERIC = 16
NETLINK_CAP_ACK = 10  # error replies without a copy of the failed request
SO_RCVBUFFORCE = 33  # beyond net.core.rmem_max; needs CAP_NET_ADMIN, as IPVS changes do
GENL_NAME = "IPVS"
GENL_VERSION = 1  # IPVS_GENL_VERSION

FLAGS_CREATE = genl.FLAGS_CREATE  # add: create exclusive, as ipvsadm
FLAGS_CHANGE = genl.FLAGS_REQUEST
CONVERGED_ADD = frozenset({errno.EEXIST})
CONVERGED_DEL = frozenset({errno.ENOENT, errno.ESRCH})

RCVBUF = 1 << 20  # asked for; the kernel doubles it and may cap it (without CAP_NET_ADMIN)
REPLY_TRUESIZE = 1024  # what one queued reply costs the buffer (skb overhead; ~768 measured)
MAX_WINDOW = 256  # requests per sendmsg: bounds the time the loop spends inside the kernel
REPLY_TIMEOUT = 5.0  # the kernel answers within the sendmsg; this only catches a lost reply

_HEAD = struct.Struct("=IHHIIBBH")  # nlmsghdr + genlmsghdr
_U16, _I32 = struct.Struct("=H"), struct.Struct("=i")


@dataclass(frozen=True, slots=True)
class Request:
    """One IPVS change: the command, its encoded attributes, and what names it in errors."""

    action: str  # "add service", "delete dest", ...: IpvsError's words
    cmd: int
    flags: int
    body: bytes
    service: ServiceKey
    dest: DestKey | None = None
    scheduler: str = ""  # an unknown one is ENOENT: the advice names it
    converged: frozenset[int] = frozenset()  # errnos meaning "already so"

    @property
    def target(self) -> str:
        """Built only for an error: str() of 11 000 keys would cost more than their requests."""
        return str(self.service) if self.dest is None else f"{self.dest} of {self.service}"


def _service_request(action: str, cmd: int, flags: int, service: Service) -> Request:
    body = codec.encode_service(service)
    converged = CONVERGED_ADD if cmd == genl.CMD_NEW_SERVICE else frozenset()
    return Request(action, cmd, flags, body, service.key, None, service.scheduler, converged)


def add_service(service: Service) -> Request:
    return _service_request("add service", genl.CMD_NEW_SERVICE, FLAGS_CREATE, service)


def edit_service(service: Service) -> Request:
    return _service_request("edit service", genl.CMD_SET_SERVICE, FLAGS_CHANGE, service)


def del_service(key: ServiceKey) -> Request:
    body = codec.encode_selector(key)
    return Request(
        "delete service", genl.CMD_DEL_SERVICE, FLAGS_CHANGE, body, key, None, "", CONVERGED_DEL
    )


def _dest_request(action: str, cmd: int, service: ServiceKey, key: DestKey, dest: bytes) -> Request:
    body = codec.encode_selector(service) + dest
    if cmd == genl.CMD_NEW_DEST:
        return Request(action, cmd, FLAGS_CREATE, body, service, key, "", CONVERGED_ADD)
    converged = CONVERGED_DEL if cmd == genl.CMD_DEL_DEST else frozenset()
    return Request(action, cmd, FLAGS_CHANGE, body, service, key, "", converged)


def add_dest(service: ServiceKey, dest: Dest) -> Request:
    return _dest_request("add dest", genl.CMD_NEW_DEST, service, dest.key, codec.encode_dest(dest))


def edit_dest(service: ServiceKey, dest: Dest) -> Request:
    return _dest_request("edit dest", genl.CMD_SET_DEST, service, dest.key, codec.encode_dest(dest))


def del_dest(service: ServiceKey, dest: DestKey) -> Request:
    body = codec.encode_dest_key(dest)
    return _dest_request("delete dest", genl.CMD_DEL_DEST, service, dest, body)


def request_for(op: Op) -> Request:
    """The request for a planner op."""
    match op:
        case AddService(service=service):
            return add_service(service)
        case EditService(service=service):
            return edit_service(service)
        case DelService(key=key):
            return del_service(key)
        case AddDest(service=service, dest=dest):
            return add_dest(service, dest)
        case EditDest(service=service, dest=dest):
            return edit_dest(service, dest)
        case DelDest(service=service, dest=dest):
            return del_dest(service, dest)
    raise TypeError(f"not an IPVS plan op: {op!r}")


def frame(request: Request, family: int, seq: int, ack: bool) -> bytes:
    """The netlink message; without ``ack`` the kernel answers only if the request fails."""
    flags = request.flags if ack else request.flags & ~NLM_F_ACK
    size = _HEAD.size + len(request.body)
    return _HEAD.pack(size, family, flags, seq, 0, request.cmd, GENL_VERSION, 0) + request.body


def parse_acks(data: bytes | memoryview) -> list[tuple[int, int]]:
    """(sequence number, errno) of every NLMSG_ERROR in a datagram; 0 is an acknowledgement.

    Anything else (a malformed tail, other message types) is skipped: a reply we
    cannot read leaves its request unconfirmed, which the caller treats as failed.
    """
    return frames.acks(data)


class Window:
    """One sendmsg worth of requests and the replies that settle it (no I/O).

    Sequence numbers run from ``first``; replies to other numbers (a window
    given up on earlier) are ignored.  Done when the last request is answered:
    the kernel works in order, so every earlier answer has arrived by then.
    """

    def __init__(
        self, requests: Sequence[Request], family: int, first: int, ack_each: bool = False
    ) -> None:
        if not requests:
            raise ValueError("an empty window")
        last = len(requests) - 1
        self.first = first
        self.ack_each = ack_each
        self.data = b"".join(
            frame(r, family, first + i, ack_each or i == last) for i, r in enumerate(requests)
        )
        self._codes: list[int | None] = [None] * len(requests)

    @property
    def done(self) -> bool:
        return self._codes[-1] is not None

    def feed(self, datagram: bytes | memoryview) -> None:
        for seq, code in parse_acks(datagram):
            if 0 <= seq - self.first < len(self._codes):
                self._codes[seq - self.first] = code

    def codes(self) -> list[int]:
        """The errno of each request, 0 = done; OSError if the window is not settled."""
        if not self.done or (self.ack_each and None in self._codes):
            raise OSError(errno.EPROTO, "IPVS: a reply is missing from the window")
        return [0 if code is None else code for code in self._codes]


def family_request(seq: int) -> bytes:
    body = codec.nla(CTRL_ATTR_FAMILY_NAME, GENL_NAME.encode() + b"\0")
    size = _HEAD.size + len(body)
    return _HEAD.pack(size, GENL_ID_CTRL, NLM_F_REQUEST, seq, 0, CTRL_CMD_GETFAMILY, 1, 0) + body


def parse_family(data: bytes | memoryview) -> int:
    """The family id from a CTRL_CMD_GETFAMILY reply; raises OSError for an error reply."""
    for _seq, code in parse_acks(data):
        if code:
            raise OSError(code, f"generic netlink family {GENL_NAME}")
    for kind, _seq, start, end in frames.messages(data):
        if kind != GENL_ID_CTRL:
            continue
        found = dict(frames.attributes(bytes(data[start + frames.GENLHDR.size : end])))
        if CTRL_ATTR_FAMILY_ID in found:
            return int(_U16.unpack_from(found[CTRL_ATTR_FAMILY_ID])[0])
    raise OSError(errno.EPROTO, "no family id in the generic netlink controller's reply")


def dump_request(cmd: int, family: int, seq: int, body: bytes = b"") -> bytes:
    size = _HEAD.size + len(body)
    flags = NLM_F_REQUEST | NLM_F_DUMP
    return _HEAD.pack(size, family, flags, seq, 0, cmd, GENL_VERSION, 0) + body


def dump_replies(data: bytes | memoryview, seq: int) -> tuple[list[bytes], int | None]:
    """The attributes of each reply to dump ``seq`` in a datagram, and how it ended.

    The end is None while the dump runs, 0 at NLMSG_DONE, else the errno of an
    error reply (or EPROTO for a malformed datagram).  Replies to other
    sequence numbers (a window given up on earlier) are skipped.
    """
    blocks: list[bytes] = []
    offset = 0
    while offset + NLMSGHDR.size <= len(data):
        length, kind, _flags, got, _pid = NLMSGHDR.unpack_from(data, offset)
        if length < NLMSGHDR.size or offset + length > len(data):
            return blocks, errno.EPROTO
        if got == seq:
            if kind in (NLMSG_DONE, NLMSG_ERROR):
                has_code = length >= NLMSGHDR.size + _I32.size
                return blocks, -_I32.unpack_from(data, offset + NLMSGHDR.size)[
                    0
                ] if has_code else 0
            blocks.append(bytes(data[offset + _HEAD.size : offset + length]))
        offset += (length + 3) & ~3
    return blocks, None


class BatchSocket:
    """A non-blocking generic netlink socket that sends IPVS requests a window at a time.

    Opens in the caller's network namespace.  ``window`` overrides the size
    derived from the receive buffer (tests use it to overflow the buffer).
    """

    def __init__(
        self, *, rcvbuf: int = RCVBUF, window: int | None = None, ack_each: bool = False
    ) -> None:
        self.ack_each = ack_each
        self.window = window or 1
        self._want_rcvbuf = rcvbuf
        self._fixed_window = window
        self._sock: socket.socket | None = None
        self._family = 0
        self._seq = 0
        self._buf = bytearray(65536)
        self._lock = asyncio.Lock()

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    async def open(self) -> None:
        """Socket, buffers and the IPVS family id; OSError (ENOENT) when IPVS is missing."""
        async with self._lock:  # two first calls at once would open two
            await self._open()

    async def _open(self) -> None:
        if self._sock is not None:
            return
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_GENERIC)
        try:
            sock.setblocking(False)
            sock.bind((0, 0))
            sock.setsockopt(SOL_NETLINK, NETLINK_CAP_ACK, 1)
            try:
                sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, self._want_rcvbuf)
            except PermissionError:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self._want_rcvbuf)
            rcvbuf = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
            self.window = self._fixed_window or max(1, min(MAX_WINDOW, rcvbuf // REPLY_TRUESIZE))
            self._sock = sock
            self._seq += 1
            sock.send(family_request(self._seq))
            self._family = parse_family(await self._receive())
        except BaseException:
            self.close()
            sock.close()
            raise

    async def send_window(self, requests: Sequence[Request]) -> list[int]:
        """Send ``requests`` (at most ``window``) in one sendmsg; the errno of each, 0 = done.

        Raises OSError when the outcome is unknown: a reply lost to a full
        buffer (ENOBUFS), none within REPLY_TIMEOUT, or the send failing.
        """
        async with self._lock:
            await self._open()
            return await self._exchange(requests)

    async def dump(self, cmd: int, body: bytes = b"") -> list[bytes]:
        """One dump; the attributes of every reply.  OSError for an error reply or none.

        The kernel runs one dump per socket at a time (EBUSY): the lock holds
        until the dump ends, and a dump given up half-way closes the socket.
        """
        async with self._lock:
            await self._open()
            assert self._sock is not None
            self._seq += 1
            seq = self._seq
            self._sock.send(dump_request(cmd, self._family, seq, body))
            blocks: list[bytes] = []
            try:
                end = None
                while end is None:
                    found, end = dump_replies(await self._receive(), seq)
                    blocks += found
            except BaseException:
                self.close()
                raise
        if end:
            raise OSError(end, f"IPVS dump: {os.strerror(end)}")
        return blocks

    async def _exchange(self, requests: Sequence[Request]) -> list[int]:
        assert self._sock is not None
        window = Window(requests, self._family, self._seq + 1, self.ack_each)
        self._seq += len(requests)
        self._sock.send(window.data)
        while not window.done:
            window.feed(await self._receive())
        return window.codes()

    async def _receive(self) -> memoryview:
        """One datagram; waits on the event loop, not in recv."""
        assert self._sock is not None
        while True:
            try:
                size = self._sock.recv_into(self._buf)
                return memoryview(self._buf)[:size]
            except BlockingIOError:
                pass
            loop = asyncio.get_running_loop()
            ready = loop.create_future()
            fd = self._sock.fileno()
            loop.add_reader(fd, _wake, ready)
            try:
                await asyncio.wait_for(ready, REPLY_TIMEOUT)
            except TimeoutError:
                raise OSError(errno.ETIMEDOUT, "IPVS: no reply from the kernel") from None
            finally:
                loop.remove_reader(fd)


def _wake(ready: asyncio.Future[None]) -> None:
    if not ready.done():  # the reader may fire again before the waiter runs
        ready.set_result(None)
