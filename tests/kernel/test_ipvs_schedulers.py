"""Every IPVS scheduler, its flags, and SCTP services, programmed and read back in the lab.

The config's values go through desired_table and the adapter (hand-encoded
requests, struct-parsed dumps); ipvsadm is the independent observer of what
the kernel holds.  Runs inside the kernel lab; on the host (no IPVS) it
skips with the command that runs it.

SCTP: the lab kernel is built without CONFIG_IP_VS_PROTO_SCTP, and IPVS's
netlink interface takes (and dumps) an SCTP service anyway; balancing SCTP
packets needs that option, which Debian's kernel has (a module).
"""

from __future__ import annotations

import asyncio
import ipaddress
from typing import get_args

import pytest

from lvsagent.config.schema import Config, RealServer, Scheduler, VirtualServer
from lvsagent.ipvs.desired import desired_table
from lvsagent.ipvs.kernel import IpvsKernel
from lvsagent.ipvs.model import Table
from lvsagent.ipvs.plan import plan
from tests.kernel.uml import lab_only
from tests.netns.lab import in_namespace, namespaces

pytestmark = [lab_only(__file__), pytest.mark.timeout(120)]

A = ipaddress.IPv4Address
FLAGS = {"sh": (("sh-fallback", "sh-port"), "-b sh-fallback,sh-port"),
         "mh": (("mh-fallback", "mh-port"), "-b mh-fallback,mh-port")}  # fmt: skip


def config() -> Config:
    """One TCP service per scheduler (port 1000 + its index), then an SCTP one per protocol."""
    real = (RealServer(A("192.0.2.11"), 80, weight=2), RealServer(A("192.0.2.12"), 80))
    services = [
        VirtualServer(A("192.0.2.100"), 1000 + i, scheduler=name,
                      scheduler_flags=FLAGS.get(name, ((), ""))[0], real_servers=real)
        for i, name in enumerate(get_args(Scheduler))
    ]  # fmt: skip
    services.append(VirtualServer(A("192.0.2.100"), 9, protocol="sctp", scheduler="rr",
                                  real_servers=real))  # fmt: skip
    return Config("s.toml", virtual_servers=tuple(services))


async def program(want: Table) -> tuple[Table, int]:
    async with IpvsKernel() as kernel:
        ops = plan(want, await kernel.dump(), "report").ops
        outcomes = await kernel.apply_many(ops)
        assert all(o is True for o in outcomes), outcomes
        return await kernel.dump(), len(ops)


def test_every_scheduler_flags_and_sctp_round_trip() -> None:
    want = desired_table(config())
    with namespaces("sched") as (ns,):
        have, applied = in_namespace(ns, lambda: asyncio.run(program(want)))
        assert applied == len(want.services) * 3
        assert have == Table(tuple(sorted(want.services, key=lambda s: s.key)))
        assert plan(want, have, "report").ops == ()
        saved = ns.run("ipvsadm", "-S", "-n").stdout.splitlines()
        for i, name in enumerate(get_args(Scheduler)):
            line = f"-A -t 192.0.2.100:{1000 + i} -s {name}"
            flags = FLAGS.get(name, ((), ""))[1]
            assert (f"{line} {flags}" if flags else line) in saved, (name, saved)
        assert "-A --sctp-service 192.0.2.100:9 -s rr" in saved, saved
        assert "-a --sctp-service 192.0.2.100:9 -r 192.0.2.11:80 -g -w 2" in saved
