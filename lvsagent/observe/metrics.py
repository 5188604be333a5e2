"""Prometheus /metrics: the agent's snapshot, check latencies and IPVS counters at scrape time.

Why it is built this way (prometheus-client 0.16-0.21 behaves so):

* A dedicated ``CollectorRegistry``: on the global one a collector without
  ``describe()`` is collected at registration, and library metrics would mix in.
* A custom collector evaluated at scrape time: VRRP and health values come
  from the immutable snapshot the daemon publishes (one reference read, so
  the HTTP thread never sees a half-made decision); IPVS counters are read
  from the kernel right then, with a plain netlink socket opened and closed in
  the scrape's own thread (``ipvsstats``), the HTTP server's (observe/scrape.py:
  bounded connections and time, off the daemon's loop).  No IPVS in the
  kernel: no IPVS series, nothing else changes.
* Check latencies are the one thing observed as they happen; the health
  monitor calls ``observe_check`` (thread-safe: prometheus_client locks).

Series are named ``lvsagent_*``.  Discard reasons use keepalived's counter
names (lvsagent.vrrp.packet.Reason), every one always present, so dashboards
built for keepalived map over and a rate() of a reason never starts absent.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import ipaddress
import logging
import platform
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import replace

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from lvsagent import __version__
from lvsagent.config.schema import Config
from lvsagent.observe import ipvsstats
from lvsagent.observe.scrape import ScrapeServer
from lvsagent.observe.snapshot import AgentSnapshot
from lvsagent.vrrp.packet import Reason

log = logging.getLogger("lvsagent.metrics")

STATES = ("INIT", "BACKUP", "MASTER", "FAULT")
# Health checks take from well under a millisecond (loopback) to their timeout.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

SnapshotSource = Callable[[], AgentSnapshot | None]
IpvsSource = Callable[[], list[ipvsstats.ServiceStats] | None]


def parse_listen(text: str) -> tuple[str, int] | None:
    """``"127.0.0.1:9650"`` or ``"[::1]:9650"`` as (address, port); None for "" (disabled).

    ValueError for anything else; the config loader has already refused it.
    """
    if not text:
        return None
    host, sep, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"metrics_listen: expected 'IP:port', got {text!r}")
    ipaddress.ip_address(host)  # an IP literal: never a name to resolve
    return host, int(port)


def _gauge(name: str, doc: str, labels: Iterable[str] = ()) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=list(labels))


def _counter(name: str, doc: str, labels: Iterable[str] = ()) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, labels=list(labels))


def _dist_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def build_info() -> GaugeMetricFamily:
    """``lvsagent_build_info`` (always 1): what runs, for a dashboard or an alert on two boxes
    that differ during an upgrade; the libraries' versions say which of the supported range
    (pyproject.toml) this box has, Debian's or the vendored ones."""
    info = _gauge(
        "lvsagent_build_info",
        "lvsagent's version and those of Python and the libraries it runs on (always 1).",
        ["version", "python_version", "pyroute2_version", "prometheus_client_version"],
    )
    info.add_metric(
        [
            __version__,
            platform.python_version(),
            _dist_version("pyroute2"),
            _dist_version("prometheus_client"),
        ],
        1.0,
    )
    return info


