"""A fake /proc/sys tree for the sysctl adapter's tests (imported by more than one test file)."""

from __future__ import annotations

from pathlib import Path

from lvsagent.netfilter.sysctl import sysctl_path


def fake_proc(root: Path, values: dict[str, str]) -> Path:
    """``root`` laid out as /proc/sys with these keys and values."""
    for key, value in values.items():
        path = sysctl_path(key, root)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(value + "\n")
    return root
