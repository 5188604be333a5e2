"""The hand-written IPVS encoder and parser against pyroute2's own; replies from crafted bytes.

Golden: for every op kind, service kind, protocol, forwarding method, threshold,
persistence and flag, batch.py's bytes equal those pyroute2's ipvs message class
encodes for the attribute lists below (what the adapter sent through pyroute2
before batch.py), and genl.py's struct parser reads pyroute2-encoded replies back
as the model's values.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import socket
import struct
from collections.abc import Sequence
from typing import Any

import pytest
from pyroute2.netlink import ctrlmsg, nlmsgerr

from lvsagent.ipvs import batch, codec, genl
from lvsagent.ipvs import plan as planner
from lvsagent.ipvs.kernel import IpvsError, IpvsKernel
from lvsagent.ipvs.model import Dest, DestKey, Service, ServiceKey
from tests.unit.ipvsattrs import dest_attrs, dest_key_attrs, service_attrs, service_key_attrs

A = ipaddress.IPv4Address
FAMILY = 0x1E
TCP80 = ServiceKey(protocol="tcp", address=A("192.0.2.100"), port=80)
UDP53 = ServiceKey(protocol="udp", address=A("198.51.100.7"), port=53)
MARK = ServiceKey(fwmark=0x10203)

SERVICES = [
    Service(TCP80, "rr"),
    Service(UDP53, "wrr"),
    Service(MARK, "wlc"),
    Service(TCP80, "sh", frozenset({"sh-port", "sh-fallback"})),
    Service(TCP80, "mh", frozenset({"mh-port"}), 600, A("255.255.255.0")),
    Service(MARK, "rr", persistence_timeout=30),
    Service(UDP53, "lc", frozenset({"ops", "0x100"})),
    Service(ServiceKey(protocol="tcp", address=A("203.0.113.255"), port=65535), "sed"),
]
DESTS = [
    Dest(DestKey(A("192.0.2.11"), 80)),
    Dest(DestKey(A("192.0.2.12"), 8080), weight=0, forwarding="nat"),
    Dest(DestKey(A("192.0.2.13"), 0), weight=65535, forwarding="tun"),
    Dest(DestKey(A("10.255.0.1"), 443), weight=3, u_threshold=100, l_threshold=50),
    Dest(DestKey(A("10.0.0.1"), 1), weight=2**31 - 1, forwarding="nat", u_threshold=7),
]


def ops() -> list[planner.Op]:
    found: list[planner.Op] = []
    for service in SERVICES:
        found += [
            planner.AddService(service),
            planner.EditService(service, Service(service.key)),
            planner.DelService(service.key),
        ]
    for key in (TCP80, UDP53, MARK):
        for d in DESTS:
            found += [
                planner.AddDest(key, d),
                planner.EditDest(key, d, Dest(d.key)),
                planner.DelDest(key, d.key),
            ]
    return found


def genl_request(op: planner.Op) -> tuple[int, int, genl.Attrs]:
    """The command, flags and attribute list the pyroute2 path sends for ``op``."""
    if isinstance(op, planner.AddService | planner.EditService):
        new = isinstance(op, planner.AddService)
        svc = [("IPVS_CMD_ATTR_SERVICE", {"attrs": service_attrs(op.service)})]
        if new:
            return genl.CMD_NEW_SERVICE, genl.FLAGS_CREATE, svc
        return genl.CMD_SET_SERVICE, genl.FLAGS_REQUEST, svc
    if isinstance(op, planner.DelService):
        key = [("IPVS_CMD_ATTR_SERVICE", {"attrs": service_key_attrs(op.key)})]
        return genl.CMD_DEL_SERVICE, genl.FLAGS_REQUEST, key
    head = [("IPVS_CMD_ATTR_SERVICE", {"attrs": service_key_attrs(op.service)})]
    if isinstance(op, planner.DelDest):
        tail = [("IPVS_CMD_ATTR_DEST", {"attrs": dest_key_attrs(op.dest)})]
        return genl.CMD_DEL_DEST, genl.FLAGS_REQUEST, head + tail
    tail = [("IPVS_CMD_ATTR_DEST", {"attrs": dest_attrs(op.dest)})]
    if isinstance(op, planner.AddDest):
        return genl.CMD_NEW_DEST, genl.FLAGS_CREATE, head + tail
    return genl.CMD_SET_DEST, genl.FLAGS_REQUEST, head + tail


def pyroute2_bytes(cmd: int, flags: int, attrs: genl.Attrs, seq: int) -> bytes:
    msg = genl.IpvsMessage()
    msg["cmd"] = cmd
    msg["version"] = 1
    msg["attrs"] = attrs
    msg["header"]["type"] = FAMILY
    msg["header"]["flags"] = flags
    msg["header"]["sequence_number"] = seq
    msg["header"]["pid"] = 0
    msg.encode()
    return bytes(msg.data)


def decoded(data: bytes) -> Any:
    msg = genl.IpvsMessage(data)
    msg.decode()
    return msg


def reply(attrs: genl.Attrs) -> bytes:
    """What genl.parse_* get: a reply's attributes after the netlink and genl headers."""
    return pyroute2_bytes(genl.CMD_GET_SERVICE, 2, attrs, 1)[20:]


