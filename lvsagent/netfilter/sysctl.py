"""The sysctls the loop guard and IPVS want, set only where they differ and restorable.

What each mode wants is spec.py's (desired_sysctls, ipvs_sysctls); this module writes it.

Originals are recorded once, before the first write, in a JSON file (under
/run/lvsagent/ by default: a reboot resets the sysctls and /run alike), so that
a decommission restores exactly what lvsagent changed, even after a restart.
The file is written and read through statedir.py (mode 0600, no symlink followed,
a directory only lvsagent or root can write), and only ``net.`` keys are ever
restored from it: it decides what is written into /proc/sys.
Every change is logged at INFO with a journal event ``sysctl``.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from lvsagent.statedir import read_private, remove_private, write_private

log = logging.getLogger("lvsagent.netfilter")

PROC_SYS = Path("/proc/sys")
DEFAULT_SAVED_PATH = Path("/run/lvsagent/sysctl-saved.json")


@dataclass(frozen=True)
class Change:
    """One sysctl written: its key, the value found and the value written."""

    key: str
    old: str
    new: str


class SysctlError(OSError):
    """A sysctl cannot be read or written; the message says what to do."""


def sysctl_path(key: str, root: Path = PROC_SYS) -> Path:
    """The /proc/sys file of ``key``; an interface name in ``net.ipv4.conf`` may hold dots."""
    parts = key.split(".")
    if parts[:3] == ["net", "ipv4", "conf"] and len(parts) > 5:
        parts = [*parts[:3], ".".join(parts[3:-1]), parts[-1]]
    if any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"sysctl {key!r} is not a valid key")
    return root.joinpath(*parts)


def read_sysctl(key: str, root: Path = PROC_SYS) -> str | None:
    """The value (whitespace normalised, as sysctl(8) shows it), None if the key does not exist."""
    try:
        return " ".join(sysctl_path(key, root).read_text().split())
    except FileNotFoundError:
        return None


def _missing_advice(key: str) -> str:
    if key.startswith("net.ipv4.vs."):
        return (f"sysctl {key} does not exist: IPVS is not loaded in this kernel "
                "(modprobe ip_vs, or build it with CONFIG_IP_VS)")  # fmt: skip
    if key.startswith("net.ipv4.conf."):
        return f"sysctl {key} does not exist: the interface is missing; fix `interface`"
    return f"sysctl {key} does not exist in this kernel"


def _load(saved_path: Path) -> dict[str, str]:
    raw = read_private(str(saved_path.parent), saved_path.name)
    if raw is None:
        return {}
    try:
        data = json.loads(raw)
        original = data.get("original", {}) if isinstance(data, dict) else {}
        values = {str(k): str(v) for k, v in original.items()}
    except (ValueError, AttributeError) as exc:
        raise SysctlError(f"cannot read saved sysctls {saved_path}: {exc}; "
                          "remove the file if it is damaged") from exc  # fmt: skip
    foreign = sorted(k for k in values if not k.startswith("net."))
    if foreign:
        raise SysctlError(f"saved sysctls {saved_path} name keys lvsagent never sets "
                          f"({', '.join(foreign)}); remove the file")  # fmt: skip
    return values


def _save(saved_path: Path, original: Mapping[str, str]) -> None:
    """Atomic and 0600 (statedir.py): a crash or a full disk must not lose the originals."""
    text = json.dumps({"version": 1, "original": dict(original)}, indent=1) + "\n"
    write_private(str(saved_path.parent), saved_path.name, text.encode())


def _write(key: str, value: str, root: Path) -> None:
    try:
        sysctl_path(key, root).write_text(value + "\n")
    except OSError as exc:
        raise SysctlError(exc.errno, f"cannot set sysctl {key}={value}: {exc.strerror}; "
                          "lvsagent needs root") from exc  # fmt: skip


def apply_sysctls(
    desired: Mapping[str, str],
    saved_path: str | os.PathLike[str] = DEFAULT_SAVED_PATH,
    root: Path = PROC_SYS,
) -> list[Change]:
    """Set what differs from ``desired``; return the changes.

    Every key is checked first: if one is missing (backup_only without IPVS)
    nothing is written and SysctlError names all of them.  The original of a
    key is saved before its first write and never overwritten afterwards.
    """
    current = {key: read_sysctl(key, root) for key in desired}
    missing = [k for k, v in current.items() if v is None]
    if missing:
        raise SysctlError("; ".join(_missing_advice(k) for k in missing))
    saved_path = Path(saved_path)
    original = _load(saved_path)
    changes: list[Change] = []
    for key, value in desired.items():
        old = current[key]
        assert old is not None
        if old == value:
            continue
        if key not in original:
            original[key] = old
            _save(saved_path, original)
        _write(key, value, root)
        changes.append(Change(key, old, value))
        _log(Change(key, old, value), "set")
    return changes


def restore_sysctls(
    saved_path: str | os.PathLike[str] = DEFAULT_SAVED_PATH, root: Path = PROC_SYS
) -> list[Change]:
    """Put back every value lvsagent changed (decommission), then forget them.

    Keys that vanished since (IPVS unloaded, interface gone) are skipped with a
    warning: there is nothing left to restore there.
    """
    saved_path = Path(saved_path)
    original = _load(saved_path)
    changes: list[Change] = []
    for key, value in original.items():
        now = read_sysctl(key, root)
        if now is None:
            log.warning("sysctl %s is gone; its original %s cannot be restored", key, value)
            continue
        if now != value:
            _write(key, value, root)
            change = Change(key, now, value)
            changes.append(change)
            _log(change, "restored")
    remove_private(str(saved_path.parent), saved_path.name)
    return changes


def _log(change: Change, verb: str) -> None:
    log.info(
        "sysctl %s %s: %s -> %s",
        change.key, verb, change.old, change.new,
        extra={"journal": {"LVSAGENT_EVENT": "sysctl", "LVSAGENT_SYSCTL": change.key,
                           "LVSAGENT_OLD_VALUE": change.old, "LVSAGENT_NEW_VALUE": change.new}},
    )  # fmt: skip
