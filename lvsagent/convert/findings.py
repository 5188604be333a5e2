"""What the converter has to tell the operator, each located at a keepalived line.

Three kinds, and they decide the exit status of ``lvsagent convert``:

- ``error``: the input is not what keepalived 2.2.7 would read as meant (an
  unknown keyword, a broken block, an unreadable include) or nothing lvsagent
  can run is left; no TOML is written (exit 78).
- ``omitted``: a setting keepalived honours that lvsagent cannot do; the TOML is
  written without it, and the message says what to do instead (exit 3).
- ``note``: the TOML does what keepalived does, and the message says how: where
  keepalived itself ignores or alters a setting (``nb_get_retry`` in TCP_CHECK,
  an auth_pass longer than 8 characters) the TOML does what keepalived does on
  the wire; where lvsagent does the same job its own way (e-mail alerts become
  journal events and Prometheus alert rules) the message names that way.  The
  result is complete.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

__all__ = ["EXIT_COMPLETE", "EXIT_OMISSIONS", "EXIT_REFUSED", "Finding", "Findings", "Kind"]

Kind = Literal["error", "omitted", "note"]

EXIT_COMPLETE = 0
EXIT_OMISSIONS = 3
EXIT_REFUSED = 78  # sysexits EX_CONFIG, as for an invalid lvsagent config

_ORDER = {"error": 0, "omitted": 1, "note": 2}


@dataclass(frozen=True)
class Finding:
    """``file:line: keyword: message``; line is None for whole-file findings."""

    kind: Kind
    file: str
    line: int | None
    keyword: str
    message: str

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        label = {"error": "error", "omitted": "not converted", "note": "note"}
        head = f"{where}: {label[self.kind]}: "
        return head + (f"{self.keyword}: {self.message}" if self.keyword else self.message)


@dataclass
class Findings:
    """Collected in any order; reported by kind, then file order, duplicates once."""

    items: list[Finding] = field(default_factory=list)

    def add(self, finding: Finding) -> None:
        if finding not in self.items:
            self.items.append(finding)

    def of(self, kind: Kind) -> list[Finding]:
        return [f for f in self.sorted() if f.kind == kind]

    def sorted(self) -> list[Finding]:
        return sorted(
            self.items, key=lambda f: (_ORDER[f.kind], f.file, f.line or 0)
        )

    @property
    def exit_status(self) -> int:
        kinds = {f.kind for f in self.items}
        if "error" in kinds:
            return EXIT_REFUSED
        return EXIT_OMISSIONS if "omitted" in kinds else EXIT_COMPLETE
