"""The drains in force: asked for over the control socket, kept in state_dir.

The pure half (naming, the file's format) is lvsagent.ipvs.drains; this is
the daemon's book of drains: it answers ``drain``/``undrain`` requests, writes
the state file before it says yes (so a drain that was confirmed survives a
crash or a restart), and tells the daemon which services changed so that only
those are re-planned.  A reload keeps every drain whose server the new config
still has.

Who may drain: whoever may connect to the control socket, which is the
socket file's mode (0660, the daemon's user and group, root) enforced by the
kernel at connect(2).  The peer's uid is logged with each change.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Mapping
from typing import Any

from lvsagent.config.schema import Config
from lvsagent.ipvs import drains
from lvsagent.ipvs.desired import DestId
from lvsagent.ipvs.drains import Drained, TargetError
from lvsagent.ipvs.model import ServiceKey
from lvsagent.observe.journal import NOTICE
from lvsagent.statedir import StateDirError, read_private, write_private

__all__ = ["DrainBook"]

log = logging.getLogger("lvsagent.drain")

Answer = dict[str, Any]


class DrainBook:
    def __init__(
        self,
        config: Config,
        on_change: Callable[[frozenset[ServiceKey]], None],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self._on_change = on_change
        self._clock = clock
        self.drained: dict[DestId, Drained] = {}

    def load(self) -> None:
        """The drains saved by an earlier run (a restart keeps them)."""
        g = self.config.global_
        try:
            data = read_private(g.state_dir, drains.FILE_NAME)
        except StateDirError as exc:
            log.error("drain: cannot read the saved drains: %s; no server is drained", exc.strerror)
            return
        if data is None:
            return
        self.drained, dropped = drains.decode(data, self.config)
        for why in dropped:
            log.warning("drain: %s", why)
        for d in self.drained.values():
            log.info("drain: RS %s of %s stays drained (since %s)", d.rs, d.service, _when(d.since))
        if dropped:
            self._save()

    def reconfigure(self, config: Config) -> None:
        """A reload: the drains of servers the new config has are kept, under its names."""
        self.config = config
        kept, dropped = drains.decode(drains.encode(self.drained.values()), config)
        for why in dropped:
            log.warning("drain: %s", why)
        changed = kept.keys() != self.drained.keys()
        self.drained = kept
        if changed:
            self._save()

    def weights(self, services: Collection[ServiceKey] | None = None) -> dict[DestId, int]:
        """Weight 0 for each drained server (of ``services`` only, when given)."""
        if services is None:
            return drains.weights(self.drained)
        return {ident: 0 for ident in self.drained if ident[0] in services}

    def since(self, ident: DestId) -> float | None:
        d = self.drained.get(ident)
        return None if d is None else d.since

    def handle(self, request: Mapping[str, Any], peer: str) -> Answer:
        """The answer to a ``drain`` or ``undrain`` request from ``peer`` ("uid 0")."""
        cmd = request.get("cmd")
        service, rs = request.get("service"), request.get("rs")
        if not isinstance(service, str) or not isinstance(rs, str):
            return {"error": f"{cmd} needs a service and a real server, as strings"}
        try:
            target = drains.resolve(self.config, service, rs, self._clock())
        except TargetError as exc:
            return {"error": str(exc)}
        name = f"RS {target.rs} of {target.service}"
        before = self.drained.get(target.ident)
        if cmd == "drain":
            if before is not None:
                return {"ok": True, "message": f"{name} is already drained, since "
                        f"{_when(before.since)}"}  # fmt: skip
            self.drained[target.ident] = target
        elif before is None:
            return {"ok": True, "message": f"{name} is not drained"}
        else:
            del self.drained[target.ident]
        try:
            self._save(strict=True)
        except StateDirError as exc:
            if before is None:  # nothing changes that could not be kept
                del self.drained[target.ident]
            else:
                self.drained[target.ident] = before
            return {"error": f"{cmd} not done: {exc.strerror}"}
        verb = "drained" if cmd == "drain" else "undrained"
        log.log(NOTICE, "drain: %s %s by %s", name, verb, peer, extra={"journal": {
            "LVSAGENT_EVENT": "drain", "LVSAGENT_SERVICE": target.service,
            "LVSAGENT_RS": target.rs, "LVSAGENT_DRAIN": verb.upper(),
        }})  # fmt: skip
        self._on_change(frozenset({target.ident[0]}))
        if cmd == "drain":
            detail = "weight 0 in IPVS: established connections finish; its checks go on"
        else:
            detail = "back at its configured weight if its check says up"
        return {"ok": True, "message": f"{name} {verb} ({detail})"}

    def _save(self, strict: bool = False) -> None:
        g = self.config.global_
        try:
            write_private(g.state_dir, drains.FILE_NAME, drains.encode(self.drained.values()))
        except StateDirError as exc:
            if strict:
                raise
            why = exc.strerror
            log.error("drain: cannot save the drains: %s; a restart would forget them", why)


def _when(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at))
