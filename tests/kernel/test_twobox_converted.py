"""The seed article's two keepalived.conf files, converted by `lvsagent convert`, run the lab.

Why: a converter is only as good as what the converted files do. The seed's configs (box A
and box B of the two-box design, tests/unit/convert_fixtures) are converted exactly as an
operator would convert theirs; only the interface name changes (the lab's boxes have eth0),
and the lab adds its own paths (control socket, state directory). Both agents then run the
two-box lab with client traffic: new connections spread over both boxes with nothing failing,
and after kill -9 of the master the failures end and every later request is served.

    python -m tests.kernel.uml -- "$PWD/.venv/bin/python" -m pytest -q -s \\
        tests/kernel/test_twobox_converted.py
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import pytest

from lvsagent.convert.conversion import convert
from lvsagent.convert.findings import EXIT_COMPLETE
from lvsagent.convert.lexer import Source
from tests.kernel.twobox import IFACE, START_TIMEOUT, TwoBox, ipvs_ready, twobox_lab
from tests.kernel.twobox_agents import Agent, wait_until
from tests.kernel.twobox_traffic import Record, Traffic
from tests.kernel.uml import lab_only

pytestmark = [lab_only(__file__), pytest.mark.timeout(240)]

FIXTURES = Path(__file__).resolve().parents[1] / "unit" / "convert_fixtures"
SEED_INTERFACE = "enp0s3"  # the article's boxes
SPREAD_REQUESTS = 200
TAKEOVER_TIMEOUT = 15.0
# "Failures have ended": this many requests in a row served, all started after the takeover.
SERVED_IN_A_ROW = 100


def converted(label: str) -> str:
    """box ``label``'s seed config through `lvsagent convert`, for the lab's interface."""
    path = FIXTURES / f"seed-box-{label}.conf"
    text = path.read_text().replace(SEED_INTERFACE, IFACE)

    def read(name: str) -> bytes:
        if name != str(path):
            raise FileNotFoundError(name)
        return text.encode()

    result = convert(str(path), Source(read=read, glob=lambda pattern: []), "none")
    problems = [str(f) for f in result.findings.sorted()]
    assert result.toml is not None and result.exit_status == EXIT_COMPLETE, problems
    return result.toml


def start_converted(lab: TwoBox, label: str) -> Agent:
    return lab.start_lvsagent(label, base=converted(label))


def served_in_a_row(records: list[Record], after: float) -> int:
    """The longest run of served requests among those started after ``after``, in order."""
    best = run = 0
    for r in sorted(records, key=lambda r: r.start):
        if r.start < after:
            continue
        run = run + 1 if r.ok else 0
        best = max(best, run)
    return best


def test_the_converted_seed_pair_serves_and_fails_over(tmp_path: Path) -> None:
    with twobox_lab(tmp_path) as lab:
        a = start_converted(lab, "a")
        b = start_converted(lab, "b")
        a.wait_state("MASTER", START_TIMEOUT)
        b.wait_state("BACKUP", START_TIMEOUT)
        for box in (lab.a, lab.b):
            wait_until(lambda box=box: ipvs_ready(box), START_TIMEOUT, f"{box.name}: IPVS")
        wait_until(lab.b.has_redirect, START_TIMEOUT, "box b: the bypass (BACKUP)")

        spread = lab.traffic().start(SPREAD_REQUESTS).wait_done(60.0)
        outcomes = Counter(r.outcome for r in spread)
        print(f"converted seed pair: spread of {SPREAD_REQUESTS} new connections: {outcomes}")
        assert set(outcomes) == {"boxa", "boxb"}, outcomes  # rr over both, nothing failed
        assert min(outcomes.values()) >= SPREAD_REQUESTS // 4, outcomes

        traffic: Traffic = lab.traffic().start()
        try:
            traffic.wait_successes(time.time(), 50, 30.0)
            mark = b.mark()
            killed_at = a.kill9()
            takeover = b.wait_state("MASTER", TAKEOVER_TIMEOUT, after=mark)
            traffic.wait(
                lambda records: served_in_a_row(records, takeover) >= SERVED_IN_A_ROW,
                60.0,
                f"{SERVED_IN_A_ROW} requests in a row served after the takeover",
            )
        finally:
            records = traffic.stop()
        after = [r for r in records if r.start >= takeover]
        print(
            f"converted seed pair: kill -9 at {killed_at:.3f}, B MASTER +{takeover - killed_at:.2f}"
            f" s; after the takeover {Counter(r.outcome for r in after)}"
        )
        # A's VIP stays with the killed agent's kernel (nobody removes it); B holds it too.
        assert lab.b.has_vip()
