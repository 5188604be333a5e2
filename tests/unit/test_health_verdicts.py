"""The verdict book without a loop or a clock: entries in, what IPVS and tracking read out."""

from __future__ import annotations

import ipaddress
from typing import Any

from lvsagent.config.schema import HealthCheck, RealServer, VirtualServer
from lvsagent.health.entry import Entry, policy_of
from lvsagent.health.tracker import CheckResult, Tracker
from lvsagent.health.verdicts import VerdictBook
from lvsagent.ipvs.desired import dest_key, service_key

VIP = ipaddress.IPv4Address("172.16.0.30")
A = ipaddress.IPv4Address("172.16.0.31")
B = ipaddress.IPv4Address("172.16.0.32")
SORRY = ipaddress.IPv4Address("172.16.0.99")


def service(port: int = 80, **kw: Any) -> VirtualServer:
    kw.setdefault("health", HealthCheck(interval=10.0, retry=0, on_failure="drain"))
    return VirtualServer(VIP, port, real_servers=(RealServer(A, 80), RealServer(B, 80)), **kw)


def book_of(*services: VirtualServer) -> tuple[VerdictBook, dict[Any, Entry], list[Any]]:
    entries: dict[Any, Entry] = {}
    for vs in services:
        for rs in vs.real_servers:
            ident = (service_key(vs), dest_key(rs))
            h = rs.health or vs.health
            entries[ident] = Entry(ident, vs, rs, h, Tracker(str(ident), policy_of(h), 0.0))
    book = VerdictBook()
    started = book.adopt(entries, {service_key(vs): vs for vs in services})
    return book, entries, started


def verdict(entry: Entry, ok: bool, reason: str = "scripted") -> None:
    assert entry.tracker is not None
    entry.tracker.begin(1.0)
    entry.tracker.finish(CheckResult(ok, reason, 0.001), 1.0)


def test_no_verdict_yet_is_weight_zero_not_removed() -> None:
    """alpha: every server enters IPVS at weight 0 until its own first check passes."""
    book, _, _ = book_of(service())
    assert set(book.weights().values()) == {0} and len(book.weights()) == 2
    assert book.removed() == frozenset()
    assert book.server_up(A, 80) is None


def test_a_failed_server_is_drained_or_removed_as_on_failure_says() -> None:
    drained = service(80)
    removed = service(81, health=HealthCheck(interval=10.0, retry=0, on_failure="remove"))
    book, entries, _ = book_of(drained, removed)
    for e in entries.values():
        verdict(e, e.rs.address == A)
    b_drained = (service_key(drained), dest_key(drained.real_servers[1]))
    b_removed = (service_key(removed), dest_key(removed.real_servers[1]))
    assert book.weights() == {b_drained: 0}
    assert book.removed() == {b_removed}
    assert book.weights([service_key(removed)]) == {}  # only the services asked for
    assert book.server_up(A, 80) is True and book.server_up(B, 80) is False


def test_a_server_in_two_services_is_down_for_tracking_if_either_says_so() -> None:
    book, entries, _ = book_of(service(80), service(81))
    for e in entries.values():
        verdict(e, not (e.rs.address == A and e.ident[0].port == 81))
    assert book.server_up(A, 80) is False
    assert book.server_up(B, 80) is True
    assert book.server_up(B, 8080) is None  # nothing checks it


def test_quorum_lost_brings_the_sorry_server_and_reports_the_change_once() -> None:
    vs = service(quorum=2, sorry_server=(SORRY, 80))
    book, entries, started = book_of(vs)
    key = service_key(vs)
    assert [s.lost for _, s in started] == [True]  # nothing up yet: lost from the start
    assert book.sorry() == {key} and book.quorum_lost() == {key}
    for e in entries.values():
        verdict(e, True)
    back = book.update_quorum(key)
    assert back is not None and not back.lost
    assert book.sorry() == frozenset() and book.quorum_lost() == frozenset()
    assert book.update_quorum(key) is None  # no change, nothing to journal


def test_a_reload_kills_the_entries_it_drops() -> None:
    vs = service()
    book, entries, _ = book_of(vs)
    keep = {k: e for k, e in entries.items() if e.rs.address == A}
    book.adopt(keep, {service_key(vs): vs})
    assert [e.live for e in entries.values()] == [True, False]
    assert book.server_up(B, 80) is None and list(book.of(None)) == list(keep.values())


def test_the_verdicts_of_some_services_as_one_value() -> None:
    """What the monitor hands the daemon with a change: that service's verdicts only, and
    every sorry server (a sorry server elsewhere must not be dropped by the rebuild)."""
    web, other = service(80), service(81, quorum=2, sorry_server=(SORRY, 80))
    book, entries, _ = book_of(web, other)
    for e in entries.values():
        verdict(e, e.rs.address == A)
    v = book.verdicts([service_key(web)])
    assert v.services == {service_key(web)}
    assert dict(v.weights) == {(service_key(web), dest_key(web.real_servers[1])): 0}
    assert v.removed == frozenset() and v.sorry == {service_key(other)}
    # All: web's failed B, and both of the other's (its sorry server stands in: weight 0).
    assert book.verdicts().services is None and len(book.verdicts().weights) == 3
