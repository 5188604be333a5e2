"""A real server's keepalived checkers to one lvsagent health table.

keepalived lets alpha, delay_loop, retry, delay_before_retry, connect_timeout,
inhibit_on_failure and virtualhost be set on the virtual server, the real server
or the checker, the nearer one winning; its defaults differ from lvsagent's
(delay_loop 60 s, connect_timeout 5 s, delay_before_retry 3 s for HTTP and 1 s
otherwise, alpha off, a failed server removed rather than drained), so every
one of them is written out.  lvsagent runs one check per real server: TCP_CHECK
and HTTP_GET convert, SSL_GET and the script or protocol checkers become a TCP
connect (or no check, for UDP) with an omission that says so.
"""

from __future__ import annotations

from typing import Any

from lvsagent.convert.common import Mapper
from lvsagent.convert.keywords import CHECKERS
from lvsagent.convert.tree import Node

__all__ = ["INHERITED", "health_of", "inherited"]

# Keywords a checker takes from its real server, which takes them from its virtual server.
INHERITED = (
    "alpha", "delay_loop", "retry", "delay_before_retry", "connect_timeout",
    "inhibit_on_failure", "virtualhost", "warmup",
)

_CONNECTION = ("connect_ip", "bindto", "bind_port", "bind_if", "fwmark")


def inherited(m: Mapper, node: Node, base: dict[str, Any]) -> dict[str, Any]:
    """``base`` overlaid with the INHERITED keywords this block sets."""
    values = dict(base)
    for child in node.children():
        word = child.word
        if word == "alpha" or word == "inhibit_on_failure":
            flag = m.flag(child)
            if flag is not None:
                values[word] = flag
        elif word in ("delay_loop", "connect_timeout"):
            seconds = m.timer(child, 0.0, 1e6)
            if seconds is not None and seconds > 0:
                values[word] = seconds
            elif seconds is not None:
                m.note(child, f"keepalived does not take {word} 0; its default stays")
        elif word == "delay_before_retry":
            seconds = m.timer(child, 0.0, 1e6)
            if seconds is not None:
                values[word] = seconds
        elif word in ("retry", "nb_get_retry"):
            count = m.integer(child, 0, 2**31 - 1)
            if count is not None:
                values["retry"] = count
        elif word == "virtualhost":
            if m.words(child, 1):
                values[word] = child.args[0]
        elif word == "warmup":
            m.note(child, "lvsagent always spreads the first checks at random over the first "
                   "interval, as warmup does by default")
    return values


def health_of(
    m: Mapper, real: Node, address: str, port: int, protocol: str, base: dict[str, Any]
) -> dict[str, Any]:
    """The health table (TOML keys) for one real server, keepalived's defaults written out."""
    values = inherited(m, real, base)
    checkers = [c for c in real.children() if c.word in CHECKERS]
    chosen = next((c for c in checkers if c.word in ("TCP_CHECK", "HTTP_GET")), None)
    if chosen is None and checkers:
        chosen = checkers[0]
    for other in checkers:
        if other is not chosen:
            kept = f"{chosen.word} at {chosen.where}" if chosen else "another"
            m.omit(other, f"lvsagent runs one check per real server; {kept} is converted, "
                   "this one is not (keepalived needs every checker up)")
    if chosen is None:
        health = _common(values, "none", 1.0)
        return health
    values = inherited(m, chosen, values)
    if chosen.word == "HTTP_GET":
        health = _common(values, "http", 3.0)
        health["http"] = _http(m, chosen, values)
        _connection(m, chosen, address, port, health["http"], "timeout", values)
        return health
    if chosen.word != "TCP_CHECK":
        fallback = "tcp" if protocol == "tcp" else "none"
        instead = "a TCP connect to the real server's port" if fallback == "tcp" else "no check"
        m.omit(chosen, f"lvsagent has no {chosen.word}; the conversion uses {instead} "
               "instead (lvsagent checks TCP or HTTP)")
        if fallback == "none":
            return _common(values, "none", 1.0)
    health = _common(values, "tcp", 3.0 if chosen.word == "SSL_GET" else 1.0)
    health["tcp"] = {}
    _connection(m, chosen, address, port, health["tcp"], "connect_timeout", values)
    return health


