"""The IPVS adapter (lvsagent.ipvs.kernel) against the real IPVS, INSIDE the kernel lab.

Why: pyroute2 0.9.7's IPVS helpers hide traps that only a real kernel shows (listed in
ipvs/kernel.py).
Each trap test first shows it with raw pyroute2 calls, then shows that the adapter avoids it;
``ipvsadm -Sn`` is the independent observer.  Then round trips (model -> kernel -> dump),
converged errors, the sync daemons, timeouts, and a backup receiving connection entries from a
master.  On the host (no IPVS) everything skips; run with

    python -m tests.kernel.uml --timeout 600 -- "$PWD/.venv/bin/python" -m pytest \
        -q tests/kernel/test_ipvs_kernel.py

Each test makes its own namespaces (documentation addresses only) and deletes them; the
adapter reaches a namespace by running in a thread that entered it (``arun``).
The dump of a big table is timed by `make bench` (tests/bench/ipvs_guest.py), not here.
"""

from __future__ import annotations

import asyncio
import errno
import re
import time
from collections.abc import AsyncIterator, Coroutine, Iterator
from contextlib import ExitStack, asynccontextmanager
from pathlib import Path
from typing import Any, Literal

import pytest
from pyroute2 import AsyncIPVS, IPVSDest, IPVSService
from pyroute2.netlink.exceptions import NetlinkError

from lvsagent.ipvs import plan as planner
from lvsagent.ipvs.kernel import IpvsError, IpvsKernel, SyncDaemon, Timeouts
from lvsagent.ipvs.model import Service, ServiceKey, Table
from tests.kernel.ipvslab import TCP, VIP, A, arun, dest, sample_table, saved, tcp, thresholds
from tests.kernel.labnet import Netns, bridge, http_get, http_server, namespaces, site, veth
from tests.kernel.uml import lab_only

pytestmark = [
    lab_only(__file__),
    # A wedged netlink exchange must fail one test, not eat the lab's whole deadline.
    pytest.mark.timeout(120),
]

@pytest.fixture
def lb() -> Iterator[Netns]:
    with namespaces("lb") as (ns,):
        yield ns


@asynccontextmanager
async def raw(ns: Netns) -> AsyncIterator[Any]:
    """pyroute2's own AsyncIPVS, for a coroutine that arun() runs in ``ns``.

    Its requests fail ("protocol id is not obtained yet") until setup_endpoint() ran.
    """
    del ns  # the calling thread is already in it (see arun)
    ipvs = AsyncIPVS()
    try:
        await ipvs.setup_endpoint()
        yield ipvs
    finally:
        ipvs.close()


async def raising(coro: Coroutine[Any, Any, object]) -> int:
    """The errno of the NetlinkError ``coro`` raises."""
    with pytest.raises(NetlinkError) as info:
        await coro
    return int(info.value.code)


# -- pyroute2's traps, each shown raw and then avoided by the adapter ----------------------------


def test_sched_keyword_is_ignored_and_the_adapter_sends_sched_name(lb: Netns) -> None:
    async def go() -> Table:
        async with raw(lb) as ipvs:
            await ipvs.service(
                "add", service=IPVSService(addr=VIP, port=80, protocol=TCP, sched="rr")
            )
        async with IpvsKernel() as k:
            await k.add_service(Service(tcp(81), scheduler="rr"))
            return await k.dump()

    table = arun(go(), lb)
    assert f"-A -t {VIP}:80 -s wlc" in saved(lb)  # "sched" became a junk attribute
    assert f"-A -t {VIP}:81 -s rr" in saved(lb)
    assert table.service_map()[tcp(81)].scheduler == "rr"