@pytest.mark.parametrize("op", ops(), ids=str)
def test_bytes_equal_pyroute2s_for_the_same_request(op: planner.Op) -> None:
    cmd, flags, attrs = genl_request(op)
    ours = batch.frame(batch.request_for(op), FAMILY, 4242, ack=True)
    assert ours == pyroute2_bytes(cmd, flags, attrs, 4242)


@pytest.mark.parametrize("service", SERVICES, ids=str)
def test_pyroute2_decodes_our_service_as_the_model(service: Service) -> None:
    msg = decoded(batch.frame(batch.add_service(service), FAMILY, 1, ack=True))
    assert msg["cmd"] == genl.CMD_NEW_SERVICE
    nested = msg.get_attr("IPVS_CMD_ATTR_SERVICE")
    assert nested.get_attr("IPVS_SVC_ATTR_SCHED_NAME") == service.scheduler
    assert nested.get_attr("IPVS_SVC_ATTR_NETMASK") == str(service.persistence_netmask)
    assert nested.get_attr("IPVS_SVC_ATTR_FLAGS")["flags"] == codec.flag_bits(service)


@pytest.mark.parametrize("service", SERVICES, ids=str)
def test_our_parser_reads_a_pyroute2_service_as_the_model(service: Service) -> None:
    attrs = [("IPVS_CMD_ATTR_SERVICE", {"attrs": service_attrs(service)})]
    assert codec.parse_service(reply(attrs)) == (service, "")


@pytest.mark.parametrize("dest", DESTS, ids=str)
def test_our_parser_reads_a_pyroute2_dest_as_the_model(dest: Dest) -> None:
    assert codec.parse_dest(reply([("IPVS_CMD_ATTR_DEST", {"attrs": dest_attrs(dest)})])) == (
        dest,
        "",
    )
    msg = decoded(batch.frame(batch.edit_dest(MARK, dest), FAMILY, 1, ack=True))
    assert msg.get_attr("IPVS_CMD_ATTR_DEST").get_attr("IPVS_DEST_ATTR_WEIGHT") == dest.weight


