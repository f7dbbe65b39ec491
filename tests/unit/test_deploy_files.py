"""deploy/ checked with the real tools: promtool (config, rules, rule unit tests, every
dashboard query parsed), systemd-analyze (the unit), voicecall's config loader (the compose
node configuration), plus the dashboard's structure and its metric names against the
catalogue table of deploy/README.md. The live checks are in tests/integration/test_deploy.py."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from control_api.config import parse_config
from tests.deploy_files import (
    ALERTS,
    DEPLOY,
    FOREIGN,
    PROMETHEUS_YML,
    alert_rules,
    catalogue_sample_names,
    dashboard_exprs,
    grafana_to_promql,
    load_dashboard,
    promql_metric_names,
    readme_catalogue,
)

UNIT = DEPLOY / "systemd" / "voicecall.service"


def tool(name: str) -> str:
    path = shutil.which(name)
    # A missing tool is a failure, not a skip: `make test` installs it (Makefile DEB_TEST).
    assert path is not None, f"{name} is not installed (Debian package in Makefile DEB_TEST)"
    return path


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=60)


# ----------------------------------------------------------------------------- PromQL names
@pytest.mark.parametrize(("expr", "names"), [
    ('sum by (gateway) (rate(voicecall_gateway_calls_total{outcome="answered", '
     'node=~"$node"}[$__rate_interval]))', {"voicecall_gateway_calls_total"}),
    ("histogram_quantile(0.99, sum by (node, le) (rate(voicecall_event_loop_lag_seconds_bucket"
     "[5m]))) > 0.05", {"voicecall_event_loop_lag_seconds_bucket"}),
    ("a_total / on (node) group_left(version) b_info * 1e3 offset 5m",
     {"a_total", "b_info"}),
    ('count(x == 0) or vector(0) and up{job="voicecall"} unless y bool > 2',
     {"x", "up", "y"}),
    ("min(time() - voicecall_start_time_seconds{node=~\"${node}\"})",
     {"voicecall_start_time_seconds"}),
    ("label_values(voicecall_build_info, node)", {"voicecall_build_info"}),
    ('label_values(voicecall_gateway_up{node="a"}, gateway)', {"voicecall_gateway_up"}),
    ("label_values(node)", set()),
    ('sum without (le) (foo:bar:rate5m) + count_values("v", baz)', {"foo:bar:rate5m", "baz"}),
    ('{__name__="quoted"}', set()),
])
def test_promql_metric_names(expr: str, names: set[str]) -> None:
    assert promql_metric_names(expr) == names


# ----------------------------------------------------------------------------- Prometheus
def test_promtool_check_config_and_rules() -> None:
    promtool = tool("promtool")
    r = run(promtool, "check", "config", str(PROMETHEUS_YML))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout and "1 rule files found" in r.stdout, r.stdout
    r = run(promtool, "check", "rules", str(ALERTS))
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in r.stdout, r.stdout


def test_promtool_rule_unit_tests() -> None:
    r = run(tool("promtool"), "test", "rules", "alerts_test.yml", cwd=DEPLOY / "prometheus")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout
    tested = set(re.findall(r"alertname: (\w+)", (DEPLOY / "prometheus" /
                                                  "alerts_test.yml").read_text()))
    # Every alert has at least one firing case (and the quiet series next to it).
    assert tested == {r["alert"] for r in alert_rules()}


@pytest.mark.parametrize(("old", "new", "alert"), [
    ("expr: voicecall_gateway_up == 0", "expr: voicecall_gateway_up == 2",
     "VoicecallGatewayDown"),
    # Without the `or ... * 0` term a gateway with no answered call at all is not seen.
    ("              or\n                increase(voicecall_gateway_calls_total[15m]) * 0\n",
     "", "VoicecallGatewayASRLow"),
    # Every node reports the shared outbox: sum() would double it.
    ('max(voicecall_cdr_outbox_items{state="pending"})',
     'sum(voicecall_cdr_outbox_items{state="pending"})', "VoicecallCdrOutboxBacklog"),
    # Late ticks on a node without media (nobody hears them) must not page.
    ("          and\n          sum by (node) (voicecall_media_endpoints) > 0\n", "",
     "VoicecallMediaLateTicks"),
])
def test_promtool_unit_tests_catch_broken_rules(tmp_path: Path, old: str, new: str,
                                                alert: str) -> None:
    """The rule tests are not vacuous: the same tests against a broken rule fail."""
    rules = ALERTS.read_text()
    assert rules.count(old) == 1, old
    (tmp_path / "alerts.yml").write_text(rules.replace(old, new))
    shutil.copy(DEPLOY / "prometheus" / "alerts_test.yml", tmp_path)
    r = run(tool("promtool"), "test", "rules", "alerts_test.yml", cwd=tmp_path)
    assert r.returncode != 0 and f"alertname: {alert}" in r.stdout + r.stderr, r.stdout


def test_alert_rules_are_documented_and_labelled() -> None:
    rules = alert_rules()
    names = [r["alert"] for r in rules]
    assert len(names) == len(set(names))
    assert {"VoicecallNodeDown", "VoicecallGatewayDown", "VoicecallGatewayASRLow",
            "VoicecallWebhookFailures", "VoicecallCdrOutboxBacklog", "VoicecallEventLoopLag",
            "VoicecallRtpLoss", "VoicecallMediaLateTicks"} <= set(names)
    readme = (DEPLOY / "README.md").read_text()
    for r in rules:
        assert r["labels"]["severity"] in ("critical", "warning", "info"), r["alert"]
        assert r["annotations"]["summary"] and r["annotations"]["description"], r["alert"]
        assert f"`{r['alert']}`" in readme, f"{r['alert']} missing from deploy/README.md"


def test_prometheus_config_targets_and_rules() -> None:
    cfg = yaml.safe_load(PROMETHEUS_YML.read_text())
    assert cfg["rule_files"] == ["alerts.yml"]
    job = next(j for j in cfg["scrape_configs"] if j["job_name"] == "voicecall")
    assert job.get("metrics_path", "/metrics") == "/metrics"
    # Without honor_labels the nodes' own `node` label would become exported_node.
    assert job["honor_labels"] is True
    nodes = {sc["labels"]["node"]: sc["targets"] for sc in job["static_configs"]}
    assert nodes == {"vc1": ["vc1:8080"], "vc2": ["vc2:8080"]}


# ----------------------------------------------------------------------------- metric names
def _used_names() -> dict[str, set[str]]:
    used: dict[str, set[str]] = {}
    for expr in dashboard_exprs(load_dashboard()):
        for n in promql_metric_names(expr):
            used.setdefault(n, set()).add("dashboard")
    for r in alert_rules():
        for n in promql_metric_names(r["expr"]):
            used.setdefault(n, set()).add(f"alert {r['alert']}")
    return used


def test_dashboard_and_alerts_use_only_catalogue_metrics() -> None:
    known = catalogue_sample_names()
    used = _used_names()
    unknown = {n: w for n, w in used.items() if n not in known and not FOREIGN.match(n)}
    assert not unknown, f"metrics not in the deploy/README.md catalogue: {unknown}"
    # Sanity of the extraction: the dashboard covers every family of the catalogue.
    covered = {e.name for e in readme_catalogue().values() if e.sample_names() & set(used)}
    assert covered == set(readme_catalogue()), set(readme_catalogue()) - covered


def test_readme_catalogue_has_node_first_and_bounded_labels() -> None:
    cat = readme_catalogue()
    assert len(cat) >= 40
    for e in cat.values():
        assert e.labels[0] == "node", e
        assert not set(e.labels) & {"call_id", "session_id", "uri", "number", "le"}, e
        if e.type == "counter":
            assert e.name.endswith("_total"), e
        else:
            assert not e.name.endswith("_total"), e


# ----------------------------------------------------------------------------- Grafana
def test_dashboard_is_the_generator_output() -> None:
    r = run(sys.executable, str(DEPLOY / "grafana" / "build_dashboard.py"), "--check")
    assert r.returncode == 0, r.stderr


def test_dashboard_structure() -> None:
    dash = load_dashboard()
    assert 36 <= dash["schemaVersion"] <= 41
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["DS_PROMETHEUS"]["query"] == "prometheus"
    node = variables["node"]
    assert node["query"]["query"] == "label_values(voicecall_build_info, node)"
    assert node["includeAll"] and node["multi"]
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for p in dash["panels"]:
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24, p["title"]
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"])
                for y in range(g["y"], g["y"] + g["h"])}
        assert not mine & cells, f"panel {p['title']!r} overlaps another"
        cells |= mine
        if p["type"] == "row":
            continue
        assert p["datasource"] == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}, p["title"]
        assert p["targets"], p["title"]
        for t in p["targets"]:
            assert t["datasource"]["uid"] == "${DS_PROMETHEUS}"
            # Per-node series are filtered by the node variable; shared-database gauges
            # (identical on every node) are the exception.
            shared = ("voicecall_cdr_outbox", "voicecall_app_concurrent")
            if not any(s in t["expr"] for s in shared):
                assert '"$node"' in t["expr"], (p["title"], t["expr"])
    titles = " | ".join(p["title"] for p in dash["panels"]).lower()
    for word in ("calls started", "active calls", "sip requests", "sip responses",
                 "retransmissions", "post-dial", "answer time", "outcomes", "asr",
                 "gateway up", "rtp packets", "rtp loss", "jitter", "late", "recordings",
                 "webhook deliveries", "webhook delivery latency", "outbox", "oldest",
                 "per app", "api latency", "event loop lag", "cpu", "memory"):
        assert word in titles, word


def test_every_dashboard_query_parses_with_promtool(tmp_path: Path) -> None:
    """promtool parses each query (Grafana variables substituted) as a recording rule."""
    exprs = [e for e in dashboard_exprs(load_dashboard()) if not e.startswith("label_values(")]
    assert len(exprs) > 40
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query{i}", "expr": grafana_to_promql(e)}
        for i, e in enumerate(exprs)]}]}
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump(rules))
    r = run(tool("promtool"), "check", "rules", str(path))
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"SUCCESS: {len(exprs)} rules found" in r.stdout


# ----------------------------------------------------------------------------- systemd
def test_systemd_unit_directives() -> None:
    text = UNIT.read_text()
    directives = [ln.strip() for ln in text.splitlines()
                  if ln.strip() and not ln.lstrip().startswith("#")]
    for d in ("User=voicecall",
              "ExecStart=/opt/voicecall/.venv/bin/voicecall serve --config "
              "/etc/voicecall/voicecall.toml",
              "Restart=on-failure", "ProtectSystem=strict", "ReadWritePaths=/var/lib/voicecall",
              "NoNewPrivileges=yes", "PrivateTmp=yes", "CapabilityBoundingSet="):
        assert d in directives, d
    assert any(d.startswith("LimitNOFILE=") for d in directives)
    # Ports 5060/8080 need no privilege: no capability unless an operator opts in.
    assert not any(d.startswith("AmbientCapabilities=") for d in directives)
    # ProcSubset=pid hides /proc/stat: prometheus_client then serves no process_* at all.
    assert not any(d.startswith("ProcSubset=") for d in directives)


def _unit_for_this_machine(tmp_path: Path) -> Path:
    """The unit with ExecStart pointed at this checkout's entry point: verify checks that
    the program exists and /opt/voicecall does not exist here."""
    # The entry point of the virtualenv running the tests (make test: .venv/bin/voicecall).
    exe = Path(sys.executable).parent / "voicecall"
    assert exe.exists(), exe
    unit = tmp_path / "voicecall.service"
    unit.write_text(UNIT.read_text().replace("/opt/voicecall/.venv/bin/voicecall", str(exe)))
    return unit


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    unit = _unit_for_this_machine(tmp_path)
    r = run(tool("systemd-analyze"), "verify", "--man=no", str(unit))
    # verify exits 0 on unknown keys or bad values (it only warns): any output is a failure.
    assert r.returncode == 0 and not (r.stdout + r.stderr).strip(), r.stdout + r.stderr
    bad = tmp_path / "bad" / "voicecall.service"
    bad.parent.mkdir()
    bad.write_text(unit.read_text().replace("ProtectSystem=strict", "ProtectSytem=strict"))
    r = run(tool("systemd-analyze"), "verify", "--man=no", str(bad))
    assert "ProtectSytem" in r.stdout + r.stderr


def test_systemd_analyze_security_exposure(tmp_path: Path) -> None:
    unit = _unit_for_this_machine(tmp_path)
    r = run(tool("systemd-analyze"), "security", "--offline=yes", "--no-pager", str(unit))
    m = re.search(r"Overall exposure level for voicecall\.service: ([0-9.]+)", r.stdout)
    assert m is not None, r.stdout[-2000:] + r.stderr
    assert float(m.group(1)) <= 2.0, r.stdout


# ----------------------------------------------------------------------------- compose
def test_compose_stack_and_node_configs() -> None:
    """Static checks only: Docker is not run here (deploy/README.md says so)."""
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"vc1", "vc2", "postgres", "kamailio", "prometheus", "grafana"} <= set(services)
    toml_text = (DEPLOY / "compose" / "voicecall.toml").read_text()
    node_ips: dict[str, str] = {}
    for name in ("vc1", "vc2"):
        env = {k: str(v) for k, v in services[name]["environment"].items()}
        # The real loader: unknown keys or bad values raise.
        cfg = parse_config(toml_text, f"compose {name}", env).config
        assert cfg.node.name == name
        assert cfg.storage.url.startswith("postgresql+asyncpg://")
        ip = services[name]["networks"]["voice"]["ipv4_address"]
        assert cfg.sip.advertise == ip
        assert f"udp:{ip}:5060" in cfg.sip.listen
        kam_ip = services["kamailio"]["networks"]["voice"]["ipv4_address"]
        assert any(g.address == f"udp:{kam_ip}:5060" for g in cfg.gateways), \
            "the node must accept the INVITEs Kamailio relays"
        node_ips[name] = ip
    dispatcher = (DEPLOY / "kamailio" / "dispatcher.list").read_text()
    for name, ip in node_ips.items():
        assert re.search(rf"^\s*1\s+sip:{re.escape(ip)}:5060\b.*duid={name}", dispatcher, re.M), \
            f"{name} ({ip}) not in kamailio/dispatcher.list"
    volumes = " ".join(services["prometheus"]["volumes"] + services["grafana"]["volumes"])
    assert "./prometheus:/etc/prometheus" in volumes
    assert "./grafana/voicecall-dashboard.json:" in volumes
    for rel in ("grafana/provisioning/datasources/prometheus.yml",
                "grafana/provisioning/dashboards/voicecall.yml"):
        assert yaml.safe_load((DEPLOY / rel).read_text())["apiVersion"] == 1
