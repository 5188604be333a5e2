"""One TOML table as the loader reads it: typed reads through the Checker, located
problems, the rejected keys, unknown keys with keepalived's names recognised.

Each key is read once, through the Checker's strict readers (fields.py); a rejected
key is remembered so that cross-field checks stay quiet about it.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
from collections.abc import Callable, Collection
from typing import Any, TypeVar

from lvsagent.config.fields import Checker, toml_type
from lvsagent.config.locate import child, item

T = TypeVar("T")

# keepalived.conf words an operator will type from habit, and what they are called here.
KEEPALIVED_NAMES = {
    "virtual_router_id": "vrid",
    "virtual_ipaddress": "virtual_addresses",
    "vrrp_version": "version",
    "unicast_src_ip": "unicast_src",
    "unicast_peer": "unicast_peers",
    "track_interface": "track_interfaces",
    "lb_algo": "scheduler",
    "lb_kind": "forwarding",
    "delay_loop": "health.interval",
    "uthreshold": "u_threshold",
    "lthreshold": "l_threshold",
    "url": "path",
    "hysteresis": "quorum_hysteresis",
    "inhibit_on_failure": "health.on_failure",
    "track_script": "track_scripts",
    "track_file": "track_files",
    "track_process": "track_processes",
    "misc_path": "script",
    "misc_timeout": "timeout",
    "misc_dynamic": "dynamic",
    "vrrp_notify_fifo": "notify_fifo",
    "group": "instances",
    "sync_group_tracking_weight": "tracking_weight",
    "vrrp_track_process": "track_process",
}


class Section:
    """One TOML table being read: its raw dict, its key path, and which keys went wrong.

    Remembering rejected keys lets cross-field checks stay quiet about values the
    operator has already been told are wrong (``version = 4`` should not also
    produce "auth_pass needs version 2").
    """

    def __init__(self, check: Checker, path: str, raw: dict[str, Any]) -> None:
        self.check = check
        self.path = path
        self.raw = raw
        self.rejected: set[str] = set()

    def key(self, name: str) -> str:
        return child(self.path, name)

    def has(self, name: str) -> bool:
        return name in self.raw

    def ok(self, name: str) -> bool:
        """Given and accepted."""
        return name in self.raw and name not in self.rejected

    def problem(self, name: str, message: str) -> None:
        self.check.problem(self.key(name) if name else self.path, message)

    def unknown(self, allowed: Collection[str]) -> None:
        """Every key the schema does not know is an error, with a spelling hint when close."""
        for name in self.raw:
            if name in allowed:
                continue
            self.rejected.add(name)
            if self.check.full:  # only counted now: a hint nobody sees costs a difflib search
                self.problem(name, "unknown key")
                continue
            ours = KEEPALIVED_NAMES.get(name, "")
            if ours.rpartition(".")[2] in allowed:  # delay_loop inside [..health]
                ours = ours.rpartition(".")[2]
            close = difflib.get_close_matches(name, list(allowed), n=1)
            if ours.partition(".")[0] in allowed:
                hint = f"; keepalived's {name} is {ours!r} here"
            elif close:
                hint = f"; did you mean {close[0]!r}?"
            else:
                hint = ""
            self.problem(name, f"unknown key{hint}")

    def read(
        self, name: str, convert: Callable[[str, object], T | None], *, required: bool = False
    ) -> T | None:
        """Run one Checker method on ``raw[name]``; note a missing required key."""
        if name not in self.raw:
            if required:
                self.problem(name, "required key is missing")
            return None
        result = convert(self.key(name), self.raw[name])
        if result is None:
            self.rejected.add(name)
        return result

    def string(self, name: str, *, required: bool = False) -> str | None:
        return self.read(name, self.check.string, required=required)

    def boolean(self, name: str) -> bool | None:
        return self.read(name, self.check.boolean)

    def integer(
        self, name: str, lo: int, hi: int | None = None, *, required: bool = False
    ) -> int | None:
        return self.read(name, lambda k, v: self.check.integer(k, v, lo, hi), required=required)

    def number(
        self, name: str, lo: float, hi: float | None = None, *, above: bool = False
    ) -> float | None:
        return self.read(name, lambda k, v: self.check.number(k, v, lo, hi, above=above))

    def choice(self, name: str, options: Collection[str], *, fold_case: bool = False) -> str | None:
        return self.read(name, lambda k, v: self.check.choice(k, v, options, fold_case=fold_case))

    def ipv4(self, name: str, *, required: bool = False) -> ipaddress.IPv4Address | None:
        return self.read(name, self.check.ipv4, required=required)

    def port(self, name: str, *, required: bool = False) -> int | None:
        return self.read(name, self.check.port, required=required)

    def array(self, name: str, *, required: bool = False) -> list[tuple[str, object]] | None:
        return self.read(name, self.check.array, required=required)

    def table(self, name: str) -> Section | None:
        value = self.raw.get(name)
        if name not in self.raw:
            return None
        if not isinstance(value, dict):
            self.rejected.add(name)
            self.problem(name, f"expected a table, got {toml_type(value)}")
            return None
        return Section(self.check, self.key(name), value)

    def tables(self, name: str) -> list[Section] | None:
        """An array of tables (``[[name]]``); each element is a Section of its own."""
        value = self.raw.get(name)
        if name not in self.raw:
            return None
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            self.rejected.add(name)
            header = re.sub(r"\[\d+\]", "", self.key(name))
            self.problem(name, f"expected an array of tables ([[{header}]])")
            return None
        key = self.key(name)
        return [Section(self.check, item(key, i), v) for i, v in enumerate(value)]
