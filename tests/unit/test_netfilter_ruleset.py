"""The loop guard's table as JSON: golden transactions per mode and state, validation,
and the readback comparison against JSON recorded from the kernel (nftables 1.0.6)."""

from __future__ import annotations

import copy
import ipaddress
from typing import Any

import pytest

from lvsagent.netfilter.ruleset import (
    BYPASS,
    CT_KEEP,
    FWMARK,
    Chain,
    Rule,
    TableState,
    describe_drift,
    desired_guard_table,
    parse_counters,
    parse_table,
    peer_macs_of,
    transaction,
)
from lvsagent.netfilter.spec import GuardedService, GuardSpec, normalize_mac

A = ipaddress.IPv4Address
WEB = GuardedService("tcp", A("172.16.0.30"), 80, 3)
DNS_ANY = GuardedService("udp", A("172.16.0.30"), None, 4)
T = {"family": "ip", "table": "lvsagent"}
CT_RULE = {**T, "chain": "ct_keep",
           "comment": "lvsagent: keeps conntrack hooked for redirected connections",
           "expr": [{"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": "invalid"}},
                    {"counter": None}]}  # fmt: skip
DADDR = {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "daddr"}},
                   "right": "172.16.0.30"}}  # fmt: skip
DPORT80 = {"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}},
                     "right": 80}}  # fmt: skip
ANY_UDP = {"match": {"op": "==", "left": {"meta": {"key": "l4proto"}}, "right": "udp"}}
SYN_ONLY = {"match": {"op": "==", "right": "syn", "left": {
    "&": [{"payload": {"protocol": "tcp", "field": "flags"}}, ["syn", "ack"]]}}}  # fmt: skip


def chain(name: str, type_: str, prio: int) -> dict[str, Any]:
    return {"add": {"chain": {**T, "name": name, "type": type_, "hook": "prerouting",
                              "prio": prio, "policy": "accept"}}}  # fmt: skip


def flush(name: str) -> dict[str, Any]:
    return {"flush": {"chain": {**T, "name": name}}}


ADD_TABLE = {"add": {"table": {"family": "ip", "name": "lvsagent"}}}


def test_bypass_active_redirects_each_service_by_protocol_vip_and_port() -> None:
    doc = transaction(desired_guard_table(GuardSpec("bypass", (WEB, DNS_ANY)), active=True), None)
    assert doc == {"nftables": [
        ADD_TABLE,
        chain("ct_keep", "filter", -150),
        chain("bypass", "nat", -100),
        flush("ct_keep"),
        flush("bypass"),
        {"add": {"rule": CT_RULE}},
        {"add": {"rule": {**T, "chain": "bypass", "comment": "bypass 172.16.0.30:80/tcp",
                          "expr": [DADDR, DPORT80, SYN_ONLY, {"counter": None},
                                   {"redirect": None}]}}},
        {"add": {"rule": {**T, "chain": "bypass", "comment": "bypass 172.16.0.30:*/udp",
                          "expr": [DADDR, ANY_UDP, {"counter": None}, {"redirect": None}]}}},
    ]}  # fmt: skip


def test_bypass_inactive_keeps_the_chains_and_empties_the_redirects() -> None:
    doc = transaction(desired_guard_table(GuardSpec("bypass", (WEB,)), active=False), None)
    assert doc == {"nftables": [
        ADD_TABLE,
        chain("ct_keep", "filter", -150),
        chain("bypass", "nat", -100),
        flush("ct_keep"),
        flush("bypass"),
        {"add": {"rule": CT_RULE}},
    ]}  # fmt: skip


