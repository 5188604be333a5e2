"""Config fragments for the loader's unit tests, and the ways they read a file.

One copy of the smallest valid pieces (an instance, a service, a real server...) that
the config tests (test_config*.py) put together, so that each negative case differs
from a valid file by exactly its one mistake.
"""

from __future__ import annotations

import pytest

from lvsagent.config.errors import ConfigError, Problem, format_problems
from lvsagent.config.loader import parse_config
from lvsagent.config.schema import Config

INSTANCE = """
[[vrrp_instance]]
name = "VI_1"
interface = "eth0"
vrid = 51
virtual_addresses = ["10.0.0.100"]
"""
SECOND = """
[[vrrp_instance]]
name = "VI_2"
interface = "eth0"
vrid = 52
virtual_addresses = ["10.0.0.101"]
"""
SERVICE = """
[[virtual_server]]
address = "10.0.0.100"
port = 80
"""
REAL = """
[[virtual_server.real_server]]
address = "10.0.0.1"
port = 80
"""
HEALTH = "\n[virtual_server.health]\n"
TCP = "\n[virtual_server.health.tcp]\n"
HTTP = "\n[virtual_server.health.http]\n"
GLOBAL = "[global]\n"


def problems_of(text: str) -> list[Problem]:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "t.toml")
    return caught.value.problems


def load(text: str) -> Config:
    return parse_config(text, "t.toml")


def rule_rejects(text: str, key: str, fragment: str) -> None:
    """``text`` has exactly one problem, at ``key``, saying ``fragment``, with its line."""
    problems = problems_of(text)
    assert [p.key for p in problems] == [key], format_problems(problems)
    assert fragment in problems[0].message
    assert problems[0].line is not None
