"""keepalived's track scripts: each vrrp_script an instance tracks, run every interval.

Each script is a task of its own on the event loop: the run itself is a child
process awaited through its pidfd (scripts/runner.py), so a slow or hung script
delays nothing but its own next run (a run past ``timeout`` is killed and counts
as failed).  Runs start ``interval`` apart; one that overran its interval is
followed by the next at once, never by two at the same time (keepalived skips a
run while the last is still going).  Only scripts some instance tracks run.

Each result goes through keepalived's rise/fall counter (scripts/verdict.py);
when the verdict changes, ``on_change(name)`` tells the daemon, which lets the
instances that track the script re-evaluate.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable

from lvsagent.config.schema import VrrpScript
from lvsagent.observe.journal import fields
from lvsagent.scripts.runner import ScriptRunner
from lvsagent.scripts.verdict import RiseFall

__all__ = ["ScriptChecks"]

log = logging.getLogger("lvsagent.scripts")


class _Script:
    def __init__(self, script: VrrpScript) -> None:
        self.script = script
        self.verdict = RiseFall(script.rise, script.fall, script.init_fail)
        self.first = asyncio.Event()  # set by the first result
        self.task: asyncio.Task[None] | None = None


class ScriptChecks:
    def __init__(
        self, scripts: Iterable[VrrpScript], runner: ScriptRunner, on_change: Callable[[str], None]
    ) -> None:
        self.runner = runner
        self.on_change = on_change
        self._scripts = {s.name: _Script(s) for s in scripts}

    def state(self, name: str) -> bool | None:
        """OK (True), KO (False), or None before its first result."""
        entry = self._scripts.get(name)
        return entry.verdict.ok if entry is not None else None

    def start(self) -> None:
        for entry in self._scripts.values():
            self._start(entry)

    def _start(self, entry: _Script) -> None:
        name = f"track_script {entry.script.name}"
        entry.task = asyncio.get_running_loop().create_task(self._loop(entry), name=name)

    async def first_results(self, names: Iterable[str], bound: float) -> None:
        """Until each named script has a first result, or ``bound`` seconds.

        keepalived keeps an instance out of the election until the scripts it tracks
        with weight 0 have run once; so does the daemon, with this.
        """
        waits = [self._scripts[n].first.wait() for n in names if n in self._scripts]
        if waits:
            await asyncio.wait([asyncio.ensure_future(w) for w in waits], timeout=bound)

    def reconfigure(self, scripts: Iterable[VrrpScript]) -> None:
        """A reload: a new or changed script starts afresh; an unchanged one keeps its verdict."""
        wanted = {s.name: s for s in scripts}
        for name, entry in list(self._scripts.items()):
            if wanted.get(name) != entry.script:
                self._cancel(entry)
                del self._scripts[name]
        for name, script in wanted.items():
            if name not in self._scripts:
                entry = self._scripts[name] = _Script(script)
                self._start(entry)
                self.on_change(name)

    def stop(self) -> None:
        for entry in self._scripts.values():
            self._cancel(entry)

    @staticmethod
    def _cancel(entry: _Script) -> None:
        if entry.task is not None:
            entry.task.cancel()
            entry.task = None

    async def _loop(self, entry: _Script) -> None:
        loop = asyncio.get_running_loop()
        script = entry.script
        timeout = script.timeout if script.timeout is not None else script.interval
        while True:
            started = loop.time()
            run = await self.runner.run(
                script.script, timeout, kind="track_script", name=script.name
            )
            changed = entry.verdict.record(run.ok)
            entry.first.set()
            what = run.describe()
            if changed:
                ok = entry.verdict.ok
                log.log(
                    logging.INFO if ok else logging.WARNING,
                    "track script %s: %s (%s: %s)",
                    script.name,
                    "OK" if ok else "KO",
                    script.script.text,
                    what,
                    extra=fields(event="track_script", script=script.name,
                                 outcome="ok" if ok else "ko"),
                )  # fmt: skip
                self.on_change(script.name)
            elif not run.ok:
                log.debug("track script %s: %s", script.name, what)
            await asyncio.sleep(max(0.0, started + script.interval - loop.time()))
