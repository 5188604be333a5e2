"""VRRP and this box's own health checks kept out of conntrack: table ``ip lvsagent_notrack``.

Why: the loop guard's nat and ct_keep chains keep conntrack on, and every
check connection then held an entry for its TIME_WAIT (120 s): 10,000 servers
checked each second want ~1.2 M entries, far over a default
nf_conntrack_max, and a full table dropped packets, VRRP adverts among them
(EPERM on send).  Untracked, neither uses an entry.

Rules, in chains at raw priority (-300, before conntrack at -200):

* prerouting: ``ip protocol vrrp``; ``ip saddr . tcp sport @checks`` (the
  real servers' replies to the checks);
* output: ``ip protocol vrrp``; ``ip daddr . tcp dport @checks`` (the checks);
  ``oifname "lo" ip saddr . tcp sport @checks`` (this box's own servers
  answering its checks).  Only on lo: the replies of a connection the bypass
  redirected come from the same address and port, go to a client, and need
  conntrack to be un-NATed.

``@checks`` holds each check's real server address and port.  A firewall that
accepts replies by ``ct state established`` must accept ``ct state untracked``
from the real servers too.

Why a table apart from the guard's ``ip lvsagent``: the guard's table is read
back at every VRRP transition, and listing a set of 10,000 elements through
libnftables took 1.3 s of the event loop (measured in a namespace on this
machine).  This one is written whole at start, changed element by element on
a reload, and checked with a terse listing, which leaves the elements out: its
chains, rules and set are repaired, elements changed by hand are not.
"""

from __future__ import annotations

import errno
import logging
from typing import Any

from lvsagent.netfilter.nft import Libnftables, NftBackend, NftError
from lvsagent.netfilter.spec import CheckTarget

log = logging.getLogger("lvsagent.netfilter")

Json = dict[str, Any]
FAMILY = "ip"
TABLE = "lvsagent_notrack"
SET = "checks"
PRIO_RAW = -300
_REF = {"family": FAMILY, "table": TABLE}
CHAINS = (("prerouting", "prerouting"), ("output", "output"))  # (name, hook)


def _pair(end: str) -> Json:
    """``ip saddr . tcp sport`` (end "s") or ``ip daddr . tcp dport`` (end "d")."""
    return {"concat": [{"payload": {"protocol": "ip", "field": f"{end}addr"}},
                       {"payload": {"protocol": "tcp", "field": f"{end}port"}}]}  # fmt: skip


def _rule(chain: str, comment: str, *matches: Json) -> Json:
    return {**_REF, "chain": chain, "comment": comment,
            "expr": [*matches, {"counter": None}, {"notrack": None}]}  # fmt: skip


def _match(left: Json, right: object) -> Json:
    return {"match": {"op": "==", "left": left, "right": right}}


VRRP = _match({"payload": {"protocol": "ip", "field": "protocol"}}, "vrrp")
LOOPBACK = _match({"meta": {"key": "oifname"}}, "lo")
RULES: tuple[Json, ...] = (
    _rule("prerouting", "VRRP", VRRP),
    _rule("prerouting", "health check replies", _match(_pair("s"), f"@{SET}")),
    _rule("output", "VRRP", VRRP),
    _rule("output", "health checks", _match(_pair("d"), f"@{SET}")),
    _rule("output", "health check replies of this box's servers",
          LOOPBACK, _match(_pair("s"), f"@{SET}")),
)  # fmt: skip
CHAIN_JSON: tuple[Json, ...] = tuple(
    {**_REF, "name": name, "type": "filter", "hook": hook, "prio": PRIO_RAW, "policy": "accept"}
    for name, hook in CHAINS
)
SET_JSON: Json = {**_REF, "name": SET, "type": ["ipv4_addr", "inet_service"]}


