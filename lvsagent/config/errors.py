"""Config problems that name file, line and key, gathered so ``check`` can print all at once.

An operator fixing a config over ssh should see every mistake in one run, not
one per restart (ExaBGP's habit); so nothing in the loader raises on the first
problem.  Each finding becomes a :class:`Problem`, and the loader raises one
:class:`ConfigError` carrying all of them, in file order.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["ConfigError", "Problem", "format_problems", "sort_problems", "syntax_problem"]


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the file, located for a human: ``file:line: key: message``.

    ``key`` is the TOML path (``vrrp_instance[1].priority``, indexes in file
    order) so the message still points somewhere when the line is unknown.  A
    syntax error has no key path: ``key`` is empty and left out of the text.
    """

    file: str
    line: int | None
    key: str
    message: str

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        if not self.key:
            return f"{where}: {self.message}"
        return f"{where}: {self.key}: {self.message}"


def _order(problem: Problem) -> tuple[bool, int]:
    # Whole-file findings (no line) go last: the located ones are the ones to fix first.
    return (problem.line is None, problem.line or 0)


def sort_problems(problems: Iterable[Problem]) -> list[Problem]:
    """File order; problems on one line keep the order the loader found them in."""
    return sorted(problems, key=_order)


def format_problems(problems: Iterable[Problem]) -> str:
    """One problem per line, in file order, as ``check`` prints them."""
    return "\n".join(str(p) for p in sort_problems(problems))


class ConfigError(Exception):
    """Every problem found in one config file; raised only after the whole file was read."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems: list[Problem] = sort_problems(problems)
        super().__init__(format_problems(self.problems))


_POSITION = re.compile(r"\s*\(at line (\d+), column (\d+)\)$")
_AT_END = re.compile(r"\s*\(at end of document\)$")


def syntax_problem(file: str, text: str, error: tomllib.TOMLDecodeError) -> Problem:
    """Turn tomllib's one-string error into a located Problem.

    tomllib (3.11) only offers the position inside its message text, e.g.
    ``Invalid value (at line 2, column 5)``, so the line is read back from there.
    """
    message = str(error)
    found = _POSITION.search(message)
    if found is not None:
        line: int | None = int(found.group(1))
        detail = f"{message[: found.start()]} (column {found.group(2)})"
    else:
        at_end = _AT_END.search(message)
        detail = message if at_end is None else f"{message[: at_end.start()]} (at end of file)"
        # "End of document" is the last line, which is where an editor should jump.
        line = max(1, text.count("\n") + (0 if text.endswith("\n") else 1)) if at_end else None
    return Problem(file, line, "", f"TOML syntax error: {detail}")