def test_bypass_inactive_with_a_peer_mac_still_serves_the_peers_forwards_locally() -> None:
    peer = "08:00:27:e1:3c:c5"
    spec = GuardSpec("bypass", (WEB,), (peer,))
    saddr = {"match": {"op": "==", "right": peer,
                       "left": {"payload": {"protocol": "ether", "field": "saddr"}}}}  # fmt: skip
    doc = transaction(desired_guard_table(spec, active=False), None)
    assert doc["nftables"][-1] == {"add": {"rule": {
        **T, "chain": "bypass", "comment": "bypass 172.16.0.30:80/tcp from the peer",
        "expr": [DADDR, DPORT80, saddr, SYN_ONLY, {"counter": None},
                 {"redirect": None}]}}}  # fmt: skip
    # Engaged, everything is redirected anyway: no separate peer rule.
    active = desired_guard_table(spec, active=True)
    assert [r.comment for r in active.rules_of("bypass")] == ["bypass 172.16.0.30:80/tcp"]


def test_fwmark_marks_what_the_peer_did_not_send_whatever_the_state() -> None:
    spec = GuardSpec("fwmark", (WEB,), ("08:00:27:E1:3C:C5",))
    for active in (True, False):
        doc = transaction(desired_guard_table(spec, active), None)
        assert doc == {"nftables": [
            ADD_TABLE,
            chain("ct_keep", "filter", -150),
            chain("fwmark_guard", "filter", -150),
            chain("bypass", "nat", -100),
            flush("ct_keep"),
            flush("fwmark_guard"),
            flush("bypass"),
            {"add": {"rule": CT_RULE}},
            {"add": {"rule": {**T, "chain": "fwmark_guard",
                              "comment": "fwmark 3 172.16.0.30:80/tcp", "expr": [
                DADDR, DPORT80,
                {"match": {"op": "!=",
                           "left": {"payload": {"protocol": "ether", "field": "saddr"}},
                           "right": "08:00:27:e1:3c:c5"}},
                {"counter": None},
                {"mangle": {"key": {"meta": {"key": "mark"}}, "value": 3}},
            ]}}},
            # The peer's forwards go around IPVS's connection table (a reused port).
            {"add": {"rule": {**T, "chain": "bypass",
                              "comment": "bypass 172.16.0.30:80/tcp from the peer", "expr": [
                DADDR, DPORT80,
                {"match": {"op": "==",
                           "left": {"payload": {"protocol": "ether", "field": "saddr"}},
                           "right": "08:00:27:e1:3c:c5"}},
                SYN_ONLY, {"counter": None}, {"redirect": None},
            ]}}},
        ]}  # fmt: skip


def test_the_peers_tcp_forwards_are_redirected_at_their_syn_only() -> None:
    """A connection this box's IPVS served and the peer forwards mid-stream after a failover
    (synced entry) must reach IPVS, not a local address with no socket; UDP has no SYN."""
    tcp_any = GuardedService("tcp", A("172.16.0.30"), None)
    spec = GuardSpec("backup_only", (tcp_any, DNS_ANY), ("08:00:27:e1:3c:c5",))
    tcp_rule, udp_rule = desired_guard_table(spec, True).rules_of("bypass")
    # every TCP port: nft reads `meta l4proto tcp` back as implied by the flags match
    assert tcp_rule.expr[0] == DADDR and tcp_rule.expr[2] == SYN_ONLY
    assert all("meta" not in str(e) for e in tcp_rule.expr)
    assert udp_rule.expr[1] == ANY_UDP and SYN_ONLY not in udp_rule.expr


def test_fwmark_with_two_peer_macs_uses_a_sorted_set() -> None:
    spec = GuardSpec("fwmark", (WEB,), ("08:00:27:e1:3c:c5", "08:00:27:77:84:EF"))
    (rule,) = desired_guard_table(spec, False).rules_of("fwmark_guard")
    assert rule.expr[2]["match"]["right"] == {"set": ["08:00:27:77:84:ef", "08:00:27:e1:3c:c5"]}


def test_fwmark_without_a_peer_mac_marks_nothing() -> None:
    """Marking everything would let both boxes balance: the loop.  Nothing is the safe side."""
    table = desired_guard_table(GuardSpec("fwmark", (WEB,)), False)
    assert table.chains == (CT_KEEP, FWMARK, BYPASS)
    assert table.rules_of("fwmark_guard") == table.rules_of("bypass") == []


