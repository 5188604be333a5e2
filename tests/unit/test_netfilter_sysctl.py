"""Sysctls per loop-guard mode, applied against a fake /proc/sys tree and restored."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from lvsagent.netfilter.spec import desired_sysctls
from lvsagent.netfilter.sysctl import (
    Change,
    SysctlError,
    apply_sysctls,
    read_sysctl,
    restore_sysctls,
    sysctl_path,
)
from tests.unit.fakeproc import fake_proc


def test_each_mode_gets_what_it_needs() -> None:
    assert desired_sysctls("bypass", ["eth0"]) == {  # every mode puts the VIPs on lo
        "net.ipv4.ip_forward": "1",
        "net.ipv4.conf.eth0.arp_ignore": "1",
        "net.ipv4.conf.eth0.arp_announce": "2",
    }
    assert desired_sysctls("fwmark", ["eth0", "eth1", "eth0"]) == {
        "net.ipv4.ip_forward": "1",
        "net.ipv4.conf.eth0.arp_ignore": "1",
        "net.ipv4.conf.eth0.arp_announce": "2",
        "net.ipv4.conf.eth1.arp_ignore": "1",
        "net.ipv4.conf.eth1.arp_announce": "2",
    }
    assert desired_sysctls("backup_only", ["eth0"]) == {  # the VIP is on lo here too
        "net.ipv4.ip_forward": "1",
        "net.ipv4.conf.eth0.arp_ignore": "1",
        "net.ipv4.conf.eth0.arp_announce": "2",
        "net.ipv4.vs.backup_only": "1",
    }


def test_bad_modes_and_interface_names_are_refused() -> None:
    with pytest.raises(ValueError, match="loop"):
        desired_sysctls("loop", ["eth0"])  # type: ignore[arg-type]
    for bad in ("", "..", "a/b", "x" * 16):
        with pytest.raises(ValueError, match="interface name"):
            desired_sysctls("fwmark", [bad])


def test_a_vlan_interface_name_keeps_its_dot(tmp_path: Path) -> None:
    path = sysctl_path("net.ipv4.conf.eth0.100.arp_ignore", tmp_path)
    assert path == tmp_path / "net/ipv4/conf/eth0.100/arp_ignore"
    assert sysctl_path("net.ipv4.ip_forward", tmp_path) == tmp_path / "net/ipv4/ip_forward"


def test_apply_sets_only_what_differs_and_saves_originals_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = fake_proc(tmp_path / "proc", {
        "net.ipv4.ip_forward": "0",
        "net.ipv4.conf.eth0.arp_ignore": "1",
        "net.ipv4.conf.eth0.arp_announce": "0",
    })  # fmt: skip
    saved = tmp_path / "run" / "sysctl-saved.json"
    desired = desired_sysctls("fwmark", ["eth0"])
    with caplog.at_level(logging.INFO, logger="lvsagent.netfilter"):
        changes = apply_sysctls(desired, saved, root)
    assert changes == [
        Change("net.ipv4.ip_forward", "0", "1"),
        Change("net.ipv4.conf.eth0.arp_announce", "0", "2"),
    ]
    events = [r.journal for r in caplog.records]  # type: ignore[attr-defined]
    assert [e["LVSAGENT_SYSCTL"] for e in events] == [c.key for c in changes]
    assert all(e["LVSAGENT_EVENT"] == "sysctl" for e in events)
    assert read_sysctl("net.ipv4.conf.eth0.arp_announce", root) == "2"
    assert apply_sysctls(desired, saved, root) == []
    # Someone resets one by hand; re-applying must not overwrite its saved original.
    sysctl_path("net.ipv4.ip_forward", root).write_text("0\n")
    assert apply_sysctls(desired, str(saved), root) == [Change("net.ipv4.ip_forward", "0", "1")]
    sysctl_path("net.ipv4.ip_forward", root).write_text("1\n")
    assert json.loads(saved.read_text())["original"] == {
        "net.ipv4.ip_forward": "0",
        "net.ipv4.conf.eth0.arp_announce": "0",
    }


def test_restore_puts_back_what_was_changed_and_forgets_it(tmp_path: Path) -> None:
    root = fake_proc(tmp_path / "proc", {"net.ipv4.ip_forward": "0",
                                         "net.ipv4.vs.backup_only": "0"})  # fmt: skip
    saved = tmp_path / "saved.json"
    apply_sysctls(desired_sysctls("backup_only", []), saved, root)
    assert read_sysctl("net.ipv4.vs.backup_only", root) == "1"
    changes = restore_sysctls(saved, root)
    assert {c.key: c.new for c in changes} == {
        "net.ipv4.ip_forward": "0",
        "net.ipv4.vs.backup_only": "0",
    }
    assert read_sysctl("net.ipv4.ip_forward", root) == "0"
    assert not saved.exists()
    assert restore_sysctls(saved, root) == []


def test_restore_skips_keys_that_vanished(tmp_path: Path) -> None:
    root = fake_proc(tmp_path / "proc", {"net.ipv4.ip_forward": "0",
                                         "net.ipv4.vs.backup_only": "0"})  # fmt: skip
    saved = tmp_path / "saved.json"
    apply_sysctls(desired_sysctls("backup_only", []), saved, root)
    sysctl_path("net.ipv4.vs.backup_only", root).unlink()  # IPVS unloaded since
    assert [c.key for c in restore_sysctls(saved, root)] == ["net.ipv4.ip_forward"]


def test_backup_only_without_ipvs_changes_nothing_and_says_why(tmp_path: Path) -> None:
    root = fake_proc(tmp_path / "proc", {"net.ipv4.ip_forward": "0"})
    saved = tmp_path / "saved.json"
    with pytest.raises(SysctlError, match=r"net\.ipv4\.vs\.backup_only.*IPVS is not loaded"):
        apply_sysctls(desired_sysctls("backup_only", []), saved, root)
    assert read_sysctl("net.ipv4.ip_forward", root) == "0"
    assert not saved.exists()


def test_a_damaged_saved_file_is_reported(tmp_path: Path) -> None:
    root = fake_proc(tmp_path / "proc", {"net.ipv4.ip_forward": "0"})
    saved = tmp_path / "saved.json"
    saved.write_text("{not json")
    with pytest.raises(SysctlError, match="remove the file"):
        apply_sysctls({"net.ipv4.ip_forward": "1"}, saved, root)
