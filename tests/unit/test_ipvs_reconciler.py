"""The reconciler against a recording fake kernel: adopt, drift, reload, errors."""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import json
import logging
from collections.abc import Sequence
from pathlib import Path

import pytest

from lvsagent.ipvs import reconciler
from lvsagent.ipvs.genl import Timeouts
from lvsagent.ipvs.model import Dest, DestKey, Service, ServiceKey, Table
from lvsagent.ipvs.plan import AddDest, EditDest, Op, apply_ops
from lvsagent.ipvs.reconciler import LOG_ERRORS_UP_TO, IpvsReconciler
from lvsagent.netfilter.spec import EXPIRE_NODEST_CONN, ipvs_sysctls
from lvsagent.netfilter.sysctl import read_sysctl
from tests.unit.fakeproc import fake_proc

A = ipaddress.IPv4Address
KEY = ServiceKey(protocol="tcp", address=A("172.16.0.30"), port=80)


def table(*weights: int) -> Table:
    dests = tuple(
        Dest(DestKey(A(f"172.16.0.{31 + i}"), 80), weight=w) for i, w in enumerate(weights)
    )
    return Table((Service(KEY, scheduler="rr", dests=dests),))


class FakeKernel:
    """Holds a table; applies ops the way the kernel would; can fail on demand."""

    def __init__(self, table: Table | None = None) -> None:
        self.table = table or Table()
        self.applied: list[Op] = []
        self.dumps = 0
        self.fail_next: OSError | None = None
        self.dump_error: OSError | None = None
        self.timeouts = Timeouts(900, 120, 300)
        self.timeout_sets = 0
        self.apply_error: OSError | None = None
        self.batches: list[int] = []

    async def dump(self) -> Table:
        self.dumps += 1
        if self.dump_error is not None:
            raise self.dump_error
        return self.table

    async def get_timeouts(self) -> Timeouts:
        return self.timeouts

    async def set_timeouts(self, tcp: int, tcp_fin: int, udp: int) -> None:
        old = self.timeouts
        self.timeouts = Timeouts(tcp or old.tcp, tcp_fin or old.tcp_fin, udp or old.udp)
        self.timeout_sets += 1

    async def apply_many(self, ops: Sequence[Op]) -> list[bool | OSError | None]:
        """As the real adapter: a refused op is an outcome, the ops after it still run."""
        if self.apply_error is not None:
            raise self.apply_error
        self.batches.append(len(ops))
        outcomes: list[bool | OSError | None] = []
        for op in ops:
            if self.fail_next is not None:
                err, self.fail_next = self.fail_next, None
                outcomes.append(err)
                continue
            if isinstance(op, AddDest | EditDest) and op.service not in self.table.service_map():
                outcomes.append(OSError(errno.ESRCH, "no such service"))
                continue
            before = self.table
            self.applied.append(op)
            self.table = apply_ops(self.table, [op])
            outcomes.append(self.table != before)
        return outcomes


def run(coro: object) -> object:
    return asyncio.run(coro)  # type: ignore[arg-type]


def test_creates_from_empty_then_nothing_more() -> None:
    k = FakeKernel()
    r = IpvsReconciler(k, table(1, 1), "report", 30)
    assert run(r.reconcile("start"))
    assert len(k.applied) == 3  # one service, two dests
    k.applied.clear()
    assert run(r.reconcile("resync"))
    assert k.applied == []


def test_adopts_an_identical_table_without_touching_it() -> None:
    k = FakeKernel(table(1, 1))
    r = IpvsReconciler(k, table(1, 1), "report", 30)
    assert run(r.reconcile("start"))
    assert k.applied == []


def test_drift_is_repaired_on_resync() -> None:
    k = FakeKernel(table(1, 1))
    r = IpvsReconciler(k, table(1, 1), "report", 30)
    k.table = Table()  # someone ran `ipvsadm -C`
    assert run(r.reconcile("resync"))
    assert k.table.service_map()[KEY].dest_map() == table(1, 1).services[0].dest_map()


def test_reload_changing_one_weight_is_one_kernel_operation() -> None:
    k = FakeKernel(table(1, 1))
    r = IpvsReconciler(k, table(1, 1), "report", 30)
    r.set_desired(table(1, 0))
    assert run(r.reconcile("config changed"))
    assert len(k.applied) == 1 and isinstance(k.applied[0], EditDest)
    assert r.ops_applied == 1


