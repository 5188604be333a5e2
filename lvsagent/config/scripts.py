"""Read what lvsagent runs and tracks besides VRRP: commands, hooks, scripts, files, processes.

The sections are keepalived's: ``[[vrrp_script]]``, ``[[track_file]]``,
``[[track_process]]`` and ``[[vrrp_sync_group]]``, an instance's ``notify_*``
keys and ``track_scripts`` / ``track_files`` / ``track_processes``, and a real
server's ``[health.misc]``.  The habits are loader.py's: every problem is
recorded and reading goes on; dataclasses get only what the file gives.

A command is an argv, never a line for a shell unless ``shell = true`` says so:
``"/usr/bin/killall -0 haproxy"`` is split the way a POSIX shell splits words
(quotes and backslashes), but nothing is expanded, globbed or redirected, and the
program is executed directly.  Its first word is an absolute path or a bare name
(looked up in the daemon's PATH); ``./x.sh`` would depend on a working directory
nobody chose.
"""

from __future__ import annotations

import dataclasses
import re
import shlex
from typing import Any, get_args

from lvsagent.config.fields import Checker, given, toml_type
from lvsagent.config.guard import abs_path, read_tracked
from lvsagent.config.scriptschema import (
    Command,
    Hooks,
    ParamMatch,
    SyncGroup,
    TrackFile,
    TrackProcess,
    TrackRef,
    VrrpScript,
)
from lvsagent.config.section import Section

__all__ = [
    "HOOK_KEYS",
    "MISC_KEYS",
    "SCRIPT_GLOBAL_KEYS",
    "SYNC_GROUP_KEYS",
    "TRACK_FILE_KEYS",
    "TRACK_KEYS",
    "TRACK_PROCESS_KEYS",
    "VRRP_SCRIPT_KEYS",
    "read_command",
    "read_hooks",
    "read_misc",
    "read_refs",
    "read_script_globals",
    "read_sync_groups",
    "read_track_files",
    "read_track_processes",
    "read_vrrp_scripts",
]

SCRIPT_GLOBAL_KEYS = ("script_user", "script_group", "notify_fifo", "notify_timeout")
# Instance and sync-group keys, keepalived's names; schema's Hooks fields without "notify_".
HOOK_KEYS = ("notify_master", "notify_backup", "notify_fault", "notify_stop", "notify")
TRACK_KEYS = ("track_scripts", "track_files", "track_processes")
_COMMAND_KEYS = ("script", "shell", "user", "group")
VRRP_SCRIPT_KEYS = (
    "name", *_COMMAND_KEYS, "interval", "timeout", "weight", "rise", "fall", "init_fail",
)  # fmt: skip
TRACK_FILE_KEYS = ("name", "file", "weight", "init_file", "init_overwrite")
TRACK_PROCESS_KEYS = (
    "name", "process", "args", "param_match", "full_command", "weight", "quorum", "quorum_max",
    "fork_delay", "terminate_delay",
)  # fmt: skip
SYNC_GROUP_KEYS = ("name", "instances", *HOOK_KEYS, "tracking_weight")
MISC_KEYS = (*_COMMAND_KEYS, "timeout", "dynamic")

DAY = 86400.0
COUNT_MAX = 100
TIMEOUT_MAX = 4294.0  # keepalived's timer bound, as the other checks
# A login name (useradd's default rule, plus the '$' of machine accounts), 1-32 characters.
_USER = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,30}\$?")
_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
# /proc/PID/comm holds at most 15 bytes (TASK_COMM_LEN 16 with its NUL).
COMM_MAX = 15


def read_script_globals(s: Section) -> dict[str, Any]:
    """``[global]``'s script keys as Global keyword arguments."""
    check = s.check
    return given(
        {
            "script_user": s.read("script_user", lambda k, v: _user(check, k, v)),
            "script_group": s.read("script_group", lambda k, v: _user(check, k, v)),
            "notify_fifo": s.read("notify_fifo", lambda k, v: abs_path(check, k, v)),
            "notify_timeout": s.number("notify_timeout", 0, TIMEOUT_MAX, above=True),
        }
    )


def read_command(check: Checker, key: str, value: object) -> Command | None:
    """A string, an array of words, or ``{ script = ..., shell, user, group }``."""
    if isinstance(value, dict):
        s = Section(check, key, value)
        s.unknown(_COMMAND_KEYS)
        command = _command_in(s, required=True)
        return None if s.rejected else command
    if isinstance(value, str | list):
        return _argv_command(check, key, value, shell=False, user=None, group=None)
    check.problem(key, f"expected a command (a string, an array of words or a table), "
                  f"got {toml_type(value)}")  # fmt: skip
    return None


