"""What keepalived 2.2.7 knows, block by block, and how its blocks nest.

keepalived reports a word it does not know in a block ("Unknown keyword") and
goes on without it: ``lb-kind DR`` left a service in NAT.  The converter must
tell such a word from a real one, so this table lists, for every block whose
lines are keywords, every keyword Debian's keepalived 2.2.7 accepts there.  It
was read from the program itself (``keepalived -t`` on a generated file per
block with every word of its binary and man page), not from the man page alone,
which leaves out deprecated words that still work.  Blocks not listed here
(value blocks such as ``virtual_ipaddress``, and blocks the converter never
reads inside, such as ``bfd_instance``) are not checked word by word.
"""

from __future__ import annotations

__all__ = [
    "BLOCK_CONTEXT",
    "CHECKERS",
    "INCLUDES",
    "KNOWN",
    "LEGACY_IGNORED",
    "OPAQUE_BLOCKS",
    "VALUE_BLOCKS",
]

# The include directive and its variants (which only add checks keepalived may refuse on).
INCLUDES = frozenset({"include", "includea", "includeb", "includem", "includer", "includew"})

_WORDS: dict[str, str] = {
    "top": """
    SSL bfd_instance child_wait_time garp_group global_defs instance
    interface_up_down_delays linkbeat_interfaces linkbeat_use_polling namespace_with_ipsets
    net_namespace net_namespace_ipvs static_ipaddress static_routes static_rules track_file
    track_group use_pid_dir virtual_server virtual_server_group vrrp_instance vrrp_script
    vrrp_sync_group vrrp_track_file vrrp_track_process
    """,
    "global_defs": """
    bfd_cpu_affinity bfd_no_swap bfd_priority bfd_process_name bfd_rlimit_rtime
    bfd_rlimit_rttime bfd_rt_priority checker_cpu_affinity checker_log_all_failures
    checker_no_swap checker_priority checker_process_name checker_rlimit_rtime
    checker_rlimit_rttime checker_rt_priority config_save_dir data_use_instance
    dbus_service_name default_interface disable_local_igmp dynamic_interfaces enable_dbus
    enable_script_security enable_snmp_checker enable_snmp_keepalived enable_snmp_rfc
    enable_snmp_rfcv2 enable_snmp_rfcv3 enable_snmp_vrrp enable_traps
    fifo_write_vrrp_states_on_reload include_check log_unknown_vrids lvs_flush
    lvs_flush_on_stop lvs_flush_onstop lvs_netlink_cmd_rcv_bufs
    lvs_netlink_cmd_rcv_bufs_force lvs_netlink_monitor_rcv_bufs
    lvs_netlink_monitor_rcv_bufs_force lvs_notify_fifo lvs_notify_fifo_script
    lvs_process_name lvs_sync_daemon lvs_timeouts max_auto_priority min_auto_priority_delay
    nftables nftables_counters nftables_ifindex nftables_ipvs nftables_ipvs_priority
    nftables_ipvs_start_fwmark nftables_priority no_checker_emails no_email_faults
    notification_email notification_email_from notify_fifo notify_fifo_script
    process_monitor_rcv_bufs process_monitor_rcv_bufs_force process_name process_names
    random_seed reload_check_config reload_file reload_repeat reload_time_file router_id
    rs_init_notifies script_user shutdown_script shutdown_script_timeout smtp_alert
    smtp_alert_checker smtp_alert_vrrp smtp_connect_timeout smtp_helo_name smtp_server
    snmp_socket startup_script startup_script_timeout tmp_config_directory umask
    vmac_addr_prefix vmac_prefix vrrp_check_unicast_src vrrp_cpu_affinity
    vrrp_down_timer_adverts vrrp_garp_extra_if vrrp_garp_interval vrrp_garp_lower_prio_delay
    vrrp_garp_lower_prio_repeat vrrp_garp_master_delay vrrp_garp_master_refresh
    vrrp_garp_master_refresh_repeat vrrp_garp_master_repeat vrrp_gna_interval
    vrrp_higher_prio_send_advert vrrp_iptables vrrp_lower_prio_no_advert vrrp_mcast_group4
    vrrp_mcast_group6 vrrp_min_garp vrrp_netlink_cmd_rcv_bufs
    vrrp_netlink_cmd_rcv_bufs_force vrrp_netlink_monitor_rcv_bufs
    vrrp_netlink_monitor_rcv_bufs_force vrrp_no_swap vrrp_notify_fifo
    vrrp_notify_fifo_script vrrp_notify_priority_changes vrrp_priority vrrp_process_name
    vrrp_rlimit_rtime vrrp_rlimit_rttime vrrp_rt_priority vrrp_rx_bufs_multiplier
    vrrp_rx_bufs_policy vrrp_skip_check_adv_addr vrrp_startup_delay vrrp_strict vrrp_version
    vrrp_vmac_garp_intvl
    """,
    "vrrp_instance": """
    accept advert_int authentication check_unicast_src debug dont_track_primary
    down_timer_adverts garp_extra_if garp_lower_prio_delay garp_lower_prio_repeat
    garp_master_delay garp_master_refresh garp_master_refresh_repeat garp_master_repeat
    higher_prio_send_advert interface kernel_rx_buf_size linkbeat_use_polling
    lower_prio_no_advert lvs_sync_daemon_interface mcast_dst_ip mcast_src_ip native_ipv6
    no_accept nopreempt notify notify_backup notify_deleted notify_fault notify_master
    notify_master_rx_lower_pri notify_priority_changes notify_stop old_unicast_checksum
    preempt preempt_delay priority promote_secondaries skip_check_adv_addr smtp_alert state
    strict_mode track_bfd track_file track_interface track_process track_script track_src_ip
    unicast_fault_no_peer unicast_peer unicast_src_ip unicast_ttl use_ipvlan use_vmac
    use_vmac_addr version virtual_ipaddress virtual_ipaddress_excluded virtual_router_id
    virtual_routes virtual_rules vmac_garp_intvl vmac_xmit_base vrf
    """,
    "authentication": """
    auth_pass auth_type
    """,
    "vrrp_sync_group": """
    global_tracking group notify notify_backup notify_fault notify_master
    notify_priority_changes notify_stop smtp_alert sync_group_tracking_weight track_bfd
    track_file track_interface track_process track_script
    """,
    "vrrp_script": """
    fall init_fail interval rise script timeout user weight
    """,
    "virtual_server": """
    alpha connect_timeout delay_before_retry delay_loop flag-1 flag-2 flag-3 ha_suspend
    hashed hysteresis inhibit_on_failure ip_family lb_algo lb_kind lvs_method lvs_sched mh-
    fallback mh-port omega ops persistence_engine persistence_granularity
    persistence_timeout protocol quorum quorum_down quorum_up real_server retry sh-fallback
    sh-port smtp_alert snmp_name sorry_server sorry_server_inhibit sorry_server_lvs_method
    virtualhost warmup weight
    """,
    "real_server": """
    BFD_CHECK DNS_CHECK FILE_CHECK HTTP_GET MISC_CHECK PING_CHECK SMTP_CHECK SSL_GET
    TCP_CHECK UDP_CHECK alpha connect_timeout delay_before_retry delay_loop
    inhibit_on_failure lthreshold lvs_method notify_down notify_up retry smtp_alert
    snmp_name uthreshold virtualhost warmup weight
    """,
    "TCP_CHECK": """
    alpha bind_if bind_port bindto connect_ip connect_port connect_timeout
    delay_before_retry delay_loop fwmark log_all_failures retry warmup
    """,
    "HTTP_GET": """
    alpha bind_if bind_port bindto connect_ip connect_port connect_timeout
    delay_before_retry delay_loop enable_sni fast_recovery fwmark http_protocol
    log_all_failures nb_get_retry retry url virtualhost warmup
    """,
    "SSL_GET": """
    alpha bind_if bind_port bindto connect_ip connect_port connect_timeout
    delay_before_retry delay_loop enable_sni fast_recovery fwmark http_protocol
    log_all_failures nb_get_retry retry url virtualhost warmup
    """,
    "MISC_CHECK": """
    alpha delay_before_retry delay_loop log_all_failures misc_dynamic misc_path misc_timeout
    retry user warmup
    """,
    "SMTP_CHECK": """
    alpha bind_if bind_port bindto connect_ip connect_port connect_timeout
    delay_before_retry delay_loop fwmark helo_name host log_all_failures retry warmup
    """,
    "DNS_CHECK": """
    alpha bind_if bind_port bindto connect_ip connect_port connect_timeout
    delay_before_retry delay_loop fwmark log_all_failures name retry type warmup
    """,
    "UDP_CHECK": """
    alpha bind_if bind_port bindto connect_ip connect_port connect_timeout
    delay_before_retry delay_loop fwmark log_all_failures max_reply_length min_reply_length
    payload require_reply retry warmup
    """,
    "PING_CHECK": """
    alpha bind_if bind_port bindto connect_ip connect_port connect_timeout
    delay_before_retry delay_loop fwmark log_all_failures retry warmup
    """,
    "FILE_CHECK": """
    track_file weight
    """,
    "BFD_CHECK": """
    alpha name
    """,
    "url": """
    digest path regex regex_max_offset regex_min_offset regex_no_match regex_options
    regex_stack status_code virtualhost
    """,
}

