"""desired_table(): config to IPVS table, with health verdicts laid over it.

Configs are built from schema.py's dataclasses directly, so each test shows
exactly the fields it exercises, plus one from the shipped box config so the
loader and this module are checked to agree on a real file.
"""

from __future__ import annotations

import ipaddress
from dataclasses import replace
from ipaddress import IPv4Address
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lvsagent.config.loader import load_config
from lvsagent.config.schema import Config, Forwarding, RealServer, VirtualServer
from lvsagent.ipvs.desired import (
    SORRY_WEIGHT,
    desired_table,
    dest_key,
    service_key,
    update_services,
)
from lvsagent.ipvs.model import Dest, DestKey, Protocol, Service, ServiceKey, Table
from lvsagent.ipvs.plan import AddDest, DelDest, EditDest, plan

ETC = Path(__file__).parents[2] / "etc"

VIP = ipaddress.IPv4Address("172.16.0.30")
BOX_A = ipaddress.IPv4Address("172.16.0.31")
BOX_B = ipaddress.IPv4Address("172.16.0.32")
WEB = ServiceKey(protocol="tcp", address=VIP, port=80)
A = DestKey(BOX_A, 80)
B = DestKey(BOX_B, 80)


def web(*real_servers: RealServer) -> VirtualServer:
    return VirtualServer(address=VIP, port=80, scheduler="rr", real_servers=real_servers)


def config(*virtual_servers: VirtualServer) -> Config:
    return Config(path="t.toml", virtual_servers=virtual_servers)


TWO_BOXES = config(web(RealServer(BOX_A, 80), RealServer(BOX_B, 80)))


def test_shipped_box_a_config() -> None:
    # The article's virtual_server 172.16.0.30 80 { lb_algo rr lb_kind DR ... }.
    table = desired_table(load_config(str(ETC / "box-a.toml")))
    assert table == Table((Service(WEB, "rr", dests=(Dest(A), Dest(B))),))


def test_shipped_box_a_and_b_want_the_same_table() -> None:
    # Either box may become director: both must program the same services.
    a = desired_table(load_config(str(ETC / "box-a.toml")))
    b = desired_table(load_config(str(ETC / "box-b.toml")))
    assert plan(a, b).ops == ()


def test_every_field_is_carried() -> None:
    netmask = ipaddress.IPv4Address("255.255.255.0")
    vs = VirtualServer(
        address=VIP,
        port=443,
        protocol="udp",
        scheduler="sh",
        scheduler_flags=("sh-port", "sh-fallback"),
        persistence_timeout=300,
        persistence_netmask=netmask,
        forwarding="tun",
        real_servers=(
            RealServer(BOX_A, 8443, weight=7, u_threshold=100, l_threshold=10),
            RealServer(BOX_B, 8443, forwarding="nat"),
        ),
    )
    key = ServiceKey(protocol="udp", address=VIP, port=443)
    assert desired_table(config(vs)) == Table(
        (
            Service(
                key,
                "sh",
                frozenset({"sh-fallback", "sh-port"}),
                300,
                netmask,
                (
                    Dest(DestKey(BOX_A, 8443), 7, "tun", 100, 10),
                    Dest(DestKey(BOX_B, 8443), 1, "nat", 0, 0),
                ),
            ),
        )
    )


def test_schema_defaults_become_explicit_fields() -> None:
    # Nothing left for the kernel or pyroute2 to default.
    table = desired_table(
        config(VirtualServer(address=VIP, port=80, real_servers=(RealServer(BOX_A, 80),)))
    )
    assert table == Table(
        (
            Service(
                WEB,
                "wlc",
                frozenset(),
                0,
                ipaddress.IPv4Address("255.255.255.255"),
                (Dest(A, 1, "dr", 0, 0),),
            ),
        )
    )


def test_fwmark_service_is_keyed_by_mark_alone() -> None:
    vs = VirtualServer(fwmark=7, port=80, protocol="udp", real_servers=(RealServer(BOX_A, 80),))
    assert service_key(vs) == ServiceKey(fwmark=7)
    assert desired_table(config(vs)).services[0].key == ServiceKey(fwmark=7)


