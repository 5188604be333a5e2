"""NftGuard against a fake libnftables that keeps a table the way the kernel does:
reads before writes, nothing sent when nothing differs, drift repaired, errors explained."""

from __future__ import annotations

import copy
import errno
import ipaddress
import logging
from typing import Any

import pytest

from lvsagent.netfilter.nft import NftError, NftGuard
from lvsagent.netfilter.spec import GuardedService, GuardSpec

A = ipaddress.IPv4Address
WEB = GuardedService("tcp", A("172.16.0.30"), 80, 3)
BYPASS = GuardSpec("bypass", (WEB,))
ENOENT_TEXT = "internal:0:0-0: Error: No such file or directory\n\n"


class FakeNft:
    """Interprets the JSON commands NftGuard sends, for one ``ip`` table namespace.

    A batch is atomic: it runs on a copy that replaces the state only if every
    command succeeded, as libnftables' transaction does.
    """

    def __init__(self) -> None:
        self.tables: dict[str, dict[str, Any]] = {}
        self.sent: list[dict[str, Any]] = []
        self.fail: list[str] = []  # error texts for the next write batches
        self.handle = 0

    def run(self, doc: dict[str, Any], action: str) -> dict[str, Any]:
        cmds = doc["nftables"]
        if len(cmds) == 1 and "list" in cmds[0]:
            return self._list(cmds[0]["list"]["table"]["name"])
        self.sent.append(doc)
        if self.fail:
            raise NftError(action, self.fail.pop(0))
        state = copy.deepcopy(self.tables)
        for cmd in cmds:
            ((verb, body),) = cmd.items()
            ((kind, obj),) = body.items()
            self._do(state, verb, kind, obj, action)
        self.tables = state
        return {}

    def _do(self, state: dict[str, Any], verb: str, kind: str, obj: dict[str, Any],
            action: str) -> None:  # fmt: skip
        name: str = obj["table"] if "table" in obj else obj["name"]
        if kind == "table":
            if verb == "add":
                state.setdefault(name, {"chains": {}, "rules": []})
            elif name not in state:
                raise NftError(action, ENOENT_TEXT)
            else:
                del state[name]
            return
        table = state.get(name)
        if table is None:
            raise NftError(action, ENOENT_TEXT)
        if kind == "chain":
            if verb == "add":
                table["chains"].setdefault(
                    obj["name"], {k: v for k, v in obj.items() if k not in ("family", "table")}
                )
            elif obj["name"] not in table["chains"]:
                raise NftError(action, ENOENT_TEXT)
            elif verb == "flush":
                table["rules"] = [r for r in table["rules"] if r["chain"] != obj["name"]]
            else:
                del table["chains"][obj["name"]]
        elif kind == "rule":
            self.handle += 1
            expr = [{"counter": {"packets": 0, "bytes": 0}} if "counter" in e else e
                    for e in obj["expr"]]  # fmt: skip
            table["rules"].append({**obj, "expr": expr, "handle": self.handle})

    def _list(self, name: str) -> dict[str, Any]:
        table = self.tables.get(name)
        if table is None:
            raise NftError(f"list table ip {name}", ENOENT_TEXT)
        items: list[dict[str, Any]] = [{"metainfo": {"json_schema_version": 1}},
                                       {"table": {"family": "ip", "name": name}}]  # fmt: skip
        for cname, c in table["chains"].items():
            items.append({"chain": {"family": "ip", "table": name, **c, "name": cname}})
        for r in table["rules"]:
            items.append({"rule": {**copy.deepcopy(r), "family": "ip", "table": name}})
        return {"nftables": items}

    # Hand-made drift, like an operator's nft command.
    def flush_chain(self, chain: str) -> None:
        rules = self.tables["lvsagent"]["rules"]
        self.tables["lvsagent"]["rules"] = [r for r in rules if r["chain"] != chain]

    def rule_count(self, chain: str) -> int:
        return sum(r["chain"] == chain for r in self.tables["lvsagent"]["rules"])


@pytest.fixture
def nft() -> FakeNft:
    return FakeNft()


def test_apply_sends_only_when_the_kernel_differs(nft: FakeNft) -> None:
    guard = NftGuard(BYPASS, nft)
    assert guard.apply(True) is True
    assert nft.rule_count("bypass") == 1
    assert guard.apply(True) is False
    assert len(nft.sent) == 1
    assert guard.apply(False) is True
    assert nft.rule_count("bypass") == 0
    assert nft.rule_count("ct_keep") == 1
    assert guard.apply(False) is False
    assert len(nft.sent) == 2


def test_a_new_guard_adopts_a_matching_table_without_writing(nft: FakeNft) -> None:
    """A restarted agent finds its predecessor's table: nothing is re-sent."""
    NftGuard(BYPASS, nft).apply(True)
    assert NftGuard(BYPASS, nft).apply(True) is False
    assert len(nft.sent) == 1


def test_check_repairs_a_flushed_chain_and_a_deleted_table(
    nft: FakeNft, caplog: pytest.LogCaptureFixture
) -> None:
    guard = NftGuard(BYPASS, nft)
    assert guard.check() is False  # nothing applied yet: nothing to hold
    guard.apply(True)
    assert guard.check() is False
    nft.flush_chain("bypass")
    with caplog.at_level(logging.WARNING, logger="lvsagent.netfilter"):
        assert guard.check() is True
    assert nft.rule_count("bypass") == 1
    assert guard.last_drift == ["chain bypass: 0 rules differ from the 1 wanted"]
    assert "repaired drift" in caplog.text and "nft list table ip lvsagent" in caplog.text
    del nft.tables["lvsagent"]
    assert guard.check() is True
    assert guard.last_drift == ["table ip lvsagent missing"]
    assert guard.repairs == 2
    assert guard.check() is False


