"""Read deploy/ for the tests: PromQL of the dashboard and the alert rules, the metric names
they use, the metric catalogue table of deploy/README.md and a Prometheus text exposition.

Shared by tests/unit/test_deploy_files.py (static checks) and tests/integration/
test_deploy.py (checks against a live daemon and a real Prometheus)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.paths import REPO

DEPLOY = REPO / "deploy"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
PROMETHEUS_YML = DEPLOY / "prometheus" / "prometheus.yml"
DASHBOARD = DEPLOY / "grafana" / "voicecall-dashboard.json"
README = DEPLOY / "README.md"

# Series that are not voicecall's own but may be queried: Prometheus's scrape health and
# prometheus_client's standard process, GC and platform collectors on the node registry.
FOREIGN = re.compile(r"^(up|process_[a-z_]+|python_[a-z_]+)$")

_KEYWORDS = frozenset({
    "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless",
    "offset", "bool", "atan2", "inf", "nan", "Inf", "NaN",
})
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_GRAFANA_VAR = re.compile(r"\$\{[^}]*\}|\$\w+")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_TOKEN = re.compile(r"\d[\w.]*(?:[eE][+-]?\d+)?|[A-Za-z_:][A-Za-z0-9_:]*")
# Grafana's template query label_values(<series selector>, <label>) is not PromQL.
_LABEL_VALUES = re.compile(r"^\s*label_values\(\s*(?:(.+?)\s*,\s*)?[A-Za-z_]\w*\s*\)\s*$", re.S)


def promql_metric_names(expr: str) -> set[str]:
    """Metric names an expression selects: identifiers that are not functions or
    aggregations (followed by ``(``), keywords, label names (inside ``{}`` or a grouping
    clause), numbers, durations or Grafana variables."""
    lv = _LABEL_VALUES.match(expr)
    if lv is not None:
        expr = lv.group(1) or ""
    s = _STRING.sub('""', expr)
    s = _GRAFANA_VAR.sub("1", s)
    s = re.sub(r"\{[^}]*\}", " ", s)
    s = re.sub(r"\[[^\]]*\]", " ", s)
    s = _GROUPING.sub(" ", s)
    names: set[str] = set()
    for m in _TOKEN.finditer(s):
        tok = m.group(0)
        if tok[0].isdigit() or tok in _KEYWORDS:
            continue
        if s[m.end():].lstrip().startswith("("):
            continue
        names.add(tok)
    return names


def load_dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return data


def _walk(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for v in node.values():
            yield from _walk(v)
    elif isinstance(node, list):
        for v in node:
            yield from _walk(v)


def dashboard_exprs(dash: dict[str, Any]) -> list[str]:
    """Every query of the dashboard: panel targets (rows' nested panels included) and
    template variable queries."""
    exprs = [t["expr"] for p in _walk(dash.get("panels", [])) for t in p.get("targets", [])
             if isinstance(t, dict) and "expr" in t]
    for var in dash.get("templating", {}).get("list", []):
        q = var.get("query")
        if var.get("type") != "query":
            continue
        exprs.append(q["query"] if isinstance(q, dict) else q)
    return exprs


def load_alerts() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    return data


def alert_rules() -> list[dict[str, Any]]:
    return [r for g in load_alerts()["groups"] for r in g["rules"]]


def grafana_to_promql(expr: str, rate_interval: str = "1m") -> str:
    """A dashboard query as Prometheus itself would receive it from Grafana."""
    return (expr.replace("$__rate_interval", rate_interval).replace("${node}", ".*")
            .replace("$node", ".*"))


@dataclass(frozen=True)
class CatalogueEntry:
    name: str
    type: str
    labels: tuple[str, ...]

    def sample_names(self) -> set[str]:
        """Names of the series Prometheus stores for this metric."""
        if self.type == "histogram":
            return {f"{self.name}_{s}" for s in ("bucket", "sum", "count")}
        return {self.name}


_ROW = re.compile(r"^\|\s*`(voicecall_[a-z0-9_]+)`\s*\|\s*(counter|gauge|histogram)\s*\|"
                  r"\s*([^|]*)\|")


def readme_catalogue() -> dict[str, CatalogueEntry]:
    """The metric table of deploy/README.md (between the catalogue markers)."""
    text = README.read_text(encoding="utf-8")
    start, end = text.index("<!-- catalogue:start -->"), text.index("<!-- catalogue:end -->")
    out: dict[str, CatalogueEntry] = {}
    for line in text[start:end].splitlines():
        m = _ROW.match(line)
        if m is None:
            continue
        labels = tuple(x.strip().strip("`") for x in m.group(3).split(",") if x.strip())
        assert m.group(1) not in out, f"{m.group(1)} twice in the README table"
        out[m.group(1)] = CatalogueEntry(m.group(1), m.group(2), labels)
    return out


def catalogue_sample_names() -> set[str]:
    return {n for e in readme_catalogue().values() for n in e.sample_names()}


@dataclass
class Family:
    name: str  # as in the TYPE line (counters: with _total)
    type: str
    label_sets: set[tuple[str, ...]]

    def sample_names(self) -> set[str]:
        if self.type == "histogram":
            return {f"{self.name}_{s}" for s in ("bucket", "sum", "count")}
        if self.type == "summary":
            return {self.name, f"{self.name}_sum", f"{self.name}_count"}
        return {self.name}


_SAMPLE = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})?\s+\S+")
_LABEL_NAME = re.compile(r'([A-Za-z_]\w*)="(?:[^"\\]|\\.)*"')


def parse_exposition(text: str) -> dict[str, Family]:
    """Families of a Prometheus text exposition by TYPE name, with the sorted label names of
    their samples (prometheus_client prints labels sorted, so declaration order is not
    observable). ``le`` of histogram buckets is left out, and so are the ``*_created``
    gauges prometheus_client adds next to each counter and histogram."""
    fams: dict[str, Family] = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(None, 3)
            fams[name] = Family(name, kind.strip(), set())
            continue
        m = _SAMPLE.match(line)
        if m is None or line.startswith("#"):
            continue
        sample, labels = m.group(1), m.group(2) or ""
        for fam in fams.values():
            if sample in fam.sample_names():
                fam.label_sets.add(tuple(sorted(n for n in _LABEL_NAME.findall(labels)
                                                if n != "le")))
    for name in [n for n in fams if n.endswith("_created")]:
        base = name[:-len("_created")]
        if fams[name].type == "gauge" and (
                fams.get(base + "_total", Family("", "", set())).type == "counter"
                or fams.get(base, Family("", "", set())).type in ("histogram", "summary")):
            del fams[name]
    return fams


def deploy_path(*parts: str) -> Path:
    return DEPLOY.joinpath(*parts)
