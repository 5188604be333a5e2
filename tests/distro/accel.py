"""KVM or TCG for the Debian-kernel guest: KVM only where it really runs this kernel.

Why a probe and not "/dev/kvm exists": on nested machines /dev/kvm opens, KVM_CREATE_VM
succeeds and even a boot sector runs, yet Debian's kernel spins forever in the host and prints
nothing. So the probe boots that kernel under KVM to its initramfs, which prints one line and
powers off, within a bound; without that line the guest runs under TCG (emulation: slow, but
it runs everywhere). The verdict is cached per host boot, since where KVM spins the probe
costs its whole bound; $LVSAGENT_DISTRO_ACCEL=kvm|tcg skips it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

MODES = ("kvm", "tcg")
PROBE_OK = "lvsagent-distro: probe: ok"
PROBE_TIMEOUT = 20.0  # a KVM guest reaches its initramfs in 1-3 s; TCG here takes ~15 s


def cache_root() -> Path:
    """The kernel lab's cache directory (tests/kernel/uml.py uses the same)."""
    return Path(os.environ.get("LVSAGENT_CACHE", "/var/cache/lvsagent"))


def probe_key(release: str) -> str:
    """What the verdict depends on: this host's boot, the guest kernel, QEMU's version."""
    try:
        boot_id = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        boot_id = "unknown"
    qemu = subprocess.run(
        ["dpkg-query", "-W", "-f=${Version}", "qemu-system-x86"],
        capture_output=True, text=True, check=False,
    ).stdout  # fmt: skip
    return hashlib.sha256(f"{boot_id} {release} {qemu}".encode()).hexdigest()[:16]


def choose(release: str, kvm_runs: Callable[[], bool], log: TextIO | None = None) -> str:
    """``kvm`` or ``tcg``: $LVSAGENT_DISTRO_ACCEL, else the cached verdict, else the probe.

    ``kvm_runs`` is the probe (it needs /dev/kvm and a bounded boot; see qemu.py).
    """
    forced = os.environ.get("LVSAGENT_DISTRO_ACCEL", "")
    if forced:
        if forced not in MODES:
            raise ValueError(f"LVSAGENT_DISTRO_ACCEL={forced!r}: want kvm or tcg")
        return forced
    verdict = cache_root() / f"distro-accel-{probe_key(release)}"
    with contextlib.suppress(OSError):
        cached = verdict.read_text().strip()
        if cached in MODES:
            return cached
    started = time.monotonic()
    usable = os.access("/dev/kvm", os.R_OK | os.W_OK) and kvm_runs()
    mode = "kvm" if usable else "tcg"
    if log is not None:
        print(
            f"distro: KVM probe ({time.monotonic() - started:.1f} s): "
            + ("Debian's kernel boots under KVM" if usable else
               "no /dev/kvm, or Debian's kernel did not boot under KVM")
            + f"; using {mode} (cached in {verdict})",
            file=log,
        )  # fmt: skip
    with contextlib.suppress(OSError):
        verdict.parent.mkdir(parents=True, exist_ok=True)
        verdict.write_text(mode + "\n")
    return mode