def test_backup_only_without_a_peer_mac_has_only_the_conntrack_keeper() -> None:
    for active in (True, False):
        table = desired_guard_table(GuardSpec("backup_only", (WEB,)), active)
        assert table.chains == (CT_KEEP, BYPASS)
        assert [r.chain for r in table.rules] == ["ct_keep"]


def test_backup_only_serves_the_peers_forwards_locally_in_every_state() -> None:
    """A master killed with -9 keeps its master sync daemon, so its IPVS is on: without this
    redirect it would balance again what the new master forwards it."""
    spec = GuardSpec("backup_only", (WEB, DNS_ANY), ("08:00:27:e1:3c:c5",))
    engaged, released = desired_guard_table(spec, True), desired_guard_table(spec, False)
    assert engaged == released
    rules = engaged.rules_of("bypass")
    assert [r.comment for r in rules] == [
        "bypass 172.16.0.30:80/tcp from the peer",
        "bypass 172.16.0.30:*/udp from the peer",
    ]
    assert all({"redirect": None} in r.expr for r in rules)
    assert all(
        {"match": {"op": "==", "left": {"payload": {"protocol": "ether", "field": "saddr"}},
                   "right": "08:00:27:e1:3c:c5"}} in r.expr
        for r in rules
    )  # fmt: skip


def test_every_mode_keeps_conntrack_hooked() -> None:
    for mode in ("bypass", "fwmark", "backup_only"):
        for active in (True, False):
            table = desired_guard_table(GuardSpec(mode, (WEB,), ("02:00:00:00:00:01",)), active)
            assert table.rules[0].expr[0]["match"]["left"] == {"ct": {"key": "state"}}


def test_duplicate_services_share_one_rule() -> None:
    table = desired_guard_table(GuardSpec("bypass", (WEB, WEB, DNS_ANY)), True)
    assert len(table.rules_of("bypass")) == 2


def test_unwanted_or_changed_chains_are_flushed_and_deleted_first() -> None:
    """Switching mode bypass -> fwmark, and a chain whose priority someone changed."""
    changed_ct = Chain("ct_keep", "filter", "prerouting", 0)
    actual = TableState((changed_ct, BYPASS, Chain("extra", "", "", 0, "")), ())
    doc = transaction(desired_guard_table(GuardSpec("fwmark", (WEB,)), False), actual)
    cmds = doc["nftables"]
    deleted = [c["delete"]["chain"]["name"] for c in cmds if "delete" in c]
    assert deleted == ["ct_keep", "extra"]
    first_add_chain = next(i for i, c in enumerate(cmds) if "chain" in c.get("add", {}))
    last_delete = max(i for i, c in enumerate(cmds) if "delete" in c)
    assert last_delete < first_add_chain


def test_no_deletes_when_the_chains_are_right() -> None:
    desired = desired_guard_table(GuardSpec("bypass", (WEB,)), True)
    doc = transaction(desired, TableState(desired.chains, ()))
    assert not [c for c in doc["nftables"] if "delete" in c]


