"""vrrp_sync_group with real agents: the classic NAT director's two instances move together.

Each box has an outside link (eth0, VI_OUT: the VIP clients reach) and an inside
one (eth1, VI_IN: the gateway address the real servers route their replies
through).  If only one moved, replies would leave by the other box.  So both are
in one sync group, and:

- VI_IN in FAULT on A (a track_file, weight 0, is the fault switch) puts VI_OUT in
  FAULT too: B holds both addresses; both come back to A together;
- B's VI_IN alone raised above A's (a reload): B does not take it, since its group
  partner still hears its master (keepalived's rule against a group split between
  the boxes); both raised: B preempts, and the members that did not take over on
  their own timer follow the one that did;
- the group's hooks and FIFO lines fire for the group as a whole.
"""

from __future__ import annotations

import signal
from pathlib import Path

from tests.netns.conftest import Pair
from tests.netns.lab import start_agent, veth
from tests.netns.scriptlab import ScriptDir, fifo_reader, scripts  # noqa: F401

OUT, IN = "10.99.0.100", "10.98.0.100"


def config(pair: Pair, box: str, prio_out: int, prio_in: int, extra: str = "") -> Path:
    path = pair.tmp / f"{box}.toml"
    path.write_text(f"""[global]
router_id = "{box}"
control_socket = "{pair.tmp / box}.sock"
state_dir = "{pair.tmp / box}-state"
metrics_listen = ""
{extra}

[[track_file]]
name = "fault"
file = "{pair.tmp / box}-fault"
weight = 0

[[vrrp_instance]]
name = "VI_OUT"
interface = "eth0"
vrid = 51
priority = {prio_out}
advert_int = 0.1
version = 3
virtual_addresses = ["{OUT}/24"]
garp_master_delay = 0

[[vrrp_instance]]
name = "VI_IN"
interface = "eth1"
vrid = 52
priority = {prio_in}
advert_int = 0.1
version = 3
virtual_addresses = ["{IN}/24"]
garp_master_delay = 0
track_files = ["fault"]
""")
    return path


def holds(pair: Pair, box: str) -> set[str]:
    ns = pair.a if box == "a" else pair.b
    return {name for name, ifname, vip in (("OUT", "eth0", OUT), ("IN", "eth1", IN))
            if ns.has_address(ifname, vip)}  # fmt: skip


def test_the_nat_directors_two_instances_move_together(
    pair: Pair, scripts: ScriptDir  # noqa: F811
) -> None:
    veth(pair.a, "eth1", "10.98.0.1/24", pair.b, "eth1", "10.98.0.2/24")
    record = scripts.script("record.sh", f'echo "$*" >> {scripts.out}/group.log')
    fifo = pair.tmp / "a.fifo"
    group = '\n[[vrrp_sync_group]]\nname = "G"\ninstances = ["VI_OUT", "VI_IN"]\n'
    ca = config(pair, "a", 100, 100, f'notify_fifo = "{fifo}"')
    ca.write_text(ca.read_text() + group + f'notify = "{record}"\n')
    cb = config(pair, "b", 50, 50)
    cb.write_text(cb.read_text() + group)
    with fifo_reader(fifo) as reader:
        da = pair.track(start_agent(pair.a, ca, "agent-a"))
        da.wait_for(r"sync group G: MASTER", 10)
        db = pair.track(start_agent(pair.b, cb, "agent-b"))
        db.wait_for(r"sync group G: BACKUP", 10)
        reader.wait_for('GROUP "G" MASTER 0', 5)
        da.wait_for(r"G notify: .*record\.sh GROUP G MASTER 0: exit 0", 5)
        assert holds(pair, "a") == {"OUT", "IN"}

        # VI_IN's own fault takes VI_OUT down with it: B holds both.
        mark_a, mark_b = da.mark(), db.mark()
        (pair.tmp / "a-fault").write_text("1\n")
        line = da.wait_for(r"VI_OUT \(vrid 51 on eth0\): MASTER -> FAULT \(", 5, after=mark_a)
        assert "sync group G: VI_IN (file fault holds 1) in FAULT" in line, line
        db.wait_for(r"sync group G: MASTER", 5, after=mark_b)
        pair.b.wait_address("eth0", OUT, present=True, timeout=2)
        pair.b.wait_address("eth1", IN, present=True, timeout=2)
        assert holds(pair, "a") == set()
        reader.wait_for('GROUP "G" FAULT 0', 2)

        # Fault gone: A's group leaves FAULT and preempts, both instances together.
        mark_a = da.mark()
        (pair.tmp / "a-fault").write_text("0\n")
        da.wait_for(r"sync group G: MASTER", 10, after=mark_a)
        pair.a.wait_address("eth0", OUT, present=True, timeout=2)
        pair.a.wait_address("eth1", IN, present=True, timeout=2)

        # B's VI_IN alone outranks A's: a split priority, which keepalived's rule keeps
        # from making the group fight itself; B stays BACKUP and A keeps both.
        cb.write_text(raise_in(cb.read_text()))
        mark_a, mark_b = da.mark(), db.mark()
        db.signal(signal.SIGHUP)
        db.wait_for(r"VI_IN: its master is silent, but sync group G stays BACKUP", 5,
                    after=mark_b)  # fmt: skip
        db.assert_quiet(r"-> MASTER", 2, after=mark_b)
        assert holds(pair, "a") == {"OUT", "IN"}

        # Both of B's instances outrank A's: B preempts, and the group moves as one.
        cb.write_text(cb.read_text().replace("priority = 50", "priority = 150"))
        mark_a, mark_b = da.mark(), db.mark()
        db.signal(signal.SIGHUP)
        db.wait_for(r"sync group G: MASTER", 10, after=mark_b)
        reasons = "\n".join(db.lines[mark_b:])
        assert "(sync group G: VI_" in reasons and "became MASTER)" in reasons, reasons
        da.wait_for(r"sync group G: BACKUP", 5, after=mark_a)
        pair.b.wait_address("eth0", OUT, present=True, timeout=2)
        pair.b.wait_address("eth1", IN, present=True, timeout=2)
        assert holds(pair, "a") == set()


def raise_in(text: str) -> str:
    """VI_IN's priority (the second instance) to 150."""
    head, _, tail = text.partition('name = "VI_IN"')
    return head + 'name = "VI_IN"' + tail.replace("priority = 50", "priority = 150", 1)
