"""Scripts for the agents under test: written by the tests, in a directory every user can read.

The agent runs scripts as ``nobody`` by default (it runs as root here), and pytest's
tmp_path sits under a 0700 directory; so scripts live in a directory of their own
under /tmp (mode 0755; the files they write go to a 0777 one beside it), removed
by the fixture.  A FIFO reader collects the agent's notify_fifo lines in a thread.
"""

from __future__ import annotations

import os
import queue
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest


class ScriptDir:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.out = root / "out"  # where scripts write: every user may
        self.out.mkdir()
        self.out.chmod(0o777)

    def script(self, name: str, body: str) -> Path:
        """An executable /bin/sh script ``name`` with ``body``."""
        path = self.root / name
        path.write_text(f"#!/bin/sh\n{body}\n")
        path.chmod(0o755)
        return path

    def lines(self, name: str) -> list[str]:
        path = self.out / name
        return path.read_text().splitlines() if path.exists() else []


@pytest.fixture
def scripts() -> Iterator[ScriptDir]:
    root = Path(tempfile.mkdtemp(prefix="lvsagent-scripts-"))
    root.chmod(0o755)
    try:
        yield ScriptDir(root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


class FifoReader:
    """Reads a FIFO's lines in a thread, reopening it after each writer leaves."""

    def __init__(self, path: Path) -> None:
        self.path = path
        os.mkfifo(path, 0o600)
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        while not self._stop.is_set():
            with open(self.path) as fifo:  # blocks until a writer opens it
                for line in fifo:
                    self.lines.put(line.rstrip("\n"))

    def wait_for(self, line: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while line not in self.seen:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no FIFO line {line!r} within {timeout} s: {self.seen}")
            with suppress(queue.Empty):
                self.seen.append(self.lines.get(timeout=left))

    def close(self) -> None:
        self._stop.set()
        with suppress(OSError):  # release a reader blocked in open()
            fd = os.open(self.path, os.O_WRONLY | os.O_NONBLOCK)
            os.close(fd)
        self._thread.join(5)


@contextmanager
def fifo_reader(path: Path) -> Iterator[FifoReader]:
    reader = FifoReader(path)
    try:
        yield reader
    finally:
        reader.close()
