"""keepalived keywords lvsagent has no key for: what each means for the conversion.

Each entry is (kind, message): ``omitted`` when keepalived does something
lvsagent will not (the message says what to do instead), ``note`` when nothing
is lost (keepalived would not act on it either, or lvsagent does the job its own
way).  A known keyword of a converted block that is in no table and has no
mapping is reported as omitted with a generic message, never dropped silently.
"""

from __future__ import annotations

from typing import Final

from lvsagent.convert.findings import Kind

__all__ = ["GLOBAL", "INSTANCE", "MAIL", "REAL_SERVER", "SCRIPTS", "SERVICE", "TOP"]

Advice = dict[str, tuple[Kind, str]]

SCRIPTS: Final = (
    "lvsagent runs no script on this event (it runs notify_master/backup/fault/stop and "
    "notify on VRRP state changes); the change is a journal event and a metric"
)
MAIL: Final = (
    "lvsagent sends no e-mail: every state change is a journal event and a metric, and "
    "etc/prometheus-lvsagent-rules.yml alerts on them"
)
LOWER_PRIO_GARP: Final = (
    "lvsagent answers a lower-priority master with one burst of garp_lower_prio_repeat "
    "gratuitous ARPs (at most one burst per advert interval) and no delayed second burst"
)

TOP: Advice = {
    "static_ipaddress": ("omitted", "static addresses are not VRRP's: configure them with "
                         "the system's network configuration"),
    "static_routes": ("omitted", "configure static routes with the system's network "
                      "configuration"),
    "static_rules": ("omitted", "configure static rules with the system's network "
                     "configuration"),
    "virtual_server_group": ("omitted", "lvsagent has no virtual server groups: write one "
                             "virtual_server per address and port"),
}  # fmt: skip

GLOBAL: Advice = {
    "notification_email": ("note", MAIL),
    "notification_email_from": ("note", MAIL),
    "smtp_server": ("note", MAIL),
    "smtp_connect_timeout": ("note", MAIL),
    "smtp_helo_name": ("note", MAIL),
    "smtp_alert": ("note", MAIL),
    "smtp_alert_vrrp": ("note", MAIL),
    "smtp_alert_checker": ("note", MAIL),
    "no_email_faults": ("note", MAIL),
    "no_checker_emails": ("note", MAIL),
    "vrrp_skip_check_adv_addr": ("note", "lvsagent never compares an advert's address "
                                 "list with its own, as with this option"),
    "vrrp_strict": ("omitted", "lvsagent keeps no strict mode: it adds no firewall rules "
                    "for the VIPs and accepts authentication; drop it, or firewall the "
                    "VIPs yourself"),
    "vrrp_iptables": ("omitted", "lvsagent adds no iptables rules for the VIPs"),
    "nftables": ("omitted", "lvsagent adds no nftables rules for the VIPs (its own table "
                 "is the loop guard)"),
    "vrrp_mcast_group4": ("omitted", "lvsagent always sends to 224.0.0.18; use unicast_peers "
                          "to send elsewhere"),
    "vrrp_garp_lower_prio_delay": ("omitted", LOWER_PRIO_GARP),
    "vrrp_garp_master_refresh": ("omitted", "lvsagent sends no periodic gratuitous ARP"),
    "vrrp_garp_master_refresh_repeat": ("omitted", "lvsagent sends no periodic gratuitous ARP"),
    "enable_snmp_vrrp": ("omitted", "lvsagent has no SNMP; scrape /metrics instead"),
    "enable_snmp_checker": ("omitted", "lvsagent has no SNMP; scrape /metrics instead"),
    "enable_snmp_rfc": ("omitted", "lvsagent has no SNMP; scrape /metrics instead"),
    "enable_snmp_rfcv2": ("omitted", "lvsagent has no SNMP; scrape /metrics instead"),
    "enable_snmp_rfcv3": ("omitted", "lvsagent has no SNMP; scrape /metrics instead"),
    "enable_snmp_keepalived": ("omitted", "lvsagent has no SNMP; scrape /metrics instead"),
    "enable_traps": ("omitted", "lvsagent has no SNMP; alert from /metrics instead"),
    "lvs_notify_fifo": ("omitted", "lvsagent writes no FIFO line for real servers: their "
                        "changes are journal events (LVSAGENT_EVENT=health)"),
    "lvs_flush": ("omitted", "lvsagent never flushes IPVS; foreign_services = \"remove\" "
                  "removes the services its config does not name"),
    "lvs_flush_on_stop": ("omitted", "decommission_on_stop = true removes lvsagent's own "
                          "services on stop"),
}  # fmt: skip
# Tuning of keepalived's own processes: lvsagent is one process with its own defaults.
for _word in (
    "vrrp_priority", "checker_priority", "bfd_priority", "vrrp_no_swap", "checker_no_swap",
    "bfd_no_swap", "vrrp_rt_priority", "checker_rt_priority", "bfd_rt_priority",
    "vrrp_rlimit_rtime", "checker_rlimit_rtime", "bfd_rlimit_rtime", "vrrp_rlimit_rttime",
    "checker_rlimit_rttime", "bfd_rlimit_rttime", "vrrp_cpu_affinity", "checker_cpu_affinity",
    "bfd_cpu_affinity", "process_name", "process_names", "vrrp_process_name",
    "checker_process_name", "bfd_process_name", "lvs_process_name", "umask", "dynamic_interfaces",
    "vrrp_netlink_cmd_rcv_bufs", "vrrp_netlink_cmd_rcv_bufs_force",
    "vrrp_netlink_monitor_rcv_bufs", "vrrp_netlink_monitor_rcv_bufs_force",
    "lvs_netlink_cmd_rcv_bufs", "lvs_netlink_cmd_rcv_bufs_force", "lvs_netlink_monitor_rcv_bufs",
    "lvs_netlink_monitor_rcv_bufs_force", "process_monitor_rcv_bufs",
    "process_monitor_rcv_bufs_force", "vrrp_rx_bufs_policy", "vrrp_rx_bufs_multiplier",
    "checker_log_all_failures", "log_unknown_vrids", "max_auto_priority",
    "min_auto_priority_delay", "random_seed", "use_pid_dir", "child_wait_time",
):  # fmt: skip
    GLOBAL[_word] = ("note", "tunes keepalived's own processes; lvsagent needs no equivalent")