def kernel_service(**override: Any) -> genl.Attrs:
    """A service as the kernel dumps it: 16-byte address, counters, HASHED set."""
    attrs: dict[str, Any] = {
        "IPVS_SVC_ATTR_AF": socket.AF_INET,
        "IPVS_SVC_ATTR_PROTOCOL": 6,
        "IPVS_SVC_ATTR_ADDR": "192.0.2.100",
        "IPVS_SVC_ATTR_PORT": 443,
        "IPVS_SVC_ATTR_SCHED_NAME": "sh",
        "IPVS_SVC_ATTR_FLAGS": {"flags": 0x2 | 0x1 | 0x10, "mask": 0xFFFFFFFF},
        "IPVS_SVC_ATTR_TIMEOUT": 300,
        "IPVS_SVC_ATTR_NETMASK": "255.255.0.0",
        "IPVS_SVC_ATTR_STATS": {"attrs": [("IPVS_STATS_ATTR_CONNS", 5)]},
        "IPVS_SVC_ATTR_STATS64": {"attrs": [("IPVS_STATS_ATTR_CONNS", 5)]},
    }
    attrs.update(override)
    return [
        ("IPVS_CMD_ATTR_SERVICE", {"attrs": [(k, v) for k, v in attrs.items() if v is not None]})
    ]


def test_a_dumped_service_reads_configured_fields_only() -> None:
    block = reply(kernel_service())
    service, why = codec.parse_service(block)
    assert why == "" and service == Service(
        ServiceKey(protocol="tcp", address=A("192.0.2.100"), port=443),
        "sh",
        frozenset({"sh-port"}),
        300,
        A("255.255.0.0"),
    )
    raw = bytearray(block)  # the kernel sends union nf_inet_addr: 16 bytes
    long_addr = codec.nla(codec.SVC_ADDR, bytes([192, 0, 2, 100]) + bytes(12))
    start = bytes(raw).index(codec.nla(codec.SVC_ADDR, bytes([192, 0, 2, 100])))
    raw[start : start + 8] = long_addr
    struct.pack_into("=H", raw, 0, struct.unpack_from("=H", raw, 0)[0] + 12)
    assert codec.parse_service(bytes(raw)) == (service, "")


def test_services_and_dests_the_model_cannot_say_are_skipped_with_a_reason() -> None:
    cases = [
        (
            kernel_service(IPVS_SVC_ATTR_AF=socket.AF_INET6, IPVS_SVC_ATTR_ADDR="2001:db8::1"),
            "service-not-ipv4",
        ),
        (kernel_service(IPVS_SVC_ATTR_PROTOCOL=33), "service-protocol"),  # DCCP
        (kernel_service(IPVS_SVC_ATTR_SCHED_NAME=None), "service-malformed"),
    ]
    for attrs, why in cases:
        assert codec.parse_service(reply(attrs)) == (None, why)
    assert codec.parse_service(b"\x01\x02") == (None, "service-malformed")
    local = [*dest_attrs(DESTS[0])]
    local[3] = ("IPVS_DEST_ATTR_FWD_METHOD", 1)  # IP_VS_CONN_F_LOCALNODE
    assert codec.parse_dest(reply([("IPVS_CMD_ATTR_DEST", {"attrs": local})])) == (
        None,
        "dest-forwarding",
    )
    six = [
        ("IPVS_DEST_ATTR_ADDR_FAMILY", socket.AF_INET6),
        ("IPVS_DEST_ATTR_ADDR", "2001:db8::11"),
        *dest_attrs(DESTS[0])[2:],
    ]
    assert codec.parse_dest(reply([("IPVS_CMD_ATTR_DEST", {"attrs": six})])) == (
        None,
        "dest-not-ipv4",
    )
    assert codec.parse_dest(reply(kernel_service())) == (None, "dest-malformed")


def test_without_ack_only_the_ack_flag_changes() -> None:
    request = batch.add_dest(TCP80, DESTS[0])
    acked = batch.frame(request, FAMILY, 9, ack=True)
    quiet = batch.frame(request, FAMILY, 9, ack=False)
    flags = struct.unpack_from("=H", quiet, 6)[0]
    assert flags == batch.FLAGS_CREATE & ~batch.NLM_F_ACK
    assert quiet[:6] == acked[:6] and quiet[8:] == acked[8:]


