"""Everything the daemon runs or tracks besides VRRP and IPVS, built once and wired in.

One object for: the launcher (who scripts run as, checked before anything on
the host changes), the script runner and its metrics, the notify hooks and FIFO,
the tracked scripts, files and processes, and the sync groups.  The daemon asks
it for what each instance runner needs (:meth:`Scripting.wiring`), for the health
monitor's check (MISC_CHECK included), and starts and stops it in order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry

from lvsagent.config.schema import Command, Config, Hooks, SyncGroup, VrrpInstance
from lvsagent.daemon.sync import Runner, SyncGroups
from lvsagent.daemon.tracking import Tracking, tracks_anything
from lvsagent.health.misc import with_misc
from lvsagent.health.monitor import Check
from lvsagent.scripts.command import Kind, PrivilegeError
from lvsagent.scripts.hooks import StateHooks
from lvsagent.scripts.runner import Launcher, ScriptRunner
from lvsagent.scripts.stats import ScriptStats
from lvsagent.vrrp.machine import State

__all__ = ["STOP_GRACE", "ScriptSetupError", "Scripting", "state_word"]

# keepalived gives notify_stop a second before it goes on stopping.
STOP_GRACE = 1.0


class ScriptSetupError(Exception):
    """A script this host cannot run as configured: exit 78 (an unknown user) or 77
    (a user lvsagent has no privilege to become); nothing was changed."""

    def __init__(self, message: str, exit_status: int) -> None:
        super().__init__(message)
        self.exit_status = exit_status


def state_word(state: State) -> str:
    """keepalived's word for a state in hooks and the FIFO: INIT is STOP (a shutdown)."""
    return "STOP" if state == State.INITIALIZE else state.value


def commands(config: Config) -> Iterator[tuple[str, Command]]:
    """Every command of the config, with the key that names it."""

    def hooks(where: str, h: Hooks) -> Iterator[tuple[str, Command]]:
        for name in ("master", "backup", "fault", "stop", "notify"):
            command = getattr(h, name)
            if command is not None:
                yield f"{where}.{'notify' if name == 'notify' else 'notify_' + name}", command

    for i, script in enumerate(config.vrrp_scripts):
        yield f"vrrp_script[{i}].script", script.script
    for i, inst in enumerate(config.vrrp_instances):
        yield from hooks(f"vrrp_instance[{i}]", inst.hooks)
    for i, group in enumerate(config.sync_groups):
        yield from hooks(f"vrrp_sync_group[{i}]", group.hooks)
    for i, vs in enumerate(config.virtual_servers):
        for j, rs in enumerate(vs.real_servers):
            health = rs.health or vs.health
            if health.type == "misc" and health.misc.script is not None:
                yield f"virtual_server[{i}].real_server[{j}].health.misc", health.misc.script


class Scripting:
    def __init__(
        self, config: Config, registry: CollectorRegistry, on_tracking: Callable[[], None]
    ) -> None:
        g = config.global_
        self.config = config
        self.launcher = Launcher(g.script_user, g.script_group)
        self.stats = ScriptStats(registry)
        self.runner = ScriptRunner(self.launcher, self.stats.observe)
        self.hooks = StateHooks(self.runner, g.notify_fifo, g.notify_timeout)
        self.tracking = Tracking(config, self.runner, on_tracking)
        self.sync = SyncGroups(config, self._group_changed)
        self.check: Check = with_misc(self.runner)

    def check_host(self) -> None:
        """Before anything changes: every script's user exists and can be switched to."""
        problems = []
        for key, command in commands(self.config):
            try:
                self.launcher.plan(command)
            except LookupError as exc:
                problems.append((f"{key}: {exc}; create the user or change it", 78))
            except PrivilegeError as exc:
                problems.append((f"{key}: {exc}", 77))
        if problems:
            status = max(code for _, code in problems)  # an unknown user first: 78
            raise ScriptSetupError("\n".join(text for text, _ in problems), status)

    def wiring(self, inst: VrrpInstance) -> dict[str, Any]:
        """InstanceRunner's keyword arguments for ``inst``'s tracking, hooks and group."""
        return {
            "tracked": self.tracking.verdict if tracks_anything(inst) else None,
            "notify": self._instance_changed,
            "sync": self.sync if self.config.sync_group_of(inst.name) is not None else None,
        }

    def bind(self, runners: Mapping[str, Runner]) -> None:
        self.sync.bind(runners)

    async def start(self) -> None:
        """The first values of what instances track (scripts run once): before VRRP starts."""
        await self.tracking.start()

    def reconfigure(self, config: Config) -> None:
        g = config.global_
        self.config = config
        self.launcher.reconfigure(g.script_user, g.script_group)
        self.hooks.reconfigure(g.notify_fifo, g.notify_timeout)
        self.tracking.reconfigure(config)
        self.sync.reconfigure(config)

    async def stop(self) -> None:
        """After the instances stopped: their notify_stop hooks get STOP_GRACE, then all end."""
        self.tracking.stop()
        await self.hooks.close(STOP_GRACE)

    def _instance_changed(self, inst: VrrpInstance, state: State, priority: int) -> None:
        self._changed(inst.hooks, "INSTANCE", inst.name, state, priority)

    def _group_changed(self, group: SyncGroup, state: State) -> None:
        self._changed(group.hooks, "GROUP", group.name, state, 0)

    def _changed(self, hooks: Hooks, kind: Kind, name: str, state: State, priority: int) -> None:
        self.hooks.changed(hooks, kind, name, state_word(state), priority)
