"""Cold start against keepalived, INSIDE the kernel lab: process start to a complete table.

Run by tests/bench/coldstart.py through the lab runner; by hand:

    python -m tests.kernel.uml --timeout 1500 -- "$PWD/.venv/bin/python" \\
        -m tests.bench.coldstart_guest --reps 1

One table of SERVICES x DESTS (DR, rr, weight 1), written as an lvsagent config and as the
same keepalived.conf, with and without a TCP check on every real server.  Each run gets fresh
namespaces: ``cold`` (the director: veth0 192.0.2.1/24, the real servers 10.2.0.1-N as /32 on
lo with one process accepting on port 80 for all of them) and ``peer`` (veth1 192.0.2.2/24,
a receiver of the director's VRRP adverts).  Measured for each run:

* start: from spawning the daemon (``ip netns exec ... lvsagent run`` or ``keepalived``) to
  the kernel's table holding every service and every real server (read from
  /proc/PID/net/ip_vs every POLL s, the same reader for both daemons);
* serving: to every real server at its configured weight (a check under alpha holds a server
  at weight 0 until it passes);
* VRRP send lag (checked runs): the director is VRRPv3 owner (priority 255) at
  ADVERT_INT; the peer stamps each advert's arrival (SO_TIMESTAMPNS), and an advert's lag is
  its arrival minus when it was due: one advert interval after the previous one was due, or
  after it was sent if that was later (the router's own rule), so a late advert does not
  make the next ones look late;
* RSS: the daemon's VmRSS (keepalived: its three processes together) once serving, and again
  RSS_AFTER s later; the larger.

lvsagent runs in each loop-guard mode; keepalived (no such modes) in the same boot gives
each figure's ratio.  Prints ``bench: <name> <value> <unit> ...`` lines and plain lines per
run; asserts nothing about time.  Every namespace is made here and deleted.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import select
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tests.bench.ipvs_guest import Netns, say
from tests.netns.lab import Daemon, start_agent

SERVICES = 1000
DESTS = 10
INTERVAL = 5.0  # s between two checks of one real server
CONNECT_TIMEOUT = 2.0
ADVERT_INT = 0.1  # VRRPv3, as the steady-state lag figure
POLL = 0.2  # s between two reads of the kernel's table
RSS_AFTER = 10.0
LAG_WINDOW = 20.0  # s of adverts received from the daemon's start
START_LIMIT = 240.0
MODES = ("bypass", "fwmark", "backup_only")
CHECKED_WORDS = {"no": "unchecked", "yes": "checked", "alpha": "checked alpha"}
CHECKED_SUFFIX = {"no": "", "yes": "_checked", "alpha": "_checked_alpha"}
VRRP_PROTO = 112
SO_TIMESTAMPNS = 35


def service_address(i: int) -> str:
    return f"10.1.{i // 250}.{i % 250 + 1}"


def dest_address(j: int) -> str:
    return f"10.2.{j // 250}.{j % 250 + 1}"


# ----- configs ---------------------------------------------------------------------------


def lvsagent_config(path: Path, services: int, dests: int, checked: str, mode: str) -> Path:
    """``checked``: "no", "yes" (alpha off, keepalived's default, as `lvsagent convert`
    writes it for the same keepalived.conf) or "alpha" (no traffic before a passed check)."""
    parts = [
        f"""[global]
router_id = "cold"
loop_guard = "{mode}"
ipvs_resync_interval = 86400
state_dir = "{path.parent}/state"
control_socket = "{path.parent}/state/control.sock"