@pytest.mark.parametrize(
    ("make", "named"),
    [
        (lambda: GuardedService("tcp", "10.0.0.300", 80), "10.0.0.300"),  # type: ignore[arg-type]
        (lambda: GuardedService("tcp", "example.com", 80), "example.com"),  # type: ignore[arg-type]
        (lambda: GuardedService("tcp", A("0.0.0.0"), 80), "0.0.0.0"),
        (lambda: GuardedService("tcp", A("224.0.0.18"), 80), "224.0.0.18"),
        (lambda: GuardedService("icmp", A("10.0.0.1"), 80), "icmp"),  # type: ignore[arg-type]
        (lambda: GuardedService("tcp", A("10.0.0.1"), 0), "0"),
        (lambda: GuardedService("tcp", A("10.0.0.1"), 65536), "65536"),
        (lambda: GuardedService("tcp", A("10.0.0.1"), True), "True"),
        (lambda: GuardedService("tcp", A("10.0.0.1"), 80, 0), "fwmark 0"),
        (lambda: GuardedService("tcp", A("10.0.0.1"), 80, 2**32), str(2**32)),
        (lambda: GuardSpec("bypass", (WEB,), ("08:00:27:e1:3c",)), "08:00:27:e1:3c"),
        (lambda: GuardSpec("bypass", (WEB,), ("gg:00:27:e1:3c:c5",)), "gg:00:27:e1:3c:c5"),
        (lambda: GuardSpec("bypass", (WEB,), ("ff:ff:ff:ff:ff:ff",)), "ff:ff:ff:ff:ff:ff"),
        (lambda: GuardSpec("bypass", (WEB,), ("00:00:00:00:00:00",)), "00:00:00:00:00:00"),
        (lambda: GuardSpec("bypass", (WEB,), (b"\x08" * 6,)), "x08"),  # type: ignore[arg-type]
        (lambda: GuardSpec("loop", (WEB,)), "loop"),  # type: ignore[arg-type]
        (lambda: GuardSpec("fwmark", (GuardedService("tcp", A("10.0.0.1"), 80),)), "10.0.0.1"),
        (lambda: GuardSpec("fwmark", (WEB, GuardedService("tcp", WEB.vip, 80, 9))), "9"),
    ],
)
def test_bad_values_are_refused_before_any_json_naming_the_value(make: Any, named: str) -> None:
    with pytest.raises(ValueError, match=named.replace(".", r"\.")):
        make()


def test_macs_are_normalised_to_the_readback_form() -> None:
    assert normalize_mac("08-00-27-E1-3C-C5") == "08:00:27:e1:3c:c5"
    spec = GuardSpec("fwmark", (WEB,), ("08:00:27:E1:3C:C5", "08:00:27:e1:3c:c5"))
    assert spec.peer_macs == ("08:00:27:e1:3c:c5",)


def test_a_string_vip_is_parsed_not_passed_on() -> None:
    svc = GuardedService("tcp", "172.16.0.30", 80)  # type: ignore[arg-type]
    assert svc.vip == A("172.16.0.30")


# Recorded with `nft -j list table ip lvsagent` after NftGuard.apply (nftables 1.0.6,
# kernel 6.18), bypass mode, active, with traffic on the first service.
READBACK_BYPASS: dict[str, Any] = {"nftables": [
    {"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5",
                  "json_schema_version": 1}},
    {"table": {"family": "ip", "name": "lvsagent", "handle": 1}},
    {"chain": {"family": "ip", "table": "lvsagent", "name": "ct_keep", "handle": 1,
               "type": "filter", "hook": "prerouting", "prio": -150, "policy": "accept"}},
    {"chain": {"family": "ip", "table": "lvsagent", "name": "bypass", "handle": 2,
               "type": "nat", "hook": "prerouting", "prio": -100, "policy": "accept"}},
    {"rule": {"family": "ip", "table": "lvsagent", "chain": "ct_keep", "handle": 3,
              "comment": "lvsagent: keeps conntrack hooked for redirected connections",
              "expr": [{"match": {"op": "in", "left": {"ct": {"key": "state"}},
                                  "right": "invalid"}},
                       {"counter": {"packets": 0, "bytes": 0}}]}},
    {"rule": {"family": "ip", "table": "lvsagent", "chain": "bypass", "handle": 4,
              "comment": "bypass 172.16.0.30:80/tcp",
              "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "ip",
                                                                   "field": "daddr"}},
                                  "right": "172.16.0.30"}},
                       {"match": {"op": "==", "left": {"payload": {"protocol": "tcp",
                                                                   "field": "dport"}},
                                  "right": 80}},
                       {"match": {"op": "==", "left": {"&": [{"payload": {"protocol": "tcp",
                                                                          "field": "flags"}},
                                                             ["syn", "ack"]]},
                                  "right": "syn"}},
                       {"counter": {"packets": 7, "bytes": 420}}, {"redirect": None}]}},
    {"rule": {"family": "ip", "table": "lvsagent", "chain": "bypass", "handle": 5,
              "comment": "bypass 172.16.0.30:*/udp",
              "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "ip",
                                                                   "field": "daddr"}},
                                  "right": "172.16.0.30"}},
                       {"match": {"op": "==", "left": {"meta": {"key": "l4proto"}},
                                  "right": "udp"}},
                       {"counter": {"packets": 0, "bytes": 0}}, {"redirect": None}]}},
]}  # fmt: skip

