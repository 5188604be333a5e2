"""sd_notify(3) for systemd's Type=notify, and a watchdog fed by the event loop itself.

Why this wrapper: systemd-python's ``daemon.notify`` returns False without
``NOTIFY_SOCKET`` but *raises* when it names a missing or relative path
(systemd-python 235); a status message must never take the daemon down, so every
send here swallows and logs (once) instead.

Why feed the watchdog from the loop: everything lvsagent decides happens on
one asyncio loop.  A thread that pinged systemd would keep a hung loop alive
forever; a coroutine only runs when the loop does, so a loop stuck in a
blocking call stops the pings and systemd restarts the service (``WatchdogSec``).
The same coroutine measures how late each of its wake-ups is (the loop's lag),
which is what an operator alerts on before the watchdog fires.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping

log = logging.getLogger("lvsagent.notify")

# How often the loop's lag is sampled when the watchdog wants nothing faster.
LAG_PROBE_INTERVAL = 1.0
# loop_lag reports the worst sample over this many seconds, so that a stall
# between two scrapes still shows in the next one.
LAG_WINDOW = 60.0


def watchdog_interval(environ: Mapping[str, str], pid: int) -> float | None:
    """systemd's watchdog timeout in seconds, or None when it is off or meant for another pid.

    ``WATCHDOG_PID``, when set, names the process the timeout is for: a child
    that inherited the environment must not think it is watched.
    """
    owner = environ.get("WATCHDOG_PID", "")
    if owner and (not owner.isdigit() or int(owner) != pid):
        return None
    usec = environ.get("WATCHDOG_USEC", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    return int(usec) / 1_000_000


def _sd_notify(text: str) -> bool:
    import systemd.daemon as daemon  # late: only a service under systemd needs the C extension

    return bool(daemon.notify(text))


class Notifier:
    """Messages to systemd (each returns whether it was delivered) and the watchdog task.

    ``send`` replaces sd_notify in tests that do not want a socket; the
    environment is read once, at construction, as systemd sets it at exec.
    """

    def __init__(
        self,
        environ: Mapping[str, str] | None = None,
        *,
        pid: int | None = None,
        send: Callable[[str], bool] | None = None,
    ) -> None:
        env = os.environ if environ is None else environ
        self.watchdog_interval = watchdog_interval(env, os.getpid() if pid is None else pid)
        self._send = send or _sd_notify
        self._failed = False
        self.probe_interval = LAG_PROBE_INTERVAL
        if self.watchdog_interval is not None:
            # Half the timeout, as sd_watchdog_enabled(3) recommends, or faster for the lag.
            self.probe_interval = min(LAG_PROBE_INTERVAL, self.watchdog_interval / 2)
        self._lags: deque[float] = deque(maxlen=max(1, round(LAG_WINDOW / self.probe_interval)))
        self.pings = 0

    # ----- messages ---------------------------------------------------------------

    def notify(self, *assignments: str) -> bool:
        """Send ``KEY=value`` lines as one datagram; False if nobody listens or it failed."""
        text = "\n".join(assignments)
        try:
            return self._send(text)
        except Exception as exc:  # sd_notify raises for a bad NOTIFY_SOCKET: never fatal
            if not self._failed:
                self._failed = True
                log.warning("cannot notify systemd (%s): %s; continuing without", text, exc)
            return False

    def ready(self, status: str | None = None) -> bool:
        """Start-up (or a reload) is complete: systemd turns the unit active."""
        lines = ["READY=1"]
        if status is not None:
            lines.append(f"STATUS={_one_line(status)}")
        return self.notify(*lines)

    def reloading(self) -> bool:
        """A reload began; ``ready()`` ends it.

        systemd 253+ (Type=notify-reload) wants MONOTONIC_USEC with it to tell
        this reload from an older one; 252 ignores the extra field.
        """
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.notify("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def status(self, text: str) -> bool:
        """Free text that ``systemctl status`` shows, e.g. each instance's state."""
        return self.notify(f"STATUS={_one_line(text)}")

    def stopping(self) -> bool:
        return self.notify("STOPPING=1")

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    # ----- the watchdog and the loop's lag ---------------------------------------------------

    @property
    def loop_lag(self) -> float:
        """The worst lag (seconds) of the recent samples; 0.0 before the first."""
        return max(self._lags, default=0.0)

    async def watchdog_task(
        self, also_alive: Callable[[], Awaitable[object]] | None = None
    ) -> None:
        """Run for the daemon's lifetime: sample the loop's lag, feed the watchdog if on.

        Each round asks to be woken ``probe_interval`` from now; the lag is how
        much later than that it runs.  A blocked loop both delays this and
        withholds the ping, which is the point.  ``also_alive``: a round trip to
        another loop (VRRP's, daemon/vrrploop.py); one that does not come back
        within a probe interval withholds the ping too.
        """
        loop = asyncio.get_running_loop()
        if self.watchdog_interval is not None:
            self.watchdog()  # the first timeout runs from exec: feed at once
        stuck = False
        while True:
            due = loop.time() + self.probe_interval
            await asyncio.sleep(self.probe_interval)
            lag = max(0.0, loop.time() - due)
            self._lags.append(lag)
            if also_alive is not None:
                try:
                    await asyncio.wait_for(also_alive(), self.probe_interval)
                except TimeoutError:
                    if not stuck:
                        log.error("VRRP's event loop did not answer within %.1f s; the "
                                  "watchdog is not fed while it does not", self.probe_interval)
                    stuck = True
                    continue
                stuck = False
            if self.watchdog_interval is not None and self.watchdog():
                self.pings += 1


def _one_line(text: str) -> str:
    """sd_notify's messages are newline-separated assignments: a value has no newline."""
    return " ".join(text.split("\n"))
