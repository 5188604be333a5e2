"""The state directory: the saved sysctls are 0600, never reached through a symlink, and
never read from a directory others can write to.

Why: a decommission writes the saved "originals" back into /proc/sys.  Whoever can
plant that file, or a symlink where lvsagent writes it, chooses what root writes where.
"""

from __future__ import annotations

import errno
import json
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from lvsagent import statedir
from lvsagent.netfilter.sysctl import (
    SysctlError,
    apply_sysctls,
    read_sysctl,
    restore_sysctls,
)
from lvsagent.statedir import StateDirError
from tests.unit.fakeproc import fake_proc

FORWARD = {"net.ipv4.ip_forward": "1"}


@contextmanager
def umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def test_the_saved_file_is_0600_whatever_the_umask(tmp_path: Path) -> None:
    root = fake_proc(tmp_path / "proc", {"net.ipv4.ip_forward": "0"})
    state = tmp_path / "state"
    with umask(0):
        apply_sysctls(FORWARD, state / "sysctl-saved.json", root)
    assert stat.S_IMODE((state / "sysctl-saved.json").stat().st_mode) == 0o600
    assert stat.S_IMODE(state.stat().st_mode) == 0o755


def test_a_state_dir_that_is_our_own_symlink_is_followed(tmp_path: Path) -> None:
    root = fake_proc(tmp_path / "proc", {"net.ipv4.ip_forward": "0"})
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    (tmp_path / "state").symlink_to(real)  # the operator's own link: honoured
    apply_sysctls(FORWARD, tmp_path / "state" / "sysctl-saved.json", root)
    assert (real / "sysctl-saved.json").exists()


def test_a_symlink_where_the_temporary_goes_is_not_followed(tmp_path: Path) -> None:
    root = fake_proc(tmp_path / "proc", {"net.ipv4.ip_forward": "0"})
    state = tmp_path / "state"
    state.mkdir(mode=0o755)
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    (state / "sysctl-saved.json.tmp").symlink_to(victim)
    apply_sysctls(FORWARD, state / "sysctl-saved.json", root)
    assert victim.read_text() == "precious\n"
    saved = json.loads((state / "sysctl-saved.json").read_text())
    assert saved["original"] == {"net.ipv4.ip_forward": "0"}
    assert not (state / "sysctl-saved.json.tmp").is_symlink()


def test_a_saved_file_that_is_a_symlink_is_refused(tmp_path: Path) -> None:
    root = fake_proc(tmp_path / "proc", {"net.ipv4.ip_forward": "0"})
    state = tmp_path / "state"
    state.mkdir(mode=0o755)
    planted = tmp_path / "planted.json"
    planted.write_text(json.dumps({"version": 1, "original": {"net.ipv4.ip_forward": "0"}}))
    (state / "sysctl-saved.json").symlink_to(planted)
    with pytest.raises(StateDirError, match=r"sysctl-saved\.json.*is a symlink"):
        apply_sysctls(FORWARD, state / "sysctl-saved.json", root)
    assert read_sysctl("net.ipv4.ip_forward", root) == "0"


def test_a_directory_others_can_write_to_is_refused(tmp_path: Path) -> None:
    root = fake_proc(tmp_path / "proc", {"net.ipv4.ip_forward": "0"})
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)  # like /tmp
    with pytest.raises(StateDirError, match=r"group or others may write to it \(mode 1777\)"):
        apply_sysctls(FORWARD, shared / "sysctl-saved.json", root)
    assert read_sysctl("net.ipv4.ip_forward", root) == "0"
    assert not (shared / "sysctl-saved.json").exists()


def test_restore_writes_only_net_keys(tmp_path: Path) -> None:
    root = fake_proc(tmp_path / "proc", {"net.ipv4.ip_forward": "1",
                                         "kernel.core_pattern": "core"})  # fmt: skip
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    original = {"net.ipv4.ip_forward": "0", "kernel.core_pattern": "|/tmp/x"}
    (state / "sysctl-saved.json").write_text(json.dumps({"version": 1, "original": original}))
    with pytest.raises(SysctlError, match=r"kernel\.core_pattern"):
        restore_sysctls(state / "sysctl-saved.json", root)
    assert read_sysctl("kernel.core_pattern", root) == "core"


def test_a_failed_write_names_the_file_and_leaves_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = fake_proc(tmp_path / "proc", {"net.ipv4.ip_forward": "0"})
    state = tmp_path / "state"

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(statedir.os, "fsync", full)
    with pytest.raises(StateDirError) as caught:
        apply_sysctls(FORWARD, state / "sysctl-saved.json", root)
    message = caught.value.strerror or ""
    assert f"{state}/sysctl-saved.json" in message
    assert "No space left on device (ENOSPC)" in message and "full" in message
    assert sorted(p.name for p in state.iterdir()) == []
    assert read_sysctl("net.ipv4.ip_forward", root) == "0"  # nothing changed unsaved
