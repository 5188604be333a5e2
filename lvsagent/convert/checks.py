"""A real server's keepalived checkers to one lvsagent health table.

keepalived lets alpha, delay_loop, retry, delay_before_retry, connect_timeout,
inhibit_on_failure and virtualhost be set on the virtual server, the real server
or the checker, the nearer one winning; most of its defaults differ from
lvsagent's (delay_loop 60 s, connect_timeout 5 s, delay_before_retry 3 s for HTTP
and 1 s otherwise, alpha off), so every one of them is written out, on_failure
too ("remove", both defaults, or "drain" for inhibit_on_failure).  lvsagent runs
one check per real server: TCP_CHECK, HTTP_GET, SSL_GET, UDP_CHECK, DNS_CHECK
and MISC_CHECK (scripts.py reads its keywords) convert; the other checkers
become a TCP connect (or no check, for UDP) with an omission that says so.
"""

from __future__ import annotations

from typing import Any

from lvsagent.config.checkkeys import DNS_TYPES
from lvsagent.convert.common import Mapper
from lvsagent.convert.keywords import CHECKERS
from lvsagent.convert.scripts import misc_check
from lvsagent.convert.tree import Node

__all__ = ["INHERITED", "health_of", "inherited"]

# Keywords a checker takes from its real server, which takes them from its virtual server.
INHERITED = (
    "alpha", "delay_loop", "retry", "delay_before_retry", "connect_timeout",
    "inhibit_on_failure", "virtualhost", "warmup",
)

_CONNECTION = ("connect_ip", "bindto", "bind_port", "bind_if", "fwmark")
# The checkers lvsagent runs, the first of them preferred when a server has several.
_CONVERTED = ("TCP_CHECK", "HTTP_GET", "SSL_GET", "UDP_CHECK", "DNS_CHECK", "MISC_CHECK")
_UDP_WORDS = ("payload", "require_reply", "min_reply_length", "max_reply_length")
# keepalived's UDP_CHECK reads at most this many bytes unless max_reply_length says more.
_KEEPALIVED_MAX_REPLY = 255
_DNS_RETRY = 3  # keepalived's DNS_DEFAULT_RETRY


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
    chosen = next((c for c in checkers if c.word in _CONVERTED), None)
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
    if chosen.word == "DNS_CHECK" and "retry" not in values:
        values["retry"] = _DNS_RETRY
    values = inherited(m, chosen, values)
    if chosen.word not in _CONVERTED:
        return _fallback(m, chosen, address, port, protocol, values)
    if chosen.word == "MISC_CHECK":
        misc = misc_check(m, chosen)
        if misc is None:
            return _fallback(m, chosen, address, port, protocol, values)
        health = _common(values, "misc", 1.0)
        # Written out whole, so that a server's table merged over its service's differs
        # only where keepalived's would (misc_timeout defaults to the delay_loop).
        timeout = min(health["interval"], 4294.0)  # lvsagent's bound, as connect_timeout
        health["misc"] = {"timeout": timeout, "dynamic": False, **misc}
        return health
    if chosen.word in ("HTTP_GET", "SSL_GET"):
        health = _common(values, "http" if chosen.word == "HTTP_GET" else "https", 3.0)
        health["http"] = _http(m, chosen, values)
        if chosen.word == "SSL_GET":
            health["tls"] = _tls(m, chosen, health["http"])
        _connection(m, chosen, address, port, health["http"], "timeout", values)
    elif chosen.word == "UDP_CHECK":
        health = _common(values, "udp", 1.0)
        health["udp"] = _udp(m, chosen)
        _connection(m, chosen, address, port, health["udp"], "connect_timeout", values)
    elif chosen.word == "DNS_CHECK":
        health = _common(values, "dns", 1.0)
        health["dns"] = _dns(m, chosen)
        _connection(m, chosen, address, port, health["dns"], "timeout", values)
    else:
        health = _common(values, "tcp", 1.0)
        health["tcp"] = {}
        _connection(m, chosen, address, port, health["tcp"], "connect_timeout", values)
    _protocol_rule(m, chosen, protocol, health)
    return health


