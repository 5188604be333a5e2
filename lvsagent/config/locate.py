"""Line numbers for TOML key paths, because tomllib gives none.

The house rule is that a config problem names its file, key and line.  The
stdlib's ``tomllib`` returns plain dicts with no positions, and a third-party
parser that keeps positions would be a runtime dependency for one error
message.  So this module scans the raw text a second time, only to learn where
each key path starts: table headers (``[a.b]``), arrays of tables
(``[[a.b]]``, indexed per parent element, as tomllib builds them), key/value
lines (dotted keys too), array elements and inline-table keys, even when an
array spans several lines.

It runs only after tomllib accepted the text, so it may assume valid TOML and
never reports errors itself; whatever it cannot place, the caller finds under
the nearest enclosing key (a missing ``vrid`` points at its
``[[vrrp_instance]]`` header).  Values nested deeper than MAX_DEPTH keys are
skipped without recursion: no config key is that deep, and a file of 500
nested arrays must not exhaust the stack of the code that reports it.

Paths are written the way problems name them: ``virtual_server[0].real_server[2].weight``.
"""

from __future__ import annotations

import bisect
import tomllib
from collections.abc import Iterable

__all__ = ["Locator", "child", "item", "parent", "render"]

Part = str | int
KeyPath = tuple[Part, ...]

_BARE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
_SCALAR_END = frozenset(",]}\n#")
# The deepest key path the schema has is 7 parts
# (virtual_server[0].real_server[1].health.http.status_codes[2]); deeper values are
# skipped as a whole, and their problems are reported at the nearest recorded key.
MAX_DEPTH = 16


def render(parts: Iterable[Part]) -> str:
    """``("virtual_server", 0, "port")`` -> ``virtual_server[0].port``."""
    out = ""
    for part in parts:
        out = item(out, part) if isinstance(part, int) else child(out, part)
    return out


