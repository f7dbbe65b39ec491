"""deploy/ against the real thing: a running voicecall daemon that carried SIPp calls, and a
real Prometheus (Debian ``prometheus``) scraping it every second with
deploy/prometheus/prometheus.yml (targets pointed at the daemon) and alerts.yml.

* every metric name the dashboard and the alert rules use exists in a live scrape;
* the deploy/README.md catalogue matches the live scrape: names, types, label names;
* Prometheus's view of the calls is exact (INVITEs in, answered gateway attempts, …);
* every dashboard query evaluates in Prometheus, the alert rules load and evaluate healthy,
  and VoicecallGatewayDown goes pending for a gateway that does not answer OPTIONS.

One module-scoped stack (daemon + calls + Prometheus) serves all tests; every process is
started here and ended by its PID."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy_files import (
    ALERTS,
    FOREIGN,
    PROMETHEUS_YML,
    Family,
    alert_rules,
    dashboard_exprs,
    grafana_to_promql,
    load_alerts,
    load_dashboard,
    parse_exposition,
    promql_metric_names,
    readme_catalogue,
)
from tests.integration.harness import Daemon, Sipp, free_port, uac, uas
from tests.integration.test_sipp_calls import CALLEE, node_config

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

NODE = "it1"  # [node] name of test_sipp_calls.node_config
CALLS = 3
POLL_S = 20.0


def http_get(url: str, timeout: float = 5.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        body: bytes = r.read()
    return body.decode()


@dataclass
class Prometheus:
    base: str
    proc: subprocess.Popen[str]
    log: Path

    def api(self, path: str, **params: str) -> Any:
        url = f"{self.base}{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        try:
            data = json.loads(http_get(url))
        except urllib.error.HTTPError as e:  # 400/422 carry the PromQL error as JSON
            data = json.loads(e.read().decode())
        return data

    def query(self, expr: str) -> dict[str, Any]:
        data: dict[str, Any] = self.api("/api/v1/query", query=expr)
        return data

    def vector(self, expr: str) -> list[dict[str, Any]]:
        data = self.query(expr)
        assert data["status"] == "success", (expr, data)
        result: list[dict[str, Any]] = data["data"]["result"]
        return result

    def scalar(self, expr: str) -> float | None:
        """The value of a one-element instant vector, None when empty."""
        res = self.vector(expr)
        assert len(res) <= 1, (expr, res)
        return float(res[0]["value"][1]) if res else None

    def wait_for(self, expr: str, ok: Callable[[float | None], bool],
                 timeout: float = POLL_S) -> float | None:
        """Poll until ``ok(value)``; return the last value either way (asserted by caller)."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.scalar(expr)
            if ok(value) or time.monotonic() > deadline:
                return value
            time.sleep(0.5)


@dataclass
class Stack:
    metrics_url: str
    exposition: str
    prom: Prometheus
    daemon_log: str


def _prometheus_config(workdir: Path, target: str) -> Path:
    """deploy/prometheus/prometheus.yml with 1 s intervals, the daemon as its one target and
    alerts.yml by absolute path; everything else (honor_labels, job, path) unchanged."""
    cfg = yaml.safe_load(PROMETHEUS_YML.read_text())
    cfg["global"].update(scrape_interval="1s", evaluation_interval="1s", scrape_timeout="1s")
    cfg["rule_files"] = [str(ALERTS)]
    job = next(j for j in cfg["scrape_configs"] if j["job_name"] == "voicecall")
    job["static_configs"] = [{"targets": [target], "labels": {"node": NODE}}]
    path = workdir / "prometheus.yml"
    path.write_text(json.dumps(cfg))  # JSON is YAML
    return path


def _start_prometheus(workdir: Path, target: str) -> Prometheus:
    exe = shutil.which("prometheus")
    assert exe is not None, "prometheus is not installed (Debian package, Makefile DEB_TEST)"
    config = _prometheus_config(workdir, target)
    error = ""
    for attempt in range(3):  # another test may take the free port before we bind it
        port = free_port()
        log = workdir / f"prometheus{attempt}.log"
        with log.open("w") as out:
            proc = subprocess.Popen(
                [exe, f"--config.file={config}", f"--storage.tsdb.path={workdir / 'tsdb'}",
                 f"--web.listen-address=127.0.0.1:{port}", "--log.level=info"],
                stdout=out, stderr=subprocess.STDOUT, text=True, cwd=workdir)
        prom = Prometheus(f"http://127.0.0.1:{port}", proc, log)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if "Ready" in http_get(prom.base + "/-/ready", timeout=2):
                    return prom
            except OSError:
                pass
            time.sleep(0.3)
        error = log.read_text()[-3000:]
        _stop(proc)
    raise RuntimeError("prometheus did not become ready:\n" + error)


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def _free_media_port() -> int:
    """An even port with the next three free too: SIPp -mp binds audio RTP/RTCP at p, p+1
    and video at p+2, p+3 (harness.free_port checks p and p+1 only)."""
    for _ in range(100):
        p = free_port()
        socks: list[socket.socket] = []
        try:
            for q in (p + 2, p + 3):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(s)
                s.bind(("127.0.0.1", q))
            return p
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free media port range")


