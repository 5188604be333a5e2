"""The loop guard's nftables table as values: spec in, JSON transaction out (pure).

Why a table of our own: lvsagent must never touch rules it does not own, and an
``ip lvsagent`` table can be read back, compared and replaced in one atomic
libnftables transaction (add table, add chains, flush chains, add rules) without
looking at anybody else's.  Re-sending the same transaction converges to the
same table, so apply is idempotent; the adapter (nft.py) still sends nothing when
the kernel already matches, which keeps counters and handles stable.

Five chains, the last three only in the modes that need them:

``notrack``,      every mode, raw priority (before conntrack), prerouting and
``notrack_out``   output: VRRP and the daemon's own health checks are left out of
                  conntrack.  The guard's nat and ct_keep chains keep conntrack
                  on, and every check connection then held an entry (TIME_WAIT:
                  120 s): 10,000 servers checked each second want ~1.2 M, far
                  over a default nf_conntrack_max, and a full table dropped
                  packets, VRRP adverts among them (EPERM on send).  Checks are
                  matched by their destination (real server address and check
                  port) going out, by their source coming back; the replies of
                  this box's own servers to its checks go out on lo, and only
                  those are matched by source there, since the replies of a
                  bypass-redirected connection (same source, to a client) need
                  conntrack to be un-NATed.  A host firewall that accepts replies
                  by ``ct state established`` must accept ``ct state untracked``
                  from the real servers too.

``ct_keep``       every mode.  ``ct state invalid counter`` does nothing to traffic;
                  it holds the namespace's conntrack reference.  Without it,
                  flushing the last redirect rule (the MASTER transition) unhooks
                  conntrack and every connection the bypass had redirected stops
                  getting its replies un-NATed (shared/FACTS.md; pinned in
                  tests/netns/test_netfilter.py).
``bypass``        nat prerouting.  Bypass mode (the seed's second scheme): in
                  BACKUP/FAULT, traffic for each virtual service (its protocol,
                  VIP and port, never "all TCP") is redirected to the local real
                  server, so IPVS on this box never sees it; in MASTER only what
                  the peer's MAC sends is.  fwmark and backup_only: only what the
                  peer's MAC sends, in every state (see peer_bypass_rule).
``fwmark_guard``  fwmark mode (the seed's first scheme).  mangle prerouting: packets
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

from lvsagent.netfilter.spec import CheckTarget, GuardedService, GuardMode, GuardSpec, normalize_mac
from lvsagent.netfilter.table import (
    FAMILY,
    TABLE,
    TABLE_LABEL,
    Chain,
    Json,
    Rule,
    TableState,
    delete_table,
    describe_drift,
    list_table,
    match,
    one_of,
    parse_counters,
    parse_table,
)

# The spec types are re-exported: callers build a GuardSpec and hand it here.
__all__ = [
    "BYPASS_CHAIN",
    "CT_CHAIN",
    "FAMILY",
    "FWMARK_CHAIN",
    "NOTRACK_CHAIN",
    "NOTRACK_OUT_CHAIN",
    "TABLE",
    "TABLE_LABEL",
    "Chain",
    "CheckTarget",
    "GuardMode",
    "GuardSpec",
    "GuardedService",
    "Json",
    "Rule",
    "TableState",
    "delete_table",
    "describe_drift",
    "desired_table",
    "list_table",
    "parse_counters",
    "parse_table",
    "peer_macs_of",
    "transaction",
]

CT_CHAIN = "ct_keep"
BYPASS_CHAIN = "bypass"
FWMARK_CHAIN = "fwmark_guard"
NOTRACK_CHAIN = "notrack"
NOTRACK_OUT_CHAIN = "notrack_out"
CT_COMMENT = "lvsagent: keeps conntrack hooked for redirected connections"

# Hook priorities as numbers: the readback gives numbers, and these are the
# kernel's NF_IP_PRI_RAW (-300, before conntrack at -200), NF_IP_PRI_MANGLE (-150)
# and NF_IP_PRI_NAT_DST (-100, "dstnat").
PRIO_RAW = -300
PRIO_MANGLE = -150
PRIO_DSTNAT = -100


NOTRACK = Chain(NOTRACK_CHAIN, "filter", "prerouting", PRIO_RAW)
NOTRACK_OUT = Chain(NOTRACK_OUT_CHAIN, "filter", "output", PRIO_RAW)
CT_KEEP = Chain(CT_CHAIN, "filter", "prerouting", PRIO_MANGLE)
BYPASS = Chain(BYPASS_CHAIN, "nat", "prerouting", PRIO_DSTNAT)
FWMARK = Chain(FWMARK_CHAIN, "filter", "prerouting", PRIO_MANGLE)


def _servicematch(svc: GuardedService, l4proto: bool = True) -> list[Json]:
    """``ip daddr VIP`` plus ``tcp dport P`` (or ``meta l4proto tcp`` for every port, unless
    ``l4proto`` is False: a later match on the protocol's header implies it)."""
    exprs = [match({"payload": {"protocol": "ip", "field": "daddr"}}, str(svc.vip))]
    if svc.port is None:
        if l4proto:
            exprs.append(match({"meta": {"key": "l4proto"}}, svc.protocol))
    else:
        exprs.append(match({"payload": {"protocol": svc.protocol, "field": "dport"}}, svc.port))
    return exprs


VRRP_COMMENT = "lvsagent: VRRP needs no conntrack"
_VRRP = match({"payload": {"protocol": "ip", "field": "protocol"}}, "vrrp")


def _pair(where: str) -> Json:
    """``ip saddr . tcp sport`` (where = "s") or ``ip daddr . tcp dport`` ("d")."""
    return {"concat": [{"payload": {"protocol": "ip", "field": f"{where}addr"}},
                       {"payload": {"protocol": "tcp", "field": f"{where}port"}}]}  # fmt: skip


def notrack_rules(targets: tuple[CheckTarget, ...]) -> list[Rule]:
    """VRRP both ways; health checks out by destination, back by source (module docstring)."""
    rules = [Rule(chain, VRRP_COMMENT, (_VRRP, {"counter": None}, {"notrack": None}))
             for chain in (NOTRACK_CHAIN, NOTRACK_OUT_CHAIN)]  # fmt: skip
    if not targets:
        return rules
    pairs = one_of([{"concat": [str(t.address), t.port]} for t in targets])
    untrack = ({"counter": None}, {"notrack": None})
    return [
        *rules,
        Rule(NOTRACK_CHAIN, "lvsagent: health check replies",
             (match(_pair("s"), pairs), *untrack)),
        Rule(NOTRACK_OUT_CHAIN, "lvsagent: health checks",
             (match(_pair("d"), pairs), *untrack)),
        Rule(NOTRACK_OUT_CHAIN, "lvsagent: health check replies of this box's servers",
             (match({"meta": {"key": "oifname"}}, "lo"), match(_pair("s"), pairs), *untrack)),
    ]  # fmt: skip


def ct_keep_rule() -> Rule:
    return Rule(
        CT_CHAIN,
        CT_COMMENT,
        (match({"ct": {"key": "state"}}, "invalid", op="in"), {"counter": None}),
    )


def bypass_rule(svc: GuardedService) -> Rule:
    """Traffic for ``svc`` goes to this box's own real server (REDIRECT keeps the port)."""
    return Rule(
        BYPASS_CHAIN,
        f"bypass {svc.label}",
        (*_servicematch(svc), {"counter": None}, {"redirect": None}),
    )


def _from_peer(peer_macs: tuple[str, ...], op: str = "==") -> Json:
    """``ether saddr`` is (``!=``: is not) one of the peer's MACs."""
    macs: object = peer_macs[0] if len(peer_macs) == 1 else {"set": list(peer_macs)}
    return match({"payload": {"protocol": "ether", "field": "saddr"}}, macs, op=op)


# ``tcp flags & (syn | ack) == syn``: a connection's first packet.
_TCP_OPENING = match(
    {"&": [{"payload": {"protocol": "tcp", "field": "flags"}}, ["syn", "ack"]]}, "syn"
)


def peer_bypass_rule(svc: GuardedService, peer_macs: tuple[str, ...]) -> Rule:
    """What the peer director sends for ``svc`` is never balanced again, whatever our role.

    In MASTER this is the only bypass rule.  It matters when our agent is gone:
    kill -9 leaves the VIP and the IPVS table, the other box takes over and
    balances to us, and without this rule our kernel would balance that again
    (the loop that kept a quarter of all requests failing in the seed's setup).
    The rule is kernel state, so it holds with no agent running.

    TCP: only a connection's opening SYN is redirected; the NAT it binds carries
    the rest of that connection.  A connection this box's IPVS served itself and
    the peer now forwards mid-stream (its sync daemon carried the entry over a
    failover) has no conntrack entry here (IPVS untracks what it handles), so a
    redirect of every packet would send it to a local address with no socket: a
    reset (seen in the lab with backup_only).  Left alone, IPVS's own entry
    still delivers it.  (The flags match implies the protocol: nft reads an
    explicit ``meta l4proto tcp`` back without it, so none is written.)
    """
    tcp = svc.protocol == "tcp"
    return Rule(
        BYPASS_CHAIN,
        f"bypass {svc.label} from the peer",
        (
            *_servicematch(svc, l4proto=not tcp),
            _from_peer(peer_macs),
            *([_TCP_OPENING] if tcp else []),
            {"counter": None},
            {"redirect": None},
        ),
    )


def fwmark_rule(svc: GuardedService, peer_macs: tuple[str, ...]) -> Rule:
    """Mark ``svc``'s packets unless the peer director sent them (then they are its forwards)."""
    assert svc.fwmark is not None  # GuardSpec validation guarantees it in fwmark mode
    return Rule(
        FWMARK_CHAIN,
        f"fwmark {svc.fwmark} {svc.label}",
        (
            *_servicematch(svc),
            _from_peer(peer_macs, op="!="),
            {"counter": None},
            {"mangle": {"key": {"meta": {"key": "mark"}}, "value": svc.fwmark}},
        ),
    )


def desired_table(spec: GuardSpec, active: bool) -> TableState:
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
    chains = [NOTRACK, NOTRACK_OUT, CT_KEEP]
    rules = [*notrack_rules(spec.check_targets), ct_keep_rule()]
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
    if spec.mode == "bypass" and active:
        rules.extend(bypass_rule(s) for s in services)
    elif spec.peer_macs:
        rules.extend(peer_bypass_rule(s, spec.peer_macs) for s in services)
    return TableState(tuple(chains), tuple(rules))


def transaction(desired: TableState, actual: TableState | None) -> Json:
    """One atomic batch that turns ``actual`` (None: no table) into ``desired``.

    add table / add chain are no-ops on existing objects and flush empties them,
    so the batch is right whatever the kernel holds (a chain ``actual`` shows
    right is not flushed: that readback is fresh), with one exception it
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
    # A chain whose rules are already right is left alone: a transition then
    # re-sends only the bypass chain, not the health checks' set of every server.
    redo = [
        c for c in desired.chains
        if actual is None or actual.chain(c.name) != c
        or actual.rules_of(c.name) != desired.rules_of(c.name)
    ]  # fmt: skip
    for chain in redo:
        cmds.append({"flush": {"chain": {"family": FAMILY, "table": TABLE, "name": chain.name}}})
    names = {c.name for c in redo}
    for rule in desired.rules:
        if rule.chain in names:
            cmds.append({"add": {"rule": rule.to_json()}})
    return {"nftables": cmds}


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

