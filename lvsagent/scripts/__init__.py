"""Programs lvsagent runs: notify hooks, track scripts, MISC_CHECKs.

``command`` and ``verdict`` are pure (argv, environment, privileges, keepalived's
rise/fall counter); ``runner`` starts a process and waits for it without a thread
or a shell; ``fifo``, ``hooks`` and ``checks`` are what the daemon wires to VRRP.
"""
