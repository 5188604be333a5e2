"""keepalived's track_file and track_process with real agents: the VIP follows them.

A file's number (weight 0: non-zero means FAULT; otherwise number x weight joins the
priority) and a process's presence (a copy of sleep(1) under a name of its own, so
that no other process on the host matches) decide box A's state, as they would
keepalived's.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from tests.netns.conftest import Pair
from tests.netns.lab import agent_config
from tests.netns.scriptlab import ScriptDir, scripts  # noqa: F401

VIP = "10.99.0.100"


def configs(pair: Pair, track: str, sections: str) -> tuple[Path, Path]:
    ca = agent_config(pair.tmp / "a.toml", interface="eth0", priority=100, extra=track)
    ca.write_text(ca.read_text() + sections)
    cb = agent_config(pair.tmp / "b.toml", interface="eth0", priority=50)
    return ca, cb


def test_a_file_with_weight_0_faults_and_with_a_weight_lowers_the_priority(
    pair: Pair,
) -> None:
    maint = pair.tmp / "maint"  # created by init_file
    level = pair.tmp / "level"
    level.write_text("0\n")
    sections = f"""
[[track_file]]
name = "maint"
file = "{maint}"
weight = 0
init_file = 0

[[track_file]]
name = "level"
file = "{level}"
weight = -10
"""
    ca, cb = configs(pair, 'track_files = ["maint", "level"]', sections)
    da, db = pair.settled_pair(ca, cb)
    assert maint.read_text().strip() == "0"  # keepalived's init_file

    mark_a, mark_b = da.mark(), db.mark()
    maint.write_text("1\n")
    line = da.wait_for(r"\): MASTER -> FAULT \(", 5, after=mark_a)
    assert "file maint holds 1" in line, line
    db.wait_for(r"BACKUP -> MASTER", 5, after=mark_b)
    pair.b.wait_address("eth0", VIP, present=True, timeout=2)

    mark_a, mark_b = da.mark(), db.mark()
    maint.write_text("0\n")
    da.wait_for(r"\): FAULT -> BACKUP \(", 5, after=mark_a)
    da.wait_for(r"BACKUP -> MASTER", 10, after=mark_a)

    mark_a, mark_b = da.mark(), db.mark()
    level.write_text("0x7 trailing words are ignored\n")  # strtol: 7, x -10
    line = da.wait_for(r"effective priority 100 -> 30 \(", 5, after=mark_a)
    assert "file level holds 7 (weight -10: -70)" in line, line
    db.wait_for(r"\): BACKUP -> MASTER \(preempting", 10, after=mark_b)


def test_a_missing_process_faults_the_instance(pair: Pair, scripts: ScriptDir) -> None:  # noqa: F811
    name = f"lvst{os.getpid() % 100000}svc"  # 15 bytes at most: /proc/PID/comm
    program = scripts.root / name
    shutil.copy("/bin/sleep", program)
    service = subprocess.Popen([str(program), "1000000"])
    try:
        sections = f'\n[[track_process]]\nname = "svc"\nprocess = "{name}"\nweight = 0\n'
        ca, cb = configs(pair, 'track_processes = ["svc"]', sections)
        da, db = pair.settled_pair(ca, cb)

        mark_a, mark_b = da.mark(), db.mark()
        service.kill()
        service.wait()
        da.wait_for(rf"track_process svc: KO \(0 process\(es\) named '{name}'\)", 5, after=mark_a)
        line = da.wait_for(r"\): MASTER -> FAULT \(", 5, after=mark_a)
        assert "process svc KO" in line, line
        db.wait_for(r"BACKUP -> MASTER", 5, after=mark_b)

        mark_a = da.mark()
        service = subprocess.Popen([str(program), "1000000"])
        da.wait_for(r"track_process svc: OK \(1 process\(es\)", 5, after=mark_a)
        da.wait_for(r"\): FAULT -> BACKUP \(", 5, after=mark_a)
        da.wait_for(r"BACKUP -> MASTER", 10, after=mark_a)
    finally:
        service.kill()
        service.wait()
