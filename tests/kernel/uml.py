"""Run a command inside the kernel lab: user-mode Linux with IPVS and nf_tables.

Why: the host kernel has no IPVS, so the tests that need the real IPVS and nf_tables code run
inside a user-mode Linux (UML) kernel built by ``tests/kernel/build-uml.sh``. The guest boots
this machine's own root filesystem through hostfs, so the repository, the venv and every
installed tool are there at the same paths, and one command runs as PID 1's only child.

    python -m tests.kernel.uml [--timeout S] [--mem 1G] -- CMD ARGS...
    status, output = run_in_uml([sys.executable, "-m", "pytest", "tests/kernel"], timeout=600)

How it talks to the guest: a fresh host directory under /var/tmp (not /tmp, /run or /dev: the
guest mounts its own there) is passed on the kernel command line. It holds ``init`` (a copy
of uml-init.sh), ``run.sh`` (the cwd, the environment and the command, shell-quoted, so that
nothing but a plain path crosses the kernel command line), and receives ``output`` (the
command's stdout and stderr), ``status`` and ``console.log`` (the kernel's console, kept
apart from the command's output). The directory is removed afterwards.

A dead guest is reported in seconds, not at the deadline: the runner follows the console and
fails at once on a kernel panic (naming the CPU when the host refused UML's registers), and when
init has not written ``booted`` into the shared directory within ``boot_timeout``.

It never hangs: the host waits on a pidfd with a deadline. UML runs each guest address space
and helper as a host process, so it is started as PID 1 of a PID namespace of its own (through
``unshare``, the PID started here): on timeout, interrupt or error UML is SIGKILLed and the
kernel kills every other process of that namespace with it; the runner returns only once they
are all gone. If the runner itself is SIGKILLed, PDEATHSIG does the same, and the next run
removes the shared directory it left.

Call the Python that the command needs by its real path: a pyenv shim costs ~3 s a call in UML.
"""

from __future__ import annotations

import argparse
import codecs
import contextlib
import ctypes
import hashlib
import os
import re
import resource
import select
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

HERE = Path(__file__).resolve().parent
INIT_SCRIPT = HERE / "uml-init.sh"
CONFIG_FRAGMENT = HERE / "uml.config"
PATCH_DIR = HERE / "uml-patches"  # build-uml.sh applies these; part of the key
BUILD_SCRIPT = "tests/kernel/build-uml.sh"
SOURCE_PACKAGE = "linux-source-6.1"
# The guest mounts tmpfs on /tmp, /run and /dev/shm, so the shared directory lives elsewhere.
DEFAULT_SHARED_PARENT = "/var/tmp"
# Paths that cross the kernel command line: no spaces, and no dot (a dotted name=value
# parameter is taken for a module parameter and not handed to init).
_SAFE_CMDLINE_PATH = re.compile(r"^/[A-Za-z0-9_/-]+$")
_MEM = re.compile(r"^[1-9][0-9]*[KMG]?$")
# What uml-init.sh mounts afresh in the guest: host files below these are not visible there.
GUEST_PRIVATE_MOUNTS = ("/tmp", "/run", "/dev", "/proc", "/sys")
# Of those, where a work tree may live: uml-init.sh bind-mounts it back (lvsagent_keep=).
GUEST_KEEPABLE_MOUNTS = ("/tmp", "/run")
OWNER_FILE = "owner"
BOOTED_FILE = "booted"  # init's first act; its absence after boot_timeout is a dead guest
BOOT_TIMEOUT = 60.0  # the lab's init starts ~1.5 s after UML does; far more under load
WATCH_INTERVAL = 0.25  # how often the console and the marker are looked at while waiting
CONSOLE_TAIL_LINES = 30
EXIT_TIMEOUT = 124
EXIT_SKIP = 77


class UmlError(Exception):
    """The lab could not run the command; the message says why and what to do."""


class KernelMissing(UmlError):
    """No lab kernel is built for the current uml.config and linux-source version."""


class BootFailed(UmlError):
    """The guest died or never started: UML ended without the command's status, the kernel
    panicked, or init never ran. The message says why and what to do."""

    def __init__(self, message: str, console: str) -> None:
        super().__init__(message)
        self.console = console