def test_update_sends_delete_and_the_adapter_edits_with_set(lb: Netns) -> None:
    real = IPVSDest(addr="192.0.2.11", port=80, fwd_method=0, weight=2)

    async def go() -> None:
        async with raw(lb) as ipvs:
            for port in (80, 81):
                svc = IPVSService(addr=VIP, port=port, protocol=TCP, sched_name="rr")
                await ipvs.service("add", service=svc)
                await ipvs.dest("add", service=svc, dest=real)
            svc80 = IPVSService(addr=VIP, port=80, protocol=TCP, sched_name="wrr")
            await ipvs.service("update", service=svc80)  # sends IPVS_CMD_DEL_SERVICE
            svc81 = IPVSService(addr=VIP, port=81, protocol=TCP)
            await ipvs.dest("update", service=svc81, dest=IPVSDest(addr="192.0.2.11", port=80))
        assert not [line for line in saved(lb) if ":80 " in line.split("-r")[0]]
        assert not [line for line in saved(lb) if line.startswith("-a")]
        async with IpvsKernel() as k:
            assert await k.add_service(Service(tcp(82), scheduler="rr"))
            assert await k.add_dest(tcp(82), dest("192.0.2.11", forwarding="nat", weight=2))
            assert await k.edit_service(Service(tcp(82), scheduler="wrr"))
            assert await k.edit_dest(tcp(82), dest("192.0.2.11", forwarding="nat", weight=4))

    arun(go(), lb)
    assert f"-A -t {VIP}:82 -s wrr" in saved(lb)
    assert f"-a -t {VIP}:82 -r 192.0.2.11:80 -m -w 4" in saved(lb)


def test_set_replaces_the_whole_entry_and_the_adapter_sends_every_field(lb: Netns) -> None:
    async def go() -> Table:
        async with raw(lb) as ipvs:
            svc = IPVSService(addr=VIP, port=80, protocol=TCP, sched_name="rr")
            await ipvs.service("add", service=svc)
            await ipvs.dest(
                "add",
                service=svc,
                dest=IPVSDest(
                    addr="192.0.2.11", port=80, fwd_method=0, weight=5, u_thresh=10, l_thresh=2
                ),
            )
            # Meant as "change the weight": NAT becomes DR, thresholds go to 0.
            await ipvs.dest("set", service=svc, dest=IPVSDest(addr="192.0.2.11", port=80, weight=7))
            # Meant as "change nothing": the scheduler falls back to wlc.
            await ipvs.service("set", service=IPVSService(addr=VIP, port=80, protocol=TCP))
        async with IpvsKernel() as k:
            await k.add_service(Service(tcp(81), scheduler="rr"))
            nat = dest("192.0.2.11", forwarding="nat", weight=5, u_threshold=10, l_threshold=2)
            await k.add_dest(tcp(81), nat)
            await k.edit_dest(
                tcp(81),
                dest("192.0.2.11", forwarding="nat", weight=7, u_threshold=10, l_threshold=2),
            )
            await k.edit_service(Service(tcp(81), scheduler="rr"))
            return await k.dump()

    table = arun(go(), lb)
    lines = saved(lb)
    assert f"-A -t {VIP}:80 -s wlc" in lines
    assert f"-a -t {VIP}:80 -r 192.0.2.11:80 -g -w 7" in lines
    assert f"-A -t {VIP}:81 -s rr" in lines
    assert f"-a -t {VIP}:81 -r 192.0.2.11:80 -m -w 7" in lines
    assert thresholds(lb, 81) == [("192.0.2.11:80", 10, 2)]  # -S does not save them
    assert table.service_map()[tcp(81)].dests == (
        dest("192.0.2.11", forwarding="nat", weight=7, u_threshold=10, l_threshold=2),
    )


def test_pyroute2_defaults_are_wlc_dr_weight_1_and_the_adapter_sends_the_models(lb: Netns) -> None:
    async def go() -> None:
        async with raw(lb) as ipvs:
            svc = IPVSService(addr=VIP, port=80, protocol=TCP)
            await ipvs.service("add", service=svc)
            await ipvs.dest("add", service=svc, dest=IPVSDest(addr="192.0.2.11", port=80))
        async with IpvsKernel() as k:
            await k.add_service(Service(tcp(81), scheduler="lc"))
            await k.add_dest(tcp(81), dest("192.0.2.11", forwarding="tun", weight=0))

    arun(go(), lb)
    lines = saved(lb)
    assert f"-A -t {VIP}:80 -s wlc" in lines
    assert f"-a -t {VIP}:80 -r 192.0.2.11:80 -g -w 1" in lines
    assert f"-A -t {VIP}:81 -s lc" in lines
    assert f"-a -t {VIP}:81 -r 192.0.2.11:80 -i -w 0 --tun-type ipip" in lines


