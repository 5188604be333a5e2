"""`make bench`: every figure, ending with one `bench: <name> <value> <unit> ...` line each.

Benchmarks are measurements, not tests: they assert nothing about time.
Each ratio is against a baseline measured in the same run on the same machine.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from tests.bench.takeover import measure


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--reps", type=int, default=3, help="runs per figure (median reported)")
    args = p.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="lvsagent-bench-") as tmp:
        for version, interval in ((2, 1.0), (3, 0.1)):
            for how in ("kill9", "sigterm"):
                results.append(measure(version, interval, how, Path(tmp), args.reps))
    for r in results:
        print(r.line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