def test_a_refused_op_fails_the_pass_and_the_retry_reads_the_kernel() -> None:
    k = FakeKernel()
    k.fail_next = OSError(errno.ENOMEM, "no memory")
    r = IpvsReconciler(k, table(1, 1), "report", 30)
    assert not run(r.reconcile("start"))
    # The service add was refused; its two dest adds then found no service (ESRCH).
    assert r.errors == 3 and k.applied == [] and r.ops_applied == 0
    assert r.known is None
    dumps = k.dumps
    assert run(r.reconcile("retry", fresh=False))
    assert k.dumps == dumps + 1 and len(k.applied) == 3 and r.ops_applied == 3


def test_a_refused_op_does_not_stop_the_others(caplog: pytest.LogCaptureFixture) -> None:
    other = ServiceKey(protocol="udp", address=A("172.16.0.30"), port=53)
    want = Table((*table(1).services, Service(other, scheduler="rr")))
    k = FakeKernel()
    k.fail_next = OSError(errno.ENOENT, "no such scheduler")
    r = IpvsReconciler(k, want, "report", 30)
    assert not run(r.reconcile("start"))
    assert set(k.table.service_map()) == {other}  # sorted: TCP ... first, refused
    assert r.ops_applied == 1 and r.errors == 2
    assert "1 change(s) applied, 2 failed" in caplog.text


def test_every_op_goes_to_the_kernel_in_one_call() -> None:
    k = FakeKernel()
    r = IpvsReconciler(k, table(*[1] * 60), "report", 30)
    assert run(r.reconcile("start"))
    assert k.batches == [61]


CHUNK = 8


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reconciler, "APPLY_CHUNK", CHUNK, raising=False)


@pytest.mark.usefixtures("small_chunks")
def test_a_big_pass_goes_to_the_kernel_a_chunk_at_a_time() -> None:
    """The adapter encodes all it is given before its first window: a first pass of
    thousands in one call would hold the loop (and the adverts) for all of them."""
    k = FakeKernel()
    r = IpvsReconciler(k, table(*[1] * (2 * CHUNK + 10)), "report", 30)
    assert run(r.reconcile("start"))
    assert k.batches == [CHUNK, CHUNK, CHUNK, 3]
    assert r.known == k.table and r.ops_applied == 2 * CHUNK + 11


@pytest.mark.usefixtures("small_chunks")
def test_a_chunk_that_cannot_be_sent_fails_the_pass_and_stops_it() -> None:
    class Broken(FakeKernel):
        async def apply_many(self, ops: Sequence[Op]) -> list[bool | OSError | None]:
            if self.batches:
                raise OSError(errno.ENOBUFS, "socket gone")
            return await super().apply_many(ops)

    k = Broken()
    r = IpvsReconciler(k, table(*[1] * (2 * CHUNK + 10)), "report", 30)
    assert not run(r.reconcile("start"))
    assert k.batches == [CHUNK] and r.ops_applied == CHUNK and r.known is None


@pytest.mark.usefixtures("small_chunks")
def test_a_lost_window_stops_the_pass_at_its_chunk() -> None:
    class Lossy(FakeKernel):
        async def apply_many(self, ops: Sequence[Op]) -> list[bool | OSError | None]:
            done = await super().apply_many(ops[:1])
            return [*done, *[None] * (len(ops) - 1)]

    k = Lossy()
    r = IpvsReconciler(k, table(*[1] * (2 * CHUNK + 10)), "report", 30)
    assert not run(r.reconcile("start"))
    assert k.batches == [1] and r.ops_applied == 1 and r.known is None


def test_an_unsent_op_fails_the_pass() -> None:
    class Unsent(FakeKernel):
        async def apply_many(self, ops: Sequence[Op]) -> list[bool | OSError | None]:
            done = await super().apply_many(ops[:1])
            return [*done, OSError(errno.ENOBUFS, "replies lost"), *[None] * (len(ops) - 2)]

    k = Unsent()
    r = IpvsReconciler(k, table(1, 1, 1), "report", 30)
    assert not run(r.reconcile("start"))
    assert r.ops_applied == 1 and r.errors == 1 and r.known is None


def test_apply_many_raising_is_an_error_not_a_crash(caplog: pytest.LogCaptureFixture) -> None:
    k = FakeKernel()
    k.apply_error = OSError(errno.ENOENT, "no IPVS family")
    r = IpvsReconciler(k, table(1), "report", 30)
    assert not run(r.reconcile("start"))
    assert r.errors == 1 and "cannot apply 2 change(s)" in caplog.text


def test_each_op_is_logged_only_in_a_small_pass(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "lvsagent.ipvs")
    k = FakeKernel()
    assert run(IpvsReconciler(k, table(*[1] * 49), "report", 30).reconcile("start"))
    assert caplog.text.count("ipvs: + dest") == 49
    caplog.clear()
    big = FakeKernel()
    assert run(IpvsReconciler(big, table(*[1] * 50), "report", 30).reconcile("start"))
    assert "ipvs: + dest" not in caplog.text and "done, 51 change(s) applied" in caplog.text


