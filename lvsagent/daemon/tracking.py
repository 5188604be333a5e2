"""The tracked scripts, files and processes of the config, as each instance weighs them.

One object per config: the scripts some instance tracks run (scripts/checks.py),
the files and processes some instance tracks are watched (health/trackfile.py,
health/trackprocess.py), and :meth:`Tracking.verdict` turns their current states
into one instance's FAULT flag and priority adjustment with keepalived's weights
(vrrp/track.py).  A change anywhere calls ``on_change``; the daemon then has the
instances that track something re-evaluate.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from lvsagent.config.schema import (
    Config,
    TrackFile,
    TrackProcess,
    TrackRef,
    VrrpInstance,
    VrrpScript,
)
from lvsagent.health.trackfile import TrackedFiles
from lvsagent.health.trackprocess import TrackedProcesses
from lvsagent.scripts.checks import ScriptChecks
from lvsagent.scripts.runner import TERM_GRACE, ScriptRunner
from lvsagent.vrrp.track import Tracked, TrackVerdict, evaluate_tracked

__all__ = ["Tracking", "tracks_anything"]


def _referenced(config: Config, key: str) -> set[str]:
    return {ref.name for inst in config.vrrp_instances for ref in getattr(inst, key)}


def tracks_anything(inst: VrrpInstance) -> bool:
    return bool(inst.track_scripts or inst.track_files or inst.track_processes)


class Tracking:
    def __init__(self, config: Config, runner: ScriptRunner, on_change: Callable[[], None]) -> None:
        self.config = config
        self.on_change = on_change
        self.scripts = ScriptChecks(self._scripts(config), runner, self._changed)
        self.files = TrackedFiles(self._files(config), self._changed)
        self.processes = TrackedProcesses(self._processes(config), self._changed)
        self._tasks: list[asyncio.Task[None]] = []

    @staticmethod
    def _scripts(config: Config) -> list[VrrpScript]:
        used = _referenced(config, "track_scripts")
        return [s for s in config.vrrp_scripts if s.name in used]

    @staticmethod
    def _files(config: Config) -> list[TrackFile]:
        used = _referenced(config, "track_files")
        return [f for f in config.track_files if f.name in used]

    @staticmethod
    def _processes(config: Config) -> list[TrackProcess]:
        used = _referenced(config, "track_processes")
        return [p for p in config.track_processes if p.name in used]

    def _changed(self, _name: str) -> None:
        self.on_change()

    async def start(self) -> None:
        """First values of everything tracked, before any instance runs.

        keepalived keeps an instance out of the election until its scripts have run
        once: the scripts' first runs are awaited, each at most its timeout (plus
        the time to kill it).
        """
        await self.files.start()
        await self.processes.start()
        self.scripts.start()
        scripts = self._scripts(self.config)
        bound = max((s.timeout or s.interval for s in scripts), default=0.0) + TERM_GRACE + 1
        await self.scripts.first_results([s.name for s in scripts], bound)
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self.files.run(), name="track_files"),
            loop.create_task(self.processes.run(), name="track_processes"),
        ]

    def stop(self) -> None:
        self.scripts.stop()
        for task in self._tasks:
            task.cancel()

    def reconfigure(self, config: Config) -> None:
        self.config = config
        self.scripts.reconfigure(self._scripts(config))
        self.files.reconfigure(self._files(config))
        self.processes.reconfigure(self._processes(config))

    def verdict(self, inst: VrrpInstance) -> TrackVerdict:
        """``inst``'s scripts, files and processes now (vrrp/track.py's rules)."""
        config = self.config
        items: list[Tracked] = []
        scripts = {s.name: s.weight for s in config.vrrp_scripts}
        for ref in inst.track_scripts:
            weight = _weight(ref, scripts)
            items.append(Tracked(f"script {ref.name}", weight, self.scripts.state(ref.name)))
        files = {f.name: f.weight for f in config.track_files}
        for ref in inst.track_files:
            weight = _weight(ref, files)
            items.append(Tracked(f"file {ref.name}", weight, value=self.files.value(ref.name)))
        processes = {p.name: p.weight for p in config.track_processes}
        for ref in inst.track_processes:
            weight = _weight(ref, processes)
            items.append(Tracked(f"process {ref.name}", weight, self.processes.state(ref.name)))
        return evaluate_tracked(items)


def _weight(ref: TrackRef, defined: dict[str, int]) -> int:
    return ref.weight if ref.weight is not None else defined.get(ref.name, 0)
