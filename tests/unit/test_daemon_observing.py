"""The Observer on reload: a real server that left the config leaves /metrics too."""

from __future__ import annotations

from typing import Any, cast

from lvsagent.config.loader import parse_config
from lvsagent.daemon.observing import Observer
from lvsagent.health.monitor import CheckSample, HealthMonitor

SERVICE = """
[[vrrp_instance]]
name = "VI_1"
interface = "eth0"
vrid = 51
virtual_addresses = ["10.0.0.100"]

[[virtual_server]]
address = "10.0.0.100"
port = 80
"""


def config(*servers: str) -> Any:
    text = SERVICE + "".join(
        f'\n[[virtual_server.real_server]]\naddress = "{s}"\nport = 80\n' for s in servers
    )
    return parse_config(text, "t.toml")


class Samples:
    """The one HealthMonitor method the Observer's latency feed uses."""

    def __init__(self) -> None:
        self.pending: list[CheckSample] = []

    def drain_samples(self) -> list[CheckSample]:
        out, self.pending = self.pending, []
        return out


def series(observer: Observer) -> set[str]:
    text = observer.metrics.render().decode()
    return {
        line.split('rs="')[1].split('"')[0]
        for line in text.splitlines()
        if line.startswith("lvsagent_realserver_check_latency_seconds_count{")
    }


def test_a_removed_real_server_loses_its_latency_series_on_reload() -> None:
    old = config("10.0.0.1", "10.0.0.2")
    observer = Observer(old)
    health = Samples()
    observer.health = cast(HealthMonitor, health)
    service = old.virtual_servers[0].label
    health.pending = [
        CheckSample(service, "10.0.0.1:80", True, 0.01),
        CheckSample(service, "10.0.0.2:80", True, 0.02),
    ]
    observer._feed_latencies()
    assert series(observer) == {"10.0.0.1:80", "10.0.0.2:80"}

    # A check of .2 finished after the last publish but before the reload: fed under the
    # old config, then forgotten with it, not resurrected by the next publish.
    health.pending = [CheckSample(service, "10.0.0.2:80", True, 0.03)]
    observer.reconfigure(config("10.0.0.1", "10.0.0.3"))
    observer._feed_latencies()
    assert series(observer) == {"10.0.0.1:80"}

    health.pending = [CheckSample(service, "10.0.0.3:80", False, 1.0)]
    observer._feed_latencies()
    assert series(observer) == {"10.0.0.1:80", "10.0.0.3:80"}


def test_a_reload_without_checks_forgets_nothing_and_keeps_the_config() -> None:
    observer = Observer(config("10.0.0.1"))
    new = config("10.0.0.2")
    observer.reconfigure(new)
    assert observer.config is new
    assert series(observer) == set()
