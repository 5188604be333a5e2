"""Batched IPVS changes (lvsagent.ipvs.batch via IpvsKernel.apply_many) against the real IPVS.

Runs INSIDE the kernel lab; skips on the host.  ``ipvsadm -Sn`` and pyroute2's own
one-request-at-a-time path are the independent observers:

    python -m tests.kernel.uml --timeout 600 -- "$PWD/.venv/bin/python" -m pytest \
        -q tests/kernel/test_ipvs_batch.py
"""

from __future__ import annotations

import errno
import ipaddress
from collections.abc import Iterator

import pytest

from lvsagent.ipvs import batch, genl
from lvsagent.ipvs import plan as planner
from lvsagent.ipvs.kernel import IpvsError, IpvsKernel
from lvsagent.ipvs.model import DestKey, Service, ServiceKey, Table
from tests.kernel.ipvslab import arun, dest, sample_table, saved, tcp, thresholds
from tests.kernel.labnet import Netns, namespaces
from tests.kernel.uml import lab_only
from tests.unit.ipvsattrs import dest_attrs, service_attrs, service_key_attrs

pytestmark = [
    lab_only(__file__),
    pytest.mark.timeout(300),
]

A = ipaddress.IPv4Address
VIP = "192.0.2.100"
Outcomes = list[bool | IpvsError | None]


@pytest.fixture
def pair() -> Iterator[tuple[Netns, Netns]]:
    with namespaces("batch", "perop") as (a, b):
        yield a, b


def generated(services: int, dests: int) -> Table:
    """``services`` x ``dests``, NAT and DR mixed, so that it spans many windows."""
    return Table(
        tuple(
            Service(
                tcp(1000 + i),
                "wrr" if i % 2 else "rr",
                dests=tuple(
                    dest(f"198.51.100.{j + 1}", forwarding="nat" if j % 3 else "dr", weight=j)
                    for j in range(dests)
                ),
            )
            for i in range(services)
        )
    )


async def program_batched(table: Table, sock: batch.BatchSocket | None = None) -> Outcomes:
    ops = planner.plan(table, Table()).ops
    async with IpvsKernel(batch.BatchSocket if sock is None else (lambda: sock)) as k:
        return await k.apply_many(ops)


async def program_per_op(table: Table) -> Table:
    """pyroute2's path, one request and one ack at a time (the unit tests' reference lists)."""
    sock = genl.IpvsSocket()
    try:
        for service in table.services:
            attrs = [("IPVS_CMD_ATTR_SERVICE", {"attrs": service_attrs(service)})]
            await sock.call(genl.CMD_NEW_SERVICE, attrs, genl.FLAGS_CREATE)
            key = [("IPVS_CMD_ATTR_SERVICE", {"attrs": service_key_attrs(service.key)})]
            for d in service.dests:
                real = [("IPVS_CMD_ATTR_DEST", {"attrs": dest_attrs(d)})]
                await sock.call(genl.CMD_NEW_DEST, key + real, genl.FLAGS_CREATE)
    finally:
        sock.close()
    async with IpvsKernel() as k:
        return await k.dump()


async def dump() -> Table:
    async with IpvsKernel() as k:
        return await k.dump()


@pytest.mark.parametrize("ack_each", [False, True])
def test_a_batched_table_equals_its_dump_and_the_per_op_path(
    pair: tuple[Netns, Netns], ack_each: bool
) -> None:
    a, b = pair
    services = sample_table().services + generated(60, 8).services
    want = Table(tuple(sorted(services, key=lambda s: s.key)))  # as dump() sorts
    outcomes = arun(program_batched(want, batch.BatchSocket(ack_each=ack_each)), a)
    entries = sum(1 + len(s.dests) for s in want.services)
    assert outcomes == [True] * entries
    assert arun(dump(), a) == want
    assert arun(program_per_op(want), b) == want
    assert sorted(saved(a)) == sorted(saved(b))
    assert thresholds(a, 83) == thresholds(b, 83) == [("192.0.2.11:80", 100, 50)]


def test_each_refusal_lands_on_its_own_op_and_the_rest_still_apply(lb: Netns) -> None:
    web = Service(tcp(80), "rr")
    real = dest("192.0.2.11")
    ops: list[object] = [
        planner.AddService(web),  # True
        planner.AddDest(tcp(99), real),  # ESRCH: no such service
        planner.AddDest(web.key, real),  # True
        planner.AddService(Service(tcp(81), "nosuch")),  # ENOENT: no such scheduler
        planner.AddDest(web.key, dest("192.0.2.12", u_threshold=5, l_threshold=10)),  # ERANGE
        planner.AddService(web),  # EEXIST: converged
        planner.AddDest(web.key, real),  # EEXIST: converged
        planner.DelDest(web.key, dest("192.0.2.13").key),  # ENOENT: converged
        planner.DelService(tcp(98)),  # ESRCH: converged
        planner.DelDest(tcp(98), real.key),  # ESRCH: converged
        planner.EditDest(web.key, dest("192.0.2.11", weight=7), real),  # True
        planner.EditDest(web.key, dest("192.0.2.14"), dest("192.0.2.14")),  # ENOENT: refused
        planner.AddService(Service(ServiceKey(fwmark=5), "wlc")),  # True
    ]

    async def go() -> Outcomes:
        async with IpvsKernel() as k:
            return await k.apply_many(ops)

    got = arun(go(), lb)
    codes = [o.errno if isinstance(o, IpvsError) else o for o in got]
    assert codes == [
        *[True, errno.ESRCH, True, errno.ENOENT, errno.ERANGE],
        *[False, False, False, False, False, True, errno.ENOENT, True],
    ]
    assert f"192.0.2.11:80 of TCP {VIP}:99" in str(got[1])
    assert "ip_vs_nosuch" in str(got[3]) and "threshold" in str(got[4])
    assert sorted(saved(lb)) == sorted(
        [f"-A -t {VIP}:80 -s rr", f"-a -t {VIP}:80 -r 192.0.2.11:80 -g -w 7", "-A -f 5 -s wlc"]
    )


