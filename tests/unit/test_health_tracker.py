"""The rise/fall tracker on a hand-advanced clock: retry, hysteresis, alpha, messages."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lvsagent.health.tracker import CheckResult, Policy, Tracker, VerdictChange, disposition

NAME = "RS 172.16.0.32:80 of 172.16.0.30:80"
PASS = CheckResult(True, "connected", 0.001)
REFUSED = CheckResult(False, "connection refused", 0.001)
TIMEOUT = CheckResult(False, "connect timeout 1.0 s", 1.0)


class Clocked:
    """A tracker and its clock: each attempt starts when the tracker says it is due."""

    def __init__(self, policy: Policy, first_delay: float = 0.0) -> None:
        self.now = 100.0
        self.t = Tracker(NAME, policy, self.now, first_delay)
        self.starts: list[float] = []

    def attempt(self, result: CheckResult) -> VerdictChange | None:
        assert self.t.due is not None
        self.now = max(self.now, self.t.due)
        self.starts.append(self.now)
        self.t.begin(self.now)
        self.now += result.latency
        return self.t.finish(result, self.now)

    def run(self, results: list[CheckResult]) -> list[VerdictChange]:
        return [tr for r in results if (tr := self.attempt(r)) is not None]


def test_alpha_start_has_no_verdict_until_the_first_check() -> None:
    c = Clocked(Policy(alpha=True, rise=3))
    assert c.t.up is None
    tr = c.attempt(PASS)
    # One passed check is enough for an unchecked server, whatever rise says.
    assert tr == VerdictChange(True, f"{NAME} UP (connected, first check passed)", c.now, True)
    assert c.t.up is True


def test_alpha_start_first_failure_is_down_at_once() -> None:
    c = Clocked(Policy(alpha=True, retry=0, fall=3))
    tr = c.attempt(REFUSED)
    assert tr is not None and tr.first
    assert tr.message == f"{NAME} DOWN (connection refused, first check failed)"
    assert c.t.up is False


def test_without_alpha_the_server_starts_up_and_needs_fall_failures() -> None:
    c = Clocked(Policy(alpha=False, retry=0, fall=3, interval=2.0))
    assert c.t.up is True
    assert c.run([TIMEOUT, TIMEOUT]) == []
    tr = c.attempt(TIMEOUT)
    assert tr is not None and not tr.first
    assert tr.message == f"{NAME} DOWN (connect timeout 1.0 s, 3 of 3)"


def test_rise_counts_passed_rounds_in_a_row() -> None:
    c = Clocked(Policy(alpha=False, retry=0, fall=1, rise=2))
    assert c.run([REFUSED]) != []
    # One pass, then a failure: the count starts over.
    assert c.run([PASS, REFUSED, PASS]) == []
    assert c.t.up is False
    (tr,) = c.run([PASS])
    assert tr.message == f"{NAME} UP (connected, 2 of 2)"


def test_a_pass_resets_the_failure_count() -> None:
    c = Clocked(Policy(alpha=False, retry=0, fall=2))
    assert c.run([REFUSED, PASS, REFUSED, PASS, REFUSED]) == []
    assert c.t.up is True


def test_retry_delays_and_does_not_count_until_the_last_attempt() -> None:
    c = Clocked(Policy(alpha=False, interval=6.0, retry=2, delay_before_retry=1.0, fall=1))
    assert c.attempt(REFUSED) is None
    assert c.attempt(REFUSED) is None
    tr = c.attempt(REFUSED)
    assert tr is not None
    assert tr.message == f"{NAME} DOWN (connection refused, 1 of 1, after 2 retries)"
    # Retries come delay_before_retry after the failed attempt; the next round an
    # interval after the first attempt of this one.
    assert [round(s - c.starts[0], 3) for s in c.starts] == [0.0, 1.001, 2.002]
    assert c.t.due == c.starts[0] + 6.0


def test_a_pass_on_retry_makes_the_round_pass() -> None:
    c = Clocked(Policy(alpha=False, retry=1, fall=1))
    assert c.run([TIMEOUT, PASS, TIMEOUT, PASS]) == []
    assert c.t.up is True
    assert c.t.fails == 0


def test_fall_counts_rounds_each_with_its_retries() -> None:
    # keepalived's retry inside, HAProxy's fall outside: 2 rounds x 2 attempts.
    c = Clocked(Policy(alpha=False, retry=1, fall=2, delay_before_retry=0.5))
    assert c.run([TIMEOUT, TIMEOUT, TIMEOUT]) == []
    (tr,) = c.run([TIMEOUT])
    assert tr.message == f"{NAME} DOWN (connect timeout 1.0 s, 2 of 2, after 1 retry)"


def test_down_servers_are_not_retried() -> None:
    # As keepalived: retries are for an alive server; a dead one gets one attempt a round.
    c = Clocked(Policy(alpha=False, retry=2, fall=1, interval=10.0, delay_before_retry=1.0))
    (tr,) = c.run([REFUSED, REFUSED, REFUSED])
    assert tr.up is False
    assert c.attempt(REFUSED) is None
    assert c.t.attempt == 0 and c.t.due == pytest.approx(c.starts[-1] + 10.0)
    (tr,) = c.run([PASS])
    assert tr.up and c.starts[-1] == pytest.approx(c.starts[-2] + 10.0)


def test_an_unchecked_server_is_retried() -> None:
    c = Clocked(Policy(alpha=True, retry=1, delay_before_retry=1.0))
    assert c.attempt(REFUSED) is None and c.t.attempt == 1
    (tr,) = c.run([PASS])
    assert tr.up and tr.first


def test_first_check_waits_for_its_jitter() -> None:
    c = Clocked(Policy(), first_delay=2.5)
    assert c.t.due == 102.5


def test_rounds_keep_to_a_grid_however_long_they_take() -> None:
    c = Clocked(Policy(alpha=False, interval=1.0, retry=0))
    c.attempt(CheckResult(True, "connected", 0.3))
    c.attempt(CheckResult(False, "connect timeout 2.5 s", 2.5))  # overruns two grid points
    c.attempt(PASS)
    assert [s - 100.0 for s in c.starts] == [0.0, 1.0, 4.0]
    assert c.t.due == 105.0


def test_recheck_is_an_extra_round_and_the_grid_stays() -> None:
    c = Clocked(Policy(alpha=False, interval=10.0, retry=0))
    c.attempt(PASS)  # at 100; next grid point 110
    c.now = 103.0
    c.t.recheck(c.now)
    c.t.recheck(c.now + 0.5)  # twice before it starts: still one extra round
    c.attempt(PASS)
    assert c.t.due == 110.0
    c.attempt(PASS)
    assert c.starts == [100.0, 103.0, 110.0]
    assert c.t.due == 120.0


def test_one_attempt_at_a_time() -> None:
    t = Tracker(NAME, Policy(), 0.0)
    t.begin(0.0)
    assert t.due is None
    with pytest.raises(RuntimeError, match="in flight"):
        t.begin(0.1)
    t.finish(PASS, 0.2)
    with pytest.raises(RuntimeError, match="without begin"):
        t.finish(PASS, 0.3)


def test_recheck_brings_the_next_check_forward_only() -> None:
    t = Tracker(NAME, Policy(interval=6.0), 0.0, first_delay=5.0)
    t.recheck(1.0)
    assert t.due == 1.0
    t.recheck(3.0)  # never later than already due
    assert t.due == 1.0
    t.begin(1.0)
    t.recheck(1.5)  # in flight: that result will do
    assert t.due is None


def test_reconfigure_keeps_the_verdict_and_shortens_the_wait() -> None:
    c = Clocked(Policy(alpha=True, interval=60.0))
    c.attempt(PASS)
    c.t.reconfigure("RS x", Policy(alpha=True, interval=1.0), c.now)
    assert c.t.up is True
    assert c.t.due == c.now + 1.0
    (tr,) = c.run([REFUSED, REFUSED])
    assert tr.message.startswith("RS x DOWN")


def test_reconfigure_to_fewer_retries_never_leaves_a_round_past_its_last_attempt() -> None:
    c = Clocked(Policy(alpha=False, retry=3, fall=1))
    c.run([REFUSED, REFUSED])
    c.t.reconfigure(NAME, Policy(alpha=False, retry=1, fall=1), c.now)
    (tr,) = c.run([REFUSED])
    assert not tr.up


# ----- properties ----------------------------------------------------------------

policies = st.builds(
    Policy,
    interval=st.floats(0.1, 10),
    retry=st.integers(0, 3),
    delay_before_retry=st.floats(0, 2),
    rise=st.integers(1, 5),
    fall=st.integers(1, 5),
    alpha=st.booleans(),
)
results = st.lists(st.sampled_from([PASS, REFUSED, TIMEOUT]), max_size=80)


@given(policies, results)
def test_verdicts_never_flap_faster_than_rise_and_fall_allow(
    policy: Policy, seq: list[CheckResult]
) -> None:
    c = Clocked(policy)
    rounds: list[bool] = []  # outcome of each finished round
    changes: list[tuple[int, bool, bool]] = []  # (round index, up, first)
    for r in seq:
        before, was_down = c.t.attempt, c.t.up is False
        tr = c.attempt(r)
        if r.ok or before == policy.retry or was_down:
            rounds.append(r.ok)
        else:
            assert tr is None, "a retried attempt never changes the verdict"
        if tr is not None:
            changes.append((len(rounds), tr.up, tr.first))
    for i, (n, up, first) in enumerate(changes):
        if i > 0:
            assert up != changes[i - 1][1], "transitions alternate"
        if first:
            assert i == 0 and policy.alpha
            continue
        need = policy.rise if up else policy.fall
        # The last `need` rounds before the transition all went its way.
        assert n >= need and all(ok == up for ok in rounds[n - need : n])
    if not policy.alpha and changes:
        assert changes[0][1] is False, "a server that starts up can only go down first"


@given(policies, results)
def test_the_next_check_is_always_scheduled_after_the_last_result(
    policy: Policy, seq: list[CheckResult]
) -> None:
    c = Clocked(policy)
    for r in seq:
        c.attempt(r)
        assert c.t.due is not None and c.t.due >= c.now
        assert 0 <= c.t.attempt <= policy.retry


# ----- a box that fell silent, and servers that do not answer ----------------------------------

UNREACHABLE = CheckResult(False, "connect timeout 3.0 s", 3.0, unreachable=True)


def test_without_a_silent_box_a_failed_recheck_is_retried() -> None:
    c = Clocked(Policy(alpha=False, interval=30.0, retry=1, fall=1))
    c.attempt(PASS)
    c.t.recheck(c.now + 1.0)
    assert c.attempt(UNREACHABLE) is None, "an ordinary re-check keeps its retry"
    assert c.t.up is True and c.t.attempt == 1


def test_a_silent_box_whose_server_fails_its_recheck_is_down_at_once() -> None:
    # The settings: a retry, and fall 2 for good measure: neither is waited for.
    c = Clocked(Policy(alpha=False, interval=30.0, retry=1, delay_before_retry=1.0, fall=2))
    c.attempt(PASS)  # at 100, next grid point 130
    c.now = 105.0
    c.t.recheck(c.now, silent=True)
    assert c.t.suspect and c.t.due == 105.0
    tr = c.attempt(UNREACHABLE)
    assert tr == VerdictChange(
        False, f"{NAME} DOWN (connect timeout 3.0 s, re-checked after its box fell silent)", 108.0
    )
    assert c.t.unreachable and not c.t.suspect
    assert c.t.attempt == 0 and c.t.due == 130.0, "no retry; the grid stays"


def test_a_silent_box_whose_server_answers_is_in_service_again() -> None:
    c = Clocked(Policy(alpha=False, retry=1))
    c.attempt(PASS)
    c.t.recheck(c.now + 1.0, silent=True)
    assert c.attempt(PASS) is None
    assert c.t.up is True and not c.t.suspect


def test_an_attempt_in_flight_when_the_box_falls_silent_decides() -> None:
    t = Tracker(NAME, Policy(alpha=False, retry=2, fall=3), 0.0)
    t.begin(0.0)
    t.recheck(1.0, silent=True)
    assert t.due is None, "the attempt in flight is not duplicated"
    tr = t.finish(UNREACHABLE, 3.0)
    assert tr is not None and not tr.up and not tr.first


def test_a_silent_box_mid_retry_fails_at_the_next_attempt() -> None:
    c = Clocked(Policy(alpha=False, interval=30.0, retry=3, delay_before_retry=1.0))
    assert c.attempt(REFUSED) is None  # a retry is due at 101.001
    c.t.recheck(c.now, silent=True)
    tr = c.attempt(REFUSED)
    assert tr is not None
    assert tr.message == (
        f"{NAME} DOWN (connection refused, re-checked after its box fell silent, after 1 retry)"
    )


def test_no_verdict_yet_and_a_silent_box_is_a_first_verdict() -> None:
    c = Clocked(Policy(alpha=True, retry=2))
    c.t.recheck(c.now, silent=True)
    tr = c.attempt(UNREACHABLE)
    assert tr is not None and tr.first and not tr.up


def test_a_down_server_stays_down_when_its_box_falls_silent() -> None:
    c = Clocked(Policy(alpha=False, retry=0))
    assert c.run([REFUSED]) != []
    c.t.recheck(c.now, silent=True)
    assert c.attempt(UNREACHABLE) is None
    assert c.t.up is False and c.t.unreachable


def test_unreachable_follows_the_last_failed_round_and_a_pass_clears_it() -> None:
    c = Clocked(Policy(alpha=False, retry=1, delay_before_retry=0.5))
    (tr,) = c.run([REFUSED, UNREACHABLE])  # the round's last attempt decides
    assert not tr.up and c.t.unreachable
    c.attempt(REFUSED)  # down: one attempt a round
    assert not c.t.unreachable, "it answers again: a refusal is an answer"
    c.attempt(UNREACHABLE)
    assert c.t.unreachable
    (tr,) = c.run([PASS])
    assert tr.up and not c.t.unreachable


def test_an_up_server_with_a_failed_attempt_is_not_unreachable_yet() -> None:
    c = Clocked(Policy(alpha=False, retry=1))
    assert c.attempt(UNREACHABLE) is None
    assert not c.t.unreachable, "a round that has not failed changes nothing"


@pytest.mark.parametrize(
    ("up", "unreachable", "suspect", "on_failure", "replaced", "want"),
    [
        (True, False, False, "remove", False, "serve"),
        (True, False, False, "drain", False, "serve"),
        # Suspect: no new connections, but a live server keeps the ones it has.
        (True, False, True, "remove", False, "drain"),
        (True, False, True, "drain", False, "drain"),
        # Answers but fails: on_failure.
        (False, False, False, "drain", False, "drain"),
        (False, False, False, "remove", False, "remove"),
        # Does not answer: removed whatever on_failure says.
        (False, True, False, "drain", False, "remove"),
        (False, True, True, "drain", False, "remove"),
        (False, True, False, "remove", False, "remove"),
        # No verdict yet (alpha, or an agent that just restarted): no new connections, but
        # whatever it has goes on (removing it would end every connection at each restart).
        (None, False, False, "drain", False, "drain"),
        (None, False, False, "remove", False, "drain"),
        (None, False, True, "remove", False, "drain"),
        (None, False, False, "remove", True, "remove"),
        # Replaced by the sorry server (quorum lost): like a failed one.
        (True, False, False, "drain", True, "drain"),
        (True, False, False, "remove", True, "remove"),
        (False, True, False, "drain", True, "remove"),
    ],
)
def test_disposition(
    up: bool | None, unreachable: bool, suspect: bool, on_failure: str, replaced: bool, want: str
) -> None:
    assert disposition(up, unreachable, suspect, on_failure, replaced) == want
