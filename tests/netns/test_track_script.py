"""keepalived's track_script with real agents: a script's verdict moves the VIP.

Box A's script checks that a file exists (the test's switch for "the service is
healthy").  Weight 0: A is in FAULT while the script fails, and B takes the VIP;
a negative weight lowers A below B, which preempts.  A script that hangs is
killed at its timeout and counts as failed.  An instance does not start before
its scripts have run once, so a box whose script fails at start never claims
the VIP, not even for a moment.
"""

from __future__ import annotations

from pathlib import Path

from tests.netns.conftest import Pair
from tests.netns.lab import agent_config, start_agent
from tests.netns.scriptlab import ScriptDir, scripts  # noqa: F401

VIP = "10.99.0.100"


def script_section(check: str, extra: str = "") -> str:
    return f'\n[[vrrp_script]]\nname = "chk"\nscript = "{check}"\ninterval = 0.2\n{extra}\n'


def configs(pair: Pair, track: str, section: str) -> tuple[Path, Path]:
    ca = agent_config(pair.tmp / "a.toml", interface="eth0", priority=100, extra=track)
    ca.write_text(ca.read_text() + section)
    cb = agent_config(pair.tmp / "b.toml", interface="eth0", priority=50)
    return ca, cb


def test_weight_zero_faults_the_instance_and_hands_the_vip_over(
    pair: Pair, scripts: ScriptDir  # noqa: F811
) -> None:
    healthy = scripts.out / "healthy"
    healthy.touch()
    check = scripts.script("check.sh", f"test -e {healthy}")
    ca, cb = configs(pair, 'track_scripts = ["chk"]', script_section(str(check)))
    da, db = pair.settled_pair(ca, cb)
    assert pair.a.has_address("eth0", VIP)

    mark_a, mark_b = da.mark(), db.mark()
    healthy.unlink()
    line = da.wait_for(r"\): MASTER -> FAULT \(", 5, after=mark_a)
    assert "script chk KO" in line, line
    db.wait_for(r"BACKUP -> MASTER", 5, after=mark_b)
    pair.b.wait_address("eth0", VIP, present=True, timeout=2)
    assert not pair.a.has_address("eth0", VIP)

    mark_a = da.mark()
    healthy.touch()
    da.wait_for(r"track script chk: OK", 5, after=mark_a)
    da.wait_for(r"\): FAULT -> BACKUP \(", 5, after=mark_a)
    da.wait_for(r"BACKUP -> MASTER", 10, after=mark_a)  # preempts: 100 > 50
    pair.a.wait_address("eth0", VIP, present=True, timeout=2)


def test_a_negative_weight_lowers_the_priority_and_the_peer_preempts(
    pair: Pair, scripts: ScriptDir  # noqa: F811
) -> None:
    healthy = scripts.out / "healthy"
    healthy.touch()
    # The array form: argv as written, no shell.
    section = f'\n[[vrrp_script]]\nname = "chk"\nscript = ["/usr/bin/test", "-e", "{healthy}"]\n'
    section += "interval = 0.2\nweight = -60\n"
    ca, cb = configs(pair, 'track_scripts = ["chk"]', section)
    da, db = pair.settled_pair(ca, cb)

    mark_a, mark_b = da.mark(), db.mark()
    healthy.unlink()
    line = da.wait_for(r"effective priority 100 -> 40 \(", 5, after=mark_a)
    assert "script chk KO (weight -60: -60)" in line, line
    db.wait_for(r"\): BACKUP -> MASTER \(preempting lower-priority master", 10, after=mark_b)
    da.wait_for(r"\): MASTER -> BACKUP \(higher priority 50", 5, after=mark_a)
    assert not [x for x in da.lines[mark_a:] if "-> FAULT" in x]

    mark_a = da.mark()
    healthy.touch()
    da.wait_for(r"effective priority 40 -> 100 \(", 5, after=mark_a)
    da.wait_for(r"BACKUP -> MASTER", 10, after=mark_a)


def test_a_hung_script_is_killed_at_its_timeout_and_counts_as_failed(
    pair: Pair, scripts: ScriptDir  # noqa: F811
) -> None:
    hang = scripts.out / "hang"
    # Through a shell, as asked (shell = true): the whole line is one /bin/sh -c.
    line = f"if test -e {hang}; then sleep 1000000; fi"
    section = (f'\n[[vrrp_script]]\nname = "chk"\nscript = "{line}"\nshell = true\n'
               "interval = 0.2\ntimeout = 0.5\n")  # fmt: skip
    ca, cb = configs(pair, 'track_scripts = ["chk"]', section)
    da, db = pair.settled_pair(ca, cb)

    mark_a, mark_b = da.mark(), db.mark()
    hang.touch()
    killed = da.wait_for(r"track script chk: KO", 5, after=mark_a)
    assert "timed out and was killed" in killed, killed
    da.wait_for(r"\): MASTER -> FAULT \(", 2, after=mark_a)
    db.wait_for(r"BACKUP -> MASTER", 5, after=mark_b)
    hang.unlink()
    da.wait_for(r"\): FAULT -> BACKUP \(", 5, after=mark_a)


def test_a_script_that_fails_at_start_never_lets_the_box_claim_the_vip(
    pair: Pair, scripts: ScriptDir  # noqa: F811
) -> None:
    check = scripts.script("check.sh", "exit 1")
    ca, cb = configs(pair, 'track_scripts = ["chk"]', script_section(str(check)))
    db = pair.track(start_agent(pair.b, cb, "agent-b"))
    db.wait_for(r"-> MASTER", 10)
    da = pair.track(start_agent(pair.a, ca, "agent-a"))
    line = da.wait_for(r"\): INIT -> ", 10)
    assert "INIT -> FAULT (starting with script chk KO)" in line, line
    da.assert_quiet(r"-> (MASTER|BACKUP)", 2)
    assert not pair.a.has_address("eth0", VIP)
