"""The effective config as TOML: every key the daemon will use, defaults written out.

``lvsagent check --print`` shows this, so an operator sees what an absent key
means (a service's ``scheduler``, a check's ``interval``) without reading
schema.py.  The output is itself a valid config that loads to the same values:
a key that only applies in some setting (``v3_checksum`` with VRRPv3,
``unicast_ttl`` with unicast peers, ``preempt_delay`` with preemption) is
written only there, since ``check`` refuses it anywhere else.  A real server
without a health table of its own uses its service's, which is written out in
full at the service.

Pure: Config in, text out.  The TOML itself is written by the converter's
writer (convert/output.py), so values are escaped in one place.
"""

from __future__ import annotations

from lvsagent.config.schema import (
    Command,
    Config,
    Global,
    HealthCheck,
    Hooks,
    RealServer,
    SyncGroup,
    TrackFile,
    TrackProcess,
    TrackRef,
    VirtualServer,
    VrrpInstance,
    VrrpScript,
)
from lvsagent.convert.output import Table, Value, render

__all__ = ["command_value", "effective_toml"]


def effective_toml(config: Config, header: str) -> str:
    """The whole config as TOML, with ``header`` as its first comment line."""
    tables = [_global(config.global_, config.sync_daemons_on())]
    tables += [_script(s) for s in config.vrrp_scripts]
    tables += [_track_file(f) for f in config.track_files]
    tables += [_track_process(p) for p in config.track_processes]
    tables += [_instance(inst) for inst in config.vrrp_instances]
    tables += [_sync_group(g) for g in config.sync_groups]
    for vs in config.virtual_servers:
        tables += _service(vs)
    return render([header], tables)


def command_value(command: Command) -> Value:
    """A command as the config writes it: its words, or a table when it says more."""
    if command.shell or command.user is not None or command.group is not None:
        table: dict[str, Value] = {
            "script": command.argv[0] if command.shell else list(command.argv)
        }
        if command.shell:
            table["shell"] = True
        if command.user is not None:
            table["user"] = command.user
        if command.group is not None:
            table["group"] = command.group
        return table
    return list(command.argv)


def _command_keys(t: Table, command: Command) -> None:
    """A command in a table that has other keys too: script, and shell, user, group if set."""
    value = command_value(command)
    for key, item in value.items() if isinstance(value, dict) else [("script", value)]:
        t.set(key, item)


def _hooks(t: Table, hooks: Hooks) -> None:
    for name in ("master", "backup", "fault", "stop", "notify"):
        command = getattr(hooks, name)
        if command is not None:
            t.set("notify" if name == "notify" else f"notify_{name}", command_value(command))


def _refs(refs: tuple[TrackRef, ...]) -> list[Value]:
    return [r.name if r.weight is None else {"name": r.name, "weight": r.weight} for r in refs]


def _script(s: VrrpScript) -> Table:
    t = Table("vrrp_script", array=True)
    t.set("name", s.name)
    _command_keys(t, s.script)
    t.set("interval", s.interval)
    if s.timeout is not None:
        t.set("timeout", s.timeout)
    for key in ("weight", "rise", "fall", "init_fail"):
        t.set(key, getattr(s, key))
    return t


def _track_file(f: TrackFile) -> Table:
    t = Table("track_file", array=True)
    for key in ("name", "file", "weight"):
        t.set(key, getattr(f, key))
    if f.init_file is not None:
        t.set("init_file", f.init_file)
        t.set("init_overwrite", f.init_overwrite)
    return t


def _track_process(p: TrackProcess) -> Table:
    t = Table("track_process", array=True)
    t.set("name", p.name)
    t.set("process", p.process)
    if p.args is not None:
        t.set("args", list(p.args))
        t.set("param_match", p.param_match)
    for key in ("full_command", "weight", "quorum"):
        t.set(key, getattr(p, key))
    if p.quorum_max is not None:
        t.set("quorum_max", p.quorum_max)
    t.set("fork_delay", p.fork_delay)
    t.set("terminate_delay", p.terminate_delay)
    return t


def _sync_group(g: SyncGroup) -> Table:
    t = Table("vrrp_sync_group", array=True)
    t.set("name", g.name)
    t.set("instances", list(g.instances))
    _hooks(t, g.hooks)
    t.set("tracking_weight", g.tracking_weight)
    return t


def _global(g: Global, sync_on: bool) -> Table:
    t = Table("global")
    for key in (
        "router_id", "loop_guard", "metrics_listen", "control_socket", "foreign_services",
        "ipvs_resync_interval", "ipvs_timeout_tcp", "ipvs_timeout_tcpfin", "ipvs_timeout_udp",
        "ipvs_expire_nodest_conn",
    ):  # fmt: skip
        t.set(key, getattr(g, key))
    if g.peer_mac is not None:
        t.set("peer_mac", g.peer_mac)
    t.set("decommission_on_stop", g.decommission_on_stop)
    t.set("state_dir", g.state_dir)
    t.set("ipvs_sync_daemon", sync_on)
    if g.ipvs_sync_interface is not None:
        t.set("ipvs_sync_interface", g.ipvs_sync_interface)
    t.set("ipvs_sync_id", g.ipvs_sync_id)
    for key in ("script_user", "script_group", "notify_fifo"):
        if getattr(g, key) is not None:
            t.set(key, getattr(g, key))
    t.set("notify_timeout", g.notify_timeout)
    return t


