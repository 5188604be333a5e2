"""The kernel lab's test files in several guests at once, one per host core.

Why: a UML guest runs on one host CPU, and the lab's cases (two-box failovers with
traffic, each a minute or more) took 25 of `make test`'s 40 minutes in one guest while
the other core idled. The cases share nothing across files but the lab each guest
builds for itself, so the files are split into groups, each group runs in a guest of
its own, and each guest's output is kept in a file and printed whole when it ends (two
pytest runs interleaved line by line could not be read). The exit status is the worst.

    python -m tests.kernel.guests --timeout S -- PY -m pytest ARGS -- GROUP1 -- GROUP2 ...

Each GROUP is pytest arguments (paths, ``--ignore=``...) appended to the command every
guest runs: give the last group the whole directory minus the others' files, so that a
new test file runs somewhere without anyone listing it.
"""

from __future__ import annotations

import argparse
import queue
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from tests.kernel.uml import EXIT_SKIP


def split(argv: Sequence[str]) -> list[list[str]]:
    """``-- a b -- c -- d e`` -> [[a, b], [c], [d, e]] (the leading ``--`` optional)."""
    parts: list[list[str]] = [[]]
    for word in argv:
        if word == "--":
            parts.append([])
        else:
            parts[-1].append(word)
    return [p for p in parts if p]


def worst(statuses: Sequence[int]) -> int:
    """A failure beats a skip (77: no lab kernel, outside CI) and a skip beats a pass."""
    failed = [s for s in statuses if s not in (0, EXIT_SKIP)]
    if failed:
        return failed[0]
    return EXIT_SKIP if EXIT_SKIP in statuses else 0


def run(command: list[str], groups: list[list[str]], timeout: float, mem: str) -> int:
    started = time.monotonic()
    ended: queue.Queue[int] = queue.Queue()  # a guest's number when its runner exits
    with tempfile.TemporaryDirectory(prefix="lvsagent-guests-") as tmp:
        running: list[tuple[list[str], subprocess.Popen[bytes], Path]] = []
        for number, paths in enumerate(groups, 1):
            log = Path(tmp) / f"guest{number}.log"
            argv = [sys.executable, "-m", "tests.kernel.uml", "--timeout", f"{timeout:g}",
                    "--mem", mem, "--", *command, *paths]  # fmt: skip
            print(f"guests: guest {number}: {shlex.join(paths)}", flush=True)
            with log.open("wb") as out:
                proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
            running.append((paths, proc, log))
            threading.Thread(
                target=lambda p=proc, n=number: (p.wait(), ended.put(n)), daemon=True
            ).start()
        statuses = []
        # Each guest's log whole, in the order they end; a failed one's summary is then
        # among the last lines of the output (CI shows the tail).
        for _ in running:
            number = ended.get()
            paths, proc, log = running[number - 1]
            took = time.monotonic() - started
            print(f"\n===== guest {number} ({shlex.join(paths)}): exit {proc.returncode} "
                  f"after {took:.0f} s =====", flush=True)  # fmt: skip
            sys.stdout.write(log.read_text(errors="replace"))
            sys.stdout.flush()
            statuses.append(proc.returncode)
    summary = ", ".join(f"guest {n}: exit {p.returncode}" for n, (_, p, _) in enumerate(running, 1))
    print(f"\nguests: {summary}; {time.monotonic() - started:.0f} s in all", flush=True)
    return worst(statuses)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.kernel.guests", description=__doc__)
    parser.add_argument("--timeout", type=float, default=1800.0, help="per guest, seconds")
    parser.add_argument("--mem", default="1G", help="per guest (default 1G)")
    parser.add_argument("rest", nargs=argparse.REMAINDER, help="-- CMD -- GROUP1 -- GROUP2 ...")
    args = parser.parse_args(argv)
    parts = split(args.rest)
    if len(parts) < 2:
        parser.error("want -- CMD ARGS -- GROUP1 [-- GROUP2 ...]")
    return run(parts[0], parts[1:], args.timeout, args.mem)


if __name__ == "__main__":
    sys.exit(main())