def test_fwmark_and_address_services_side_by_side() -> None:
    mark = VirtualServer(fwmark=7, real_servers=(RealServer(BOX_B, 80),))
    table = desired_table(config(web(RealServer(BOX_A, 80)), mark))
    assert [s.key for s in table.services] == [WEB, ServiceKey(fwmark=7)]
    assert [s.dests for s in table.services] == [(Dest(A),), (Dest(B),)]


@pytest.mark.parametrize(
    ("vs", "message"),
    [
        (VirtualServer(address=VIP), "needs address and port"),
        (VirtualServer(port=80), "needs address and port"),
        (VirtualServer(fwmark=0), "fwmark must be positive"),
    ],
)
def test_service_key_refuses_what_the_loader_refuses(vs: VirtualServer, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        service_key(vs)


def test_dest_key() -> None:
    assert dest_key(RealServer(BOX_A, 8080, weight=3)) == DestKey(BOX_A, 8080)


@given(
    st.integers(0, 2**32 - 1), st.integers(0, 65535), st.integers(0, 2**32 - 1),
    st.integers(0, 65535), st.sampled_from(["tcp", "udp"]), st.integers(0, 3),
)  # fmt: skip
def test_keys_cached_hash_agrees_with_equality(
    a: int, port_a: int, b: int, port_b: int, proto: Protocol, mark: int
) -> None:
    """Keys carry their hash (speed): equal keys hash alike, copies too, and the cached field
    takes no part in equality, order or repr."""
    ka, kb = DestKey(IPv4Address(a), port_a), DestKey(IPv4Address(b), port_b)
    assert (ka == kb) == ((a, port_a) == (b, port_b))
    assert (ka < kb) == ((a, port_a) < (b, port_b))
    assert hash(ka) == hash(DestKey(IPv4Address(a), port_a)) == hash(replace(ka))
    assert hash(replace(ka, port=port_b, address=IPv4Address(b))) == hash(kb)
    sa = ServiceKey(mark, proto, IPv4Address(a), port_a)
    assert sa == ServiceKey(mark, proto, IPv4Address(a), port_a)
    assert hash(sa) == hash(ServiceKey(mark, proto, IPv4Address(a), port_a))
    assert {(sa, ka): 1}[(replace(sa), replace(ka))] == 1
    assert "_hash" not in repr(sa) + repr(ka)


def test_weight_override_drains_one_server() -> None:
    table = desired_table(TWO_BOXES, weights={(WEB, B): 0})
    assert table.services[0].dests == (Dest(A), Dest(B, weight=0))
    # The health checker's drain is one kernel op against the converged table.
    assert plan(table, desired_table(TWO_BOXES)).ops == (EditDest(WEB, Dest(B, 0), Dest(B)),)


def test_no_weights_and_empty_weights_agree() -> None:
    assert desired_table(TWO_BOXES, None) == desired_table(TWO_BOXES, {})


def test_removed_server_is_dropped() -> None:
    table = desired_table(TWO_BOXES, removed=[(WEB, A)])
    assert table.services[0].dests == (Dest(B),)


def test_removal_beats_a_weight_override() -> None:
    table = desired_table(TWO_BOXES, weights={(WEB, A): 5}, removed={(WEB, A)})
    assert table.services[0].dests == (Dest(B),)


def test_removing_every_server_keeps_the_service() -> None:
    # Health verdicts reach dests only: whether the service itself goes is
    # the config's call (and later the quorum / sorry-server rule's).
    table = desired_table(TWO_BOXES, removed=[(WEB, A), (WEB, B)])
    assert table.services == (Service(WEB, "rr"),)


def test_verdicts_for_unknown_servers_are_ignored() -> None:
    # A reload may drop a server the health tracker still has a verdict for.
    gone = DestKey(ipaddress.IPv4Address("172.16.0.99"), 80)
    other = ServiceKey(fwmark=9)
    table = desired_table(TWO_BOXES, weights={(WEB, gone): 0, (other, A): 0}, removed=[(other, B)])
    assert table == desired_table(TWO_BOXES)


def test_override_is_per_service() -> None:
    # The same real server behind two services is two entries with two weights.
    tls = VirtualServer(address=VIP, port=443, real_servers=(RealServer(BOX_A, 80),))
    tls_key = ServiceKey(protocol="tcp", address=VIP, port=443)
    table = desired_table(config(web(RealServer(BOX_A, 80)), tls), weights={(tls_key, A): 0})
    assert [s.dests for s in table.services] == [(Dest(A),), (Dest(A, weight=0),)]


def test_updating_one_service_equals_building_the_whole_table() -> None:
    # A verdict in the :443 service: only it is rebuilt; the :80 service is the same object.
    tls = VirtualServer(address=VIP, port=443, real_servers=(RealServer(BOX_A, 80),))
    tls_key = ServiceKey(protocol="tcp", address=VIP, port=443)
    cfg = config(web(RealServer(BOX_A, 80), RealServer(BOX_B, 80)), tls)
    before = desired_table(cfg)
    services = {service_key(vs): vs for vs in cfg.virtual_servers}
    after = update_services(before, services, {tls_key}, weights={(tls_key, A): 0})
    assert after == desired_table(cfg, weights={(tls_key, A): 0})
    assert after.services[0] is before.services[0]
    # A removal and a sorry server the same way; an unknown key changes nothing.
    assert update_services(before, services, {tls_key}, removed=[(tls_key, A)]) == desired_table(
        cfg, removed=[(tls_key, A)]
    )
    assert update_services(before, services, {ServiceKey(fwmark=9)}) == before


@pytest.mark.parametrize("weight", [-1, 65536])
def test_out_of_range_override_is_refused(weight: int) -> None:
    with pytest.raises(ValueError, match="out of range"):
        desired_table(TWO_BOXES, weights={(WEB, A): weight})


def test_empty_config_is_an_empty_table() -> None:
    assert desired_table(config()) == Table()


# ----- quorum: the sorry server ---------------------------------------------------

SORRY = DestKey(ipaddress.IPv4Address("192.0.2.200"), 8080)


def with_sorry(*real_servers: RealServer, forwarding: Forwarding = "dr") -> Config:
    return config(
        VirtualServer(
            address=VIP,
            port=80,
            scheduler="rr",
            forwarding=forwarding,
            quorum=2,
            sorry_server=(SORRY.address, SORRY.port),
            real_servers=real_servers,
        )
    )


def test_sorry_server_absent_unless_asked_for() -> None:
    cfg = with_sorry(RealServer(BOX_A, 80), RealServer(BOX_B, 80))
    assert desired_table(cfg).services[0].dests == (Dest(A), Dest(B))


def test_sorry_server_joins_the_live_servers() -> None:
    cfg = with_sorry(RealServer(BOX_A, 80), RealServer(BOX_B, 80))
    table = desired_table(cfg, weights={(WEB, B): 0}, sorry=[WEB])
    assert table.services[0].dests == (Dest(A), Dest(B, weight=0), Dest(SORRY, SORRY_WEIGHT))


def test_sorry_server_takes_the_service_forwarding_method() -> None:
    cfg = with_sorry(RealServer(BOX_A, 80), forwarding="nat")
    (service,) = desired_table(cfg, removed=[(WEB, A)], sorry={WEB}).services
    assert service.dests == (Dest(SORRY, 1, "nat"),)


def test_sorry_for_a_service_without_a_sorry_server_changes_nothing() -> None:
    assert desired_table(TWO_BOXES, sorry=[WEB]) == desired_table(TWO_BOXES)


def test_sorry_for_an_unknown_service_is_ignored() -> None:
    cfg = with_sorry(RealServer(BOX_A, 80))
    assert desired_table(cfg, sorry=[ServiceKey(fwmark=9)]) == desired_table(cfg)


def test_sorry_server_that_is_also_a_real_server_is_one_entry() -> None:
    cfg = config(
        VirtualServer(
            address=VIP,
            port=80,
            scheduler="rr",
            sorry_server=(BOX_B, 80),
            real_servers=(RealServer(BOX_A, 80), RealServer(BOX_B, 80, weight=5)),
        )
    )
    table = desired_table(cfg, weights={(WEB, B): 0}, sorry=[WEB])
    assert table.services[0].dests == (Dest(A), Dest(B, SORRY_WEIGHT))


def test_sorry_server_comes_and_goes_as_one_op_each() -> None:
    cfg = with_sorry(RealServer(BOX_A, 80))
    without = desired_table(cfg, weights={(WEB, A): 0})
    with_it = desired_table(cfg, weights={(WEB, A): 0}, sorry=[WEB])
    assert plan(with_it, without).ops == (AddDest(WEB, Dest(SORRY)),)
    assert plan(without, with_it).ops == (DelDest(WEB, SORRY),)