def test_requests_name_their_entry_and_converged_codes() -> None:
    add = batch.request_for(planner.AddDest(TCP80, DESTS[1]))
    assert (add.action, add.target) == ("add dest", "192.0.2.12:8080 of TCP 192.0.2.100:80")
    assert add.converged == {errno.EEXIST}
    gone = batch.request_for(planner.DelService(MARK))
    assert (gone.action, gone.target) == ("delete service", f"fwmark {MARK.fwmark}")
    assert gone.converged == {errno.ENOENT, errno.ESRCH}
    edit = batch.request_for(planner.EditService(SERVICES[0], Service(TCP80, "wlc")))
    assert edit.converged == frozenset() and edit.scheduler == "rr"
    for junk in (object(), "AddService", planner.Plan()):
        with pytest.raises(TypeError):
            batch.request_for(junk)


# -- replies, crafted -------------------------------------------------------------------------


def error_reply(seq: int, code: int, echo_len: int = 0) -> bytes:
    """An NLMSG_ERROR as the kernel sends it: -errno, the request's header, maybe its body."""
    echo = struct.pack("=IHHII", 20 + echo_len, FAMILY, 5, seq, 0) + b"\xaa" * echo_len
    body = struct.pack("=i", -code) + echo
    flags = 0x100 if not echo_len else 0  # NLM_F_CAPPED: the request was not copied
    return struct.pack("=IHHII", 16 + len(body), batch.NLMSG_ERROR, flags, seq, 77) + body


def test_parse_acks_reads_errnos_and_acks_by_sequence_number() -> None:
    data = error_reply(5, 0) + error_reply(6, errno.ESRCH, echo_len=27)
    assert batch.parse_acks(data) == [(5, 0), (6, errno.ESRCH)]
    theirs = nlmsgerr()
    theirs["header"]["type"] = batch.NLMSG_ERROR
    theirs["header"]["sequence_number"] = 8
    theirs["error"] = -errno.EEXIST
    theirs.encode()
    assert batch.parse_acks(bytes(theirs.data)) == [(8, errno.EEXIST)]


def test_parse_acks_skips_other_messages_and_a_malformed_tail() -> None:
    other = struct.pack("=IHHII", 20, FAMILY, 0, 4, 0) + b"\x01\x01\x00\x00"
    truncated = error_reply(9, errno.EINVAL)[:-3]
    assert batch.parse_acks(other + error_reply(5, 0) + truncated) == [(5, 0)]
    assert batch.parse_acks(b"") == [] and batch.parse_acks(b"\x00" * 15) == []
    zero_length = struct.pack("=IHHII", 0, batch.NLMSG_ERROR, 0, 1, 0) + b"\0" * 4
    assert batch.parse_acks(zero_length + error_reply(5, 0)) == []


def requests(n: int) -> list[batch.Request]:
    return [batch.add_dest(TCP80, Dest(DestKey(A("192.0.2.11"), 1000 + i))) for i in range(n)]


def headers(data: bytes) -> list[tuple[int, int, int, int, int]]:
    found, offset = [], 0
    while offset < len(data):
        found.append(struct.unpack_from("=IHHII", data, offset))
        offset += found[-1][0]
    return found


def test_a_window_asks_only_its_last_request_for_an_ack() -> None:
    window = batch.Window(requests(4), FAMILY, 100)
    sent = headers(window.data)
    assert [h[3] for h in sent] == [100, 101, 102, 103]
    assert [bool(h[2] & batch.NLM_F_ACK) for h in sent] == [False, False, False, True]
    assert {h[1] for h in sent} == {FAMILY}
    every = batch.Window(requests(4), FAMILY, 100, ack_each=True)
    assert all(h[2] & batch.NLM_F_ACK for h in headers(every.data))


def test_a_window_maps_each_error_to_its_request_and_ends_with_the_last_ack() -> None:
    window = batch.Window(requests(4), FAMILY, 100)
    window.feed(error_reply(101, errno.ESRCH) + error_reply(42, errno.EINVAL))  # 42: stale
    assert not window.done
    with pytest.raises(OSError):
        window.codes()
    window.feed(error_reply(102, errno.EEXIST, echo_len=40))
    window.feed(error_reply(103, 0))
    assert window.done
    assert window.codes() == [0, errno.ESRCH, errno.EEXIST, 0]


