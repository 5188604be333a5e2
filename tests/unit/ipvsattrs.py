"""The reference for the hand-written IPVS encoder: pyroute2 attribute lists for a model value,
as the adapter sent them through pyroute2 before batch.py (unit golden tests and the lab's).
"""

from __future__ import annotations

import socket

from lvsagent.ipvs import codec, genl
from lvsagent.ipvs.model import FWD_METHOD, IPPROTO, Dest, DestKey, Service, ServiceKey


def service_key_attrs(key: ServiceKey) -> genl.Attrs:
    if key.fwmark:
        return [("IPVS_SVC_ATTR_AF", socket.AF_INET), ("IPVS_SVC_ATTR_FWMARK", key.fwmark)]
    return [
        ("IPVS_SVC_ATTR_AF", socket.AF_INET),
        ("IPVS_SVC_ATTR_PROTOCOL", IPPROTO[key.protocol]),
        ("IPVS_SVC_ATTR_ADDR", str(key.address)),
        ("IPVS_SVC_ATTR_PORT", key.port),
    ]


def service_attrs(service: Service) -> genl.Attrs:
    return [
        *service_key_attrs(service.key),
        ("IPVS_SVC_ATTR_SCHED_NAME", service.scheduler),
        ("IPVS_SVC_ATTR_FLAGS", {"flags": codec.flag_bits(service), "mask": 0xFFFFFFFF}),
        ("IPVS_SVC_ATTR_TIMEOUT", service.persistence_timeout),
        ("IPVS_SVC_ATTR_NETMASK", str(service.persistence_netmask)),
    ]


def dest_key_attrs(key: DestKey) -> genl.Attrs:
    return [
        ("IPVS_DEST_ATTR_ADDR_FAMILY", socket.AF_INET),
        ("IPVS_DEST_ATTR_ADDR", str(key.address)),
        ("IPVS_DEST_ATTR_PORT", key.port),
    ]


def dest_attrs(dest: Dest) -> genl.Attrs:
    return [
        *dest_key_attrs(dest.key),
        ("IPVS_DEST_ATTR_FWD_METHOD", FWD_METHOD[dest.forwarding]),
        ("IPVS_DEST_ATTR_WEIGHT", dest.weight),
        ("IPVS_DEST_ATTR_U_THRESH", dest.u_threshold),
        ("IPVS_DEST_ATTR_L_THRESH", dest.l_threshold),
        ("IPVS_DEST_ATTR_TUN_TYPE", 0),
        ("IPVS_DEST_ATTR_TUN_PORT", 0),
        ("IPVS_DEST_ATTR_TUN_FLAGS", 0),
    ]
