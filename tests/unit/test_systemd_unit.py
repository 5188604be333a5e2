"""systemd/lvsagent.service: resource limits fit what the daemon does, and systemd accepts it.

Why: a unit with a mistyped key still starts (systemd only warns), silently without
the limit; and a socket-bind allow-list that misses metrics_listen's port would leave
/metrics dead under the unit.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from lvsagent.config.schema import Global

UNIT = Path(__file__).parents[2] / "systemd" / "lvsagent.service"
DOC = Path(__file__).parents[2] / "doc"


def settings() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        key, eq, value = line.partition("=")
        if eq and not line.startswith("#"):
            found.setdefault(key.strip(), []).append(value.strip())
    return found


def size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    return int(text[:-1]) * units[text[-1]]


def test_systemd_accepts_every_line(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    assert analyze is not None, "systemd-analyze is part of Debian's systemd package"
    # The binary is not installed here; every other line is verified as shipped.
    unit = tmp_path / UNIT.name
    unit.write_text(UNIT.read_text().replace("/usr/sbin/lvsagent", "/bin/true"))
    # Documentation=man:...: verify runs man(1) on each, here on doc/'s pages.
    for page in (DOC / "lvsagent.8", DOC / "lvsagent.toml.5"):
        section = tmp_path / "man" / f"man{page.suffix[1:]}"
        section.mkdir(parents=True, exist_ok=True)
        shutil.copy(page, section)
    env = {**os.environ, "MANPATH": str(tmp_path / "man")}
    result = subprocess.run(
        [analyze, "verify", str(unit)], capture_output=True, text=True, env=env
    )
    assert result.returncode == 0 and result.stdout + result.stderr == "", result.stderr


def test_resources_are_bounded() -> None:
    s = settings()
    assert 16 <= int(s["TasksMax"][0]) <= 256
    assert 0 < size(s["MemoryHigh"][0]) < size(s["MemoryMax"][0]) <= 1 << 30


def test_only_the_metrics_port_may_be_bound() -> None:
    s = settings()
    port = Global().metrics_listen.rpartition(":")[2]
    assert s["SocketBindDeny"] == ["any"]
    assert s["SocketBindAllow"] == [f"tcp:{port}"]
