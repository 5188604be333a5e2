"""The keys of the HTTPS, UDP and DNS checks, and which check fits which protocol.

Kept apart from services.py, which reads the rest of a health table: these
three sub-tables (``tls``, ``udp``, ``dns``) are read the same way (every
problem located, only given keys passed on) and merged key by key like
``tcp`` and ``http``.

The protocol rule: a TCP connect, an HTTP GET or an HTTPS GET to a UDP or SCTP
service's real server tests a TCP listener, not the socket clients use (a DNS
server may answer on TCP and be dead on UDP).  keepalived lets that pass
silently; here it needs ``allow_tcp_check = true``, which says the operator
knows the server listens on both.  A UDP or DNS check of a TCP service is
refused outright: it cannot reach what the service serves.
"""

from __future__ import annotations

import os
import string
from typing import Any

from lvsagent.config.fields import Checker, given
from lvsagent.config.section import Section

__all__ = ["DNS_TYPES", "SUBTABLES", "check_protocol", "read_check_tables"]

SUBTABLES = ("tls", "udp", "dns")
TLS_KEYS = ("server_name", "verify", "ca_file")
UDP_KEYS = (
    "payload", "require_reply", "reply", "min_reply_length", "max_reply_length",
    "connect_timeout", "port",
)  # fmt: skip
DNS_KEYS = ("type", "name", "require_answer", "timeout", "port")
# The query types keepalived's DNS_CHECK knows (check_dns.c), with their numbers (RFC 1035,
# RFC 3596 for AAAA, RFC 2782 for SRV).
DNS_TYPES = {
    "A": 1, "NS": 2, "CNAME": 5, "SOA": 6, "PTR": 12, "MX": 15, "TXT": 16, "AAAA": 28, "SRV": 33,
}  # fmt: skip
TIMEOUT_MAX = 4294.0  # keepalived's connect_timeout bound, as services.py
DATAGRAM_MAX = 65507  # the largest UDP payload over IPv4
NAME_MAX = 253  # a domain name's text, without the final dot (RFC 1035 2.3.4: 255 on the wire)
LABEL_MAX = 63


def read_check_tables(s: Section) -> dict[str, Any]:
    """The given keys of ``tls``, ``udp`` and ``dns`` in a health table, checked."""
    out: dict[str, Any] = {}
    tls = s.table("tls")
    if tls is not None:
        out["tls"] = _tls(tls)
    udp = s.table("udp")
    if udp is not None:
        out["udp"] = _udp(udp)
    dns = s.table("dns")
    if dns is not None:
        out["dns"] = _dns(dns)
    return out


def _tls(t: Section) -> dict[str, Any]:
    t.unknown(TLS_KEYS)
    check = t.check
    values = {
        "server_name": t.read("server_name", lambda k, v: check.visible(k, v, "a server name")),
        "verify": t.boolean("verify"),
        "ca_file": t.read("ca_file", lambda k, v: _path(check, k, v)),
    }
    if values["ca_file"] is not None and t.raw.get("verify") is not True:
        t.problem("ca_file", "a CA file is used only to verify: set verify = true too")
    return given(values)


def _path(check: Checker, key: str, value: object) -> str | None:
    text = check.string(key, value)
    if text is None:
        return None
    if not text.startswith("/") or not text.isprintable():
        check.problem(key, f"expected an absolute path, got {text!r}")
        return None
    if not os.path.isfile(text):
        check.problem(key, f"{text} is not a file here (a PEM file of CA certificates)")
        return None
    return text


