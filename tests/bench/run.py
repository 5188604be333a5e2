"""`make bench`: every figure, ending with one `bench: <name> <value> <unit> ...` line each.

Benchmarks are measurements, not tests: they assert nothing about time.
Each ratio is against a baseline measured in the same run on the same machine.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from tests.bench.coldstart import run_coldstart_bench, run_host_lag
from tests.bench.guardstep import run_guardstep_bench
from tests.bench.health import run_health_bench
from tests.bench.ipvs import run_ipvs_bench
from tests.bench.takeover import measure
from tests.bench.twobox import run_twobox_bench


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--reps", type=int, default=3, help="runs per figure (median reported)")
    p.add_argument("--skip-ipvs", action="store_true", help="leave out the kernel-lab IPVS figures")
    p.add_argument("--skip-health", action="store_true", help="leave out the health-check figures")
    p.add_argument("--skip-twobox", action="store_true", help="leave out the two-box failovers")
    p.add_argument("--skip-coldstart", action="store_true", help="leave out the cold starts")
    args = p.parse_args()
    results = []
    ipvs_lines = [] if args.skip_ipvs else run_ipvs_bench()
    health_lines = [] if args.skip_health else run_health_bench()
    # keepalived (the seed's setup) and lvsagent in the same lab boot, as ratios.
    twobox_lines = [] if args.skip_twobox else run_twobox_bench("lvsagent")
    cold_lines = [] if args.skip_coldstart else [*run_coldstart_bench(), *run_host_lag()]
    with tempfile.TemporaryDirectory(prefix="lvsagent-bench-") as tmp:
        for version, interval in ((2, 1.0), (3, 0.1)):
            for how in ("kill9", "sigterm"):
                results.append(measure(version, interval, how, Path(tmp), args.reps))
        guard_lines = run_guardstep_bench(Path(tmp))
    for r in results:
        print(r.line())
    for line in [*guard_lines, *ipvs_lines, *health_lines, *twobox_lines, *cold_lines]:
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