def _start_sipp(started: list[Sipp], make: Callable[[int], Sipp]) -> Sipp:
    """Start SIPp on a fresh media port; another test on this machine may take the port
    between our check and SIPp's bind, and SIPp then exits before sending anything, so
    such a start is retried (any other early exit is a failure)."""
    for _ in range(4):
        sipp = make(_free_media_port())
        started.append(sipp.start())
        time.sleep(0.5)
        assert sipp.proc is not None
        if sipp.proc.poll() is None:
            return sipp
        result = sipp.wait(5)
        if "Unable to bind" not in result.errors + result.stdout:
            raise AssertionError(result.explain())
    raise AssertionError("SIPp could not bind a media port in 4 attempts")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("deploy")
    sip_port, uac_port, uas_port, dead_port = free_port(), free_port(), free_port(), free_port()
    # uac: the SIPp caller, trusted as an inbound gateway; carrier: the SIPp callee; dead:
    # nothing listens there, probed with OPTIONS every second (T1 = 100 ms: Timer F 6.4 s)
    # so voicecall_gateway_up reports it down.
    cfg = node_config(sip_port, gateways=[("uac", "udp", uac_port, "in"),
                                          ("carrier", "udp", uas_port, "out"),
                                          ("dead", "udp", dead_port, "out")],
                      routes=[("+86", ["carrier"])], extra_sip="t1_ms = 100",
                      gateway_extra={"dead": "#dead"})
    cfg = cfg.replace("ping_interval_s = 0\n#dead", "ping_interval_s = 1")
    assert cfg.count("ping_interval_s = 1") == 1
    daemon = Daemon(cfg, workdir)
    started: list[Sipp] = []
    prom: Prometheus | None = None
    with daemon:
        try:
            m = re.search(r"control API on (http://127\.0\.0\.1:(\d+))", daemon.drain())
            assert m is not None, daemon.drain()[-2000:]
            api, api_port = m.group(1), m.group(2)
            # Prometheus first, so that it sees the counters move from their first scrape.
            prom = _start_prometheus(workdir, f"127.0.0.1:{api_port}")
            up = prom.wait_for(f'up{{job="voicecall", node="{NODE}"}}', lambda v: v == 1)
            assert up == 1, prom.log.read_text()[-3000:]
            callee = _start_sipp(started, lambda mp: uas(
                workdir, "uas_basic.xml", port=uas_port, calls=CALLS, extra=("-mp", str(mp))))
            caller = _start_sipp(started, lambda mp: uac(
                workdir, "uac_basic.xml", f"127.0.0.1:{sip_port}", port=uac_port,
                service=CALLEE, calls=CALLS,
                extra=("-mp", str(mp), "-d", "300", "-r", "2", "-l", "1")))
            r_uac, r_uas = caller.wait(60), callee.wait(60)
            assert r_uac.ok, r_uac.explain() + daemon.drain()[-3000:]
            assert r_uas.ok, r_uas.explain() + daemon.drain()[-3000:]
            exposition = http_get(api + "/metrics")
            yield Stack(api + "/metrics", exposition, prom, daemon.drain())
        finally:
            for p in started:
                p.stop()
            if prom is not None:
                _stop(prom.proc)


# ----------------------------------------------------------------------------- live scrape
def test_every_dashboard_and_alert_metric_is_in_a_live_scrape(stack: Stack) -> None:
    exposed = {n for f in parse_exposition(stack.exposition).values() for n in f.sample_names()}
    used: dict[str, set[str]] = {}
    for expr in dashboard_exprs(load_dashboard()):
        for n in promql_metric_names(expr):
            used.setdefault(n, set()).add("dashboard")
    for rule in alert_rules():
        for n in promql_metric_names(rule["expr"]):
            used.setdefault(n, set()).add(rule["alert"])
    assert len(used) > 40
    missing = {n: sorted(w) for n, w in sorted(used.items()) if n != "up" and n not in exposed}
    assert not missing, f"{len(missing)} names used by deploy/ are not served: {missing}"


def test_readme_catalogue_matches_the_live_scrape(stack: Stack) -> None:
    families = parse_exposition(stack.exposition)
    ours = {n: f for n, f in families.items() if n.startswith("voicecall_")}
    catalogue = readme_catalogue()
    problems: list[str] = []
    for name, entry in catalogue.items():
        fam: Family | None = ours.get(name)
        if fam is None:
            problems.append(f"missing: {name} ({entry.type})")
            continue
        if fam.type != entry.type:
            problems.append(f"type: {name} is {fam.type}, catalogue says {entry.type}")
        for labels in fam.label_sets:
            if labels != tuple(sorted(entry.labels)):
                problems.append(f"labels: {name}{{{','.join(labels)}}}, catalogue says "
                                f"{{{','.join(entry.labels)}}}")
    for name in sorted(set(ours) - set(catalogue)):
        problems.append(f"not in the catalogue: {name} ({ours[name].type})")
    assert not problems, "\n".join(problems)
    others = {n for n in families if not n.startswith("voicecall_") and not FOREIGN.match(n)}
    assert not others, f"series outside the voicecall_/process_ namespaces: {others}"


