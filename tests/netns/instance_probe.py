"""One InstanceRunner in the namespace it is started in, with a fault the config cannot make.

Usage: python -m tests.netns.instance_probe SCENARIO IFNAME; prints one JSON line.

- ``many_vips``: 300 VIPs (more than an advert can carry; the config refuses
  them, so the instance is built here); runs until three adverts could not be
  encoded, then stops.
- ``guard_raises``: the loop guard's release raises on becoming MASTER.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import sys

from lvsagent.config.schema import VrrpInstance
from lvsagent.daemon.instance import InstanceRunner
from lvsagent.netlink.pyroute import AsyncIPRoute
from lvsagent.vrrp.addresses import read_link


def instance(ifname: str, vips: int) -> VrrpInstance:
    return VrrpInstance(
        name="VI_1",
        interface=ifname,
        vrid=51,
        priority=100,
        advert_int=0.1,
        version=3,
        virtual_addresses=tuple(
            ipaddress.IPv4Interface(f"10.77.{n // 200}.{n % 200 + 1}/32") for n in range(vips)
        ),
        garp_master_delay=0,
    )


async def many_vips(ifname: str) -> dict[str, object]:
    async with AsyncIPRoute() as ipr:
        runner = InstanceRunner(instance(ifname, 300), await read_link(ipr, ifname), ipr)
        enough = asyncio.Event()
        send = runner.wire.send_advert

        def counted(priority: int) -> None:
            send(priority)
            if runner.counters.adverts_unencodable >= 3:
                enough.set()

        runner.wire.send_advert = counted  # type: ignore[method-assign]
        task = asyncio.create_task(runner.run())
        await asyncio.wait_for(enough.wait(), 10)
        was = runner.router.state.value
        runner.stop()
        await task
        return {"state": was, "unencodable": runner.counters.adverts_unencodable}


async def guard_raises(ifname: str) -> dict[str, object]:
    async def guard(engaged: bool, why: str) -> None:
        if not engaged:
            raise RuntimeError("guard release failed")

    async with AsyncIPRoute() as ipr:
        runner = InstanceRunner(instance(ifname, 2), await read_link(ipr, ifname), ipr, guard)
        try:
            await asyncio.wait_for(runner.run(), 10)
        except RuntimeError as exc:
            return {"state": runner.router.state.value, "raised": str(exc)}
        return {"state": runner.router.state.value, "raised": None}


def main() -> int:
    scenario, ifname = sys.argv[1], sys.argv[2]
    probe = {"many_vips": many_vips, "guard_raises": guard_raises}[scenario]
    logging.basicConfig(level=logging.INFO, format="%(name)s %(levelname)s %(message)s")
    print(json.dumps(asyncio.run(probe(ifname))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
