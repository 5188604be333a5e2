"""Run a command in Debian's own packaged kernel under QEMU, on this machine's root.

Why: operators run ``linux-image-amd64``, where ip_vs, nf_tables, nft_redir, nf_nat and
nf_conntrack are modules that nothing may have loaded when lvsagent starts. The kernel lab
(tests/kernel/uml.py) has them built in, so only a guest of Debian's kernel shows what loading
them takes. ``tools/distro-deps.sh`` installs the kernel, QEMU and busybox-static.

    python -m tests.distro.qemu [--timeout S] -- CMD ARGS...
    status, output = run_in_guest(["ipvsadm", "-Ln"], timeout=300)

How: QEMU boots ``/boot/vmlinuz-<release>`` with our initramfs (initramfs.py). It mounts this
machine's root read-only over virtiofs (QEMU's virtiofsd serves a read-only bind mount of /
made in a mount namespace of its own, so the host enforces it) and the run's ``shared``
directory writable over 9p at its own path, then runs guest-init.sh from there. virtiofs,
not 9p, for the root: the guest caches what it looked up, so a process start (Python opens
hundreds of files) costs fewer round trips to the host, each slow under TCG. The contract is
the kernel lab's: ``run.sh`` (cwd, environment and command, shell-quoted) in; ``output``,
``status`` and ``modules-at-boot`` out. ``lvsagent_shared=`` on the kernel command line makes
``tests.kernel.uml.inside_lab()`` true in the guest, so the lab's tests run there as they are;
``lvsagent_distro=1`` tells this guest from the lab (:func:`inside_distro`).

KVM or TCG: accel.py decides, :func:`kvm_runs_this_kernel` probes. A dead guest fails in
seconds, not at the deadline: ``panic=-1`` with ``-no-reboot`` turns a panic into QEMU's exit,
the init scripts print their failure and power off, a panic or failure line on the console
ends the wait at once (console.py), and a guest whose init has not started within the boot
timeout is stopped. The error carries the reason and the console's tail.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TextIO

from tests.distro import accel, initramfs
from tests.distro.console import Console
from tests.kernel import uml
from tests.kernel.uml import (
    GUEST_KEEPABLE_MOUNTS,
    GUEST_PRIVATE_MOUNTS,
    OWNER_FILE,
    BootFailed,
    GuestTimeout,
    UmlError,
    _start_time,
    render_run_script,
    run_for_cli,
)

HERE = Path(__file__).resolve().parent
GUEST_INIT = HERE / "guest-init.sh"
QEMU = "qemu-system-x86_64"
VIRTIOFSD = "/usr/lib/qemu/virtiofsd"  # shipped by qemu-system-common in Debian 12
KERNEL_PACKAGE = "linux-image-amd64"
DEPS_SCRIPT = "tools/distro-deps.sh"
DEFAULT_SHARED_PARENT = "/var/tmp"
_SAFE_CMDLINE_PATH = re.compile(r"^/[A-Za-z0-9_/-]+$")
VIRTIOFSD_READY = "Waiting for vhost-user socket connection"


class KernelMissing(uml.KernelMissing):
    """Debian's kernel, QEMU, virtiofsd or busybox-static is not installed."""


def inside_distro() -> bool:
    """True in a guest booted by run_in_guest (Debian's kernel, not the UML lab)."""
    try:
        return "lvsagent_distro=1" in Path("/proc/cmdline").read_text().split()
    except OSError:
        return False