def test_errors_are_logged_up_to_a_bound(caplog: pytest.LogCaptureFixture) -> None:
    k = FakeKernel()
    k.fail_next = OSError(errno.ENOMEM, "no memory")
    r = IpvsReconciler(k, table(*[1] * 20), "report", 30)
    assert not run(r.reconcile("start"))
    assert r.errors == 21
    assert caplog.text.count(" failed: ") == LOG_ERRORS_UP_TO
    assert "0 change(s) applied, 21 failed" in caplog.text


def test_missing_ipvs_is_an_error_not_a_crash(caplog: pytest.LogCaptureFixture) -> None:
    k = FakeKernel()
    k.dump_error = OSError(errno.ENOENT, "no such generic netlink family")
    r = IpvsReconciler(k, table(1), "report", 30)
    assert not run(r.reconcile("start"))
    assert "modprobe ip_vs" in caplog.text


def test_foreign_services_are_reported_once(caplog: pytest.LogCaptureFixture) -> None:
    other = Service(ServiceKey(fwmark=9), scheduler="wlc")
    k = FakeKernel(Table((*table(1).services, other)))
    r = IpvsReconciler(k, table(1), "report", 30)
    run(r.reconcile("start"))
    run(r.reconcile("resync"))
    assert caplog.text.count("fwmark 9 is in the kernel but not in the config") == 1
    assert k.applied == []


def test_run_applies_a_new_desired_table_promptly(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "lvsagent.ipvs")

    async def scenario() -> FakeKernel:
        k = FakeKernel()
        r = IpvsReconciler(k, table(1, 1), "report", 3600)
        task = asyncio.create_task(r.run())
        while len(k.applied) < 3:
            await asyncio.sleep(0)
        r.set_desired(table(1, 0), "health")
        while len(k.applied) < 4:
            await asyncio.sleep(0)
        task.cancel()
        return k

    k = asyncio.run(scenario())
    assert isinstance(k.applied[-1], EditDest) and k.applied[-1].dest.weight == 0
    # The pass is named for what asked for it: a health verdict is not a reload.
    assert "ipvs: health: applying 1 change(s)" in caplog.text
    assert "config changed" not in caplog.text


def test_configured_timeouts_are_set_once_and_zero_means_leave_alone() -> None:
    k = FakeKernel()
    r = IpvsReconciler(k, table(1), "report", 30, Timeouts(600, 0, 0))
    assert run(r.reconcile("start"))
    assert k.timeouts == Timeouts(600, 120, 300) and k.timeout_sets == 1
    assert run(r.reconcile("resync"))
    assert k.timeout_sets == 1
    untouched = FakeKernel()
    assert run(IpvsReconciler(untouched, table(1), "report", 30).reconcile("start"))
    assert untouched.timeout_sets == 0


def test_reload_plans_against_the_last_pass_without_a_dump() -> None:
    k = FakeKernel(table(1, 1))
    r = IpvsReconciler(k, table(1, 1), "report", 30)
    assert run(r.reconcile("start"))
    dumps = k.dumps
    r.set_desired(table(1, 0))
    assert run(r.reconcile("config changed", fresh=False))
    assert k.dumps == dumps and len(k.applied) == 1
    # A failure forgets the remembered table: the next pass reads the kernel.
    k.fail_next = OSError(errno.EIO, "io")
    r.set_desired(table(0, 0))
    assert not run(r.reconcile("config changed", fresh=False))
    assert r.known is None
    assert run(r.reconcile("retry", fresh=False))
    assert k.dumps == dumps + 1


OTHER = ServiceKey(protocol="tcp", address=A("172.16.0.30"), port=443)


def two_services(web: tuple[int, ...], tls: tuple[int, ...]) -> Table:
    def dests(weights: tuple[int, ...]) -> tuple[Dest, ...]:
        return tuple(Dest(DestKey(A(f"172.16.0.{31 + i}"), 80), w) for i, w in enumerate(weights))

    return Table((
        Service(KEY, scheduler="rr", dests=dests(web)),
        Service(OTHER, scheduler="rr", dests=dests(tls)),
    ))  # fmt: skip


