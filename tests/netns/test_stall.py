"""A backup stalled past its Master_Down_Interval reads the master's adverts before judging.

Why: after a stall (SIGSTOP here; a GC pause, CPU starvation or a slow disk do the
same) the master's adverts wait on the backup's socket while its master-down timer has
long run out.  Acting on the timer first made the backup take over from a live master,
take the VIP and announce it by gratuitous ARP, and step back a moment later, leaving
clients' ARP entries pointing at it.
"""

from __future__ import annotations

import signal

import pytest

from tests.netns.conftest import Pair

VIP = "10.99.0.100"


@pytest.mark.parametrize(
    ("version", "advert_int", "stall", "times"),
    [
        (2, 1.0, 5.0, 3),  # Master_Down_Interval 3.805 s
        (3, 0.1, 2.5, 5),  # Master_Down_Interval 0.380 s
    ],
)
def test_a_stalled_backup_never_takes_over_from_a_live_master(
    pair: Pair, version: int, advert_int: float, stall: float, times: int
) -> None:
    da, db = pair.settled_pair(*pair.configs(version=version, advert_int=advert_int))
    mark_a, mark_b = da.mark(), db.mark()
    for _ in range(times):
        db.signal(signal.SIGSTOP)
        # The stall itself, watched: the master goes on undisturbed.
        da.assert_quiet(r"-> ", stall)
        db.signal(signal.SIGCONT)
        # Two of the backup's Master_Down_Intervals after it resumes.
        db.assert_quiet(r"-> MASTER", 2 * (3 * advert_int + 1))
    assert not [line for line in db.lines[mark_b:] if "-> " in line]
    assert not [line for line in da.lines[mark_a:] if "-> " in line]
    assert pair.a.has_address("eth0", VIP) and not pair.b.has_address("eth0", VIP)