# ----------------------------------------------------------------------------- Prometheus
def test_prometheus_sees_the_calls(stack: Stack) -> None:
    prom = stack.prom

    def eq(n: float) -> Callable[[float | None], bool]:
        return lambda v: v == n

    # The first expectation waits for a scrape after the calls; the rest then hold at once.
    got = prom.wait_for('sum(voicecall_gateway_calls_total{gateway="carrier", '
                        'outcome="answered"})', eq(CALLS))
    assert got == CALLS, stack.daemon_log[-2000:]
    expectations = {
        'sum(voicecall_sip_requests_in_total{method="INVITE"})': CALLS,
        'sum(voicecall_sip_requests_out_total{method="INVITE"})': CALLS,
        'sum(voicecall_sip_responses_in_total{method="INVITE", code="200"})': CALLS,
        'sum(voicecall_sip_responses_out_total{method="INVITE", code="200"})': CALLS,
        'sum(voicecall_calls_total{service="b2bua"})': CALLS,
        'sum(voicecall_gateway_calls_total{gateway="carrier"})': CALLS,
        "sum(voicecall_calls_active)": 0,
        f'voicecall_build_info{{node="{NODE}"}}': 1,
        "count(voicecall_build_info)": 1,
        f'up{{job="voicecall", node="{NODE}"}}': 1,
    }
    for expr, want in expectations.items():
        assert prom.wait_for(expr, eq(want)) == want, expr
    # honor_labels: the node's own label survives; the target label reaches process_*.
    assert prom.vector('count({__name__=~".+", exported_node!=""})') == []
    rss = prom.scalar(f'process_resident_memory_bytes{{job="voicecall", node="{NODE}"}}')
    assert rss is not None and rss > 10e6
    down = prom.wait_for('max(voicecall_gateway_up{gateway="dead"})', eq(0), timeout=30)
    assert down == 0, stack.daemon_log[-2000:]


def test_every_dashboard_query_evaluates_in_prometheus(stack: Stack) -> None:
    prom = stack.prom
    exprs = [e for e in dashboard_exprs(load_dashboard()) if not e.startswith("label_values(")]
    errors = {}
    for e in exprs:
        data = prom.query(grafana_to_promql(e))
        if data["status"] != "success":
            errors[e] = data.get("error")
    assert not errors, errors
    # The node variable's values: what Grafana's label_values() would list.
    values = prom.api("/api/v1/label/node/values", **{"match[]": "voicecall_build_info"})
    assert values["data"] == [NODE]
    # Panels that must show data after the calls, through the dashboard's own queries.
    must_show = ("voicecall_sip_requests_in_total", "voicecall_sip_responses_out_total",
                 "voicecall_calls_total", "voicecall_gateway_calls_total",
                 "voicecall_event_loop_lag_seconds_bucket", "process_cpu_seconds_total")
    for name in must_show:
        queries = [e for e in exprs if name in promql_metric_names(e)]
        assert queries, name
        deadline = time.monotonic() + POLL_S
        while not any(prom.vector(grafana_to_promql(q)) for q in queries):
            assert time.monotonic() < deadline, f"no dashboard query on {name} has data"
            time.sleep(0.5)
    asr = next(e for e in exprs if 'outcome="answered"' in e and "increase(" in e)
    res = prom.vector(grafana_to_promql(asr))
    assert {r["metric"]["gateway"]: float(r["value"][1]) for r in res}.get("carrier") == 1.0


def test_alert_rules_load_and_evaluate_healthy(stack: Stack) -> None:
    prom = stack.prom
    want = {g["name"]: {r["alert"] for r in g["rules"]} for g in load_alerts()["groups"]}
    deadline = time.monotonic() + POLL_S
    while True:
        groups = prom.api("/api/v1/rules")["data"]["groups"]
        health = {r["name"]: (r["health"], r.get("lastError", "")) for g in groups
                  for r in g["rules"]}
        if all(h == "ok" for h, _ in health.values()) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert {g["name"]: {r["name"] for r in g["rules"]} for g in groups} == want
    assert all(h == ("ok", "") for h in health.values()), health
    # The unreachable gateway drives a real alert: pending (for: 1m) with its labels.
    deadline = time.monotonic() + 30
    while True:
        alerts = prom.api("/api/v1/alerts")["data"]["alerts"]
        gw = [a for a in alerts if a["labels"]["alertname"] == "VoicecallGatewayDown"]
        if gw or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert len(gw) == 1, alerts
    assert gw[0]["state"] == "pending"
    assert gw[0]["labels"] == {"alertname": "VoicecallGatewayDown", "gateway": "dead",
                               "node": NODE, "severity": "critical", "job": "voicecall",
                               "instance": stack.metrics_url.split("/")[2]}
    assert gw[0]["annotations"]["summary"] == f"gateway dead is down as seen from {NODE}"
