"""The two agents the two-box lab compares: lvsagent, and keepalived configured as in the seed.

Why both: the issue's targets are figures measured against keepalived "configured exactly as in
the seed, with a bypass script", in the same lab and the same run. So this module writes
keepalived's config (VRRP + the IPVS virtual server with TCP_CHECK real servers, notify scripts
calling a bypass script, as in the article) and lvsagent's (etc/box-a.toml / etc/box-b.toml with
lab overrides), starts either daemon in a box's namespace, and kills or stops it by PID.

The bypass script: the article's bypass_ipvs.sh adds, while BACKUP or FAULT, one nat PREROUTING
rule "-d VIP -p tcp -j REDIRECT" (so IPVS never sees what the master forwarded) and deletes it on
MASTER. The version written here does the same with iptables-nft when the kernel has xtables;
the lab kernel has none (CONFIG_NETFILTER_XTABLES is off and iptables is not installed), so in
the lab it writes the equivalent nft rule into a table of its own. Like the original it runs
asynchronously, started by keepalived's notify, and like `iptables -D` its "del" leaves the
(empty) nat chain in place. Each run appends "<time> <action> <vip> <tool> rc=<status>" to a log,
which is how the harness knows that a notify has run.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import signal
import time
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from tests.netns import lab
from tests.netns.lab import ROOT, Daemon, Named, start_agent

AgentKind = Literal["lvsagent", "keepalived"]
ETC = ROOT / "etc"
VIP = "172.16.0.30"
PORT = 80
REALS = ("172.16.0.31", "172.16.0.32")
BYPASS_TABLE = "keepalived_bypass"
# The line each daemon logs on entering a state ({state}: MASTER, BACKUP, FAULT).
STATE_LINE: dict[AgentKind, str] = {
    "lvsagent": r"VI_1 \(vrid \d+ on \S+\): \S+ -> {state}\b",
    "keepalived": r"\(VI_1\) Entering {state} STATE",
}


def wait_until(
    predicate: Callable[[], bool], timeout: float, what: str, poll: float = 0.05
) -> None:
    """Until ``predicate()`` holds: for kernel and file state, which has no event to block on.

    Checked every ``poll`` seconds, so the wait ends within ``poll`` of the change; raises
    AssertionError naming ``what`` after ``timeout``.
    """
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(poll)


# ----- lvsagent --------------------------------------------------------------------------------


def lvsagent_config_text(
    label: str,
    *,
    interface: str = "eth0",
    version: int | None = None,
    advert_int: float | None = None,
    loop_guard: str | None = None,
    health_interval: float | None = None,
    connect_timeout: float | None = None,
    control_socket: str | None = None,
    state_dir: str | None = None,
    fwmark: int | None = None,
    peer_mac: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    base: str | None = None,
) -> str:
    """etc/box-<label>.toml (or the TOML text ``base``) with the lab's changes, as TOML text.

    The one place lvsagent's lab config is made: a keyword here for each setting tests vary,
    and ``overrides`` for anything else (merged into the document: tables key by key, arrays
    of tables element by element, ``None`` deletes a key), so a new config key needs no new
    code. VRRPv3 has no authentication, so version 3 drops auth_pass. ``fwmark`` goes on
    every virtual server (the fwmark loop guard's form: address, port and mark), ``peer_mac``
    into [global] (the fwmark guard's peer; unset, it is learned).
    """
    doc: dict[str, Any] = tomllib.loads(
        base if base is not None else (ETC / f"box-{label}.toml").read_text()
    )
    for inst in doc["vrrp_instance"]:
        inst["interface"] = interface
        if version is not None:
            inst["version"] = version
            if version == 3:
                inst.pop("auth_pass", None)
        if advert_int is not None:
            inst["advert_int"] = advert_int
    if loop_guard is not None:
        doc["global"]["loop_guard"] = loop_guard
    if control_socket is not None:
        doc["global"]["control_socket"] = control_socket
    if state_dir is not None:
        doc["global"]["state_dir"] = state_dir
    if peer_mac is not None:
        doc["global"]["peer_mac"] = peer_mac
    for vs in doc["virtual_server"]:
        if health_interval is not None:
            vs.setdefault("health", {})["interval"] = health_interval
        if connect_timeout is not None:
            vs.setdefault("health", {}).setdefault("tcp", {})["connect_timeout"] = connect_timeout
        if fwmark is not None:
            vs["fwmark"] = fwmark
    if overrides:
        _merge(doc, overrides)
    return dump_toml(doc)


def _merge(into: dict[str, Any], changes: Mapping[str, Any]) -> None:
    for key, value in changes.items():
        old = into.get(key)
        if value is None:
            into.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(old, dict):
            _merge(old, value)
        elif isinstance(value, list) and isinstance(old, list) and _is_table_array(value):
            for i, item in enumerate(value):
                if i < len(old):
                    _merge(old[i], item)
                else:
                    old.append(dict(item))
        else:
            into[key] = value


def _is_table_array(value: object) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, Mapping) for v in value)


def dump_toml(doc: Mapping[str, Any]) -> str:
    """TOML text for a document of tables, arrays of tables and scalars (what configs hold)."""
    out: list[str] = []
    _emit_table([], doc, out)
    return "\n".join(out).lstrip("\n") + "\n"


def _emit_table(path: list[str], table: Mapping[str, Any], out: list[str]) -> None:
    for key, value in table.items():
        if not isinstance(value, Mapping) and not _is_table_array(value):
            out.append(f"{_toml_key(key)} = {_toml_value(value)}")
    for key, value in table.items():
        dotted = ".".join(_toml_key(k) for k in [*path, key])
        if isinstance(value, Mapping):
            out.extend(["", f"[{dotted}]"])
            _emit_table([*path, key], value, out)
        elif _is_table_array(value):
            for item in value:
                out.extend(["", f"[[{dotted}]]"])
                _emit_table([*path, key], item, out)


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key)


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        pairs = (f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items())
        return "{ " + ", ".join(pairs) + " }"
    raise TypeError(f"no TOML form for {value!r}")


# ----- keepalived ------------------------------------------------------------------------------


def bypass_script_text(log: Path) -> str:
    """bypass_ipvs.sh {add|del} VIP, as the article's notify scripts call it (see module doc)."""
    return f"""#!/bin/sh
# bypass_ipvs.sh {{add|del}} VIP -- written by tests/kernel/twobox_agents.py for the kernel lab.
# The seed's script: while BACKUP/FAULT one nat PREROUTING rule redirects TCP for the VIP to this
# box, so IPVS never re-balances what the master forwarded; MASTER deletes it. With xtables in
# the kernel it uses iptables-nft exactly as the original used iptables; the lab kernel has no
# xtables, so there it writes the same rule with nft into table ip {BYPASS_TABLE}.
action=$1
vip=$2
if command -v iptables-nft >/dev/null 2>&1 && [ -e /proc/net/ip_tables_targets ]; then
    tool=iptables-nft
    case $action in
    add) iptables-nft -t nat -C PREROUTING -d "$vip" -p tcp -j REDIRECT 2>/dev/null ||
         iptables-nft -t nat -A PREROUTING -d "$vip" -p tcp -j REDIRECT ;;
    del) while iptables-nft -t nat -D PREROUTING -d "$vip" -p tcp -j REDIRECT 2>/dev/null; do
             :
         done ;;
    *) echo "usage: $0 {{add|del}} VIP" >&2; exit 1 ;;
    esac
else
    tool=nft
    t="ip {BYPASS_TABLE}"
    case $action in
    add) nft add table $t &&
         nft add chain $t prerouting '{{ type nat hook prerouting priority dstnat; }}' &&
         {{ nft list chain $t prerouting | grep -q "ip daddr $vip ip protocol tcp" ||
           nft add rule $t prerouting ip daddr "$vip" ip protocol tcp counter redirect; }} ;;
    del) if nft list table $t >/dev/null 2>&1; then
             nft flush chain $t prerouting
         fi ;;
    *) echo "usage: $0 {{add|del}} VIP" >&2; exit 1 ;;
    esac
fi
rc=$?
echo "$(date +%s.%N) $action $vip $tool rc=$rc" >>{log}
exit $rc
"""


def keepalived_conf_text(
    label: str,
    *,
    interface: str,
    script: Path,
    version: int = 2,
    advert_int: float = 1.0,
    delay_loop: float = 30,
) -> str:
    """The article's keepalived.conf for box ``label`` ("a": MASTER 100, "b": BACKUP 50).

    As in the article: same router_id on both boxes, PASS auth (v2 only: v3 has none), the VIP
    as /24, notify_master "del" and notify_backup/notify_fault "add" of the bypass, and a DR rr
    virtual server whose two real servers (both boxes) have a TCP_CHECK every delay_loop.
    """
    state, priority = ("MASTER", 100) if label == "a" else ("BACKUP", 50)
    auth = (
        "    authentication {\n        auth_type PASS\n        auth_pass 1111\n    }\n"
        if version == 2
        else ""
    )
    reals = "".join(
        f"    real_server {rs} {PORT} {{\n"
        "        TCP_CHECK {\n            connect_timeout 3\n        }\n    }\n"
        for rs in REALS
    )
    return f"""global_defs {{
    router_id LVS_DEVEL
    vrrp_version {version}
}}
vrrp_instance VI_1 {{
    state {state}
    interface {interface}
    virtual_router_id 51
    priority {priority}
    advert_int {advert_int:g}
{auth}    virtual_ipaddress {{
        {VIP}/24
    }}
    notify_master "{script} del {VIP}"
    notify_backup "{script} add {VIP}"
    notify_fault "{script} add {VIP}"
}}
virtual_server {VIP} {PORT} {{
    delay_loop {delay_loop:g}
    lb_algo rr
    lb_kind DR
    persistence_timeout 0
    protocol TCP
{reals}}}
"""


def start_keepalived(ns: Named, config: Path, workdir: Path, name: str) -> tuple[Daemon, Path]:
    """keepalived with VRRP and the IPVS checker; the daemon and the checker's pid file."""
    daemon = lab.start_keepalived(ns, config, workdir, name, checker=True)
    return daemon, workdir / f"{name}-check.pid"


# ----- either agent ----------------------------------------------------------------------------


@dataclass
class Agent:
    """A running agent on one box: its log, its state changes, and the ways to end it."""

    kind: AgentKind
    box: str
    daemon: Daemon
    # keepalived's children (VRRP, checker): a hard kill must reach each of them.
    child_pidfiles: tuple[Path, ...] = ()

    @property
    def pid(self) -> int:
        return self.daemon.proc.pid

    def mark(self) -> int:
        return self.daemon.mark()

    def wait_state(self, state: str, timeout: float, after: int = 0) -> float:
        """Wait for the log line of entering ``state``; returns the time it was seen."""
        self.daemon.wait_for(STATE_LINE[self.kind].format(state=state), timeout, after=after)
        return time.time()

    def wait_children(self, timeout: float) -> None:
        """keepalived: until both children have written their pid files (a kill can reach them)."""
        for path in self.child_pidfiles:
            wait_until(functools.partial(self._started_or_gone, path), timeout, f"a pid in {path}")
            if _pid_in(path) is None:
                log = "\n".join(self.daemon.lines[-30:])
                raise AssertionError(f"{self.daemon.name} exited:\n{log}")

    def _started_or_gone(self, pidfile: Path) -> bool:
        return _pid_in(pidfile) is not None or self.daemon.proc.poll() is not None

    def kill9(self) -> float:
        """SIGKILL every process of the agent so that none can say goodbye; returns the time.

        keepalived's children outlive a killed parent and then stop cleanly (priority 0), so
        the parent is stopped first, each child is killed, then the parent.
        """
        children = [pid for path in self.child_pidfiles if (pid := _pid_in(path))]
        when = time.time()
        if children:
            self.daemon.signal(signal.SIGSTOP)
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)
        self.daemon.signal(signal.SIGKILL)
        return when

    def sigterm(self) -> float:
        """A clean stop (maintenance): SIGTERM to the main process; returns the time."""
        when = time.time()
        self.daemon.signal(signal.SIGTERM)
        return when

    def stop(self) -> int:
        """SIGTERM (SIGKILL after 15 s) and reap; safe after kill9() or sigterm()."""
        return self.daemon.stop()


def _pid_in(path: Path) -> int | None:
    try:
        text = path.read_text().split()
    except OSError:
        return None
    return int(text[0]) if text and text[0].isdigit() else None


def start_lvsagent_on(ns: Named, label: str, tmp: Path, **config: Any) -> Agent:
    """Write box ``label``'s config (lvsagent_config_text keywords) and run ``lvsagent run``."""
    name = f"lvsagent-{label}"
    config.setdefault("control_socket", str(tmp / f"{name}.sock"))
    # The boxes share one file system: each keeps its saved sysctls apart.
    config.setdefault("state_dir", str(tmp / f"{name}-state"))
    path = tmp / f"{name}.toml"
    path.write_text(lvsagent_config_text(label, **config))
    return Agent("lvsagent", f"box{label}", start_agent(ns, path, name, log_level="info"))


def start_keepalived_on(
    ns: Named, label: str, tmp: Path, *, interface: str, version: int = 2,
    advert_int: float = 1.0, delay_loop: float = 30,
) -> Agent:  # fmt: skip
    """Write the seed's keepalived.conf and bypass script for box ``label``, start keepalived."""
    name = f"keepalived-{label}"
    script = tmp / f"bypass_ipvs-{label}.sh"
    script.write_text(bypass_script_text(bypass_log(tmp, label)))
    script.chmod(0o755)
    conf = tmp / f"{name}.conf"
    conf.write_text(
        keepalived_conf_text(
            label,
            interface=interface,
            script=script,
            version=version,
            advert_int=advert_int,
            delay_loop=delay_loop,
        )
    )
    daemon, check_pid = start_keepalived(ns, conf, tmp, name)
    assert daemon.child_pidfile is not None
    agent = Agent("keepalived", f"box{label}", daemon, (daemon.child_pidfile, check_pid))
    agent.wait_children(30.0)
    return agent


def bypass_log(tmp: Path, label: str) -> Path:
    """Where box ``label``'s bypass script logs each run."""
    return tmp / f"bypass-{label}.log"


def bypass_runs(tmp: Path, label: str) -> list[tuple[float, str, str]]:
    """(time, action, "rc=N") of each bypass script run on box ``label`` so far."""
    try:
        lines = bypass_log(tmp, label).read_text().splitlines()
    except FileNotFoundError:
        return []
    runs = []
    for line in lines:
        stamp, action, _vip, _tool, rc = line.split()
        runs.append((float(stamp), action, rc))
    return runs