def test_fwmark_service_needs_a_netmask_which_the_adapter_always_sends(lb: Netns) -> None:
    async def go() -> bool:
        async with raw(lb) as ipvs:
            svc = IPVSService(fwmark=1, af=2, sched_name="rr")
            assert await raising(ipvs.service("add", service=svc)) == errno.EINVAL
        async with IpvsKernel() as k:
            return await k.add_service(Service(ServiceKey(fwmark=1), scheduler="rr"))

    assert arun(go(), lb)
    assert "-A -f 1 -s rr" in saved(lb)


def test_tun_port_goes_out_in_host_order_and_the_adapter_sends_no_tunnel_options(lb: Netns) -> None:
    async def go() -> None:
        async with raw(lb) as ipvs:
            svc = IPVSService(addr=VIP, port=80, protocol=TCP, sched_name="rr")
            await ipvs.service("add", service=svc)
            gue = IPVSDest(addr="192.0.2.11", port=80, fwd_method=2, tun_type=1, tun_port=0x1234)
            await ipvs.dest("add", service=svc, dest=gue)
        async with IpvsKernel() as k:
            await k.add_service(Service(tcp(81), scheduler="rr"))
            await k.add_dest(tcp(81), dest("192.0.2.11", forwarding="tun"))

    arun(go(), lb)
    lines = saved(lb)
    # The kernel reads the port as big endian: 0x1234 arrives as 0x3412 = 13330.
    assert f"-a -t {VIP}:80 -r 192.0.2.11:80 -i -w 1 --tun-type gue --tun-port 13330" in " ".join(
        lines
    )
    assert f"-a -t {VIP}:81 -r 192.0.2.11:80 -i -w 1 --tun-type ipip" in lines


def test_error_codes_of_raw_pyroute2(lb: Netns) -> None:
    async def go() -> None:
        async with raw(lb) as ipvs:
            svc = IPVSService(addr=VIP, port=80, protocol=TCP, sched_name="rr")
            missing = IPVSService(addr=VIP, port=81, protocol=TCP, sched_name="rr")
            real = IPVSDest(addr="192.0.2.11", port=80)
            await ipvs.service("add", service=svc)
            assert await raising(ipvs.service("add", service=svc)) == errno.EEXIST
            assert await raising(ipvs.service("del", service=missing)) == errno.ESRCH
            assert await raising(ipvs.dest("add", service=missing, dest=real)) == errno.ESRCH
            assert await raising(ipvs.dest("del", service=svc, dest=real)) == errno.ENOENT
            await ipvs.dest("add", service=svc, dest=real)
            assert await raising(ipvs.dest("add", service=svc, dest=real)) == errno.EEXIST
            assert await raising(ipvs.dest("get", service=svc, dest=real)) == errno.EOPNOTSUPP
            unknown = IPVSService(addr=VIP, port=82, protocol=TCP, sched_name="nosuch")
            assert await raising(ipvs.service("add", service=unknown)) == errno.ENOENT
            inverted = IPVSDest(addr="192.0.2.12", port=80, u_thresh=5, l_thresh=10)
            assert await raising(ipvs.dest("add", service=svc, dest=inverted)) == errno.ERANGE

    arun(go(), lb)


def test_adapter_converged_errors_return_false(lb: Netns) -> None:
    svc = Service(tcp(80), scheduler="rr")
    real = dest("192.0.2.11")

    async def go() -> list[bool]:
        async with IpvsKernel() as k:
            return [
                await k.add_service(svc),
                await k.add_service(svc),  # EEXIST
                await k.add_dest(svc.key, real),
                await k.add_dest(svc.key, real),  # EEXIST
                await k.del_dest(svc.key, real.key),
                await k.del_dest(svc.key, real.key),  # ENOENT
                await k.del_service(svc.key),
                await k.del_service(svc.key),  # ESRCH
                await k.del_dest(svc.key, real.key),  # ESRCH: gone with its service
            ]

    assert arun(go(), lb) == [True, False, True, False, True, False, True, False, False]
    assert saved(lb) == []


