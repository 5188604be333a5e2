"""Boot the kernel lab with systemd as PID 1, to test lvsagent's unit file for real.

Why: Type=notify readiness, reload, the watchdog and the stop sequence are
systemd's behaviour, not ours; only a real systemd shows that the daemon and
the unit agree.  systemd 252 runs as PID 1 in the lab's user-mode Linux
when it gets a root it may write to: an overlayfs with a
tmpfs upper layer over the hostfs root, so nothing it writes (units, /etc,
/var) reaches the host.

How it fits the runner (tests/kernel/uml.py): the runner boots whatever
``init`` it copies into the shared directory and expects ``output`` and
``status`` there afterwards.  This module's init builds the overlay, bind-mounts
the shared directory through it (so results reach the host), installs a
``lvsagent-lab.service`` that runs the runner's ``run.sh`` as the only job of
a minimal target, and execs systemd.  The unit powers the guest off when the
command ends, whatever its status.

A hazard of stock UML 6.1 that this lab met, and that build-uml.sh patches
(tests/kernel/uml-patches/0001-um-map-over-live-kernel-pages.patch): the guest
froze for good, now and then, while a sandboxed process exited.  Every seccomp
filter systemd installs (SystemCallFilter=, RestrictAddressFamilies=, ...) is a
BPF program; freeing it flushes the kernel's mappings over a range that spans
live kernel stacks, and UML remapped each page there by munmap then mmap.  An
interrupt in between faulted on the unmapped stack, in gdb: a kworker in
bpf_prog_free_deferred -> vfree -> flush_tlb_kernel_range -> munmap, interrupted,
SIGSEGV in to_irq_stack, thousands of signals a second.  120 `systemctl reload`s
in a row (each runs `lvsagent check` and kill under the unit's filters) froze the
unpatched kernel within the first few; see the patch's own comment.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TextIO

import pytest

from tests.kernel import uml

# In the guest: the kernel command line has no systemd.unit=, so init names the target.
LAB_TARGET = "lvsagent-lab.target"
LAB_SERVICE = "lvsagent-lab.service"
# Added to the command's environment: how a test knows it runs under the lab's systemd.
LAB_ENV = "LVSAGENT_SYSTEMD_LAB"
BOOT_SECONDS = 60.0  # systemd's boot in UML takes ~30 s; on top of the caller's own time

INIT = r"""#!/bin/sh
# PID 1 until systemd: an overlay root over the hostfs root, then exec systemd in it.
# Written by tests/kernel/systemd_boot.py.
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH
shared=${lvsagent_shared:-}
unset lvsagent_shared lvsagent_keep

fail() {
    echo "systemd-boot: $*" >&2
    [ -n "$shared" ] && echo "systemd-boot: $*" >>"$shared/init-error"
    sync
    echo o >/proc/sysrq-trigger
    while :; do sleep 60; done
}

[ -n "$shared" ] || fail "no lvsagent_shared= on the kernel command line"
: >"$shared/booted"
mount -t proc proc /proc || fail "cannot mount /proc"
# /var/tmp/... is on the hostfs root; the overlay's layers live on a tmpfs at /mnt, not
# /tmp: a work tree under /tmp (a CI clone) must stay visible through the overlay.
mount -t tmpfs -o mode=0755 tmpfs /mnt || fail "cannot mount the overlay's tmpfs"
mkdir -p /mnt/upper /mnt/work /mnt/root
mount -t overlay overlay -o lowerdir=/,upperdir=/mnt/upper,workdir=/mnt/work /mnt/root \
    || fail "cannot mount the overlay root"
