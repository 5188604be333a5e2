"""`make demo`: box A and box B from etc/ elect a master, fail over and fail back.

Until the two-box IPVS lab exists this shows the VRRP half on the host kernel:
three namespaces (a client and the seed's two boxes on one bridge), one
`lvsagent run` per box with the shipped configs, and on each box a web server
answering with the box's name on the VIP.  The client requests
http://172.16.0.30/ every 50 ms, so whoever holds the VIP answers.  All traffic
stays inside the namespaces made here, which are removed at the end.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections import Counter

from tests.netns.lab import ROOT, Daemon, Netns, namespaces, sh, start_agent

VIP = "172.16.0.30"
INTERVAL = 0.05
T0 = time.monotonic()


def say(text: str) -> None:
    print(f"[{time.monotonic() - T0:7.3f} s] {text}", flush=True)


def build(client: Netns, boxes: dict[str, Netns]) -> None:
    """A bridge in the client namespace, with each box's enp0s3 plugged into it."""
    client.run("ip", "link", "add", "br0", "type", "bridge")
    client.run("ip", "addr", "add", "172.16.0.10/24", "dev", "br0")
    client.run("ip", "link", "set", "br0", "up")
    for name, (ns, addr) in {
        "a": (boxes["a"], "172.16.0.31/24"),
        "b": (boxes["b"], "172.16.0.32/24"),
    }.items():
        tmp = f"demo{name}{id(ns) % 10000}"
        sh("ip", "link", "add", tmp, "type", "veth", "peer", "name", tmp + "p")
        sh("ip", "link", "set", tmp, "netns", ns.name, "name", "enp0s3")
        sh("ip", "link", "set", tmp + "p", "netns", client.name, "name", f"port-{name}")
        client.run("ip", "link", "set", f"port-{name}", "master", "br0", "up")
        ns.run("ip", "addr", "add", addr, "dev", "enp0s3")
        ns.run("ip", "link", "set", "enp0s3", "up")


def web_server(ns: Netns, name: str) -> subprocess.Popen[str]:
    code = (
        "import http.server as h\n"
        "class H(h.BaseHTTPRequestHandler):\n"
        "    def do_GET(self):\n"
        f"        b=b'box {name}\\n'; self.send_response(200)\n"
        "        self.send_header('Content-Length', str(len(b))); self.end_headers()\n"
        "        self.wfile.write(b)\n"
        "    def log_message(self, *a): pass\n"
        "h.ThreadingHTTPServer(('0.0.0.0', 80), H).serve_forever()\n"
    )
    return ns.popen(
        [sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def follow(agent: Daemon, label: str, stop: threading.Event) -> None:
    """Echo the agent's state changes as they happen."""
    seen = 0
    while not stop.is_set():
        while seen < len(agent.lines):
            line = agent.lines[seen]
            seen += 1
            if "->" in line or "virtual address" in line:
                say(f"box {label}: {line.split(': ', 1)[-1]}")
        time.sleep(0.05)


def main() -> int:
    etc = ROOT / "etc"
    with namespaces("client", "box-a", "box-b") as (client, a, b):
        build(client, {"a": a, "b": b})
        servers = [web_server(a, "a"), web_server(b, "b")]
        agents: dict[str, Daemon] = {}
        stop = threading.Event()
        results: list[tuple[float, str, str]] = []
        try:
            say(
                "starting lvsagent on box A (172.16.0.31, priority 100) "
                "and box B (172.16.0.32, priority 50), VIP 172.16.0.30, VRRPv2 every 1 s"
            )
            agents["a"] = start_agent(a, etc / "box-a.toml", "box-a")
            agents["b"] = start_agent(b, etc / "box-b.toml", "box-b")
            for label, agent in agents.items():
                threading.Thread(
                    target=follow, args=(agent, label.upper(), stop), daemon=True
                ).start()
            agents["a"].wait_for(r"-> MASTER", 15)
            client_proc = client.popen(
                [sys.executable, "-m", "tests.demo_client", f"http://{VIP}/", str(INTERVAL), "24"],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                cwd=str(ROOT),
            )

            def read_client() -> None:
                assert client_proc.stdout is not None
                for line in client_proc.stdout:
                    t, status, rest = line.rstrip("\n").split(" ", 2)
                    results.append((float(t), status, rest))

            reader = threading.Thread(target=read_client, daemon=True)
            reader.start()
            say("client: one new HTTP connection to the VIP every 50 ms")
            pause(3.0)
            say(f"client so far: {summary(results)}")
            say(
                "box A fails: its agent is killed (kill -9), its web server stops, "
                "its link goes down"
            )
            kill_at = time.monotonic()
            agents["a"].signal(signal.SIGKILL)
            servers[0].kill()
            a.run("ip", "link", "set", "enp0s3", "down")
            agents["b"].wait_for(r"-> MASTER", 10)
            pause(3.0)
            say(f"client so far: {summary(results)}")
            say(
                "box A comes back: link up, web server up, agent started; it clears the "
                "VIP it still had, then preempts box B"
            )
            a.run("ip", "link", "set", "enp0s3", "up")
            servers[0].wait()
            servers[0] = web_server(a, "a")
            agents["a2"] = start_agent(a, etc / "box-a.toml", "box-a")
            threading.Thread(target=follow, args=(agents["a2"], "A", stop), daemon=True).start()
            agents["a2"].wait_for(r"BACKUP -> MASTER", 15)
            client_proc.wait(30)
            reader.join(5)
        finally:
            stop.set()
            for agent in agents.values():
                agent.stop()
            for s in servers:
                s.terminate()
                s.wait()
        print_summary(results, kill_at)
    return 0


def pause(seconds: float) -> None:
    """Let the client run on while a person reads the screen."""
    time.sleep(seconds)


def summary(results: list[tuple[float, str, str]]) -> str:
    c = Counter(rest if status == "ok" else "failed" for _, status, rest in results)
    return ", ".join(f"{k}: {v}" for k, v in sorted(c.items()))


def print_summary(results: list[tuple[float, str, str]], kill_at: float) -> None:
    served = Counter(rest for _, status, rest in results if status == "ok")
    print()
    print("summary")
    print(
        f"  requests: {len(results)}, served by box A: {served.get('box a', 0)}, "
        f"by box B: {served.get('box b', 0)}, failed: {len(results) - sum(served.values())}"
    )
    failed = [t for t, status, _ in results if status != "ok" and t >= kill_at]
    if failed:
        last_ok = max(
            (t for t, st, _ in results if st == "ok" and t < min(failed)), default=kill_at
        )
        first_ok = min((t for t, st, _ in results if st == "ok" and t > max(failed)), default=None)
        if first_ok is not None:
            print(
                f"  outage when box A failed: {(first_ok - last_ok) * 1000:.0f} ms "
                f"({len(failed)} failed requests; box B's Master_Down_Interval is 3805 ms)"
            )


if __name__ == "__main__":
    sys.exit(main())
