"""keepalived's scripts and tracked objects to lvsagent's: vrrp_script, track_file,
track_process, the notify hooks, notify_fifo and vrrp_sync_group.

keepalived runs a script by splitting its string into words and executing the
program directly, as lvsagent does; the string goes over as written.  Whom a
script runs as is not converted: lvsagent's shipped unit runs as the user
lvsagent, which cannot switch users, so a converted ``script_user`` or ``user``
would stop the daemon at start (exit 77); each such line gets a note instead.

Tracking weights inside a sync group are set to 0 unless the group has
sync_group_tracking_weight, which is what keepalived does with them (and what
lvsagent's loader asks to see written).
"""

from __future__ import annotations

import shlex

from lvsagent.convert.common import Mapper, origin
from lvsagent.convert.output import Table, Value
from lvsagent.convert.tree import Node

__all__ = [
    "HOOKS",
    "command",
    "global_word",
    "instance_word",
    "map_groups",
    "map_tracked",
    "misc_check",
]

HOOKS = ("notify_master", "notify_backup", "notify_fault", "notify_stop", "notify")
_TRACKED = {"track_script": "track_scripts", "track_file": "track_files",
            "track_process": "track_processes"}  # fmt: skip
# Characters a POSIX shell acts on that shlex's word splitting does not: redirections,
# pipes, lists, expansions, globs.  A script with one of them was written for /bin/sh.
_SHELL_SYNTAX = frozenset("<>|&;$`*?")
_USER_NOTE = (
    "whom scripts run as is not converted: lvsagent runs them as script_user (when it runs "
    "as root; default nobody) or, under the shipped unit, as its own user lvsagent without "
    "capabilities; set script_user only if lvsagent runs as root"
)


def command(m: Mapper, node: Node, text: str) -> dict[str, Value] | None:
    """keepalived's script string as lvsagent's command keys (``script``, and ``shell``
    for shell syntax), or None (omitted, said why)."""
    if set(text) & _SHELL_SYNTAX:
        m.note(node, f"{text!r} is shell syntax: converted with shell = true (run by "
               "/bin/sh -c, as it was written for)")  # fmt: skip
        return {"script": text, "shell": True}
    try:
        words = shlex.split(text)
    except ValueError:
        m.omit(node, f"{text!r} cannot be split into words (an unclosed quote); write it "
               "as a command by hand")  # fmt: skip
        return None
    if not words or ("/" in words[0] and not words[0].startswith("/")):
        m.omit(node, f"{text!r}: lvsagent runs an absolute path or a name looked up in PATH, "
               "never one relative to a working directory; write the full path")  # fmt: skip
        return None
    return {"script": text}


def _as_value(keys: dict[str, Value]) -> Value:
    """A hook's value: the bare string, or a table when it needs a shell."""
    return keys if len(keys) > 1 else keys["script"]


def _script_line(m: Mapper, node: Node) -> dict[str, Value] | None:
    """``keyword "<command>" [user [group]]``: the command; the user gets a note."""
    if not node.args:
        m.error(node, f"needs a command after {node.word}")
        return None
    if len(node.args) > 1:
        m.note(node, _USER_NOTE)
    return command(m, node, node.args[0])


def global_word(m: Mapper, node: Node, table: Table) -> bool:
    """global_defs' script keywords; False when ``node`` is none of them."""
    word = node.word
    if word == "script_user":
        m.note(node, _USER_NOTE)
    elif word == "enable_script_security":
        m.note(node, "lvsagent never runs a script as root unless script_user = \"root\", "
               "and never through a shell unless shell = true")  # fmt: skip
    elif word in ("notify_fifo", "vrrp_notify_fifo"):
        _fifo(m, node, table)
    elif word in ("notify_fifo_script", "vrrp_notify_fifo_script"):
        m.omit(node, "lvsagent writes the FIFO but starts no reader: run yours as a service")
    else:
        return False
    return True


def _fifo(m: Mapper, node: Node, table: Table) -> None:
    if not node.args:
        m.error(node, f"needs a path after {node.word}")
        return
    if len(node.args) > 1:
        m.note(node, _USER_NOTE)
    path = node.args[0]
    if not path.startswith("/") or not path.isprintable():
        m.omit(node, f"{path!r} is not an absolute path; lvsagent needs one")
        return
    table.set("notify_fifo", path, origin(node))
    if node.word == "notify_fifo":
        m.note(node, "lvsagent's FIFO gets the VRRP instances' and groups' lines; real "
               "servers' changes are journal events (LVSAGENT_EVENT=health)")


