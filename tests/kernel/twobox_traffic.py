"""Client traffic for the two-box lab: new HTTP connections at a fixed rate, and what they saw.

Why: the issue's claims are about what a client sees ("a quarter of all requests kept failing"),
so the proof is a client that opens a new TCP connection to VIP:80 every ``interval`` seconds
and records, per request, when it started, how it ended (the box that answered, or timeout /
reset / refused / unreachable) and how long it took. Several requests are in flight at once,
so a request that hangs in a forwarding loop does not delay the next one.

One thread does all of it with non-blocking sockets and a selector: it setns()es into the
client's namespace once (sockets belong to the namespace of the thread that makes them), so no
interpreter or thread is started per request. Times are ``time.time()`` (wall clock), so they
compare with the time stamps the harness puts on daemon log lines and that the bypass script
writes.

The analysis functions are pure: they take the records and an event time and return figures.
"""

from __future__ import annotations

import errno
import itertools
import selectors
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from tests.kernel import setns

SUCCESS_PREFIX = "box"  # what the lab's HTTP servers answer: "boxa" or "boxb"
# The sending thread woke this much later than it asked to: the lab stood still (_stalled).
STALL = 0.3
_ERRNO_OUTCOME = {
    errno.ECONNREFUSED: "refused",
    errno.ECONNRESET: "reset",
    errno.EPIPE: "reset",
    errno.EHOSTUNREACH: "unreachable",
    errno.ENETUNREACH: "unreachable",
    errno.ETIMEDOUT: "timeout",
}


@dataclass(frozen=True)
class Record:
    """One request: wall-clock start, outcome (a box name or a failure), seconds to the outcome."""

    start: float
    outcome: str
    latency: float

    @property
    def ok(self) -> bool:
        return self.outcome.startswith(SUCCESS_PREFIX)

    @property
    def end(self) -> float:
        return self.start + self.latency


@dataclass
class _Pending:
    sock: socket.socket
    start: float  # wall clock, for the record
    due: float  # monotonic deadline
    sent: bool = False
    data: bytes = b""


