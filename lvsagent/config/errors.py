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

__all__ = [
    "MAX_PROBLEMS",
    "ConfigError",
    "Problem",
    "crash_problem",
    "format_problems",
    "printable",
    "sort_problems",
    "syntax_problem",
]

# ``check`` stops recording after this many: a file of 100,000 unknown keys must not
# cost 100,000 "did you mean" searches and a screenful per key to say it is wrong.
# The first hundred, in file order, are what an operator reads anyway.
MAX_PROBLEMS = 100


def printable(text: str) -> str:
    """``text`` with every character a terminal or the journal would act on escaped.

    Key names, file names and values come from the file; a key written as
    ``"a\\nb.c: forged"`` would otherwise print as a second, invented problem
    line in ``check``'s output and in the journal.  Only what is not printable
    (C0/C1 controls, line and paragraph separators, format characters) is
    escaped, the way ``repr`` spells it; the rest stays as written.
    """
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


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

    def __post_init__(self) -> None:
        # Escaped once here, so every reader (check, the journal, status) prints it safely.
        for name in ("file", "key", "message"):
            object.__setattr__(self, name, printable(getattr(self, name)))

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
    """Every problem found in one config file; raised only after the whole file was read.

    ``total`` counts the problems found, including those past MAX_PROBLEMS that
    were counted but not recorded; ``problems`` holds the recorded ones.
    """

    def __init__(self, problems: list[Problem], total: int | None = None) -> None:
        self.problems: list[Problem] = sort_problems(problems)
        self.total = max(len(self.problems), total or 0)
        text = format_problems(self.problems)
        if self.total > len(self.problems):
            text += f"\n... and {self.total - len(self.problems)} more problem(s) not shown"
        super().__init__(text)


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


def crash_problem(file: str, text: str, error: Exception) -> Problem:
    """Locate an exception tomllib raised that is not its own error, and say what it means.

    tomllib gives no position for these (a RecursionError from nesting, a
    ValueError from an integer longer than ``int()`` converts), but it parses
    front to back and stops at the first failure: a prefix of the file fails the
    same way exactly when it contains the failing line.  So the first such line
    is found by bisection over prefixes, each of which is parsed only up to that
    line or to its own end (``log2(lines)`` partial parses, on the error path only).
    """
    lines = text.split("\n")

    def fails(count: int) -> bool:
        try:
            tomllib.loads("\n".join(lines[:count]))
        except type(error):
            return True
        except Exception:  # the prefix ends mid-value: not the failure we look for
            return False
        return False

    low, high = 1, len(lines)
    while low < high:
        middle = (low + high) // 2
        if fails(middle):
            high = middle
        else:
            low = middle + 1
    return Problem(file, low, "", _crash_message(error))


def _crash_message(error: Exception) -> str:
    if isinstance(error, RecursionError):
        return "values nested too deeply for the TOML parser (a config needs a few levels)"
    if isinstance(error, MemoryError):
        return "the TOML parser ran out of memory on this file"
    if isinstance(error, ValueError) and "digits" in str(error):
        return "an integer with more than 4300 digits (no setting takes one)"
    return f"the TOML parser failed: {type(error).__name__}: {error}"
