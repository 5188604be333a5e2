"""What the daemon shows the outside: snapshot, systemd notify, /metrics and the control socket.

One snapshot is built on the event loop (every second and after each
event that matters) and published by replacing one reference; the
Prometheus thread and the control socket only ever read a whole one.  None
of this may stop the agent: a busy metrics port or an unwritable socket
directory is logged, and VRRP runs on without it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence

from lvsagent.config.schema import Config
from lvsagent.daemon.draining import DrainBook
from lvsagent.daemon.instance import InstanceRunner
from lvsagent.guard.driver import LoopGuard
from lvsagent.health.monitor import HealthMonitor
from lvsagent.ipvs.desired import DestId, service_key
from lvsagent.ipvs.model import Table
from lvsagent.ipvs.reconciler import IpvsReconciler
from lvsagent.observe.control import ControlError, ControlServer
from lvsagent.observe.metrics import Metrics
from lvsagent.observe.notify import Notifier
from lvsagent.observe.snapshot import (
    AgentSnapshot,
    InstanceStatus,
    IpvsStatus,
    ReloadStatus,
    ServerStatus,
    ServiceStatus,
    split_brain,
)

log = logging.getLogger("lvsagent")

PUBLISH_INTERVAL = 1.0


class Observer:
    def __init__(self, config: Config, drains: DrainBook | None = None) -> None:
        self.config = config
        self.drains = drains
        self.started_at = time.time()
        self.snapshot: AgentSnapshot | None = None
        self.notifier = Notifier()
        self.metrics = Metrics.with_kernel(lambda: self.snapshot)
        self.metrics.set_config(config)
        self.control = ControlServer(
            config.global_.control_socket,
            lambda: self.snapshot,
            drains.handle if drains is not None else None,
        )
        self.runners: Sequence[InstanceRunner] = ()
        self.health: HealthMonitor | None = None
        self.guard: LoopGuard | None = None
        self.known_table: Callable[[], Table | None] = lambda: None
        self.reconciler: IpvsReconciler | None = None
        self.last_reload: ReloadStatus | None = None
        self._status_text = ""
        self._tasks: list[asyncio.Task[None]] = []
        self._latency_series: set[tuple[str, str]] = set()  # (service, "ip:port") observed
        # Per reconciler pass, not per publish (10 000 rows at 1000 x 10).
        self._weights_of: Table | None = None
        self._weights: dict[DestId, int] = {}

    async def start(self, vrrp_alive: Callable[[], Awaitable[object]] | None = None) -> None:
        """Metrics, control socket, watchdog (fed while this loop and ``vrrp_alive`` answer)."""
        g = self.config.global_
        try:
            bound = self.metrics.start(g.metrics_listen)
            if bound is not None:
                log.info("metrics on http://%s:%d/metrics", *bound)
        except OSError as exc:
            log.error(
                "cannot serve metrics on %s: %s; running without them (change metrics_listen)",
                g.metrics_listen,
                exc,
            )
        try:
            await self.control.start()
        except (OSError, ControlError) as exc:
            log.error(
                "cannot open the control socket %s: %s; `lvsagent status` will not answer",
                g.control_socket,
                exc,
            )
        self._tasks = [
            asyncio.create_task(self.notifier.watchdog_task(vrrp_alive), name="watchdog"),
            asyncio.create_task(self._publish_loop(), name="publish"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        try:
            await self.control.stop()
        except OSError as exc:
            log.warning("control socket: %s", exc)
        self.metrics.close()

    # ----- the snapshot -----------------------------------------------------------------

    async def _publish_loop(self) -> None:
        while True:
            self.publish()
            await asyncio.sleep(PUBLISH_INTERVAL)

    def publish(self) -> None:
        now = asyncio.get_running_loop().time()
        self._feed_latencies()
        self.snapshot = AgentSnapshot(
            instances=tuple(instance_status(r, now) for r in self.runners),
            servers=self._servers(),
            loop_guard=self.guard.status() if self.guard is not None else None,
            config_path=self.config.path,
            started_at=self.started_at,
            loop_lag=self.notifier.loop_lag,
            last_reload=self.last_reload,
            ipvs=self._ipvs(),
            services=self._quorums(),
        )
        text = self.status_text()
        if text != self._status_text:
            self._status_text = text
            self.notifier.status(text)

    def _ipvs(self) -> IpvsStatus | None:
        rec = self.reconciler
        if rec is None:
            return None
        return IpvsStatus(rec.up, rec.errors, rec.trouble, rec.trouble_since)

    def _quorums(self) -> tuple[ServiceStatus, ...]:
        """Each service with a quorum rule or a sorry server: lost or not, sorry or not."""
        if self.health is None:
            return ()
        lost, sorry = self.health.quorum_lost(), self.health.sorry()
        out = []
        for vs in self.config.virtual_servers:
            if vs.quorum == 0 and vs.sorry_server is None:
                continue
            key = service_key(vs)
            serving = None
            if key in sorry and vs.sorry_server is not None:
                serving = f"{vs.sorry_server[0]}:{vs.sorry_server[1]}"
            out.append(ServiceStatus(vs.label, key in lost, serving))
        return tuple(out)

    def status_text(self) -> str:
        """systemd's STATUS= line: each instance's state, servers up, the loop guard."""
        snap = self.snapshot
        if snap is None:
            return "starting"
        parts = [f"{i.name} {i.state}" for i in snap.instances]
        if snap.ipvs is not None and snap.ipvs.up is False:
            parts.append("IPVS FAILING")
        lost = sum(1 for q in snap.services if q.quorum_lost)
        if lost:
            parts.append(f"{lost} service(s) without quorum")
        if snap.servers:
            up = sum(1 for s in snap.servers if s.up)
            parts.append(f"{up}/{len(snap.servers)} real servers up")
        if snap.loop_guard is not None:
            on = {True: "engaged", False: "released", None: "unset"}[snap.loop_guard.active]
            parts.append(f"loop guard {snap.loop_guard.mode} {on}")
        return "; ".join(parts)

    def reconfigure(self, config: Config) -> None:
        """A reload: real servers that left the config lose their latency series.

        Why: a histogram series stays in every scrape until removed, so without this a
        retired real server would be exported (and graphed) forever.
        """
        self._feed_latencies()  # the old config's samples first; the monitor records no
        self.config = config  # more for servers it forgets (called before its set_config)
        self.metrics.set_config(config)
        if not self._latency_series:
            return
        kept = _server_labels(config)
        for service, rs in self._latency_series - kept:
            self.metrics.forget_server(service, rs)
        self._latency_series &= kept

    def _feed_latencies(self) -> None:
        if self.health is None:
            return
        for sample in self.health.drain_samples():
            self.metrics.observe_check(sample.service, sample.rs, sample.latency)
            self._latency_series.add((sample.service, sample.rs))

    def _servers(self) -> tuple[ServerStatus, ...]:
        if self.health is None:
            return ()
        table = self.known_table()
        if table is not self._weights_of:  # a new pass: the kernel's weights may have moved
            self._weights_of, self._weights = table, _kernel_weights(table)
        weights = self._weights
        since = self.drains.since if self.drains is not None else lambda ident: None
        return tuple(
            ServerStatus(
                service=h.service,
                address=str(h.address),
                port=h.port,
                up=h.up,
                weight_configured=h.weight,
                reason=h.reason or None,
                latency=h.latency,
                transitions=h.transitions,
                weight_kernel=weights.get(h.ident),
                drained_since=since(h.ident),
            )
            for h in self.health.snapshot()
        )


def _kernel_weights(table: Table | None) -> dict[DestId, int]:
    if table is None:
        return {}
    return {(s.key, d.key): d.weight for s in table.services for d in s.dests}


def _server_labels(config: Config) -> set[tuple[str, str]]:
    """(service label, "ip:port") of every configured real server: the histogram's labels."""
    return {
        (vs.label, f"{rs.address}:{rs.port}")
        for vs in config.virtual_servers
        for rs in vs.real_servers
    }


def instance_status(runner: InstanceRunner, now: float) -> InstanceStatus:
    """One instance for `lvsagent status` and /metrics (``now`` on the loop's clock)."""
    r, c, peer = runner.router, runner.counters, runner.router.peer
    t = r.last_transition
    return InstanceStatus(
        name=runner.inst.name,
        vrid=runner.inst.vrid,
        interface=runner.inst.interface,
        state=r.state.value,
        priority=runner.inst.priority,
        effective_priority=r.priority,
        master_seen=str(runner.master_seen) if runner.master_seen is not None else None,
        last_transition_at=runner.last_transition_at,
        last_transition_reason=(f"{t.old.value} -> {t.new.value}: {t.reason}" if t else None),
        transitions=c.transitions,
        adverts_sent=c.adverts_sent,
        adverts_received=c.adverts_received,
        priority_zero_sent=c.priority_zero_sent,
        priority_zero_received=c.priority_zero_received,
        become_master=c.become_master,
        release_master=c.release_master,
        discards=dict(c.discards),
        split_brain=split_brain(
            r.state.value,
            peer.priority if peer else None,
            peer.at if peer else None,
            peer.interval if peer else None,
            now,
        ),
    )
