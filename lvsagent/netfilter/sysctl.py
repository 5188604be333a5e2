"""The sysctls each loop-guard mode needs, set only where they differ and restorable.

What each mode needs (the design this project follows: two boxes, each director and
real server, keepalived-style sysctl.conf on both):

- every mode: ``net.ipv4.ip_forward = 1``.  The design's sysctl.conf sets it for
  both of its schemes; a director forwarding with LVS-NAT needs it, DR tolerates
  it, and a backup that gets a packet for a VIP it does not hold then answers
  with an ICMP error instead of dropping it silently.
- fwmark: the VIP sits on ``lo`` on both boxes (loopback.py), so the VRRP
  interface must not answer ARP for it on the backup:
  ``net.ipv4.conf.<vrrp if>.arp_ignore = 1`` and ``arp_announce = 2``.  The design
  sets them on the VRRP interface only, which suffices: the kernel uses the
  larger of ``all`` and the interface's value.  ``all`` is left alone because it
  would change ARP on every other interface of the box too; ``lo`` never does
  ARP, so its values change nothing.
- backup_only: ``net.ipv4.vs.backup_only = 1``: IPVS stops balancing while its
  sync daemon is in backup state.  The key exists only where IPVS is loaded.

And whatever the mode, once IPVS answers (:func:`ipvs_sysctls`, set by the
IPVS reconciler, since on a modular kernel the keys appear only then):
``net.ipv4.vs.expire_nodest_conn = 1``.  A removed real server leaves its
connection entries behind, and with the kernel's default 0 IPVS drops every
packet that matches one until the entry times out (a SYN_RECV 60 s, an
established connection 15 minutes), a client's new connection from a reused
source port included.  With 1 the kernel expires them when the server is
removed, so those clients are balanced afresh (or reset, mid-stream), and a new
connection whose old entry points at a drained (weight 0) server is balanced
afresh too; connections to a drained server go on.  No connection IPVS could
still deliver is lost: it only ends the ones whose server is gone.

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
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from lvsagent.netfilter.spec import GuardMode
from lvsagent.statedir import read_private, remove_private, write_private

log = logging.getLogger("lvsagent.netfilter")

PROC_SYS = Path("/proc/sys")
DEFAULT_SAVED_PATH = Path("/run/lvsagent/sysctl-saved.json")
IP_FORWARD = "net.ipv4.ip_forward"
BACKUP_ONLY = "net.ipv4.vs.backup_only"
EXPIRE_NODEST_CONN = "net.ipv4.vs.expire_nodest_conn"


@dataclass(frozen=True)
class Change:
    """One sysctl written: its key, the value found and the value written."""

    key: str
    old: str
    new: str


class SysctlError(OSError):
    """A sysctl cannot be read or written; the message says what to do."""


def conf_key(ifname: str, param: str) -> str:
    """``net.ipv4.conf.<ifname>.<param>``; the interface name is checked (it becomes a path)."""
    if not ifname or ifname in (".", "..") or "/" in ifname or len(ifname) > 15:
        raise ValueError(f"interface name {ifname!r} is not a valid interface name")
    return f"net.ipv4.conf.{ifname}.{param}"


def desired_sysctls(mode: GuardMode, interfaces: Iterable[str]) -> dict[str, str]:
    """The sysctls ``mode`` needs; ``interfaces`` are the VRRP instances' interfaces."""
    wanted = {IP_FORWARD: "1"}
    if mode in ("fwmark", "backup_only"):  # both put the VIP on lo: it must not answer ARP
        for ifname in sorted(set(interfaces)):
            wanted[conf_key(ifname, "arp_ignore")] = "1"
            wanted[conf_key(ifname, "arp_announce")] = "2"
    if mode == "backup_only":
        wanted[BACKUP_ONLY] = "1"
    if mode not in ("bypass", "fwmark", "backup_only"):
        raise ValueError(f"loop_guard {mode!r} is not bypass, fwmark or backup_only")
    return wanted


def ipvs_sysctls(expire_nodest_conn: bool) -> dict[str, str]:
    """The IPVS sysctls lvsagent sets (``ipvs_expire_nodest_conn``; none when false)."""
    return {EXPIRE_NODEST_CONN: "1"} if expire_nodest_conn else {}


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