def write_all(targets: frozenset[CheckTarget]) -> Json:
    """The whole table in one atomic batch, whatever the kernel holds of it."""
    cmds: list[Json] = [{"add": {"table": {"family": FAMILY, "name": TABLE}}}]
    cmds += [{"add": {"chain": c}} for c in CHAIN_JSON]
    cmds.append({"add": {"set": SET_JSON}})
    cmds += [{"flush": {"chain": {**_REF, "name": name}}} for name, _ in CHAINS]
    cmds.append({"flush": {"set": {**_REF, "name": SET}}})
    cmds += [{"add": {"rule": r}} for r in RULES]
    if targets:
        cmds.append(_elements("add", targets))
    return {"nftables": cmds}


def _elements(verb: str, targets: frozenset[CheckTarget]) -> Json:
    return {verb: {"element": {**_REF, "name": SET,
                               "elem": [t.element() for t in sorted(targets)]}}}  # fmt: skip


def change_elements(add: frozenset[CheckTarget], delete: frozenset[CheckTarget]) -> Json:
    """A reload's difference; a delete of an element not there fails the whole batch."""
    cmds = [_elements("delete", delete)] if delete else []
    if add:
        cmds.append(_elements("add", add))
    return {"nftables": cmds}


def _strip(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: None if k == "counter" else _strip(v) for k, v in value.items()
                if k != "handle"}  # fmt: skip
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def matches(readback: Json) -> bool:
    """A terse listing of the table shows the chains, rules and set this module writes."""
    chains: list[Json] = []
    rules: list[Json] = []
    sets: list[Json] = []
    for item in readback.get("nftables", []):
        for kind, out in (("chain", chains), ("rule", rules), ("set", sets)):
            obj = item.get(kind)
            if isinstance(obj, dict) and obj.get("table") == TABLE:
                out.append(_strip(obj))
    decl = [{k: v for k, v in s.items() if k != "elem"} for s in sets]
    return (
        sorted(chains, key=str) == sorted(map(_strip, CHAIN_JSON), key=str)
        and rules == [_strip(r) for r in RULES]
        and decl == [SET_JSON]
    )


class Untracked:
    """Keeps ``ip lvsagent_notrack`` in the kernel for the given check targets."""

    def __init__(
        self,
        targets: frozenset[CheckTarget],
        backend: NftBackend | None = None,
        terse: NftBackend | None = None,
    ) -> None:
        self.targets = targets
        self._nft: NftBackend = backend if backend is not None else Libnftables()
        self._terse: NftBackend = terse if terse is not None else Libnftables(terse=True)
        self._written: frozenset[CheckTarget] | None = None  # what the kernel's set holds

    def apply(self) -> None:
        """The whole table (start, or a repair): one batch with every element."""
        self._nft.run(write_all(self.targets), f"write of table {FAMILY} {TABLE}")
        self._written = self.targets

    def reconfigure(self, targets: frozenset[CheckTarget]) -> None:
        """A reload: only the elements that changed, or the whole table if that fails."""
        self.targets = targets
        if self._written is None or targets == self._written:
            return
        try:
            self._nft.run(
                change_elements(targets - self._written, self._written - targets),
                f"update of set {SET} in table {FAMILY} {TABLE}",
            )
            self._written = targets
        except NftError:
            self.apply()  # someone changed the set by hand: write it all again

    def check(self) -> bool:
        """Repair chains, rules or set (someone deleted them by hand); True if repaired."""
        if self._written is None:
            self.apply()
            return True
        if matches(self._read_terse()):
            return False
        self.apply()
        log.warning(
            "table %s %s: repaired (someone changed it by hand): it keeps VRRP and the "
            "health checks out of conntrack; leave it to lvsagent",
            FAMILY, TABLE,
        )  # fmt: skip
        return True

    def remove(self) -> None:
        self._written = None
        try:
            self._nft.run({"nftables": [{"delete": {"table": {"family": FAMILY, "name": TABLE}}}]},
                          f"delete table {FAMILY} {TABLE}")  # fmt: skip
        except NftError as exc:
            if exc.errno != errno.ENOENT:  # not there, which is the goal
                raise

    def _read_terse(self) -> Json:
        try:
            return self._terse.run(
                {"nftables": [{"list": {"table": {"family": FAMILY, "name": TABLE}}}]},
                f"list table {FAMILY} {TABLE}",
            )
        except NftError as exc:
            if exc.errno == errno.ENOENT:
                return {}
            raise
