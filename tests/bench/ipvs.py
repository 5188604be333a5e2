"""`make bench` figures for the IPVS reconciler, measured inside the kernel lab.

The host has no IPVS, so this boots the lab once (tests.kernel.uml.run_in_uml) and runs
tests/bench/ipvs_guest.py there, which prints every figure as a ``bench: ...`` line and where
the time goes as plain lines.  ``run_ipvs_bench()`` returns the ``bench:`` lines:

    bench: config_load_1000x10 <s> s
    bench: ipvs_program_1000x10 <s> s ratio <r> vs ipvsadm -R (<s> s)
    bench: ipvs_reload_one_change_ops <n> count
    bench: ipvs_reload_one_change <ms> ms
    bench: ipvs_drift_check_1000x10 <s> s
    bench: rss_1000x10 <MB> MB

By hand: ``python -m tests.bench.ipvs`` (add ``--services 20 --dests 3`` for a quick run).
Benchmarks assert nothing about time; a phase that failed prints ``bench-error:`` and its
figures are missing from the result.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from tests.kernel.uml import KernelMissing, UmlError, run_in_uml

ROOT = Path(__file__).resolve().parents[2]
# The guest budget leaves the lab time to boot, clean up and power off.
UML_TIMEOUT = 900.0
GUEST_BUDGET = 780.0


def run_ipvs_bench(
    services: int = 1000,
    dests: int = 10,
    *,
    timeout: float = UML_TIMEOUT,
    skip_rss: bool = False,
    stream: TextIO | None = None,
) -> list[str]:
    """Boot the lab, run the guest bench, return its ``bench: ...`` lines.

    ``stream`` (default stderr) gets the guest's output as it comes, including the
    breakdown lines.  Raises KernelMissing when no lab kernel is built, UmlError when the lab
    cannot run it, and RuntimeError when the guest printed no figure at all.
    """
    cmd = [
        sys.executable,
        "-m",
        "tests.bench.ipvs_guest",
        "--services",
        str(services),
        "--dests",
        str(dests),
        "--budget",
        str(min(GUEST_BUDGET, timeout - 60.0)),
    ]
    if skip_rss:
        cmd.append("--skip-rss")
    status, output = run_in_uml(
        cmd, timeout, cwd=ROOT, stream=stream if stream is not None else sys.stderr
    )
    lines = [line for line in output.splitlines() if line.startswith("bench: ")]
    if not lines:
        tail = "\n".join(output.splitlines()[-30:])
        raise RuntimeError(f"the IPVS bench printed no figure (exit {status}):\n{tail}")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.bench.ipvs")
    p.add_argument("--services", type=int, default=1000)
    p.add_argument("--dests", type=int, default=10)
    p.add_argument("--timeout", type=float, default=UML_TIMEOUT)
    p.add_argument("--skip-rss", action="store_true")
    args = p.parse_args(argv)
    try:
        lines = run_ipvs_bench(
            args.services, args.dests, timeout=args.timeout, skip_rss=args.skip_rss
        )
    except KernelMissing as exc:
        print(f"ipvs bench: SKIPPED: {exc}", file=sys.stderr)
        return 77
    except (UmlError, RuntimeError) as exc:
        print(f"ipvs bench: FAILED: {exc}", file=sys.stderr)
        return 1
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
