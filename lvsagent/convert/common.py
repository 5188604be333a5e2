"""Reading keepalived values the way keepalived 2.2.7 does, and recording what happened.

keepalived parses numbers with strtol/strtod over the whole word, takes
``on|off|true|false|yes|no`` for a boolean (a bare flag is on), and reads only
the words it expects: the rest of the line is ignored, which is how
``auth_type PASS  auth_pass 1111`` on one line leaves an instance without a
password.  Every reader here says so when it ignores words.
"""

from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass

from lvsagent.convert.findings import Finding, Findings, Kind
from lvsagent.convert.tree import Node

__all__ = ["Mapper", "origin"]

_TRUE = ("on", "true", "yes")
_FALSE = ("off", "false", "no")


def origin(node: Node, text: str | None = None) -> str:
    """The comment beside a converted key: keepalived's words and where they were."""
    said = text if text is not None else " ".join((node.word, *node.args))
    if len(said) > 60:
        said = said[:57] + "..."
    return f"{said} ({node.where})"


@dataclass
class Mapper:
    """Findings plus the value readers every mapping module shares."""

    findings: Findings

    def report(self, kind: Kind, node: Node, message: str) -> None:
        self.findings.add(Finding(kind, node.file, node.line, node.word, message))

    def error(self, node: Node, message: str) -> None:
        self.report("error", node, message)

    def omit(self, node: Node, message: str) -> None:
        self.report("omitted", node, message)

    def note(self, node: Node, message: str) -> None:
        self.report("note", node, message)

    def words(self, node: Node, count: int) -> tuple[str, ...] | None:
        """The first ``count`` arguments; missing ones are an error (keepalived stops there)."""
        if len(node.args) < count:
            self.error(node, f"needs {count} value(s) after {node.word}")
            return None
        self.extra(node, count)
        return node.args[:count]

    def extra(self, node: Node, used: int) -> None:
        if len(node.args) > used:
            rest = " ".join(node.args[used:])
            self.note(node, f"keepalived reads only {used or 'no'} word(s) after {node.word} "
                      f"and ignores {rest!r}; so does the conversion "
                      "(put each keyword on a line of its own)")

    def integer(self, node: Node, low: int, high: int, index: int = 0) -> int | None:
        if not self._has(node, index):
            return None
        if index == 0:
            self.extra(node, 1)
        text = node.args[index]
        try:
            value = int(text, 10)
        except ValueError:
            self.error(node, f"{text!r} is not a whole number")
            return None
        if not low <= value <= high:
            self.error(node, f"{value} is outside {low}..{high}")
            return None
        return value

    def timer(self, node: Node, low: float = 0.0, high: float = 1e9) -> float | None:
        """Seconds, fractions allowed (keepalived's <TIMER>)."""
        if not self._has(node, 0):
            return None
        self.extra(node, 1)
        try:
            value = float(node.args[0])
        except ValueError:
            self.error(node, f"{node.args[0]!r} is not a number of seconds")
            return None
        if not math.isfinite(value) or not low <= value <= high:
            self.error(node, f"{node.args[0]} is outside {low:g}..{high:g} seconds")
            return None
        return value

    def flag(self, node: Node) -> bool | None:
        """A bare flag is on; otherwise one of keepalived's boolean words."""
        if not node.args:
            return True
        self.extra(node, 1)
        word = node.args[0].lower()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
        self.error(node, f"expected on/off, true/false or yes/no, got {node.args[0]!r}")
        return None

    def ipv4(self, node: Node, text: str, what: str) -> ipaddress.IPv4Address | None:
        """An IPv4 address; IPv6 is a feature lvsagent lacks, anything else an error."""
        try:
            address = ipaddress.ip_address(text)
        except ValueError:
            self.error(node, f"{what} {text!r} is not an IP address")
            return None
        if isinstance(address, ipaddress.IPv6Address):
            self.omit(node, f"{what} {text} is IPv6; lvsagent speaks VRRP and IPVS over IPv4 "
                      "only (keep keepalived for the IPv6 part)")
            return None
        return address

    def _has(self, node: Node, index: int) -> bool:
        if len(node.args) <= index:
            self.error(node, f"{node.word} needs a value")
            return False
        return True