def map_tracked(m: Mapper, root: Node) -> list[Table]:
    """Top-level vrrp_script, vrrp_track_file (track_file) and vrrp_track_process blocks."""
    tables: list[Table] = []
    for node in root.children():
        if node.word == "vrrp_script":
            table = _vrrp_script(m, node)
        elif node.word in ("vrrp_track_file", "track_file"):
            table = _track_file(m, node)
        elif node.word == "vrrp_track_process":
            table = _track_process(m, node)
        else:
            continue
        if table is not None:
            tables.append(table)
    return tables


def _named(m: Mapper, node: Node, section: str) -> Table | None:
    if not node.args:
        m.error(node, f"{node.word} needs a name")
        return None
    table = Table(section, array=True, origin=origin(node))
    table.set("name", node.args[0])
    return table


def _weight(m: Mapper, node: Node, table: Table) -> None:
    if "reverse" in node.args[1:]:
        m.omit(node, "lvsagent has no reverse weights; the weight applies as written")
    weight = m.integer(node, -254, 254)
    if weight is not None:
        table.set("weight", weight, origin(node))


def _vrrp_script(m: Mapper, node: Node) -> Table | None:
    table = _named(m, node, "vrrp_script")
    if table is None:
        return None
    for child in node.children():
        word = child.word
        if word == "script":
            keys = _script_line(m, child)
            for key, value in (keys or {}).items():
                table.set(key, value, origin(child))
        elif word in ("interval", "timeout"):
            seconds = m.timer(child, 0.0, 4294.0)
            if seconds:
                table.set(word, seconds, origin(child))
        elif word == "weight":
            _weight(m, child, table)
        elif word in ("rise", "fall"):
            count = m.integer(child, 1, 100)
            if count is not None:
                table.set(word, count, origin(child))
        elif word == "init_fail":
            table.set("init_fail", True, origin(child))
        elif word == "user":
            m.note(child, _USER_NOTE)
    if table.get("script") is None:
        m.omit(node, "has no script lvsagent can run; the script is left out, and so are "
               "the instances' references to it")  # fmt: skip
        return None
    return table


def _track_file(m: Mapper, node: Node) -> Table | None:
    table = _named(m, node, "track_file")
    if table is None:
        return None
    for child in node.children():
        if child.word == "file" and child.args:
            if child.args[0].startswith("/"):
                table.set("file", child.args[0], origin(child))
            else:
                m.omit(child, "lvsagent needs an absolute path")
        elif child.word == "weight":
            _weight(m, child, table)
        elif child.word == "init_file":
            value = child.args[0] if child.args and child.args[0] != "overwrite" else "0"
            if value.lstrip("-").isdigit() and -(2**31) <= int(value) < 2**31:
                table.set("init_file", int(value), origin(child))
            else:
                m.omit(child, f"{value!r} is not a 32-bit number")
            if "overwrite" in child.args:
                table.set("init_overwrite", True, origin(child))
        else:
            m.omit(child, f"lvsagent has no equivalent of {node.word} {child.word}")
    if table.get("file") is None:
        m.omit(node, "has no file; left out")
        return None
    return table


def _track_process(m: Mapper, node: Node) -> Table | None:
    table = _named(m, node, "track_process")
    if table is None:
        return None
    for child in node.children():
        word = child.word
        if word == "process" and child.args:
            table.set("process", child.args[0], origin(child))
            if len(child.args) > 1:
                table.set("args", list(child.args[1:]), origin(child))
        elif word == "param_match" and child.args and child.args[0] in ("partial", "initial"):
            table.set("param_match", child.args[0], origin(child))
        elif word == "full_command":
            table.set("full_command", True, origin(child))
        elif word == "weight":
            _weight(m, child, table)
        elif word in ("quorum", "quorum_max"):
            count = m.integer(child, 0, 65535)
            if count is not None:
                table.set(word, count, origin(child))
        elif word in ("fork_delay", "terminate_delay", "delay"):
            seconds = m.timer(child, 0.0, 86400.0)
            keys = ("fork_delay", "terminate_delay") if word == "delay" else (word,)
            for key in keys:
                if seconds is not None:
                    table.set(key, seconds, origin(child))
        else:
            m.omit(child, f"lvsagent has no equivalent of {node.word} {word}")
    if table.get("process") is None:
        m.omit(node, "has no process; left out")
        return None
    name = str(table.get("process"))
    if table.get("args") is None and not table.get("full_command") and len(name.encode()) > 15:
        table.set("full_command", True, "a name longer than /proc/PID/comm's 15 bytes")
        m.note(node, f"{name!r} is longer than a process name (15 bytes): lvsagent compares "
               "the command line's first word instead (full_command)")  # fmt: skip
    if table.get("args") is None:
        table.drop("param_match")
    return table


