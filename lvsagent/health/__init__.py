"""Health checks of the real servers: verdicts that drive IPVS weights and VRRP tracking.

tracker (rise/fall, retry, alpha; pure), quorum (sorry server; pure), track
(VRRP tracking of real servers; pure), checks (TCP and HTTP on asyncio) and
monitor (scheduling and state: what the daemon holds).
"""
