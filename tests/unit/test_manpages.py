"""doc/'s man pages say what the code does: every verb, option, exit status, key and default.

lvsagent.toml(5) documents each key as a ``.TP`` entry tagged ``\\fBkey\\fR = default``
(the default as ``lvsagent check --print`` writes it) or ``\\fBkey\\fR (note)``; a key
the loader accepts and the page leaves out, or a default that differs, fails here.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from lvsagent import __version__, cli
from lvsagent.config.checkkeys import DNS_KEYS, SUBTABLES, TLS_KEYS, UDP_KEYS
from lvsagent.config.effective import effective_toml
from lvsagent.config.instances import INSTANCE_KEYS
from lvsagent.config.loader import GLOBAL_KEYS, parse_config
from lvsagent.config.scripts import (
    MISC_KEYS,
    SYNC_GROUP_KEYS,
    TRACK_FILE_KEYS,
    TRACK_PROCESS_KEYS,
    VRRP_SCRIPT_KEYS,
)
from lvsagent.config.services import HEALTH_KEYS, HTTP_KEYS, REAL_KEYS, SERVICE_KEYS, TCP_KEYS
from lvsagent.convert import findings
from lvsagent.convert.command import EX_CANTCREAT
from tests.unit.sample_configs import MINIMAL

ROOT = Path(__file__).resolve().parents[2]
PAGE_8 = (ROOT / "doc" / "lvsagent.8").read_text()
PAGE_5 = (ROOT / "doc" / "lvsagent.toml.5").read_text()

SECTIONS = {
    "global": set(GLOBAL_KEYS),
    "vrrp_instance": set(INSTANCE_KEYS),
    "virtual_server": set(SERVICE_KEYS) - {"health", "real_server"},
    "virtual_server.health": set(HEALTH_KEYS) - {"tcp", "http", "misc", *SUBTABLES},
    "virtual_server.health.tcp": set(TCP_KEYS),
    "virtual_server.health.http": set(HTTP_KEYS),
    "virtual_server.health.tls": set(TLS_KEYS),
    "virtual_server.health.udp": set(UDP_KEYS),
    "virtual_server.health.dns": set(DNS_KEYS),
    "virtual_server.health.misc": set(MISC_KEYS),
    "virtual_server.real_server": set(REAL_KEYS),
    "vrrp_script": set(VRRP_SCRIPT_KEYS),
    "track_file": set(TRACK_FILE_KEYS),
    "track_process": set(TRACK_PROCESS_KEYS),
    "vrrp_sync_group": set(SYNC_GROUP_KEYS),
}
_TAG = re.compile(r"^\\fB(\w+)\\fR(?: = (.*)| \((.*)\))?$")


def roff_text(text: str) -> str:
    return text.replace("\\-", "-").replace("\\(dq", '"')


def documented_keys() -> dict[str, dict[str, str | None]]:
    """Section -> key -> the documented default (None: a note instead)."""
    sections: dict[str, dict[str, str | None]] = {}
    current: dict[str, str | None] | None = None
    lines = PAGE_5.splitlines()
    for i, line in enumerate(lines):
        header = re.fullmatch(r"\.SS \[\[?([\w.]+)\]\]?", line)
        if header:
            current = sections.setdefault(header.group(1), {})
        elif line.startswith(".SH"):
            current = None
        elif current is not None and i > 0 and lines[i - 1] in (".TP", ".TQ"):
            tag = _TAG.match(line)
            assert tag, f"lvsagent.toml.5:{i + 1}: a key entry should be \\fBkey\\fR ...: {line}"
            current[tag.group(1)] = roff_text(tag.group(2)) if tag.group(2) else None
    return sections


def printed_defaults() -> dict[str, dict[str, str]]:
    """Section -> key -> value text, as `check --print` writes a minimal config."""
    out: dict[str, dict[str, str]] = {}
    table: dict[str, str] = {}
    for line in effective_toml(parse_config(MINIMAL, "m.toml"), "x").splitlines():
        header = re.fullmatch(r"\[\[?([\w.]+)\]\]?", line)
        if header:
            table = out.setdefault(header.group(1), {})
        elif " = " in line:
            key, value = line.split(" = ", 1)
            table[key] = value
    return out


def test_toml5_documents_every_key_the_loader_reads() -> None:
    documented = documented_keys()
    assert set(documented) == set(SECTIONS)
    for section, keys in SECTIONS.items():
        assert set(documented[section]) == keys, section


def test_toml5_defaults_are_the_codes() -> None:
    printed = printed_defaults()
    documented = documented_keys()
    compared = 0
    for section, keys in documented.items():
        for key, default in keys.items():
            if default is not None:
                assert printed[section][key] == default, f"[{section}] {key}"
                compared += 1
    assert compared >= 45


def parser_options() -> dict[str, set[str]]:
    parser = cli._parser()
    (sub,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {
        verb: {
            opt
            for action in p._actions
            for opt in action.option_strings
            if opt.startswith("--") and opt != "--help"
        }
        for verb, p in sub.choices.items()
    }


def test_lvsagent8_names_every_verb_and_option() -> None:
    text = roff_text(PAGE_8)
    synopsis = text.split(".SH DESCRIPTION")[0]
    for verb, options in parser_options().items():
        assert f".B lvsagent {verb}" in synopsis, verb
        assert f".TP\n.B {verb}\n" in text, verb  # under COMMANDS
        block = synopsis.split(f".B lvsagent {verb}")[1].split(".br")[0]
        for option in options:
            short = {"--output": "-o", "--config-id": "-i"}.get(option, option)
            assert short in block, f"{verb} {option}"
    assert ".B lvsagent --version" in synopsis


def test_lvsagent8_lists_every_exit_status() -> None:
    section = PAGE_8.split(".SH EXIT STATUS")[1].split(".SH ")[0]
    listed = {int(n) for n in re.findall(r"^\.TP\n\.B (\d+)$", section, re.M)}
    codes = {v for k, v in vars(cli).items() if k.startswith("EX_")}
    codes |= {v for k, v in vars(findings).items() if k.startswith("EXIT_")} | {EX_CANTCREAT}
    assert listed == codes


def test_pages_carry_the_version() -> None:
    for page in (PAGE_8, PAGE_5):
        assert f'"lvsagent {__version__}"' in page.split("\n.TH ")[1].splitlines()[0]


def test_readme_gives_the_same_exit_statuses() -> None:
    readme = (ROOT / "README.md").read_text()
    paragraph = readme.split("Exit codes (sysexits):")[1].split("\n\n")[0]
    for code in (0, 64, 69, 71, 73, 75, 76, 77, 78):
        assert re.search(rf"\b{code}\b", paragraph), code
