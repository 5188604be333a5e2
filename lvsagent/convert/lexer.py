"""keepalived.conf as keepalived 2.2.7 reads it: a stream of located lines of words.

keepalived does most of its grammar line by line before any keyword is looked
at, and the converter follows the same order so that it reads what keepalived
reads:

1. a comment starts at the first ``#`` or ``!`` outside double quotes (``\\#``
   keeps the character); blanks around the line go;
2. a line ``@ID rest`` is kept (as ``rest``) only when ID is the config-id, and
   ``@^ID rest`` only when it is not;
3. ``$NAME=value`` defines a parameter (a value ending in ``\\`` goes on over the
   next lines); ``$NAME`` followed by a blank or the line's end, and ``${NAME}``
   anywhere, are replaced, again and again while a ``$`` is left;
4. ``include PATTERN`` (two words) reads every file the glob matches, relative
   to the including file's directory, at that point of the stream;
5. the first ``{`` or ``}`` outside double quotes splits the line: every brace
   becomes a line of its own, so ``80{`` and ``{ auth_type PASS }`` read as
   ``80``, ``{``, ``auth_type PASS``, ``}``;
6. words are split at blanks; single or double quotes group, backslash escapes.

No I/O happens here: files and globs come through the injected ``Source``.
Everything is bounded (include depth, input size, line length, substitution
passes), so a hostile or broken file ends in a located error, never a hang.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from lvsagent.convert.findings import Finding, Findings
from lvsagent.convert.keywords import INCLUDES
from lvsagent.convert.words import decomment, scan, split_brace

__all__ = ["LIMITS", "Limits", "Line", "Source", "read_lines"]

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_BLANK = re.compile(r"[ \t]")


@dataclass(frozen=True)
class Limits:
    """Bounds that keep any input finite; keepalived itself has none for some of them."""

    include_depth: int = 8
    total_bytes: int = 16 * 1024 * 1024
    total_lines: int = 500_000
    line_chars: int = 64 * 1024
    substitutions: int = 256


LIMITS = Limits()


@dataclass(frozen=True)
class Source:
    """How the lexer reaches files: ``read(path) -> bytes`` and ``glob(pattern) -> paths``.

    ``read`` raises OSError for a file it cannot open; ``glob`` returns the
    regular files a pattern matches, sorted, as glob(3) would.
    """

    read: Callable[[str], bytes]
    glob: Callable[[str], list[str]]


@dataclass(frozen=True)
class Line:
    """One logical line: its words, and the file and line it came from."""

    words: tuple[str, ...]
    file: str
    line: int


@dataclass
class _State:
    source: Source
    config_id: str | None
    limits: Limits
    findings: Findings
    defs: dict[str, tuple[str, bool]] = field(default_factory=dict)  # name -> (value, multiline)
    out: list[Line] = field(default_factory=list)
    stack: list[str] = field(default_factory=list)
    bytes_read: int = 0
    stopped: bool = False

    def error(self, file: str, line: int | None, message: str) -> None:
        self.findings.add(Finding("error", file, line, "", message))


def read_lines(
    path: str, source: Source, config_id: str | None, findings: Findings, limits: Limits = LIMITS
) -> list[Line]:
    """Every logical line of ``path`` and its includes, in keepalived's order."""
    state = _State(source, config_id, limits, findings)
    _read_file(state, path, None)
    return state.out


def _read_file(state: _State, path: str, where: tuple[str, int] | None) -> None:
    if len(state.stack) >= state.limits.include_depth:
        file, line = where or (path, 0)
        state.error(file, line, f"include nested deeper than {state.limits.include_depth} "
                    f"files (at {path}); flatten the includes")
        return
    if path in state.stack:
        file, line = where or (path, 0)
        state.error(file, line, f"include cycle: {path} includes itself; remove the include")
        return
    try:
        data = state.source.read(path)
    except OSError as exc:
        file, line = where or (path, None)  # type: ignore[assignment]
        state.error(file, line, f"cannot read {path}: {exc.strerror or exc}")
        return
    state.bytes_read += len(data)
    if state.bytes_read > state.limits.total_bytes:
        state.error(path, None, f"the files read exceed {state.limits.total_bytes} bytes; "
                    "is an include reading something that is not a keepalived.conf?")
        state.stopped = True
        return
    state.stack.append(path)
    try:
        _read_text(state, path, data.decode("utf-8", errors="replace"))
    finally:
        state.stack.pop()


def _read_text(state: _State, path: str, text: str) -> None:
    pending: str | None = None  # the multiline definition being continued
    for number, raw in enumerate(text.split("\n"), start=1):
        if state.stopped:
            return
        raw = raw.rstrip("\r")
        if len(raw) > state.limits.line_chars:
            state.error(path, number, f"line longer than {state.limits.line_chars} characters")
            continue
        if pending is not None:
            line = decomment(raw)
            if line.endswith("\\"):
                _extend(state, pending, line[:-1].rstrip(" \t") + "\n")
                continue
            _extend(state, pending, line)
            pending = None
            continue
        line = decomment(raw)
        if line:
            pending = _logical(state, path, number, line)


def _extend(state: _State, name: str, more: str) -> None:
    value, _ = state.defs[name]
    if more.strip():
        value += more
    state.defs[name] = (value, True)


