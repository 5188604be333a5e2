"""Tests of the lab runner (tests/kernel/uml.py), run on the HOST: each boots the lab kernel.

Why: every kernel test trusts the runner to hand back the real exit status and output, to
carry arguments, environment and cwd across intact, and to leave no process or directory
behind, even on a timeout. Without a built kernel these skip, except under CI=true, where
they fail with the reason (the lab must run there).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.kernel import uml

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(uml.inside_lab(), reason="needs the host: no UML in UML")


@pytest.fixture(scope="module")
def kernel() -> Path:
    """The built lab kernel; a skip locally, a failure under CI=true, if it is missing."""
    try:
        return uml.kernel_path()
    except uml.KernelMissing as exc:
        if uml.lab_required():
            pytest.fail(f"CI=true and the kernel lab cannot boot: {exc}")
        pytest.skip(str(exc))


def _uml_processes(marker: str) -> list[str]:
    """Host processes whose command line mentions ``marker`` (a run's shared dir)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if marker in cmdline:
                found.append(f"{entry.name}: {cmdline}")
    return found


def test_status_and_output_come_back_without_console_noise(kernel: Path) -> None:
    status, output = uml.run_in_uml(
        ["sh", "-c", "echo out; echo err >&2; exit 7"], timeout=60, kernel=kernel
    )
    assert (status, output) == (7, "out\nerr\n")


def test_arguments_environment_and_cwd_cross_intact(kernel: Path) -> None:
    tricky = ["it's", 'say "hi"', "$HOME `id`", "two\nlines", "", "*"]
    env = {"PATH": "/usr/bin:/bin", "LVSAGENT_TRICKY": "a b'c\"$d\n", "EMPTY": ""}
    code = "import json, os, sys; print(json.dumps([sys.argv[1:], dict(os.environ), os.getcwd()]))"
    status, output = uml.run_in_uml(
        ["/usr/bin/python3", "-c", code, *tricky],
        timeout=60,
        cwd=ROOT / "tests",
        env=env,
        kernel=kernel,
    )
    assert status == 0, output
    import json

    args, seen_env, cwd = json.loads(output)
    assert args == tricky
    assert {k: v for k, v in seen_env.items() if k != "LC_CTYPE"} == env
    assert cwd == str(ROOT / "tests")


def test_guest_runs_the_lab_kernel_with_ipvs_and_nft_nat(kernel: Path) -> None:
    status, output = uml.run_in_uml(
        [
            "sh",
            "-c",
            "ip netns add t && ip netns exec t sh -c "
            "'ip link set lo up && ipvsadm -A -t 192.0.2.1:80 && nft add table ip x && "
            'nft add chain ip x p "{ type nat hook prerouting priority -100; }"\'',
        ],
        timeout=60,
        kernel=kernel,
    )
    assert status == 0, output


def test_timeout_kills_the_guest_and_cleans_up(kernel: Path, tmp_path: Path) -> None:
    with pytest.raises(uml.UmlTimeout) as caught:
        uml.run_in_uml(
            ["sh", "-c", "sleep 300 & echo started; sleep 300"],
            timeout=5,
            kernel=kernel,
            env={"PATH": "/usr/bin:/bin"},
        )
    assert "did not finish within 5 s" in str(caught.value)
    assert caught.value.output == "started\n"
    assert not caught.value.shared.exists()
    assert _uml_processes(str(caught.value.shared)) == []


def test_a_kernel_that_reports_nothing_is_a_boot_failure() -> None:
    with pytest.raises(uml.BootFailed, match="without reporting the command's status"):
        uml.run_in_uml(["/bin/true"], timeout=30, kernel="/bin/false")


def test_missing_kernel_says_how_to_build_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("LVSAGENT_CACHE", str(tmp_path))
    monkeypatch.delenv("LVSAGENT_UML_KERNEL", raising=False)
    with pytest.raises(uml.KernelMissing, match=re.escape("tests/kernel/build-uml.sh")):
        uml.run_in_uml(["/bin/true"], timeout=30)


def test_cwd_the_guest_cannot_see_is_refused() -> None:
    with pytest.raises(ValueError, match="own tmpfs"):
        uml.run_in_uml(["/bin/true"], timeout=30, cwd="/tmp", kernel="/bin/false")


def test_cli_exits_with_the_command_status(kernel: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.kernel.uml",
            "--timeout",
            "60",
            "--kernel",
            str(kernel),
            "--",
            "sh",
            "-c",
            "echo hello; exit 3",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert (done.returncode, done.stdout) == (3, "hello\n"), done.stderr


def test_guests_run_at_once_each_printed_whole_with_the_worst_status(kernel: Path) -> None:
    """tests/kernel/guests.py: two guests, each group's words appended to the command; both
    outputs come back whole, and the exit status is the failed guest's."""
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "tests.kernel.guests", "--timeout", "60", "--",
         "sh", "-c", 'sleep 3; echo "group $0"; exit "$1"', "--", "one", "0", "--", "two", "5"],
        cwd=ROOT, capture_output=True, text=True, check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    took = time.monotonic() - started
    assert done.returncode == 5, done.stdout + done.stderr
    assert "group one\n" in done.stdout and "group two\n" in done.stdout, done.stdout
    assert "guest 1: exit 0, guest 2: exit 5" in done.stdout, done.stdout
    print(f"two guests with a 3 s command each: {took:.1f} s")


def test_guests_status_a_failure_beats_a_skip_beats_a_pass() -> None:
    from tests.kernel.guests import split, worst

    assert split(["--", "a", "b", "--", "c"]) == [["a", "b"], ["c"]]
    assert worst([0, 0]) == 0
    assert worst([0, uml.EXIT_SKIP]) == uml.EXIT_SKIP
    assert worst([uml.EXIT_SKIP, 1, 0]) == 1


def test_cli_without_kernel_skips_locally_and_fails_under_ci(tmp_path: Path) -> None:
    base = {k: v for k, v in os.environ.items() if k not in ("CI", "LVSAGENT_UML_KERNEL")}
    base.update(LVSAGENT_CACHE=str(tmp_path), PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "tests.kernel.uml", "--", "/bin/true"]
    local = subprocess.run(cmd, cwd=ROOT, env=base, capture_output=True, text=True, check=False)
    ci = subprocess.run(
        cmd, cwd=ROOT, env={**base, "CI": "true"}, capture_output=True, text=True, check=False
    )
    assert (local.returncode, ci.returncode) == (uml.EXIT_SKIP, 1)
    assert "build-uml.sh" in local.stderr and "build-uml.sh" in ci.stderr


def test_a_work_tree_under_tmp_stays_visible_in_the_guest(kernel: Path) -> None:
    """CI may clone into /tmp, where the guest mounts its own tmpfs: the tree is kept."""
    with tempfile.TemporaryDirectory(prefix="lvsagent-tree-", dir="/tmp") as tree:
        Path(tree, "marker").write_text("here\n")
        status, output = uml.run_in_uml(["/bin/cat", "marker"], timeout=60, cwd=tree)
    assert (status, output) == (0, "here\n")


# ----- a dead guest is reported at once, with its reason -------------------------------------

# The run's own deadline in the tests below: a runner that waited for it instead of noticing
# the dead guest would take this long, and the assertions say it did not.
LONG_TIMEOUT = 600.0


def test_a_guest_whose_init_fails_is_reported_at_once(kernel: Path) -> None:
    """init= on the kernel command line names no program: the kernel panics at once."""
    started = time.monotonic()
    with pytest.raises(uml.BootFailed) as caught:
        uml.run_in_uml(
            ["/bin/true"], LONG_TIMEOUT, kernel=kernel, kernel_args=["init=/nonexistent-init"]
        )
    took = time.monotonic() - started
    assert "the guest kernel panicked" in str(caught.value)
    assert "Kernel panic" in caught.value.console
    assert took < LONG_TIMEOUT / 10, f"reported after {took:.0f} s, not at once"


def test_a_guest_that_never_reaches_init_is_reported(kernel: Path, tmp_path: Path) -> None:
    """An init that hangs before its first act (the booted marker) is a dead guest."""
    init = tmp_path / "init"
    init.write_text("#!/bin/sh\nexec sleep 100000\n")
    init.chmod(0o755)
    with pytest.raises(uml.BootFailed, match="never reached its init script within 5 s"):
        uml.run_in_uml(["/bin/true"], LONG_TIMEOUT, kernel=kernel, init=init, boot_timeout=5)


# ----- the lab kernel on every CPU -----------------------------------------------------------
#
# What differs between CPUs, for UML, is the size of the host's XSAVE area, which the host's
# ptrace insists on (11008 bytes with AMX). xsave-shim.c gives UML the ptrace of a host with
# another size, so every machine runs what an AMX machine runs.

SHIM_SOURCE = Path(__file__).with_name("xsave-shim.c")
STOCK_UML = Path("/usr/bin/linux.uml")  # Debian's user-mode-linux (tools/host-deps.sh)
AMX_XSAVE = 11008  # x87..AVX-512, PKRU, then XTILECFG and XTILEDATA

# Floating-point work in three processes at once: the registers of each survive the
# guest's context switches only if UML saves and restores them whole.
FP_WORK = (
    "import math, sys\n"
    "total = math.fsum(math.sin(i * 0.001) * math.sqrt(i) for i in range(400_000))\n"
    "print(repr(total))\n"
)


@pytest.fixture(scope="module")
def xsave_shim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("shim") / "xsave-shim.so"
    subprocess.run(
        ["gcc", "-shared", "-fPIC", "-O2", "-Wall", "-o", str(out), str(SHIM_SOURCE), "-ldl"],
        check=True,
    )
    return out


def _as_host_with_xsave(shim: Path, size: int) -> dict[str, str]:
    return {"LD_PRELOAD": str(shim), "LVSAGENT_FAKE_XSAVE": str(size)}


def test_the_shim_gives_stock_uml_the_amx_hosts_failure(xsave_shim: Path) -> None:
    """Debian's own linux.uml dies on AMX hosts; under the shim it dies the same way here,
    and the runner says, within seconds, that the kernel cannot run on this CPU."""
    started = time.monotonic()
    with pytest.raises(uml.BootFailed) as caught:
        uml.run_in_uml(
            ["/bin/true"],
            LONG_TIMEOUT,
            kernel=STOCK_UML,
            host_env=_as_host_with_xsave(xsave_shim, AMX_XSAVE),
        )
    took = time.monotonic() - started
    assert "cannot run on this CPU" in str(caught.value)
    assert "ptrace set fp regs failed, errno = 14" in str(caught.value)
    assert took < LONG_TIMEOUT / 10, f"reported after {took:.0f} s, not at once"


@pytest.mark.parametrize("size", [AMX_XSAVE, 16384])
def test_the_lab_kernel_boots_whatever_the_hosts_xsave_size(
    kernel: Path, xsave_shim: Path, size: int
) -> None:
    expected = subprocess.run(
        ["/usr/bin/python3", "-c", FP_WORK], capture_output=True, text=True, check=True
    ).stdout
    script = f"for i in 1 2 3; do /usr/bin/python3 -c {shlex.quote(FP_WORK)} & done; wait"
    status, output = uml.run_in_uml(
        ["sh", "-c", script],
        timeout=180,
        kernel=kernel,
        host_env=_as_host_with_xsave(xsave_shim, size),
    )
    assert status == 0, output
    assert output.splitlines() == expected.splitlines() * 3
