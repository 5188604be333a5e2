"""The loop guard's nftables table as values: spec in, JSON transaction out (pure).

Why a table of our own: lvsagent must never touch rules it does not own, and an
``ip lvsagent`` table can be read back, compared and replaced in one atomic
libnftables transaction (add table, add chains, flush chains, add rules) without
looking at anybody else's.  Re-sending the same transaction converges to the
same table, so apply is idempotent; the adapter (nft.py) still sends nothing when
the kernel already matches, which keeps counters and handles stable.

Three chains, each only in the modes that need it:

``ct_keep``       every mode.  ``ct state invalid counter`` does nothing to traffic;
                  it holds the namespace's conntrack reference.  Without it,
                  flushing the last redirect rule (the MASTER transition) unhooks
                  conntrack and every connection the bypass had redirected stops
                  getting its replies un-NATed (Linux 6.1; pinned in
                  tests/netns/test_netfilter.py).
``bypass``        nat prerouting.  Bypass mode (the design's second scheme): in
                  BACKUP/FAULT, traffic for each virtual service (its protocol,
                  VIP and port, never "all TCP") is redirected to the local real
                  server, so IPVS on this box never sees it; in MASTER only what
                  the peer's MAC sends is.  fwmark and backup_only: only what the
                  peer's MAC sends, in every state (see peer_bypass_rule).
``fwmark_guard``  fwmark mode (the design's first scheme).  mangle prerouting: packets
                  to a service that did not come from the peer's MAC get the
                  service's mark; the peer's forwards stay unmarked, miss the
                  fwmark virtual service and reach the local server.  State
                  independent: it holds with no agent running.

The rules are written in the form ``nft -j list`` reads them back (``ct state`` with
op ``in``, set elements sorted, MACs lower case), so that comparing a readback
with the desired table is equality after dropping counters and handles
(parse_table).  Every rule carries a comment naming its service: operators see it
in ``nft list table ip lvsagent`` and state() keys its counters by it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lvsagent.netfilter.spec import GuardedService, GuardMode, GuardSpec, normalize_mac

# The spec types are re-exported: callers build a GuardSpec and hand it here.
__all__ = [
    "BYPASS_CHAIN",
    "CT_CHAIN",
    "FWMARK_CHAIN",
    "TABLE",
    "TABLE_LABEL",
    "Chain",
    "GuardMode",
    "GuardSpec",
    "GuardedService",
    "Rule",
    "TableState",
    "delete_table",
    "describe_drift",
    "desired_guard_table",
    "list_table",
    "parse_counters",
    "parse_table",
    "peer_macs_of",
    "transaction",
]

Json = dict[str, Any]

FAMILY = "ip"
TABLE = "lvsagent"
TABLE_LABEL = f"{FAMILY} {TABLE}"
CT_CHAIN = "ct_keep"
BYPASS_CHAIN = "bypass"
FWMARK_CHAIN = "fwmark_guard"
CT_COMMENT = "lvsagent: keeps conntrack hooked for redirected connections"

# Hook priorities as numbers: the readback gives numbers, and these are the
# kernel's NF_IP_PRI_MANGLE (-150) and NF_IP_PRI_NAT_DST (-100, "dstnat").
PRIO_MANGLE = -150
PRIO_DSTNAT = -100


@dataclass(frozen=True)
class Chain:
    """A base chain of our table; all are prerouting hooks with policy accept."""

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


CT_KEEP = Chain(CT_CHAIN, "filter", "prerouting", PRIO_MANGLE)
BYPASS = Chain(BYPASS_CHAIN, "nat", "prerouting", PRIO_DSTNAT)
FWMARK = Chain(FWMARK_CHAIN, "filter", "prerouting", PRIO_MANGLE)


def _match(left: Json, right: object, op: str = "==") -> Json:
    return {"match": {"op": op, "left": left, "right": right}}


def _service_match(svc: GuardedService, l4proto: bool = True) -> list[Json]:
    """``ip daddr VIP`` plus ``tcp dport P`` (or ``meta l4proto tcp`` for every port, unless
    ``l4proto`` is False: a later match on the protocol's header implies it)."""
    exprs = [_match({"payload": {"protocol": "ip", "field": "daddr"}}, str(svc.vip))]
    if svc.port is None:
        if l4proto:
            exprs.append(_match({"meta": {"key": "l4proto"}}, svc.protocol))
    else:
        exprs.append(_match({"payload": {"protocol": svc.protocol, "field": "dport"}}, svc.port))
    return exprs


def ct_keep_rule() -> Rule:
    return Rule(
        CT_CHAIN,
        CT_COMMENT,
        (_match({"ct": {"key": "state"}}, "invalid", op="in"), {"counter": None}),
    )


# ``tcp flags & (syn | ack) == syn``: a connection's first packet.
_TCP_OPENING = _match(
    {"&": [{"payload": {"protocol": "tcp", "field": "flags"}}, ["syn", "ack"]]}, "syn"
)


def _redirect(svc: GuardedService, comment: str, *match: Json) -> Rule:
    """``svc``'s new connections that also ``match`` go to this box's own real server
    (REDIRECT keeps the port).

    TCP: only a connection's opening SYN is redirected; the NAT it binds carries the
    rest of that connection.  A connection this box's IPVS served itself and the peer
    now forwards mid-stream (its sync daemon carried the entry over a failover or a
    planned move) has no conntrack entry here (IPVS untracks what it handles), so a
    redirect of its next packet would send it to this box's own address, where no
    socket has it: a reset (seen in the lab with backup_only, and at every planned
    move with bypass).  Left alone, with the VIP on lo, IPVS's own entry delivers it.
    (The flags match implies the protocol: nft reads an explicit ``meta l4proto tcp``
    back without it, so none is written.)
    """
    tcp = svc.protocol == "tcp"
    opening = [_TCP_OPENING] if tcp else []
    return Rule(
        BYPASS_CHAIN,
        comment,
        (*_service_match(svc, l4proto=not tcp), *match, *opening, {"counter": None},
         {"redirect": None}),
    )  # fmt: skip


def bypass_rule(svc: GuardedService) -> Rule:
    """Engaged (BACKUP, FAULT, stopped): every new connection for ``svc`` is served here."""
    return _redirect(svc, f"bypass {svc.label}")


def _from_peer(peer_macs: tuple[str, ...], op: str = "==") -> Json:
    """``ether saddr`` is (``!=``: is not) one of the peer's MACs."""
    macs: object = peer_macs[0] if len(peer_macs) == 1 else {"set": list(peer_macs)}
    return _match({"payload": {"protocol": "ether", "field": "saddr"}}, macs, op=op)


def peer_bypass_rule(svc: GuardedService, peer_macs: tuple[str, ...]) -> Rule:
    """What the peer director sends for ``svc`` is never balanced again, whatever our role.

    In MASTER this is the only bypass rule.  It matters when our agent is gone:
    kill -9 leaves the VIP and the IPVS table, the other box takes over and
    balances to us, and without this rule our kernel would balance that again
    (the loop that kept a quarter of all requests failing under keepalived in the
    lab's two-box setup).  The rule is kernel state, so it holds with no agent running.
    """
    return _redirect(svc, f"bypass {svc.label} from the peer", _from_peer(peer_macs))


def fwmark_rule(svc: GuardedService, peer_macs: tuple[str, ...]) -> Rule:
    """Mark ``svc``'s packets unless the peer director sent them (then they are its forwards)."""
    assert svc.fwmark is not None  # GuardSpec validation guarantees it in fwmark mode
    return Rule(
        FWMARK_CHAIN,
        f"fwmark {svc.fwmark} {svc.label}",
        (
            *_service_match(svc),
            _from_peer(peer_macs, op="!="),
            {"counter": None},
            {"mangle": {"key": {"meta": {"key": "mark"}}, "value": svc.fwmark}},
        ),
    )


def desired_guard_table(spec: GuardSpec, active: bool) -> TableState:
    """The table for ``spec``; ``active`` (BACKUP/FAULT) only matters in bypass mode.

    Bypass: active redirects every service's traffic; inactive (MASTER) only
    what the peer director sent, once its MAC is known (see peer_bypass_rule).

    With no peer MAC known in fwmark mode the chain stays empty: marking
    everything would let both boxes balance (the loop), marking nothing only
    costs the spread until the MAC is configured or learned.

    backup_only: the sysctl keeps a backup's IPVS out of the way only while its
    backup sync daemon runs.  A master killed with -9 keeps its master daemon,
    its VIP and its table, so its IPVS would balance again what the new master
    forwards it (the loop, until the agent restarts: 9 % of requests failed
    for 12 s in the lab).  The peer's forwards redirected before IPVS close it.
    The redirect takes only a connection's first packet (see peer_bypass_rule),
    so the connections the sync daemon carries over a failover are not touched.
    """
    chains = [CT_KEEP]
    rules = [ct_keep_rule()]
    services = spec.unique_services()
    if spec.mode == "fwmark":
        # The mark keeps the peer's forwards out of the fwmark services, but IPVS
        # looks up its connection table first: a reused client port whose old entry
        # points at the peer would bounce back (seen in the lab).  Redirecting the
        # peer's forwards before IPVS, as every mode does, closes that.
        chains.append(FWMARK)
        if spec.peer_macs:
            rules.extend(fwmark_rule(s, spec.peer_macs) for s in services)
    chains.append(BYPASS)
    for s in services:  # each service in its own instance's state, if it says one
        if spec.mode == "bypass" and (active if s.engaged is None else s.engaged):
            rules.append(bypass_rule(s))
        elif spec.peer_macs:
            rules.append(peer_bypass_rule(s, spec.peer_macs))
    return TableState(tuple(chains), tuple(rules))


def transaction(desired: TableState, actual: TableState | None) -> Json:
    """One atomic batch that turns ``actual`` (None: no table) into ``desired``.

    add table / add chain are no-ops on existing objects and flush empties them,
    so the batch is right whatever the kernel holds, with one exception it
    handles from the readback: a chain of ours that is not wanted, or whose hook
    or type someone changed (``add chain`` cannot change a base chain), is
    flushed and deleted first.  A failing command rolls the whole batch back.
    """
    cmds: list[Json] = [{"add": {"table": {"family": FAMILY, "name": TABLE}}}]
    wanted = set(desired.chains)
    for chain in actual.chains if actual is not None else ():
        if chain not in wanted:
            ref = {"family": FAMILY, "table": TABLE, "name": chain.name}
            cmds.append({"flush": {"chain": ref}})
            cmds.append({"delete": {"chain": ref}})
    for chain in desired.chains:
        cmds.append({"add": {"chain": chain.to_json()}})
    for chain in desired.chains:
        cmds.append({"flush": {"chain": {"family": FAMILY, "table": TABLE, "name": chain.name}}})
    for rule in desired.rules:
        cmds.append({"add": {"rule": rule.to_json()}})
    return {"nftables": cmds}


def delete_table() -> Json:
    return {"nftables": [{"delete": {"table": {"family": FAMILY, "name": TABLE}}}]}


def list_table() -> Json:
    return {"nftables": [{"list": {"table": {"family": FAMILY, "name": TABLE}}}]}


def _strip_counters(value: Any) -> Any:
    """Counters read back as {"packets": n, "bytes": m}; the desired form is null."""
    if isinstance(value, dict):
        return {k: None if k == "counter" else _strip_counters(v) for k, v in value.items()}
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


def peer_macs_of(state: TableState) -> tuple[str, ...]:
    """The peer MACs a table's rules name (a previous run's, found at start), sorted.

    Why: a restarted agent writes its table before it has heard the peer; without
    these, its first write would drop the redirect of the peer's forwards that the
    killed agent left, until the MAC is learned again.
    """
    found: set[str] = set()
    for rule in state.rules:
        for expr in rule.expr:
            match = expr.get("match") if isinstance(expr, dict) else None
            if not isinstance(match, dict):
                continue
            if match.get("left") != {"payload": {"protocol": "ether", "field": "saddr"}}:
                continue
            right = match.get("right")
            values = right.get("set", []) if isinstance(right, dict) else [right]
            for value in values:
                try:
                    found.add(normalize_mac(value))
                except ValueError:
                    continue  # someone's hand edit: not a MAC we can trust
    return tuple(sorted(found))


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