class AgentCollector:
    """Builds every series from the snapshot and the kernel at each scrape."""

    def __init__(self, snapshot: SnapshotSource, ipvs: IpvsSource | None) -> None:
        self._snapshot = snapshot
        self._ipvs = ipvs
        self._ipvs_failed = False
        # The kernel's "fwmark 3" -> the config's "fwmark 3 (172.16.0.30:80/tcp)", so that
        # the IPVS series join the real-server series (set per config: Metrics.set_config).
        self.service_labels: Mapping[str, str] = {}

    def describe(self) -> list[Metric]:
        # Having describe() keeps any registry from collecting at registration.
        return []

    def collect(self) -> Iterator[Metric]:
        yield build_info()
        snap = self._snapshot()
        if snap is not None:
            yield from self._agent(snap)
            yield from self._instances(snap)
            yield from self._servers(snap)
        if self._ipvs is not None:
            yield from self._kernel(self.service_labels)

    def _agent(self, snap: AgentSnapshot) -> Iterator[Metric]:
        start = _gauge("lvsagent_start_time_seconds", "When the daemon started (Unix time).")
        start.add_metric([], snap.started_at)
        lag = _gauge(
            "lvsagent_event_loop_lag_seconds",
            "Worst lateness of the event loop's wake-ups over the last minute.",
        )
        lag.add_metric([], snap.loop_lag)
        yield start
        yield lag
        # Prometheus's own names for the same thing (prometheus_config_last_reload_*).
        ok = _gauge(
            "lvsagent_config_last_reload_successful",
            "0 while the last reload was refused (the daemon runs the previous config).",
        )
        ok.add_metric([], float(snap.last_reload is None or snap.last_reload.ok))
        yield ok
        if snap.last_reload is not None:
            at = _gauge("lvsagent_config_last_reload_timestamp_seconds", "When (Unix time).")
            at.add_metric([], snap.last_reload.at)
            yield at
        yield from _trouble(snap)
        if snap.loop_guard is not None and snap.loop_guard.active is not None:
            guard = _gauge(
                "lvsagent_loop_guard_active", "1 while the loop guard is in force.", ["mode"]
            )
            guard.add_metric([snap.loop_guard.mode], float(snap.loop_guard.active))
            yield guard

    def _instances(self, snap: AgentSnapshot) -> Iterator[Metric]:
        i = ["vrrp_instance"]
        info = _gauge(
            "lvsagent_vrrp_instance_info", "VRRP instances, by VRID and interface.",
            ["vrrp_instance", "vrid", "interface"],
        )  # fmt: skip
        state = _gauge("lvsagent_vrrp_state", "1 for the instance's current state.", [*i, "state"])
        prio = _gauge("lvsagent_vrrp_priority", "Configured priority.", i)
        eff = _gauge("lvsagent_vrrp_effective_priority", "Priority after tracking.", i)
        split = _gauge(
            "lvsagent_vrrp_split_brain", "1 while another master advertises to this master.", i
        )
        last = _gauge(
            "lvsagent_vrrp_last_transition_timestamp_seconds", "Time of the last transition.", i
        )
        counters = {
            "transitions": _counter("lvsagent_vrrp_transitions", "State transitions.", i),
            "adverts_sent": _counter("lvsagent_vrrp_adverts_sent", "Adverts sent.", i),
            "adverts_received": _counter("lvsagent_vrrp_adverts_received", "Adverts accepted.", i),
            "priority_zero_sent": _counter(
                "lvsagent_vrrp_priority_zero_sent", "Priority-0 adverts sent (releases).", i
            ),
            "priority_zero_received": _counter(
                "lvsagent_vrrp_priority_zero_received", "Priority-0 adverts accepted.", i
            ),
            "become_master": _counter(
                "lvsagent_vrrp_become_master", "Transitions to MASTER (keepalived's name).", i
            ),
            "release_master": _counter(
                "lvsagent_vrrp_release_master", "Transitions from MASTER (keepalived's name).", i
            ),
        }
        discards = _counter(
            "lvsagent_vrrp_rx_discarded",
            "Received packets dropped, by keepalived's counter name.",
            [*i, "reason"],
        )
        known = [r.value for r in Reason]
        for inst in snap.instances:
            info.add_metric([inst.name, str(inst.vrid), inst.interface], 1.0)
            for name in STATES:
                state.add_metric([inst.name, name], float(inst.state == name))
            prio.add_metric([inst.name], inst.priority)
            eff.add_metric([inst.name], inst.effective_priority)
            split.add_metric([inst.name], float(inst.split_brain))
            if inst.last_transition_at is not None:
                last.add_metric([inst.name], inst.last_transition_at)
            for attr, family in counters.items():
                family.add_metric([inst.name], getattr(inst, attr))
            for reason in [*known, *sorted(set(inst.discards) - set(known))]:
                discards.add_metric([inst.name, reason], inst.discards.get(reason, 0))
        yield from (info, state, prio, eff, split, last, *counters.values(), discards)

    def _servers(self, snap: AgentSnapshot) -> Iterator[Metric]:
        labels = ["service", "rs"]
        up = _gauge("lvsagent_realserver_up", "1 healthy, 0 failed (absent until checked).", labels)
        weight = _gauge("lvsagent_realserver_weight", "Configured weight.", labels)
        kernel = _gauge("lvsagent_realserver_kernel_weight", "Weight in IPVS now.", labels)
        moves = _counter("lvsagent_realserver_transitions", "Health transitions.", labels)
        drained = _gauge(
            "lvsagent_realserver_drained", "1 while an operator has it drained (lvsagent drain).",
            labels,
        )  # fmt: skip
        since = _gauge(
            "lvsagent_realserver_drained_since_seconds", "When it was drained (Unix time).", labels
        )
        for s in snap.servers:
            key = [s.service, f"{s.address}:{s.port}"]
            if s.up is not None:
                up.add_metric(key, float(s.up))
            weight.add_metric(key, s.weight_configured)
            if s.weight_kernel is not None:
                kernel.add_metric(key, s.weight_kernel)
            moves.add_metric(key, s.transitions)
            drained.add_metric(key, float(s.drained_since is not None))
            if s.drained_since is not None:
                since.add_metric(key, s.drained_since)
        yield from (up, weight, kernel, moves, drained, since)

    def _kernel(self, labels: Mapping[str, str]) -> Iterator[Metric]:
        assert self._ipvs is not None
        try:
            services = self._ipvs()
        except (OSError, ValueError) as exc:  # ValueError: a reply it cannot parse
            # Once per run of failures: a scrape every 15 s must not flood the journal.
            if not self._ipvs_failed:
                log.warning("metrics: cannot read IPVS statistics: %s", exc)
            self._ipvs_failed = True
            return
        self._ipvs_failed = False
        if services is None:
            return
        if labels:
            services = [replace(s, label=labels.get(s.label, s.label)) for s in services]
        yield from _ipvs_families(services)


