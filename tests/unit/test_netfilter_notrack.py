"""The notrack table as JSON, its terse readback, and its upkeep against a recording backend.

READBACK_TERSE is what ``nft -t -j list table ip lvsagent_notrack`` returned after
Untracked.apply (nftables 1.0.6, kernel 6.18), but for the counter values, set here;
tests/netns/test_notrack.py reads it from the kernel at each run.
"""

from __future__ import annotations

import copy
import errno
from ipaddress import IPv4Address
from typing import Any

import pytest

from lvsagent.netfilter.nft import NftError
from lvsagent.netfilter.notrack import (
    CheckTarget,
    Untracked,
    change_elements,
    matches,
    write_all,
)

T = {"family": "ip", "table": "lvsagent_notrack"}
WEB1, WEB2, ALT = (CheckTarget(IPv4Address("172.16.0.31"), 80),
                   CheckTarget(IPv4Address("172.16.0.32"), 80),
                   CheckTarget(IPv4Address("172.16.0.32"), 8080))  # fmt: skip
SADDR_SPORT = {"concat": [{"payload": {"protocol": "ip", "field": "saddr"}},
                          {"payload": {"protocol": "tcp", "field": "sport"}}]}  # fmt: skip
DADDR_DPORT = {"concat": [{"payload": {"protocol": "ip", "field": "daddr"}},
                          {"payload": {"protocol": "tcp", "field": "dport"}}]}  # fmt: skip
VRRP = {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "protocol"}},
                  "right": "vrrp"}}  # fmt: skip
UNTRACK = [{"counter": {"packets": 3, "bytes": 180}}, {"notrack": None}]


def rule(chain: str, handle: int, comment: str, *exprs: Any) -> dict[str, Any]:
    return {"rule": {**T, "chain": chain, "handle": handle, "comment": comment,
                     "expr": [*exprs, *copy.deepcopy(UNTRACK)]}}  # fmt: skip


def in_set(left: Any) -> dict[str, Any]:
    return {"match": {"op": "==", "left": left, "right": "@checks"}}


READBACK_TERSE: dict[str, Any] = {"nftables": [
    {"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5",
                  "json_schema_version": 1}},
    {"table": {"family": "ip", "name": "lvsagent_notrack", "handle": 4}},
    {"set": {"family": "ip", "name": "checks", "table": "lvsagent_notrack",
             "type": ["ipv4_addr", "inet_service"], "handle": 3}},
    {"chain": {**T, "name": "prerouting", "handle": 1, "type": "filter", "hook": "prerouting",
               "prio": -300, "policy": "accept"}},
    {"chain": {**T, "name": "output", "handle": 2, "type": "filter", "hook": "output",
               "prio": -300, "policy": "accept"}},
    rule("prerouting", 4, "VRRP", VRRP),
    rule("prerouting", 5, "health check replies", in_set(SADDR_SPORT)),
    rule("output", 6, "VRRP", VRRP),
    rule("output", 7, "health checks", in_set(DADDR_DPORT)),
    rule("output", 8, "health check replies of this box's servers",
         {"match": {"op": "==", "left": {"meta": {"key": "oifname"}}, "right": "lo"}},
         in_set(SADDR_SPORT)),
]}  # fmt: skip


def test_the_whole_table_in_one_batch() -> None:
    cmds = write_all(frozenset({ALT, WEB2, WEB1}))["nftables"]
    verbs = [(next(iter(c)), next(iter(next(iter(c.values()))))) for c in cmds]
    assert verbs == [("add", "table"), ("add", "chain"), ("add", "chain"), ("add", "set"),
                     ("flush", "chain"), ("flush", "chain"), ("flush", "set"),
                     *[("add", "rule")] * 5, ("add", "element")]  # fmt: skip
    chains = [c["add"]["chain"] for c in cmds[1:3]]
    assert {(c["hook"], c["prio"]) for c in chains} == {("prerouting", -300), ("output", -300)}
    assert cmds[-1]["add"]["element"]["elem"] == [
        {"concat": ["172.16.0.31", 80]},
        {"concat": ["172.16.0.32", 80]},
        {"concat": ["172.16.0.32", 8080]},
    ]
    assert "element" not in str(write_all(frozenset()))  # no checks: an empty set


def test_the_terse_readback_matches_and_a_changed_one_does_not() -> None:
    assert matches(READBACK_TERSE)
    for drift in (
        lambda d: d["nftables"].pop(6),  # a rule deleted
        lambda d: d["nftables"].pop(2),  # the set deleted
        lambda d: d["nftables"][3]["chain"].update(prio=0),  # a chain's priority
        lambda d: d["nftables"].clear(),  # no table
    ):
        doc = copy.deepcopy(READBACK_TERSE)
        drift(doc)
        assert not matches(doc)


class FakeNft:
    """Records each batch; fails the ones whose first command is listed in ``refuse``."""

    def __init__(self, readback: dict[str, Any]) -> None:
        self.sent: list[dict[str, Any]] = []
        self.readback = readback
        self.refuse: set[str] = set()

    def run(self, doc: dict[str, Any], action: str) -> dict[str, Any]:
        first = next(iter(doc["nftables"][0]))
        if first == "list":
            return self.readback
        if first in self.refuse:
            raise NftError(action, "Could not process rule: No such file or directory")
        self.sent.append(doc)
        return {}


@pytest.fixture
def nft() -> FakeNft:
    return FakeNft(copy.deepcopy(READBACK_TERSE))


def test_a_reload_sends_only_the_changed_elements(nft: FakeNft) -> None:
    u = Untracked(frozenset({WEB1, WEB2}), nft, nft)
    u.apply()
    u.reconfigure(frozenset({WEB1, ALT}))
    assert nft.sent[-1] == change_elements(frozenset({ALT}), frozenset({WEB2}))
    u.reconfigure(frozenset({WEB1, ALT}))  # the same set again: nothing
    assert len(nft.sent) == 2


def test_a_set_changed_by_hand_is_written_whole_on_the_next_reload(nft: FakeNft) -> None:
    u = Untracked(frozenset({WEB1, WEB2}), nft, nft)
    u.apply()
    nft.refuse.add("delete")  # WEB2 is no longer there
    u.reconfigure(frozenset({WEB1}))
    assert nft.sent[-1] == write_all(frozenset({WEB1}))


def test_check_repairs_the_shape_and_leaves_a_good_table_alone(nft: FakeNft) -> None:
    u = Untracked(frozenset({WEB1}), nft, nft)
    assert u.check() is True  # never written: written now
    assert u.check() is False and len(nft.sent) == 1
    nft.readback["nftables"].pop(5)  # someone deleted a rule
    assert u.check() is True
    assert nft.sent[-1] == write_all(frozenset({WEB1}))


def test_remove_is_quiet_when_there_is_nothing_to_remove(nft: FakeNft) -> None:
    nft.refuse.add("delete")
    u = Untracked(frozenset(), nft, nft)
    u.remove()  # ENOENT: the goal
    assert NftError("x", "No such file or directory").errno == errno.ENOENT


@pytest.mark.parametrize(
    ("make", "named"),
    [
        (lambda: CheckTarget("10.0.0.1", 80), "10.0.0.1"),  # type: ignore[arg-type]
        (lambda: CheckTarget(IPv4Address("10.0.0.1"), 0), "0"),
        (lambda: CheckTarget(IPv4Address("10.0.0.1"), True), "True"),  # type: ignore[arg-type]
    ],
)
def test_bad_check_targets_are_refused(make: Any, named: str) -> None:
    with pytest.raises(ValueError, match=named.replace(".", r"\.")):
        make()
