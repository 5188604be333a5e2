"""An instance never crashes on its own adverts, and one that fails leaves no VIP behind.

Why: with more addresses than an advert can carry, the agent crashed on becoming
MASTER and left every VIP on the interface with nobody to remove them.  The runner is
driven by tests/netns/instance_probe.py, since the config itself refuses such a set.
"""

from __future__ import annotations

import json
import sys

from tests.netns.conftest import Pair


def probe(pair: Pair, scenario: str) -> tuple[dict[str, object], str]:
    res = pair.b.run(sys.executable, "-m", "tests.netns.instance_probe", scenario, "eth0",
                     check=False)  # fmt: skip
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout.strip().splitlines()[-1]), res.stderr


def test_adverts_that_cannot_be_encoded_are_counted_and_the_instance_runs_on(pair: Pair) -> None:
    out, log = probe(pair, "many_vips")
    assert out["state"] == "MASTER" and out["unencodable"] >= 3  # type: ignore[operator]
    assert log.count("cannot send adverts: an advert carries at most 255 addresses") == 1
    # 300 addresses at once fit through the fast path (their acks once overflowed it).
    assert "virtual addresses on eth0" not in log
    # It stopped as it should: every VIP gone, the box's own address kept.
    assert pair.b.addresses("eth0") == {"10.99.0.2/24"}


def test_an_exception_in_an_action_releases_the_vips(pair: Pair) -> None:
    out, log = probe(pair, "guard_raises")
    assert out == {"state": "MASTER", "raised": "guard release failed"}
    assert "stopped by an internal error in state MASTER" in log
    assert pair.b.addresses("eth0") == {"10.99.0.2/24"}
