"""accept(): the configuration-dependent checks, in their RFC 5798 7.1 order."""

from __future__ import annotations

import ipaddress

import pytest

from lvsagent.config.schema import TrackInterface
from lvsagent.vrrp.packet import Advert, Discard, Reason, pass_auth_data
from lvsagent.vrrp.receive import RxPolicy, accept
from lvsagent.vrrp.track import evaluate
from tests.unit.vrrpwire import PEER, datagram

A = ipaddress.IPv4Address
ME = A("172.16.0.31")
AUTH = pass_auth_data("1111")


def policy(**kw: object) -> RxPolicy:
    fields: dict[str, object] = dict(
        version=2,
        vrid=51,
        adver_int_cs=100,
        auth_type=AUTH[0],
        auth_data=AUTH[1],
        own_addresses=frozenset({ME}),
    )
    fields.update(kw)
    return RxPolicy(**fields)  # type: ignore[arg-type]


def v2(**kw: object) -> Advert:
    fields: dict[str, object] = dict(
        version=2,
        vrid=51,
        priority=50,
        max_adver_int=100,
        addresses=(A("172.16.0.30"),),
        auth_type=AUTH[0],
        auth_data=AUTH[1],
    )
    fields.update(kw)
    return Advert(**fields)  # type: ignore[arg-type]


def test_accepts_a_good_v2_advert() -> None:
    adv, ip = accept(datagram(v2()), policy())
    assert adv.priority == 50 and ip.src == PEER


def test_accepts_v3_either_checksum() -> None:
    pol = policy(version=3, auth_type=0, auth_data=b"\0" * 8)
    for mode in ("pseudo_header", "message_only"):
        adv = Advert(3, 51, 50, 100, (A("172.16.0.30"),), checksum_mode=mode)  # type: ignore[arg-type]
        assert accept(datagram(adv), pol)[0].checksum_mode == mode


@pytest.mark.parametrize(
    ("raw", "pol", "reason"),
    [
        (datagram(v2(), ttl=254), policy(), Reason.IP_TTL),
        (datagram(v2(), src=ME), policy(), Reason.OWN),
        (
            datagram(v2(), src=A("172.16.0.99")),
            policy(unicast_peers=frozenset({PEER})),
            Reason.PEER,
        ),
        (datagram(v2(vrid=52)), policy(), Reason.VRID),
        (datagram(v2()), policy(version=3), Reason.VERSION),
        (datagram(v2(auth_type=2)), policy(), Reason.AUTH_TYPE),
        (datagram(v2(auth_type=0, auth_data=b"\0" * 8)), policy(), Reason.AUTH_TYPE_MISMATCH),
        (datagram(v2(auth_data=b"2222\0\0\0\0")), policy(), Reason.AUTH),
        (datagram(v2(max_adver_int=200)), policy(), Reason.INTERVAL),
        (datagram(v2())[:-3], policy(), Reason.PACKET_LEN),
    ],
    ids=[
        "ttl",
        "own",
        "peer",
        "vrid",
        "version",
        "authtype",
        "authmismatch",
        "password",
        "interval",
        "truncated",
    ],
)
def test_discards_with_reason(raw: bytes, pol: RxPolicy, reason: Reason) -> None:
    with pytest.raises(Discard) as exc:
        accept(raw, pol)
    assert exc.value.reason is reason


def test_ttl_check_can_be_relaxed_for_unicast() -> None:
    pol = policy(require_ttl_255=False, unicast_peers=frozenset({PEER}))
    assert accept(datagram(v2(), ttl=60), pol)[0].priority == 50


def test_ttl_is_checked_before_vrid() -> None:
    with pytest.raises(Discard) as exc:
        accept(datagram(v2(vrid=9), ttl=1), policy())
    assert exc.value.reason is Reason.IP_TTL


def test_v3_interval_difference_is_not_a_discard() -> None:
    pol = policy(version=3, auth_type=0, auth_data=b"\0" * 8)
    adv = Advert(3, 51, 50, 25, (A("172.16.0.30"),), checksum_mode="message_only")
    assert accept(datagram(adv), pol)[0].max_adver_int == 25


def test_tracking_verdicts() -> None:
    tracked = (TrackInterface("eth1", 0), TrackInterface("eth2", -20), TrackInterface("eth3", 10))
    up = {"eth0": True, "eth1": True, "eth2": True, "eth3": True}
    assert evaluate("eth0", tracked, up).adjustment == 10
    v = evaluate("eth0", tracked, {**up, "eth2": False, "eth3": False})
    assert (v.fault, v.adjustment) == (False, -20)
    assert evaluate("eth0", tracked, {**up, "eth1": False}).fault
    assert evaluate("eth0", tracked, {**up, "eth0": False}).fault
    assert not evaluate("eth0", (), {"eth0": True}).fault