def _trouble(snap: AgentSnapshot) -> Iterator[Metric]:
    """Whether IPVS could be programmed, and each quorum: what alerts and panels watch."""
    if snap.ipvs is not None:
        errors = _counter(
            "lvsagent_ipvs_reconcile_errors",
            "IPVS requests the kernel refused and passes that failed (no module, EPERM, ...).",
        )
        errors.add_metric([], snap.ipvs.errors)
        yield errors
        if snap.ipvs.up is not None:
            up = _gauge(
                "lvsagent_ipvs_up", "1 while the kernel's IPVS table is as configured, else 0."
            )
            up.add_metric([], float(snap.ipvs.up))
            yield up
    if snap.services:
        lost = _gauge("lvsagent_service_quorum_lost", "1 while below quorum.", ["service"])
        sorry = _gauge(
            "lvsagent_service_sorry_server_active",
            "1 while the sorry server replaces the real servers.",
            ["service"],
        )
        for q in snap.services:
            lost.add_metric([q.service], float(q.quorum_lost))
            sorry.add_metric([q.service], float(q.sorry_server is not None))
        yield lost
        yield sorry


def _ipvs_families(services: list[ipvsstats.ServiceStats]) -> Iterator[Metric]:
    """IPVS totals (counters) and the kernel's own rate estimates (gauges)."""
    for level, labels in (("service", ["service"]), ("dest", ["service", "rs"])):
        p = f"lvsagent_ipvs_{level}"
        d = [*labels, "direction"]
        conns = _counter(f"{p}_connections", "Connections scheduled.", labels)
        pkts = _counter(f"{p}_packets", "Packets.", d)
        octets = _counter(f"{p}_bytes", "Bytes.", d)
        cps = _gauge(f"{p}_connections_per_second", "Kernel rate estimate.", labels)
        pps = _gauge(f"{p}_packets_per_second", "Kernel rate estimate.", d)
        bps = _gauge(f"{p}_bytes_per_second", "Kernel rate estimate.", d)
        families: list[Metric] = [conns, pkts, octets, cps, pps, bps]
        rows: list[tuple[list[str], ipvsstats.Counters]] = []
        if level == "service":
            rows = [([s.label], s.counters) for s in services]
        else:
            active = _gauge(f"{p}_active_connections", "Active connections.", labels)
            inactive = _gauge(f"{p}_inactive_connections", "Inactive connections.", labels)
            weight = _gauge(f"{p}_weight", "Weight in IPVS.", labels)
            for s in services:
                for dest in s.dests:
                    key = [s.label, dest.address]
                    rows.append((key, dest.counters))
                    active.add_metric(key, dest.active_conns)
                    inactive.add_metric(key, dest.inactive_conns)
                    weight.add_metric(key, dest.weight)
            families += [active, inactive, weight]
        for key, c in rows:
            conns.add_metric(key, c.conns)
            cps.add_metric(key, c.cps)
            for direction, packets, nbytes, prate, brate in (
                ("in", c.inpkts, c.inbytes, c.inpps, c.inbps),
                ("out", c.outpkts, c.outbytes, c.outpps, c.outbps),
            ):
                pkts.add_metric([*key, direction], packets)
                octets.add_metric([*key, direction], nbytes)
                pps.add_metric([*key, direction], prate)
                bps.add_metric([*key, direction], brate)
        yield from families