@pytest.fixture
def lb() -> Iterator[Netns]:
    with namespaces("lb") as (ns,):
        yield ns


@pytest.mark.parametrize("ack_each", [False, True])
def test_more_replies_than_the_buffer_holds_still_settle_every_op(
    lb: Netns, ack_each: bool
) -> None:
    """A small buffer: the window shrinks to fit its replies, every one is read."""
    # Every dest add fails (no such service): the kernel answers each one.
    doomed = [planner.AddDest(tcp(99), dest("192.0.2.11", 1 + i)) for i in range(600)]
    table = generated(100, 10)  # 1100 ops that all succeed
    small = batch.BatchSocket(rcvbuf=8192, ack_each=ack_each)

    async def go() -> tuple[Outcomes, Outcomes, int]:
        async with IpvsKernel(lambda: small) as k:
            failed = await k.apply_many(doomed)
            window = small.window
            return failed, await k.apply_many(planner.plan(table, Table()).ops), window

    failed, done, window = arun(go(), lb)
    assert 1 <= window < 100
    assert [o.errno if isinstance(o, IpvsError) else o for o in failed] == [errno.ESRCH] * 600
    assert done == [True] * 1100
    assert arun(dump(), lb) == table


def test_a_window_too_big_for_the_buffer_loses_replies_and_says_so(lb: Netns) -> None:
    """The bound above is needed: without it the kernel drops replies (ENOBUFS)."""
    doomed = [planner.AddDest(tcp(99), dest("192.0.2.11", 1 + i)) for i in range(600)]
    oversized = batch.BatchSocket(rcvbuf=8192, window=600)

    async def go() -> Outcomes:
        async with IpvsKernel(lambda: oversized) as k:
            return await k.apply_many(doomed)

    got = arun(go(), lb)
    assert isinstance(got[0], IpvsError) and got[0].errno == errno.ENOBUFS
    assert "unknown" in str(got[0]) and got[1:] == [None] * 599


def test_apply_many_converges_a_drifted_table(lb: Netns) -> None:
    want = sample_table()
    lb.run("ipvsadm", "-A", "-t", f"{VIP}:80", "-s", "wlc")  # to be edited
    lb.run("ipvsadm", "-a", "-t", f"{VIP}:80", "-r", "192.0.2.99:80", "-m")  # to be removed
    lb.run("ipvsadm", "-A", "-t", f"{VIP}:7000", "-s", "rr")  # foreign: removed

    async def go() -> tuple[Outcomes, Table]:
        async with IpvsKernel() as k:
            ops = planner.plan(want, await k.dump(), "remove").ops
            return await k.apply_many(ops), await k.dump()

    outcomes, got = arun(go(), lb)
    assert outcomes == [True] * len(outcomes)
    assert got == want
    assert planner.plan(want, got, "remove").ops == ()
    assert DestKey(A("192.0.2.99"), 80) not in got.service_map()[tcp(80)].dest_map()
    assert not [line for line in saved(lb) if ":7000 " in line]


def test_dests_without_their_service_are_dropped_with_it(lb: Netns) -> None:
    """A delete of a service and then adds to it in one window: the adds say ESRCH."""
    svc = Service(tcp(80), "rr")

    async def go() -> Outcomes:
        async with IpvsKernel() as k:
            return await k.apply_many(
                [
                    planner.AddService(svc),
                    planner.DelService(svc.key),
                    planner.AddDest(svc.key, dest("192.0.2.11")),
                ]
            )

    got = arun(go(), lb)
    assert got[:2] == [True, True]
    assert isinstance(got[2], IpvsError) and got[2].errno == errno.ESRCH
    assert saved(lb) == []


def test_a_dest_dump_longer_than_one_datagram_is_read_whole(lb: Netns) -> None:
    """1500 dests of one service: the kernel's dump spans several 32 KiB datagrams."""
    dests = [dest(f"10.{i // 250}.0.{i % 250 + 1}", 80, weight=i) for i in range(1500)]
    many = Service(tcp(80), "rr", dests=tuple(sorted(dests, key=lambda d: d.key)))

    got = arun(program_batched(Table((many,))), lb)
    assert got == [True] * 1501
    table = arun(dump(), lb)
    assert table == Table((many,))
    assert len(saved(lb)) == 1501
