"""HTTPS, UDP and DNS checks against servers of the test's own, across a veth link.

Each check goes through ``run_check`` with a HealthCheck as the config makes
it, so the registration of the new types is covered too.  The servers live in
another namespace (checklab.py): a TLS web server with a certificate made for
the test, a UDP responder, a DNS responder that answers as each test asks.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from lvsagent.config.schema import DnsCheck, HealthCheck, HttpCheck, TlsCheck, UdpCheck
from lvsagent.health.checks import run_check
from lvsagent.health.tracker import CheckResult
from tests.netns.checklab import SRV, CheckLab, check_lab, self_signed

ADDRESS = ipaddress.IPv4Address(SRV)
NAME = "www.lvst.test"


@pytest.fixture
def lab() -> Iterator[CheckLab]:
    with check_lab() as made:
        yield made


def check(lab: CheckLab, health: HealthCheck, port: int) -> CheckResult:
    return lab.run(run_check(health, ADDRESS, port))


# ----- HTTPS (SSL_GET) --------------------------------------------------------------


def https(port: int, tls: TlsCheck, **http: object) -> HealthCheck:
    return HealthCheck(type="https", http=HttpCheck(timeout=3.0, **http), tls=tls)  # type: ignore[arg-type]


@pytest.fixture
def cert(tmp_path: Path) -> tuple[Path, Path]:
    return self_signed(tmp_path, NAME)


def server_context(cert: tuple[Path, Path]) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*cert)
    return context


def test_https_passes_on_status_and_body_and_sends_sni(
    lab: CheckLab, cert: tuple[Path, Path]
) -> None:
    names = lab.tls_web(8443, server_context(cert), b"HTTP/1.0 200 OK\r\n\r\nalive\n")
    health = https(8443, TlsCheck(server_name=NAME), body_contains="alive")
    result = check(lab, health, 8443)
    assert (result.ok, result.reason) == (True, "status 200")
    assert names == [NAME]


def test_https_fails_on_a_bad_status(lab: CheckLab, cert: tuple[Path, Path]) -> None:
    lab.tls_web(8443, server_context(cert), b"HTTP/1.0 503 Busy\r\n\r\n")
    result = check(lab, https(8443, TlsCheck()), 8443)
    assert (result.ok, result.reason) == (False, "status 503")


def test_https_without_verify_takes_a_self_signed_certificate_as_keepalived(
    lab: CheckLab, cert: tuple[Path, Path]
) -> None:
    names = lab.tls_web(8443, server_context(cert), b"HTTP/1.0 200 OK\r\n\r\n")
    assert check(lab, https(8443, TlsCheck()), 8443).ok
    assert names == [None]  # no name configured: no SNI


def test_https_verifies_against_the_ca_file_and_the_name(
    lab: CheckLab, cert: tuple[Path, Path]
) -> None:
    lab.tls_web(8443, server_context(cert), b"HTTP/1.0 200 OK\r\n\r\n")
    ca = str(cert[0])
    good = check(lab, https(8443, TlsCheck(server_name=NAME, verify=True, ca_file=ca)), 8443)
    assert good.ok, good.reason
    other = TlsCheck(server_name="other.lvst.test", verify=True, ca_file=ca)
    wrong_name = check(lab, https(8443, other), 8443)
    assert not wrong_name.ok
    assert wrong_name.reason.startswith("certificate not trusted: Hostname mismatch")
    system = check(lab, https(8443, TlsCheck(server_name=NAME, verify=True)), 8443)
    assert (system.ok, system.reason) == (False, "certificate not trusted: self-signed certificate")


def test_https_to_a_plain_http_server_fails_in_the_handshake(lab: CheckLab) -> None:
    sock = lab.socket(socket.SOCK_STREAM, 8080)

    def plain() -> None:
        while not lab.stopping.is_set():
            try:
                conn, _ = sock.accept()
            except OSError:
                continue
            conn.sendall(b"HTTP/1.0 400 Bad Request\r\n\r\n")
            conn.close()

    lab.serve("plain", plain)
    result = check(lab, https(8080, TlsCheck()), 8080)
    assert not result.ok and result.reason.startswith("TLS handshake failed"), result.reason


def test_https_to_a_closed_port_is_refused(lab: CheckLab) -> None:
    result = check(lab, https(8444, TlsCheck()), 8444)
    assert (result.ok, result.reason) == (False, "connection refused")


# ----- UDP (UDP_CHECK) ----------------------------------------------------------------


def udp(**values: object) -> HealthCheck:
    return HealthCheck(type="udp", udp=UdpCheck(connect_timeout=0.5, **values))  # type: ignore[arg-type]


def test_udp_passes_on_a_reply_that_starts_as_asked(lab: CheckLab) -> None:
    lab.datagrams(5060, lambda request: [b"PONG " + request])
    health = udp(payload=b"ping".hex(), reply=b"PONG ping".hex())
    result = check(lab, health, 5060)
    assert (result.ok, result.reason) == (True, "reply of 9 bytes")
    wrong = check(lab, udp(payload=b"ping".hex(), reply=b"PANG".hex()), 5060)
    assert (wrong.ok, wrong.reason) == (False, "reply of 9 bytes does not start with 50414e47")


def test_udp_fails_on_icmp_port_unreachable(lab: CheckLab) -> None:
    result = check(lab, udp(), 5061)  # nothing listens: the kernel answers with ICMP
    assert (result.ok, result.reason) == (False, "connection refused")


def test_a_silent_udp_server_passes_unless_a_reply_is_required(lab: CheckLab) -> None:
    lab.datagrams(5062, lambda request: [])  # bound, says nothing
    silent = check(lab, udp(), 5062)
    assert (silent.ok, silent.reason) == (True, "no ICMP error within 0.5 s")
    required = check(lab, udp(require_reply=True), 5062)
    assert (required.ok, required.reason) == (False, "no reply within 0.5 s")


def test_udp_reply_length_bounds(lab: CheckLab) -> None:
    lab.datagrams(5063, lambda request: [b"x" * 300])
    result = check(lab, udp(require_reply=True, max_reply_length=255), 5063)
    assert (result.ok, result.reason) == (False, "reply of 300 bytes, longer than 255")


# ----- DNS (DNS_CHECK) -----------------------------------------------------------------


def dns_answer(rcode: int, answers: int, ident_offset: int = 0) -> object:
    """A responder: our header (the query's ID plus ``ident_offset``), the question back."""

    def answer(request: bytes) -> list[bytes]:
        (ident,) = struct.unpack_from("!H", request)
        head = struct.pack("!HHHHHH", (ident + ident_offset) & 0xFFFF, 0x8180 | rcode, 1,
                           answers, 0, 0)  # fmt: skip
        return [head + request[12:]]

    return answer


def dns(**values: object) -> HealthCheck:
    return HealthCheck(type="dns", dns=DnsCheck(timeout=0.5, **values))  # type: ignore[arg-type]


def test_dns_passes_on_noerror_and_fails_on_nxdomain(lab: CheckLab) -> None:
    lab.datagrams(5353, dns_answer(0, 1))  # type: ignore[arg-type]
    ok = check(lab, dns(type="A", name=NAME), 5353)
    assert (ok.ok, ok.reason) == (True, f"A {NAME}: NOERROR, 1 answer(s)")
    lab.datagrams(5354, dns_answer(3, 0))  # type: ignore[arg-type]
    bad = check(lab, dns(type="A", name=NAME), 5354)
    assert (bad.ok, bad.reason) == (False, f"A {NAME}: NXDOMAIN")


def test_dns_empty_noerror_passes_as_keepalived_unless_an_answer_is_required(
    lab: CheckLab,
) -> None:
    lab.datagrams(5355, dns_answer(0, 0))  # type: ignore[arg-type]
    assert check(lab, dns(), 5355).ok  # SOA "." as keepalived asks by default
    required = check(lab, dns(require_answer=True), 5355)
    assert (required.ok, required.reason) == (False, "SOA .: NOERROR without an answer")


def test_dns_ignores_a_reply_to_another_query(lab: CheckLab) -> None:
    def stale_then_right(request: bytes) -> list[bytes]:
        return [*dns_answer(2, 0, 1)(request), *dns_answer(0, 1)(request)]  # type: ignore[operator]

    lab.datagrams(5356, stale_then_right)
    result = check(lab, dns(), 5356)
    assert (result.ok, result.reason) == (True, "SOA .: NOERROR, 1 answer(s)")


def test_dns_to_a_silent_or_closed_server(lab: CheckLab) -> None:
    lab.datagrams(5357, lambda request: [])
    silent = check(lab, dns(), 5357)
    assert (silent.ok, silent.reason) == (False, "no answer within 0.5 s")
    closed = check(lab, dns(), 5358)
    assert (closed.ok, closed.reason) == (False, "connection refused")
