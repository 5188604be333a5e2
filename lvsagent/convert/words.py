"""keepalived's line-level text rules: comments, brace splitting, words and escapes.

Kept apart from the lexer's bookkeeping (includes, parameters, limits) because
these are the rules to compare with keepalived's own reader line by line.
"""

from __future__ import annotations

from collections.abc import Iterator

__all__ = ["decomment", "scan", "split_brace"]

_ESCAPES = {"a": "\a", "b": "\b", "E": "\x1b", "f": "\f", "n": "\n", "r": "\r", "t": "\t",
            "v": "\v"}  # fmt: skip


def decomment(raw: str) -> str:
    """Cut the comment and the surrounding blanks; keep a final '\\' of a continued line."""
    text = raw.lstrip(" \t")
    out: list[str] = []
    quote = False
    i = 0
    cont = False
    while i < len(text):
        ch = text[i]
        if ch == '"':
            quote = not quote
        elif ch == "\\":
            if i + 1 == len(text):
                cont = True
                break
            nxt = text[i + 1]
            if not quote and nxt in "#!":
                out.append(nxt)
            else:
                out.append(ch + nxt)
            i += 2
            continue
        elif not quote and ch in "#!":
            break
        out.append(ch)
        i += 1
    line = "".join(out).rstrip(" \t")
    return line + "\\" if cont else line


def split_brace(text: str) -> tuple[str, str, str]:
    """(before, brace, after) at the first '{' or '}' outside double quotes."""
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == '"':
            close = text.find('"', i + 1)
            if close < 0:
                break
            i = close + 1
            continue
        if ch in "{}":
            return text[:i].rstrip(" \t"), ch, text[i + 1 :].strip(" \t")
        i += 1
    return text, "", ""


def scan(text: str) -> Iterator[str | None]:
    i, n = 0, len(text)
    while i < n:
        while i < n and text[i] in " \t\f\v\r\n":
            i += 1
        if i >= n:
            return
        buf: list[str] = []
        quote = ""
        while i < n:
            ch = text[i]
            if ch == "\\" and i + 1 < n:
                char, i = _escape(text, i + 1)
                buf.append(char)
                continue
            if quote:
                if ch == quote:
                    quote = ""
                else:
                    buf.append(ch)
                i += 1
                continue
            if ch in "\"'":
                quote = ch
                i += 1
                continue
            if ch in " \t\f\v\r\n":
                break
            buf.append(ch)
            i += 1
        if quote:
            yield None
            return
        yield "".join(buf)


def _escape(text: str, i: int) -> tuple[str, int]:
    """The character a backslash sequence at ``text[i]`` stands for, and where text goes on."""
    ch = text[i]
    if ch == "x" and i + 1 < len(text) and text[i + 1] in "0123456789abcdefABCDEF":
        j = i + 1
        while j < len(text) and text[j] in "0123456789abcdefABCDEF":
            j += 1
        return chr(int(text[i + 1 : j], 16) & 0xFF), j
    if ch == "c" and i + 1 < len(text):
        return chr(ord(text[i + 1]) & 0x1F), i + 2
    if ch in "01234567":
        j = i
        while j < len(text) and j < i + 3 and text[j] in "01234567":
            j += 1
        return chr(int(text[i:j], 8) & 0xFF), j
    return _ESCAPES.get(ch, ch), i + 1
