"""Kernel modules at start: the kernel has what the config needs before anything uses it.

On a distribution kernel (Debian's ``linux-image-amd64``) IPVS, nf_tables and the nftables
expressions are modules, and nothing may have loaded them.  The kernel loads each on first
use, for any process with CAP_NET_ADMIN (the kernel runs modprobe itself, so the service's
missing CAP_SYS_MODULE does not matter): ip_vs when the IPVS generic netlink family is looked
up, nf_tables with the first nftables request, nft_ct, nft_chain_nat and nft_redir (with
nf_nat and nf_conntrack) when a table that uses them is sent, an IPVS scheduler with the first
service that names it.  Two things defeat that.  A value that must exist before first use:
``net.ipv4.vs.backup_only``, written before any IPVS request, exists only once ip_vs is
loaded.  And a ``blacklist`` line in modprobe.d, which stops loading by alias, i.e. every
load on demand, while ``modprobe NAME`` still works.

So, before the loop guard or the reconciler runs, each feature the config needs is asked for
the way lvsagent uses it (the probe), which loads its modules on demand.  What is still
missing is loaded with ``modprobe``, as keepalived does for ip_vs, when this process holds
CAP_SYS_MODULE (root); otherwise, or when modprobe fails, the error names the exact command.
The start then goes on as before: without IPVS, VRRP runs and the reconciler retries (as
keepalived's VRRP runs without its checker); without nf_tables the loop guard cannot engage
and the start fails.

The decisions are pure functions of text (``/proc/modules``, ``modules.builtin``,
``/proc/self/status``) and probe results; ``ensure_modules`` only gathers and applies them.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol, assert_never

from lvsagent.config.schema import Config
from lvsagent.daemon.derive import guarded_instance
from lvsagent.guard.desired import guard_spec
from lvsagent.netfilter.nft import Libnftables, NftError
from lvsagent.netfilter.ruleset import desired_guard_table, list_table, parse_table, transaction
from lvsagent.observe.ipvsstats import GenlDumper

log = logging.getLogger("lvsagent.kmod")

CAP_SYS_MODULE = 16
MODULES_LOAD_D = "/etc/modules-load.d/lvsagent.conf"
MODPROBE_TIMEOUT = 30.0
# A peer MAC for the probe only: with one, the probe's table has every rule kind the guard
# may write later (the peer's redirect), so every module it needs is asked for.
_PROBE_MAC = "02:00:00:00:00:01"


FeatureName = Literal["IPVS", "nftables"]  # as the operator knows them


@dataclass(frozen=True)
class Feature:
    """Something the config needs from the kernel, and the modules that provide it."""

    name: FeatureName
    modules: tuple[str, ...]
    why: str


def needed_features(config: Config) -> list[Feature]:
    """What this config asks of the kernel: IPVS for virtual servers, nftables for the guard."""
    features = []
    if config.virtual_servers:
        features.append(Feature("IPVS", ("ip_vs",),
                                f"{len(config.virtual_servers)} virtual server(s)"))  # fmt: skip
    if guarded_instance(config) is not None:
        features.append(Feature(
            "nftables", ("nf_tables", "nft_ct", "nft_chain_nat", "nft_redir"),
            f"the loop guard ({config.global_.loop_guard})",
        ))  # fmt: skip
    return features


def present_modules(proc_modules: str, builtin: str) -> frozenset[str]:
    """Loaded (``/proc/modules``) or built in (``modules.builtin``), spelt with ``_``."""
    names = {line.split()[0] for line in proc_modules.splitlines() if line.split()}
    for line in builtin.splitlines():
        base = line.strip().rsplit("/", 1)[-1]
        if base.endswith(".ko"):
            names.add(base[:-3])
    return frozenset(n.replace("-", "_") for n in names)


def can_load_modules(proc_status: str) -> bool:
    """Whether CapEff in ``/proc/self/status`` holds CAP_SYS_MODULE."""
    for line in proc_status.splitlines():
        if line.startswith("CapEff:"):
            return bool(int(line.split()[1], 16) >> CAP_SYS_MODULE & 1)
    return False


def to_load(failed: Iterable[Feature], present: frozenset[str]) -> list[str]:
    """The modules of the failed features that are neither loaded nor built in, in order."""
    wanted: list[str] = []
    for feature in failed:
        wanted.extend(m for m in feature.modules if m not in present and m not in wanted)
    return wanted


def modprobe_command(modules: Sequence[str]) -> str:
    return f"modprobe -a {' '.join(modules)}"


def advice(failed: Sequence[tuple[Feature, str]], modules: Sequence[str], can_load: bool,
           modprobe_error: str | None) -> str:  # fmt: skip
    """The error for features still missing after the probe (and modprobe, if it ran):
    each feature with why it is needed and what its probe said, why lvsagent could not load
    it, and the commands that fix it."""
    what = "; ".join(f"{f.name} for {f.why} ({said})" for f, said in failed)
    command = modprobe_command(modules)
    if modprobe_error is not None:
        cause = (f"`{command}` failed: {modprobe_error} (a module that is not found is not "
                 "in this kernel: install its modules or build it in)")  # fmt: skip
    elif can_load:
        cause = f"`{command}` ran, and the kernel still lacks it"
    else:
        cause = (
            "the kernel did not load it on demand (blacklisted in /etc/modprobe.d?) and "
            "lvsagent lacks CAP_SYS_MODULE to load it (the systemd unit runs without)"
        )
    return (
        f"kernel: not available: {what}. Why: {cause}. Fix: run `{command}` as root, "
        f"and list {' '.join(modules)} in {MODULES_LOAD_D} to load them at every boot"
    )


# ----- the kernel as ensure_modules sees it -----------------------------------------------------


class Kernel(Protocol):
    """What ensure_modules asks of the kernel (SystemKernel; a fake in the unit tests)."""

    def probe(self, feature: Feature) -> str | None:
        """Use ``feature`` as lvsagent will (which loads its modules on demand): None if it
        works, else what the kernel said."""

    def present(self) -> frozenset[str]: ...

    def can_load(self) -> bool: ...

    async def modprobe(self, modules: Sequence[str]) -> str | None:
        """Load ``modules``: None, or modprobe's error."""