def _fallback(
    m: Mapper, chosen: Node, address: str, port: int, protocol: str, values: dict[str, Any]
) -> dict[str, Any]:
    """A checker lvsagent lacks: a TCP connect for a TCP service, else no check."""
    fallback = "tcp" if protocol == "tcp" else "none"
    instead = "a TCP connect to the real server's port" if fallback == "tcp" else "no check"
    lacks = "a script it can run" if chosen.word == "MISC_CHECK" else f"no {chosen.word}"
    m.omit(chosen, f"lvsagent has {lacks}; the conversion uses {instead} "
           "instead (lvsagent checks TCP, HTTP, HTTPS, UDP, DNS or by a script)")
    if fallback == "none":
        return _common(values, "none", 1.0)
    health = _common(values, "tcp", 1.0)
    health["tcp"] = {}
    _connection(m, chosen, address, port, health["tcp"], "connect_timeout", values)
    return health


def _protocol_rule(m: Mapper, chosen: Node, protocol: str, health: dict[str, Any]) -> None:
    """keepalived checks a UDP or SCTP service over TCP if told to; lvsagent wants it said."""
    kind = health["type"]
    if protocol != "tcp" and kind in ("tcp", "http", "https"):
        health["allow_tcp_check"] = True
        m.note(chosen, f"a {chosen.word} of a {protocol.upper()} service tests the real "
               "server's TCP listener; written with allow_tcp_check = true")
    elif protocol != "udp" and kind in ("udp", "dns"):
        m.omit(chosen, f"a {chosen.word} cannot test a {protocol.upper()} service; "
               "the conversion checks nothing")
        for key in ("udp", "dns"):
            health.pop(key, None)
        health["type"] = "none"


def _tls(m: Mapper, checker: Node, http: dict[str, Any]) -> dict[str, Any]:
    """SSL_GET's TLS: keepalived verifies no certificate; enable_sni sends virtualhost."""
    tls: dict[str, Any] = {"verify": False}
    sni = checker.first("enable_sni")
    if sni is not None and m.flag(sni) is not False:
        if "host" in http:
            tls["server_name"] = http["host"]
        else:
            m.note(sni, "enable_sni without virtualhost sends no name; neither does lvsagent")
    return tls


def _udp(m: Mapper, checker: Node) -> dict[str, Any]:
    udp: dict[str, Any] = {}
    for child in checker.children():
        word = child.word
        if word == "payload":
            text = "".join(child.args)
            if _is_hex(text) and text:
                udp["payload"] = text.lower()
            else:
                m.error(child, f"keepalived wants the payload as hex digits, not {text!r}")
        elif word == "require_reply":
            udp["require_reply"] = True
            text = "".join(child.args)
            if text and _is_hex(text):
                udp["reply"] = text.lower()
            elif text:
                m.omit(child, f"lvsagent matches the reply's first bytes exactly; the mask in "
                       f"{text!r} is not converted (require_reply without data is)")
        elif word in ("min_reply_length", "max_reply_length"):
            length = m.integer(child, 0, 65507)
            if length is not None:
                udp[word] = length
    if udp.get("require_reply") and "max_reply_length" not in udp:
        udp["max_reply_length"] = _KEEPALIVED_MAX_REPLY
    return udp


def _is_hex(text: str) -> bool:
    return len(text) % 2 == 0 and all(ch in "0123456789abcdefABCDEF" for ch in text)


def _dns(m: Mapper, checker: Node) -> dict[str, Any]:
    dns: dict[str, Any] = {"type": "SOA", "name": "."}  # keepalived's defaults
    for child in checker.children():
        if child.word == "type" and m.words(child, 1):
            kind = child.args[0].upper()
            if kind in DNS_TYPES:
                dns["type"] = kind
            else:
                m.note(child, f"keepalived does not know type {child.args[0]!r} and asks SOA; "
                       "so does the conversion")
        elif child.word == "name" and m.words(child, 1):
            dns["name"] = child.args[0]
    return dns


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
        elif word in _UDP_WORDS or (word in ("type", "name") and checker.word == "DNS_CHECK"):
            continue  # read by _udp and _dns
        elif word == "enable_sni" and checker.word == "SSL_GET":
            continue  # read by _tls
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