def test_switching_mode_replaces_the_chains(nft: FakeNft) -> None:
    guard = NftGuard(BYPASS, nft)
    guard.apply(True)
    assert guard.reconfigure(GuardSpec("fwmark", (WEB,), ("02:00:00:00:00:02",))) is True
    assert set(nft.tables["lvsagent"]["chains"]) == {"ct_keep", "fwmark_guard", "bypass"}
    assert nft.rule_count("fwmark_guard") == nft.rule_count("bypass") == 1
    assert guard.reconfigure(GuardSpec("backup_only", (WEB,))) is True
    assert set(nft.tables["lvsagent"]["chains"]) == {"ct_keep", "bypass"}
    assert nft.rule_count("bypass") == 0  # no peer MAC known: nothing to redirect
    assert nft.rule_count("fwmark_guard") == 0


def test_reconfigure_before_the_first_apply_sends_nothing(nft: FakeNft) -> None:
    guard = NftGuard(BYPASS, nft)
    assert guard.reconfigure(GuardSpec("bypass", ())) is False
    assert nft.sent == []


def test_remove_deletes_only_our_table(nft: FakeNft) -> None:
    nft.tables["filter"] = {"chains": {}, "rules": []}
    guard = NftGuard(BYPASS, nft)
    guard.apply(True)
    assert guard.remove() is True
    assert set(nft.tables) == {"filter"}
    assert guard.remove() is False
    assert guard.check() is False  # decommissioned: the resync timer must not restore it
    assert set(nft.tables) == {"filter"}


def test_a_failed_batch_is_retried_once_on_a_fresh_read(nft: FakeNft) -> None:
    guard = NftGuard(BYPASS, nft)
    nft.fail = ["Error: Could not process rule: Device or resource busy"]
    assert guard.apply(True) is True
    assert len(nft.sent) == 2


def test_errors_carry_the_text_and_what_to_check(nft: FakeNft) -> None:
    guard = NftGuard(BYPASS, nft)
    nft.fail = ["Error: Could not process rule: Operation not permitted\n"] * 2
    with pytest.raises(NftError) as info:
        guard.apply(True)
    assert isinstance(info.value, OSError)
    assert info.value.errno == errno.EPERM
    assert "Operation not permitted" in str(info.value) and "CAP_NET_ADMIN" in str(info.value)
    nft.fail = ["Error: Could not process rule: Operation not supported"] * 2
    with pytest.raises(NftError, match="CONFIG_NFT_NAT"):
        guard.apply(True)
    nft.fail = ["Error: something new"] * 2
    with pytest.raises(NftError, match="nft list table ip lvsagent"):
        guard.apply(True)


def test_state_reports_mode_role_rules_and_counters(nft: FakeNft) -> None:
    guard = NftGuard(BYPASS, nft)
    assert guard.state()["present"] is False
    guard.apply(True)
    (counter,) = (e for e in nft.tables["lvsagent"]["rules"][1]["expr"] if "counter" in e)
    counter["counter"]["packets"] = 5
    state = guard.state()
    assert state["mode"] == "bypass" and state["active"] is True and state["bypass"] == "on"
    assert state["rules"] == 2 and state["in_sync"] is True
    assert state["counters"]["bypass 172.16.0.30:80/tcp"]["packets"] == 5
    guard.apply(False)
    assert guard.state()["bypass"] == "off"


def test_transitions_are_logged_with_journal_fields(
    nft: FakeNft, caplog: pytest.LogCaptureFixture
) -> None:
    guard = NftGuard(BYPASS, nft)
    with caplog.at_level(logging.INFO, logger="lvsagent.netfilter"):
        guard.apply(True)
        guard.apply(True)
        guard.apply(False)
    records = [r for r in caplog.records if hasattr(r, "journal")]
    journals = [getattr(r, "journal") for r in records]  # noqa: B009 (set through extra=)
    assert [j["LVSAGENT_BYPASS"] for j in journals] == ["on", "off"]
    assert all(j["LVSAGENT_EVENT"] == "loop_guard" for j in journals)
    assert "172.16.0.30:80/tcp" in records[0].getMessage()
    assert "table ip lvsagent" in records[0].getMessage()


def test_fwmark_without_a_peer_mac_warns(nft: FakeNft, caplog: pytest.LogCaptureFixture) -> None:
    guard = NftGuard(GuardSpec("fwmark", (WEB,)), nft)
    with caplog.at_level(logging.WARNING, logger="lvsagent.netfilter"):
        guard.apply(False)
    assert "no peer MAC" in caplog.text


def test_a_readback_that_never_matches_is_reported_once(
    nft: FakeNft, caplog: pytest.LogCaptureFixture
) -> None:
    """Another nftables version printing rules differently must not go unnoticed."""
    real_list = nft._list

    def odd_list(name: str) -> dict[str, Any]:
        doc = real_list(name)
        for item in doc["nftables"]:
            for e in item.get("rule", {}).get("expr", []):
                if "match" in e and e["match"]["op"] == "in":
                    e["match"]["op"] = "=="
        return doc

    nft._list = odd_list  # type: ignore[method-assign]
    guard = NftGuard(BYPASS, nft)
    with caplog.at_level(logging.WARNING, logger="lvsagent.netfilter"):
        guard.apply(True)
        guard.apply(True)
    assert caplog.text.count("readback differs") == 1