def _common(values: dict[str, Any], kind: str, retry_delay: float) -> dict[str, Any]:
    health: dict[str, Any] = {
        "type": kind,
        "interval": values.get("delay_loop", 60.0),
        "retry": values.get("retry", 1),
        "delay_before_retry": values.get("delay_before_retry", retry_delay),
        "alpha": values.get("alpha", False),
        "on_failure": "drain" if values.get("inhibit_on_failure", False) else "remove",
    }
    return health


def _connection(
    m: Mapper, checker: Node, address: str, port: int, out: dict[str, Any], timeout_key: str,
    values: dict[str, Any],
) -> None:  # fmt: skip
    out[timeout_key] = values.get("connect_timeout", 5.0)
    for child in checker.children():
        word = child.word
        if word == "connect_port":
            target = m.integer(child, 1, 65535)
            if target is not None and target != port:
                out["port"] = target
        elif word == "connect_ip":
            if child.args and child.args[0] != address:
                m.omit(child, f"lvsagent checks the real server's own address {address}, "
                       f"not {child.args[0]}")
        elif word in _CONNECTION:
            m.omit(child, f"lvsagent's checks have no {word}")
        elif word in ("log_all_failures", "fast_recovery", "enable_sni"):
            m.note(child, f"{word} changes only logging or timing inside keepalived's checker")
        elif word == "http_protocol":
            if child.args and child.args[0] == "1.1":
                m.omit(child, "lvsagent sends HTTP/1.0 requests")
        elif word == "nb_get_retry":
            m.note(child, "nb_get_retry is keepalived's old name for retry; converted as retry")
        elif word not in INHERITED and word not in ("url", "retry", "warmup"):
            m.omit(child, f"lvsagent's checks have no {word}")


def _http(m: Mapper, checker: Node, values: dict[str, Any]) -> dict[str, Any]:
    urls = list(checker.children("url"))
    http: dict[str, Any] = {}
    if "virtualhost" in values:
        http["host"] = values["virtualhost"]
    if not urls:
        m.note(checker, "HTTP_GET without url: keepalived checks nothing useful; the "
               "conversion asks for /")
        return http
    for extra in urls[1:]:
        m.omit(extra, "lvsagent checks one path per real server; the first url is converted")
    url = urls[0]
    for child in url.children():
        word = child.word
        if word == "path" and m.words(child, 1):
            path = child.args[0]
            if path.startswith("/"):
                http["path"] = path
            else:
                m.omit(child, f"lvsagent's path must start with '/', got {path!r}")
        elif word == "status_code":
            codes = _codes(m, child)
            if codes:
                http["status_codes"] = codes
        elif word == "virtualhost" and m.words(child, 1):
            http["host"] = child.args[0]
        elif word == "digest":
            m.omit(child, "lvsagent compares no digest of the body; body_contains can ask for "
                   "a text in it")
        else:
            m.omit(child, f"lvsagent's HTTP check has no {word}")
    return http


def _codes(m: Mapper, node: Node) -> list[Any]:
    """``status_code 200 300-302``: lvsagent refuses overlaps, so they are merged first."""
    codes: set[int] = set()
    for word in node.args:
        low, dash, high = word.partition("-")
        if low.isdigit() and (not dash or high.isdigit()):
            first, last = int(low), int(high) if dash else int(low)
            if 100 <= first <= last <= 599:
                codes.update(range(first, last + 1))
                continue
        m.error(node, f"{word!r} is not a status code or a range of them (100..599)")
    spans: list[Any] = []
    for code in sorted(codes):
        if spans and isinstance(spans[-1], list) and spans[-1][1] == code - 1:
            spans[-1][1] = code
        else:
            spans.append([code, code])
    return [s[0] if s[0] == s[1] else f"{s[0]}-{s[1]}" for s in spans]