def instance_word(m: Mapper, node: Node, table: Table, defined: dict[str, set[str]]) -> bool:
    """An instance's (or a group's) track_* block or notify hook; False for other words.

    ``defined``: the names of the converted vrrp_script, track_file and track_process
    sections, by keyword; a reference to anything else is left out, said why.
    """
    if node.word in _TRACKED:
        refs: list[Value] = []
        for line in node.children():
            if line.word not in defined[node.word]:
                m.omit(line, f"{line.word} is no {node.word.replace('track', 'vrrp')} the "
                       "conversion kept; the reference is left out")  # fmt: skip
                continue
            opts = dict(zip(line.args[::2], line.args[1::2], strict=False))
            if "reverse" in line.args:
                m.omit(line, "lvsagent has no reverse weights; the weight applies as written")
            weight = opts.get("weight")
            if weight is not None and weight.lstrip("-").isdigit() and abs(int(weight)) <= 254:
                refs.append({"name": line.word, "weight": int(weight)})
            else:
                refs.append(line.word)
        if refs:
            table.set(_TRACKED[node.word], refs, origin(node, node.word))
        return True
    if node.word in HOOKS:
        keys = _script_line(m, node)
        if keys is not None:
            table.set(node.word, _as_value(keys), origin(node))
        return True
    return False


def zero_weights(table: Table, node: Node, m: Mapper, group: str) -> None:
    """keepalived ignores tracking weights in a sync group without sync_group_tracking_weight."""
    changed = False
    for key in ("track_interfaces", *_TRACKED.values()):
        refs = table.get(key)
        if not isinstance(refs, list):
            continue
        zeroed: list[Value] = []
        for ref in refs:
            name = ref["name"] if isinstance(ref, dict) else ref
            zeroed.append({"name": name, "weight": 0})
        table.set(key, zeroed, f"weight 0: in sync group {group}")
        changed = True
    if changed:
        m.note(node, f"in sync group {group} without sync_group_tracking_weight keepalived "
               "ignores tracking weights (a failure is FAULT); the conversion writes weight 0")


def map_groups(
    m: Mapper, root: Node, names: dict[str, tuple[str, Table, Node]], defined: dict[str, set[str]]
) -> list[Table]:
    """vrrp_sync_group blocks; ``names``: each converted instance by its keepalived name."""
    tables: list[Table] = []
    taken: set[str] = set()
    for node in root.children("vrrp_sync_group"):
        group = node.first("group")
        raw = [line.word for line in group.children()] if group is not None else []
        missing = [n for n in raw if n not in names]
        members = [n for n in raw if n in names and n not in taken]
        if not missing and len(raw) < 2:
            m.note(node, "a sync group of one instance changes nothing; left out")
            continue
        if missing or len(members) < len(raw):
            why = (f"{', '.join(missing)} did not convert" if missing
                   else "an instance is in one group only")  # fmt: skip
            m.omit(node, f"the group is left out: {why}; its instances change state each "
                   "on its own")  # fmt: skip
            continue
        taken.update(members)
        table = _named(m, node, "vrrp_sync_group")
        if table is None:
            continue
        table.set("instances", [names[n][0] for n in members], origin(group or node, "group"))
        weighted = False
        for child in node.children():
            word = child.word
            if word == "group":
                continue
            if word in HOOKS:
                instance_word(m, child, table, defined)
            elif word in ("sync_group_tracking_weight", "global_tracking"):
                weighted = True
                table.set("tracking_weight", True, origin(child))
            elif word in _TRACKED or word == "track_interface":
                m.omit(child, "lvsagent tracks per instance: list it in each member instance")
            elif word == "notify_priority_changes":
                m.note(child, "lvsagent logs every priority change")
            else:
                m.omit(child, f"lvsagent has no equivalent of vrrp_sync_group {word}")
        if not weighted:
            for member in members:
                _, inst_table, inst_node = names[member]
                zero_weights(inst_table, inst_node, m, str(table.get("name")))
        tables.append(table)
    return tables


def misc_check(m: Mapper, checker: Node) -> dict[str, Value] | None:
    """MISC_CHECK's misc_path, misc_timeout and misc_dynamic as ``[health.misc]``."""
    misc: dict[str, Value] = {}
    for child in checker.children():
        if child.word == "misc_path":
            misc.update(_script_line(m, child) or {})
        elif child.word == "misc_timeout":
            seconds = m.timer(child, 0.0, 4294.0)
            if seconds:
                misc["timeout"] = seconds
        elif child.word == "misc_dynamic":
            misc["dynamic"] = True
        elif child.word == "user":
            m.note(child, _USER_NOTE)
    return misc if "script" in misc else None
