"""Notify hooks and the notify FIFO: told of each state change, after its actions are done.

The instance runner calls :meth:`StateHooks.changed` once a decision's packets,
addresses and loop-guard step have been carried out, and it returns at once:
the FIFO line is one non-blocking write, the scripts are tasks of their own.  So
a hook that hangs, fails or cannot be started delays no advert, no VIP and no
loop-guard step; it is killed at ``notify_timeout``, and its end (exit status,
signal or timeout, and duration) is logged and counted.

As keepalived, the hooks of one change are started in order (the state's own
script, then ``notify``) without waiting for each other, so two quick changes
may run concurrently: the FIFO is the ordered record.
"""

from __future__ import annotations

import asyncio
import logging

from lvsagent.config.schema import Command, Hooks
from lvsagent.observe.journal import fields
from lvsagent.scripts.command import Kind, fifo_line, invocations
from lvsagent.scripts.fifo import NotifyFifo
from lvsagent.scripts.runner import ScriptRun, ScriptRunner

__all__ = ["MAX_HOOKS", "StateHooks"]

log = logging.getLogger("lvsagent.scripts")

# Hooks running at once; more wait their turn (in order).  A storm of flaps must not
# fork hundreds of scripts, nor exhaust the unit's TasksMax.
MAX_HOOKS = 16


class StateHooks:
    def __init__(self, runner: ScriptRunner, fifo_path: str | None, timeout: float) -> None:
        self.runner = runner
        self.timeout = timeout
        self.fifo = NotifyFifo(fifo_path) if fifo_path else None
        self._slots = asyncio.Semaphore(MAX_HOOKS)
        self._tasks: set[asyncio.Task[None]] = set()

    def reconfigure(self, fifo_path: str | None, timeout: float) -> None:
        self.timeout = timeout
        if (self.fifo.path if self.fifo else None) != fifo_path:
            if self.fifo is not None:
                self.fifo.close()
            self.fifo = NotifyFifo(fifo_path) if fifo_path else None

    def changed(self, hooks: Hooks, kind: Kind, name: str, state: str, priority: int) -> None:
        """One instance (or group) entered ``state`` (MASTER, BACKUP, FAULT, STOP)."""
        if self.fifo is not None:
            self.fifo.write(fifo_line(kind, name, state, priority))
        loop = asyncio.get_running_loop()
        for key, command, extra in invocations(hooks, kind, name, state, priority):
            label = f"{name} {key}"
            task = loop.create_task(self._run(label, name, command, extra), name=label)
            self._tasks.add(task)  # referenced until done: an unreferenced task may vanish
            task.add_done_callback(self._tasks.discard)

    async def _run(self, label: str, name: str, command: Command, extra: tuple[str, ...]) -> None:
        async with self._slots:
            run = await self.runner.run(
                command, self.timeout, kind="notify", name=label, extra=extra
            )
        _log_run(label, name, command.text, extra, run)

    async def close(self, grace: float) -> None:
        """At stop: hooks still running (notify_stop) get ``grace``, then are killed."""
        await self.runner.close(grace)
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=1.0)
        if self.fifo is not None:
            self.fifo.close()


def _log_run(label: str, name: str, text: str, extra: tuple[str, ...], run: ScriptRun) -> None:
    args = f" {' '.join(extra)}" if extra else ""
    level = logging.INFO if run.ok else logging.WARNING
    advice = "" if run.ok else "; the state change itself is done, this only reports the hook"
    log.log(
        level,
        "%s: %s%s: %s%s",
        label, text, args, run.describe(), advice,
        extra=fields(event="script", instance=name, script=label, outcome=run.outcome),
    )  # fmt: skip
