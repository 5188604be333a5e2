"""lvsagent convert: keepalived's grammar as keepalived 2.2.7 reads it, and the mapping.

Inputs are small keepalived.conf texts held in memory (a dict of files), so the
include and glob cases need no file system.
"""

from __future__ import annotations

from typing import Any

import pytest

from lvsagent.convert.conversion import convert
from lvsagent.convert.findings import EXIT_COMPLETE, EXIT_OMISSIONS, EXIT_REFUSED
from lvsagent.convert.lexer import Limits
from tests.unit.convertlab import VRRP, data, files_source, messages, run


def test_minimal_instance_converts_completely() -> None:
    result = run(VRRP)
    assert result.exit_status == EXIT_COMPLETE
    inst = data(result)["vrrp_instance"][0]
    assert inst == {
        "name": "VI_1", "interface": "eth0", "vrid": 51, "priority": 100,
        "virtual_addresses": ["192.0.2.100/24"],
    }  # fmt: skip


def test_comments_quotes_and_braces_on_the_same_or_next_line() -> None:
    text = """
# a comment
vrrp_instance "VI_1"   ! another
{
    interface eth0 # trailing
    virtual_router_id 51
    authentication { auth_type PASS
    auth_pass "a#b!c" }
    virtual_ipaddress { 192.0.2.100 }
}
"""
    inst = data(run(text))["vrrp_instance"][0]
    assert inst["name"] == "VI_1"
    assert inst["auth_pass"] == "a#b!c"
    assert inst["virtual_addresses"] == ["192.0.2.100"]


def test_auth_on_one_line_leaves_no_password_as_keepalived_does() -> None:
    text = VRRP.replace("priority 100", "authentication { auth_type PASS  auth_pass 1111 }")
    result = run(text)
    assert "auth_pass" not in data(result)["vrrp_instance"][0]
    assert any("ignores 'auth_pass 1111'" in m for m in messages(result, "note"))


def test_auth_pass_is_cut_to_8_characters_on_the_wire() -> None:
    text = VRRP.replace(
        "priority 100", "authentication {\nauth_type PASS\nauth_pass 1234567890\n}"
    )
    result = run(text)
    assert data(result)["vrrp_instance"][0]["auth_pass"] == "12345678"
    assert any("first 8 characters" in m for m in messages(result, "note"))


def test_unknown_keyword_is_an_error_naming_its_line() -> None:
    text = VRRP + "virtual_server 192.0.2.100 80 {\n    lb-kind DR\n    protocol TCP\n}\n"
    result = run(text)
    assert result.toml is None and result.exit_status == EXIT_REFUSED
    (error,) = messages(result, "error")
    assert error.startswith("/etc/keepalived/keepalived.conf:11: error: lb-kind:")
    assert "did you mean 'lb_kind'?" in error


def test_lowercase_lb_kind_is_refused_because_keepalived_falls_back_to_nat() -> None:
    text = VRRP + "virtual_server 192.0.2.100 80 {\n    lb_kind dr\n    protocol TCP\n}\n"
    assert run(text).exit_status == EXIT_REFUSED


def test_nb_get_retry_outside_http_is_ignored_as_keepalived_does() -> None:
    text = VRRP + """
virtual_server 192.0.2.100 80 {
    protocol TCP
    nat_mask 255.255.255.0
    real_server 192.0.2.1 80 {
        TCP_CHECK {
            nb_get_retry 5
            connect_timeout 3
        }
    }
}
"""
    result = run(text)
    assert result.exit_status == EXIT_COMPLETE
    vs = data(result)["virtual_server"][0]
    assert vs["health"]["retry"] == 1
    notes = " ".join(messages(result, "note"))
    assert "nb_get_retry" in notes and "nat_mask" in notes


