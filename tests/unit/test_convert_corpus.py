"""lvsagent convert on real keepalived.conf files: never a crash, always valid TOML.

Three sets: the samples Debian's keepalived package ships, the 68 public files
in ../shared/keepalived-confs (read in place, never copied: LVSAGENT_KEEPALIVED_CONFS
overrides the directory), and the design's two boxes (tests/unit/convert_fixtures).
Each test prints its counts per outcome (pytest -s shows them).
"""

from __future__ import annotations

import csv
import gzip
import os
from collections import Counter
from pathlib import Path

import pytest

from lvsagent.config.loader import load_config, parse_config
from lvsagent.config.schema import Config
from lvsagent.convert.conversion import Conversion, convert
from lvsagent.convert.files import host_source
from lvsagent.convert.findings import EXIT_COMPLETE, EXIT_OMISSIONS, EXIT_REFUSED
from lvsagent.convert.lexer import Source

REPO = Path(__file__).resolve().parents[2]
# Where the corpus lives beside the project's checkout (../shared); a clone made elsewhere
# (CI may clone into /tmp) finds it at the workplace's fixed path.
_CORPUS_PLACES = [
    REPO.parent / "shared" / "keepalived-confs",
    Path("/work/shared/keepalived-confs"),
]
CORPUS = Path(
    os.environ.get("LVSAGENT_KEEPALIVED_CONFS")
    or next((p for p in _CORPUS_PLACES if p.is_dir()), _CORPUS_PLACES[0])
)
SAMPLES = Path("/usr/share/doc/keepalived/samples")
FIXTURES = Path(__file__).parent / "convert_fixtures"
OUTCOME = {EXIT_COMPLETE: "complete", EXIT_OMISSIONS: "omissions", EXIT_REFUSED: "refused"}


def check(result: Conversion) -> str:
    """Either TOML that lvsagent check accepts, or a refusal with located errors."""
    if result.toml is None:
        errors = result.findings.of("error")
        assert errors and all(e.file for e in errors)
        assert result.exit_status == EXIT_REFUSED
    else:
        parse_config(result.toml, "converted.toml")
        assert result.exit_status in (EXIT_COMPLETE, EXIT_OMISSIONS)
    return OUTCOME[result.exit_status]


def gz_source() -> Source:
    """The host's files, with a gzipped sample read as its content."""
    host = host_source()

    def read(path: str) -> bytes:
        data = host.read(path)
        return gzip.decompress(data) if path.endswith(".gz") else data

    return Source(read=read, glob=host.glob)


@pytest.mark.skipif(not CORPUS.is_dir(), reason=f"no keepalived corpus at {CORPUS}")
def test_public_corpus() -> None:
    with open(CORPUS / "INDEX.tsv", encoding="utf-8") as file:
        index = list(csv.DictReader(file, delimiter="\t"))
    assert len(index) == 68
    outcomes: Counter[tuple[str, str, str]] = Counter()
    supported_lvs: dict[str, str] = {}
    for row in index:
        outcome = check(convert(str(CORPUS / row["file"]), host_source(), "none"))
        outcomes[(row["kind"], row["lvsagent_supported"], outcome)] += 1
        if row["kind"] == "lvs" and row["lvsagent_supported"] == "yes":
            supported_lvs[row["file"]] = outcome
    for key, count in sorted(outcomes.items()):
        print("corpus", *key, count)
    complete = sum(1 for o in supported_lvs.values() if o == "complete")
    print("supported LVS files converted completely:", complete, "of", len(supported_lvs))
    assert complete >= 0.8 * len(supported_lvs), supported_lvs


@pytest.mark.skipif(not SAMPLES.is_dir(), reason="Debian's keepalived package is not installed")
def test_debian_samples() -> None:
    samples = sorted(p for p in SAMPLES.iterdir() if p.name.startswith("keepalived.conf"))
    assert samples
    outcomes = Counter(check(convert(str(p), gz_source(), "none")) for p in samples)
    print("debian samples", dict(outcomes))
    assert sum(outcomes.values()) == len(samples)


def _seed(box: str) -> tuple[Conversion, Config]:
    result = convert(str(FIXTURES / f"seed-box-{box}.conf"), host_source(), "none")
    assert result.toml is not None, [str(f) for f in result.findings.sorted()]
    return result, parse_config(result.toml, "converted.toml")


@pytest.mark.parametrize("box", ["a", "b"])
def test_seed_pair_converts_completely_and_means_etc_box(box: str) -> None:
    """Same instances, VIPs, services, real servers and checks as etc/box-*.toml.

    The known differences, each keepalived's behaviour kept on purpose: router_id
    (LVS_DEVEL in both keepalived files, LVS_A/LVS_B in etc), alpha (keepalived's
    default off: a server gets traffic before its first check).
    """
    result, got = _seed(box)
    assert result.exit_status == EXIT_COMPLETE
    want = load_config(str(REPO / "etc" / f"box-{box}.toml"))
    assert got.global_.loop_guard == want.global_.loop_guard
    assert got.vrrp_instances == want.vrrp_instances
    assert len(got.virtual_servers) == len(want.virtual_servers) == 1
    g, w = got.virtual_servers[0], want.virtual_servers[0]
    for name in ("address", "port", "protocol", "scheduler", "forwarding", "instance",
                 "persistence_timeout", "real_servers"):  # fmt: skip
        assert getattr(g, name) == getattr(w, name), name
    for name in ("type", "interval", "retry", "delay_before_retry", "on_failure", "tcp"):
        assert getattr(g.health, name) == getattr(w.health, name), name
    assert (g.health.alpha, w.health.alpha) == (False, True)
