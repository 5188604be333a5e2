"""The checks beyond TCP and HTTP: which function runs each, with the config's values.

checks.run_check hands the ``https``, ``udp`` and ``dns`` types here; each
returns its result and the port it checked when that is not the server's
own (run_check then says so in the reason).
"""

from __future__ import annotations

import ipaddress

from lvsagent.config.schema import HealthCheck
from lvsagent.health.dns import check_dns
from lvsagent.health.tls import check_https
from lvsagent.health.tracker import CheckResult
from lvsagent.health.udp import check_udp

__all__ = ["run_protocol_check"]


async def run_protocol_check(
    health: HealthCheck, address: ipaddress.IPv4Address, port: int
) -> tuple[CheckResult, int | None]:
    if health.type == "https":
        h, t = health.http, health.tls
        result = await check_https(
            address, h.port or port, path=h.path, status_codes=h.status_codes,
            body_contains=h.body_contains, host=h.host, timeout=h.timeout,
            server_name=t.server_name, verify=t.verify, ca_file=t.ca_file,
        )  # fmt: skip
        return result, h.port
    if health.type == "udp":
        u = health.udp
        result = await check_udp(
            address, u.port or port, payload=bytes.fromhex(u.payload),
            require_reply=u.require_reply, reply=bytes.fromhex(u.reply),
            min_reply_length=u.min_reply_length, max_reply_length=u.max_reply_length,
            connect_timeout=u.connect_timeout,
        )  # fmt: skip
        return result, u.port
    if health.type == "dns":
        d = health.dns
        result = await check_dns(
            address, d.port or port, kind=d.type, name=d.name,
            require_answer=d.require_answer, timeout=d.timeout,
        )  # fmt: skip
        return result, d.port
    raise ValueError(f"not a protocol check: {health.type!r}")
