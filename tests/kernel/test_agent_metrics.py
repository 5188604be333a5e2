"""/metrics of a running daemon counts what the real IPVS carried, INSIDE the lab.

Why: the unit tests prove the collector against made-up snapshots and decoded messages;
this proves the chain an operator's dashboard relies on.  Real client connections go
through the IPVS service the daemon programmed; a scrape of the daemon's /metrics, parsed
with prometheus-client's own parser, must count exactly those connections for the service
and for each real server, with the packets that came with them, next to the VRRP and
real-server series.  Same topology as test_agent_traffic (client, director, rs1, rs2, DR).
"""

from __future__ import annotations

import functools
import sys
import time
from collections.abc import Callable

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.kernel.agentlab import (
    PORT,
    REAL,
    START_TIMEOUT,
    VIP,
    Lab,
    ask_new,
    wait_master,
    wait_programmed,
    write_config,
)
from tests.kernel.labnet import Netns
from tests.kernel.uml import lab_only

pytestmark = [lab_only(__file__), pytest.mark.timeout(120)]

METRICS = "http://127.0.0.1:9650/metrics"  # the default metrics_listen, in the director's netns
SERVICE = f"{VIP}:{PORT}/tcp"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(ns: Netns) -> Samples:
    """One scrape from inside the namespace, every sample keyed by name and labels."""
    fetch = (
        "import urllib.request; "
        f"print(urllib.request.urlopen({METRICS!r}, timeout=5).read().decode())"
    )
    text = ns.run(sys.executable, "-c", fetch).stdout
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def sample(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def change(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return sample(after, name, **labels) - sample(before, name, **labels)


Delta = Callable[..., float]


def scrape_until(ns: Netns, before: Samples, done: Callable[[Delta], bool]) -> Samples:
    """Scrape until ``done`` holds for the change since ``before`` (each scrape is an event)."""
    deadline = time.monotonic() + 10.0
    while True:
        after = scrape(ns)
        if done(functools.partial(change, before, after)) or time.monotonic() > deadline:
            return after
        time.sleep(0.5)  # the kernel's next 2 s tick; nothing to wait on but the clock


def test_a_scrape_counts_the_connections_ipvs_carried(lab: Lab) -> None:
    agent = lab.agent(write_config(lab.tmp / "director.toml", {"rs1": 1, "rs2": 1}))
    wait_programmed(agent, "start")
    wait_master(agent)
    agent.wait_for(r"metrics on http://127\.0\.0\.1:9650/metrics", START_TIMEOUT)
    before = scrape(lab.director)

    answers = ask_new(lab.client, 10)
    # The kernel folds its per-CPU counters into what it reports every 2 s (its rate
    # estimator's tick), so a scrape right after the traffic may not count all of it yet.
    after = scrape_until(
        lab.director,
        before,
        lambda d: d("lvsagent_ipvs_service_connections_total", service=SERVICE) >= 10,
    )

    delta = functools.partial(change, before, after)

    assert delta("lvsagent_ipvs_service_connections_total", service=SERVICE) == 10
    for name, address in REAL.items():
        rs = f"{address}:{PORT}"
        assert delta("lvsagent_ipvs_dest_connections_total", service=SERVICE, rs=rs) == (
            answers[name]
        ), (name, answers)
        # Each connection is at least a SYN, an ACK and a request in, through the director.
        assert delta(
            "lvsagent_ipvs_dest_packets_total", service=SERVICE, rs=rs, direction="in"
        ) >= 3 * answers[name]
        assert sample(after, "lvsagent_ipvs_dest_weight", service=SERVICE, rs=rs) == 1
        assert sample(after, "lvsagent_realserver_kernel_weight", service=SERVICE, rs=rs) == 1
    # DR: replies go straight to the client, so the director sees none of them.
    assert delta(
        "lvsagent_ipvs_service_packets_total", service=SERVICE, direction="out"
    ) == 0
    assert sample(after, "lvsagent_vrrp_state", vrrp_instance="VI_1", state="MASTER") == 1
    assert sample(after, "lvsagent_vrrp_become_master_total", vrrp_instance="VI_1") == 1