# The same, fwmark mode with two peer MACs (first service only). The peer rule's SYN match
# was added when the rule gained it; the whole readback was then compared with the kernel's
# again (equal but for handles and counters); tests/netns/test_netfilter.py does so each run.
READBACK_FWMARK: dict[str, Any] = {"nftables": [
    {"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5",
                  "json_schema_version": 1}},
    {"table": {"family": "ip", "name": "lvsagent", "handle": 2}},
    {"chain": {"family": "ip", "table": "lvsagent", "name": "ct_keep", "handle": 1,
               "type": "filter", "hook": "prerouting", "prio": -150, "policy": "accept"}},
    {"chain": {"family": "ip", "table": "lvsagent", "name": "fwmark_guard", "handle": 2,
               "type": "filter", "hook": "prerouting", "prio": -150, "policy": "accept"}},
    {"chain": {"family": "ip", "table": "lvsagent", "name": "bypass", "handle": 3,
               "type": "nat", "hook": "prerouting", "prio": -100, "policy": "accept"}},
    {"rule": {"family": "ip", "table": "lvsagent", "chain": "ct_keep", "handle": 3,
              "comment": "lvsagent: keeps conntrack hooked for redirected connections",
              "expr": [{"match": {"op": "in", "left": {"ct": {"key": "state"}},
                                  "right": "invalid"}},
                       {"counter": {"packets": 0, "bytes": 0}}]}},
    {"rule": {"family": "ip", "table": "lvsagent", "chain": "fwmark_guard", "handle": 5,
              "comment": "fwmark 3 172.16.0.30:80/tcp",
              "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "ip",
                                                                   "field": "daddr"}},
                                  "right": "172.16.0.30"}},
                       {"match": {"op": "==", "left": {"payload": {"protocol": "tcp",
                                                                   "field": "dport"}},
                                  "right": 80}},
                       {"match": {"op": "!=", "left": {"payload": {"protocol": "ether",
                                                                   "field": "saddr"}},
                                  "right": {"set": ["08:00:27:77:84:ef",
                                                    "08:00:27:e1:3c:c5"]}}},
                       {"counter": {"packets": 12, "bytes": 800}},
                       {"mangle": {"key": {"meta": {"key": "mark"}}, "value": 3}}]}},
    {"rule": {"family": "ip", "table": "lvsagent", "chain": "bypass", "handle": 8,
              "comment": "bypass 172.16.0.30:80/tcp from the peer",
              "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "ip",
                                                                   "field": "daddr"}},
                                  "right": "172.16.0.30"}},
                       {"match": {"op": "==", "left": {"payload": {"protocol": "tcp",
                                                                   "field": "dport"}},
                                  "right": 80}},
                       {"match": {"op": "==", "left": {"payload": {"protocol": "ether",
                                                                   "field": "saddr"}},
                                  "right": {"set": ["08:00:27:77:84:ef",
                                                    "08:00:27:e1:3c:c5"]}}},
                       {"match": {"op": "==", "left": {"&": [{"payload": {"protocol": "tcp",
                                                                          "field": "flags"}},
                                                             ["syn", "ack"]]},
                                  "right": "syn"}},
                       {"counter": {"packets": 0, "bytes": 0}}, {"redirect": None}]}},
]}  # fmt: skip


def test_recorded_readbacks_equal_the_desired_tables() -> None:
    bypass = desired_guard_table(GuardSpec("bypass", (WEB, DNS_ANY)), True)
    assert parse_table(READBACK_BYPASS).same_as(bypass)
    assert describe_drift(bypass, parse_table(READBACK_BYPASS)) == []
    macs = ("08:00:27:E1:3C:C5", "08:00:27:77:84:ef")
    fwmark = desired_guard_table(GuardSpec("fwmark", (WEB,), macs), False)
    assert parse_table(READBACK_FWMARK).same_as(fwmark)


