"""deploy/ against the real thing: two voicecall daemons (vc1, vc2) that carried SIPp
calls, and a real Prometheus (Debian ``prometheus``) scraping them every second with
deploy/prometheus/prometheus.yml (its two targets pointed at the daemons) and alerts.yml.

* every metric name the dashboard and the alert rules use exists in a live scrape;
* the deploy/README.md catalogue matches each node's live scrape: names, types, labels;
* Prometheus's view of the calls is exact, in total and per node (INVITEs in, answered
  gateway attempts, …), and `node` survives the scrape (no exported_node);
* every dashboard query evaluates in Prometheus, the node variable lists both nodes, the
  alert rules load and evaluate healthy, and VoicecallGatewayDown goes pending for a
  gateway that does not answer OPTIONS.

One module-scoped stack (daemons + calls + Prometheus) serves all tests; every process is
started here and ended by its PID."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
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
from tests.paths import REPO

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

# Calls per node; the node names are those of deploy/prometheus/prometheus.yml's targets.
CALLS = {"vc1": 3, "vc2": 1}
TOTAL = sum(CALLS.values())
DEAD_ON = "vc1"  # the node with an unreachable, OPTIONS-probed gateway
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
class Node:
    name: str
    calls: int
    api: str  # http://127.0.0.1:PORT
    exposition: str = ""
    log: str = ""

    @property
    def target(self) -> str:
        return self.api.split("//", 1)[1]


@dataclass
class Stack:
    nodes: dict[str, Node]
    prom: Prometheus

    def logs(self) -> str:
        return "".join(f"--- {n.name} ---\n{n.log[-1500:]}" for n in self.nodes.values())


def _prometheus_config(workdir: Path, targets: dict[str, str]) -> Path:
    """deploy/prometheus/prometheus.yml with 1 s intervals, its two targets (vc1:8080,
    vc2:8080) replaced by the test daemons' API addresses and alerts.yml by absolute path;
    everything else (job, honor_labels, the node target labels) as in the file."""
    cfg = yaml.safe_load(PROMETHEUS_YML.read_text())
    cfg["global"].update(scrape_interval="1s", evaluation_interval="1s", scrape_timeout="1s")
    cfg["rule_files"] = [str(ALERTS)]
    job = next(j for j in cfg["scrape_configs"] if j["job_name"] == "voicecall")
    for sc in job["static_configs"]:
        assert set(sc["targets"]) <= set(targets), sc
        sc["targets"] = [targets[t] for t in sc["targets"]]
    path = workdir / "prometheus.yml"
    path.write_text(json.dumps(cfg))  # JSON is YAML
    return path


def _start_prometheus(workdir: Path, targets: dict[str, str]) -> Prometheus:
    exe = shutil.which("prometheus")
    assert exe is not None, "prometheus is not installed (Debian package, Makefile DEB_TEST)"
    config = _prometheus_config(workdir, targets)
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


def _node_config(name: str, sip_port: int, uac_port: int, uas_port: int,
                 dead_port: int | None) -> str:
    """uac: the SIPp caller, trusted as an inbound gateway; carrier: the SIPp callee; dead
    (vc1 only): nothing listens there, probed with OPTIONS every second (T1 = 100 ms, so
    Timer F = 6.4 s) so that voicecall_gateway_up reports it down."""
    gateways = [("uac", "udp", uac_port, "in"), ("carrier", "udp", uas_port, "out")]
    if dead_port is not None:
        gateways.append(("dead", "udp", dead_port, "out"))
    cfg = node_config(sip_port, gateways=gateways, routes=[("+86", ["carrier"])],
                      extra_sip="t1_ms = 100", gateway_extra={"dead": "#dead"})
    cfg = cfg.replace("ping_interval_s = 0\n#dead", "ping_interval_s = 1")
    assert cfg.count('name = "it1"') == 1
    return cfg.replace('name = "it1"', f'name = "{name}"')


def _start_daemon(name: str, workdir: Path) -> tuple[Daemon, tuple[int, int, int]]:
    """Start a node on fresh ports; retried when a port ``free_port`` found was taken by
    another test before the daemon bound it (as test_rfc4475_daemon.start_node does)."""
    error = ""
    for _ in range(4):
        ports = free_port(), free_port(), free_port()
        daemon = Daemon(_node_config(name, *ports, free_port() if name == DEAD_ON else None),
                        workdir)
        try:
            return daemon.start(), ports
        except RuntimeError as e:
            error = str(e)
            if "cannot start" not in error:
                raise
    raise RuntimeError(f"{name}: no usable ports after 4 attempts: {error[-2000:]}")


def _api_url(daemon: Daemon) -> str:
    m = re.search(r"control API on (http://127\.0\.0\.1:\d+)", daemon.drain())
    assert m is not None, daemon.drain()[-2000:]
    return m.group(1)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Two nodes, vc1 and vc2 (SQLite each: metrics need no shared database), scraped by one
    Prometheus with the two targets of deploy/prometheus/prometheus.yml; then 3 calls
    through vc1 and 1 through vc2."""
    workdir = tmp_path_factory.mktemp("deploy")
    started: list[Sipp] = []
    prom: Prometheus | None = None
    with contextlib.ExitStack() as running_daemons:
        try:
            nodes: dict[str, Node] = {}
            ports: dict[str, tuple[int, int, int]] = {}
            for name, calls in CALLS.items():
                ndir = workdir / name
                ndir.mkdir()
                daemon, ports[name] = _start_daemon(name, ndir)
                running_daemons.callback(daemon.stop)
                nodes[name] = Node(name, calls, _api_url(daemon))
                running_daemons.callback(
                    lambda n=nodes[name], d=daemon: setattr(n, "log", d.drain()))
            # Prometheus first, so that it sees the counters move from their first scrape.
            prom = _start_prometheus(workdir, {f"{n}:8080": node.target
                                               for n, node in nodes.items()})
            for n in nodes:
                up = prom.wait_for(f'up{{job="voicecall", node="{n}"}}', lambda v: v == 1)
                assert up == 1, prom.log.read_text()[-3000:]
            for name, node in nodes.items():
                sip_port, uac_port, uas_port = ports[name]
                ndir = workdir / name
                callee = _start_sipp(started, lambda mp, d=ndir, p=uas_port, c=node.calls: uas(
                    d, "uas_basic.xml", port=p, calls=c, extra=("-mp", str(mp))))
                caller = _start_sipp(started, lambda mp, d=ndir, s=sip_port, p=uac_port,
                                     c=node.calls: uac(
                    d, "uac_basic.xml", f"127.0.0.1:{s}", port=p, service=CALLEE, calls=c,
                    # One call every 2 s: Prometheus (1 s scrapes) sees each node's
                    # counters move between calls. A labelled counter appears only at its
                    # first increment, so rate()/increase() cannot see that first one.
                    extra=("-mp", str(mp), "-d", "300", "-r", "1", "-rp", "2000", "-l", "1")))
                r_uac, r_uas = caller.wait(60), callee.wait(60)
                assert r_uac.ok, r_uac.explain()
                assert r_uas.ok, r_uas.explain()
            for node in nodes.values():
                node.exposition = http_get(node.api + "/metrics")
            yield Stack(nodes, prom)
        finally:
            for p in started:
                p.stop()
            if prom is not None:
                _stop(prom.proc)