def _logical(state: _State, path: str, number: int, line: str) -> str | None:
    """Handle one decommented line; returns a parameter name whose definition goes on."""
    queue = [line]
    while queue and not state.stopped:
        text = queue.pop(0)
        if len(state.out) >= state.limits.total_lines:
            state.error(path, number, f"more than {state.limits.total_lines} lines after "
                        "expansion; the input is not a plausible keepalived.conf")
            state.stopped = True
            return None
        result = _prepare(state, path, number, text)
        if result is None:
            continue
        if isinstance(result, _Definition):
            if result.multiline:
                return result.name
            continue
        text, more = result
        queue[0:0] = more
        words = _words(state, path, number, text)
        if words is None:
            continue
        if words[0] in INCLUDES and len(words) == 2:
            _include(state, path, number, words[1])
            continue
        head, brace, rest = split_brace(text)
        if brace:
            if head:
                queue.insert(0, rest)
                queue.insert(0, brace)
                words = _words(state, path, number, head)
                if words is not None:
                    state.out.append(Line(words, path, number))
                continue
            state.out.append(Line((brace,), path, number))
            if rest:
                queue.insert(0, rest)
            continue
        state.out.append(Line(words, path, number))
    return None


@dataclass(frozen=True)
class _Definition:
    name: str
    multiline: bool


def _prepare(
    state: _State, path: str, number: int, text: str
) -> tuple[str, list[str]] | _Definition | None:
    """Conditionals, definitions and substitution; the text and any lines it expands to."""
    more: list[str] = []
    for _ in range(state.limits.substitutions):
        if text.startswith("@"):
            negate = text.startswith("@^")
            body = text[2 if negate else 1 :]
            blank = _BLANK.search(body)
            if blank is None:
                return None  # keepalived drops an '@' line with nothing after the id
            matched = state.config_id is not None and body[: blank.start()] == state.config_id
            if matched == negate:
                return None
            text = body[blank.start() :].lstrip(" \t")
        if text.startswith("$"):
            definition = _define(state, text)
            if definition is not None:
                return definition
        if text.startswith("~SEQ") or text.startswith("~LST"):
            state.error(path, number, f"{text[:4]} blocks are not supported by the converter; "
                        "write the lines they generate out in full")
            return None
        if text.startswith("~") or not state.defs or "$" not in text:
            return text, more
        replaced = _substitute(state, text)
        if replaced is None:
            return text, more
        text, extra = replaced
        more = extra + more
        if len(text) > state.limits.line_chars:
            state.error(path, number, f"a line grows past {state.limits.line_chars} "
                        "characters by parameter substitution")
            return None
        if not (text.startswith("@") or "$" in text):
            return text, more
    state.error(path, number, f"parameter substitution does not end after "
                f"{state.limits.substitutions} passes (a parameter that contains itself?)")
    return None


def _define(state: _State, text: str) -> _Definition | None:
    """``$NAME=value``: no blank before '='; a value ending in '\\' goes on."""
    match = _NAME.match(text, 1)
    if match is None or text[match.end() : match.end() + 1] != "=":
        return None
    name = match.group()
    value = text[match.end() + 1 :].lstrip(" \t")
    multiline = value.endswith("\\")
    if multiline:
        value = value[:-1].rstrip(" \t")
        value = value + "\n" if value else ""
    state.defs[name] = (value, multiline)
    return _Definition(name, multiline)


def _substitute(state: _State, text: str) -> tuple[str, list[str]] | None:
    """Replace the defined parameters once, left to right; None when nothing matched."""
    out: list[str] = []
    extra: list[str] = []
    pos = 0
    found = False
    while True:
        dollar = text.find("$", pos)
        if dollar < 0 or dollar + 1 >= len(text):
            break
        braces = text[dollar + 1] == "{"
        match = _NAME.match(text, dollar + (2 if braces else 1))
        end = match.end() if match else -1
        after = text[end : end + 1]
        ok = match is not None and (after == "}" if braces else after in ("", " ", "\t", ",", ")"))
        if not ok or match is None or match.group() not in state.defs:
            out.append(text[pos : dollar + 1])
            pos = dollar + 1
            continue
        value, multiline = state.defs[match.group()]
        stop = end + 1 if braces else end
        if multiline:
            if stop != len(text):  # a multiline value only replaces a whole line's end
                out.append(text[pos : dollar + 1])
                pos = dollar + 1
                continue
            first, *rest = value.split("\n")
            out.append(text[pos:dollar] + first)
            extra = [r for r in rest if r.strip()]
            pos = len(text)
            found = True
            break
        out.append(text[pos:dollar] + value)
        pos = stop
        found = True
    if not found:
        return None
    return "".join(out) + text[pos:], extra


def _words(state: _State, path: str, number: int, text: str) -> tuple[str, ...] | None:
    """Split at blanks; quotes group (and are removed), backslash escapes."""
    words: list[str] = []
    for word in scan(text):
        if word is None:
            state.error(path, number, "a quote is not closed; close it or escape it with '\\'")
            return None
        words.append(word)
    return tuple(words) if words else None


def _include(state: _State, path: str, number: int, pattern: str) -> None:
    """Every file the pattern matches, relative to the including file; no match is no error."""
    full = pattern if pattern.startswith("/") else posixpath.join(posixpath.dirname(path), pattern)
    try:
        matches = state.source.glob(full)
    except OSError as exc:
        state.error(path, number, f"cannot list {full}: {exc.strerror or exc}")
        return
    if not matches:
        state.findings.add(
            Finding("note", path, number, "include",
                    f"{pattern} matches no file; keepalived reads nothing there either")
        )
    for match in matches:
        if state.stopped:
            return
        _read_file(state, match, (path, number))