def test_readback_of_another_state_or_spec_differs() -> None:
    actual = parse_table(READBACK_BYPASS)
    assert not actual.same_as(desired_guard_table(GuardSpec("bypass", (WEB, DNS_ANY)), False))
    assert not actual.same_as(desired_guard_table(GuardSpec("bypass", (WEB,)), True))
    other_port = GuardedService("tcp", A("172.16.0.30"), 8080)
    assert not actual.same_as(desired_guard_table(GuardSpec("bypass", (other_port, DNS_ANY)), True))
    assert not actual.same_as(desired_guard_table(GuardSpec("fwmark", (WEB, DNS_ANY)), True))


def test_the_peer_macs_a_left_table_names_are_found() -> None:
    assert peer_macs_of(parse_table(READBACK_FWMARK)) == ("08:00:27:77:84:ef", "08:00:27:e1:3c:c5")
    assert peer_macs_of(parse_table(READBACK_BYPASS)) == ()
    hand_edit = desired_guard_table(GuardSpec("backup_only", (WEB,), ("02:00:00:00:00:01",)), True)
    (rule,) = hand_edit.rules_of("bypass")
    odd = Rule(rule.chain, rule.comment, tuple(
        {"match": {**e["match"], "right": "ff:ff:ff:ff:ff:ff"}}
        if "ether" in str(e) else e for e in rule.expr
    ))  # fmt: skip
    assert peer_macs_of(TableState(hand_edit.chains, (odd,))) == ()


def test_rule_order_matters_chain_order_does_not() -> None:
    desired = desired_guard_table(GuardSpec("bypass", (WEB, DNS_ANY)), True)
    swapped = copy.deepcopy(READBACK_BYPASS)
    items = swapped["nftables"]
    items[2], items[3] = items[3], items[2]
    assert parse_table(swapped).same_as(desired)
    items[5], items[6] = items[6], items[5]
    assert not parse_table(swapped).same_as(desired)


def test_drift_is_described_in_words() -> None:
    desired = desired_guard_table(GuardSpec("bypass", (WEB, DNS_ANY)), True)
    assert describe_drift(desired, None) == ["table ip lvsagent missing"]
    flushed = copy.deepcopy(READBACK_BYPASS)
    flushed["nftables"] = [i for i in flushed["nftables"] if i.get("rule", {}).get("chain")
                           != "bypass"]  # fmt: skip
    assert describe_drift(desired, parse_table(flushed)) == [
        "chain bypass: 0 rules differ from the 2 wanted"
    ]
    no_ct = copy.deepcopy(READBACK_BYPASS)
    no_ct["nftables"] = [i for i in no_ct["nftables"]
                         if "ct_keep" not in (i.get("chain", {}).get("name"),
                                              i.get("rule", {}).get("chain"))]  # fmt: skip
    assert describe_drift(desired, parse_table(no_ct)) == ["chain ct_keep missing"]


def test_counters_are_keyed_by_the_rule_comment() -> None:
    counters = parse_counters(READBACK_BYPASS)
    assert counters["bypass 172.16.0.30:80/tcp"] == {"packets": 7, "bytes": 420}
    assert counters["bypass 172.16.0.30:*/udp"] == {"packets": 0, "bytes": 0}
    assert parse_counters(READBACK_FWMARK)["fwmark 3 172.16.0.30:80/tcp"]["packets"] == 12


def test_foreign_tables_in_a_readback_are_ignored() -> None:
    doc = copy.deepcopy(READBACK_BYPASS)
    doc["nftables"].append({"chain": {"family": "inet", "table": "filter", "name": "input",
                                      "handle": 1, "type": "filter", "hook": "input",
                                      "prio": 0, "policy": "drop"}})  # fmt: skip
    doc["nftables"].append({"rule": {"family": "inet", "table": "filter", "chain": "input",
                                     "handle": 2, "expr": [{"accept": None}]}})  # fmt: skip
    desired = desired_guard_table(GuardSpec("bypass", (WEB, DNS_ANY)), True)
    assert parse_table(doc).same_as(desired)
