"""The converted config as TOML text, each table and key beside its keepalived origin.

The mapper builds a list of tables in file order; this module only writes them.
Values are escaped here and nowhere else, and comments are made single-line and
printable, so that no keepalived input (a file name with a newline, a password
with a quote) can break the TOML.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

__all__ = ["Entry", "Table", "Value", "render", "toml_value"]

Value = str | int | float | bool | list["Value"] | dict[str, "Value"]

_COMMENT_AT = 34  # the column where comments beside keys start, as in etc/*.toml


@dataclass(frozen=True)
class Entry:
    key: str
    value: Value
    origin: str = ""  # where in keepalived.conf it came from, and as what


@dataclass
class Table:
    """``[name]`` or, with ``array``, ``[[name]]``; entries in the order written."""

    name: str
    array: bool = False
    origin: str = ""
    entries: list[Entry] = field(default_factory=list)

    def set(self, key: str, value: Value, origin: str = "") -> None:
        """Set a key; a later setting of the same key replaces the earlier (keepalived's rule)."""
        self.entries = [e for e in self.entries if e.key != key]
        self.entries.append(Entry(key, value, origin))

    def get(self, key: str) -> Value | None:
        for entry in self.entries:
            if entry.key == key:
                return entry.value
        return None

    def drop(self, key: str) -> None:
        self.entries = [e for e in self.entries if e.key != key]


def render(header: list[str], tables: list[Table]) -> str:
    """The TOML document: a comment header, then each table with its entries."""
    lines = [f"# {_printable(text)}".rstrip() for text in header]
    for table in tables:
        if not table.entries and not table.array:
            continue
        lines.append("")
        head = f"[[{table.name}]]" if table.array else f"[{table.name}]"
        lines.append(_beside(head, table.origin))
        for entry in table.entries:
            lines.append(_beside(f"{entry.key} = {toml_value(entry.value)}", entry.origin))
    return "\n".join(lines) + "\n"


def _beside(text: str, comment: str) -> str:
    if not comment:
        return text
    return f"{text.ljust(_COMMENT_AT - 1)} # {_printable(comment)}"


def _printable(text: str) -> str:
    return "".join(ch if ch.isprintable() else "?" for ch in text)


def toml_value(value: Value) -> str:
    """A TOML literal for a str, int, float, bool, array or inline table."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"no TOML literal for {value!r}")
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    items = ", ".join(f"{_key(k)} = {toml_value(v)}" for k, v in value.items())
    return "{ " + items + " }" if items else "{}"


def _key(key: str) -> str:
    if key and all(ch.isascii() and (ch.isalnum() or ch in "_-") for ch in key):
        return key
    return _string(key)


def _string(text: str) -> str:
    out = ['"']
    for ch in text:
        code = ord(ch)
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\u{code:04x}")
        elif 0xD800 <= code <= 0xDFFF:
            out.append("\\ufffd")  # a lone surrogate has no UTF-8 form
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)
