"""sd_notify as systemd would read it: a datagram socket of our own named by NOTIFY_SOCKET."""

from __future__ import annotations

import asyncio
import logging
import select
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from lvsagent.daemon.vrrploop import VrrpLoop
from lvsagent.observe.notify import Notifier, watchdog_interval

WAIT = 10.0  # seconds an expected datagram may take (an upper bound, not a measurement)


class Listener:
    """The receiving end of NOTIFY_SOCKET."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))

    def next(self, timeout: float = WAIT) -> str:
        ready, _, _ = select.select([self.sock], [], [], timeout)
        assert ready, "no notification arrived"
        return self.sock.recv(4096).decode()

    def pending(self, timeout: float) -> list[str]:
        """Everything that arrives within ``timeout`` (used only to show that nothing does)."""
        got = []
        while select.select([self.sock], [], [], timeout)[0]:
            got.append(self.sock.recv(4096).decode())
        return got

    def drain(self) -> None:
        self.sock.setblocking(False)
        try:
            while True:
                self.sock.recv(4096)
        except BlockingIOError:
            pass
        finally:
            self.sock.setblocking(True)


@pytest.fixture
def listener(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Listener]:
    path = tmp_path / "notify.sock"
    lst = Listener(path)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    try:
        yield lst
    finally:
        lst.sock.close()


def test_ready_with_a_status(listener: Listener) -> None:
    assert Notifier({}).ready("VI_1 MASTER")
    assert listener.next() == "READY=1\nSTATUS=VI_1 MASTER"


def test_reloading_carries_the_monotonic_clock(listener: Listener) -> None:
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert Notifier({}).reloading()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    first, second = listener.next().split("\n")
    assert first == "RELOADING=1"
    key, value = second.split("=")
    assert key == "MONOTONIC_USEC"
    assert before <= int(value) <= after


def test_status_stays_one_assignment(listener: Listener) -> None:
    Notifier({}).status("VI_1 MASTER\nVI_2 BACKUP")
    assert listener.next() == "STATUS=VI_1 MASTER VI_2 BACKUP"


def test_stopping(listener: Listener) -> None:
    Notifier({}).stopping()
    assert listener.next() == "STOPPING=1"


def test_without_notify_socket_nothing_is_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert Notifier({}).ready() is False


@pytest.mark.parametrize("where", ["/nonexistent/lvsagent/notify.sock", "relative.sock"])
def test_a_bad_notify_socket_never_raises(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, where: str
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", where)
    n = Notifier({})
    with caplog.at_level(logging.WARNING, logger="lvsagent.notify"):
        assert n.ready() is False
        assert n.status("x") is False
    # Said once, not on every status update.
    assert len([r for r in caplog.records if "cannot notify systemd" in r.message]) == 1


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, None),
        ({"WATCHDOG_USEC": "10000000"}, 10.0),
        ({"WATCHDOG_USEC": "10000000", "WATCHDOG_PID": "4242"}, 10.0),
        ({"WATCHDOG_USEC": "10000000", "WATCHDOG_PID": "1"}, None),  # meant for another process
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "ten"}, None),
        ({"WATCHDOG_USEC": "10000000", "WATCHDOG_PID": "x"}, None),
    ],
)
def test_watchdog_interval(env: dict[str, str], expected: float | None) -> None:
    assert watchdog_interval(env, pid=4242) == expected


def test_probe_interval_is_half_the_watchdog_or_a_second() -> None:
    assert Notifier({}).probe_interval == 1.0
    assert Notifier({"WATCHDOG_USEC": "10000000"}).probe_interval == 1.0
    assert Notifier({"WATCHDOG_USEC": "200000"}).probe_interval == pytest.approx(0.1)


class LoopThread:
    """An event loop in a thread running the watchdog task, and a way to block that loop."""

    def __init__(
        self, notifier: Notifier, also_alive: Callable[[], Awaitable[object]] | None = None
    ) -> None:
        self.loop = asyncio.new_event_loop()
        self.notifier = notifier
        self.also_alive = also_alive
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.entered = threading.Event()
        self.release = threading.Event()
        self.task: asyncio.Task[None] | None = None
        self.thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.task = self.loop.create_task(self.notifier.watchdog_task(self.also_alive))
        try:
            self.loop.run_until_complete(self.task)
        except asyncio.CancelledError:
            pass
        finally:
            self.loop.close()

    def block(self) -> None:
        """Make the loop run one callback that waits for ``release``: a frozen daemon."""

        def frozen() -> None:
            self.entered.set()
            self.release.wait(WAIT * 3)

        self.loop.call_soon_threadsafe(frozen)
        assert self.entered.wait(WAIT)

    def stop(self) -> None:
        self.release.set()
        if self.task is not None:
            self.loop.call_soon_threadsafe(self.task.cancel)
        self.thread.join(WAIT)


def test_the_watchdog_is_fed_by_the_loop_and_stops_when_it_blocks(listener: Listener) -> None:
    notifier = Notifier({"WATCHDOG_USEC": "100000"})  # 0.1 s: a ping every 0.05 s
    runner = LoopThread(notifier)
    try:
        # Fed at once, then every half interval.
        for _ in range(3):
            assert listener.next() == "WATCHDOG=1"
        runner.block()
        # Whatever was sent before the block is queued already (AF_UNIX sends synchronously).
        listener.drain()
        blocked_at = time.monotonic()
        # Twenty half-intervals of silence: no thread pings on the loop's behalf.
        assert listener.pending(1.0) == []
        runner.release.set()
        blocked = time.monotonic() - blocked_at
        assert listener.next() == "WATCHDOG=1"
        # The late wake-up is recorded before the ping that follows it.
        assert notifier.loop_lag >= blocked - notifier.probe_interval
        assert notifier.pings >= 3
    finally:
        runner.stop()


def test_without_a_watchdog_the_lag_is_still_measured(listener: Listener) -> None:
    notifier = Notifier({})
    notifier.probe_interval = 0.02
    runner = LoopThread(notifier)
    try:
        runner.block()
        blocked_at = time.monotonic()
        assert listener.pending(0.3) == []  # nothing is sent without WATCHDOG_USEC
        runner.release.set()
        blocked = time.monotonic() - blocked_at
        # The late wake-up was due before anything scheduled from now: once a
        # coroutine started now has slept a probe interval, the sample is in.
        wait = asyncio.run_coroutine_threadsafe(asyncio.sleep(notifier.probe_interval), runner.loop)
        wait.result(WAIT)
        assert notifier.loop_lag >= blocked - notifier.probe_interval
        assert notifier.pings == 0
    finally:
        runner.stop()


def _within(listener: Listener, seconds: float) -> list[str]:
    """What arrives in the next ``seconds`` (bounded, however often it is sent)."""
    got, deadline = [], time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        if select.select([listener.sock], [], [], left)[0]:
            got.append(listener.sock.recv(4096).decode())
    return got


def test_a_stuck_vrrp_loop_withholds_the_watchdog_too(listener: Listener) -> None:
    """The main loop runs, VRRP's does not: systemd must still see the daemon as hung."""
    vrrp = VrrpLoop()
    vrrp.start()
    notifier = Notifier({"WATCHDOG_USEC": "100000"})
    runner = LoopThread(notifier, lambda: vrrp.call(asyncio.sleep(0)))
    entered, release = threading.Event(), threading.Event()

    def frozen() -> None:
        entered.set()
        release.wait(WAIT * 3)

    try:
        for _ in range(3):
            assert listener.next() == "WATCHDOG=1"
        vrrp.loop.call_soon_threadsafe(frozen)
        assert entered.wait(WAIT)
        _within(listener, 0.2)  # a ping of the round under way when it froze
        assert _within(listener, 1.0) == []  # the main loop runs, yet no ping
        release.set()
        assert listener.next() == "WATCHDOG=1"
    finally:
        release.set()
        runner.stop()
        vrrp.stop()