# ----------------------------------------------------------------------------- live scrape
def test_every_dashboard_and_alert_metric_is_in_a_live_scrape(stack: Stack) -> None:
    used: dict[str, set[str]] = {}
    for expr in dashboard_exprs(load_dashboard()):
        for n in promql_metric_names(expr):
            used.setdefault(n, set()).add("dashboard")
    for rule in alert_rules():
        for n in promql_metric_names(rule["expr"]):
            used.setdefault(n, set()).add(rule["alert"])
    assert len(used) > 40
    for node in stack.nodes.values():
        exposed = {n for f in parse_exposition(node.exposition).values()
                   for n in f.sample_names()}
        missing = {n: sorted(w) for n, w in sorted(used.items())
                   if n != "up" and n not in exposed}
        assert not missing, f"{len(missing)} names used by deploy/ not served by {node.name}: " \
                            f"{missing}"


@pytest.mark.parametrize("name", list(CALLS))
def test_readme_catalogue_matches_the_live_scrape(stack: Stack, name: str) -> None:
    families = parse_exposition(stack.nodes[name].exposition)
    ours = {n: f for n, f in families.items() if n.startswith("voicecall_")}
    catalogue = readme_catalogue()
    problems: list[str] = []
    for metric, entry in catalogue.items():
        fam: Family | None = ours.get(metric)
        if fam is None:
            problems.append(f"missing: {metric} ({entry.type})")
            continue
        if fam.type != entry.type:
            problems.append(f"type: {metric} is {fam.type}, catalogue says {entry.type}")
        for labels in fam.label_sets:
            if labels != tuple(sorted(entry.labels)):
                problems.append(f"labels: {metric}{{{','.join(labels)}}}, catalogue says "
                                f"{{{','.join(entry.labels)}}}")
    for metric in sorted(set(ours) - set(catalogue)):
        problems.append(f"not in the catalogue: {metric} ({ours[metric].type})")
    assert not problems, "\n".join(problems)
    others = {n for n in families if not n.startswith("voicecall_") and not FOREIGN.match(n)}
    assert not others, f"series outside the voicecall_/process_/python_ namespaces: {others}"
    # Prometheus's own linter (names, units, HELP) has nothing to say.
    lint = subprocess.run(["promtool", "check", "metrics"], input=stack.nodes[name].exposition,
                          capture_output=True, text=True, timeout=60)
    assert lint.returncode == 0 and not (lint.stdout + lint.stderr).strip(), \
        lint.stdout + lint.stderr
    # Every sample names its node, and it is this node.
    nodes = set(re.findall(r'^voicecall_\w+\{[^}]*node="([^"]*)"', stack.nodes[name].exposition,
                           re.M))
    assert nodes == {name}
    assert not re.search(r"^voicecall_\w+(?:\{(?![^}]*node=)[^}]*\})? ",
                         stack.nodes[name].exposition, re.M)