class GuestTimeout(UmlError):
    """A guest (this lab's, or tests/distro's QEMU) did not finish in time and was killed."""

    def __init__(self, message: str, output: str, console: str) -> None:
        super().__init__(message)
        self.output = output
        self.console = console


class UmlTimeout(GuestTimeout):
    """The guest did not power off in time; it was killed with every process it had."""

    def __init__(self, message: str, output: str, console: str, shared: Path) -> None:
        super().__init__(message, output, console)
        self.shared = shared  # already removed; names the run in ps and logs


def cache_root() -> Path:
    """Where build-uml.sh keeps kernels: outside the clone, so CI builds once per machine."""
    return Path(os.environ.get("LVSAGENT_CACHE", "/var/cache/lvsagent"))


def _source_version() -> str:
    """The installed linux-source-6.1 version, part of the cache key as in build-uml.sh."""
    try:
        done = subprocess.run(
            ["dpkg-query", "-W", "-f=${Version}", SOURCE_PACKAGE],
            capture_output=True,
            text=True,
            check=False,
        )
    except FileNotFoundError as exc:
        raise KernelMissing(f"dpkg-query not found ({exc}); is this Debian?") from exc
    if done.returncode != 0 or not done.stdout:
        raise KernelMissing(f"{SOURCE_PACKAGE} is not installed; run {BUILD_SCRIPT}")
    return done.stdout


def cache_key() -> str:
    """The cache key: must stay byte for byte what build-uml.sh computes."""
    digest = hashlib.sha256(CONFIG_FRAGMENT.read_bytes())
    for patch in sorted(PATCH_DIR.glob("*.patch")):  # build-uml.sh globs with LC_ALL=C
        digest.update(patch.read_bytes())
    digest.update(f"{SOURCE_PACKAGE} {_source_version()}\n".encode())
    return digest.hexdigest()[:16]


def kernel_path() -> Path:
    """The lab kernel for this checkout: $LVSAGENT_UML_KERNEL, else the cached build.

    Raises KernelMissing, saying how to build it, when there is none.
    """
    override = os.environ.get("LVSAGENT_UML_KERNEL")
    path = Path(override) if override else cache_root() / f"uml-{cache_key()}" / "linux"
    if not os.access(path, os.X_OK):
        raise KernelMissing(
            f"no UML kernel at {path}; build it with {BUILD_SCRIPT} (as root; 5-15 min, once"
            " per machine)"
        )
    return path


def inside_lab() -> bool:
    """True in a guest booted by run_in_uml (its kernel command line names the shared dir)."""
    try:
        return "lvsagent_shared=" in Path("/proc/cmdline").read_text()
    except OSError:
        return False


def lab_only(test_file: str) -> Any:
    """The skip mark of a test module that only runs inside the lab, naming how to run it there.

    Under ``make test-kernel`` the module runs in the guest, where the mark does nothing; a
    plain pytest on the host skips it with the command that would run it.
    """
    import pytest  # the runner itself must work without pytest

    module = Path(test_file).resolve().relative_to(Path(__file__).resolve().parents[2])
    return pytest.mark.skipif(
        not inside_lab(),
        reason="runs inside the kernel lab: python -m tests.kernel.uml -- "
        f"$PWD/.venv/bin/python -m pytest -s {module}",
    )


def lab_required() -> bool:
    """Under CI the lab must run: inability to boot is a failure there, never a skip."""
    return os.environ.get("CI", "").lower() == "true"


def _memory_dir(fallback: Path) -> Path:
    """Where UML puts its (unlinked) memory file: RAM-backed /dev/shm unless it is unusable.

    UML maps that file executable, so a noexec mount will not do.
    """
    shm = Path("/dev/shm")
    try:
        usable = (
            shm.is_dir()
            and os.access(shm, os.W_OK | os.X_OK)
            and not os.statvfs(shm).f_flag & os.ST_NOEXEC
        )
    except OSError:
        usable = False
    return shm if usable else fallback


