"""The values of lvsagent's nftables table, and the table as the kernel reads it back (pure).

Kept apart from the rules themselves (ruleset.py): these are the vocabulary
both sides use.  A readback compares equal to a desired table after dropping
what the kernel adds (counter values, handles) and putting set elements in one
order (nft lists them in its own; equality must not hang on it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

Json = dict[str, Any]

FAMILY = "ip"
TABLE = "lvsagent"
TABLE_LABEL = f"{FAMILY} {TABLE}"


@dataclass(frozen=True)
class Chain:
    """A base chain of our table, with policy accept."""

    name: str
    type: str
    hook: str
    prio: int
    policy: str = "accept"

    def to_json(self) -> Json:
        return {"family": FAMILY, "table": TABLE, "name": self.name, "type": self.type,
                "hook": self.hook, "prio": self.prio, "policy": self.policy}  # fmt: skip


@dataclass(frozen=True)
class Rule:
    """One rule: its chain, its comment (the service it serves) and its expressions."""

    chain: str
    comment: str
    expr: tuple[Json, ...]

    def to_json(self) -> Json:
        return {"family": FAMILY, "table": TABLE, "chain": self.chain,
                "comment": self.comment, "expr": list(self.expr)}  # fmt: skip


@dataclass(frozen=True)
class TableState:
    """Our table's configured content: chains and rules, no counters or handles."""

    chains: tuple[Chain, ...]
    rules: tuple[Rule, ...]

    def chain(self, name: str) -> Chain | None:
        return next((c for c in self.chains if c.name == name), None)

    def rules_of(self, chain: str) -> list[Rule]:
        return [r for r in self.rules if r.chain == chain]

    def same_as(self, other: TableState) -> bool:
        """Equal as tables: chain order does not matter, rule order inside a chain does."""
        return set(self.chains) == set(other.chains) and all(
            self.rules_of(c.name) == other.rules_of(c.name) for c in self.chains
        )



def match(left: Json, right: object, op: str = "==") -> Json:
    return {"match": {"op": op, "left": left, "right": right}}


def element_order(element: object) -> str:
    """The one order of a set's elements on both sides of a comparison."""
    return json.dumps(element, sort_keys=True)


def one_of(elements: list[Any]) -> object:
    """The right side of a match: the value itself, or an anonymous set of them in order."""
    return elements[0] if len(elements) == 1 else {"set": sorted(elements, key=element_order)}


def delete_table() -> Json:
    return {"nftables": [{"delete": {"table": {"family": FAMILY, "name": TABLE}}}]}


def list_table() -> Json:
    return {"nftables": [{"list": {"table": {"family": FAMILY, "name": TABLE}}}]}


def _strip_counters(value: Any) -> Any:
    """Counters read back as {"packets": n, "bytes": m}, the desired form is null; set
    elements in element_order."""
    if isinstance(value, dict):
        out = {k: None if k == "counter" else _strip_counters(v) for k, v in value.items()}
        elements = out.get("set")
        if isinstance(elements, list):
            out["set"] = sorted(elements, key=element_order)
        return out
    if isinstance(value, list):
        return [_strip_counters(v) for v in value]
    return value


def parse_table(readback: Json) -> TableState:
    """``nft -j list table ip lvsagent`` output -> TableState (counters and handles dropped).

    Chains without a hook (regular chains someone added) read as type/hook ""
    so that they differ from ours and get deleted.
    """
    chains: list[Chain] = []
    rules: list[Rule] = []
    for item in readback.get("nftables", []):
        if "chain" in item:
            c = item["chain"]
            if c.get("table") != TABLE or c.get("family") != FAMILY:
                continue
            chains.append(Chain(c["name"], c.get("type", ""), c.get("hook", ""),
                                int(c.get("prio", 0)), c.get("policy", "")))  # fmt: skip
        elif "rule" in item:
            r = item["rule"]
            if r.get("table") != TABLE or r.get("family") != FAMILY:
                continue
            exprs = tuple(_strip_counters(e) for e in r.get("expr", []))
            rules.append(Rule(r["chain"], r.get("comment", ""), exprs))
    return TableState(tuple(chains), tuple(rules))


def parse_counters(readback: Json) -> dict[str, dict[str, int]]:
    """Packet and byte counters of each rule, keyed by the rule's comment."""
    found: dict[str, dict[str, int]] = {}
    for item in readback.get("nftables", []):
        rule = item.get("rule")
        if not rule or rule.get("table") != TABLE:
            continue
        for e in rule.get("expr", []):
            counter = e.get("counter") if isinstance(e, dict) else None
            if isinstance(counter, dict):
                found[rule.get("comment", f"handle {rule.get('handle')}")] = {
                    "packets": int(counter.get("packets", 0)),
                    "bytes": int(counter.get("bytes", 0)),
                }
    return found


def describe_drift(desired: TableState, actual: TableState | None) -> list[str]:
    """What differs, in words an operator can check with ``nft list table ip lvsagent``."""
    if actual is None:
        return [f"table {TABLE_LABEL} missing"]
    out: list[str] = []
    for chain in desired.chains:
        have = actual.chain(chain.name)
        if have is None:
            out.append(f"chain {chain.name} missing")
        elif have != chain:
            out.append(f"chain {chain.name} changed ({have.type} {have.hook} {have.prio}"
                       f" {have.policy}, want {chain.type} {chain.hook} {chain.prio})")  # fmt: skip
        want_rules, have_rules = desired.rules_of(chain.name), actual.rules_of(chain.name)
        if have is not None and want_rules != have_rules:
            out.append(f"chain {chain.name}: {len(have_rules)} rules differ from the "
                       f"{len(want_rules)} wanted")  # fmt: skip
    names = {c.name for c in desired.chains}
    out.extend(f"chain {c.name} not ours" for c in actual.chains if c.name not in names)
    return out