INSTANCE: Advice = {
    "state": ("note", "lvsagent starts every instance as BACKUP and lets the election "
              "decide, as keepalived does for any priority below 255"),
    "debug": ("note", "keepalived does nothing with debug"),
    "accept": ("note", "lvsagent always accepts traffic to the VIPs (they are local "
               "addresses), as accept asks"),
    "smtp_alert": ("note", MAIL),
    "notify_priority_changes": ("note", "lvsagent logs every priority change "
                                "(LVSAGENT_EVENT=vrrp_priority)"),
    "skip_check_adv_addr": ("omitted", "lvsagent always drops a VRRPv2 advert whose address "
                            "list differs from its own (RFC 3768 7.1, keepalived's default); "
                            "make virtual_addresses the same on both boxes"),
    "kernel_rx_buf_size": ("note", "tunes keepalived's socket; lvsagent needs no equivalent"),
    "linkbeat_use_polling": ("note", "lvsagent follows the interface through netlink"),
    "notify_deleted": ("omitted", SCRIPTS),
    "notify_master_rx_lower_pri": ("omitted", SCRIPTS),
    "track_bfd": ("omitted", "lvsagent has no BFD; track_interfaces or track_real_servers "
                  "may do"),
    "virtual_ipaddress_excluded": ("omitted", "lvsagent has no excluded addresses: list them "
                                   "in virtual_addresses (they are then also in the "
                                   "adverts, which the peer only counts)"),
    "virtual_routes": ("omitted", "lvsagent adds no routes on MASTER"),
    "virtual_rules": ("omitted", "lvsagent adds no routing rules on MASTER"),
    "vmac_xmit_base": ("omitted", "lvsagent sends adverts from the VMAC interface, not its "
                       "parent"),
    "use_vmac_addr": ("omitted", "lvsagent's VMAC is always 00:00:5e:00:01:VRID"),
    "use_ipvlan": ("omitted", "lvsagent has no ipvlan interfaces"),
    "vrf": ("omitted", "lvsagent does not run in a VRF"),
    "dont_track_primary": ("omitted", "lvsagent goes to FAULT when its interface is down; "
                           "it has no switch to ignore that"),
    "no_accept": ("omitted", "lvsagent always accepts traffic to the VIPs"),
    "strict_mode": ("omitted", "lvsagent has no strict mode"),
    "mcast_dst_ip": ("omitted", "lvsagent always sends to 224.0.0.18; use unicast_peers to "
                     "send elsewhere"),
    "garp_master_refresh": ("omitted", "lvsagent sends no periodic gratuitous ARP"),
    "garp_master_refresh_repeat": ("omitted", "lvsagent sends no periodic gratuitous ARP"),
    "native_ipv6": ("omitted", "lvsagent speaks VRRP over IPv4 only"),
    "unicast_fault_no_peer": ("omitted", "lvsagent requires its peers to be listed anyway"),
    "down_timer_adverts": ("omitted", "lvsagent keeps RFC 5798's master down interval "
                           "(3 adverts plus skew)"),
    "garp_lower_prio_delay": ("omitted", LOWER_PRIO_GARP),
    "lower_prio_no_advert": ("omitted", "lvsagent answers a lower-priority advert at once, "
                             "as RFC 9568 asks"),
}  # fmt: skip

SERVICE: Advice = {
    "smtp_alert": ("note", MAIL),
    "snmp_name": ("note", "lvsagent has no SNMP; its metrics name the service by address"),
    "hashed": ("note", "IPVS sets the hashed flag itself"),
    "quorum_up": ("omitted", SCRIPTS),
    "quorum_down": ("omitted", SCRIPTS),
    "ha_suspend": ("omitted", "lvsagent checks real servers in every VRRP state"),
    "omega": ("omitted", "lvsagent runs no quorum scripts on exit"),
    "ops": ("omitted", "lvsagent has no one-packet scheduling"),
    "persistence_engine": ("omitted", "lvsagent has no persistence engines (SIP)"),
    "warmup": ("note", "lvsagent always spreads first checks at random over the first "
               "interval"),
    "sorry_server_inhibit": ("omitted", "lvsagent removes the sorry server when quorum is "
                             "back"),
}  # fmt: skip

REAL_SERVER: Advice = {
    "notify_up": ("omitted", SCRIPTS + "; health changes are LVSAGENT_EVENT=health"),
    "notify_down": ("omitted", SCRIPTS + "; health changes are LVSAGENT_EVENT=health"),
    "smtp_alert": ("note", MAIL),
    "snmp_name": ("note", "lvsagent has no SNMP"),
    "warmup": SERVICE["warmup"],
}
