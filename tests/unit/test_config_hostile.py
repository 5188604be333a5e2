"""Hostile config files: every one is a located ConfigError, never a traceback.

Why: `lvsagent check` runs in ExecStartPre and ExecReload, and the daemon re-reads
the file on SIGHUP.  A file that crashes the parser (exit 1) looks like a daemon bug
to systemd and is retried; one that hangs the reader (a FIFO, /dev/zero) stalls VRRP.
The operator must get `file:line: message` and exit 78, whatever the file holds.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lvsagent import cli
from lvsagent.config.errors import MAX_PROBLEMS, ConfigError, Problem
from lvsagent.config.loader import MAX_CONFIG_BYTES, load_config, parse_config
from lvsagent.config.locate import Locator
from lvsagent.config.schema import Config

VALID = """\
[global]
router_id = "box-a"

[[vrrp_instance]]
name = "VI_1"
interface = "eth0"
vrid = 51
virtual_addresses = ["10.0.0.100/24"]
"""


def problems_of(text: str) -> list[Problem]:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "h.toml")
    return caught.value.problems


# --- what used to escape as a traceback ------------------------------------------------


@pytest.mark.parametrize(
    ("value", "what"),
    [
        ("{a = " * 400 + "1" + "}" * 400, "nested"),  # RecursionError in tomllib
        ("[" * 600 + "]" * 600, "nested"),  # RecursionError in tomllib
        ("9" * 5000, "4300 digits"),  # ValueError from int()
    ],
    ids=["inline-tables", "arrays", "long-integer"],
)
def test_parser_limits_are_located_problems(value: str, what: str) -> None:
    problems = problems_of(VALID.replace('router_id = "box-a"\n', f"\n\nodd = {value}\n"))
    assert what in problems[0].message
    assert problems[0].line == 4


def test_the_locator_skips_what_is_nested_too_deep_without_recursion() -> None:
    text = "k = " + "[" * 5000 + "]" * 5000 + "\nafter = 1\n"
    locator = Locator(text)
    assert locator.line_of("after") == 2
    assert locator.line_of("k" + "[0]" * 40) == 1  # placed at the deepest key it records


def test_a_huge_advert_interval_is_a_problem_not_an_overflow() -> None:
    for version in (2, 3):
        (problem,) = problems_of(VALID + f"version = {version}\nadvert_int = 1e308\n")
        assert problem.key == "vrrp_instance[0].advert_int"
        assert problem.line == 10


def test_not_a_regular_file_is_refused_without_reading(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo.toml"
    os.mkfifo(fifo)  # no writer: a blocking open or read would never return
    cases = {"/dev/zero": "a character device", str(fifo): "a FIFO", str(tmp_path): "a directory"}
    for path, kind in cases.items():
        with pytest.raises(ConfigError) as caught:
            load_config(path)
        (problem,) = caught.value.problems
        assert problem.message.startswith(f"not a regular file ({kind})")
        assert str(problem).startswith(f"{path}: ")


def test_a_file_over_the_size_cap_is_refused(tmp_path: Path) -> None:
    big = tmp_path / "big.toml"
    with open(big, "wb") as f:
        f.truncate(MAX_CONFIG_BYTES + 1)  # sparse: costs no disk
    with pytest.raises(ConfigError) as caught:
        load_config(str(big))
    assert f"larger than the {MAX_CONFIG_BYTES} bytes" in caught.value.problems[0].message


def test_the_cli_exits_78_for_each_of_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    deep = tmp_path / "deep.toml"
    deep.write_text("a = " + "[" * 600 + "]" * 600 + "\n")
    for path in ("/dev/zero", str(deep)):
        assert cli.main(["check", path]) == cli.EX_CONFIG
        err = capsys.readouterr().err
        assert "nothing was changed" in err and "Traceback" not in err


def test_problems_past_the_cap_are_counted_not_listed() -> None:
    text = VALID + "".join(f"unknown{i} = {i}\n" for i in range(20_000))
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "h.toml")
    error = caught.value
    assert len(error.problems) == MAX_PROBLEMS
    assert error.total == 20_000
    assert str(error).endswith(f"... and {20_000 - MAX_PROBLEMS} more problem(s) not shown")


# --- every problem printable and located ---------------------------------------------------


def test_key_names_with_control_characters_are_escaped() -> None:
    forged = 'x\nh.toml:1: global.router_id: forged\x1b[2J'
    problems = problems_of(VALID.replace("[global]\n", f"[global]\n{json.dumps(forged)} = 1\n"))
    (problem,) = problems
    text = str(problem)
    assert text.isprintable()
    assert "\\n" in text and "\\x1b" in text
    assert problem.line == 2


def test_problem_fields_are_escaped_however_made() -> None:
    problem = Problem("a\nb.toml", 3, "k\r", "bad\x00value")
    assert str(problem) == "a\\nb.toml:3: k\\r: bad\\x00value"


def test_a_misspelled_array_of_tables_beside_its_subtable_has_a_line() -> None:
    text = VALID + '\n[[virtual_servr]]\naddress = "10.0.0.100"\n\n[virtual_server.health]\n'
    problems = problems_of(text)
    assert [(p.key, p.line) for p in problems] == [
        ("virtual_servr", 10),
        ("virtual_server", 13),
    ]


# --- generated hostile files --------------------------------------------------------------

KEYS = (
    "router_id", "loop_guard", "state_dir", "ipvs_sync_interface", "name", "interface", "vrid",
    "priority", "advert_int", "version", "unicast_src", "unicast_peers", "virtual_addresses",
    "track_interfaces", "garp_master_delay", "address", "port", "fwmark", "instance", "health",
    "real_server", "type", "interval", "retry", "rise", "http", "path", "host", "status_codes",
)  # fmt: skip
HEADERS = (
    "[global]", "[[vrrp_instance]]", "[[virtual_server]]", "[virtual_server.health]",
    "[virtual_server.health.http]", "[[virtual_server.real_server]]", "[[virtual_servr]]",
    "[virtual_server.real_server.health]", "[global.x]", "[[global]]",
)  # fmt: skip
WORDS = ("10.0.0.1", "10.0.0.100/24", "eth0", "200-299", "/", "http", "VI_1", "../../x")

keys = st.one_of(st.sampled_from(KEYS), st.text(min_size=1, max_size=6))
scalars = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(),
    st.booleans(),
    st.text(max_size=10),
    st.sampled_from(WORDS),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(keys, inner, min_size=1, max_size=3)
    ),
    max_leaves=8,
)


def toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return {"nan": "nan", "inf": "inf", "-inf": "-inf"}.get(repr(value), repr(value))
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # control characters as \\uXXXX
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    assert isinstance(value, dict)
    return "{" + ", ".join(f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items()) + "}"


def toml_key(key: str) -> str:
    return key if key in KEYS else json.dumps(key, ensure_ascii=False)


@st.composite
def hostile_files(draw: st.DrawFn) -> str:
    """The valid file with values replaced and keys added, then more tables of any kind."""
    out = []
    for line in VALID.splitlines():
        key, eq, _ = line.partition(" = ")
        if eq and draw(st.integers(0, 3)) == 0:
            line = f"{key} = {toml_value(draw(values))}"
        out.append(line)
        if line.startswith("[") and draw(st.booleans()):
            for k, v in draw(st.lists(st.tuples(keys, values), max_size=3)):
                out.append(f"{toml_key(k)} = {toml_value(v)}")
    for header in draw(st.lists(st.sampled_from(HEADERS), max_size=4)):
        out.append(header)
        for k, v in draw(st.lists(st.tuples(keys, values), max_size=3)):
            out.append(f"{toml_key(k)} = {toml_value(v)}")
    return "\n".join(out) + "\n"


def check_outcome(text: str) -> None:
    """parse returns a Config or raises ConfigError; each problem located and printable."""
    try:
        config = parse_config(text, "h.toml")
    except ConfigError as error:
        assert error.problems
        for problem in error.problems:
            assert problem.line is not None and problem.line >= 1, str(problem)
            assert str(problem).isprintable(), repr(str(problem))
    else:
        assert isinstance(config, Config)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hostile_files())
def test_generated_configs_give_a_config_or_located_printable_problems(text: str) -> None:
    check_outcome(text)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_any_text_gives_a_config_or_located_printable_problems(text: str) -> None:
    check_outcome(text)
