"""Read the TOML config into schema.py's frozen types, or report every problem at once.

``check`` prints all problems of a file in one go, so nothing here stops at the
first one: each reader records a located Problem and moves on, and one
ConfigError carrying all of them is raised at the end.  Defaults are never
written here; a dataclass is built only from the keys the file gives, so
schema.py stays the single place where a default lives.  Rules that tie two
keys together read the other key's effective value, which for an absent key is
schema.py's default as read from the dataclass itself.

This module reads the file and ``[global]``; instances.py reads
``[[vrrp_instance]]`` and services.py ``[[virtual_server]]``.
"""

from __future__ import annotations

import os
import stat
import tomllib
from typing import Any, get_args, get_type_hints

from lvsagent.config.errors import (
    ConfigError,
    Problem,
    crash_problem,
    format_problems,
    syntax_problem,
)
from lvsagent.config.fields import Checker, given
from lvsagent.config.guard import (
    GUARD_KEYS,
    check_guard_rules,
    read_guard_globals,
)
from lvsagent.config.instances import read_instances
from lvsagent.config.locate import Locator
from lvsagent.config.references import check_reference_rules
from lvsagent.config.schema import (
    Config,
    Global,
    GuardMode,
)
from lvsagent.config.scripts import (
    SCRIPT_GLOBAL_KEYS,
    read_script_globals,
    read_sync_groups,
    read_track_files,
    read_track_processes,
    read_vrrp_scripts,
)
from lvsagent.config.section import Section
from lvsagent.config.services import read_virtual_servers

__all__ = ["ConfigError", "Problem", "format_problems", "load_config", "parse_config"]

TOP_KEYS = (
    "global", "vrrp_instance", "virtual_server", "vrrp_script", "track_file", "track_process",
    "vrrp_sync_group",
)  # fmt: skip
GLOBAL_KEYS = (
    "router_id", "loop_guard", "metrics_listen", "control_socket", "foreign_services",
    "ipvs_resync_interval", "ipvs_timeout_tcp", "ipvs_timeout_tcpfin", "ipvs_timeout_udp",
    "ipvs_expire_nodest_conn", *GUARD_KEYS, *SCRIPT_GLOBAL_KEYS,
)  # fmt: skip

DAY = 86400.0
# A host name's length (HOST_NAME_MAX); router_id names the box in logs, like keepalived's.
ROUTER_ID_MAX = 64
# The kernel refuses an IPVS timeout above INT_MAX / HZ seconds; with HZ up to 1000
# that is 2147483 s (24.8 days), the bound that holds on every kernel.
IPVS_TIMEOUT_MAX = (2**31 - 1) // 1000

