"""How operators see lvsagent: journal, sd_notify, Prometheus, the control socket.

Adapters and pure formatters only; the daemon decides when to log, notify and
publish.  ``snapshot`` is the one value status and metrics are built from.
"""