[[vrrp_instance]]
name = "VI_1"
interface = "veth0"
vrid = 51
version = 3
priority = 255
advert_int = {ADVERT_INT}
virtual_addresses = ["192.0.2.100/24"]
garp_master_delay = 0
"""
    ]
    health = (
        f'type = "tcp"\ninterval = {INTERVAL}\nalpha = {str(checked == "alpha").lower()}\n'
        f"[virtual_server.health.tcp]\nconnect_timeout = {CONNECT_TIMEOUT}\n"
        if checked != "no"
        else 'type = "none"\n'
    )
    for i in range(services):
        fwmark = f"fwmark = {i + 1}\n" if mode == "fwmark" else ""
        parts.append(
            f'\n[[virtual_server]]\naddress = "{service_address(i)}"\nport = 80\n'
            f'protocol = "tcp"\nscheduler = "rr"\nforwarding = "dr"\ninstance = "VI_1"\n'
            f"{fwmark}\n[virtual_server.health]\n{health}"
        )
        for j in range(dests):
            parts.append(
                f'\n[[virtual_server.real_server]]\naddress = "{dest_address(j)}"\n'
                "port = 80\nweight = 1\n"
            )
    path.write_text("".join(parts))
    return path


def keepalived_config(path: Path, services: int, dests: int, checked: str) -> Path:
    check = (
        f"        TCP_CHECK {{\n            connect_timeout {CONNECT_TIMEOUT:g}\n        }}\n"
        if checked != "no"
        else ""
    )
    alpha = "    alpha\n" if checked == "alpha" else ""
    parts = [
        f"""global_defs {{
    router_id cold
    vrrp_version 3
    enable_script_security
}}
vrrp_instance VI_1 {{
    state MASTER
    interface veth0
    virtual_router_id 51
    priority 255
    advert_int {ADVERT_INT}
    virtual_ipaddress {{
        192.0.2.100/24
    }}
}}
"""
    ]
    for i in range(services):
        parts.append(
            f"virtual_server {service_address(i)} 80 {{\n    delay_loop {INTERVAL:g}\n{alpha}"
            "    lb_algo rr\n    lb_kind DR\n    protocol TCP\n"
        )
        for j in range(dests):
            parts.append(
                f"    real_server {dest_address(j)} 80 {{\n        weight 1\n{check}    }}\n"
            )
        parts.append("}\n")
    path.write_text("".join(parts))
    return path


# ----- the kernel's table, as /proc shows it ----------------------------------------------


def read_table(pid: int) -> tuple[int, int, int]:
    """(services, real servers, real servers with weight > 0) in ``pid``'s namespace."""
    services = dests = weighted = 0
    try:
        with open(f"/proc/{pid}/net/ip_vs") as f:
            lines = f.read().splitlines()[3:]
    except OSError:
        return 0, 0, 0
    for line in lines:
        if line.startswith("  ->"):
            dests += 1
            if line.split()[3] != "0":
                weighted += 1
        elif line:
            services += 1
    return services, dests, weighted


