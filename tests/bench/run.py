"""`make bench`: every figure, ending with one `bench: <name> <value> <unit> ...` line each.

Benchmarks are measurements, not tests: they assert nothing about time.
Each ratio is against a baseline measured in the same run on the same machine.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from tests.bench.ipvs import run_ipvs_bench
from tests.bench.takeover import measure


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--reps", type=int, default=3, help="runs per figure (median reported)")
    p.add_argument("--skip-ipvs", action="store_true", help="leave out the kernel-lab IPVS figures")
    args = p.parse_args()
    results = []
    ipvs_lines = [] if args.skip_ipvs else run_ipvs_bench()
    with tempfile.TemporaryDirectory(prefix="lvsagent-bench-") as tmp:
        for version, interval in ((2, 1.0), (3, 0.1)):
            for how in ("kill9", "sigterm"):
                results.append(measure(version, interval, how, Path(tmp), args.reps))
    for r in results:
        print(r.line())
    for line in ipvs_lines:
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