# ----------------------------------------------------------------------------- Prometheus
def _by_node(prom: Prometheus, expr: str) -> dict[str, float]:
    return {r["metric"]["node"]: float(r["value"][1]) for r in prom.vector(expr)}


def test_prometheus_sees_the_calls(stack: Stack) -> None:
    prom = stack.prom

    def eq(n: float) -> Callable[[float | None], bool]:
        return lambda v: v == n

    # The first expectation waits for a scrape after the calls; the rest then hold at once.
    got = prom.wait_for('sum(voicecall_gateway_calls_total{gateway="carrier", '
                        'outcome="answered"})', eq(TOTAL))
    assert got == TOTAL, stack.logs()
    expectations = {
        'sum(voicecall_sip_requests_in_total{method="INVITE"})': TOTAL,
        'sum(voicecall_sip_requests_out_total{method="INVITE"})': TOTAL,
        'sum(voicecall_sip_responses_in_total{method="INVITE", code="200"})': TOTAL,
        'sum(voicecall_sip_responses_out_total{method="INVITE", code="200"})': TOTAL,
        'sum(voicecall_calls_total{service="b2bua"})': TOTAL,
        'sum(voicecall_gateway_calls_total{gateway="carrier"})': TOTAL,
        "sum(voicecall_calls_active)": 0,
        "count(voicecall_build_info == 1)": len(CALLS),
        'count(up{job="voicecall"} == 1)': len(CALLS),
    }
    for expr, want in expectations.items():
        assert prom.wait_for(expr, eq(want)) == want, expr
    # Per node, as the dashboard splits them.
    for expr in ('sum by (node) (voicecall_sip_requests_in_total{method="INVITE"})',
                 'sum by (node) (voicecall_gateway_calls_total{outcome="answered"})',
                 'sum by (node) (voicecall_calls_total{service="b2bua"})'):
        assert _by_node(prom, expr) == {n: float(c) for n, c in CALLS.items()}, expr
    # honor_labels: the node's own label survives; the target label reaches process_*.
    assert prom.vector('count({__name__=~".+", exported_node!=""})') == []
    rss = _by_node(prom, 'process_resident_memory_bytes{job="voicecall"}')
    assert set(rss) == set(CALLS) and min(rss.values()) > 10e6, rss
    down = prom.wait_for(f'max(voicecall_gateway_up{{gateway="dead", node="{DEAD_ON}"}})', eq(0),
                         timeout=30)
    assert down == 0, stack.logs()


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
    assert values["data"] == sorted(CALLS)
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
    # The node filter of the dashboard: one node selected, only its calls.
    one = next(e for e in exprs if "voicecall_calls_total" in e and "by (service)" in e)
    for n in CALLS:
        selected = one.replace("$__rate_interval", "5m").replace("$node", n)
        assert prom.vector(selected.replace("rate(", "increase(")), selected


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
                               "node": DEAD_ON, "severity": "critical", "job": "voicecall",
                               "instance": stack.nodes[DEAD_ON].target}
    assert gw[0]["annotations"]["summary"] == f"gateway dead is down as seen from {DEAD_ON}"
    # Nothing traffic-driven fires on two healthy nodes after 4 answered calls. (Late media
    # ticks and loop lag depend on the load of this shared 2-core machine: not asserted.)
    active = {a["labels"]["alertname"] for a in alerts}
    assert active <= {"VoicecallGatewayDown", "VoicecallMediaLateTicks",
                      "VoicecallEventLoopLag"}, alerts