root=/mnt/root
# The shared dir straight through to the host (through the overlay, writes would stay here).
mount --bind "$shared" "$root$shared" || fail "cannot bind $shared"
# Debian's tmp.conf empties /tmp at boot ("D"): through the overlay that would hide a
# work tree under /tmp (a CI clone) from the guest.  Same name in /etc overrides it.
mkdir -p "$root/etc/tmpfiles.d"
echo "d /tmp 1777 root root -" >"$root/etc/tmpfiles.d/tmp.conf"
units=$root/etc/systemd/system
mkdir -p "$units"
cat >"$units/lvsagent-lab.target" <<EOF
[Unit]
Description=lvsagent lab: the command under test, nothing else
Requires=lvsagent-lab.service
After=lvsagent-lab.service
EOF
cat >"$units/lvsagent-lab.service" <<EOF
[Unit]
Description=lvsagent lab: run the test command, then power off
After=basic.target
SuccessAction=poweroff-force
FailureAction=poweroff-force

[Service]
Type=oneshot
StandardOutput=journal+console
ExecStart=/bin/sh -c '/bin/sh $shared/run.sh </dev/null >$shared/output 2>&1; \
echo \$? >$shared/status.new; mv $shared/status.new $shared/status; sync'
EOF
# Nothing a test needs and slow or noisy in UML.
for unit in systemd-udev-trigger.service systemd-udevd.service systemd-timesyncd.service \
        systemd-pstore.service getty.target keepalived.service postgresql.service \
        apt-daily.timer apt-daily-upgrade.timer man-db.timer e2scrub_all.timer fstrim.timer \
        dpkg-db-backup.timer systemd-networkd.service systemd-resolved.service; do
    ln -sf /dev/null "$units/$unit"
done
hostname lvsagent-systemd 2>/dev/null || true
umount /proc
exec chroot "$root" /lib/systemd/systemd --unit=lvsagent-lab.target --show-status=no
"""


def inside_systemd_lab() -> bool:
    """True in a command that ``run_under_systemd`` runs: a lab guest whose PID 1 is systemd."""
    try:
        pid1 = Path("/proc/1/comm").read_text().strip()
    except OSError:
        return False
    return os.environ.get(LAB_ENV) == "1" and pid1 == "systemd" and uml.inside_lab()


def run_under_systemd(
    cmd: Sequence[str],
    timeout: float,
    *,
    cwd: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    stream: TextIO | None = None,
) -> tuple[int, str]:
    """Boot the lab with systemd as PID 1, run ``cmd`` as a oneshot service, power off.

    Returns its exit status and output, as ``uml.run_in_uml`` does; ``timeout``
    is for the command, the boot's own time is added.  Raises the runner's
    UmlError subclasses (KernelMissing when the lab kernel is not built).
    """
    with tempfile.TemporaryDirectory(prefix="lvsagent-systemd-") as scratch:
        init = Path(scratch) / "init"
        init.write_text(INIT)
        init.chmod(0o755)
        environment = {**(os.environ if env is None else env), LAB_ENV: "1"}
        return uml.run_in_uml(
            cmd, timeout + BOOT_SECONDS, "1G", cwd=cwd, env=environment, stream=stream, init=init
        )


def run_guest_half(test_file: str, timeout: float, env: Mapping[str, str] | None = None) -> None:
    """The host half of a module whose guest tests match ``-k inside``: run them under systemd.

    Skips without the lab kernel (fails instead under CI=true); fails with the guest's
    output when a guest test fails, and with its console when the guest hangs.  -x: the
    guest steps build on each other; after the first failure the rest says nothing new.
    """
    try:
        uml.kernel_path()
    except uml.KernelMissing as exc:
        if uml.lab_required():
            pytest.fail(f"CI=true and the kernel lab cannot boot: {exc}")
        pytest.skip(str(exc))
    pytest_args = ["-q", "-x", "-p", "no:cacheprovider", test_file, "-k", "inside"]
    cmd = [sys.executable, "-m", "pytest", *pytest_args]
    root = Path(__file__).resolve().parents[2]
    try:
        status, output = run_under_systemd(cmd, timeout, cwd=root, env=env)
    except uml.UmlTimeout as exc:
        # What the guest got to, and its kernel's last words: a freeze and a slow step differ.
        pytest.fail(f"{exc}\n--- output ---\n{exc.output}\n--- console ---\n{exc.console}")
    assert status == 0, output
    assert " passed" in output and "skipped" not in output, output
