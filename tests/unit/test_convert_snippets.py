"""The keepalived.conf quoted in etc/box-*.toml is one keepalived 2.2.7 reads as written.

The snippet is cut out of the comment, checked with ``keepalived -t -f`` (where
Debian's keepalived is installed) and converted: the conversion must mean the
file the comment sits in, but for the keys keepalived defaults otherwise.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from lvsagent.config.loader import load_config, parse_config
from lvsagent.convert.conversion import convert
from lvsagent.convert.findings import EXIT_COMPLETE
from lvsagent.convert.lexer import Source

ETC = Path(__file__).resolve().parents[2] / "etc"
BOXES = ["box-a.toml", "box-b.toml"]
# keepalived -t lines that only say this host is not the box (no enp0s3 here).
HOST_ONLY = ("doesn't exist", "Non-existent interface")


def snippet(toml_file: Path) -> str:
    """The indented comment block after 'The keepalived.conf this replaces'."""
    lines = toml_file.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if "keepalived.conf this replaces" in line)
    body: list[str] = []
    for line in lines[start + 1 :]:
        if line.startswith("#   "):
            body.append(line[4:])
        elif body:
            break
    assert body, f"no keepalived snippet in {toml_file}"
    return "\n".join(body) + "\n"


@pytest.mark.parametrize("name", BOXES)
def test_snippet_passes_keepalived_t(name: str, tmp_path: Path) -> None:
    keepalived = shutil.which("keepalived") or "/usr/sbin/keepalived"
    if not Path(keepalived).exists():
        pytest.skip("Debian's keepalived is not installed (tools/host-deps.sh installs it)")
    conf = tmp_path / "keepalived.conf"
    conf.write_text(snippet(ETC / name))
    run = subprocess.run(
        [keepalived, "-t", "-f", str(conf)], capture_output=True, text=True, timeout=30
    )
    said = [
        line for line in (run.stdout + run.stderr).splitlines()
        if line.strip() and not any(text in line for text in HOST_ONLY)
    ]  # fmt: skip
    assert said == [], said


def test_one_line_authentication_is_what_keepalived_misreads(tmp_path: Path) -> None:
    """The form the comment warns about: keepalived -t says nothing, the password is gone."""
    text = snippet(ETC / "box-a.toml").replace(
        "authentication {\n        auth_type PASS\n        auth_pass 1111\n    }",
        "authentication { auth_type PASS  auth_pass 1111 }",
    )
    assert "auth_type PASS  auth_pass 1111 }" in text
    result = convert("/k.conf", Source(read=lambda _: text.encode(), glob=lambda _: []), None)
    assert result.toml is not None
    assert parse_config(result.toml, "x").vrrp_instances[0].auth_pass is None


@pytest.mark.parametrize("name", BOXES)
def test_snippet_converts_to_the_box_file(name: str) -> None:
    text = snippet(ETC / name)
    result = convert("/k.conf", Source(read=lambda _: text.encode(), glob=lambda _: []), None)
    assert result.toml is not None and result.exit_status == EXIT_COMPLETE
    got = parse_config(result.toml, "converted.toml")
    want = load_config(str(ETC / name))
    assert got.vrrp_instances == want.vrrp_instances
    g, w = got.virtual_servers[0], want.virtual_servers[0]
    assert (g.address, g.port, g.protocol, g.scheduler, g.forwarding, g.real_servers) == (
        w.address, w.port, w.protocol, w.scheduler, w.forwarding, w.real_servers
    )  # fmt: skip
    assert (g.health.type, g.health.interval, g.health.tcp) == (
        w.health.type, w.health.interval, w.health.tcp
    )  # fmt: skip