def test_nb_get_retry_in_http_get_is_retry() -> None:
    text = VRRP + """
virtual_server 192.0.2.100 80 {
    protocol TCP
    real_server 192.0.2.1 80 {
        HTTP_GET {
            url {
                path /health
                status_code 200 204
            }
            nb_get_retry 4
        }
    }
}
"""
    health = data(run(text))["virtual_server"][0]["health"]
    assert health["type"] == "http" and health["retry"] == 4
    assert health["delay_before_retry"] == 3  # keepalived's default for HTTP_GET
    assert health["http"] == {"path": "/health", "status_codes": [200, 204], "timeout": 5}


def test_keepalived_defaults_are_written_out() -> None:
    text = VRRP + """
virtual_server 192.0.2.100 80 {
    real_server 192.0.2.1 80 {
        TCP_CHECK {
        }
    }
}
"""
    result = run(text)
    vs = data(result)["virtual_server"][0]
    assert vs["forwarding"] == "nat" and vs["protocol"] == "udp"
    assert vs["health"] == {
        "type": "tcp", "interval": 60, "retry": 1, "delay_before_retry": 1, "alpha": False,
        "on_failure": "remove", "tcp": {"connect_timeout": 5}, "allow_tcp_check": True,
    }  # fmt: skip
    assert any("defaulting to UDP" in m for m in messages(result, "note"))
    assert any("allow_tcp_check = true" in m for m in messages(result, "note"))


def test_state_master_without_priority_is_the_address_owner() -> None:
    text = VRRP.replace("priority 100", "state MASTER")
    assert data(run(text))["vrrp_instance"][0]["priority"] == 255


def test_conditional_lines_follow_the_config_id() -> None:
    text = VRRP.replace(
        "priority 100", "@main priority 200\n@backup priority 100\n@^main nopreempt"
    )
    main = data(run(text, config_id="main"))["vrrp_instance"][0]
    backup = data(run(text, config_id="backup"))["vrrp_instance"][0]
    assert main["priority"] == 200 and "preempt" not in main
    assert backup["priority"] == 100 and backup["preempt"] is False


def test_parameters_and_multiline_definitions() -> None:
    text = """
$IF=eth0
$VIP=192.0.2.100
$INST= \\
vrrp_instance VI_${N} { \\
    interface $IF \\
    virtual_router_id 5${N} \\
    virtual_ipaddress { \\
        ${VIP}/24 \\
    } \\
}
$N=1
$INST
"""
    inst = data(run(text))["vrrp_instance"][0]
    assert inst["name"] == "VI_1" and inst["interface"] == "eth0" and inst["vrid"] == 51
    assert inst["virtual_addresses"] == ["192.0.2.100/24"]


def test_include_with_glob_relative_to_the_including_file() -> None:
    main = "include conf.d/*.conf\n"
    result = run(
        main,
        **{"/etc/keepalived/conf.d/a.conf": VRRP, "/etc/keepalived/conf.d/b.txt": "junk {"},
    )
    assert data(result)["vrrp_instance"][0]["name"] == "VI_1"


def test_include_cycle_and_depth_are_bounded() -> None:
    result = run("include keepalived.conf\n" + VRRP)
    assert result.exit_status == EXIT_REFUSED
    assert any("include cycle" in m for m in messages(result, "error"))
    chain = {f"/etc/keepalived/{i}.conf": f"include {i + 1}.conf\n" for i in range(20)}
    deep = run("include 0.conf\n" + VRRP, **chain)
    assert any("nested deeper" in m for m in messages(deep, "error"))


def test_self_referencing_parameter_is_refused_not_looped() -> None:
    result = run("$A=x ${A}\nrouter ${A}\n" + VRRP)
    assert result.exit_status == EXIT_REFUSED


def test_missing_and_extra_braces_are_errors() -> None:
    assert run(VRRP + "}\n").exit_status == EXIT_REFUSED
    assert run(VRRP.rstrip().rstrip("}")).exit_status == EXIT_REFUSED
    assert run(VRRP.replace("virtual_ipaddress {", "virtual_ipaddress")).exit_status == 78


def test_omissions_are_listed_with_what_to_do_and_exit_3() -> None:
    text = VRRP.replace("priority 100", "notify_deleted /bin/x\nnotify_master_rx_lower_pri /bin/y")
    result = run(text)
    assert result.exit_status == EXIT_OMISSIONS
    omitted = messages(result, "omitted")
    assert len(omitted) == 2 and all("not converted" in m for m in omitted)
    assert result.toml is not None and "NOT CONVERTED (2)" in result.toml