def render_run_script(cmd: Sequence[str], cwd: str, env: Mapping[str, str]) -> str:
    """The guest-side script: cd, then exec the command with exactly ``env``.

    ``env -i`` replaces the environment init got from the kernel (HOME=/, TERM=linux) with
    the caller's, and every word is shell-quoted, so any argument or value survives.
    """
    if not cmd:
        raise ValueError("empty command")
    if "=" in cmd[0]:
        raise ValueError(
            f"the command name {cmd[0]!r} contains '=' (env would take it as a variable)"
        )
    assignments = [
        f"{name}={value}" for name, value in sorted(env.items()) if name and "=" not in name
    ]
    words = ["exec", "/usr/bin/env", "-i", *assignments, *cmd]
    return (
        "# Written by tests/kernel/uml.py; run by uml-init.sh inside the UML guest.\n"
        f"cd -- {shlex.quote(cwd)} || exit 125\n"
        + " ".join(shlex.quote(word) for word in words)
        + "\n"
    )


def kernel_command_line(shared: Path, mem: str, keep: str | None = None) -> list[str]:
    """UML's arguments: hostfs root, our init, consoles quiet except con0 on our log.

    ``keep``: a host directory under /tmp or /run (where the guest mounts tmpfs) that must
    stay visible at its own path, because the work tree lives there (a CI clone in /tmp).
    """
    extra = [f"lvsagent_keep={keep}"] if keep else []
    return [
        *extra,
        f"mem={mem}",
        "root=/dev/root",
        "rootfstype=hostfs",
        "rootflags=/",
        "rw",
        f"init={shared / 'init'}",
        f"lvsagent_shared={shared}",
        # con0 writes to UML's stdout (console.log) and reads nothing; no other consoles,
        # so UML opens no host ptys.
        "con0=null,fd:1",
        "con=null",
        "ssl=null",
        # UML's pid file and mconsole socket go into the shared dir instead of ~/.uml.
        f"uml_dir={shared}",
        "umid=lab",
    ]


_PR_SET_PDEATHSIG = 1
# UML runs as PID 1 of a PID namespace of its own: when it dies, however it dies, the kernel
# kills every helper process it forked. unshare itself dies with us (PDEATHSIG, kept across
# exec) and takes UML with it (--kill-child), so even a SIGKILLed runner leaves nothing.
_PID_NAMESPACE = ["unshare", "--pid", "--fork", "--kill-child=SIGKILL", "--"]


def _child_setup_for(libc: ctypes.CDLL) -> Callable[[], None]:
    """What the forked UML runs before exec (libc is loaded before the fork, not in the child).

    No core dumps (a panicking UML dumps its whole memory into the shared dir), and SIGKILL
    if the thread that started it dies without cleaning up.
    """

    def setup() -> None:
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)

    return setup


def _wait_exit(pid: int, timeout: float) -> bool:
    """Wait until ``pid`` exits (it is left unreaped) or ``timeout`` passes; True if it exited."""
    fd = os.pidfd_open(pid)
    try:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        return bool(poller.poll(max(0.0, timeout) * 1000.0))
    finally:
        os.close(fd)


def _children(pid: int) -> list[int]:
    """PIDs whose parent is ``pid`` (read from /proc: works without CONFIG_PROC_CHILDREN)."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 1 and fields[1] == str(pid):
            found.append(int(entry.name))
    return found


def _stop(proc: subprocess.Popen[bytes], grace: float = 10.0) -> int:
    """SIGKILL UML and reap ``proc`` (unshare); return once every guest process is gone.

    UML is the init of its PID namespace: when it dies the kernel kills and reaps everything
    in that namespace before UML's own exit completes, so waiting for UML's pidfd is waiting
    for all of it. Also run after a normal exit, when there is nothing left to kill.
    """
    uml_pids = _children(proc.pid)
    for pid in uml_pids:
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            continue
        try:
            signal.pidfd_send_signal(fd, signal.SIGKILL)
            select.select([fd], [], [], grace)
        finally:
            os.close(fd)
    # unshare's group: its leader is still unreaped, so the group id is still ours.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    return proc.wait()


def _start_time(pid: int) -> str | None:
    """A process's start time in clock ticks: with the PID, an identity that reuse cannot fake."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rfind(")") + 2 :].split()[19]


def _sweep_stale(parent: Path) -> None:
    """Remove shared dirs left by runners that were SIGKILLed (nothing else can remove them).

    Each dir names its owner (pid and start time) in OWNER_FILE; a dir whose owner is gone
    is stale. Dirs of live runners, and anything without that file, are left alone.
    """
    for candidate in parent.glob("lvsagent-uml-*"):
        try:
            pid_text, started = (candidate / OWNER_FILE).read_text().split()
        except (OSError, ValueError):
            continue
        if _start_time(int(pid_text)) != started:
            shutil.rmtree(candidate, ignore_errors=True)