def _udp(t: Section) -> dict[str, Any]:
    t.unknown(UDP_KEYS)
    check = t.check
    low = t.integer("min_reply_length", 0, DATAGRAM_MAX)
    high = t.integer("max_reply_length", 0, DATAGRAM_MAX)
    values = {
        "payload": t.read("payload", lambda k, v: _hex(check, k, v)),
        "require_reply": t.boolean("require_reply"),
        "reply": t.read("reply", lambda k, v: _hex(check, k, v)),
        "min_reply_length": low,
        "max_reply_length": high,
        "connect_timeout": t.number("connect_timeout", 0, TIMEOUT_MAX, above=True),
        "port": t.port("port"),
    }
    if values["reply"] and t.raw.get("require_reply") is False:
        t.problem("reply", "a reply to match needs one: drop require_reply = false")
    if low is not None and high is not None and low > high:
        t.problem("min_reply_length", f"must not exceed max_reply_length ({high}), got {low}")
    return given(values)


def _hex(check: Checker, key: str, value: object) -> str | None:
    """Bytes as hex digits (keepalived's payload and require_reply), blanks allowed between."""
    text = check.string(key, value)
    if text is None:
        return None
    digits = "".join(text.split())
    if len(digits) % 2 or any(ch not in string.hexdigits for ch in digits):
        check.problem(key, f"expected bytes as pairs of hex digits such as '0a1b', got {text!r}")
        return None
    if len(digits) // 2 > DATAGRAM_MAX:
        check.problem(key, f"longer than a UDP datagram ({DATAGRAM_MAX} bytes)")
        return None
    return digits.lower()


def _dns(t: Section) -> dict[str, Any]:
    t.unknown(DNS_KEYS)
    check = t.check
    values = {
        "type": t.read("type", lambda k, v: _query_type(check, k, v)),
        "name": t.read("name", lambda k, v: _domain(check, k, v)),
        "require_answer": t.boolean("require_answer"),
        "timeout": t.number("timeout", 0, TIMEOUT_MAX, above=True),
        "port": t.port("port"),
    }
    return given(values)


def _query_type(check: Checker, key: str, value: object) -> str | None:
    text = check.string(key, value)
    if text is None:
        return None
    if text.upper() not in DNS_TYPES:
        check.problem(key, f"expected one of {', '.join(DNS_TYPES)}, got {text!r}")
        return None
    return text.upper()


def _domain(check: Checker, key: str, value: object) -> str | None:
    """A name to query: ASCII labels of 1-63 bytes (an IDN in its xn-- form), or "."."""
    text = check.string(key, value)
    if text is None:
        return None
    labels = text.rstrip(".").split(".") if text != "." else []
    allowed = set(string.ascii_letters + string.digits + "-_*")
    if (
        not text
        or len(text.rstrip(".")) > NAME_MAX
        or any(not label or len(label) > LABEL_MAX or set(label) - allowed for label in labels)
    ):
        check.problem(
            key,
            f"expected a domain name of ASCII labels (1-{LABEL_MAX} letters, digits, '-', "
            f"'_'; at most {NAME_MAX} characters) or '.', got {text!r}",
        )
        return None
    return text


def check_protocol(s: Section, protocol: str, health: dict[str, Any], own: dict[str, Any]) -> None:
    """Refuse a check that cannot test a ``protocol`` service (see the module's docstring).

    ``health`` is the check in force, ``own`` what ``s``'s own health table says (where
    the problem is pointed at: its ``type``, else the table, else the protocol).
    """
    kind = health.get("type", "tcp")
    if "type" in own:
        where = "health.type"
    elif s.has("health"):
        where = "health"
    else:
        where = "protocol" if s.has("protocol") else ""
    if protocol in ("udp", "sctp") and kind in ("tcp", "http", "https"):
        if health.get("allow_tcp_check"):
            return
        implicit = "" if "type" in health else " (the default)"
        instead = ' type = "udp" or "dns",' if protocol == "udp" else ""
        s.problem(
            where,
            f"a {kind} check{implicit} of a {protocol} service tests a TCP listener, not the "
            f"service: use{instead} type = \"none\", or set allow_tcp_check = true if the "
            "real servers also listen on TCP",
        )
    elif protocol != "udp" and kind in ("udp", "dns"):
        s.problem(where, f"a {kind} check cannot test a {protocol} service")