# The largest config file read.  The bench's 1000 services x 10 real servers is 0.9 MB
# and parses in ~0.7 s with ~11 MB at peak; 4 MiB leaves room for ~45,000 real servers
# while bounding what one reload can cost (seconds of parsing, ~50 MB), and a file that
# never ends (/dev/zero, /proc/kcore) is refused before it fills the memory.
MAX_CONFIG_BYTES = 4 * 1024 * 1024


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and check one config file; raises ConfigError listing everything wrong with it.

    Only a regular file is read: a FIFO would block the reader until someone
    writes to it, and a device may never end.  O_NONBLOCK makes the open itself
    return at once even for a FIFO with no writer, so fstat can tell.
    """
    path = os.fspath(path)
    data = _read_file(path)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise ConfigError([Problem(path, line, "", "TOML files must be UTF-8")]) from None
    return parse_config(text, path)


def _read_file(path: str) -> bytes:
    def refuse(message: str) -> ConfigError:
        return ConfigError([Problem(path, None, "", message)])

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as error:
        raise refuse(f"cannot read: {error.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            kind = _file_kind(info.st_mode)
            raise refuse(f"not a regular file ({kind}); give the path of the TOML file itself")
        if info.st_size > MAX_CONFIG_BYTES:
            raise refuse(_too_big(info.st_size))
        with os.fdopen(fd, "rb", closefd=False) as file:
            # Bounded even if the file grew since fstat (or was /proc-like: size 0).
            data = file.read(MAX_CONFIG_BYTES + 1)
    except OSError as error:
        raise refuse(f"cannot read: {error.strerror}") from None
    finally:
        os.close(fd)
    if len(data) > MAX_CONFIG_BYTES:
        raise refuse(_too_big(len(data)))
    return data


def _file_kind(mode: int) -> str:
    kinds = (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    )
    return next((name for test, name in kinds if test(mode)), "not a file")


def _too_big(size: int) -> str:
    return (
        f"{size} bytes is larger than the {MAX_CONFIG_BYTES} bytes lvsagent reads; "
        "a config of 45,000 real servers fits"
    )


def parse_config(text: str, path: str) -> Config:
    """Check TOML text that came from ``path`` (used only to name it in problems)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError([syntax_problem(path, text, error)]) from None
    except (RecursionError, ValueError, MemoryError, OverflowError) as error:
        # tomllib's own limits: nesting that exhausts its recursion, an integer
        # longer than int() converts (4300 digits).  Located by re-parsing prefixes.
        raise ConfigError([crash_problem(path, text, error)]) from None
    check = Checker(path, Locator(text))
    root = Section(check, "", data)
    root.unknown(TOP_KEYS)
    values: dict[str, Any] = {"path": path}
    table = root.table("global")
    if table is not None:
        values["global_"] = _read_global(table)
    sections = root.tables("vrrp_instance") or []
    if not sections and not root.has("virtual_server") and not root.rejected & set(TOP_KEYS):
        # Nothing to point at: line 1, where the reader starts looking.
        check.problem(
            "vrrp_instance",
            "the file must define at least one [[vrrp_instance]] (a VRRP pair) or "
            "[[virtual_server]] (a single director)",
            1,
        )
    instances = read_instances(sections)
    if instances:
        values["vrrp_instances"] = tuple(instances)
    names = [s.raw["name"] for s in sections if isinstance(s.raw.get("name"), str)]
    guard = values["global_"].loop_guard if "global_" in values else Global().loop_guard
    servers = read_virtual_servers(root, names, len(sections), guard)
    if servers:
        values["virtual_servers"] = tuple(servers)
    _read_tracking(root, names, values)
    if check.problems:
        raise ConfigError(check.problems, check.total)
    config = Config(**values)
    check_guard_rules(check, config)
    check_reference_rules(check, config)
    if check.problems:
        raise ConfigError(check.problems, check.total)
    return config


def _read_tracking(root: Section, instances: list[str], values: dict[str, Any]) -> None:
    """The sections instances refer to by name: scripts, files, processes, sync groups."""
    for key, field, read in (
        ("vrrp_script", "vrrp_scripts", read_vrrp_scripts),
        ("track_file", "track_files", read_track_files),
        ("track_process", "track_processes", read_track_processes),
    ):
        found = read(root.tables(key) or [])
        if found:
            values[field] = tuple(found)
    groups = read_sync_groups(root.tables("vrrp_sync_group") or [], instances)
    if groups:
        values["sync_groups"] = tuple(groups)


def _options(cls: type, name: str) -> tuple[str, ...]:
    """The allowed strings of a field typed with an inline Literal in schema.py."""
    return tuple(get_args(get_type_hints(cls)[name]))


def _read_global(s: Section) -> Global:
    s.unknown(GLOBAL_KEYS)
    router_id = s.string("router_id")
    if router_id is not None and not (
        1 <= len(router_id) <= ROUTER_ID_MAX and router_id.isprintable()
    ):
        s.problem(
            "router_id",
            f"expected 1-{ROUTER_ID_MAX} printable characters (a host name is at most 64)",
        )
        router_id = None
    return Global(
        **given(
            {
                "router_id": router_id or None,
                "loop_guard": s.choice("loop_guard", get_args(GuardMode)),
                "metrics_listen": s.read("metrics_listen", s.check.listen),
                "control_socket": s.read("control_socket", s.check.socket_path),
                "foreign_services": s.choice(
                    "foreign_services", _options(Global, "foreign_services")
                ),
                "ipvs_resync_interval": s.number("ipvs_resync_interval", 1.0, DAY),
                **{
                    key: s.integer(key, 0, IPVS_TIMEOUT_MAX)
                    for key in ("ipvs_timeout_tcp", "ipvs_timeout_tcpfin", "ipvs_timeout_udp")
                },
                "ipvs_expire_nodest_conn": s.boolean("ipvs_expire_nodest_conn"),
                **read_guard_globals(s),
                **read_script_globals(s),
            }
        )
    )
