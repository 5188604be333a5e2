"""/metrics over real HTTP on loopback, parsed with prometheus-client's own parser."""

from __future__ import annotations

import logging
import urllib.request
from collections.abc import Iterator
from dataclasses import replace

import pytest
from prometheus_client.parser import text_string_to_metric_families

from lvsagent.config.loader import parse_config
from lvsagent.observe import ipvsstats
from lvsagent.observe.ipvsstats import Counters, DestStats, ServiceStats
from lvsagent.observe.metrics import Metrics, parse_listen
from lvsagent.observe.snapshot import (
    AgentSnapshot,
    GuardStatus,
    InstanceStatus,
    ReloadStatus,
    ServerStatus,
)
from lvsagent.vrrp.packet import Reason

SNAP = AgentSnapshot(
    instances=(
        InstanceStatus(
            "VI_1", 51, "eth0", "MASTER", 100, 90,
            last_transition_at=1_700_000_000.0, transitions=2, adverts_sent=40,
            adverts_received=3, priority_zero_sent=1, priority_zero_received=0,
            become_master=2, release_master=1, discards={"ip_ttl_err": 3, "something_new": 1},
            split_brain=True,
        ),
        InstanceStatus("VI_2", 52, "eth1", "BACKUP", 50, 50, master_seen="10.0.0.9"),
    ),
    servers=(
        ServerStatus("10.0.0.100:80/tcp", "10.0.0.1", 80, True, 3, transitions=1, weight_kernel=3),
        ServerStatus("10.0.0.100:80/tcp", "10.0.0.2", 80, False, 1, "refused", None, 4, 0),
        ServerStatus("10.0.0.100:80/tcp", "10.0.0.3", 80, None, 1),
    ),
    loop_guard=GuardStatus("bypass", False, "MASTER: no redirect"),
    config_path="/etc/lvsagent/lvsagent.toml",
    started_at=1_699_999_000.0,
    loop_lag=0.004,
)  # fmt: skip

IPVS = [
    ServiceStats(
        "10.0.0.100:80/tcp",
        Counters(10, 100, 90, 10_000, 9_000, 1, 2, 3, 40, 50),
        (
            DestStats("10.0.0.1:80", 3, 4, 5, 0, Counters(6, 60, 50, 6_000, 5_000, 1, 1, 1, 8, 9)),
            DestStats("10.0.0.2:80", 0, 0, 2, 0, Counters(4, 40, 40, 4_000, 4_000)),
        ),
    ),
    ServiceStats("fwmark 5", Counters(), ()),
]


