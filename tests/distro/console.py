"""The guest's serial console as the runner reads it: the events that end a wait (pure).

Why scan it: a guest that panicked, or whose init failed, must be reported at once with its
reason, and one whose init never started must be told from one whose command is slow. The
init scripts print fixed lines for their milestones and failures; the kernel prints its own
panic line. Fed in chunks as QEMU writes them, so a line split across reads still counts.
"""

from __future__ import annotations

import re

INIT_STARTED = "lvsagent-distro: init: started"
# Lines that mean the guest is dead or dying: a kernel panic, or an init script's failure.
FATAL = re.compile(r"Kernel panic - not syncing.*|lvsagent-distro: (?:initramfs|init): FAILED: .*")
TAIL_LINES = 30


class Console:
    """Everything the guest printed, and what it means so far."""

    def __init__(self) -> None:
        self.text = ""
        self.started = False  # guest-init.sh runs: the kernel and the initramfs did their part
        self.fatal: str | None = None  # the first fatal line, stripped
        self._partial = ""

    def feed(self, chunk: str) -> None:
        self.text += chunk
        lines = (self._partial + chunk).split("\n")
        self._partial = lines.pop()
        for raw in lines:
            line = raw.strip()
            if INIT_STARTED in line:
                self.started = True
            found = FATAL.search(line)
            if found and self.fatal is None:
                self.fatal = found.group(0)

    def tail(self, lines: int = TAIL_LINES) -> str:
        return "\n".join(self.text.splitlines()[-lines:])
