"""The Debian-kernel runner (tests/distro/qemu.py), on the HOST: its pure parts, then real boots.

Why: every test in the guest trusts the runner to hand back the command's real status and
output, and a dead guest must be reported at once with its reason, not at the deadline. The
boots here are short (a command, a panic, a failing init, an impatient boot timeout). Without
the kernel or QEMU they skip, except under CI=true, where they fail with the reason.
"""

from __future__ import annotations

import importlib
import subprocess
import types
from pathlib import Path

import pytest

from tests.distro import accel, initramfs, qemu, waits
from tests.distro.console import INIT_STARTED, Console
from tests.kernel.uml import lab_required

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(qemu.inside_distro(), reason="needs the host: no QEMU in QEMU")


# ----- pure parts ---------------------------------------------------------------------------


def test_console_events_survive_lines_split_across_reads() -> None:
    console = Console()
    for chunk in ("[ 1.0] x\nlvsagent-distro: in", "it: started\r\n[ 9.9] Kernel pa", "nic - not"):
        console.feed(chunk)
    assert console.started
    assert console.fatal is None  # the panic line is not complete yet
    console.feed(" syncing: VFS: Unable to mount root fs\n")
    assert console.fatal == "Kernel panic - not syncing: VFS: Unable to mount root fs"


def test_only_failure_lines_of_the_init_scripts_are_fatal() -> None:
    console = Console()
    console.feed("lvsagent-distro: initramfs: root mounted\n")
    assert console.fatal is None
    console.feed("lvsagent-distro: init: FAILED: cannot mount tmpfs on /tmp\n")
    assert console.fatal == "lvsagent-distro: init: FAILED: cannot mount tmpfs on /tmp"


MODULES_DEP = """kernel/fs/9p/9p.ko: kernel/net/9p/9pnet.ko kernel/fs/netfs/netfs.ko
kernel/net/9p/9pnet.ko:
kernel/fs/netfs/netfs.ko:
kernel/net/9p/9pnet_virtio.ko: kernel/net/9p/9pnet.ko kernel/drivers/virtio/virtio.ko
kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/char/hw-random/virtio-rng.ko.xz: kernel/drivers/virtio/virtio.ko
"""


def test_each_module_comes_after_what_it_needs_once() -> None:
    deps = initramfs.parse_modules_dep(MODULES_DEP)
    assert deps["virtio_rng"][0] == "kernel/drivers/char/hw-random/virtio-rng.ko.xz"
    order = [name for name, _ in initramfs.load_order(["9pnet_virtio", "9p"], deps)]
    assert order == ["9pnet", "virtio_ring", "virtio", "9pnet_virtio", "netfs", "9p"]


def test_a_module_the_kernel_lacks_is_named() -> None:
    deps = initramfs.parse_modules_dep(MODULES_DEP)
    with pytest.raises(initramfs.InitramfsError, match=r"module fuse \(needed by virtiofs\)"):
        initramfs.load_order(["virtiofs"], {**deps, "virtiofs": ("x.ko", ["fuse"])})


def test_the_archive_is_what_busybox_cpio_reads(tmp_path: Path) -> None:
    entries = [
        *initramfs.directories(["lib/a.ko", "init"]),
        initramfs.Entry("init", 0o100755, b"#!/bin/sh\n"),
        initramfs.Entry("lib/a.ko", 0o100644, b"x" * 5),
        initramfs.Entry("dev/console", 0o020600, rdev=(5, 1)),
    ]
    archive = tmp_path / "a.cpio"
    archive.write_bytes(initramfs.cpio(entries))
    with archive.open("rb") as stdin:
        listing = subprocess.run(
            ["busybox", "cpio", "-t", "-v"], stdin=stdin, capture_output=True, text=True,
            check=True,
        ).stdout.splitlines()  # fmt: skip
    assert [line.split()[-1] for line in listing] == ["lib", "init", "lib/a.ko", "dev/console"]
    assert listing[2].startswith("-rw-r--r--") and " 5 " in listing[2]
    assert listing[3].startswith("crw-------")


def test_no_dotted_value_on_the_kernel_command_line() -> None:
    """A dotted name=value is a module parameter to the kernel, never handed to init."""
    line = qemu.kernel_command_line(Path("/var/tmp/lvsagent-distro-x/shared"), "/tmp/ci-clone")
    ours = [w for w in line.split() if w.startswith("lvsagent_")]
    assert ours == [
        "lvsagent_shared=/var/tmp/lvsagent-distro-x/shared",
        "lvsagent_distro=1",
        "lvsagent_keep=/tmp/ci-clone",
    ]
    assert not any("." in w for w in ours)