def test_no_instance_is_a_single_director_and_nothing_at_all_is_refused() -> None:
    text = "virtual_server 192.0.2.100 80 {\n protocol TCP\n}\n"
    result = run(text)
    assert "instance" not in data(result)["virtual_server"][0]
    assert any("single director" in m for m in messages(result, "note"))
    result = run("global_defs {\n router_id x\n}\n")
    assert result.exit_status == EXIT_REFUSED
    assert any("neither a vrrp_instance" in m for m in messages(result, "error"))


def test_each_service_follows_the_instance_holding_its_vip() -> None:
    second = VRRP.replace("VI_1", "VI_2").replace("51", "52").replace(".100", ".101")
    services = "".join(
        f"virtual_server 192.0.2.{n} 80 {{\n protocol TCP\n lb_kind DR\n}}\n" for n in (100, 101)
    )
    converted = data(run(VRRP + second + services))
    assert [vs["instance"] for vs in converted["virtual_server"]] == ["VI_1", "VI_2"]


def test_with_the_sync_daemon_services_of_another_instance_are_omitted() -> None:
    second = VRRP.replace("VI_1", "VI_2").replace("51", "52").replace(".100", ".101")
    services = "".join(
        f"virtual_server 192.0.2.{n} 80 {{\n protocol TCP\n lb_kind DR\n}}\n" for n in (100, 101)
    )
    sync = "global_defs {\n lvs_sync_daemon eth0\n}\n"
    result = run(sync + VRRP + second + services)
    converted = data(result)
    assert [vs["instance"] for vs in converted["virtual_server"]] == ["VI_1"]
    assert result.exit_status == EXIT_OMISSIONS


def test_limits_stop_huge_input() -> None:
    files = {"/k.conf": VRRP * 50}
    result = convert("/k.conf", files_source(files), None, Limits(total_bytes=1000))
    assert result.exit_status == EXIT_REFUSED


@pytest.mark.parametrize("value", ["0", "3"])
def test_persistence_timeout(value: str) -> None:
    service = f"virtual_server 192.0.2.100 80 {{\n protocol TCP\n persistence_timeout {value}\n}}\n"
    text = VRRP + service
    vs = data(run(text))["virtual_server"][0]
    assert vs.get("persistence_timeout", 0) == int(value)


def test_cli_verb_writes_the_file_and_exits_by_outcome(tmp_path: Any) -> None:
    from lvsagent.cli import main

    good = tmp_path / "good.conf"
    good.write_text(VRRP)
    out = tmp_path / "lvsagent.toml"
    assert main(["convert", str(good), "-o", str(out), "--config-id", "a"]) == EXIT_COMPLETE
    assert main(["check", str(out)]) == 0
    bad = tmp_path / "bad.conf"
    bad.write_text(VRRP + "lb-kind DR\n")
    assert main(["convert", str(bad), "-o", str(tmp_path / "no.toml")]) == EXIT_REFUSED
    assert not (tmp_path / "no.toml").exists()


def test_lower_priority_garp_count_per_instance_or_from_global_defs() -> None:
    """keepalived's garp_lower_prio_repeat is lvsagent's; its delayed second burst is not."""
    own = run(VRRP.replace("priority 100", "priority 100\n    garp_lower_prio_repeat 2"))
    assert data(own)["vrrp_instance"][0]["garp_lower_prio_repeat"] == 2
    inherited = "global_defs {\n    vrrp_garp_lower_prio_repeat 0\n}\n" + VRRP
    assert data(run(inherited))["vrrp_instance"][0]["garp_lower_prio_repeat"] == 0
    delayed = run(VRRP.replace("priority 100", "priority 100\n    garp_lower_prio_delay 10"))
    assert delayed.exit_status == EXIT_OMISSIONS
    assert any("garp_lower_prio_delay" in m for m in messages(delayed, "omitted"))
