"""The converter's scripts and tracked objects: each keepalived keyword lands on its key.

vrrp_script + track_script, vrrp_track_file + track_file, vrrp_track_process +
track_process, the notify hooks, notify_fifo, vrrp_sync_group and MISC_CHECK; every
result also passes ``lvsagent check`` (``run`` parses it).
"""

from __future__ import annotations

from tests.unit.convertlab import VRRP, data, messages, run

SECOND = VRRP.replace("VI_1", "VI_2").replace("51", "52").replace(".100", ".101")


def test_vrrp_script_and_track_script_with_weights() -> None:
    text = """
vrrp_script chk_haproxy {
    script "/usr/bin/killall -0 haproxy"
    interval 2
    timeout 3
    weight -20
    rise 2
    fall 3
    init_fail
    user nobody
}
""" + VRRP.replace(
        "priority 100", "priority 100\ntrack_script {\n chk_haproxy\n chk_gone weight 5\n}"
    )
    result = run(text)
    converted = data(result)
    script = converted["vrrp_script"][0]
    assert script == {
        "name": "chk_haproxy", "script": "/usr/bin/killall -0 haproxy", "interval": 2,
        "timeout": 3, "weight": -20, "rise": 2, "fall": 3, "init_fail": True,
    }  # fmt: skip
    assert converted["vrrp_instance"][0]["track_scripts"] == ["chk_haproxy"]
    assert any("chk_gone" in m for m in messages(result, "omitted"))
    assert any("whom scripts run as" in m for m in messages(result, "note"))  # user nobody


def test_a_track_script_weight_overrides_the_script_s() -> None:
    text = 'vrrp_script chk {\n script "/bin/true"\n}\n' + VRRP.replace(
        "priority 100", "track_script {\n chk weight -30\n}"
    )
    assert data(run(text))["vrrp_instance"][0]["track_scripts"] == [
        {"name": "chk", "weight": -30}
    ]


def test_a_relative_script_is_omitted_and_its_references_too() -> None:
    text = 'vrrp_script chk {\n script "./chk.sh"\n}\n' + VRRP.replace(
        "priority 100", "track_script {\n chk\n}"
    )
    result = run(text)
    converted = data(result)
    assert "vrrp_script" not in converted
    assert "track_scripts" not in converted["vrrp_instance"][0]
    assert len(messages(result, "omitted")) == 3  # the path, the script, the reference


def test_notify_hooks_and_fifo() -> None:
    text = "global_defs {\n vrrp_notify_fifo /run/ka.fifo\n script_user root\n}\n" + VRRP.replace(
        "priority 100",
        'notify_master "/etc/ka/master.sh VI_1"\nnotify /etc/ka/all.sh\nnotify_stop /bin/stop u',
    )
    result = run(text)
    converted = data(result)
    inst = converted["vrrp_instance"][0]
    assert inst["notify_master"] == "/etc/ka/master.sh VI_1"
    assert inst["notify"] == "/etc/ka/all.sh"
    assert inst["notify_stop"] == "/bin/stop"
    assert converted["global"]["notify_fifo"] == "/run/ka.fifo"
    assert "script_user" not in converted["global"]


def test_track_file_and_track_process() -> None:
    text = """
vrrp_track_file maint {
    file /var/run/maint
    weight -10
    init_file 0 overwrite
}
vrrp_track_process haproxy {
    process haproxy
    quorum 2
    delay 1.5
    weight 0
}
vrrp_track_process longname {
    process /usr/sbin/a-very-long-daemon
}
""" + VRRP.replace(
        "priority 100", "track_file {\n maint\n}\ntrack_process {\n haproxy\n longname\n}"
    )
    converted = data(run(text))
    assert converted["track_file"] == [
        {"name": "maint", "file": "/var/run/maint", "weight": -10, "init_file": 0,
         "init_overwrite": True}
    ]  # fmt: skip
    assert converted["track_process"][0] == {
        "name": "haproxy", "process": "haproxy", "quorum": 2, "fork_delay": 1.5,
        "terminate_delay": 1.5, "weight": 0,
    }  # fmt: skip
    assert converted["track_process"][1]["full_command"] is True  # longer than comm
    inst = converted["vrrp_instance"][0]
    assert inst["track_files"] == ["maint"]
    assert inst["track_processes"] == ["haproxy", "longname"]