def child(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def item(path: str, index: int) -> str:
    return f"{path}[{index}]"


def parent(path: str) -> str:
    """The enclosing path: ``a[0].b`` -> ``a[0]`` -> ``a`` -> ``""``."""
    if path.endswith("]"):
        return path[: path.rindex("[")]
    dot = path.rfind(".")
    return path[:dot] if dot >= 0 else ""


class Locator:
    """Where each key path of one TOML text starts (first occurrence wins)."""

    def __init__(self, text: str) -> None:
        # Scanned on first use: a valid file never needs a line number, and the
        # index of a 1000-service file costs more memory than the config itself
        # (the daemon's RSS keeps such a peak).
        self._text = text
        self._index: dict[str, int] | None = None

    @property
    def _lines(self) -> dict[str, int]:
        if self._index is None:
            self._index = _Scanner(self._text).run()
        return self._index

    def exact(self, path: str) -> int | None:
        """The line where ``path`` itself is written, or None."""
        return self._lines.get(path)

    def line_of(self, path: str) -> int | None:
        """The line of ``path``, else of its nearest enclosing key that is written down.

        A key that is missing (or a table only created implicitly) still gets the
        line of the table the operator has to edit.
        """
        while path:
            line = self._lines.get(path)
            if line is not None:
                return line
            path = parent(path)
        return None


class _Scanner:
    """A position-only reader of valid TOML: values are skipped, keys are recorded."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.lines: dict[str, int] = {}
        # Array-of-tables path (with parent indexes) -> elements seen so far.
        self.counts: dict[KeyPath, int] = {}
        self._starts = [0] + [i + 1 for i, ch in enumerate(text) if ch == "\n"]

    def run(self) -> dict[str, int]:
        table: KeyPath = ()
        while True:
            self._skip(newlines=True)
            if self.pos >= len(self.text):
                return self.lines
            start = self.pos
            if self.text.startswith("[[", self.pos):
                table = self._header(array=True)
            elif self.text[self.pos] == "[":
                table = self._header(array=False)
            else:
                self._key_value(table)
            if self.pos == start:  # cannot happen on valid TOML; never loop forever
                self.pos += 1

    def _line(self) -> int:
        return bisect.bisect_right(self._starts, self.pos)

    def _record(self, path: KeyPath, line: int) -> None:
        self.lines.setdefault(render(path), line)

    def _skip(self, *, newlines: bool) -> None:
        """Skip blanks, and with ``newlines`` also line ends and comments."""
        text = self.text
        while self.pos < len(text):
            ch = text[self.pos]
            if ch in " \t" or (newlines and ch in "\r\n"):
                self.pos += 1
            elif ch == "#" and newlines:
                end = text.find("\n", self.pos)
                self.pos = len(text) if end < 0 else end
            else:
                return

    def _header(self, *, array: bool) -> KeyPath:
        line = self._line()
        self.pos += 2 if array else 1
        keys = self._keys()
        self._skip(newlines=False)
        self.pos += 2 if array else 1
        resolved: list[Part] = []
        for index, key in enumerate(keys):
            resolved.append(key)
            here = tuple(resolved)
            if array and index == len(keys) - 1:
                seen = self.counts.get(here, 0)
                self.counts[here] = seen + 1
                self._record(here, line)
                resolved.append(seen)
            elif here in self.counts:
                # [virtual_server.health] belongs to the latest [[virtual_server]].
                resolved.append(self.counts[here] - 1)
            elif index == 0:
                # [virtual_server.health] with no [[virtual_server]] makes a plain table of
                # it, and the problem "expected an array of tables" needs this line.
                self._record(here, line)
        path = tuple(resolved)
        self._record(path, line)
        return path

    def _key_value(self, table: KeyPath) -> None:
        line = self._line()
        keys = self._keys()
        self._skip(newlines=False)
        if not keys or not self.text.startswith("=", self.pos):
            end = self.text.find("\n", self.pos)
            self.pos = len(self.text) if end < 0 else end
            return
        for depth in range(1, len(keys) + 1):
            self._record(table + tuple(keys[:depth]), line)
        self.pos += 1
        self._skip(newlines=False)
        self._value(table + tuple(keys))

    def _keys(self) -> list[str]:
        """A dotted key; quoted parts are decoded by tomllib itself, so they match its dict."""
        keys: list[str] = []
        text = self.text
        while True:
            self._skip(newlines=False)
            start = self.pos
            if text.startswith('"', start) or text.startswith("'", start):
                self._string()
                quoted = text[start : self.pos]
                keys.append(str(tomllib.loads(f"k = {quoted}")["k"]))
            else:
                while self.pos < len(text) and text[self.pos] in _BARE:
                    self.pos += 1
                if self.pos == start:
                    return keys
                keys.append(text[start : self.pos])
            self._skip(newlines=False)
            if not text.startswith(".", self.pos):
                return keys
            self.pos += 1

    def _value(self, path: KeyPath) -> None:
        text = self.text
        if self.pos >= len(text):
            return
        ch = text[self.pos]
        if ch in "[{" and len(path) > MAX_DEPTH:
            self._skip_nested()
        elif ch in "\"'":
            self._string()
        elif ch == "[":
            self._array(path)
        elif ch == "{":
            self._inline_table(path)
        else:
            while self.pos < len(text) and text[self.pos] not in _SCALAR_END:
                self.pos += 1

    def _array(self, path: KeyPath) -> None:
        self.pos += 1
        index = 0
        while self.pos < len(self.text):
            self._skip(newlines=True)
            if self.text.startswith("]", self.pos):
                self.pos += 1
                return
            start = self.pos
            self._record((*path, index), self._line())
            self._value((*path, index))
            index += 1
            self._skip(newlines=True)
            if self.text.startswith(",", self.pos) or self.pos == start:
                self.pos += 1

    def _inline_table(self, path: KeyPath) -> None:
        self.pos += 1
        while self.pos < len(self.text):
            self._skip(newlines=True)
            if self.text.startswith("}", self.pos):
                self.pos += 1
                return
            start = self.pos
            line = self._line()
            keys = self._keys()
            for depth in range(1, len(keys) + 1):
                self._record(path + tuple(keys[:depth]), line)
            self._skip(newlines=False)
            if self.text.startswith("=", self.pos):
                self.pos += 1
                self._skip(newlines=False)
                self._value(path + tuple(keys))
            self._skip(newlines=True)
            if self.text.startswith(",", self.pos) or self.pos == start:
                self.pos += 1

    def _skip_nested(self) -> None:
        """Skip one array or inline table, however deep, with a counter instead of recursion."""
        text = self.text
        depth = 0
        while self.pos < len(text):
            ch = text[self.pos]
            if ch in "\"'":
                self._string()
                continue
            if ch == "#":
                end = text.find("\n", self.pos)
                self.pos = len(text) if end < 0 else end
                continue
            self.pos += 1
            if ch in "[{":
                depth += 1
            elif ch in "]}":
                depth -= 1
                if depth == 0:
                    return

    def _string(self) -> None:
        """Skip one string of any of TOML's four kinds, escapes and all."""
        text = self.text
        quote = text[self.pos]
        triple = text.startswith(quote * 3, self.pos)
        delim = quote * 3 if triple else quote
        self.pos += len(delim)
        while self.pos < len(text):
            if quote == '"' and text[self.pos] == "\\":
                self.pos += 2
            elif text.startswith(delim, self.pos):
                self.pos += len(delim)
                # A multi-line string may end in one or two quotes of its own: """a"""""
                while triple and text.startswith(quote, self.pos):
                    self.pos += 1
                return
            else:
                self.pos += 1
