"""Helpers for tests that run inside the Debian-kernel guest (tests/distro/qemu.py).

The guest is disposable and the tests in it run as root: they may load and unload kernel
modules and mount over /etc/modprobe.d, which they never do on the host. What runs as the
systemd unit would (user lvsagent, CAP_NET_ADMIN and CAP_NET_RAW only) is approximated with
setpriv: an unprivileged uid, those two capabilities ambient and nothing else in the bounding
set (the unit's ProtectKernelModules= adds nothing here: the kernel's own module loading runs
outside the service).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from tests.distro.qemu import inside_distro
from tests.netns.lab import ROOT, Daemon, Named

# The modules an operator's kernel may lack at start, and lvsagent needs (issue's list).
LVSAGENT_MODULES = ("ip_vs", "nf_tables", "nft_redir", "nf_nat", "nf_conntrack")
UNPRIVILEGED_UID = 65534  # nobody: no file of this machine is its own
SERVICE_CAPS = "+net_admin,+net_raw"  # systemd/lvsagent.service's AmbientCapabilities


def distro_only(test_file: str) -> Any:
    """The skip mark of a module that runs only in the Debian-kernel guest, with its command."""
    import pytest

    module = Path(test_file).resolve().relative_to(ROOT)
    return pytest.mark.skipif(
        not inside_distro(),
        reason="runs in Debian's kernel under QEMU: python -m tests.distro.qemu -- "
        f"$PWD/.venv/bin/python -m pytest -p no:cacheprovider {module}",
    )


def shared_dir() -> Path:
    """The run's shared directory, from the kernel command line."""
    found = re.search(r"lvsagent_shared=(\S+)", Path("/proc/cmdline").read_text())
    assert found, "no lvsagent_shared= on the kernel command line"
    return Path(found.group(1))


def module_names(proc_modules: str) -> set[str]:
    return {line.split()[0] for line in proc_modules.splitlines() if line.strip()}


def loaded() -> set[str]:
    return module_names(Path("/proc/modules").read_text())


def unprivileged(argv: Sequence[str]) -> list[str]:
    """``argv`` as uid/gid nobody with only the service's two capabilities."""
    return [
        "setpriv", f"--reuid={UNPRIVILEGED_UID}", f"--regid={UNPRIVILEGED_UID}",
        "--clear-groups", f"--inh-caps=-all,{SERVICE_CAPS}",
        f"--ambient-caps=-all,{SERVICE_CAPS}", f"--bounding-set=-all,{SERVICE_CAPS}",
        "--", *argv,
    ]  # fmt: skip


def start_agent_as(ns: Named, config: Path, name: str, *, as_service: bool) -> Daemon:
    """``lvsagent run`` in ``ns``, as root or as the systemd unit's user would run it."""
    argv = [sys.executable, "-m", "lvsagent.cli", "run", "--config", str(config),
            "--log-level", "debug"]  # fmt: skip
    proc = subprocess.Popen(
        ["ip", "netns", "exec", ns.name, *(unprivileged(argv) if as_service else argv)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        text=True, cwd=str(ROOT),
    )  # fmt: skip
    daemon = Daemon(name, proc)
    daemon.start_reader()
    return daemon


@contextlib.contextmanager
def service_dir() -> Iterator[Path]:
    """A directory the unprivileged agent can read its config from and keep its state in
    (pytest's own tmp_path is root's, 0700)."""
    path = Path(tempfile.mkdtemp(prefix="lvsagent-svc-"))
    try:
        path.chmod(0o755)
        os.chown(path, UNPRIVILEGED_UID, UNPRIVILEGED_UID)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def blacklisted(*modules: str) -> Iterator[None]:
    """``blacklist`` lines for ``modules`` in /etc/modprobe.d (read-only here: a tmpfs copy is
    mounted over it, and unmounted after). The kernel's loading by alias then refuses them;
    ``modprobe NAME`` still loads them."""
    target = Path("/etc/modprobe.d")
    with tempfile.TemporaryDirectory(prefix="modprobe.d-") as tmp:
        subprocess.run(["mount", "-t", "tmpfs", "tmpfs", tmp], check=True)
        try:
            for item in target.glob("*"):
                shutil.copy(item, tmp)
            Path(tmp, "lvsagent-test.conf").write_text("".join(f"blacklist {m}\n" for m in modules))
            subprocess.run(["mount", "--bind", tmp, str(target)], check=True)
            try:
                yield
            finally:
                subprocess.run(["umount", str(target)], check=True)
        finally:
            subprocess.run(["umount", tmp], check=True)


def unload(*modules: str) -> None:
    """``modprobe -r`` (each with the dependencies nothing else uses); fails if one stays."""
    done = subprocess.run(["modprobe", "-r", "-a", *modules], capture_output=True, text=True,
                          check=False)  # fmt: skip
    left = set(modules) & loaded()
    assert not left, f"still loaded: {sorted(left)}: {done.stderr.strip()}"