def test_a_health_pass_compares_only_the_services_it_is_told_of() -> None:
    k = FakeKernel()
    r = IpvsReconciler(k, two_services((1, 1), (1, 1)), "report", 30)
    assert run(r.reconcile("start"))
    k.applied.clear()
    untouched = r.known.service_map()[KEY] if r.known else None
    r.set_desired(two_services((1, 1), (1, 0)), "health", changed={OTHER})
    assert run(r.reconcile("health", fresh=False))
    assert [(op.service, op.dest.weight) for op in k.applied] == [(OTHER, 0)]  # type: ignore[union-attr]
    assert r.known is not None and r.known.service_map() == k.table.service_map()
    assert r.known.service_map()[KEY] is untouched  # kept as it was, not rebuilt
    # Told of only one service, a pass does not look at the other: the scope is a promise
    # the caller keeps (the daemon names every service whose verdicts changed).
    r.set_desired(two_services((0, 1), (1, 1)), "health", changed={OTHER})
    k.applied.clear()
    assert run(r.reconcile("health", fresh=False))
    assert [op.service for op in k.applied] == [OTHER]  # type: ignore[union-attr]
    # A reload (no scope) compares everything again.
    r.set_desired(two_services((0, 1), (1, 0)))
    k.applied.clear()
    assert run(r.reconcile("config changed", fresh=False))
    edits = {(op.service, str(op.dest.key), op.dest.weight) for op in k.applied}  # type: ignore[union-attr]
    assert edits == {(KEY, "172.16.0.31:80", 0), (OTHER, "172.16.0.32:80", 0)}


def test_scopes_add_up_until_a_pass_and_a_dump_compares_everything() -> None:
    k = FakeKernel()
    r = IpvsReconciler(k, two_services((1, 1), (1, 1)), "report", 30)
    assert run(r.reconcile("start"))
    r.set_desired(two_services((0, 1), (1, 1)), "health", changed={KEY})
    r.set_desired(two_services((0, 1), (0, 1)), "health", changed={OTHER})
    k.applied.clear()
    assert run(r.reconcile("health", fresh=False))
    assert sorted(str(op.service) for op in k.applied) == sorted([str(KEY), str(OTHER)])  # type: ignore[union-attr]
    # Drift in a service nobody named is found by a fresh pass (resync), which dumps.
    k.table = two_services((0, 1), (1, 1))
    k.applied.clear()
    assert run(r.reconcile("resync"))
    assert [op.service for op in k.applied] == [OTHER]  # type: ignore[union-attr]


def test_ipvs_sysctls_are_set_once_ipvs_answers_and_saved_for_decommission(
    tmp_path: Path,
) -> None:
    root = fake_proc(tmp_path / "proc", {EXPIRE_NODEST_CONN: "0"})
    saved = tmp_path / "state" / "sysctl-saved.json"
    saved.parent.mkdir(mode=0o700)
    k = FakeKernel()
    k.dump_error = OSError(errno.ENOENT, "no IPVS")
    r = IpvsReconciler(k, table(1), "report", 30, sysctls=ipvs_sysctls(True),
                       saved_sysctls=str(saved), sysctl_root=root)  # fmt: skip
    assert not run(r.reconcile("start"))
    assert read_sysctl(EXPIRE_NODEST_CONN, root) == "0", "not before IPVS answers"
    k.dump_error = None
    assert run(r.reconcile("retry"))
    assert read_sysctl(EXPIRE_NODEST_CONN, root) == "1"
    assert json.loads(saved.read_text())["original"] == {EXPIRE_NODEST_CONN: "0"}
    # Drift by hand is repaired at the next pass that reads the kernel.
    fake_proc(root, {EXPIRE_NODEST_CONN: "0"})
    assert run(r.reconcile("resync"))
    assert read_sysctl(EXPIRE_NODEST_CONN, root) == "1"
    # Turned off (ipvs_expire_nodest_conn = false): left as it is.
    r.sysctls = ipvs_sysctls(False)
    fake_proc(root, {EXPIRE_NODEST_CONN: "0"})
    assert run(r.reconcile("resync"))
    assert read_sysctl(EXPIRE_NODEST_CONN, root) == "0"


def test_a_sysctl_that_cannot_be_set_is_logged_once_and_the_table_still_applied(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    k = FakeKernel()
    r = IpvsReconciler(k, table(1), "report", 30, sysctls=ipvs_sysctls(True),
                       saved_sysctls=str(tmp_path / "saved.json"),
                       sysctl_root=tmp_path / "empty")  # fmt: skip
    caplog.set_level(logging.ERROR, "lvsagent.ipvs")
    assert run(r.reconcile("start"))
    assert run(r.reconcile("resync"))
    assert k.table == table(1)
    errors = [rec.getMessage() for rec in caplog.records]
    assert len(errors) == 1 and EXPIRE_NODEST_CONN in errors[0], errors