KNOWN: dict[str, frozenset[str]] = {ctx: frozenset(words.split()) for ctx, words in _WORDS.items()}

CHECKERS = (
    "TCP_CHECK", "HTTP_GET", "SSL_GET", "MISC_CHECK", "SMTP_CHECK", "DNS_CHECK",
    "UDP_CHECK", "PING_CHECK", "FILE_CHECK", "BFD_CHECK",
)

# (context, keyword) -> the context of the keywords inside its block.
BLOCK_CONTEXT: dict[tuple[str, str], str] = {
    ("top", "global_defs"): "global_defs",
    ("top", "vrrp_instance"): "vrrp_instance",
    ("top", "vrrp_sync_group"): "vrrp_sync_group",
    ("top", "vrrp_script"): "vrrp_script",
    ("top", "virtual_server"): "virtual_server",
    ("vrrp_instance", "authentication"): "authentication",
    ("virtual_server", "real_server"): "real_server",
    ("HTTP_GET", "url"): "url",
    ("SSL_GET", "url"): "url",
    **{("real_server", name): name for name in CHECKERS},
}

# Blocks whose lines are values (addresses, names), not keywords.
VALUE_BLOCKS = frozenset(
    {("top", name) for name in (
        "interface_up_down_delays", "linkbeat_interfaces", "static_ipaddress", "static_routes",
        "static_rules", "virtual_server_group",
    )}
    | {("global_defs", "notification_email")}
    | {(ctx, name) for ctx in ("vrrp_instance", "vrrp_sync_group") for name in (
        "track_bfd", "track_file", "track_interface", "track_process", "track_script",
    )}
    | {("vrrp_instance", name) for name in (
        "unicast_peer", "virtual_ipaddress", "virtual_ipaddress_excluded", "virtual_routes",
        "virtual_rules",
    )}
    | {("vrrp_sync_group", "group")}
)

# Blocks of keywords the converter does not read inside (nothing in them maps).
OPAQUE_BLOCKS = frozenset(
    {("top", name) for name in (
        "SSL", "bfd_instance", "garp_group", "track_file", "track_group", "vrrp_track_file",
        "vrrp_track_process",
    )}
    | {("SMTP_CHECK", "host")}
)

# Words keepalived 2.2.7 does not know but older versions did: it ignores the line,
# and so does the converter, saying so, instead of refusing the file.
LEGACY_IGNORED: dict[str, str] = {
    "nb_get_retry": (
        "keepalived 2.2.7 knows nb_get_retry only in HTTP_GET and SSL_GET and ignores it "
        "here, so the check keeps its default retry (1); write retry to change it"
    ),
    "nat_mask": "keepalived 2.x ignores nat_mask; it has no effect on the service",
    "lvs_id": "keepalived 2.x ignores lvs_id (it named the director in e-mail alerts)",
}