def test_adapter_raises_named_errors_with_advice(lb: Netns) -> None:
    async def failure(coro: Coroutine[Any, Any, object]) -> IpvsError:
        with pytest.raises(IpvsError) as info:
            await coro
        assert isinstance(info.value, OSError)  # the reconciler retries on OSError
        return info.value

    async def go() -> list[IpvsError]:
        async with IpvsKernel() as k:
            await k.add_service(Service(tcp(80), scheduler="rr"))
            return [
                await failure(k.add_service(Service(tcp(81), scheduler="nosuch"))),
                await failure(
                    k.add_dest(tcp(80), dest("192.0.2.12", u_threshold=5, l_threshold=10))
                ),
                await failure(k.add_dest(tcp(99), dest("192.0.2.11"))),
                await failure(k.edit_service(Service(tcp(99), scheduler="rr"))),
                await failure(k.edit_dest(tcp(80), dest("192.0.2.13"))),
            ]

    sched, thresh, no_svc, edit_svc, edit_dest = arun(go(), lb)
    assert sched.errno == errno.ENOENT and "ip_vs_nosuch" in str(sched)
    assert f"TCP {VIP}:81" in str(sched) and "ENOENT" in str(sched)
    assert thresh.errno == errno.ERANGE and "threshold" in str(thresh)
    assert no_svc.errno == errno.ESRCH and f"192.0.2.11:80 of TCP {VIP}:99" in str(no_svc)
    assert edit_svc.errno == errno.ESRCH and "re-plan" in str(edit_svc)
    assert edit_dest.errno == errno.ENOENT and "re-plan" in str(edit_dest)


def test_dest_add_without_loopback_up_names_the_fix() -> None:
    ns = Netns("nolo", lo_up=False)
    try:

        async def go() -> None:
            async with IpvsKernel() as k:
                await k.add_service(Service(tcp(80), scheduler="rr"))
                with pytest.raises(IpvsError) as info:
                    await k.add_dest(tcp(80), dest("192.0.2.11"))
                assert info.value.errno == errno.EINVAL and "lo up" in str(info.value)

        arun(go(), ns)
    finally:
        ns.delete()


def test_two_dumps_in_flight_are_ebusy_and_the_adapter_serialises(lb: Netns) -> None:
    services = 300  # more than one netlink dump chunk, so the first dump is still running
    lb.run(
        "ipvsadm",
        "-R",
        stdin="".join(f"-A -t {VIP}:{1000 + i} -s rr\n" for i in range(services)),
    )

    async def go() -> tuple[tuple[object, object], tuple[Table, Table]]:
        async with raw(lb) as ipvs:
            await ipvs.service("get", service=IPVSService(addr=VIP, port=1000, protocol=TCP))
            one = IPVSService(addr=VIP, port=1000, protocol=TCP)
            outcome = await asyncio.gather(
                ipvs.service("dump"), ipvs.dest("dump", service=one), return_exceptions=True
            )
        async with IpvsKernel() as k:
            tables = await asyncio.gather(k.dump(), k.dump())
        return outcome, tables

    (services_dumped, second), tables = arun(go(), lb)
    assert isinstance(services_dumped, list) and len(services_dumped) == services
    assert isinstance(second, NetlinkError) and second.code == errno.EBUSY
    assert tables[0] == tables[1] and len(tables[0].services) == services


# -- round trips through the adapter -------------------------------------------------------------


async def load(k: IpvsKernel, table: Table) -> None:
    for service in table.services:
        assert await k.add_service(service.attributes())
        for d in service.dests:
            assert await k.add_dest(service.key, d)


def test_round_trip_add_then_dump(lb: Netns) -> None:
    want = sample_table()

    async def go() -> Table:
        async with IpvsKernel() as k:
            await load(k, want)
            return await k.dump()

    got = arun(go(), lb)
    assert got == want
    lines = saved(lb)
    assert f"-A -t {VIP}:84 -s sh -b sh-port" in lines
    assert f"-A -t {VIP}:443 -s rr -p 600 -M 255.255.255.0" in lines
    assert thresholds(lb, 83) == [("192.0.2.11:80", 100, 50)]


def test_round_trip_edits(lb: Netns) -> None:
    before = sample_table()
    persistent = Service(tcp(80), "sh", frozenset({"sh-fallback"}), 120, A("255.255.0.0"))
    plain = Service(tcp(443), "wrr")
    moved = dest("192.0.2.11", 8080, forwarding="dr", weight=9, u_threshold=7, l_threshold=1)

    async def go() -> Table:
        async with IpvsKernel() as k:
            await load(k, before)
            assert await k.edit_service(persistent)
            assert await k.edit_service(plain)
            assert await k.edit_dest(tcp(81), moved)
            return await k.dump()

    got = arun(go(), lb).service_map()
    assert got[tcp(80)].attributes() == persistent
    assert got[tcp(80)].dests == before.service_map()[tcp(80)].dests
    assert got[tcp(443)].attributes() == plain
    assert got[tcp(81)].dests == (moved,)