_PANIC = re.compile(r"Kernel panic - not syncing: (?P<why>.*)")
# UML's words when the host refuses its floating-point registers: the host's XSAVE area is
# not the size this UML sends (a CPU with AMX, for a UML without the lab's patch).
_FP_REFUSED = re.compile(
    r"ptrace (?:set|get) fp regs failed.*|.*fp_registers (?:returned|failed).*"
)


def _cpu_note() -> str:
    """What this CPU has that UML's register handling depends on, for a failure message."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "this CPU"
    return "this CPU (it has AMX: amx_tile)" if " amx_tile" in flags else "this CPU"


def console_verdict(console: str, kernel: str) -> str | None:
    """Why the guest is dead, from what its kernel printed so far; None while it looks alive.

    A panic is final: UML may linger after one, printing nothing more, until the deadline.
    """
    panic = _PANIC.search(console)
    if panic is None:
        return None
    lines = console[: panic.start()].splitlines()
    fp = next((m.group(0).strip() for line in lines if (m := _FP_REFUSED.search(line))), None)
    if fp is not None:
        return (
            f"the lab kernel cannot run on {_cpu_note()}: the host refused UML's floating-point"
            f" registers ({fp}); the host takes an XSAVE area of its own size only. The lab's"
            f" kernel carries a patch for that (tests/kernel/uml-patches): is {kernel} a kernel"
            f" that {BUILD_SCRIPT} built from this checkout?"
        )
    context = next((line.strip() for line in reversed(lines) if line.strip()), "")
    detail = f" (after: {context})" if context else ""
    return f"the guest kernel panicked: {panic.group('why').strip()}{detail}"


class _Deadline(Exception):
    """The run's deadline passed with the guest still running."""


def _watch_guest(
    pid: int,
    timeout: float,
    boot_timeout: float,
    console: Path,
    shared: Path,
    kernel: str,
    on_booted: Callable[[float], None] | None = None,
) -> str | None:
    """Wait for UML to exit (None), or raise _Deadline when ``timeout`` passes.

    Returns a reason as soon as the guest is known dead: a kernel panic on the console, or no
    ``booted`` marker from init within ``boot_timeout``. The console is read from where the
    last look ended, so a long run costs nothing per look. ``on_booted`` gets the seconds from
    start to the marker, once.
    """
    started = time.monotonic()
    deadline = started + timeout
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    seen, offset, booted = "", 0, False
    while True:
        remaining = deadline - time.monotonic()
        if _wait_exit(pid, min(WATCH_INTERVAL, max(0.0, remaining))):
            return None
        try:
            with console.open("rb") as f:
                f.seek(offset)
                chunk = f.read()
        except FileNotFoundError:
            chunk = b""
        if chunk:
            offset += len(chunk)
            seen += decoder.decode(chunk)
            if (reason := console_verdict(seen, kernel)) is not None:
                return reason
        if not booted and (shared / BOOTED_FILE).exists():
            booted = True
            if on_booted is not None:
                on_booted(time.monotonic() - started)
        if not booted and time.monotonic() - started > boot_timeout:
            return (
                f"the guest never reached its init script within {boot_timeout:g} s (no"
                f" {BOOTED_FILE} marker in {shared}); its console is below"
            )
        if time.monotonic() >= deadline:
            raise _Deadline