def test_accel_forced_cached_or_probed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LVSAGENT_CACHE", str(tmp_path))
    monkeypatch.setattr(accel.os, "access", lambda path, mode: True)  # a usable /dev/kvm
    probes: list[str] = []

    def probe() -> bool:
        probes.append("probe")
        return False

    monkeypatch.setenv("LVSAGENT_DISTRO_ACCEL", "kvm")
    assert accel.choose("6.1.0-99-amd64", probe) == "kvm"
    monkeypatch.delenv("LVSAGENT_DISTRO_ACCEL")
    assert accel.choose("6.1.0-99-amd64", probe) == "tcg"
    assert accel.choose("6.1.0-99-amd64", probe) == "tcg"  # cached: no second probe
    assert probes == ["probe"]
    (cached,) = tmp_path.glob("distro-accel-*")
    assert cached.read_text() == "tcg\n"
    monkeypatch.setenv("LVSAGENT_DISTRO_ACCEL", "xen")
    with pytest.raises(ValueError, match="want kvm or tcg"):
        accel.choose("6.1.0-99-amd64", probe)


def test_only_the_named_start_waits_are_lengthened() -> None:
    twobox = types.SimpleNamespace(START_TIMEOUT=30.0, QUIET=2.0)
    changed = waits.lengthen({"tests.kernel.twobox": twobox}, 4)
    assert (twobox.START_TIMEOUT, twobox.QUIET) == (120.0, 2.0)
    assert changed == ["tests.kernel.twobox.START_TIMEOUT 30 -> 120 s"]


def test_a_stop_wait_is_a_longer_default_timeout() -> None:
    class Daemon:
        def stop(self, timeout: float = 10.0) -> float:
            return timeout

    lab = types.SimpleNamespace(Daemon=Daemon)
    changed = waits.lengthen({"tests.netns.lab": lab}, 4)
    assert Daemon().stop() == 40.0
    assert Daemon().stop(3.0) == 3.0
    assert changed == ["tests.netns.lab.Daemon.stop timeout 10 -> 40 s"]


def test_the_lab_still_has_the_waits_the_guest_lengthens() -> None:
    """A renamed constant or parameter would silently stay short in the guest."""
    for name, constants in waits.START_WAITS.items():
        module = importlib.import_module(name)
        assert all(isinstance(getattr(module, c), float) for c in constants), name
    for name, functions in waits.STOP_WAITS.items():
        module = importlib.import_module(name)
        for dotted in functions:
            owner, attr = dotted.split(".")
            assert getattr(getattr(module, owner), attr).__defaults__ == (15.0,), dotted


# ----- real boots --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def release() -> str:
    """Debian's kernel release; a skip locally, a failure under CI=true, if anything is missing."""
    try:
        return qemu.kernel_release()
    except qemu.KernelMissing as exc:
        if lab_required():
            pytest.fail(f"CI=true and the Debian-kernel guest cannot boot: {exc}")
        pytest.skip(str(exc))


@pytest.mark.usefixtures("release")
def test_status_output_environment_and_cwd_come_back(tmp_path: Path) -> None:
    status, output = qemu.run_in_guest(
        ["sh", "-c", 'echo "$GREETING"; pwd; echo err >&2; exit 7'],
        timeout=300, cwd=ROOT, env={"GREETING": "it's $HOME `id`", "PATH": "/usr/bin:/bin"},
        results=tmp_path,
    )  # fmt: skip
    assert (status, output) == (7, f"it's $HOME `id`\n{ROOT}\nerr\n")
    console = (tmp_path / "console.log").read_text()
    assert INIT_STARTED in console
    assert "err" not in console.splitlines()  # the command's output stays out of the console
    assert "9pnet_virtio" in (tmp_path / "modules-at-boot").read_text()


@pytest.mark.usefixtures("release")
def test_a_panic_ends_the_run_with_its_reason() -> None:
    """No init at all: the kernel panics. The deadlines are far: only the panic ends it."""
    with pytest.raises(qemu.BootFailed, match="Kernel panic - not syncing: VFS") as caught:
        qemu.run_in_guest(["true"], timeout=600, boot_timeout=600,
                          cmdline_extra=["rdinit=/nonexistent"])  # fmt: skip
    assert "Kernel panic" in caught.value.console


@pytest.mark.usefixtures("release")
def test_a_failing_initramfs_ends_the_run_with_its_reason() -> None:
    """The kernel hands the last lvsagent_shared= to init: a directory that does not exist."""
    with pytest.raises(qemu.BootFailed, match="cannot mount the shared directory /nonexistent"):
        qemu.run_in_guest(["true"], timeout=600, boot_timeout=600,
                          cmdline_extra=["lvsagent_shared=/nonexistent"])  # fmt: skip


@pytest.mark.usefixtures("release")
def test_an_init_that_does_not_start_in_time_is_stopped() -> None:
    with pytest.raises(qemu.BootFailed, match=r"did not start its init within 0\.5 s"):
        qemu.run_in_guest(["true"], timeout=600, boot_timeout=0.5)