def test_dump_skips_and_counts_what_the_model_cannot_say(lb: Netns) -> None:
    lb.run("ipvsadm", "-A", "-t", "[2001:db8::1]:80", "-s", "rr")
    lb.run("ipvsadm", "-A", "--sctp-service", f"{VIP}:80", "-s", "rr")
    lb.run("ipvsadm", "-A", "-u", f"{VIP}:53", "-s", "rr", "-o")

    async def go() -> tuple[Table, dict[str, int]]:
        async with IpvsKernel() as k:
            table = await k.dump()
            return table, dict(k.last_dump_skipped)

    table, skipped = arun(go(), lb)
    # SCTP is in the model (config's SCTP services); IPv6 is not yet, and is skipped.
    sctp80 = ServiceKey(protocol="sctp", address=A(VIP), port=80)
    udp53 = ServiceKey(protocol="udp", address=A(VIP), port=53)
    assert table == Table((Service(sctp80, "rr"), Service(udp53, "rr", frozenset({"ops"}))))
    assert skipped == {"service-not-ipv4": 1}


def test_apply_runs_planner_ops_until_converged(lb: Netns) -> None:
    want = sample_table()
    lb.run("ipvsadm", "-A", "-t", f"{VIP}:80", "-s", "wlc")  # to be edited
    lb.run("ipvsadm", "-a", "-t", f"{VIP}:80", "-r", "192.0.2.99:80", "-m")  # to be removed

    async def go() -> tuple[Table, set[str], planner.Plan]:
        async with IpvsKernel() as k:
            result = planner.plan(want, await k.dump(), "remove")
            kinds = {type(op).__name__ for op in result.ops}
            for op in result.ops:
                assert await k.apply(op), op
            got = await k.dump()
            return got, kinds, planner.plan(want, got, "remove")

    got, kinds, again = arun(go(), lb)
    assert got == want
    assert {"AddService", "EditService", "AddDest", "DelDest"} <= kinds
    assert again.ops == ()


def test_apply_dispatches_every_op_kind(lb: Netns) -> None:
    svc = Service(tcp(80), "rr")
    real = dest("192.0.2.11", forwarding="nat")

    async def go() -> list[bool]:
        async with IpvsKernel() as k:
            done = [
                await k.apply(planner.AddService(svc)),
                await k.apply(planner.EditService(Service(tcp(80), "wrr"), svc)),
                await k.apply(planner.AddDest(svc.key, real)),
                await k.apply(planner.EditDest(svc.key, dest("192.0.2.11", weight=4), real)),
            ]
            assert saved(lb) == [
                f"-A -t {VIP}:80 -s wrr",
                f"-a -t {VIP}:80 -r 192.0.2.11:80 -g -w 4",
            ]
            done += [
                await k.apply(planner.DelDest(svc.key, real.key)),
                await k.apply(planner.DelService(svc.key)),
                await k.apply(planner.DelService(svc.key)),
            ]
            with pytest.raises(TypeError):
                await k.apply(object())
            return done

    assert arun(go(), lb) == [True, True, True, True, True, True, False]
    assert saved(lb) == []


# -- sync daemons and timeouts -------------------------------------------------------------------


