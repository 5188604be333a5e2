"""Typed readers for TOML values that record a Problem instead of raising.

The loader must report every mistake in one pass, so a reader that meets a bad
value writes a located Problem and returns None, and the caller carries on.
None is free to mean "absent or rejected" because TOML has no null.

Values are checked strictly and converted to the schema's types here, once:
booleans are not integers (Python says ``True == 1``; TOML does not), NaN and
infinity are not durations, and an address that ``ipaddress`` rejects is an
error, never a hostname (libnftables would resolve ``10.0.0.300`` through DNS).
"""

from __future__ import annotations

import dataclasses
import datetime
import difflib
import ipaddress
import math
import re
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING, Any, TypeVar

from lvsagent.config.errors import MAX_PROBLEMS, Problem
from lvsagent.config.locate import Locator, child, item

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

__all__ = [
    "Checker",
    "Section",
    "decimal",
    "effective",
    "given",
    "schema_default",
    "toml_type",
]

T = TypeVar("T")

U32_MAX = 2**32 - 1
# sun_path is 108 bytes including the terminating NUL.
SUN_PATH_MAX = 107
# IFNAMSIZ is 16 bytes including the terminating NUL.
IFNAME_MAX = 15

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


def decimal(text: str) -> int | None:
    """ASCII digits only: ``str.isdigit`` and ``int`` also take "²" and "٨٠"."""
    return int(text) if text.isascii() and text.isdigit() else None


def toml_type(value: object) -> str:
    """The TOML name of a parsed value's type, for "expected X, got Y"."""
    # bool before int: bool is an int subclass.  datetime before date, for the same reason.
    names: tuple[tuple[type, str], ...] = (
        (bool, "boolean"),
        (int, "integer"),
        (float, "float"),
        (str, "string"),
        (list, "array"),
        (dict, "table"),
        (datetime.datetime, "date-time"),
        (datetime.date, "date"),
        (datetime.time, "time"),
    )
    for kind, name in names:
        if isinstance(value, kind):
            return name
    return type(value).__name__


def schema_default(cls: type[DataclassInstance], name: str) -> Any:
    """The default that schema.py declares, read from the dataclass, so it is written once."""
    for spec in dataclasses.fields(cls):
        if spec.name != name:
            continue
        if spec.default is not dataclasses.MISSING:
            return spec.default
        if spec.default_factory is not dataclasses.MISSING:
            return spec.default_factory()
        break
    raise KeyError(f"{cls.__name__}.{name} has no default")


def effective(values: dict[str, Any], cls: type[DataclassInstance], name: str) -> Any:
    """What a field will be: the accepted value, else schema.py's default."""
    value = values.get(name)
    return schema_default(cls, name) if value is None else value


def given(values: dict[str, Any]) -> dict[str, Any]:
    """Keyword arguments for a schema dataclass: only what the file set and we accepted.

    Leaving the rest out is what makes schema.py the only place defaults live.
    """
    return {name: value for name, value in values.items() if value is not None}


