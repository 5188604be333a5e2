"""`make bench` figures for a cold start against keepalived, measured inside the kernel lab.

The host has no IPVS, so this boots the lab once and runs tests/bench/coldstart_guest.py
there; lvsagent in every loop-guard mode and keepalived take turns in the same boot, so each
figure is a ratio to keepalived's on the same (shared, loaded) machine.  Checked means the
same thing on both sides: alpha off (keepalived's default: every server in at once, out on
its first failed check), and once, in bypass mode, alpha on both (no traffic to a server
before its first passed check).  The ``bench:`` lines:

    bench: cold_start_1000x10[_MODE] <s> s ratio <r> vs keepalived (...)
    bench: cold_start_checked_1000x10[_MODE] <s> s ratio <r> vs keepalived (...)
    bench: cold_start_checked_alpha_1000x10 <s> s ratio <r> vs keepalived (...)
    bench: vrrp_send_lag_p99_cold_start_checked_10000[_MODE] <ms> ms ... where=lab
    bench: vrrp_send_lag_p99_cold_start_checked_10000_host[_MODE] <ms> ms ... where=host
    bench: rss_cold_start_1000x10 <MB> MB ...

By hand: ``python -m tests.bench.coldstart --reps 1 --modes bypass``.  Benchmarks assert
nothing about time; a run that failed prints ``bench-error:`` and its figures are missing.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Sequence
from typing import TextIO

from tests.bench.ipvs import ROOT
from tests.kernel.uml import KernelMissing, UmlError, run_in_uml

# Two reps of 4 daemons x 2 (checked or not) take ~15 min on a quiet machine; the guest's
# budget leaves the lab time to boot and power off, and drops the runs that do not fit.
UML_TIMEOUT = 1500.0
GUEST_BUDGET = 1380.0


def run_coldstart_bench(
    reps: int = 2,
    modes: str = "bypass,fwmark,backup_only",
    *,
    timeout: float = UML_TIMEOUT,
    stream: TextIO | None = None,
) -> list[str]:
    """Boot the lab, run the guest's cold starts, return its ``bench: ...`` lines.

    Raises KernelMissing when no lab kernel is built, UmlError when the lab cannot run it,
    and RuntimeError when the guest printed no figure at all.
    """
    cmd = [
        sys.executable,
        "-m",
        "tests.bench.coldstart_guest",
        "--reps",
        str(reps),
        "--modes",
        modes,
        "--budget",
        str(min(GUEST_BUDGET, timeout - 120.0)),
    ]
    status, output = run_in_uml(
        cmd, timeout, cwd=ROOT, stream=stream if stream is not None else sys.stderr
    )
    lines = [line for line in output.splitlines() if line.startswith("bench: ")]
    if not lines:
        tail = "\n".join(output.splitlines()[-30:])
        raise RuntimeError(f"the cold-start bench printed no figure (exit {status}):\n{tail}")
    return lines


def run_host_lag(modes: str = "bypass,fwmark") -> list[str]:
    """The advert lag of the same cold start on this host (no IPVS: no table figures).

    Why beside the lab's: the lab kernel has one CPU, HZ=100 and no preemption, so a
    thread that wakes while another runs (VRRP's, daemon/vrrploop.py, and keepalived's
    VRRP process alike) gets the CPU at the next 10 ms tick at best; the lab's figure
    measures that scheduler as much as the daemon.  Here VRRP's thread has a core.
    Not backup_only: it needs IPVS's own sysctl, which this host's kernel lacks.
    """
    cmd = [sys.executable, "-m", "tests.bench.coldstart_guest", "--lag-only", "--reps", "1",
           "--modes", modes, "--agents", "lvsagent", "--checked", "yes", "--budget", "400"]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    lines = [line for line in done.stdout.splitlines() if line.startswith("bench: ")]
    return lines or [f"bench-error: host advert lag at a cold start: exit {done.returncode}"]


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.bench.coldstart")
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--modes", default="bypass,fwmark,backup_only")
    p.add_argument("--timeout", type=float, default=UML_TIMEOUT)
    args = p.parse_args(argv)
    try:
        lines = run_coldstart_bench(args.reps, args.modes, timeout=args.timeout)
    except KernelMissing as exc:
        print(f"cold-start bench: SKIPPED: {exc}", file=sys.stderr)
        return 77
    except (UmlError, RuntimeError) as exc:
        print(f"cold-start bench: FAILED: {exc}", file=sys.stderr)
        return 1
    host_modes = ",".join(m for m in args.modes.split(",") if m != "backup_only")
    print("\n".join([*lines, *run_host_lag(host_modes)]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