def _dpkg(field: str, package: str) -> str:
    done = subprocess.run(
        ["dpkg-query", "-W", f"-f=${{{field}}}", package],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    return done.stdout if done.returncode == 0 else ""


def kernel_release() -> str:
    """The release linux-image-amd64 installs (``6.1.0-57-amd64``); $LVSAGENT_DISTRO_KERNEL wins.

    Raises KernelMissing, naming the install script, when anything the guest needs is absent.
    """
    release = os.environ.get("LVSAGENT_DISTRO_KERNEL", "")
    if not release:
        found = re.search(r"linux-image-(\S+)", _dpkg("Depends", KERNEL_PACKAGE))
        release = found.group(1) if found else ""
    if not release:
        raise KernelMissing(f"{KERNEL_PACKAGE} is not installed: run {DEPS_SCRIPT} as root")
    needed = (f"/boot/vmlinuz-{release}", f"/lib/modules/{release}/modules.dep", VIRTIOFSD)
    for path in needed:
        if not Path(path).exists():
            raise KernelMissing(f"{path} is missing: run {DEPS_SCRIPT} as root")
    if shutil.which(QEMU) is None:
        raise KernelMissing(f"{QEMU} is not installed: run {DEPS_SCRIPT} as root")
    return release


def kernel_command_line(shared: Path, keep: str | None = None, extra: Sequence[str] = ()) -> str:
    """The guest kernel's parameters. No dots in our values: a dotted name=value is taken for
    a module parameter and not handed to init."""
    words = [
        "console=ttyS0",
        "rdinit=/init",
        "panic=-1",  # reboot at once, which -no-reboot turns into QEMU's exit
        "quiet",
        "mitigations=off",  # a test guest: each mitigation costs under TCG
        # TCG derives every vCPU's TSC from one host clock, so it is reliable; without this
        # the kernel picks the HPET, whose every read is an emulated device access (no vDSO).
        "tsc=reliable",
        f"lvsagent_shared={shared}",
        "lvsagent_distro=1",
    ]
    if keep:
        words.append(f"lvsagent_keep={keep}")
    return " ".join([*words, *extra])


def qemu_command(
    release: str, mode: str, initrd: Path, cmdline: str, mem: str, cpus: int,
    devices: Sequence[str] = (),
) -> list[str]:  # fmt: skip
    """QEMU's arguments: no network, no display, the console on stdout, then ``devices``.

    QEMU's default CPU model under KVM too: ``-cpu host`` fails to start on some nested hosts
    (an MSR it cannot set), and the KVM probe must boot what a run boots.
    """
    return [
        QEMU, "-accel", mode, "-m", mem, "-smp", str(cpus),
        "-nodefaults", "-no-user-config", "-display", "none", "-monitor", "none",
        "-no-reboot", "-serial", "stdio",
        "-kernel", f"/boot/vmlinuz-{release}", "-initrd", str(initrd), "-append", cmdline,
        *devices,
    ]  # fmt: skip


def file_systems(socket_path: Path, shared: Path, mem: str) -> list[str]:
    """The root over vhost-user virtiofs (its guest memory must be shared with virtiofsd),
    the shared directory over 9p."""
    return [
        "-object", f"memory-backend-memfd,id=mem,size={mem},share=on",
        "-machine", "memory-backend=mem",
        "-chardev", f"socket,id=root,path={socket_path}",
        "-device", "vhost-user-fs-pci,chardev=root,tag=root",
        "-fsdev", f"local,id=shared,path={shared},security_model=none",
        "-device", "virtio-9p-pci,fsdev=shared,mount_tag=shared",
    ]  # fmt: skip


def virtiofsd_command(mountpoint: Path, socket_path: Path) -> list[str]:
    """virtiofsd serving a read-only bind mount of / made in its own mount namespace."""
    script = (
        'mount --bind / "$1" && mount -o remount,bind,ro "$1" && '
        'exec "$2" --socket-path="$3" -o source="$1",cache=always,sandbox=chroot'
    )
    return [
        "unshare", "--mount", "--propagation", "private", "--", "sh", "-c", script,
        "virtiofsd", str(mountpoint), VIRTIOFSD, str(socket_path),
    ]  # fmt: skip


def _child_setup(libc: ctypes.CDLL) -> Callable[[], None]:
    """Before exec: the child dies with the thread that started it (PR_SET_PDEATHSIG)."""

    def setup() -> None:
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)

    return setup