class Checker:
    """Checks single values and collects the Problems, each located via the Locator."""

    def __init__(self, file: str, locator: Locator) -> None:
        self.file = file
        self.locator = locator
        self.problems: list[Problem] = []
        self.total = 0  # found, including those past MAX_PROBLEMS that were only counted

    @property
    def full(self) -> bool:
        """Enough problems recorded: callers may skip costly hints for the rest."""
        return self.total >= MAX_PROBLEMS

    def problem(self, key: str, message: str, line: int | None = None) -> None:
        """Record a problem at ``key``'s line; ``line`` for a key the file does not contain."""
        self.total += 1
        if self.total > MAX_PROBLEMS:
            return
        where = self.locator.line_of(key) if line is None else line
        self.problems.append(Problem(self.file, where, key, message))

    def where(self, key: str) -> str:
        """``key (line N)``, to point one problem at the other half of a clash."""
        line = self.locator.line_of(key)
        return key if line is None else f"{key} (line {line})"

    def _expect(self, key: str, what: str, value: object) -> None:
        self.problem(key, f"expected {what}, got {toml_type(value)}")

    def string(self, key: str, value: object) -> str | None:
        if isinstance(value, str):
            return value
        self._expect(key, "a string", value)
        return None

    def boolean(self, key: str, value: object) -> bool | None:
        if isinstance(value, bool):
            return value
        self._expect(key, "a boolean", value)
        return None

    def integer(self, key: str, value: object, lo: int, hi: int | None = None) -> int | None:
        if isinstance(value, bool) or not isinstance(value, int):
            self._expect(key, "an integer", value)
            return None
        if value < lo or (hi is not None and value > hi):
            limits = f"at least {lo}" if hi is None else f"between {lo} and {hi}"
            self.problem(key, f"must be {limits}, got {value}")
            return None
        return value

    def number(
        self, key: str, value: object, lo: float, hi: float | None = None, *, above: bool = False
    ) -> float | None:
        """Seconds and the like: an integer or a float; ``above`` makes ``lo`` exclusive."""
        if isinstance(value, bool) or not isinstance(value, int | float):
            self._expect(key, "a number", value)
            return None
        if not math.isfinite(value):
            self.problem(key, f"must be a finite number, got {value}")
            return None
        low_ok = value > lo if above else value >= lo
        if not low_ok or (hi is not None and value > hi):
            low = f"greater than {lo:g}" if above else f"at least {lo:g}"
            limits = low if hi is None else f"{low} and at most {hi:g}"
            self.problem(key, f"must be {limits}, got {value:g}")
            return None
        return float(value)

    def choice(
        self, key: str, value: object, options: Collection[str], *, fold_case: bool = False
    ) -> str | None:
        text = self.string(key, value)
        if text is None:
            return None
        wanted = text.lower() if fold_case else text
        if wanted in options:
            return wanted
        listed = ", ".join(repr(o) for o in options)
        self.problem(key, f"expected one of {listed}, got {text!r}")
        return None

    def ipv4(self, key: str, value: object) -> ipaddress.IPv4Address | None:
        text = self.string(key, value)
        if text is None:
            return None
        try:
            return ipaddress.IPv4Address(text)
        except ValueError:
            self.problem(key, f"not an IPv4 address: {text!r}")
            return None

    def port(self, key: str, value: object) -> int | None:
        return self.integer(key, value, 1, 65535)

    def ifname(self, key: str, value: object) -> str | None:
        """A name the kernel would accept (dev_valid_name), so it is refused here, located.

        The kernel takes 1-15 bytes (IFNAMSIZ with its NUL), not "." or "..", and no
        '/', ':' or blank; a NUL or another control character would end or garble the
        name on its way to the kernel and in every log line that names it.
        """
        text = self.string(key, value)
        if text is None:
            return None
        if (
            not 1 <= len(text.encode()) <= IFNAME_MAX
            or text in (".", "..")
            or any(ch in "/:" or ch.isspace() or not ch.isprintable() for ch in text)
        ):
            self.problem(
                key,
                f"not a Linux interface name (1-{IFNAME_MAX} bytes, no '/', ':', blanks or "
                f"control characters): {text!r}",
            )
            return None
        return text

    def visible(self, key: str, value: object, what: str) -> str | None:
        """Printable ASCII without blanks: what goes verbatim into a request line or header.

        A CR or LF there would end the line early and let the rest of the value
        forge headers; a blank would split the request line; a non-ASCII
        character cannot be sent at all (the request is Latin-1 on the wire).
        """
        text = self.string(key, value)
        if text is None:
            return None
        if not text or not all("!" <= ch <= "~" for ch in text):
            self.problem(
                key,
                f"{what} must be printable ASCII without blanks or control characters, "
                f"got {text!r}",
            )
            return None
        return text

    def endpoint(self, key: str, value: object) -> tuple[ipaddress.IPv4Address, int] | None:
        """An ``"ip:port"`` string, the address checked as strictly as any other."""
        text = self.string(key, value)
        if text is None:
            return None
        host, sep, port = text.rpartition(":")
        if not sep or decimal(port) is None:
            self.problem(key, f"expected 'IPv4:port', got {text!r}")
            return None
        address = self.ipv4(key, host)
        number = self.port(key, decimal(port))
        return None if address is None or number is None else (address, number)

    def listen(self, key: str, value: object) -> str | None:
        """``host:port`` with an IP literal (``[::1]:port`` for v6), never a name to resolve.

        The empty string is allowed: it turns the listener off.
        """
        text = self.string(key, value)
        if text is None or text == "":
            return text
        host, sep, port = text.rpartition(":")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
            parse: type[ipaddress.IPv4Address | ipaddress.IPv6Address] = ipaddress.IPv6Address
        else:
            parse = ipaddress.IPv4Address
        try:
            parse(host)
        except ValueError:
            sep = ""
        number = decimal(port)
        if not sep or number is None or not 1 <= number <= 65535:
            self.problem(
                key, f"expected 'IP:port' or '[IPv6]:port' with an IP literal, got {text!r}"
            )
            return None
        return text

    def socket_path(self, key: str, value: object) -> str | None:
        """An AF_UNIX path: absolute (the daemon's cwd is not the operator's) and short enough."""
        text = self.string(key, value)
        if text is None:
            return None
        if not (text.startswith("/") and text.isprintable()) or len(text.encode()) > SUN_PATH_MAX:
            self.problem(
                key,
                f"expected an absolute path of at most {SUN_PATH_MAX} bytes, without control "
                f"characters, got {text!r}",
            )
            return None
        return text

    def array(self, key: str, value: object) -> list[tuple[str, object]] | None:
        """The elements of an array, each with its own key path for its own problems."""
        if not isinstance(value, list):
            self._expect(key, "an array", value)
            return None
        return [(item(key, index), element) for index, element in enumerate(value)]


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