class Traffic:
    """New HTTP/1.0 connections from ``netns_path`` to ``address:port`` every ``interval`` s.

    ``timeout`` bounds each request (a SYN lost in a loop is a failure, not a wait for the
    kernel's retransmissions); at most ``max_in_flight`` are open at once (a slot that finds
    them all busy is recorded as "overload", so the rate stays honest). Use as a context
    manager or call start()/stop(); ``records`` grows as requests finish.
    """

    def __init__(
        self,
        netns_path: str,
        address: str,
        port: int = 80,
        *,
        interval: float = 0.02,
        timeout: float = 1.0,
        max_in_flight: int = 256,
        host: str = "vip",
    ) -> None:
        self.netns_path = netns_path
        self.address = address
        self.port = port
        self.interval = interval
        self.timeout = timeout
        self.max_in_flight = max_in_flight
        self.records: list[Record] = []
        self.stalls: list[tuple[float, float]] = []  # (wall-clock start, seconds): _stalled
        self.started = 0
        self._in_flight: dict[int, float] = {}  # socket fd -> wall-clock start, under _cond
        self._request = f"GET / HTTP/1.0\r\nHost: {host}\r\n\r\n".encode()
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._limit: int | None = None
        self._failed: BaseException | None = None
        self._thread: threading.Thread | None = None

    # ----- control ---------------------------------------------------------------------------

    def start(self, count: int | None = None) -> Traffic:
        """Start sending; with ``count``, stop starting new requests after that many."""
        self._limit = count
        self._thread = threading.Thread(target=self._run, name="twobox-traffic", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> list[Record]:
        """Start no new request, let those in flight finish (or time out); return the records."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.timeout + 10.0)
            if self._thread.is_alive():
                raise AssertionError("the traffic thread did not stop")
        if self._failed is not None:
            raise AssertionError(f"the traffic thread failed: {self._failed!r}")
        with self._cond:
            return sorted(self.records, key=lambda r: r.start)

    def __enter__(self) -> Traffic:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait(self, predicate: Callable[[list[Record]], bool], timeout: float, what: str) -> None:
        """Block until ``predicate(records)`` holds (checked at every finished request)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(self.records):
                left = deadline - time.monotonic()
                if left <= 0 or self._failed is not None:
                    seen = Counter(r.outcome for r in self.records)
                    # The last seconds by outcome: a standing failure reads differently from a
                    # trickle, and a box that stopped answering from one answering too slowly.
                    now = time.time()
                    recent = Counter(
                        (int(now - r.start), r.outcome) for r in self.records if now - r.start < 8
                    )
                    by_age = ", ".join(f"-{age}s {o} {n}" for (age, o), n in sorted(recent.items()))
                    raise AssertionError(
                        f"traffic: {what} not seen within {timeout} s: {seen}; last 8 s by"
                        f" request age: {by_age}"
                    )
                self._cond.wait(min(left, 1.0))

    def oldest_in_flight(self) -> float:
        """The start of the oldest request not finished yet (``inf`` if none).

        Why: a stretch of ``records`` without failures proves nothing while a request that
        started inside it is still open; it may yet time out.
        """
        with self._cond:  # an RLock: fine from inside a wait() predicate
            return min(self._in_flight.values(), default=float("inf"))

    def wait_done(self, timeout: float) -> list[Record]:
        """With start(count): wait until all ``count`` requests have finished."""
        assert self._limit is not None, "wait_done() needs start(count)"
        limit = self._limit
        self.wait(lambda recs: len(recs) >= limit, timeout, f"{limit} finished requests")
        return self.stop()

    def wait_successes(self, after: float, count: int, timeout: float) -> None:
        """Until ``count`` requests started at or after ``after`` have succeeded."""
        self.wait(
            lambda recs: sum(1 for r in recs if r.ok and r.start >= after) >= count,
            timeout,
            f"{count} successful request(s) started after {after:.3f}",
        )

    def wait_started_after(self, after: float, count: int, timeout: float) -> None:
        """Until ``count`` requests started at or after ``after`` have finished (any outcome)."""
        self.wait(
            lambda recs: sum(1 for r in recs if r.start >= after) >= count,
            timeout,
            f"{count} finished request(s) started after {after:.3f}",
        )

    # ----- the sending thread ----------------------------------------------------------------

    def _run(self) -> None:
        try:
            setns.enter(self.netns_path)  # this thread only; the sockets it makes stay there
            self._loop()
        except BaseException as exc:  # reported by stop() and wait()
            self._failed = exc
            with self._cond:
                self._cond.notify_all()

    def _loop(self) -> None:
        sel = selectors.DefaultSelector()
        pending: dict[int, _Pending] = {}
        next_start = time.monotonic()
        try:
            while True:
                stopping = self._stop.is_set() or (
                    self._limit is not None and self.started >= self._limit
                )
                if stopping and not pending:
                    return
                now = time.monotonic()
                if not stopping and now >= next_start:
                    self._open(sel, pending)
                    # Fixed rate without catch-up bursts after a stall of this thread.
                    next_start = max(next_start + self.interval, now)
                wake = [p.due for p in pending.values()]
                if not stopping:
                    wake.append(next_start)
                asleep = time.monotonic()
                left = max(0.0, min(wake, default=now + 0.1) - asleep)
                ready = sel.select(left)
                self._stalled(pending, time.monotonic() - asleep - left)
                for key, events in ready:
                    self._step(sel, pending, key.fd, events)
                self._expire(sel, pending)
        finally:
            for p in pending.values():
                sel.unregister(p.sock)
                p.sock.close()
            sel.close()

    def _open(self, sel: selectors.BaseSelector, pending: dict[int, _Pending]) -> None:
        self.started += 1
        start = time.time()
        if len(pending) >= self.max_in_flight:
            self._finish(start, "overload")
            return
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        code = sock.connect_ex((self.address, self.port))
        if code not in (0, errno.EINPROGRESS):
            sock.close()
            self._finish(start, _ERRNO_OUTCOME.get(code, f"error:{errno.errorcode.get(code)}"))
            return
        pending[sock.fileno()] = _Pending(sock, start, time.monotonic() + self.timeout)
        with self._cond:
            self._in_flight[sock.fileno()] = start
        sel.register(sock, selectors.EVENT_WRITE)

    def _step(
        self, sel: selectors.BaseSelector, pending: dict[int, _Pending], fd: int, events: int
    ) -> None:
        p = pending.get(fd)
        if p is None:
            return
        try:
            if not p.sent:
                code = p.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if code:
                    raise OSError(code, "connect")
                p.sock.sendall(self._request)  # a few bytes into an empty send buffer
                p.sent = True
                sel.modify(p.sock, selectors.EVENT_READ)
                return
            chunk = p.sock.recv(4096)
            if chunk:
                p.data += chunk
                return
            self._close(sel, pending, p, _answer(p.data))
        except BlockingIOError:
            return
        except OSError as exc:
            code = exc.errno or 0
            outcome = _ERRNO_OUTCOME.get(code, f"error:{errno.errorcode.get(code, code)}")
            self._close(sel, pending, p, outcome)

    def _stalled(self, pending: dict[int, _Pending], late: float) -> None:
        """The thread woke ``late`` s after it asked to: past STALL, the lab did not run (UML
        descheduled by a busy host, or this process starved in the guest), and every request
        in flight gets that time back. A request times out after ``timeout`` s of a running
        lab: a CI run counted a 1.5 s stall as a burst of "timeouts" of requests served."""
        if late < STALL:
            return
        for p in pending.values():
            p.due += late
        with self._cond:
            self.stalls.append((time.time() - late, late))

    def describe_stalls(self, since: float) -> str:
        """The stalls since ``since`` (wall clock), for a report: their requests' deadlines
        were extended by them (_stalled)."""
        with self._cond:
            seen = [(t, d) for t, d in self.stalls if t + d >= since]
        if not seen:
            return "client stalls: none"
        return "client stalls (deadlines extended): " + ", ".join(
            f"+{t - since:.2f} s for {d:.2f} s" for t, d in seen
        )

    def _expire(self, sel: selectors.BaseSelector, pending: dict[int, _Pending]) -> None:
        now = time.monotonic()
        for p in [p for p in pending.values() if now >= p.due]:
            self._close(sel, pending, p, "timeout")

    def _close(
        self, sel: selectors.BaseSelector, pending: dict[int, _Pending], p: _Pending, outcome: str
    ) -> None:
        fd = p.sock.fileno()
        del pending[fd]
        sel.unregister(p.sock)
        p.sock.close()
        with self._cond:
            del self._in_flight[fd]
            self._finish(p.start, outcome)

    def _finish(self, start: float, outcome: str) -> None:
        with self._cond:
            self.records.append(Record(start, outcome, time.time() - start))
            self._cond.notify_all()


def _answer(data: bytes) -> str:
    """The box name in an HTTP answer, or why the answer is not one."""
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        return "truncated" if data else "closed"
    if not head.startswith(b"HTTP/1.") or b" 200 " not in head.split(b"\r\n", 1)[0]:
        return "bad-status"
    text = body.decode(errors="replace").strip()
    return text if text.startswith(SUCCESS_PREFIX) else f"bad-body:{text[:20]}"


# ----- analysis (pure) -------------------------------------------------------------------------


def spread(records: Sequence[Record]) -> Counter[str]:
    """How many requests ended each way: per box name, and per kind of failure."""
    return Counter(r.outcome for r in records)


def share(records: Sequence[Record], outcome: str) -> float:
    """The fraction of successful requests that ``outcome`` (a box name) served."""
    served = [r for r in records if r.ok]
    return sum(1 for r in served if r.outcome == outcome) / len(served) if served else 0.0


def outage(records: Sequence[Record], event: float, horizon: float | None = None) -> float | None:
    """The longest time in which no request completed successfully, around ``event``, in s.

    Gaps between the completions of consecutive successful requests, from the last one at or
    before ``event`` on through ``horizon`` seconds after it (default: to the end). Completions,
    not starts: a request that stalled while nobody held the VIP and was answered late counts
    when the client got its answer. Under a loop the takeover gap is followed by shorter ones,
    and the longest gap is the outage a client sees. Overstates by up to one request interval.
    None if nothing succeeded after the event.
    """
    ends = sorted(r.end for r in records if r.ok)
    before = [e for e in ends if e <= event]
    after = [e for e in ends if e > event and (horizon is None or e <= event + horizon)]
    if not after:
        return None
    edges = ([before[-1]] if before else [event]) + after
    return max(b - a for a, b in itertools.pairwise(edges))


def recovery(records: Sequence[Record], event: float) -> float | None:
    """The start of the first successful request after ``event``, or None."""
    return min((r.start for r in records if r.ok and r.start > event), default=None)


def failure_rate(records: Sequence[Record], start: float, end: float | None = None) -> float:
    """The fraction of requests started in [start, end) that failed (0.0 if there were none)."""
    window = [r for r in records if r.start >= start and (end is None or r.start < end)]
    return sum(1 for r in window if not r.ok) / len(window) if window else 0.0


@dataclass(frozen=True)
class Bucket:
    """Requests started in [offset, offset + width) seconds after an event."""

    offset: float
    total: int
    failed: int

    @property
    def rate(self) -> float:
        return self.failed / self.total if self.total else 0.0


def failure_timeline(records: Sequence[Record], event: float, width: float = 1.0) -> list[Bucket]:
    """The failure rate over time after ``event``, one bucket per ``width`` seconds."""
    later = [r for r in records if r.start >= event]
    if not later:
        return []
    count = int((max(r.start for r in later) - event) // width) + 1
    totals = [0] * count
    failed = [0] * count
    for r in later:
        i = int((r.start - event) // width)
        totals[i] += 1
        failed[i] += 0 if r.ok else 1
    return [Bucket(i * width, totals[i], failed[i]) for i in range(count)]


def failures_end(records: Sequence[Record], event: float, quiet: float = 2.0) -> float | None:
    """Seconds from ``event`` to the start of the last failed request after it.

    0.0 if nothing failed after the event. None while failures have not ended: the recording
    does not go on, failure-free, for at least ``quiet`` seconds after the last one (so a rate
    that never reaches zero, as in the seed's setup, reads as None rather than a number).
    """
    later = sorted((r for r in records if r.start >= event), key=lambda r: r.start)
    failed = [r.start for r in later if not r.ok]
    if not failed:
        return 0.0
    last = failed[-1]
    if not later or later[-1].start - last < quiet:
        return None
    return last - event


def describe(records: Sequence[Record], event: float | None = None) -> str:
    """One line for a person: outcomes, and around an event the outage and what followed."""
    parts = [", ".join(f"{k} {v}" for k, v in sorted(spread(records).items()))]
    if event is not None:
        gap = outage(records, event)
        back = recovery(records, event)
        parts.append(
            "outage " + ("none after the event" if gap is None else f"{gap * 1000:.0f} ms")
        )
        if back is not None:
            parts.append(f"failure rate after recovery {failure_rate(records, back) * 100:.1f} %")
            end = failures_end(records, event)
            parts.append(
                "failures end " + ("never (still failing)" if end is None else f"+{end:.2f} s")
            )
    return "; ".join(parts)