# ----------------------------------------------------------------------------- systemd sandbox
_SANDBOX = r"""
set -eu
data="$1"; shift
# ProtectSystem=strict + ReadWritePaths=<data_dir>: the file system read-only but data_dir;
# PrivateTmp=yes: a private, writable /tmp.
mount --bind "$data" "$data"
mount -o remount,bind,ro /
mount -o remount,bind,rw "$data"
mount -t tmpfs -o nosuid,nodev,mode=1777 tmpfs /tmp
# The working directory must be entered through the new mounts (WorkingDirectory=).
cd "$data"
if touch /etc/.voicecall-ro-probe 2>/dev/null || touch /var/.voicecall-ro-probe 2>/dev/null
then
  echo "sandbox: file system still writable"; exit 3
fi
# User= (an unprivileged user), CapabilityBoundingSet= (empty), NoNewPrivileges=yes.
exec setpriv --reuid=nobody --regid=nogroup --clear-groups --inh-caps=-all \
  --bounding-set=-all --no-new-privs -- "$@"
"""


def test_daemon_runs_inside_the_units_sandbox() -> None:
    """The file-system and privilege part of deploy/systemd/voicecall.service emulated
    without systemd (not PID 1 here): a private mount namespace where everything is
    read-only but the data directory (ProtectSystem=strict, ReadWritePaths=), an
    unprivileged user with no capabilities and no_new_privs. The node starts (TTS prompts
    rendered by espeak-ng/sox, SQLite created), writes only to its data directory and
    serves its metrics, process_* included."""
    assert os.geteuid() == 0, "needs root: a private mount namespace and setpriv"
    for exe in ("unshare", "setpriv"):
        assert shutil.which(exe), f"{exe} missing (util-linux)"
    unit = (Path(__file__).resolve().parents[2] / "deploy" / "systemd" /
            "voicecall.service").read_text()
    assert "ProtectSystem=strict" in unit and "User=voicecall" in unit
    # Not under /tmp, which the sandbox replaces (PrivateTmp); /var/tmp is reachable by nobody.
    data = Path(tempfile.mkdtemp(prefix="voicecall-sandbox-", dir="/var/tmp"))
    proc: subprocess.Popen[str] | None = None
    try:
        cfg_text = ""
        for _ in range(4):
            cfg_text = _node_config("vc1", free_port(), free_port(), free_port(), None)
            (data / "voicecall.toml").write_text(cfg_text)
            for p in (data, data / "voicecall.toml"):
                os.chown(p, 65534, 65534)
            env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO),
                   "PYTHONDONTWRITEBYTECODE": "1"}
            env.pop("VOICECALL_CONFIG", None)
            proc = subprocess.Popen(
                ["unshare", "--mount", "--propagation", "private", "sh", "-c", _SANDBOX,
                 "sandbox", str(data), sys.executable, "-m", "control_api.cli", "serve",
                 "--config", str(data / "voicecall.toml")],
                cwd=data, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            out = _read_until(proc, "voicecall ready", 60)
            if "voicecall ready" in out:
                break
            _stop(proc)
            proc = None
            if "cannot start" not in out:
                raise AssertionError(out[-3000:])
        assert proc is not None, "no usable ports in 4 attempts"
        m = re.search(r"control API on (http://127\.0\.0\.1:\d+)", out)
        assert m is not None, out
        text = http_get(m.group(1) + "/metrics")
        families = parse_exposition(text)
        assert "process_cpu_seconds_total" in families and "voicecall_build_info" in families
        assert re.search(r'^voicecall_build_info\{[^}]*node="vc1"[^}]*\} 1\.0$', text, re.M)
        # Everything the node wrote is in its data directory, owned by the service user.
        written = [p for p in data.rglob("*") if p.is_file()]
        assert any(p.suffix == ".db" for p in written), written
        assert all(p.stat().st_uid == 65534 for p in written
                   if p.name != "voicecall.toml"), written
        assert "Traceback" not in out and "Read-only file system" not in out, out[-3000:]
        assert "[error" not in out, out[-3000:]
        # The default prompts were synthesised (espeak-ng, sox) inside the sandbox.
        assert "tts_rendered" in out, out[-3000:]
        assert any(p.suffix == ".wav" for p in written), written
    finally:
        if proc is not None:
            _stop(proc)
        shutil.rmtree(data, ignore_errors=True)


def _read_until(proc: subprocess.Popen[str], marker: str, timeout: float) -> str:
    """Output of ``proc`` up to the line with ``marker`` (or its exit, or the timeout)."""
    assert proc.stdout is not None
    lines: list[str] = []
    done = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if marker in line:
                done.set()
        done.set()

    threading.Thread(target=read, daemon=True).start()
    done.wait(timeout)
    return "".join(lines)
