"""`make demo`: the seed's two-box LVS with lvsagent on both boxes, in the kernel lab.

The host kernel has no IPVS, so the demo runs where the kernel tests do: in the user-mode Linux
lab (tests/kernel/uml.py; `make uml-kernel` builds it once per machine). This launcher boots it
and runs the story, tests/demo_lab.py, inside it with the venv's Python, streaming what the
story prints as it happens: the election, client traffic spread across box A and box B, kill -9
of the master's agent and the takeover, the killed agent restarted as systemd would, the old
master preempting again, and a summary (requests per box, failures, the outage in ms).

    python -m tests.demo [--timeout S] [--restart-delay S]     (as root)

No lab kernel, or a lab that does not boot, is an error with what to do: there is no fallback.
Exit status: the story's (1 if it saw the agents misbehave), or 1 if the lab could not run it.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from tests.kernel.uml import (
    BUILD_SCRIPT,
    BootFailed,
    KernelMissing,
    UmlError,
    UmlTimeout,
    kernel_path,
    run_in_uml,
)

ROOT = Path(__file__).resolve().parents[1]
VENV_PYTHON = ROOT / ".venv" / "bin" / "python"
TIMEOUT = 240.0  # the story takes about 40 s; this bounds a guest that hangs


def fail(message: str) -> int:
    print(f"make demo: FAILED: {message}", file=sys.stderr, flush=True)
    return 1


def guest_python() -> str:
    """The venv's interpreter by its absolute path, not resolved: the path is what makes it
    the venv's (and a pyenv shim would cost seconds a call in the lab)."""
    if VENV_PYTHON.exists():
        return str(VENV_PYTHON)
    return os.path.abspath(sys.executable)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.demo", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--timeout", type=float, default=TIMEOUT, help="seconds for the whole lab")
    parser.add_argument(
        "--restart-delay",
        type=float,
        default=2.0,
        help="seconds from the takeover to the restart of the killed agent (default 2)",
    )
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        return fail("run it as root (the lab makes network namespaces and boots a UML kernel)")
    try:
        kernel = kernel_path()
    except KernelMissing as exc:
        return fail(f"no kernel lab: {exc}\n  `make demo` builds it through `make uml-kernel`")
    except OSError as exc:
        return fail(f"cannot locate the lab kernel: {exc}")

    print(
        f"make demo: booting the kernel lab ({kernel}); the story below runs inside it\n",
        flush=True,
    )
    # A TERM must unwind through run_in_uml's cleanup, which kills the guest.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    cmd = [
        guest_python(), "-u", "-m", "tests.demo_lab",
        "--restart-delay", str(args.restart_delay),
    ]  # fmt: skip
    started = time.monotonic()
    try:
        status, _ = run_in_uml(
            cmd,
            args.timeout,
            cwd=ROOT,
            kernel=kernel,
            stream=sys.stdout,
            on_booted=lambda took: print(f"make demo: the lab booted in {took:.1f} s", flush=True),
        )
    except UmlTimeout as exc:
        return fail(f"{exc}\n--- lab console (tail) ---\n{exc.console}")
    except BootFailed as exc:
        return fail(
            f"the kernel lab did not boot: {exc}\n--- lab console (tail) ---\n{exc.console}\n"
            f"  try `python -m tests.kernel.uml -- /bin/true`; rebuild with {BUILD_SCRIPT}"
        )
    except (UmlError, OSError) as exc:
        return fail(f"the kernel lab could not run the demo: {exc}")
    took = time.monotonic() - started
    if status != 0:
        return fail(f"the story inside the lab ended with status {status} after {took:.0f} s")
    print(f"\nmake demo: done in {took:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