def test_a_window_whose_last_request_fails_is_settled() -> None:
    window = batch.Window(requests(2), FAMILY, 7)
    window.feed(error_reply(8, errno.ENOENT))
    assert window.codes() == [0, errno.ENOENT]


def test_acking_each_a_missing_ack_is_an_error_not_a_success() -> None:
    window = batch.Window(requests(3), FAMILY, 7, ack_each=True)
    window.feed(error_reply(7, 0))
    window.feed(error_reply(9, 0))
    assert window.done
    with pytest.raises(OSError) as info:
        window.codes()
    assert info.value.errno == errno.EPROTO
    window.feed(error_reply(8, errno.EEXIST))
    assert window.codes() == [0, errno.EEXIST, 0]


def test_the_family_id_comes_from_the_controllers_reply() -> None:
    sent = batch.family_request(3)
    length, kind, flags, seq, _pid, cmd = struct.unpack_from("=IHHIIB", sent)
    assert (length, kind, flags, seq, cmd) == (len(sent), 0x10, 1, 3, batch.CTRL_CMD_GETFAMILY)
    assert b"IPVS\0" in sent
    reply = ctrlmsg()
    reply["cmd"] = 1
    reply["version"] = 2
    reply["attrs"] = [("CTRL_ATTR_FAMILY_NAME", "IPVS"), ("CTRL_ATTR_FAMILY_ID", 0x1F)]
    reply["header"]["type"] = 0x10
    reply["header"]["sequence_number"] = 3
    reply.encode()
    assert batch.parse_family(bytes(reply.data)) == 0x1F
    with pytest.raises(OSError) as info:
        batch.parse_family(error_reply(3, errno.ENOENT))
    assert info.value.errno == errno.ENOENT


def dump_part(seq: int, attrs: genl.Attrs, flags: int = 2) -> bytes:
    """One NLM_F_MULTI reply of a dump."""
    return pyroute2_bytes(genl.CMD_NEW_SERVICE, flags, attrs, seq)


def done(seq: int, code: int = 0) -> bytes:
    return struct.pack("=IHHIIi", 20, batch.NLMSG_DONE, 2, seq, 0, -code)


def test_a_dump_request_asks_for_a_dump_of_the_selected_service() -> None:
    sent = batch.dump_request(genl.CMD_GET_DEST, FAMILY, 12, codec.encode_selector(TCP80))
    length, kind, flags, seq, _pid, cmd = struct.unpack_from("=IHHIIB", sent)
    assert (length, kind, flags, seq, cmd) == (len(sent), FAMILY, 0x301, 12, genl.CMD_GET_DEST)
    nested = decoded(sent).get_attr("IPVS_CMD_ATTR_SERVICE")
    assert nested.get_attr("IPVS_SVC_ATTR_PORT") == 80


def test_dump_replies_collect_parts_until_done() -> None:
    one = [("IPVS_CMD_ATTR_SERVICE", {"attrs": service_attrs(SERVICES[0])})]
    two = [("IPVS_CMD_ATTR_SERVICE", {"attrs": service_attrs(SERVICES[2])})]
    blocks, end = batch.dump_replies(dump_part(5, one) + dump_part(4, two), 5)  # 4: stale
    assert end is None and len(blocks) == 1
    assert codec.parse_service(blocks[0]) == (SERVICES[0], "")
    blocks, end = batch.dump_replies(dump_part(5, two) + done(5) + dump_part(5, one), 5)
    assert end == 0 and [codec.parse_service(b)[0] for b in blocks] == [SERVICES[2]]


