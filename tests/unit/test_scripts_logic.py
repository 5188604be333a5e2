"""The pure halves of track scripts, files, processes, MISC_CHECK, hooks and sync groups.

Each keepalived rule has a case where it applies and one where it must not:
rise/fall counting (vrrp_script), the weight rules (track_script, track_file),
misc_dynamic's exit codes, strtol's reading of a tracked file, process matching
and its delays, the notify arguments and FIFO line, and a sync group's moves.
"""

from __future__ import annotations

import ipaddress

import pytest

from lvsagent.config.schema import Command, Hooks, TrackProcess
from lvsagent.health.misc import misc_result
from lvsagent.health.trackfile import parse_value
from lvsagent.health.trackprocess import ProcessInfo, ProcessVerdict, matches
from lvsagent.scripts.command import fifo_line, invocations
from lvsagent.scripts.runner import ScriptRun
from lvsagent.scripts.verdict import RiseFall
from lvsagent.vrrp import syncgroup
from lvsagent.vrrp.machine import RouterParams, State, VirtualRouter
from lvsagent.vrrp.syncgroup import Member
from lvsagent.vrrp.track import Tracked, evaluate_tracked, weigh_file

# ----- vrrp_script: rise and fall ------------------------------------------------


def test_first_result_decides_alone() -> None:
    ok = RiseFall(rise=3, fall=2)
    assert ok.ok is None
    assert ok.record(True) and ok.ok
    ko = RiseFall(rise=3, fall=2)
    assert ko.record(False) and ko.ok is False


def test_fall_failures_in_a_row_make_an_ok_script_ko() -> None:
    v = RiseFall(rise=2, fall=3)
    v.record(True)
    assert not v.record(False) and v.ok
    assert not v.record(False) and v.ok
    assert v.record(True) is False and v.ok  # a success in between starts over
    v.record(False)
    v.record(False)
    assert v.record(False) and v.ok is False


def test_rise_successes_in_a_row_make_a_ko_script_ok() -> None:
    v = RiseFall(rise=3, fall=1)
    v.record(False)
    assert not v.record(True) and v.ok is False
    assert not v.record(True) and v.ok is False
    assert v.record(True) and v.ok


def test_init_fail_is_ko_until_rise_successes() -> None:
    v = RiseFall(rise=2, fall=1, init_fail=True)
    assert v.ok is False
    assert not v.record(True)
    assert v.record(True) and v.ok


def test_rise_and_fall_below_one_are_refused() -> None:
    with pytest.raises(ValueError):
        RiseFall(0, 1)


# ----- track_script / track_process / track_file weights -------------------------


def test_weight_zero_script_ko_faults_and_positive_weight_adds_while_ok() -> None:
    v = evaluate_tracked([Tracked("script chk", 0, up=False), Tracked("script web", 10, up=True)])
    assert v.fault and "script chk KO" in v.why
    v = evaluate_tracked([Tracked("script chk", 0, up=True), Tracked("script web", 10, up=True)])
    assert not v.fault and v.adjustment == 10


def test_negative_weight_subtracts_only_while_ko() -> None:
    assert evaluate_tracked([Tracked("script chk", -20, up=False)]).adjustment == -20
    assert evaluate_tracked([Tracked("script chk", -20, up=True)]).adjustment == 0
    assert evaluate_tracked([Tracked("script chk", 20, up=False)]).adjustment == 0


def test_a_script_without_result_holds_only_weight_zero_in_fault() -> None:
    assert evaluate_tracked([Tracked("script chk", 0)]).fault
    v = evaluate_tracked([Tracked("script chk", -20)])
    assert not v.fault and v.adjustment == 0


@pytest.mark.parametrize(
    ("weight", "value", "expected"),
    [
        (0, 0, (False, 0)),
        (0, 7, (True, 0)),  # weight 0: any value but 0 is FAULT
        (1, 50, (False, 50)),
        (-2, 10, (False, -20)),
        (10, 100, (False, 253)),  # at most 253
        (1, -253, (False, -253)),
        (1, -254, (True, 0)),  # below -253: FAULT
    ],
)
def test_track_file_rule(weight: int, value: int, expected: tuple[bool, int]) -> None:
    assert weigh_file(weight, value) == expected


def test_tracked_files_add_up() -> None:
    v = evaluate_tracked([Tracked("file a", 2, value=5), Tracked("file b", -1, value=3)])
    assert not v.fault and v.adjustment == 7


@pytest.mark.parametrize(
    ("data", "value"),
    [
        (b"42\n", 42),
        (b"  -7 trailing", -7),
        (b"0x1f", 31),
        (b"010", 8),  # strtol base 0: octal
        (b"", 0),
        (b"abc", 0),
        (b"99999999999", None),  # outside 32 bits: the last value stays
    ],
)
def test_track_file_value_reads_as_strtol(data: bytes, value: int | None) -> None:
    assert parse_value(data) == value


def spec(**kw: object) -> TrackProcess:
    return TrackProcess(name="p", **kw)  # type: ignore[arg-type]


def test_process_by_name_compares_the_15_bytes_of_comm() -> None:
    long = spec(process="haproxy-master-long")
    assert matches(long, ProcessInfo("haproxy-master-", None))
    assert not matches(spec(process="haproxy"), ProcessInfo("haproxy-wrapper", None))


