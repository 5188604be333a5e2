"""Kernel modules at start (daemon/kmod.py): what a config needs, what is there, what to do.

The pure parts read the kernel's own text formats; ensure_modules runs against a recording
fake kernel whose probes fail until a module set is loaded, as a blacklisted or missing
module does on a real one (tests/distro/test_modules.py shows the real kernel).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import pytest

from lvsagent.config.loader import parse_config
from lvsagent.config.schema import Config
from lvsagent.daemon.kmod import (
    Feature,
    advice,
    can_load_modules,
    ensure_modules,
    needed_features,
    present_modules,
    to_load,
)

VRRP = """
[[vrrp_instance]]
name = "VI_1"
interface = "eth0"
vrid = 51
virtual_addresses = ["10.0.0.100/24"]
"""
SERVICE = """
[[virtual_server]]
address = "10.0.0.100"
port = 80
[[virtual_server.real_server]]
address = "10.0.0.1"
port = 80
"""
IPVS = Feature("IPVS", ("ip_vs",), "1 virtual server(s)")
NFT = Feature("nftables", ("nf_tables", "nft_ct", "nft_chain_nat", "nft_redir"), "guard")


def config(text: str) -> Config:
    return parse_config(text, "t.toml")


def test_vrrp_alone_needs_nothing_from_the_kernel() -> None:
    assert needed_features(config(VRRP)) == []


@pytest.mark.parametrize("mode", ["bypass", "fwmark", "backup_only"])
def test_virtual_servers_need_ipvs_and_the_guards_nftables(mode: str) -> None:
    mark = "fwmark = 3\n" if mode == "fwmark" else ""
    text = (
        f'[global]\nloop_guard = "{mode}"\n'
        + VRRP
        + SERVICE.replace("port = 80\n", f"port = 80\n{mark}", 1)
    )
    features = needed_features(config(text))
    assert [(f.name, f.modules) for f in features] == [
        ("IPVS", ("ip_vs",)),
        ("nftables", ("nf_tables", "nft_ct", "nft_chain_nat", "nft_redir")),
    ]
    assert features[0].why == "1 virtual server(s)"
    assert features[1].why == f"the loop guard ({mode})"


def test_present_is_loaded_or_built_in_with_dashes_as_underscores() -> None:
    proc_modules = (
        "nft_redir 16384 1 - Live 0x0000000000000000\n"
        "nf_nat 57344 2 nft_redir,nft_chain_nat, Live 0x0000000000000000\n"
    )
    builtin = "kernel/net/netfilter/nf-tables.ko\nkernel/lib/libcrc32c.ko\n\n"
    assert present_modules(proc_modules, builtin) == {"nft_redir", "nf_nat", "nf_tables",
                                                      "libcrc32c"}  # fmt: skip
    assert present_modules("", "") == frozenset()


@pytest.mark.parametrize(
    ("cap_eff", "expected"),
    [
        ("000001ffffffffff", True),  # root
        ("0000000000003000", False),  # the unit: CAP_NET_ADMIN and CAP_NET_RAW
        ("0000000000010000", True),  # CAP_SYS_MODULE alone
    ],
)
def test_cap_sys_module_is_bit_16_of_cap_eff(cap_eff: str, expected: bool) -> None:
    status = f"Name:\tpython3\nCapPrm:\t000001ffffffffff\nCapEff:\t{cap_eff}\n"
    assert can_load_modules(status) is expected


def test_no_cap_eff_line_means_no_loading() -> None:
    assert can_load_modules("Name:\tpython3\n") is False


def test_to_load_skips_what_is_there_and_keeps_order() -> None:
    present = frozenset({"nf_tables", "nft_ct"})
    assert to_load([IPVS, NFT, IPVS], present) == ["ip_vs", "nft_chain_nat", "nft_redir"]


def test_advice_names_the_exact_command_and_the_boot_time_fix() -> None:
    text = advice([(IPVS, "no IPVS generic netlink family")], ["ip_vs"], False, None)
    assert "IPVS for 1 virtual server(s) (no IPVS generic netlink family)" in text
    assert "Fix: run `modprobe -a ip_vs` as root" in text
    assert "list ip_vs in /etc/modules-load.d/lvsagent.conf" in text
    assert "lacks CAP_SYS_MODULE" in text


def test_advice_quotes_a_failed_modprobe() -> None:
    said = "modprobe: FATAL: Module ip_vs not found in directory /lib/modules/6.18.1"
    text = advice([(IPVS, "no IPVS generic netlink family")], ["ip_vs"], True, said)
    assert f"`modprobe -a ip_vs` failed: {said}" in text


# ----- ensure_modules against a fake kernel ------------------------------------------------


class FakeKernel:
    """Probes fail while a feature's modules are not all present; records modprobe calls.

    ``on_demand``: modules a probe itself loads (as the kernel does, unless blacklisted).
    ``loadable``: what modprobe can load (others: "not found").
    """

    def __init__(
        self,
        *,
        present: Sequence[str] = (),
        on_demand: Sequence[str] = (),
        loadable: Sequence[str] = (),
        root: bool = True,
    ) -> None:
        self.loaded = set(present)
        self.on_demand = set(on_demand)
        self.loadable = set(loadable)
        self.root = root
        self.modprobed: list[list[str]] = []

    def probe(self, feature: Feature) -> str | None:
        self.loaded |= self.on_demand & set(feature.modules)
        missing = set(feature.modules) - self.loaded
        return f"missing {sorted(missing)}" if missing else None

    def present(self) -> frozenset[str]:
        return frozenset(self.loaded)

    def can_load(self) -> bool:
        return self.root

    async def modprobe(self, modules: Sequence[str]) -> str | None:
        self.modprobed.append(list(modules))
        absent = [m for m in modules if m not in self.loadable]
        if absent:
            return f"modprobe: FATAL: Module {absent[0]} not found"
        self.loaded |= set(modules)
        return None


ALL = ("ip_vs", "nf_tables", "nft_ct", "nft_chain_nat", "nft_redir")
SERVICES = config(VRRP + SERVICE)


def run(kernel: FakeKernel) -> list[str]:
    return [f.name for f in asyncio.run(ensure_modules(SERVICES, kernel))]


def test_what_the_kernel_loads_on_demand_is_logged_and_nothing_is_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    kernel = FakeKernel(on_demand=ALL, root=False)
    with caplog.at_level(logging.INFO, "lvsagent.kmod"):
        assert run(kernel) == []
    assert kernel.modprobed == []
    assert caplog.messages == [
        "kernel: modules loaded on demand by the kernel: ip_vs nf_tables nft_chain_nat nft_ct "
        "nft_redir"
    ]


def test_already_there_says_nothing(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, "lvsagent.kmod"):
        assert run(FakeKernel(present=ALL)) == []
    assert caplog.messages == []


def test_root_loads_only_what_the_kernel_would_not(caplog: pytest.LogCaptureFixture) -> None:
    kernel = FakeKernel(on_demand=ALL[1:], loadable=ALL)  # ip_vs blacklisted
    with caplog.at_level(logging.INFO, "lvsagent.kmod"):
        assert run(kernel) == []
    assert kernel.modprobed == [["ip_vs"]]
    assert caplog.messages[-1] == (
        "kernel: modules loaded with `modprobe -a ip_vs` (the kernel had not loaded them on demand)"
    )


def test_without_cap_sys_module_the_error_names_the_command(
    caplog: pytest.LogCaptureFixture,
) -> None:
    kernel = FakeKernel(on_demand=ALL[1:], loadable=ALL, root=False)
    with caplog.at_level(logging.ERROR, "lvsagent.kmod"):
        assert run(kernel) == ["IPVS"]
    assert kernel.modprobed == []
    (error,) = caplog.messages
    assert "IPVS for 1 virtual server(s) (missing ['ip_vs'])" in error
    assert "Fix: run `modprobe -a ip_vs` as root" in error


def test_a_module_this_kernel_lacks_gets_modprobes_own_words(
    caplog: pytest.LogCaptureFixture,
) -> None:
    kernel = FakeKernel(present=ALL[1:], loadable=ALL[1:])  # no ip_vs at all
    with caplog.at_level(logging.ERROR, "lvsagent.kmod"):
        assert run(kernel) == ["IPVS"]
    assert kernel.modprobed == [["ip_vs"]]
    assert "failed: modprobe: FATAL: Module ip_vs not found" in caplog.messages[0]


def test_every_missing_feature_is_in_one_command(caplog: pytest.LogCaptureFixture) -> None:
    kernel = FakeKernel(present=("nf_tables",), root=False)
    with caplog.at_level(logging.ERROR, "lvsagent.kmod"):
        assert run(kernel) == ["IPVS", "nftables"]
    assert "`modprobe -a ip_vs nft_ct nft_chain_nat nft_redir`" in caplog.messages[0]


def test_a_config_without_virtual_servers_asks_the_kernel_nothing() -> None:
    kernel = FakeKernel(root=True)
    assert asyncio.run(ensure_modules(config(VRRP), kernel)) == []
    assert kernel.modprobed == []
