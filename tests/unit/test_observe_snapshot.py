"""The snapshot: a JSON round trip that keeps every field, and a parser that names what is wrong."""

from __future__ import annotations

import json

import pytest

from lvsagent.observe.snapshot import (
    AgentSnapshot,
    GuardStatus,
    InstanceStatus,
    ReloadStatus,
    ServerStatus,
    split_brain,
)


def sample() -> AgentSnapshot:
    return AgentSnapshot(
        instances=(
            InstanceStatus(
                name="VI_1",
                vrid=51,
                interface="eth0",
                state="BACKUP",
                priority=100,
                effective_priority=80,
                master_seen="10.99.0.2",
                last_transition_at=1_700_000_000.25,
                last_transition_reason="higher priority 150 from 10.99.0.2 (ours 80)",
                transitions=3,
                adverts_sent=10,
                adverts_received=200,
                priority_zero_sent=1,
                priority_zero_received=2,
                become_master=2,
                release_master=1,
                discards={"ip_ttl_err": 4, "auth_failure": 1},
                split_brain=False,
            ),
            InstanceStatus("VI_2", 52, "eth1", "INIT", 50, 50),
        ),
        servers=(
            ServerStatus(
                "10.99.0.100:80/tcp", "10.99.0.1", 80, True, 1, "connect ok", 0.0012, 0, 1
            ),
            ServerStatus("10.99.0.100:80/tcp", "10.99.0.2", 80, False, 2, "refused", None, 5, 0),
            ServerStatus("fwmark 5", "10.99.0.3", 0, None, 1),
        ),
        loop_guard=GuardStatus("bypass", True, "redirect 10.99.0.100:80/tcp"),
        config_path="/etc/lvsagent/lvsagent.toml",
        started_at=1_699_999_000.5,
        loop_lag=0.0031,
        last_reload=ReloadStatus(1_700_000_001.5, False, "needs a restart: vrid changed"),
    )


def test_json_round_trip_keeps_every_field() -> None:
    snap = sample()
    again = AgentSnapshot.from_json(snap.to_json())
    assert again == snap
    assert again.instances[0].discards == {"ip_ttl_err": 4, "auth_failure": 1}
    assert again.servers[2].up is None and again.servers[1].latency is None


def test_round_trip_without_a_loop_guard_or_anything_else() -> None:
    assert AgentSnapshot.from_json(AgentSnapshot().to_json()) == AgentSnapshot()


def test_discards_do_not_follow_the_callers_dict() -> None:
    counts = {"ip_ttl_err": 1}
    inst = InstanceStatus("VI_1", 51, "eth0", "MASTER", 100, 100, discards=counts)
    counts["ip_ttl_err"] = 99
    assert inst.discards["ip_ttl_err"] == 1
    with pytest.raises(TypeError):
        inst.discards["ip_ttl_err"] = 2  # type: ignore[index]


def _mutated(path: list[str | int], value: object) -> str:
    data = json.loads(sample().to_json())
    target = data
    for key in path[:-1]:
        target = target[key]
    if value is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return json.dumps(data)


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (["instances", 0, "vrid"], "51", r"instances\[0\]\.vrid: expected int"),
        (["instances", 0, "vrid"], True, r"instances\[0\]\.vrid: expected int"),
        (["instances", 1, "split_brain"], 1, r"instances\[1\]\.split_brain: expected bool"),
        (["instances", 0, "discards", "ip_ttl_err"], "4", r"discards\.ip_ttl_err"),
        (["servers", 1, "up"], "no", r"servers\[1\]\.up: expected bool"),
        (["servers", 0, "port"], KeyError, r"servers\[0\]\.port: missing"),
        (["loop_lag"], None, r"snapshot\.loop_lag: expected int/float"),
        (["instances"], {}, r"snapshot\.instances: expected list"),
        (["loop_guard"], [], r"loop_guard: expected an object"),
    ],
)
def test_from_json_names_the_field_that_is_wrong(
    path: list[str | int], value: object, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        AgentSnapshot.from_json(_mutated(path, value))


@pytest.mark.parametrize("text", ["", "{", "[1, 2]", b"\xff\xfe"])
def test_from_json_refuses_what_is_not_a_snapshot(text: str | bytes) -> None:
    with pytest.raises(ValueError):
        AgentSnapshot.from_json(text)


@pytest.mark.parametrize(
    ("state", "priority", "seen_at", "expected"),
    [
        ("MASTER", 100, 99.0, True),  # another master heard 1 s ago
        ("MASTER", 100, 96.5, False),  # last heard 3.5 intervals ago: gone
        ("MASTER", 0, 99.0, False),  # a release, not a master
        ("MASTER", None, None, False),  # never heard anyone
        ("BACKUP", 100, 99.0, False),  # a backup hearing a master is normal
    ],
)
def test_split_brain(
    state: str, priority: int | None, seen_at: float | None, expected: bool
) -> None:
    assert split_brain(state, priority, seen_at, 1.0, now=100.0) is expected