def rss_kb(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


def descendants(pid: int) -> list[int]:
    """``pid`` and its children, grandchildren... (keepalived forks its VRRP and checker)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            tasks = Path(f"/proc/{p}/task").iterdir()
            for t in tasks:
                todo += [int(c) for c in (t / "children").read_text().split()]
        except OSError:
            pass
    return out


# ----- one run ------------------------------------------------------------------------------


@dataclass
class Run:
    agent: str
    mode: str
    checked: str  # "no", "yes" or "alpha" (lvsagent_config)
    start_s: float = math.nan  # every service and real server in the table
    serving_s: float = math.nan  # and every one at its weight
    rss_mb: float = math.nan
    lags: list[float] = field(default_factory=list)
    worst: list[tuple[float, float]] = field(default_factory=list)  # (lag, s after spawn)

    def line(self) -> str:
        p99 = percentile(self.lags, 0.99) * 1e3 if self.lags else math.nan
        worst = max(self.lags) * 1e3 if self.lags else math.nan
        return (
            f"{self.agent} {self.mode} {CHECKED_WORDS[self.checked]}: "
            f"table complete {self.start_s:.2f} s, serving {self.serving_s:.2f} s, "
            f"RSS {self.rss_mb:.1f} MB, advert lag p99 {p99:.2f} ms max {worst:.2f} ms "
            f"({len(self.lags)} adverts; worst at "
            + ", ".join(f"{at:.1f} s: {lag * 1e3:.0f} ms" for lag, at in self.worst)
            + ")"
        )


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


@contextmanager
def lab(dests: int) -> Iterator[tuple[Netns, Netns]]:
    cold, peer = Netns("cold"), Netns("peer")
    listener: subprocess.Popen[str] | None = None
    try:
        tmp = f"vc{os.getpid() % 10000}"
        subprocess.run(
            ["ip", "link", "add", tmp + "a", "type", "veth", "peer", "name", tmp + "b"], check=True
        )
        subprocess.run(["ip", "link", "set", tmp + "a", "netns", cold.name, "name", "veth0"],
                       check=True)  # fmt: skip
        subprocess.run(["ip", "link", "set", tmp + "b", "netns", peer.name, "name", "veth1"],
                       check=True)  # fmt: skip
        cold.run("ip", "addr", "add", "192.0.2.1/24", "dev", "veth0")
        cold.run("ip", "link", "set", "veth0", "up")
        peer.run("ip", "addr", "add", "192.0.2.2/24", "dev", "veth1")
        peer.run("ip", "link", "set", "veth1", "up")
        batch = "".join(f"address add {dest_address(j)}/32 dev lo\n" for j in range(dests))
        cold.run("ip", "-batch", "-", stdin=batch)
        listener = subprocess.Popen(
            ["ip", "netns", "exec", cold.name, sys.executable, "-m", "tests.bench.health",
             "--child", "listen"],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert listener.stdout is not None
        listener.stdout.readline()  # "ready"
        yield cold, peer
    finally:
        if listener is not None:
            listener.terminate()
            listener.wait()
            if listener.stdout is not None:
                listener.stdout.close()
        cold.delete()
        peer.delete()


def start_daemon(agent: str, ns: Netns, config: Path, workdir: Path) -> Daemon:
    if agent == "lvsagent":
        return start_agent(ns, config, "lvsagent", log_level="info")
    proc = subprocess.Popen(
        ["ip", "netns", "exec", ns.name, "keepalived", "--dont-fork", "--log-console",
         "--no-syslog", "--use-file", str(config), "--pid", str(workdir / "k.pid"),
         "--vrrp_pid", str(workdir / "k-vrrp.pid"), "--checkers_pid",
         str(workdir / "k-check.pid")],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    d = Daemon("keepalived", proc)
    d.proc.stderr = d.proc.stdout
    d.start_reader()
    return d


def one_run(
    agent: str, mode: str, checked: str, services: int, dests: int, lag_only: bool = False
) -> Run:
    """One daemon from spawn; ``lag_only`` (a host without IPVS) skips the table's figures."""
    run = Run(agent, mode, checked)
    with tempfile.TemporaryDirectory(prefix="lvsagent-cold-") as tmp, lab(dests) as (cold, peer):
        workdir = Path(tmp)
        (workdir / "state").mkdir(mode=0o755)
        if agent == "lvsagent":
            config = lvsagent_config(workdir / "cold.toml", services, dests, checked, mode)
        else:
            config = keepalived_config(workdir / "keepalived.conf", services, dests, checked)
        rx = subprocess.Popen(
            ["ip", "netns", "exec", peer.name, sys.executable, "-m",
             "tests.bench.coldstart_guest", "--child-rx", str(LAG_WINDOW)],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert rx.stdout is not None
        rx.stdout.readline()  # "ready"
        started, wall = time.perf_counter(), time.time()
        daemon = start_daemon(agent, cold, config, workdir)
        try:
            want = services * dests
            while not lag_only and time.perf_counter() - started < START_LIMIT:
                if daemon.proc.poll() is not None:
                    raise RuntimeError(f"{agent} exited {daemon.proc.returncode}: "
                                       + "\n".join(daemon.lines[-15:]))  # fmt: skip
                s, d, w = read_table(daemon.proc.pid)
                now = time.perf_counter() - started
                if math.isnan(run.start_s) and s >= services and d >= want:
                    run.start_s = now
                if s >= services and w >= want:
                    run.serving_s = now
                    break
                time.sleep(POLL)
            pids = descendants(daemon.proc.pid)
            first = rss_kb(pids)
            time.sleep(RSS_AFTER)
            run.rss_mb = max(first, rss_kb(pids)) / 1024
            out, _ = rx.communicate(timeout=LAG_WINDOW + 30)
            stamps = [float(t) for t in json.loads(out)]
            run.lags = advert_lags(stamps, ADVERT_INT)
            when = [t - wall for t in stamps[1:]]
            run.worst = sorted(zip(run.lags, when, strict=True), reverse=True)[:3]
        finally:
            if rx.poll() is None:
                rx.kill()
                rx.wait()
            code = daemon.stop(timeout=30)
            if code not in (0, -signal.SIGTERM):
                say(f"{agent} exit status {code}; last lines:\n" + "\n".join(daemon.lines[-10:]))
    say(run.line())
    return run


def advert_lags(arrivals: list[float], interval: float) -> list[float]:
    """Each advert's lateness, by the router's rule: due one interval after the previous due
    time, or at the previous send if that was later (the first advert sets the phase)."""
    lags: list[float] = []
    due = None
    for t in arrivals:
        if due is not None:
            lags.append(max(0.0, t - due))
            due = max(due + interval, t)
        else:
            due = t + interval
    return lags


# ----- the advert receiver (runs in the peer namespace) -----------------------------------


def child_rx(window: float) -> None:
    """Arrival stamps of every VRRP advert from 192.0.2.1 for ``window`` s, as JSON."""
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, VRRP_PROTO)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b"veth1")
    mreq = socket.inet_aton("224.0.0.18") + socket.inet_aton("192.0.2.2")
    s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
    s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    print("ready", flush=True)
    stamps: list[float] = []
    end = time.monotonic() + window
    while (left := end - time.monotonic()) > 0:
        r, _, _ = select.select([s], [], [], left)
        if not r:
            continue
        data, anc, _, src = s.recvmsg(2048, 64)
        if src[0] != "192.0.2.1" or len(data) < 24 or data[20 + 2] == 0:
            continue  # not the director's, or a priority-0 advert (its stop)
        for level, kind, value in anc:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                sec, nsec = struct.unpack("qq", value[:16])
                stamps.append(sec + nsec / 1e9)
    print(json.dumps(stamps), flush=True)


