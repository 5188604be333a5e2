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
import ipaddress
import math
from collections.abc import Collection
from typing import TYPE_CHECKING, Any, TypeVar

from lvsagent.config.errors import MAX_PROBLEMS, Problem
from lvsagent.config.locate import Locator, item

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

__all__ = [
    "Checker",
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