def _instance(inst: VrrpInstance) -> Table:
    t = Table("vrrp_instance", array=True)
    for key in ("name", "interface", "vrid", "priority", "advert_int", "version"):
        t.set(key, getattr(inst, key))
    if inst.version == 3:
        t.set("v3_checksum", inst.v3_checksum)
    t.set("preempt", inst.preempt)
    if inst.preempt:
        t.set("preempt_delay", inst.preempt_delay)
    if inst.unicast_src is not None:
        t.set("unicast_src", str(inst.unicast_src))
    if inst.unicast_peers:
        t.set("unicast_peers", [str(p) for p in inst.unicast_peers])
        t.set("unicast_ttl", inst.unicast_ttl)
    t.set("check_ttl", inst.check_ttl)
    if inst.auth_pass is not None:
        t.set("auth_pass", inst.auth_pass)
    t.set("virtual_addresses", [str(a) for a in inst.virtual_addresses])
    t.set(
        "track_interfaces",
        [{"name": ti.name, "weight": ti.weight} for ti in inst.track_interfaces],
    )
    t.set(
        "track_real_servers",
        [
            {"address": f"{tr.address}:{tr.port}", "weight": tr.weight}
            for tr in inst.track_real_servers
        ],
    )
    for key in ("garp_repeat", "garp_master_delay", "garp_master_repeat", "garp_lower_prio_repeat"):
        t.set(key, getattr(inst, key))
    t.set("use_vmac", inst.use_vmac)
    if inst.use_vmac:
        t.set("vmac_interface", inst.vmac_name)
    for key in ("track_scripts", "track_files", "track_processes"):
        t.set(key, _refs(getattr(inst, key)))
    _hooks(t, inst.hooks)
    return t


def _service(vs: VirtualServer) -> list[Table]:
    t = Table("virtual_server", array=True)
    if vs.address is not None:
        t.set("address", str(vs.address))
    if vs.port is not None:
        t.set("port", vs.port)
    t.set("protocol", vs.protocol)
    if vs.fwmark is not None:
        t.set("fwmark", vs.fwmark)
    t.set("scheduler", vs.scheduler)
    t.set("scheduler_flags", list(vs.scheduler_flags))
    t.set("persistence_timeout", vs.persistence_timeout)
    t.set("persistence_netmask", str(vs.persistence_netmask))
    t.set("forwarding", vs.forwarding)
    if vs.instance is not None:
        t.set("instance", vs.instance)
    t.set("quorum", vs.quorum)
    t.set("quorum_hysteresis", vs.quorum_hysteresis)
    if vs.sorry_server is not None:
        t.set("sorry_server", f"{vs.sorry_server[0]}:{vs.sorry_server[1]}")
    tables = [t, *_health("virtual_server.health", vs.health)]
    for rs in vs.real_servers:
        tables += _real_server(rs)
    return tables


def _real_server(rs: RealServer) -> list[Table]:
    t = Table("virtual_server.real_server", array=True)
    t.set("address", str(rs.address))
    t.set("port", rs.port)
    for key in ("weight", "u_threshold", "l_threshold"):
        t.set(key, getattr(rs, key))
    if rs.forwarding is not None:
        t.set("forwarding", rs.forwarding)
    if rs.health is None:
        return [t]
    return [t, *_health("virtual_server.real_server.health", rs.health)]


def _health(name: str, h: HealthCheck) -> list[Table]:
    t = Table(name)
    for key in ("type", "interval", "retry", "delay_before_retry", "rise", "fall", "alpha"):
        t.set(key, getattr(h, key))
    t.set("on_failure", h.on_failure)
    if h.allow_tcp_check:
        t.set("allow_tcp_check", True)
    tcp = Table(f"{name}.tcp")
    tcp.set("connect_timeout", h.tcp.connect_timeout)
    if h.tcp.port is not None:
        tcp.set("port", h.tcp.port)
    http = Table(f"{name}.http")
    http.set("path", h.http.path)
    http.set("status_codes", _codes(h.http.status_codes))
    if h.http.body_contains is not None:
        http.set("body_contains", h.http.body_contains)
    if h.http.host is not None:
        http.set("host", h.http.host)
    http.set("timeout", h.http.timeout)
    if h.http.port is not None:
        http.set("port", h.http.port)
    tables = [t, tcp, http, *_more_checks(name, h)]
    if h.misc.script is not None:
        misc = Table(f"{name}.misc")
        _command_keys(misc, h.misc.script)
        if h.misc.timeout is not None:
            misc.set("timeout", h.misc.timeout)
        misc.set("dynamic", h.misc.dynamic)
        tables.append(misc)
    return tables


def _more_checks(name: str, h: HealthCheck) -> list[Table]:
    """The HTTPS, UDP and DNS checks' tables (and the protocol rule's switch)."""
    tls = Table(f"{name}.tls")
    if h.tls.server_name is not None:
        tls.set("server_name", h.tls.server_name)
    tls.set("verify", h.tls.verify)
    if h.tls.ca_file is not None:
        tls.set("ca_file", h.tls.ca_file)
    udp = Table(f"{name}.udp")
    for key in ("payload", "require_reply", "reply", "min_reply_length", "max_reply_length",
                "connect_timeout"):  # fmt: skip
        udp.set(key, getattr(h.udp, key))
    if h.udp.port is not None:
        udp.set("port", h.udp.port)
    dns = Table(f"{name}.dns")
    for key in ("type", "name", "require_answer", "timeout"):
        dns.set(key, getattr(h.dns, key))
    if h.dns.port is not None:
        dns.set("port", h.dns.port)
    return [tls, udp, dns]


def _codes(codes: tuple[int, ...]) -> list[Value]:
    """Status codes as the config writes them: runs of consecutive codes as ``"A-B"``."""
    out: list[Value] = []
    ordered = sorted(set(codes))
    start = 0
    for i, code in enumerate(ordered):
        if i + 1 < len(ordered) and ordered[i + 1] == code + 1:
            continue
        first = ordered[start]
        out.append(first if first == code else f"{first}-{code}")
        start = i + 1
    return out
