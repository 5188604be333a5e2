"""doc/lvsagent.bash-completion offers what the command takes: its verbs, each verb's options,
the log levels, and config files where a config is expected.  Run in a real bash."""

from __future__ import annotations

import argparse
import shutil
import subprocess
from pathlib import Path

import pytest

from lvsagent import cli

SCRIPT = Path(__file__).resolve().parents[2] / "doc" / "lvsagent.bash-completion"
BASH = shutil.which("bash")


def complete(words: list[str], cwd: Path | None = None) -> list[str]:
    """COMPREPLY for the command line ``words`` (the last one is being completed)."""
    assert BASH is not None
    quoted = " ".join(f"'{w}'" for w in words)
    program = (
        f"source '{SCRIPT}'; COMP_WORDS=({quoted}); COMP_CWORD={len(words) - 1}; _lvsagent; "
        'printf "%s\\n" "${COMPREPLY[@]}"'
    )
    result = subprocess.run(
        [BASH, "--norc", "-c", program], capture_output=True, text=True, cwd=cwd, check=True
    )
    assert result.stderr == ""
    return sorted(line for line in result.stdout.splitlines() if line)


def subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = cli._parser()
    (sub,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def test_verbs() -> None:
    assert complete(["lvsagent", ""]) == sorted([*subparsers(), "--version", "--help"])
    assert complete(["lvsagent", "ch"]) == ["check"]


@pytest.mark.parametrize("verb", sorted(subparsers()))
def test_each_verbs_options_are_the_parsers(verb: str) -> None:
    parser = subparsers()[verb]
    options = {o for a in parser._actions for o in a.option_strings if o.startswith("--")}
    assert set(complete(["lvsagent", verb, "--"])) == options


def test_log_levels_are_the_parsers() -> None:
    (level,) = (a for a in subparsers()["run"]._actions if "--log-level" in a.option_strings)
    assert level.choices is not None
    assert complete(["lvsagent", "run", "--log-level", ""]) == sorted(level.choices)


def test_config_files_where_a_config_goes(tmp_path: Path) -> None:
    (tmp_path / "a.toml").write_text("")
    (tmp_path / "notes.txt").write_text("")
    (tmp_path / "keepalived.conf").write_text("")
    (tmp_path / "sub").mkdir()
    assert complete(["lvsagent", "check", "--config", ""], tmp_path) == ["a.toml", "sub"]
    assert complete(["lvsagent", "plan", ""], tmp_path) == ["a.toml", "sub"]
    assert complete(["lvsagent", "convert", ""], tmp_path) == ["keepalived.conf", "sub"]
    assert complete(["lvsagent", "convert", "-o", ""], tmp_path) == sorted(
        ["a.toml", "notes.txt", "keepalived.conf", "sub"]
    )
