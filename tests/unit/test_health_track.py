"""VRRP tracking of real servers: keepalived's weight semantics over the monitor's verdicts."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lvsagent.config.schema import TrackRealServer
from lvsagent.health.track import combine, evaluate_servers
from lvsagent.vrrp.track import TrackVerdict

A = ipaddress.IPv4Address("172.16.0.31")
B = ipaddress.IPv4Address("172.16.0.32")


# The config's own entry type must satisfy the glue's Protocol (mypy checks the
# package; this checks the fields at run time).
Tracked = TrackRealServer


def verdicts(**by_port: bool | None) -> dict[tuple[ipaddress.IPv4Address, int], bool | None]:
    return {(A, int(port[1:])): v for port, v in by_port.items()}


def evaluate(tracked: list[Tracked], up: dict[tuple[ipaddress.IPv4Address, int], bool | None]
             ) -> TrackVerdict:  # fmt: skip
    return evaluate_servers(tracked, lambda address, port: up.get((address, port)))


def test_nothing_tracked_is_neutral() -> None:
    assert evaluate([], {}) == TrackVerdict(False, 0, "tracked real servers up")


def test_weight_zero_means_fault_while_down() -> None:
    tracked = [Tracked(A, 80, 0)]
    assert evaluate(tracked, verdicts(p80=True)) == TrackVerdict(
        False, 0, "tracked real servers up"
    )
    assert evaluate(tracked, verdicts(p80=False)) == TrackVerdict(
        True, 0, "real server 172.16.0.31:80 down"
    )


def test_negative_weight_lowers_priority_while_down() -> None:
    tracked = [Tracked(A, 80, -30)]
    assert evaluate(tracked, verdicts(p80=True)).adjustment == 0
    assert evaluate(tracked, verdicts(p80=False)) == TrackVerdict(
        False, -30, "tracked real server 172.16.0.31:80 down (weight -30)"
    )


def test_positive_weight_raises_priority_while_up() -> None:
    tracked = [Tracked(A, 80, 20)]
    assert evaluate(tracked, verdicts(p80=True)) == TrackVerdict(
        False, 20, "tracked real servers up"
    )
    assert evaluate(tracked, verdicts(p80=False)).adjustment == 0


@pytest.mark.parametrize("weight", [0, -10, 10])
def test_no_verdict_yet_counts_as_down(weight: int) -> None:
    up = evaluate([Tracked(A, 80, weight)], verdicts(p80=False))
    unknown = evaluate([Tracked(A, 80, weight)], verdicts(p80=None))
    assert (unknown.fault, unknown.adjustment) == (up.fault, up.adjustment)
    if weight <= 0:
        assert "172.16.0.31:80 not checked yet" in unknown.why


def test_weights_add_up_and_fault_names_every_fatal_server() -> None:
    tracked = [Tracked(A, 80, 0), Tracked(A, 443, 0), Tracked(A, 8080, -5), Tracked(A, 9000, 7)]
    v = evaluate(tracked, verdicts(p80=False, p443=None, p8080=False, p9000=True))
    assert v == TrackVerdict(
        True, 2, "real server 172.16.0.31:80 down, 172.16.0.31:443 not checked yet"
    )


def test_servers_are_told_apart_by_address_and_port() -> None:
    tracked = [Tracked(B, 80, 0)]
    # A:80 is down, but B:80 is what is tracked (and has no verdict).
    assert evaluate(tracked, {(A, 80): False, (B, 80): True}).fault is False


def test_combine_interfaces_and_servers() -> None:
    iface = TrackVerdict(False, -10, "tracked eth1 down (weight -10)")
    servers = TrackVerdict(False, 5, "tracked real servers up")
    assert combine(iface, servers) == TrackVerdict(False, -5, "tracked eth1 down (weight -10)")
    fault = TrackVerdict(True, 0, "real server 172.16.0.31:80 down")
    assert combine(iface, fault) == TrackVerdict(True, -10, "real server 172.16.0.31:80 down")
    assert combine() == TrackVerdict(False, 0, "nothing tracked")
    ok = TrackVerdict(False, 0, "tracked interfaces up")
    assert combine(ok, servers).why == "tracked interfaces up; tracked real servers up"


VERDICTS = st.sampled_from([True, False, None])


@given(
    st.lists(
        st.tuples(st.integers(1, 65535), st.integers(-50, 50), VERDICTS),
        max_size=8,
        unique_by=lambda t: t[0],
    )
)
def test_fault_exactly_when_a_weight_zero_server_is_not_up(
    entries: list[tuple[int, int, bool | None]],
) -> None:
    tracked = [Tracked(A, port, weight) for port, weight, _ in entries]
    up = {(A, port): v for port, _, v in entries}
    v = evaluate(tracked, up)
    assert v.fault == any(w == 0 and s is not True for _, w, s in entries)
    expected = sum(w for _, w, s in entries if (w > 0 and s is True) or (w < 0 and s is not True))
    assert v.adjustment == expected
