"""Every script run counted and timed for /metrics, on the daemon's registry.

``lvsagent_script_runs_total{kind, script, outcome}`` (outcome ok, failed, timeout
or error: it could not be started) and ``lvsagent_script_duration_seconds{kind,
script}``; ``kind`` is ``notify`` (a hook: ``script`` is "VI_1 notify_master") or
``track_script`` (``script`` is the vrrp_script's name).  MISC_CHECKs are real
servers' checks and are timed with them (lvsagent_realserver_check_latency_seconds).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

from lvsagent.scripts.runner import ScriptRun

__all__ = ["ScriptStats"]

# Scripts take from a few milliseconds (a shell builtin) to their timeout.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class ScriptStats:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.runs = Counter(
            "lvsagent_script_runs_total",
            "Script runs (notify hooks, track scripts) by how they ended.",
            ["kind", "script", "outcome"],
            registry=registry,
        )
        self.duration = Histogram(
            "lvsagent_script_duration_seconds",
            "Duration of script runs, to their exit or their kill at the timeout.",
            ["kind", "script"],
            buckets=BUCKETS,
            registry=registry,
        )

    def observe(self, kind: str, script: str, run: ScriptRun) -> None:
        if kind == "misc_check":
            return  # one series per real server already: the check latency histogram
        self.runs.labels(kind, script, run.outcome).inc()
        self.duration.labels(kind, script).observe(run.duration)