class Metrics:
    """The registry, the check-latency histogram, and (once started) the HTTP server.

    Exists even when metrics_listen is "" so that callers of ``observe_check``
    need no condition; only ``start`` depends on the address.
    """

    def __init__(self, snapshot: SnapshotSource, ipvs: IpvsSource | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self._collector = AgentCollector(snapshot, ipvs)
        self.registry.register(self._collector)
        self._latency = Histogram(
            "lvsagent_realserver_check_latency_seconds",
            "Duration of completed health checks.",
            ["service", "rs"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._server: ScrapeServer | None = None
        self.address: tuple[str, int] | None = None

    @classmethod
    def with_kernel(cls, snapshot: SnapshotSource) -> Metrics:
        """The daemon's: IPVS statistics read from the kernel at each scrape."""
        return cls(snapshot, ipvsstats.read_ipvs_stats)

    def set_config(self, config: Config) -> None:
        """The config's service labels for the IPVS series (the kernel names fwmark services
        by mark alone)."""
        self._collector.service_labels = {
            ipvsstats.fwmark_label(vs.fwmark): vs.label
            for vs in config.virtual_servers
            if vs.fwmark is not None
        }

    def observe_check(self, service: str, rs: str, seconds: float) -> None:
        """One completed health check of ``rs`` ("ip:port") of ``service``; any thread."""
        self._latency.labels(service, rs).observe(seconds)

    def forget_server(self, service: str, rs: str) -> None:
        """Drop a real server's latency series (it left the config on reload)."""
        with contextlib.suppress(KeyError):  # never observed
            self._latency.remove(service, rs)

    def render(self) -> bytes:
        """The exposition text, as a scrape would get it (tests, debugging)."""
        return generate_latest(self.registry)

    def start(self, listen: str) -> tuple[str, int] | None:
        """Serve /metrics on ``listen`` from a daemon thread; None when listen is "".

        Returns the bound (address, port), port 0 resolved.  OSError if the
        address cannot be bound: the caller logs it and runs without metrics.
        """
        where = parse_listen(listen)
        if where is None:
            return None
        server = ScrapeServer(self.render, where[0], where[1])
        server.start()
        self._server = server
        self.address = (where[0], server.port)
        return self.address

    def close(self) -> None:
        """Stop serving (open connections are closed)."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
