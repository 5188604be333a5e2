"""The state directory's lock: one holder at a time, named to the one refused."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lvsagent.daemon.pidlock import AlreadyRunning, StateLock


def test_a_second_holder_is_refused_with_the_first_ones_pid(tmp_path: Path) -> None:
    first = StateLock(str(tmp_path / "state"))
    first.acquire()
    try:
        assert (tmp_path / "state" / "lvsagent.pid").read_text() == f"{os.getpid()}\n"
        with pytest.raises(AlreadyRunning, match=rf"another lvsagent \(PID {os.getpid()}\)"):
            StateLock(str(tmp_path / "state")).acquire()
    finally:
        first.release()
    again = StateLock(str(tmp_path / "state"))
    again.acquire()  # released: free again, whatever the file still says
    again.release()


def test_a_symlink_in_place_of_the_file_is_not_followed(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_text("keep\n")
    (tmp_path / "lvsagent.pid").symlink_to(target)
    with pytest.raises(OSError):
        StateLock(str(tmp_path)).acquire()
    assert target.read_text() == "keep\n"
