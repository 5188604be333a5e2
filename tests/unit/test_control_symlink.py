"""The control socket's chmod never follows a symlink.

Why: the daemon makes its socket 0660 after bind.  Had someone who can write to the
socket's directory swapped the socket for a symlink in between, a chmod that follows
it would make any file lvsagent can reach (as root: any file) group-writable.
"""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from lvsagent.observe import control
from lvsagent.observe.control import ControlError, ControlServer


def test_a_socket_swapped_for_a_symlink_is_not_chmodded_through(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    victim.chmod(0o600)
    path = tmp_path / "run" / "control.sock"
    bind = asyncio.start_unix_server

    async def racing_bind(*args: Any, **kwargs: Any) -> asyncio.AbstractServer:
        server = await bind(*args, **kwargs)
        path.unlink()  # what a local user racing the daemon would do
        path.symlink_to(victim)
        return server

    monkeypatch.setattr(control.asyncio, "start_unix_server", racing_bind)

    async def scenario() -> None:
        server = ControlServer(str(path), lambda: None)
        with pytest.raises(ControlError, match="replaced by a symlink"):
            await server.start()

    asyncio.run(scenario())
    assert stat.S_IMODE(victim.stat().st_mode) == 0o600
    assert victim.read_text() == "precious\n"
    assert not os.path.lexists(path)  # the planted link is gone with the failed socket