def test_process_args_by_param_match() -> None:
    proc = ProcessInfo("nginx", ("/usr/sbin/nginx", "-c", "/etc/nginx/a.conf"))
    exact = spec(process="/usr/sbin/nginx", args=("-c", "/etc/nginx/a.conf"))
    assert matches(exact, proc)
    assert not matches(spec(process="/usr/sbin/nginx", args=("-c",)), proc)
    assert matches(spec(process="/usr/sbin/nginx", args=("-c",), param_match="partial"), proc)
    initial = spec(process="/usr/sbin/nginx", args=("-c", "/etc/ng"), param_match="initial")
    assert matches(initial, proc)
    assert not matches(spec(process="/usr/bin/nginx", args=("-c",), param_match="partial"), proc)


def test_process_quorum_and_delays() -> None:
    v = ProcessVerdict(spec(process="x", quorum=2, quorum_max=3, terminate_delay=5.0))
    assert v.update(2, 0.0) and v.ok
    assert not v.update(1, 10.0) and v.ok  # below quorum, but not for 5 s yet
    assert v.update(1, 15.0) and v.ok is False
    assert v.update(3, 16.0) and v.ok  # fork_delay 0: at once
    assert not v.update(4, 17.0) and v.ok  # above quorum_max: a loss, terminate_delay
    assert v.update(4, 22.0) and v.ok is False


# ----- MISC_CHECK ---------------------------------------------------------------


def test_misc_exit_codes_plain_and_dynamic() -> None:
    assert misc_result(ScriptRun(status=0), dynamic=False).ok
    assert not misc_result(ScriptRun(status=3), dynamic=False).ok
    dyn = misc_result(ScriptRun(status=7), dynamic=True)
    assert dyn.ok and dyn.weight == 5
    assert misc_result(ScriptRun(status=2), dynamic=True).weight == 0
    assert not misc_result(ScriptRun(status=1), dynamic=True).ok
    assert misc_result(ScriptRun(status=0), dynamic=True).weight is None  # keeps the last
    assert not misc_result(ScriptRun(timed_out=True), dynamic=True).ok
    assert not misc_result(ScriptRun(signal=9), dynamic=True).ok


# ----- notify hooks -------------------------------------------------------------


def cmd(path: str) -> Command:
    return Command((path,), False, None, None)


def test_state_hook_first_then_generic_notify_with_keepalived_arguments() -> None:
    hooks = Hooks(master=cmd("/m"), notify=cmd("/n"))
    runs = invocations(hooks, "INSTANCE", "VI_1", "MASTER", 100)
    assert [(key, c.argv, extra) for key, c, extra in runs] == [
        ("notify_master", ("/m",), ()),
        ("notify", ("/n",), ("INSTANCE", "VI_1", "MASTER", "100")),
    ]
    assert [key for key, _, _ in invocations(hooks, "GROUP", "G", "BACKUP", 0)] == ["notify"]


def test_fifo_line_is_keepalived_s() -> None:
    assert fifo_line("INSTANCE", "VI_1", "FAULT", 0) == 'INSTANCE "VI_1" FAULT 0\n'


# ----- vrrp_sync_group ----------------------------------------------------------


def test_one_member_in_fault_faults_the_others() -> None:
    members = {
        "out": Member(State.FAULT, fault=True, why="eth0 down"),
        "in": Member(State.MASTER),
    }
    verdict = syncgroup.group_fault("G", "in", members)
    assert verdict is not None and verdict.fault and "out (eth0 down)" in verdict.why
    assert syncgroup.group_fault("G", "out", members) is None  # its own tracking says so


def test_followers_of_master_and_backup() -> None:
    members = {"a": Member(State.MASTER), "b": Member(State.BACKUP), "c": Member(State.FAULT)}
    assert syncgroup.followers("a", State.MASTER, members) == {"b": State.MASTER}
    members = {"a": Member(State.BACKUP), "b": Member(State.MASTER)}
    assert syncgroup.followers("a", State.BACKUP, members) == {"b": State.BACKUP}
    assert syncgroup.followers("a", State.FAULT, members) == {}


def test_a_member_takes_over_only_when_the_others_lost_their_master_too() -> None:
    held = {"a": Member(State.BACKUP), "b": Member(State.BACKUP)}
    assert not syncgroup.may_take_over("a", held)
    lost = {"a": Member(State.BACKUP), "b": Member(State.BACKUP, wants_master=True)}
    assert syncgroup.may_take_over("a", lost)
    assert syncgroup.may_take_over("a", {"a": Member(State.BACKUP), "b": Member(State.MASTER)})


def test_group_state() -> None:
    assert syncgroup.group_state([State.MASTER, State.MASTER]) == State.MASTER
    assert syncgroup.group_state([State.MASTER, State.BACKUP]) is None
    assert syncgroup.group_state([State.MASTER, State.FAULT]) == State.FAULT


def router() -> VirtualRouter:
    params = RouterParams(
        version=2, vrid=51, priority=100, advert_int=1.0,
        primary_address=ipaddress.IPv4Address("10.0.0.1"),
    )  # fmt: skip
    r = VirtualRouter(params)
    r.start(0.0)
    return r


def test_a_held_back_backup_waits_then_follows_its_group() -> None:
    r = router()
    due = r.master_down_timer
    assert due is not None
    assert r.on_timer(due, may_take_over=False) == []
    assert r.state == State.BACKUP and r.wants_master and r.master_down_timer is None
    r.follow(State.MASTER, due + 1, "sync group G: MASTER")
    assert r.state == State.MASTER
    r.follow(State.BACKUP, due + 2, "sync group G: BACKUP")
    assert r.state == State.BACKUP


def test_an_unheld_backup_takes_over_at_its_timer() -> None:
    r = router()
    due = r.master_down_timer
    assert due is not None
    r.on_timer(due)
    assert r.state == State.MASTER and not r.wants_master
