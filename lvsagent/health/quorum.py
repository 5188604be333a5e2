"""Quorum and the sorry server: when a service has too little live weight (pure).

keepalived's rule, as operators know it: a service's *live weight* is the sum
of the configured weights of its real servers whose verdict is UP (a server
not yet checked under ``alpha`` is not live).  Below ``quorum`` the service
has lost quorum.  If it has a sorry server, that server then replaces the
real servers: they are taken out of service as a failed server would be
(weight 0 or removed, per ``on_failure``) while still being checked, and come
back, with the sorry server gone, when quorum is back ("all real servers will
be brought down when the quorum is not achieved and be replaced with the
sorry server", keepalived.conf(5)).

``quorum_hysteresis`` is keepalived's ``hysteresis``, a flap damper: quorum
is lost below ``quorum - hysteresis`` and back only at ``quorum + hysteresis``.

``quorum = 0`` means no quorum rule, but a configured sorry server still
gets the traffic "when nothing is alive" (etc/lvsagent.example.toml):
that is a threshold of 1, which is keepalived's default quorum too.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from lvsagent.config.schema import RealServer, VirtualServer

__all__ = ["QuorumState", "describe", "quorum_state", "service_name"]


@dataclass(frozen=True)
class QuorumState:
    lost: bool
    live: int  # live weight now
    threshold: int  # the live weight the service needs

    def wants_sorry(self, vs: VirtualServer) -> bool:
        return self.lost and vs.sorry_server is not None


def service_name(vs: VirtualServer) -> str:
    """How log lines name a service: ``172.16.0.30:80`` as keepalived and ipvsadm say it.

    TCP is the common case and goes without a suffix; UDP and fwmark services say what they are.
    """
    if vs.fwmark is None and vs.protocol == "tcp":
        return f"{vs.address}:{vs.port}"
    return vs.label


def quorum_state(
    vs: VirtualServer, is_up: Callable[[RealServer], bool], was_lost: bool = False
) -> QuorumState | None:
    """The service's quorum now, or None when it has neither a quorum nor a sorry server.

    ``was_lost``: whether it was lost before this change (the hysteresis's memory).
    """
    quorum = vs.quorum if vs.quorum > 0 else (1 if vs.sorry_server is not None else 0)
    if quorum == 0:
        return None
    live = sum(rs.weight for rs in vs.real_servers if is_up(rs))
    threshold = quorum + vs.quorum_hysteresis if was_lost else quorum - vs.quorum_hysteresis
    return QuorumState(live < threshold, live, threshold)


def describe(vs: VirtualServer, state: QuorumState) -> str:
    """The log line for a change of ``state.lost``."""
    sorry = ""
    if vs.sorry_server is not None:
        address, port = vs.sorry_server
        verb = "added in place of the real servers" if state.lost else "removed, real servers back"
        sorry = f"; sorry server {address}:{port} {verb}"
    name = f"VS {service_name(vs)}"
    if vs.quorum > 0:
        if state.lost:
            return f"{name}: lost quorum (live weight {state.live} < {state.threshold}){sorry}"
        return f"{name}: quorum back (live weight {state.live} >= {state.threshold}){sorry}"
    if state.lost:
        return f"{name}: no live real server{sorry}"
    return f"{name}: real servers live again (live weight {state.live}){sorry}"