def test_sync_group_with_hooks_zeroes_weights_as_keepalived() -> None:
    first = VRRP.replace("priority 100", "priority 100\ntrack_interface {\n eth1 weight -10\n}")
    group = """
vrrp_sync_group NAT {
    group {
        VI_1
        VI_2
    }
    notify_master "/etc/ka/nat.sh master"
    notify /etc/ka/all.sh
}
"""
    result = run(first + SECOND + group)
    converted = data(result)
    assert converted["vrrp_sync_group"] == [
        {"name": "NAT", "instances": ["VI_1", "VI_2"],
         "notify_master": "/etc/ka/nat.sh master", "notify": "/etc/ka/all.sh"}
    ]  # fmt: skip
    assert converted["vrrp_instance"][0]["track_interfaces"] == [{"name": "eth1", "weight": 0}]
    assert any("writes weight 0" in m for m in messages(result, "note"))


def test_sync_group_tracking_weight_keeps_weights() -> None:
    first = VRRP.replace("priority 100", "track_interface {\n eth1 weight -10\n}")
    group = "vrrp_sync_group G {\n group {\n VI_1\n VI_2\n }\n sync_group_tracking_weight\n}\n"
    converted = data(run(first + SECOND + group))
    assert converted["vrrp_sync_group"][0]["tracking_weight"] is True
    assert converted["vrrp_instance"][0]["track_interfaces"] == [{"name": "eth1", "weight": -10}]


def test_a_group_with_a_missing_member_is_omitted() -> None:
    group = "vrrp_sync_group G {\n group {\n VI_1\n VI_9\n }\n}\n"
    result = run(VRRP + group)
    assert "vrrp_sync_group" not in data(result)
    assert any("VI_9 did not convert" in m for m in messages(result, "omitted"))


def test_misc_check_with_dynamic_and_its_timeout() -> None:
    service = """
virtual_server 192.0.2.100 80 {
    protocol TCP
    delay_loop 10
    real_server 10.0.0.5 80 {
        MISC_CHECK {
            misc_path "/usr/local/bin/chk 10.0.0.5"
            misc_timeout 4
            misc_dynamic
        }
    }
    real_server 10.0.0.6 80 {
        MISC_CHECK {
            misc_path "/usr/local/bin/chk 10.0.0.6"
        }
    }
}
"""
    converted = data(run(VRRP + service))
    vs = converted["virtual_server"][0]
    checks = []
    for rs in vs["real_server"]:
        merged = {**vs["health"]["misc"], **rs.get("health", {}).get("misc", {})}
        checks.append((rs.get("health", {}).get("type", vs["health"]["type"]), merged))
    assert checks == [
        ("misc", {"script": "/usr/local/bin/chk 10.0.0.5", "timeout": 4, "dynamic": True}),
        ("misc", {"script": "/usr/local/bin/chk 10.0.0.6", "timeout": 10, "dynamic": False}),
    ]


def test_misc_check_without_a_path_falls_back_to_tcp() -> None:
    service = (
        "virtual_server 192.0.2.100 80 {\n protocol TCP\n real_server 10.0.0.5 80 {\n"
        " MISC_CHECK {\n misc_timeout 4\n }\n }\n}\n"
    )
    result = run(VRRP + service)
    assert data(result)["virtual_server"][0]["health"]["type"] == "tcp"
    assert any("a script it can run" in m for m in messages(result, "omitted"))


def test_shell_syntax_converts_with_shell_true() -> None:
    text = 'vrrp_script chk {\n script "</dev/tcp/127.0.0.1/80"\n}\n' + VRRP.replace(
        "priority 100", 'track_script {\n chk\n}\nnotify_fault "/bin/log fault > /tmp/x"'
    )
    result = run(text)
    converted = data(result)
    assert converted["vrrp_script"][0]["shell"] is True
    assert converted["vrrp_instance"][0]["notify_fault"] == {
        "script": "/bin/log fault > /tmp/x", "shell": True,
    }  # fmt: skip
    assert sum("shell syntax" in m for m in messages(result, "note")) == 2


def test_a_group_of_one_is_a_note() -> None:
    result = run(VRRP + "vrrp_sync_group G {\n group {\n VI_1\n }\n}\n")
    assert "vrrp_sync_group" not in data(result)
    assert any("changes nothing" in m for m in messages(result, "note"))
    assert not messages(result, "omitted")