def test_sync_daemons_start_list_stop() -> None:
    with namespaces("a", "b") as (a, b):
        veth(a, "sync0", b, "sync0")
        a.run("ip", "addr", "add", "198.51.100.1/24", "dev", "sync0")
        b.run("ip", "addr", "add", "198.51.100.2/24", "dev", "sync0")

        async def go() -> None:
            async with IpvsKernel() as k:
                assert await k.sync_daemons() == []
                assert await k.start_sync_daemon("master", "sync0", 7)
                assert not await k.start_sync_daemon("master", "sync0", 7)  # EEXIST, same
                with pytest.raises(IpvsError) as info:
                    await k.start_sync_daemon("master", "sync0", 8)  # EEXIST, another
                assert info.value.errno == errno.EEXIST and "stop it first" in str(info.value)
                assert await k.start_sync_daemon("backup", "sync0", 7, port=9000, ttl=3)
                daemons = sorted(await k.sync_daemons(), key=lambda d: d.state)
                assert [(d.state, d.ifname, d.syncid) for d in daemons] == [
                    ("backup", "sync0", 7),
                    ("master", "sync0", 7),
                ]
                assert daemons[0].port == 9000 and daemons[0].ttl == 3
                assert daemons[1] == SyncDaemon("master", "sync0", 7, maxlen=daemons[1].maxlen)
                assert await k.stop_sync_daemon("master")
                assert not await k.stop_sync_daemon("master")  # ESRCH
                assert [d.state for d in await k.sync_daemons()] == ["backup"]
                assert await k.stop_sync_daemon("backup")
                assert await k.sync_daemons() == []
                with pytest.raises(IpvsError) as info:
                    await k.start_sync_daemon("master", "nosuch0", 7)
                assert "nosuch0" in str(info.value)

        async def listing() -> list[SyncDaemon]:
            async with IpvsKernel() as k:
                return await k.sync_daemons()

        arun(go(), a)
        assert arun(listing(), b) == []  # per namespace
        assert "master sync daemon" not in a.run("ipvsadm", "-L", "--daemon").stdout


def test_timeouts_round_trip(lb: Netns) -> None:
    async def go() -> list[Timeouts]:
        async with IpvsKernel() as k:
            seen = [await k.get_timeouts()]
            await k.set_timeouts(100, 20, 30)
            seen.append(await k.get_timeouts())
            await k.set_timeouts(0, 0, 45)  # 0 = unchanged
            seen.append(await k.get_timeouts())
            return seen

    assert arun(go(), lb) == [Timeouts(900, 120, 300), Timeouts(100, 20, 30), Timeouts(100, 20, 45)]
    assert "Timeout (tcp tcpfin udp): 100 20 45" in lb.run("ipvsadm", "-L", "--timeout").stdout


def test_backup_receives_connections_from_the_master(tmp_path: Path) -> None:
    """Two directors on one LAN: traffic through the master's DR service shows on the backup."""
    root = site(tmp_path, "rs", "real server\n")
    service = Service(tcp(80), "rr", dests=(dest("192.0.2.20"),))
    with ExitStack() as stack:
        sw, client, master, backup, real = stack.enter_context(
            namespaces("sw", "client", "master", "backup", "real")
        )
        bridge(sw, [client, master, backup, real])
        client.run("ip", "addr", "add", "192.0.2.1/24", "dev", "eth0")
        master.run("ip", "addr", "add", "192.0.2.10/24", "dev", "eth0")
        master.run("ip", "addr", "add", f"{VIP}/32", "dev", "eth0")
        backup.run("ip", "addr", "add", "192.0.2.30/24", "dev", "eth0")
        for key, value in (("arp_ignore", "1"), ("arp_announce", "2")):
            real.sysctl(f"net.ipv4.conf.all.{key}", value)
            real.sysctl(f"net.ipv4.conf.eth0.{key}", value)
        real.run("ip", "addr", "add", "192.0.2.20/24", "dev", "eth0")
        real.run("ip", "addr", "add", f"{VIP}/32", "dev", "lo")

        async def configure(state: Literal["master", "backup"]) -> None:
            async with IpvsKernel() as k:
                await load(k, Table((service,)))
                assert await k.start_sync_daemon(state, "eth0", 42)

        arun(configure("master"), master)
        arun(configure("backup"), backup)
        stack.enter_context(http_server(real, VIP, 80, root))
        assert http_get(client, f"http://{VIP}/who") == "real server\n"
        entry = re.compile(rf"192\.0\.2\.1:\d+\s+{re.escape(VIP)}:80\s+192\.0\.2\.20:80")
        assert entry.search(master.run("ipvsadm", "-L", "-n", "-c").stdout)
        # The master flushes its sync buffer every 2 s (IPVS_SYNC_FLUSH_TIME).
        deadline = time.monotonic() + 20.0
        while not entry.search(table := backup.run("ipvsadm", "-L", "-n", "-c").stdout):
            assert time.monotonic() < deadline, f"no synced connection on the backup:\n{table}"
            time.sleep(0.2)