def test_a_dump_ends_with_its_error() -> None:
    assert batch.dump_replies(error_reply(5, errno.EBUSY), 5) == ([], errno.EBUSY)
    assert batch.dump_replies(done(5, errno.EINTR), 5) == ([], errno.EINTR)
    bare = struct.pack("=IHHII", 16, batch.NLMSG_DONE, 2, 5, 0)  # a DONE without its errno
    assert batch.dump_replies(bare, 5) == ([], 0)
    assert batch.dump_replies(done(5)[:-1], 5) == ([], errno.EPROTO)  # cut short


# -- the adapter's outcomes, over a socket that plays the kernel ------------------------------


class ScriptedSocket(batch.BatchSocket):
    """Answers each request with the errno ``script`` gives; records the windows it got."""

    def __init__(self, script: dict[int, int], window: int, lose: int = -1) -> None:
        super().__init__(window=window)
        self.script = script  # port of the dest -> errno
        self.lose = lose  # the window whose replies are lost (ENOBUFS)
        self.windows: list[int] = []
        self.opened = self.closed = 0

    async def open(self) -> None:
        self.opened += 1

    def close(self) -> None:
        self.closed += 1

    async def send_window(self, requests: Sequence[batch.Request]) -> list[int]:
        self.windows.append(len(requests))
        await asyncio.sleep(0)
        if len(self.windows) - 1 == self.lose:
            raise OSError(errno.ENOBUFS, "lost")
        return [self.script.get(r.dest.port if r.dest else 0, 0) for r in requests]


def dest_ops(n: int) -> list[planner.Op]:
    return [planner.AddDest(TCP80, Dest(DestKey(A("192.0.2.11"), 1000 + i))) for i in range(n)]


def test_apply_many_splits_into_windows_and_maps_each_outcome() -> None:
    sock = ScriptedSocket({1001: errno.EEXIST, 1004: errno.ESRCH}, window=2)
    others = []

    async def go() -> list[bool | IpvsError | None]:
        async def meanwhile() -> None:
            while len(sock.windows) < 3:
                others.append(len(sock.windows))
                await asyncio.sleep(0)

        task = asyncio.create_task(meanwhile())
        async with IpvsKernel(lambda: sock) as k:
            outcomes = await k.apply_many(dest_ops(5))
        await task
        return outcomes

    outcomes = asyncio.run(go())
    assert sock.windows == [2, 2, 1]
    assert outcomes[:4] == [True, False, True, True]
    error = outcomes[4]
    assert isinstance(error, IpvsError) and error.errno == errno.ESRCH
    assert "add dest 192.0.2.11:1004 of TCP 192.0.2.100:80" in str(error)
    assert "re-plan" in str(error)
    assert {1, 2} <= set(others)  # the loop ran between windows


def test_a_lost_window_is_one_error_then_nothing_more_is_sent() -> None:
    sock = ScriptedSocket({}, window=2, lose=1)

    async def go() -> list[bool | IpvsError | None]:
        async with IpvsKernel(lambda: sock) as k:
            return await k.apply_many(dest_ops(7))

    outcomes = asyncio.run(go())
    assert sock.windows == [2, 2]
    assert outcomes[:2] == [True, True] and outcomes[3:] == [None] * 4
    lost = outcomes[2]
    assert isinstance(lost, IpvsError) and lost.errno == errno.ENOBUFS
    assert "192.0.2.11:1002" in str(lost) and "unknown" in str(lost)
    assert sock.closed >= 1


def test_apply_raises_what_apply_many_returns() -> None:
    sock = ScriptedSocket({1000: errno.ERANGE, 1001: errno.EEXIST}, window=8)

    async def go() -> tuple[bool, IpvsError]:
        async with IpvsKernel(lambda: sock) as k:
            converged = await k.apply(dest_ops(2)[1])
            with pytest.raises(IpvsError) as info:
                await k.apply(dest_ops(1)[0])
            with pytest.raises(TypeError):
                await k.apply_many([*dest_ops(1), object()])
            return converged, info.value

    converged, error = asyncio.run(go())
    assert converged is False
    assert error.errno == errno.ERANGE and "threshold" in str(error)
    assert sock.windows == [1, 1]  # the TypeError came before anything was sent
