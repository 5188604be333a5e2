"""Netlink: one place for how lvsagent speaks it.

frames.py is the wire (message and attribute framing, acknowledgements; pure),
used by every hand-framed request and dump: the IPVS batches and dumps, the
VIP fast path, the metrics' IPVS counters.  pyroute.py is the pyroute2 shim for
what stays on pyroute2 (addresses and links, the sync daemon, timeouts).
"""