class Scraper:
    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        address = metrics.start("127.0.0.1:0")
        assert address is not None
        self.url = f"http://127.0.0.1:{address[1]}/metrics"

    def samples(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        with urllib.request.urlopen(self.url, timeout=10) as reply:
            assert reply.status == 200
            text = reply.read().decode()
        return {
            (s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }


def key(name: str, **labels: str) -> tuple[str, frozenset[tuple[str, str]]]:
    return name, frozenset(labels.items())


@pytest.fixture
def published() -> list[AgentSnapshot | None]:
    """What the daemon has published; the collector reads element 0 at each scrape."""
    return [SNAP]


@pytest.fixture
def scraper(published: list[AgentSnapshot | None]) -> Iterator[Scraper]:
    metrics = Metrics(lambda: published[0], ipvs=lambda: IPVS)
    s = Scraper(metrics)
    try:
        yield s
    finally:
        metrics.close()


def test_instance_series(scraper: Scraper) -> None:
    got = scraper.samples()
    assert got[key("lvsagent_vrrp_state", vrrp_instance="VI_1", state="MASTER")] == 1
    for other in ("INIT", "BACKUP", "FAULT"):
        assert got[key("lvsagent_vrrp_state", vrrp_instance="VI_1", state=other)] == 0
    assert got[key("lvsagent_vrrp_state", vrrp_instance="VI_2", state="BACKUP")] == 1
    assert got[
        key("lvsagent_vrrp_instance_info", vrrp_instance="VI_2", vrid="52", interface="eth1")
    ]
    assert got[key("lvsagent_vrrp_priority", vrrp_instance="VI_1")] == 100
    assert got[key("lvsagent_vrrp_effective_priority", vrrp_instance="VI_1")] == 90
    assert got[key("lvsagent_vrrp_transitions_total", vrrp_instance="VI_1")] == 2
    assert got[key("lvsagent_vrrp_adverts_sent_total", vrrp_instance="VI_1")] == 40
    assert got[key("lvsagent_vrrp_adverts_received_total", vrrp_instance="VI_1")] == 3
    assert got[key("lvsagent_vrrp_priority_zero_sent_total", vrrp_instance="VI_1")] == 1
    assert got[key("lvsagent_vrrp_become_master_total", vrrp_instance="VI_1")] == 2
    assert got[key("lvsagent_vrrp_release_master_total", vrrp_instance="VI_1")] == 1
    assert got[key("lvsagent_vrrp_become_master_total", vrrp_instance="VI_2")] == 0
    assert got[key("lvsagent_vrrp_split_brain", vrrp_instance="VI_1")] == 1
    assert got[key("lvsagent_vrrp_split_brain", vrrp_instance="VI_2")] == 0
    assert got[key("lvsagent_vrrp_last_transition_timestamp_seconds", vrrp_instance="VI_1")] == (
        1_700_000_000.0
    )
    assert key("lvsagent_vrrp_last_transition_timestamp_seconds", vrrp_instance="VI_2") not in got


def test_discards_by_keepalived_name_every_reason_present(scraper: Scraper) -> None:
    got = scraper.samples()
    for reason in Reason:
        value = got[
            key("lvsagent_vrrp_rx_discarded_total", vrrp_instance="VI_2", reason=reason.value)
        ]
        assert value == 0
    assert (
        got[key("lvsagent_vrrp_rx_discarded_total", vrrp_instance="VI_1", reason="ip_ttl_err")] == 3
    )
    # A reason this build does not know still shows.
    assert got[
        key("lvsagent_vrrp_rx_discarded_total", vrrp_instance="VI_1", reason="something_new")
    ]


def test_real_server_series_and_latency_histogram(scraper: Scraper) -> None:
    scraper.metrics.observe_check("10.0.0.100:80/tcp", "10.0.0.1:80", 0.003)
    scraper.metrics.observe_check("10.0.0.100:80/tcp", "10.0.0.1:80", 0.2)
    got = scraper.samples()
    rs1 = {"service": "10.0.0.100:80/tcp", "rs": "10.0.0.1:80"}
    rs2 = {"service": "10.0.0.100:80/tcp", "rs": "10.0.0.2:80"}
    rs3 = {"service": "10.0.0.100:80/tcp", "rs": "10.0.0.3:80"}
    assert got[key("lvsagent_realserver_up", **rs1)] == 1
    assert got[key("lvsagent_realserver_up", **rs2)] == 0
    assert key("lvsagent_realserver_up", **rs3) not in got  # not checked yet
    assert got[key("lvsagent_realserver_weight", **rs1)] == 3
    assert got[key("lvsagent_realserver_kernel_weight", **rs2)] == 0
    assert key("lvsagent_realserver_kernel_weight", **rs3) not in got
    assert got[key("lvsagent_realserver_transitions_total", **rs2)] == 4
    hist = "lvsagent_realserver_check_latency_seconds"
    assert got[key(f"{hist}_count", **rs1)] == 2
    assert got[key(f"{hist}_sum", **rs1)] == pytest.approx(0.203)
    assert got[key(f"{hist}_bucket", **rs1, le="0.0025")] == 0
    assert got[key(f"{hist}_bucket", **rs1, le="0.005")] == 1
    assert got[key(f"{hist}_bucket", **rs1, le="0.25")] == 2
    scraper.metrics.forget_server("10.0.0.100:80/tcp", "10.0.0.1:80")
    scraper.metrics.forget_server("10.0.0.100:80/tcp", "never-seen:1")
    assert key(f"{hist}_count", **rs1) not in scraper.samples()


def test_agent_series(scraper: Scraper) -> None:
    got = scraper.samples()
    assert got[key("lvsagent_event_loop_lag_seconds")] == pytest.approx(0.004)
    assert got[key("lvsagent_start_time_seconds")] == 1_699_999_000.0
    assert got[key("lvsagent_loop_guard_active", mode="bypass")] == 0
    # No reload since the start: successful, as Prometheus's own metric says of itself.
    assert got[key("lvsagent_config_last_reload_successful")] == 1
    assert key("lvsagent_config_last_reload_timestamp_seconds") not in got


def test_a_refused_reload_shows(
    scraper: Scraper, published: list[AgentSnapshot | None]
) -> None:
    published[0] = replace(SNAP, last_reload=ReloadStatus(1_700_000_100.0, False, "restart"))
    got = scraper.samples()
    assert got[key("lvsagent_config_last_reload_successful")] == 0
    assert got[key("lvsagent_config_last_reload_timestamp_seconds")] == 1_700_000_100.0


def test_ipvs_series_from_the_kernel_reader(scraper: Scraper) -> None:
    got = scraper.samples()
    svc = {"service": "10.0.0.100:80/tcp"}
    assert got[key("lvsagent_ipvs_service_connections_total", **svc)] == 10
    assert got[key("lvsagent_ipvs_service_packets_total", **svc, direction="in")] == 100
    assert got[key("lvsagent_ipvs_service_packets_total", **svc, direction="out")] == 90
    assert got[key("lvsagent_ipvs_service_bytes_total", **svc, direction="out")] == 9_000
    assert got[key("lvsagent_ipvs_service_connections_per_second", **svc)] == 1
    assert got[key("lvsagent_ipvs_service_bytes_per_second", **svc, direction="in")] == 40
    assert got[key("lvsagent_ipvs_service_connections_total", service="fwmark 5")] == 0
    dest = {**svc, "rs": "10.0.0.1:80"}
    assert got[key("lvsagent_ipvs_dest_connections_total", **dest)] == 6
    assert got[key("lvsagent_ipvs_dest_packets_total", **dest, direction="in")] == 60
    assert got[key("lvsagent_ipvs_dest_bytes_per_second", **dest, direction="out")] == 9
    assert got[key("lvsagent_ipvs_dest_active_connections", **dest)] == 4
    assert got[key("lvsagent_ipvs_dest_inactive_connections", **dest)] == 5
    assert got[key("lvsagent_ipvs_dest_weight", **dest)] == 3
    assert got[key("lvsagent_ipvs_dest_weight", **svc, rs="10.0.0.2:80")] == 0


FWMARK_CONFIG = """
[global]
loop_guard = "fwmark"
peer_mac = "02:00:00:00:00:01"
[[vrrp_instance]]
name = "VI_1"
interface = "eth0"
vrid = 51
virtual_addresses = ["10.0.0.100"]
[[virtual_server]]
address = "10.0.0.100"
port = 80
fwmark = 5
[[virtual_server.real_server]]
address = "10.0.0.1"
port = 80
"""


def test_fwmark_services_carry_the_configs_label_on_both_series(
    scraper: Scraper, published: list[AgentSnapshot | None]
) -> None:
    """The kernel names a fwmark service "fwmark 5"; the config (and the real-server series)
    "fwmark 5 (10.0.0.100:80/tcp)": the IPVS series take the config's, so both join."""
    config = parse_config(FWMARK_CONFIG, "t.toml")
    (label,) = [vs.label for vs in config.virtual_servers]
    assert label == "fwmark 5 (10.0.0.100:80/tcp)"
    scraper.metrics.set_config(config)
    published[0] = AgentSnapshot(servers=(ServerStatus(label, "10.0.0.1", 80, True, 1),))
    got = scraper.samples()
    assert got[key("lvsagent_ipvs_service_connections_total", service=label)] == 0
    assert key("lvsagent_ipvs_service_connections_total", service="fwmark 5") not in got
    assert got[key("lvsagent_realserver_up", service=label, rs="10.0.0.1:80")] == 1
    assert got[key("lvsagent_ipvs_service_connections_total", service="10.0.0.100:80/tcp")] == 10


def test_each_scrape_reads_the_latest_snapshot(
    scraper: Scraper, published: list[AgentSnapshot | None]
) -> None:
    assert scraper.samples()[key("lvsagent_vrrp_state", vrrp_instance="VI_1", state="MASTER")] == 1
    inst = SNAP.instances[0]
    published[0] = AgentSnapshot(
        instances=(
            InstanceStatus(inst.name, inst.vrid, inst.interface, "FAULT", 100, 100),
        ),
    )  # fmt: skip
    got = scraper.samples()
    assert got[key("lvsagent_vrrp_state", vrrp_instance="VI_1", state="MASTER")] == 0
    assert got[key("lvsagent_vrrp_state", vrrp_instance="VI_1", state="FAULT")] == 1
    assert key("lvsagent_vrrp_state", vrrp_instance="VI_2", state="BACKUP") not in got


def test_before_the_first_snapshot_only_ipvs_is_served(
    scraper: Scraper, published: list[AgentSnapshot | None]
) -> None:
    published[0] = None
    names = {name for name, _ in scraper.samples()}
    assert not any(n.startswith("lvsagent_vrrp_") for n in names)
    assert "lvsagent_ipvs_service_connections_total" in names


def test_without_ipvs_nothing_of_it_is_emitted() -> None:
    """The real kernel reader on this host (no IPVS): every other series still there."""
    metrics = Metrics.with_kernel(lambda: SNAP)
    try:
        names = {name for name, _ in Scraper(metrics).samples()}
    finally:
        metrics.close()
    assert "lvsagent_vrrp_state" in names
    assert not any(n.startswith("lvsagent_ipvs_") for n in names)


def test_a_failing_ipvs_read_is_logged_once_and_spares_the_rest(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken() -> list[ipvsstats.ServiceStats] | None:
        raise PermissionError(1, "Operation not permitted")

    metrics = Metrics(lambda: SNAP, ipvs=broken)
    try:
        s = Scraper(metrics)
        with caplog.at_level(logging.WARNING, logger="lvsagent.metrics"):
            for _ in range(3):
                assert key("lvsagent_vrrp_priority", vrrp_instance="VI_1") in s.samples()
    finally:
        metrics.close()
    assert len([r for r in caplog.records if "IPVS statistics" in r.message]) == 1


def test_render_matches_what_is_served(scraper: Scraper) -> None:
    text = scraper.metrics.render().decode()
    assert 'lvsagent_vrrp_state{state="MASTER",vrrp_instance="VI_1"} 1.0' in text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:9650", ("127.0.0.1", 9650)),
        ("[::1]:9650", ("::1", 9650)),
        ("0.0.0.0:0", ("0.0.0.0", 0)),
        ("", None),
    ],
)
def test_parse_listen(text: str, expected: tuple[str, int] | None) -> None:
    assert parse_listen(text) == expected


@pytest.mark.parametrize("text", ["localhost:9650", "127.0.0.1", "127.0.0.1:x", "1.2.3.4:70000"])
def test_parse_listen_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_listen(text)


def test_an_empty_listen_address_serves_nothing_but_still_observes() -> None:
    metrics = Metrics(lambda: SNAP)
    assert metrics.start("") is None
    metrics.observe_check("s", "rs", 0.1)  # the health monitor never needs to check
    assert "lvsagent_realserver_check_latency_seconds_count" in metrics.render().decode()
    metrics.close()


def test_a_busy_port_is_an_oserror(scraper: Scraper) -> None:
    assert scraper.metrics.address is not None
    other = Metrics(lambda: SNAP)
    with pytest.raises(OSError):
        other.start(f"127.0.0.1:{scraper.metrics.address[1]}")
