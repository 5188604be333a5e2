"""An instance's virtual addresses: a refusal by the kernel is logged and retried, never fatal.

pyroute2 0.9.7 raises NetlinkError, which is not an OSError; an instance that let one
through stopped the whole daemon (EBUSY from two dumps on one socket, at start).
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
from typing import Any

import pytest

import lvsagent.guard.peer as peer_module
from lvsagent.config.loader import parse_config
from lvsagent.daemon.vips import VirtualAddresses
from lvsagent.guard.driver import GuardSurfaces, LoopGuard
from lvsagent.netlink.pyroute import NetlinkError, os_errors
from tests.unit.conftest import RecordingUntracked

VIP = ipaddress.IPv4Interface("10.0.0.100/24")


class RefusingIPRoute:
    """Every request refused by the kernel with ``code``, as pyroute2 raises it."""

    def __init__(self, code: int = errno.EBUSY) -> None:
        self.code = code

    async def addr(self, *args: Any, **kw: Any) -> Any:
        raise NetlinkError(self.code)

    async def neigh(self, *args: Any, **kw: Any) -> Any:
        raise NetlinkError(self.code)

    async def __aenter__(self) -> RefusingIPRoute:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None


def test_os_errors_keeps_the_errno() -> None:
    with pytest.raises(OSError) as caught, os_errors():
        raise NetlinkError(errno.EBUSY)
    assert caught.value.errno == errno.EBUSY
    assert "busy" in str(caught.value)


@pytest.mark.parametrize("refused", ["read back", "add"])
def test_a_refusal_in_the_check_is_logged_not_raised(
    refused: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The read back is the fast path's dump (vrrp/fastaddr.py), the repair pyroute2's."""
    ipr: Any = RefusingIPRoute()
    source = ipaddress.IPv4Address("10.0.0.1")
    vips = VirtualAddresses("VI_2 (vrid 52 on eth0)", "eth0", 2, ipr, frozenset({VIP}), source)

    async def dump() -> list[tuple[ipaddress.IPv4Interface, bool]]:
        if refused == "read back":
            raise OSError(errno.EBUSY, "Device or resource busy")
        return []  # the VIP is missing: a master adds it, and pyroute2 is refused

    vips.fast.dump = dump  # type: ignore[method-assign]
    try:
        with caplog.at_level(logging.ERROR):
            asyncio.run(vips.reconcile(master=True))
    finally:
        vips.close()
    (record,) = caplog.records
    assert "VI_2 (vrid 52 on eth0): cannot update virtual addresses on eth0" in record.getMessage()
    assert "will retry" in record.getMessage()


def test_a_refused_neighbour_dump_is_logged_not_raised(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(peer_module, "AsyncIPRoute", RefusingIPRoute)
    config = parse_config(
        '[[vrrp_instance]]\nname = "VI_1"\ninterface = "eth0"\nvrid = 51\n'
        'virtual_addresses = ["10.0.0.100/24"]\n',
        "t.toml",
    )
    surfaces = GuardSurfaces(lambda spec: None, RecordingUntracked, lambda: None)  # type: ignore[arg-type]
    peer = ipaddress.IPv4Address("10.0.0.2")
    guard = LoopGuard(config, config.vrrp_instances[0], surfaces, peer_address=lambda: peer)
    with caplog.at_level(logging.WARNING):
        asyncio.run(guard._learn_peer_mac())
    assert "cannot read the neighbour table" in caplog.text