class SystemKernel:
    """The running kernel: probes over netlink, /proc, and the kernel's own modprobe."""

    def __init__(self, config: Config) -> None:
        self._config = config

    def probe(self, feature: Feature) -> str | None:
        match feature.name:
            case "IPVS":
                return probe_ipvs()
            case "nftables":
                return probe_nftables(self._config)
            case _:
                assert_never(feature.name)

    def present(self) -> frozenset[str]:
        builtin = _read(f"/lib/modules/{os.uname().release}/modules.builtin")
        return present_modules(_read("/proc/modules"), builtin)

    def can_load(self) -> bool:
        return can_load_modules(_read("/proc/self/status"))

    async def modprobe(self, modules: Sequence[str]) -> str | None:
        """The helper the kernel itself runs (``kernel.modprobe``), as keepalived does."""
        helper = _read("/proc/sys/kernel/modprobe").strip() or "modprobe"
        try:
            proc = await asyncio.create_subprocess_exec(
                helper, "-a", "--", *modules,
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            _, err = await asyncio.wait_for(proc.communicate(), MODPROBE_TIMEOUT)
        except (OSError, TimeoutError) as exc:
            return f"{helper}: {exc}"
        if proc.returncode != 0:
            return " ".join(err.decode(errors="replace").split()) or f"exit {proc.returncode}"
        return None


def probe_ipvs() -> str | None:
    """Look the IPVS family up (the kernel loads ip_vs for that, by its alias)."""
    try:
        dumper = GenlDumper()
        try:
            found = dumper.family_id("IPVS")
        finally:
            dumper.close()
    except OSError as exc:
        return f"generic netlink: {exc}"
    return None if found is not None else "no IPVS generic netlink family"


def probe_nftables(config: Config) -> str | None:
    """Send the guard's table as a check-only batch: the kernel loads what it uses and changes
    nothing (``nft -c``).  The current table is read first, so that the batch is the one
    apply would send."""
    spec = guard_spec(config, (_PROBE_MAC,))
    try:
        try:
            actual = parse_table(Libnftables().run(list_table(), "list table"))
        except NftError as exc:
            if exc.errno != errno.ENOENT:  # ENOENT: no table yet
                raise
            actual = None
        Libnftables(dry_run=True).run(transaction(desired_guard_table(spec, True), actual), "probe")
    except NftError as exc:
        return exc.text
    return None


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


# ----- at start ---------------------------------------------------------------------------------


async def ensure_modules(config: Config, kernel: Kernel | None = None) -> list[Feature]:
    """Probe, load what is missing if we may, log the outcome; the features still missing."""
    features = needed_features(config)
    if not features:
        return []
    k = kernel if kernel is not None else SystemKernel(config)
    before = k.present()
    failed = await _failing(k, features)
    present = k.present()
    if appeared := sorted(present - before):
        log.info("kernel: modules loaded on demand by the kernel: %s", " ".join(appeared))
    if not failed:
        return []
    modules = to_load([f for f, _ in failed], present) or [m for f, _ in failed for m in f.modules]
    allowed = k.can_load()
    error = await k.modprobe(modules) if allowed else None
    if allowed and error is None:
        failed = await _failing(k, [f for f, _ in failed])
        if not failed:
            log.info("kernel: modules loaded with `%s` (the kernel had not loaded them on "
                     "demand)", modprobe_command(modules))  # fmt: skip
            return []
    log.error("%s", advice(failed, modules, allowed, error))
    return [f for f, _ in failed]


async def _failing(kernel: Kernel, features: Sequence[Feature]) -> list[tuple[Feature, str]]:
    """Probe each feature, in a thread: a probe may wait for the kernel's own modprobe."""
    said = [await asyncio.to_thread(kernel.probe, f) for f in features]
    return [(f, s) for f, s in zip(features, said, strict=True) if s is not None]