# ----- figures -----------------------------------------------------------------------------


def summary(values: list[float]) -> str:
    finite = [v for v in values if not math.isnan(v)]
    if not finite:
        return "nan"
    return f"{statistics.median(finite):.2f}"


def spread(values: list[float]) -> str:
    finite = [v for v in values if not math.isnan(v)]
    return f"{min(finite):.2f}-{max(finite):.2f}" if finite else "nan"


def figures(runs: list[Run], services: int, dests: int, where: str) -> list[str]:
    label = f"{services}x{dests}"
    lines: list[str] = []

    def of(agent: str, mode: str, checked: str) -> list[Run]:
        return [r for r in runs if (r.agent, r.mode, r.checked) == (agent, mode, checked)]

    for checked in ("no", "yes", "alpha"):
        base = of("keepalived", "-", checked)
        base_start = statistics.median([r.serving_s for r in base]) if base else math.nan
        name = f"cold_start{CHECKED_SUFFIX[checked]}_{label}"
        for mode in MODES:
            mine = of("lvsagent", mode, checked)
            if not mine or all(math.isnan(r.serving_s) for r in mine):
                continue
            serving = [r.serving_s for r in mine]
            complete = [r.start_s for r in mine]
            median = statistics.median(serving)
            suffix = "" if mode == "bypass" else f"_{mode}"
            lines.append(
                f"bench: {name}{suffix} {median:.2f} s ratio {median / base_start:.2f} vs "
                f"keepalived ({base_start:.2f} s, runs {spread([r.serving_s for r in base])}) "
                f"runs={spread(serving)} table_complete={summary(complete)}s "
                f"keepalived_table_complete={summary([r.start_s for r in base])}s "
                f"target=ratio<=1"
            )
        if checked == "yes":
            for mode in MODES:
                mine = of("lvsagent", mode, "yes")
                if not mine:
                    continue
                lags = [lag for r in mine for lag in r.lags]
                if not lags:  # the runs failed (said so above)
                    continue
                base_lags = [lag for r in base for lag in r.lags]
                suffix = "" if mode == "bypass" else f"_{mode}"
                kp99 = percentile(base_lags, 0.99) * 1e3 if base_lags else math.nan
                lines.append(
                    f"bench: vrrp_send_lag_p99_cold_start_checked_{services * dests}"
                    f"{'_host' if where == 'host' else ''}{suffix} "
                    f"{percentile(lags, 0.99) * 1e3:.2f} ms max={max(lags) * 1e3:.2f}ms "
                    f"adverts={len(lags)} advert_int={ADVERT_INT} window={LAG_WINDOW:g}s "
                    f"keepalived_p99={kp99:.2f}ms where={where} target=10ms"
                )
    rss = [r.rss_mb for r in runs if r.agent == "lvsagent" and r.mode == "bypass"]
    if where != "lab":
        return lines
    krss = [r.rss_mb for r in runs if r.agent == "keepalived"]
    if rss:
        lines.append(
            f"bench: rss_cold_start_{label} {max(rss):.1f} MB runs={spread(rss)} "
            f"keepalived={summary(krss)}MB target=60MB"
        )
    return lines