def _command_in(s: Section, *, required: bool) -> Command | None:
    """The command keys of a table that has others too (vrrp_script, health.misc)."""
    check = s.check
    shell = s.boolean("shell")
    user = s.read("user", lambda k, v: _user(check, k, v))
    group = s.read("group", lambda k, v: _user(check, k, v))
    if "script" not in s.raw:
        if required:
            s.problem("script", "required key is missing (the command to run)")
        return None
    command = _argv_command(check, s.key("script"), s.raw["script"], bool(shell), user, group)
    if command is None:
        s.rejected.add("script")
    return command


def _argv_command(
    check: Checker, key: str, value: object, shell: bool, user: str | None, group: str | None
) -> Command | None:
    if shell:
        text = check.string(key, value)
        if text is None:
            return None
        if not text.strip() or "\0" in text:
            check.problem(key, "with shell = true, a non-empty line without NUL characters")
            return None
        return Command((text,), True, user, group)
    argv = _argv(check, key, value)
    if argv is None:
        return None
    program = argv[0]
    if "/" in program and not program.startswith("/"):
        check.problem(key, f"the program must be an absolute path or a bare name looked up "
                      f"in PATH, got {program!r}")  # fmt: skip
        return None
    return Command(argv, False, user, group)


def _argv(check: Checker, key: str, value: object) -> tuple[str, ...] | None:
    if isinstance(value, str):
        try:
            words = shlex.split(value, comments=False, posix=True)
        except ValueError as exc:  # an unclosed quote
            check.problem(key, f"cannot split {value!r} into words: {exc}")
            return None
    elif isinstance(value, list):
        words = []
        for path, element in check.array(key, value) or []:
            word = check.string(path, element)
            if word is None:
                return None
            words.append(word)
    else:
        check.problem(key, f"expected a string or an array of words, got {toml_type(value)}")
        return None
    if not words or not words[0]:
        check.problem(key, "the command is empty")
        return None
    if any("\0" in w for w in words):
        check.problem(key, "a NUL character cannot be passed to a program")
        return None
    return tuple(words)


def read_hooks(s: Section) -> Hooks | None:
    """The notify_* keys of an instance or a sync group; None when none is given."""
    found = {
        name.removeprefix("notify_"): s.read(name, lambda k, v: read_command(s.check, k, v))
        for name in HOOK_KEYS
    }
    hooks = Hooks(**given(found))
    return hooks if hooks else None


def read_refs(check: Checker, key: str, value: object) -> tuple[TrackRef, ...] | None:
    """``["chk_haproxy", { name = "chk_web", weight = -20 }]`` (weight: the object's own)."""
    found = read_tracked(check, key, value, "name", lambda k, v: _name(check, k, v), "a name", str)
    if found is None:
        return None
    return tuple(TrackRef(**given({"name": n, "weight": w})) for n, w in found)


def read_vrrp_scripts(sections: list[Section]) -> list[VrrpScript]:
    return [x for x in map(_vrrp_script, sections) if x is not None]


def read_track_files(sections: list[Section]) -> list[TrackFile]:
    return [x for x in map(_track_file, sections) if x is not None]


def read_track_processes(sections: list[Section]) -> list[TrackProcess]:
    return [x for x in map(_track_process, sections) if x is not None]


def read_sync_groups(sections: list[Section], instances: list[str]) -> list[SyncGroup]:
    """Each group's members must exist, be at least two, and be in no other group."""
    member_of: dict[str, str] = {}
    found = (_sync_group(s, instances, member_of) for s in sections)
    return [x for x in found if x is not None]


def _vrrp_script(s: Section) -> VrrpScript | None:
    s.unknown(VRRP_SCRIPT_KEYS)
    check = s.check
    name = s.read("name", lambda k, v: _name(check, k, v), required=True)
    command = _command_in(s, required=True)
    values = {
        "name": name,
        "script": command,
        "interval": s.number("interval", 0, DAY, above=True),
        "timeout": s.number("timeout", 0, TIMEOUT_MAX, above=True),
        "weight": s.integer("weight", -254, 254),
        "rise": s.integer("rise", 1, COUNT_MAX),
        "fall": s.integer("fall", 1, COUNT_MAX),
        "init_fail": s.boolean("init_fail"),
    }
    if name is None or command is None:
        return None
    script = VrrpScript(**given(values))
    # keepalived's default timeout is the interval; written out, so that
    # `check --print` shows it and loads back to the same value.
    if script.timeout is None:
        script = dataclasses.replace(script, timeout=script.interval)
    return script


def _track_file(s: Section) -> TrackFile | None:
    s.unknown(TRACK_FILE_KEYS)
    check = s.check
    name = s.read("name", lambda k, v: _name(check, k, v), required=True)
    path = s.read("file", lambda k, v: abs_path(check, k, v), required=True)
    values = {
        "name": name,
        "file": path,
        "weight": s.integer("weight", -254, 254),
        # keepalived reads the file as a 32-bit number.
        "init_file": s.integer("init_file", -(2**31), 2**31 - 1),
        "init_overwrite": s.boolean("init_overwrite"),
    }
    if values["init_overwrite"] and not s.has("init_file"):
        s.problem("init_overwrite", "only meaningful with init_file (the value to write)")
    if name is None or path is None:
        return None
    return TrackFile(**given(values))


