"""Tests of the lab runner (tests/kernel/uml.py), run on the HOST: each boots the lab kernel.

Why: every kernel test trusts the runner to hand back the real exit status and output, to
carry arguments, environment and cwd across intact, and to leave no process or directory
behind, even on a timeout. Without a built kernel these skip, except under CI=true, where
they fail with the reason (the lab must run there).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
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