def plan_alpha_done(plan: list[tuple[str, str, str]], agent: str) -> bool:
    return any(a == agent and c == "alpha" for a, _, c in plan)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.bench.coldstart_guest")
    p.add_argument("--services", type=int, default=SERVICES)
    p.add_argument("--dests", type=int, default=DESTS)
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--modes", default=",".join(MODES))
    p.add_argument("--agents", default="keepalived,lvsagent")
    p.add_argument("--checked", default="no,yes,alpha")
    p.add_argument("--budget", type=float, default=1300.0)
    p.add_argument("--lag-only", action="store_true", help="no IPVS here: advert lag only")
    p.add_argument("--child-rx", type=float, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child_rx is not None:
        child_rx(args.child_rx)
        return 0
    deadline = time.monotonic() + args.budget
    # As installed: the Debian package byte-compiles the code at installation.  Without
    # this, a tree run with PYTHONDONTWRITEBYTECODE compiles every module at each start.
    subprocess.run([sys.executable, "-m", "compileall", "-q", "lvsagent"], check=True,
                   stdout=subprocess.DEVNULL)  # fmt: skip
    runs: list[Run] = []
    plan: list[tuple[str, str, str]] = []
    for _ in range(args.reps):
        for checked in args.checked.split(","):
            for agent in args.agents.split(","):
                for mode in args.modes.split(",") if agent == "lvsagent" else ["-"]:
                    # alpha's figure once, in one mode: its runs wait for every first check
                    if checked != "alpha" or (not plan_alpha_done(plan, agent) and mode in
                                              ("bypass", "-")):  # fmt: skip
                        plan.append((agent, mode, checked))
    for agent, mode, checked in plan:
        if time.monotonic() + 90 > deadline:
            say(f"bench-error: cold start: out of time before {agent} {mode} {checked}")
            break
        try:
            runs.append(one_run(agent, mode, checked, args.services, args.dests, args.lag_only))
        except Exception as exc:  # one failed run must not lose the others' figures
            say(f"bench-error: cold start {agent} {mode} checked={checked}: {exc!r}")
    for line in figures(runs, args.services, args.dests, "host" if args.lag_only else "lab"):
        say(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
