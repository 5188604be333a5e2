"""Health checks of the real servers: verdicts that drive IPVS weights and VRRP tracking.

tracker (rise/fall, retry, alpha, a silent box's re-check, and what IPVS does with a
verdict; pure), quorum (sorry server; pure), track (VRRP tracking of real servers; pure),
checks (TCP and HTTP on asyncio), entry (a checked server and its log lines) and monitor
(scheduling and state: what the daemon holds).
"""
