"""keepalived's block structure over the lexer's lines, with every keyword checked.

A line followed by a ``{`` line owns the block up to the matching ``}``.  Each
block of keywords is checked against keywords.py: a word keepalived 2.2.7 does
not know there is an error, as is a block after a keyword that takes none, a
block keyword without its ``{``, a stray brace or a block left open at the end.
keepalived itself only logs these and reads on, but what it then reads is not
what the author meant (``lb-kind DR`` left a service in NAT), so the converter
refuses rather than guess.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from lvsagent.convert.findings import Finding, Findings
from lvsagent.convert.keywords import (
    BLOCK_CONTEXT,
    KNOWN,
    LEGACY_IGNORED,
    OPAQUE_BLOCKS,
    VALUE_BLOCKS,
)
from lvsagent.convert.lexer import Line

__all__ = ["MAX_DEPTH", "Node", "build_tree"]

# keepalived's deepest real nesting is 5 (virtual_server/real_server/HTTP_GET/url);
# anything far deeper is not a keepalived.conf.
MAX_DEPTH = 32


@dataclass
class Node:
    """A keyword line; ``block`` holds the lines of its ``{ }`` block, None when it has none."""

    word: str
    args: tuple[str, ...]
    file: str
    line: int
    block: list[Node] | None = None
    ignored: bool = field(default=False)  # a legacy word keepalived 2.2.7 skips

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"

    def children(self, word: str | None = None) -> Iterator[Node]:
        """The lines of the block (those named ``word``), skipping ignored ones."""
        for child in self.block or ():
            if not child.ignored and (word is None or child.word == word):
                yield child

    def first(self, word: str) -> Node | None:
        """The last occurrence wins in keepalived (each line overwrites); so does this."""
        found = None
        for child in self.children(word):
            found = child
        return found


def build_tree(lines: list[Line], findings: Findings) -> Node:
    """The whole file as a root node whose block is the top level."""
    root = Node("", (), lines[0].file if lines else "", 0, [])
    stack: list[Node] = [root]
    last: Node | None = None  # the previous keyword line, which a '{' may open
    for line in lines:
        word = line.words[0]
        if line.words == ("{",):
            if last is None or last.block is not None:
                findings.add(Finding("error", line.file, line.line, "{",
                                     "a '{' that opens no block; remove it"))
                continue
            if len(stack) > MAX_DEPTH:
                findings.add(Finding("error", line.file, line.line, "{",
                                     f"blocks nested deeper than {MAX_DEPTH}"))
                break
            last.block = []
            stack.append(last)
            last = None
            continue
        if line.words == ("}",):
            last = None
            if len(stack) == 1:
                findings.add(Finding("error", line.file, line.line, "}",
                                     "a '}' that closes no block; remove it"))
                continue
            stack.pop()
            continue
        node = Node(word, line.words[1:], line.file, line.line)
        block = stack[-1].block
        assert block is not None
        block.append(node)
        last = node
    for open_node in stack[1:]:
        findings.add(Finding("error", open_node.file, open_node.line, open_node.word,
                             "its block is never closed; add the missing '}'"))
    _check(root, "top", findings)
    return root


def _check(parent: Node, context: str, findings: Findings) -> None:
    """Every keyword of a keyword block is one keepalived knows there, with its block or not."""
    known = KNOWN[context]
    stack = [(parent, context, known)]
    while stack:
        node, ctx, words = stack.pop()
        for child in node.block or ():
            key = (ctx, child.word)
            if child.word not in words:
                if child.word in LEGACY_IGNORED and child.block is None:
                    child.ignored = True
                    findings.add(Finding("note", child.file, child.line, child.word,
                                         LEGACY_IGNORED[child.word]))
                    continue
                findings.add(Finding("error", child.file, child.line, child.word,
                                     _unknown(child.word, ctx, words)))
                continue
            takes_block = key in BLOCK_CONTEXT or key in VALUE_BLOCKS or key in OPAQUE_BLOCKS
            if takes_block and child.block is None:
                findings.add(Finding("error", child.file, child.line, child.word,
                                     "needs a '{' block after it (keepalived reports "
                                     "\"Missing '{'\" and reads the next lines wrongly)"))
            elif not takes_block and child.block is not None:
                findings.add(Finding("error", child.file, child.line, child.word,
                                     "takes no '{' block; keepalived would read the block's "
                                     "lines as keywords of the enclosing block"))
            if key in BLOCK_CONTEXT and child.block is not None:
                inner = BLOCK_CONTEXT[key]
                stack.append((child, inner, KNOWN[inner]))


def _unknown(word: str, context: str, known: frozenset[str]) -> str:
    """keepalived ignores the line; say what it probably meant."""
    import difflib

    where = "at the top level" if context == "top" else f"in {context}"
    text = f"keepalived 2.2.7 does not know {word!r} {where} and ignores the line"
    if word[:1].isspace() or not word.isprintable():
        return (f"{text}: it starts with a character keepalived does not take for a blank "
                f"({word[:1]!r}, e.g. a no-break space); replace it with spaces")
    spelled = word.replace("-", "_").replace(" ", "_")
    close = [spelled] if spelled in known else difflib.get_close_matches(word, known, n=1)
    if close:
        text += f"; did you mean {close[0]!r}?"
    return text