def _spawn(argv: list[str], stderr: int = subprocess.STDOUT) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr,
        start_new_session=True, preexec_fn=_child_setup(ctypes.CDLL(None)),
    )  # fmt: skip


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGKILL)
    proc.wait()
    for pipe in (proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()


def _read_text(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return ""


def boot(
    argv: list[str], timeout: float, boot_timeout: float, output: Path | None = None,
    stream: TextIO | None = None,
) -> tuple[Console, str | None]:  # fmt: skip
    """Run QEMU until it exits (stop reason None), a deadline passes or a fatal console line
    appears (the reason); QEMU is gone on return. ``output`` is copied to ``stream`` as it
    grows (a 0.5 s tick for display only: nothing waits on it)."""
    console = Console()
    proc = _spawn(argv)
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    started = time.monotonic()
    shown = 0
    stopped: str | None = None
    try:
        while True:
            now = time.monotonic()
            if now - started >= timeout:
                stopped = f"the command did not finish within {timeout:g} s"
                break
            if not console.started and now - started >= boot_timeout:
                stopped = f"the guest did not start its init within {boot_timeout:g} s"
                break
            ready, _, _ = select.select([fd], [], [], min(0.5, started + timeout - now))
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    break  # QEMU exited
                console.feed(chunk.decode("utf-8", errors="replace"))
                if console.fatal:
                    stopped = console.fatal
                    break
            if output is not None and stream is not None:
                shown = _show(output, stream, shown)
    finally:
        _stop(proc)
        if output is not None and stream is not None:
            _show(output, stream, shown)
    return console, stopped


def _show(output: Path, stream: TextIO, shown: int) -> int:
    data = _read_text(output)
    if len(data) > shown:
        stream.write(data[shown:])
        stream.flush()
    return max(shown, len(data))


def _start_virtiofsd(mountpoint: Path, socket_path: Path) -> subprocess.Popen[bytes]:
    """Start virtiofsd and wait (bounded) for its socket; raise UmlError with its words."""
    proc = _spawn(virtiofsd_command(mountpoint, socket_path))
    assert proc.stdout is not None
    said = b""
    deadline = time.monotonic() + 10.0
    while VIRTIOFSD_READY.encode() not in said:
        left = deadline - time.monotonic()
        ready, _, _ = select.select([proc.stdout], [], [], max(0.0, left))
        chunk = os.read(proc.stdout.fileno(), 4096) if ready else b""
        if not chunk:
            _stop(proc)
            raise UmlError(f"virtiofsd did not start: {said.decode(errors='replace').strip()}")
        said += chunk
    return proc


def kvm_runs_this_kernel(release: str, initrd: Path) -> bool:
    """Boot ``release`` under KVM to its initramfs, which prints PROBE_OK and powers off."""
    with tempfile.TemporaryDirectory(prefix="lvsagent-distro-probe-") as tmp:
        cmdline = kernel_command_line(Path(tmp), extra=["lvsagent_probe=1"])
        argv = qemu_command(release, "kvm", initrd, cmdline, "256M", 1)
        console, _ = boot(argv, accel.PROBE_TIMEOUT, accel.PROBE_TIMEOUT)
        return accel.PROBE_OK in console.text


# ----- one run ------------------------------------------------------------------------------


def _sweep_stale(parent: Path) -> None:
    """Remove run dirs of runners that were SIGKILLed (their owner pid is gone)."""
    for candidate in parent.glob("lvsagent-distro-*"):
        try:
            pid_text, started = (candidate / OWNER_FILE).read_text().split()
        except (OSError, ValueError):
            continue
        if _start_time(int(pid_text)) != started:
            shutil.rmtree(candidate, ignore_errors=True)


def _keep_dir(workdir: str) -> str | None:
    """A work tree under /tmp or /run must be bound back over the guest's tmpfs (guest-init.sh
    mounts the same ones as the kernel lab's init)."""

    def under(mounts: Sequence[str]) -> bool:
        return any(workdir == m or workdir.startswith(m + "/") for m in mounts)

    if under(GUEST_PRIVATE_MOUNTS) and (
        not under(GUEST_KEEPABLE_MOUNTS)
        or workdir in GUEST_KEEPABLE_MOUNTS
        or any(c.isspace() for c in workdir)
    ):
        raise ValueError(f"cwd {workdir}: the guest mounts its own tmpfs there; use another dir")
    return workdir if under(GUEST_KEEPABLE_MOUNTS) else None


def run_in_guest(
    cmd: Sequence[str],
    timeout: float,
    *,
    cwd: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    stream: TextIO | None = None,
    mem: str = "1G",
    cpus: int = 2,
    boot_timeout: float | None = None,
    cmdline_extra: Sequence[str] = (),
    results: Path | None = None,
) -> tuple[int, str]:
    """Boot Debian's kernel, run ``cmd`` in ``cwd`` with ``env``, power off.

    Returns the command's status and output. ``timeout`` covers boot, run and power-off;
    ``boot_timeout`` (default: 30 s under KVM, 180 s under TCG) bounds the time to init.
    ``results``: a directory that gets the run's modules-at-boot and console.log. Raises
    KernelMissing, BootFailed or GuestTimeout (UmlError).
    """
    release = kernel_release()
    workdir = os.path.abspath(os.fspath(cwd) if cwd is not None else os.getcwd())
    keep = _keep_dir(workdir)
    script = render_run_script(cmd, workdir, dict(os.environ if env is None else env))
    parent = Path(os.environ.get("LVSAGENT_DISTRO_SHARED_PARENT", DEFAULT_SHARED_PARENT))
    _sweep_stale(parent)
    with tempfile.TemporaryDirectory(prefix="lvsagent-distro-", dir=parent) as name:
        run_dir = Path(name)
        shared, mountpoint, socket_path = run_dir / "shared", run_dir / "root", run_dir / "sock"
        if not _SAFE_CMDLINE_PATH.match(str(shared)):
            raise UmlError(f"{shared}: the shared dir path must be [A-Za-z0-9_/-] only")
        (run_dir / OWNER_FILE).write_text(f"{os.getpid()} {_start_time(os.getpid())}\n")
        shared.mkdir()
        mountpoint.mkdir()
        shutil.copyfile(GUEST_INIT, shared / "init")
        (shared / "init").chmod(0o755)
        (shared / "run.sh").write_text(script)
        initrd = run_dir / "initrd"
        initrd.write_bytes(initramfs.build(release))
        mode = accel.choose(release, lambda: kvm_runs_this_kernel(release, initrd), sys.stderr)
        cmdline = kernel_command_line(shared, keep, cmdline_extra)
        virtiofsd = _start_virtiofsd(mountpoint, socket_path)
        try:
            devices = file_systems(socket_path, shared, mem)
            argv = qemu_command(release, mode, initrd, cmdline, mem, cpus, devices)
            limit = boot_timeout or (30.0 if mode == "kvm" else 180.0)
            console, stopped = boot(argv, timeout, limit, shared / "output", stream)
        finally:
            _stop(virtiofsd)
        if results is not None:
            results.mkdir(parents=True, exist_ok=True)
            (results / "console.log").write_text(console.text)
            if (shared / "modules-at-boot").exists():
                shutil.copyfile(shared / "modules-at-boot", results / "modules-at-boot")
        output = _read_text(shared / "output")
        status_text = _read_text(shared / "status").strip()
        if status_text.isdigit():
            return int(status_text), output
        if stopped is not None and console.started and not console.fatal:
            raise GuestTimeout(f"{stopped} ({mode}); killed QEMU", output, console.tail())
        reason = (
            console.fatal
            or _read_text(shared / "init-error").strip()
            or stopped
            or "QEMU exited before the command's status was written"
        )
        raise BootFailed(f"the Debian kernel guest failed ({mode}): {reason}", console.tail())


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: run one command in the guest and exit with its status (124 on timeout)."""
    parser = argparse.ArgumentParser(
        prog="python -m tests.distro.qemu",
        description="Run a command in Debian's packaged kernel under QEMU, on this root.",
    )
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds (default 600)")
    parser.add_argument("--mem", default="1G", help="guest memory (default 1G)")
    parser.add_argument("--cpus", type=int, default=2, help="guest CPUs (default 2)")
    parser.add_argument("--results", type=Path, help="copy modules-at-boot and console.log here")
    parser.add_argument("cmd", nargs=argparse.REMAINDER, help="-- CMD ARGS...")
    args = parser.parse_args(argv)
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        parser.error("no command given (usage: ... -- CMD ARGS...)")
    return run_for_cli(
        "distro",
        lambda: run_in_guest(
            cmd,
            args.timeout,
            stream=sys.stdout,
            mem=args.mem,
            cpus=args.cpus,
            results=args.results,
        ),
    )


if __name__ == "__main__":
    sys.exit(main())
