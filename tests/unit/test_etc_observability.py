"""etc/'s Grafana dashboard and Prometheus rules use only series that lvsagent exports.

The exported names and labels come from rendering a Metrics over a fake
snapshot and IPVS table (as test_observe_metrics does), so a renamed metric or
a typo in either file fails here.  PyYAML is not in the virtualenv: the rules
file is read with a small reader for the YAML subset it is written in, which
refuses anything outside that subset rather than misreading it.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from lvsagent.observe.ipvsstats import Counters, DestStats, ServiceStats
from lvsagent.observe.metrics import Metrics
from lvsagent.observe.snapshot import (
    AgentSnapshot,
    GuardStatus,
    InstanceStatus,
    IpvsStatus,
    ReloadStatus,
    ServerStatus,
    ServiceStatus,
)

ETC = Path(__file__).resolve().parents[2] / "etc"
DASHBOARD = ETC / "grafana-lvsagent.json"
RULES = ETC / "prometheus-lvsagent-rules.yml"

# Added by Prometheus at scrape time (the box).
TARGET_LABELS = frozenset({"job", "instance"})

SNAP = AgentSnapshot(
    instances=(
        InstanceStatus("VI_1", 51, "eth0", "MASTER", 100, 90, last_transition_at=1.0e9,
                       discards={"ip_ttl_err": 1}, split_brain=True),
    ),
    servers=(ServerStatus("10.0.0.100:80/tcp", "10.0.0.1", 80, True, 3, weight_kernel=3,
                          drained_since=1.0e9),),
    loop_guard=GuardStatus("bypass", True),
    started_at=1.0e9,
    loop_lag=0.001,
    last_reload=ReloadStatus(1.0e9, False, "needs a restart: vrid changed"),
    ipvs=IpvsStatus(False, 2, "cannot read the IPVS table", 1.0e9),
    services=(ServiceStatus("10.0.0.100:80/tcp", True, "10.0.0.9:80"),),
)  # fmt: skip
IPVS = [
    ServiceStats(
        "10.0.0.100:80/tcp",
        Counters(10, 100, 90, 10_000, 9_000, 1, 2, 3, 40, 50),
        (DestStats("10.0.0.1:80", 3, 4, 5, 0, Counters(6, 60, 50, 6_000, 5_000)),),
    )
]


@functools.cache
def exported() -> tuple[dict[str, frozenset[str]], frozenset[str]]:
    """Sample names per metric family, and every label name, as a scrape shows them."""
    metrics = Metrics(lambda: SNAP, ipvs=lambda: IPVS)
    metrics.observe_check("10.0.0.100:80/tcp", "10.0.0.1:80", 0.01)
    families: dict[str, frozenset[str]] = {}
    labels: set[str] = set()
    for family in text_string_to_metric_families(metrics.render().decode()):
        families[family.name] = frozenset(s.name for s in family.samples)
        labels.update(label for s in family.samples for label in s.labels)
    return families, frozenset(labels)


def sample_names() -> frozenset[str]:
    return frozenset().union(*exported()[0].values())


# ----- PromQL: the series and label names an expression refers to --------------------------

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{([^{}]*)\}")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^()]*)\)")
_KEYWORDS = frozenset(
    {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
     "bool", "offset", "atan2", "inf", "nan"}
)  # fmt: skip
_NAME = re.compile(r"(?<![\w.:$])[A-Za-z_:][\w:]*")
_LABEL = re.compile(r"[A-Za-z_]\w*")


def promql_names(expr: str) -> tuple[set[str], set[str]]:
    """(series names, label names) in a PromQL expression, Grafana variables allowed.

    Label names are those in matchers and in by/without/on/ignoring/group_*
    lists; series names are the identifiers left that are not keywords and
    not followed by "(" (functions and aggregations).
    """
    text = _STRING.sub('""', expr)
    labels = {m for body in _MATCHERS.findall(text) for m in _LABEL.findall(body.replace('""', ""))}
    text = _MATCHERS.sub(" ", text)
    labels.update(m for body in _GROUPING.findall(text) for m in _LABEL.findall(body))
    text = _GROUPING.sub(" ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges, subqueries, [$__rate_interval]
    text = re.sub(r"\$\{?\w+\}?", " ", text)
    names = {
        m.group()
        for m in _NAME.finditer(text)
        if m.group().lower() not in _KEYWORDS and not text[m.end() :].lstrip().startswith("(")
    }
    return names, labels


# ----- a reader for the YAML subset the rules file uses ---------------------------------------

_CORE_TYPES = re.compile(  # plain scalars YAML would not read as strings
    r"[-+]?(\d[\d_]*(\.\d*)?([eE][-+]?\d+)?|\.\d+|\.inf|\.nan)|true|false|null|~|yes|no|on|off",
    re.IGNORECASE,
)
_PLAIN_BAD = re.compile(r"^[\[\]{}&*!|>'\"%@`#,?-]|: | #|:$")


def _scalar(text: str, line: int) -> str:
    if text.startswith('"'):
        return str(json.loads(text))  # the escapes this file uses mean the same in JSON
    if len(text) > 1 and text[0] == text[-1] == "'":
        return text[1:-1].replace("''", "'")
    if _CORE_TYPES.fullmatch(text) or _PLAIN_BAD.search(text):
        raise ValueError(f"line {line}: {text!r} is outside the YAML subset this test reads")
    return text


class YamlSubset:
    """Block mappings and sequences, string scalars, ``|`` / ``|-`` block scalars, comments."""

    def __init__(self, text: str) -> None:
        self.lines = text.splitlines()
        self.i = 0

    @classmethod
    def load(cls, text: str) -> Any:
        reader = cls(text)
        doc = reader.node(0)
        if reader._next() is not None:
            raise ValueError(f"line {reader.i + 1}: trailing content")
        return doc

    def _next(self) -> tuple[int, str] | None:
        """Indentation and text of the next line that is not blank or a comment."""
        while self.i < len(self.lines):
            line = self.lines[self.i]
            text = line.strip()
            if text and not text.startswith("#"):
                if "\t" in line[: len(line) - len(line.lstrip())]:
                    raise ValueError(f"line {self.i + 1}: tab in indentation")
                return len(line) - len(line.lstrip(" ")), text
            self.i += 1
        return None

    def _end(self, indent: int) -> None:
        nxt = self._next()
        if nxt is not None and nxt[0] >= indent:
            raise ValueError(f"line {self.i + 1}: unexpected {nxt[1]!r}")

    def node(self, indent: int) -> Any:
        nxt = self._next()
        if nxt is None or nxt[0] != indent:
            raise ValueError(f"line {self.i + 1}: expected content at indentation {indent}")
        return self._seq(indent) if nxt[1].startswith("- ") else self._map(indent)

    def _seq(self, indent: int) -> list[Any]:
        out: list[Any] = []
        while (nxt := self._next()) is not None and nxt[0] == indent and nxt[1].startswith("- "):
            # "- key: value": the item is a node that starts two columns further in.
            self.lines[self.i] = " " * (indent + 2) + nxt[1][2:]
            out.append(self.node(indent + 2))
        self._end(indent)
        return out

    def _map(self, indent: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        while (nxt := self._next()) is not None and nxt[0] == indent:
            m = re.fullmatch(r"([A-Za-z_][\w-]*):(?: +(.*))?", nxt[1])
            if m is None or m.group(1) in out:
                raise ValueError(f"line {self.i + 1}: not a new key: {nxt[1]!r}")
            key, value = m.group(1), m.group(2)
            self.i += 1
            if value is None:
                child = self._next()
                out[key] = self.node(child[0]) if child and child[0] > indent else None
            elif value in ("|", "|-"):
                out[key] = self._block(indent, keep_newline=value == "|")
            else:
                out[key] = _scalar(value, self.i)
        self._end(indent)
        return out

    def _block(self, indent: int, keep_newline: bool) -> str:
        body: list[str] = []
        while self.i < len(self.lines):
            line = self.lines[self.i]
            if line.strip() and len(line) - len(line.lstrip(" ")) <= indent:
                break
            body.append(line)
            self.i += 1
        while body and not body[-1].strip():
            body.pop()
        if not body:
            raise ValueError(f"line {self.i}: empty block scalar")
        cut = min(len(line) - len(line.lstrip(" ")) for line in body if line.strip())
        text = "\n".join(line[cut:] for line in body)
        return text + "\n" if keep_newline else text


# ----- the two files ------------------------------------------------------------------------------


def dashboard() -> dict[str, Any]:
    data = json.loads(DASHBOARD.read_text())
    assert isinstance(data, dict)
    return data


def rules() -> list[dict[str, Any]]:
    doc = YamlSubset.load(RULES.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for p in items:
        yield p
        yield from panels(p.get("panels", []))


def variable_query(var: dict[str, Any]) -> tuple[str, set[str]]:
    """A query variable's PromQL and the label it lists (Grafana's label_values / query_result)."""
    query = var["query"] if isinstance(var["query"], str) else var["query"]["query"]
    if m := re.fullmatch(r"\s*label_values\((.*),\s*(\w+)\s*\)\s*", query, re.DOTALL):
        return m.group(1), {m.group(2)}
    if m := re.fullmatch(r"\s*query_result\((.*)\)\s*", query, re.DOTALL):
        return m.group(1), set()
    raise AssertionError(f"variable {var['name']}: unexpected query {query!r}")


def expressions() -> list[tuple[str, str, set[str]]]:
    """(where, PromQL, extra label names) for every query in both files."""
    out: list[tuple[str, str, set[str]]] = []
    for p in panels(dashboard()["panels"]):
        for t in p.get("targets", []):
            out.append((f"dashboard {p['title']!r} {t['refId']}", t["expr"], set()))
    for var in dashboard()["templating"]["list"]:
        if var["type"] == "query":
            expr, listed = variable_query(var)
            out.append((f"dashboard variable {var['name']}", expr, listed))
    out.extend((f"rule {r['alert']}", r["expr"], set()) for r in rules())
    return out


EXPRESSIONS = expressions()


@pytest.mark.parametrize(("expr", "listed"), [(e, x) for _, e, x in EXPRESSIONS],
                         ids=[w for w, _, _ in EXPRESSIONS])  # fmt: skip
def test_every_query_uses_exported_names_only(expr: str, listed: set[str]) -> None:
    names, labels = promql_names(expr)
    assert names, "no series name found: the checker would pass anything"
    assert names <= sample_names(), f"not exported: {sorted(names - sample_names())}"
    known = exported()[1] | TARGET_LABELS
    assert labels | listed <= known, f"unknown labels: {sorted((labels | listed) - known)}"


def test_templates_name_known_labels() -> None:
    """{{label}} in legends and {{ $labels.x }} in annotations."""
    texts = [t.get("legendFormat", "") for p in panels(dashboard()["panels"])
             for t in p.get("targets", [])]  # fmt: skip
    texts += [v for r in rules() for v in r.get("annotations", {}).values()]
    used = {m for t in texts for m in re.findall(r"\{\{\s*(?:\$labels\.)?(\w+)\s*\}\}", t)}
    assert used - {"value"} <= exported()[1] | TARGET_LABELS


def test_the_dashboard_shows_every_exported_family() -> None:
    used = set().union(*(promql_names(e)[0] for w, e, _ in EXPRESSIONS if w.startswith("dash")))
    # prometheus_client's *_created series (creation timestamps) need no panel.
    missing = [
        name
        for name, samples in exported()[0].items()
        if not samples & used and not name.endswith("_created")
    ]
    assert not missing, f"exported but on no panel: {missing}"


def test_dashboard_is_grafana_json_over_a_prometheus_datasource_variable() -> None:
    data = dashboard()
    variables = {v["name"]: v for v in data["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    ids = []
    for p in panels(data["panels"]):
        ids.append(p["id"])
        grid = p["gridPos"]
        assert grid["x"] >= 0 and grid["w"] > 0 and grid["x"] + grid["w"] <= 24, p["title"]
        for t in p.get("targets", []):
            for ds in (p["datasource"], t["datasource"]):
                assert ds == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
    assert len(ids) == len(set(ids))
    for var in variables.values():
        if var["type"] == "query":
            assert var["datasource"]["uid"] == "${datasource}"


def test_rules_file_has_prometheus_rule_groups() -> None:
    doc = YamlSubset.load(RULES.read_text())
    assert set(doc) == {"groups"}
    alerts = []
    for group in doc["groups"]:
        assert set(group) == {"name", "rules"} and group["rules"]
        for rule in group["rules"]:
            assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule
            assert re.fullmatch(r"Lvsagent[A-Za-z]+", rule["alert"])
            assert rule["labels"]["severity"] in ("critical", "warning")
            assert rule["annotations"]["summary"]
            assert re.fullmatch(r"\d+[smh]", rule.get("for", "0s"))
            alerts.append(rule["alert"])
    assert len(alerts) == len(set(alerts))


# ----- the checker itself -----------------------------------------------------------------------


def test_promql_names_finds_series_and_labels_but_not_functions() -> None:
    names, labels = promql_names(
        'histogram_quantile(0.9, sum by (service, le) (rate(lvsagent_x_bucket{rs=~"$rs"}'
        "[$__rate_interval]))) > 2 * on (job) group_left (vrid) lvsagent_y unless time() > 1e3"
    )
    assert names == {"lvsagent_x_bucket", "lvsagent_y"}
    assert labels == {"service", "le", "rs", "job", "vrid"}


def test_a_misspelled_name_is_caught() -> None:
    names, labels = promql_names('lvsagent_vrrp_stat{state="MASTER", instnce="x"} == 1')
    assert names - sample_names() == {"lvsagent_vrrp_stat"}
    assert labels - (exported()[1] | TARGET_LABELS) == {"instnce"}


def test_yaml_subset_reader() -> None:
    text = "a:\n  - b: 'x''y'\n    c: |\n      p\n\n      q\n  - d: \"e: f\"\n# end\ng: 30s\n"
    assert YamlSubset.load(text) == {"a": [{"b": "x'y", "c": "p\n\nq\n"}, {"d": "e: f"}],
                                     "g": "30s"}  # fmt: skip
    for bad in ("a: 1\n", "a: true\n", "a: [1]\n", "a: b: c\n", "a: x\na: y\n", "a:\n b\n  c: d\n"):
        with pytest.raises(ValueError):
            YamlSubset.load(bad)