def _read_text(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return ""


def _tail(text: str, lines: int = CONSOLE_TAIL_LINES) -> str:
    return "\n".join(text.splitlines()[-lines:])


def _excerpt(text: str, lines: int = CONSOLE_TAIL_LINES) -> str:
    """The console around a panic (what led to it, not the stack dump after it), else its tail."""
    all_lines = text.splitlines()
    at = next((i for i, line in enumerate(all_lines) if _PANIC.search(line)), None)
    if at is None:
        return _tail(text, lines)
    return "\n".join(all_lines[max(0, at - lines + 5) : at + 5])


class _OutputTail(threading.Thread):
    """Copies the growing output file to ``sink`` while the guest runs (progress for humans).

    Polling is the only stdlib way to follow a file; it only displays, nothing waits on it.
    """

    def __init__(self, path: Path, sink: TextIO, done: threading.Event) -> None:
        super().__init__(name="uml-output-tail", daemon=True)
        self._path = path
        self._sink = sink
        self._done = done
        self._offset = 0
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def run(self) -> None:
        while True:
            finished = self._done.wait(0.2)
            self._copy()
            if finished:
                self._sink.write(self._decoder.decode(b"", final=True))
                self._sink.flush()
                return

    def _copy(self) -> None:
        try:
            with self._path.open("rb") as f:
                f.seek(self._offset)
                chunk = f.read()
        except FileNotFoundError:
            return
        if chunk:
            self._offset += len(chunk)
            self._sink.write(self._decoder.decode(chunk))
            self._sink.flush()


def run_in_uml(
    cmd: Sequence[str],
    timeout: float,
    mem: str = "1G",
    *,
    cwd: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    kernel: str | os.PathLike[str] | None = None,
    stream: TextIO | None = None,
    init: Path | None = None,
    kernel_args: Sequence[str] = (),
    host_env: Mapping[str, str] | None = None,
    boot_timeout: float = BOOT_TIMEOUT,
    on_booted: Callable[[float], None] | None = None,
) -> tuple[int, str]:
    """Boot the lab kernel, run ``cmd`` in ``cwd`` with ``env``, power off.

    Returns the command's exit status and its stdout+stderr. ``cwd`` and ``env`` default to
    this process's; ``timeout`` covers boot, run and power-off. ``stream``, if given, gets
    the output as it is written. ``init`` replaces uml-init.sh (it must honour the same
    contract, ``booted`` first); ``kernel_args`` go after the runner's own on UML's command
    line; ``host_env`` is added to the UML process's own environment on the host;
    ``on_booted`` is called with the boot's seconds when init has started. Raises
    KernelMissing, BootFailed (at once, for a dead guest) or UmlTimeout (UmlError).
    """
    if not _MEM.match(mem):
        raise ValueError(f"mem={mem!r}: want a size such as 512M or 1G")
    kernel_file = Path(kernel) if kernel is not None else kernel_path()
    workdir = os.path.abspath(os.fspath(cwd) if cwd is not None else os.getcwd())
    keep = None
    if any(workdir == m or workdir.startswith(m + "/") for m in GUEST_KEEPABLE_MOUNTS):
        if any(c.isspace() for c in workdir) or workdir in GUEST_KEEPABLE_MOUNTS:
            raise ValueError(
                f"cwd {workdir}: the guest mounts its own tmpfs there; use another dir"
            )
        keep = workdir
    elif any(workdir == m or workdir.startswith(m + "/") for m in GUEST_PRIVATE_MOUNTS):
        raise ValueError(f"cwd {workdir}: the guest mounts its own tmpfs there; use another dir")
    environment = dict(os.environ if env is None else env)
    script = render_run_script(cmd, workdir, environment)

    parent = Path(os.environ.get("LVSAGENT_UML_SHARED_PARENT", DEFAULT_SHARED_PARENT))
    _sweep_stale(parent)
    with tempfile.TemporaryDirectory(prefix="lvsagent-uml-", dir=parent) as shared_name:
        shared = Path(shared_name)
        if not _SAFE_CMDLINE_PATH.match(shared_name):
            raise UmlError(f"{shared_name}: the shared dir path must be [A-Za-z0-9_/-] only")
        (shared / OWNER_FILE).write_text(f"{os.getpid()} {_start_time(os.getpid())}\n")
        shutil.copyfile(init if init is not None else INIT_SCRIPT, shared / "init")
        (shared / "init").chmod(0o755)
        (shared / "run.sh").write_text(script)
        console_path = shared / "console.log"
        output_path = shared / "output"
        uml_env = {
            "PATH": "/usr/bin:/usr/sbin:/bin:/sbin",
            "TMPDIR": str(_memory_dir(shared)),
            "HOME": str(shared),
            **(host_env or {}),
        }
        done = threading.Event()
        tail = _OutputTail(output_path, stream, done) if stream is not None else None
        with console_path.open("wb") as console:
            proc = subprocess.Popen(
                [
                    *_PID_NAMESPACE,
                    str(kernel_file),
                    *kernel_command_line(shared, mem, keep),
                    *kernel_args,
                ],
                stdin=subprocess.DEVNULL,
                stdout=console,
                stderr=subprocess.STDOUT,
                cwd=shared,
                env=uml_env,
                start_new_session=True,
                preexec_fn=_child_setup_for(ctypes.CDLL(None, use_errno=True)),
            )
        dead: str | None = None
        try:
            if tail is not None:
                tail.start()
            try:
                dead = _watch_guest(
                    proc.pid,
                    timeout,
                    boot_timeout,
                    console_path,
                    shared,
                    str(kernel_file),
                    on_booted,
                )
                exited = dead is None
            except _Deadline:
                exited = False
        finally:
            # Also on success: no guest process outlives the run.
            uml_status = _stop(proc)
            done.set()
            if tail is not None:
                tail.join()

        output = _read_text(output_path)
        console_text = _read_text(console_path)
        if dead is not None:
            raise BootFailed(dead, _excerpt(console_text))
        if not exited:
            raise UmlTimeout(
                f"the UML guest did not finish within {timeout:g} s; killed it and all its"
                f" processes ({shared})",
                output,
                _tail(console_text),
                shared,
            )
        status_text = _read_text(shared / "status").strip()
        if not status_text.isdigit():
            reason = (
                _read_text(shared / "init-error").strip()
                or console_verdict(console_text, str(kernel_file))
                or f"UML exited with {uml_status} without reporting the command's status"
            )
            raise BootFailed(reason, _excerpt(console_text))
        return int(status_text), output


def _python_shim_warning(cmd: Sequence[str]) -> str | None:
    """Why a command is slow in UML: it goes through a pyenv shim."""
    resolved = shutil.which(cmd[0]) if cmd else None
    if resolved and "/.pyenv/shims/" in resolved:
        return (
            f"{cmd[0]} resolves to the pyenv shim {resolved} (~3 s a call in UML); "
            "pass the interpreter's real path, e.g. .venv/bin/python"
        )
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: run one command in the lab and exit with its status.

    124 on timeout; under CI=true any failure to boot is exit 1, elsewhere a missing kernel
    is exit 77 (skipped) with the build command.
    """
    parser = argparse.ArgumentParser(
        prog="python -m tests.kernel.uml",
        description="Run a command inside the user-mode Linux kernel lab (IPVS + nf_tables).",
    )
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds (default 600)")
    parser.add_argument("--mem", default="1G", help="guest memory (default 1G)")
    parser.add_argument("--kernel", help="UML binary (default: the cached build)")
    parser.add_argument("cmd", nargs=argparse.REMAINDER, help="-- CMD ARGS...")
    args = parser.parse_args(argv)
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        parser.error("no command given (usage: ... -- CMD ARGS...)")
    if warning := _python_shim_warning(cmd):
        print(f"uml: warning: {warning}", file=sys.stderr)

    return run_for_cli(
        "uml",
        lambda: run_in_uml(cmd, args.timeout, args.mem, kernel=args.kernel, stream=sys.stdout),
    )


def run_for_cli(tag: str, run: Callable[[], tuple[int, str]]) -> int:
    """A runner's command line: the command's status, or the runner's failure said on stderr.

    124 on timeout; a missing kernel is exit 77 (skipped) with what to do, but exit 1 under
    CI=true, where the lab must run; any other failure to boot or run is exit 1. Shared by
    this lab and tests/distro's QEMU runner.
    """
    # A TERM must unwind through the runner's cleanup, which kills the guest.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    started = time.monotonic()
    try:
        status, _ = run()
    except KernelMissing as exc:
        if lab_required():
            print(f"{tag}: FAILED (CI=true): {exc}", file=sys.stderr)
            return 1
        print(f"{tag}: SKIPPED: {exc}", file=sys.stderr)
        return EXIT_SKIP
    except GuestTimeout as exc:
        print(f"{tag}: TIMEOUT: {exc}\n--- console (tail) ---\n{exc.console}", file=sys.stderr)
        return EXIT_TIMEOUT
    except BootFailed as exc:
        print(f"{tag}: BOOT FAILED: {exc}\n--- console (tail) ---\n{exc.console}", file=sys.stderr)
        return 1
    except (UmlError, OSError, ValueError) as exc:
        print(f"{tag}: FAILED: {exc}", file=sys.stderr)
        return 1
    print(f"{tag}: exit {status} after {time.monotonic() - started:.1f} s", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