def _track_process(s: Section) -> TrackProcess | None:
    s.unknown(TRACK_PROCESS_KEYS)
    check = s.check
    name = s.read("name", lambda k, v: _name(check, k, v), required=True)
    process = s.read("process", lambda k, v: _process(check, k, v), required=True)
    low = s.integer("quorum", 0, 65535)
    high = s.integer("quorum_max", 0, 65535)
    values: dict[str, Any] = {
        "name": name,
        "process": process,
        "args": s.read("args", lambda k, v: _words(check, k, v)),
        "param_match": s.choice("param_match", get_args(ParamMatch)),
        "full_command": s.boolean("full_command"),
        "weight": s.integer("weight", -254, 254),
        "quorum": low,
        "quorum_max": high,
        "fork_delay": s.number("fork_delay", 0, DAY),
        "terminate_delay": s.number("terminate_delay", 0, DAY),
    }
    if high is not None and high < (1 if low is None else low):
        s.problem("quorum_max", f"must be at least quorum ({1 if low is None else low})")
    if s.has("param_match") and not s.has("args"):
        s.problem("param_match", "only meaningful with args (the arguments to compare)")
    whole = values["full_command"] or values["args"] is not None
    if process is not None and not whole and len(process.encode()) > COMM_MAX:
        s.problem("process", f"{process!r} is longer than the {COMM_MAX} bytes of a process "
                  "name (/proc/PID/comm): give args or full_command = true to compare the "
                  "command line instead")  # fmt: skip
    if name is None or process is None:
        return None
    return TrackProcess(**given(values))


def _sync_group(
    s: Section, instances: list[str], member_of: dict[str, str]
) -> SyncGroup | None:
    s.unknown(SYNC_GROUP_KEYS)
    check = s.check
    name = s.read("name", lambda k, v: _name(check, k, v), required=True)
    members = s.read(
        "instances", lambda k, v: _members(check, k, v, instances, member_of), required=True
    )
    values = {
        "name": name,
        "instances": members,
        "hooks": read_hooks(s),
        "tracking_weight": s.boolean("tracking_weight"),
    }
    if name is None or members is None:
        return None
    return SyncGroup(**given(values))


def _members(
    check: Checker, key: str, value: object, instances: list[str], member_of: dict[str, str]
) -> tuple[str, ...] | None:
    elements = check.array(key, value)
    if elements is None:
        return None
    names: list[str] = []
    for path, element in elements:
        name = check.string(path, element)
        if name is None:
            return None
        if name not in instances:
            known = ", ".join(repr(n) for n in instances) or "none"
            check.problem(path, f"no vrrp_instance is named {name!r} (defined: {known})")
            return None
        if name in member_of:
            first = check.where(member_of[name])
            check.problem(path, f"{name} is already in a sync group at {first}; an instance "
                          "is in one group")  # fmt: skip
            return None
        member_of[name] = path
        names.append(name)
    if len(names) < 2:
        check.problem(key, "a sync group ties at least two instances together; "
                      "with one it changes nothing: remove it")  # fmt: skip
        return None
    return tuple(names)


def read_misc(s: Section) -> dict[str, Any]:
    """``[health.misc]`` (keepalived's MISC_CHECK: misc_path, misc_timeout, misc_dynamic)."""
    s.unknown(MISC_KEYS)
    values: dict[str, Any] = {
        "script": _command_in(s, required=False),
        "timeout": s.number("timeout", 0, TIMEOUT_MAX, above=True),
        "dynamic": s.boolean("dynamic"),
    }
    return given(values)


def _user(check: Checker, key: str, value: object) -> str | None:
    text = check.string(key, value)
    if text is not None and not _USER.fullmatch(text):
        check.problem(key, f"expected a user or group name (letters, digits, _ . -, at most "
                      f"32, not starting with a digit or '-'), got {text!r}")  # fmt: skip
        return None
    return text


def _name(check: Checker, key: str, value: object) -> str | None:
    text = check.string(key, value)
    if text is not None and not _NAME.fullmatch(text):
        check.problem(key, f"expected 1-64 characters of A-Z a-z 0-9 _ . -, got {text!r}")
        return None
    return text


def _process(check: Checker, key: str, value: object) -> str | None:
    text = check.string(key, value)
    if text is not None and (not text or "\0" in text or not text.isprintable()):
        check.problem(key, f"expected a process name or path, got {text!r}")
        return None
    return text


def _words(check: Checker, key: str, value: object) -> tuple[str, ...] | None:
    elements = check.array(key, value)
    if elements is None:
        return None
    words = [check.string(path, element) for path, element in elements]
    if any(w is None or "\0" in w for w in words):
        return None
    return tuple(w for w in words if w is not None)
