"""Generate deploy/grafana/voicecall-dashboard.json (the committed file is this script's output).

    python3 deploy/grafana/build_dashboard.py          # rewrite the JSON
    python3 deploy/grafana/build_dashboard.py --check  # exit 1 if the JSON is stale

The dashboard is code so that panels stay consistent (one datasource variable, one `node`
filter, the same rate window everywhere) and so that tests can read every query: only
metric names of the catalogue (deploy/README.md) plus `up` and `process_*` may appear.
Standard library only: it runs without the project's virtualenv."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent / "voicecall-dashboard.json"
DS = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
N = 'node=~"$node"'
RI = "$__rate_interval"


def rate(metric: str, by: str = "", sel: str = "") -> str:
    matchers = ", ".join(x for x in (N, sel) if x)
    grouping = f"sum by ({by}) " if by else "sum "
    return f"{grouping}(rate({metric}{{{matchers}}}[{RI}]))"


def quantile(q: float, hist: str, by: str = "", sel: str = "") -> str:
    matchers = ", ".join(x for x in (N, sel) if x)
    keys = f"{by}, le" if by else "le"
    return f"histogram_quantile({q}, sum by ({keys}) (rate({hist}_bucket{{{matchers}}}[{RI}])))"


@dataclass
class Target:
    expr: str
    legend: str = "__auto"
    instant: bool = False


@dataclass
class Panel:
    title: str
    targets: list[Target]
    unit: str = "short"
    kind: str = "timeseries"
    width: int = 8
    height: int = 8
    description: str = ""
    stack: bool = False
    options: dict[str, Any] = field(default_factory=dict)
    thresholds: list[tuple[float | None, str]] | None = None


@dataclass
class Row:
    title: str
    panels: list[Panel]


def ts(title: str, *targets: Target, **kw: Any) -> Panel:
    return Panel(title, list(targets), **kw)


def stat(title: str, expr: str, unit: str = "short", legend: str = "",
         thresholds: list[tuple[float | None, str]] | None = None, description: str = "") -> Panel:
    return Panel(title, [Target(expr, legend, instant=True)], unit=unit, kind="stat", width=4,
                 height=4, thresholds=thresholds, description=description)


ASR = (f'sum by (gateway) (increase(voicecall_gateway_calls_total{{outcome="answered", {N}}}[15m])'
       f" or increase(voicecall_gateway_calls_total{{{N}}}[15m]) * 0)"
       f" / sum by (gateway) (increase(voicecall_gateway_calls_total{{{N}}}[15m]))")
LOSS = (f'{rate("voicecall_rtp_packets_lost_total", "direction")} / '
        f'({rate("voicecall_rtp_packets_total", "direction")} + '
        f'{rate("voicecall_rtp_packets_lost_total", "direction")})')
RED_AT_1 = [(None, "green"), (1, "red")]

ROWS = [
    Row("Overview", [
        stat("Nodes up", f'sum(up{{job="voicecall", {N}}})', description="Scrape targets up"),
        stat("Active calls", f"sum(voicecall_calls_active{{{N}}})"),
        stat("Calls / s", rate("voicecall_calls_total"), unit="reqps"),
        stat("Gateways down", f"count(voicecall_gateway_up{{{N}}} == 0) or vector(0)",
             thresholds=RED_AT_1, description="Gateway/node pairs whose OPTIONS probe fails"),
        stat("CDRs pending", 'max(voicecall_cdr_outbox_items{state="pending"})',
             thresholds=[(None, "green"), (100, "orange"), (500, "red")],
             description="Shared outbox (every node reports the same number)"),
        stat("Uptime", f"min(time() - voicecall_start_time_seconds{{{N}}})", unit="s"),
    ]),
    Row("Calls", [
        ts("Calls started / s by service", Target(rate("voicecall_calls_total", "service"),
                                                  "{{service}}"), unit="reqps"),
        ts("Active calls and legs by service",
           Target(f"sum by (service) (voicecall_calls_active{{{N}}})", "calls {{service}}"),
           Target(f"sum by (service) (voicecall_legs_active{{{N}}})", "legs {{service}}")),
        ts("Leg outcomes / min by state_code",
           Target(rate("voicecall_call_outcomes_total", "service, leg, state_code") + " * 60",
                  "{{service}} {{leg}} {{state_code}}"), unit="short", stack=True,
           description="One count per leg disconnect; b2bua legs use the SIP class"),
        ts("Post-dial delay (INVITE → first 18x)",
           Target(quantile(0.5, "voicecall_call_pdd_seconds_out"), "out p50"),
           Target(quantile(0.95, "voicecall_call_pdd_seconds_out"), "out p95"),
           Target(quantile(0.5, "voicecall_call_pdd_seconds_in"), "in p50"),
           Target(quantile(0.95, "voicecall_call_pdd_seconds_in"), "in p95"), unit="s"),
        ts("Answer time (INVITE → 2xx)",
           Target(quantile(0.5, "voicecall_call_answer_seconds_out"), "out p50"),
           Target(quantile(0.95, "voicecall_call_answer_seconds_out"), "out p95"),
           Target(quantile(0.5, "voicecall_call_answer_seconds_in"), "in p50"),
           Target(quantile(0.95, "voicecall_call_answer_seconds_in"), "in p95"), unit="s"),
        ts("Registered endpoints",
           Target(f"sum by (node) (voicecall_registered_endpoints{{{N}}})", "{{node}}")),
    ]),
    Row("SIP", [
        ts("SIP requests / s by method",
           Target(rate("voicecall_sip_requests_in_total", "method"), "in {{method}}"),
           Target(rate("voicecall_sip_requests_out_total", "method"), "out {{method}}"),
           unit="reqps"),
        ts("SIP responses / s by method and code",
           Target(rate("voicecall_sip_responses_in_total", "method, code"), "in {{method}} {{code}}"),
           Target(rate("voicecall_sip_responses_out_total", "method, code"),
                  "out {{method}} {{code}}"), unit="reqps"),
        ts("Retransmissions and bad messages / s",
           Target(rate("voicecall_sip_retransmissions_total", "kind, method"),
                  "retransmitted {{kind}} {{method}}"),
           Target(rate("voicecall_sip_bad_messages_total", "reason"), "bad {{reason}}"),
           unit="reqps"),
        ts("Transactions and dialogs",
           Target(f"sum by (side) (voicecall_sip_transactions{{{N}}})", "transactions {{side}}"),
           Target(f"sum by (state) (voicecall_sip_dialogs{{{N}}})", "dialogs {{state}}")),
    ]),
    Row("Gateways", [
        ts("Gateway up (OPTIONS health)",
           Target(f"voicecall_gateway_up{{{N}}}", "{{gateway}} from {{node}}"),
           kind="state-timeline", width=8),
        ts("ASR per gateway (15 min)", Target(ASR, "{{gateway}}"), unit="percentunit",
           description="answered / all attempts, summed over the selected nodes"),
        ts("Gateway attempts / min by outcome",
           Target(rate("voicecall_gateway_calls_total", "gateway, outcome") + " * 60",
                  "{{gateway}} {{outcome}}"), stack=True),
    ]),
    Row("Media", [
        ts("RTP packets / s",
           Target(rate("voicecall_rtp_packets_total", "direction"), "{{direction}}"), unit="pps"),
        ts("RTP bandwidth",
           Target(rate("voicecall_rtp_bytes_total", "direction") + " * 8", "{{direction}}"),
           unit="bps"),
        ts("RTP loss",
           Target(LOSS, "lost {{direction}}"),
           Target(quantile(0.95, "voicecall_rtp_loss_ratio", "direction"),
                  "p95 per stream {{direction}}"), unit="percentunit"),
        ts("RTP jitter per stream",
           Target(quantile(0.5, "voicecall_rtp_jitter_seconds", "direction"), "p50 {{direction}}"),
           Target(quantile(0.95, "voicecall_rtp_jitter_seconds", "direction"), "p95 {{direction}}"),
           unit="s"),
        ts("Media endpoints, free ports, timeouts",
           Target(f"sum by (node) (voicecall_media_endpoints{{{N}}})", "endpoints {{node}}"),
           Target(f"sum by (node) (voicecall_rtp_ports_free{{{N}}})", "free ports {{node}}"),
           Target(rate("voicecall_rtp_timeouts_total", "node") + " * 60", "timeouts/min {{node}}")),
        ts("Media clock: late and skipped ticks",
           Target(f"{rate('voicecall_media_late_ticks_total', 'node')} / "
                  f"{rate('voicecall_media_ticks_total', 'node')}", "late {{node}}"),
           Target(f"{rate('voicecall_media_skipped_ticks_total', 'node')} / "
                  f"{rate('voicecall_media_ticks_total', 'node')}", "skipped {{node}}"),
           unit="percentunit", description="Share of 20 ms ticks more than 2 ms late"),
        ts("Media tick lateness",
           Target(quantile(0.5, "voicecall_media_tick_lateness_seconds", "node"), "p50 {{node}}"),
           Target(quantile(0.99, "voicecall_media_tick_lateness_seconds", "node"),
                  "p99 {{node}}"), unit="s"),
        ts("Recordings / min by result",
           Target(rate("voicecall_recordings_total", "result") + " * 60", "{{result}}"),
           stack=True),
        ts("Recording bytes written / s",
           Target(rate("voicecall_recording_bytes_total"), "bytes/s"), unit="Bps"),
        ts("Recording duration",
           Target(quantile(0.5, "voicecall_recording_duration_seconds"), "p50"),
           Target(quantile(0.95, "voicecall_recording_duration_seconds"), "p95"), unit="s"),
    ]),
    Row("Control plane", [
        ts("API requests / s by operation and resultcode",
           Target(rate("voicecall_api_requests_total", "operation, resultcode"),
                  "{{operation}} {{resultcode}}"), unit="reqps"),
        ts("API latency by operation",
           Target(quantile(0.5, "voicecall_api_request_seconds", "operation"), "p50 {{operation}}"),
           Target(quantile(0.99, "voicecall_api_request_seconds", "operation"),
                  "p99 {{operation}}"), unit="s"),
        ts("API calls live",
           Target(f"sum by (node) (voicecall_api_calls_live{{{N}}})", "{{node}}")),
        ts("Webhook deliveries / s by kind and result",
           Target(rate("voicecall_webhook_deliveries_total", "kind, result"),
                  "{{kind}} {{result}}"), unit="reqps"),
        ts("Webhook delivery latency",
           Target(quantile(0.5, "voicecall_webhook_delivery_seconds", "kind"), "p50 {{kind}}"),
           Target(quantile(0.95, "voicecall_webhook_delivery_seconds", "kind"), "p95 {{kind}}"),
           unit="s"),
        ts("CDR outbox depth",
           Target("max by (state) (voicecall_cdr_outbox_items)", "{{state}}"),
           description="Shared database: max over nodes, not sum"),
        ts("Oldest pending CDR",
           Target("max(voicecall_cdr_outbox_oldest_age_seconds)", "age"), unit="s"),
        ts("Concurrent calls per app",
           Target("max by (app_key) (voicecall_app_concurrent_calls)", "{{app_key}}"),
           Target("max by (app_key) (voicecall_app_concurrent_calls_limit)", "limit {{app_key}}"),
           width=16, description="Cluster-wide counts from the shared database"),
    ]),
    Row("Process", [
        ts("Event loop lag",
           Target(quantile(0.5, "voicecall_event_loop_lag_seconds", "node"), "p50 {{node}}"),
           Target(quantile(0.99, "voicecall_event_loop_lag_seconds", "node"), "p99 {{node}}"),
           unit="s"),
        ts("CPU", Target(f'rate(process_cpu_seconds_total{{job="voicecall", {N}}}[{RI}])',
                         "{{node}}"), unit="percentunit",
           description="1.0 = one core; the asyncio loop cannot use more than one"),
        ts("Memory and file descriptors",
           Target(f'process_resident_memory_bytes{{job="voicecall", {N}}}', "RSS {{node}}"),
           Target(f'process_open_fds{{job="voicecall", {N}}}', "fds {{node}}"), unit="short"),
        Panel("Build", [Target(f"voicecall_build_info{{{N}}}", "", instant=True)], kind="table",
              width=24, height=5, options={"showHeader": True}),
    ]),
]


def _panel_json(p: Panel, pid: int, x: int, y: int) -> dict[str, Any]:
    steps = [{"color": c, "value": v} for v, c in (p.thresholds or [(None, "green")])]
    custom: dict[str, Any] = {}
    if p.kind == "timeseries":
        custom = {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 10, "showPoints": "never",
                  "stacking": {"mode": "normal" if p.stack else "none", "group": "A"}}
    options = p.options or ({"legend": {"displayMode": "list", "placement": "bottom",
                                        "showLegend": True},
                             "tooltip": {"mode": "multi", "sort": "desc"}}
                            if p.kind in ("timeseries", "state-timeline") else
                            {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "",
                                               "values": False},
                             "colorMode": "value", "graphMode": "area"})
    return {
        "id": pid, "type": p.kind, "title": p.title, "description": p.description,
        "datasource": DS, "gridPos": {"h": p.height, "w": p.width, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": p.unit, "custom": custom,
                                     "thresholds": {"mode": "absolute", "steps": steps}},
                        "overrides": []},
        "options": options,
        "targets": [{"refId": chr(ord("A") + i), "datasource": DS, "expr": t.expr,
                     "legendFormat": t.legend, "instant": t.instant, "range": not t.instant,
                     **({"format": "table"} if p.kind == "table" else {})}
                    for i, t in enumerate(p.targets)],
    }


def build() -> dict[str, Any]:
    panels: list[dict[str, Any]] = []
    pid, y = 1, 0
    for row in ROWS:
        panels.append({"id": pid, "type": "row", "title": row.title, "collapsed": False,
                       "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "panels": []})
        pid, y, x, line_h = pid + 1, y + 1, 0, 0
        for p in row.panels:
            if x + p.width > 24:
                x, y, line_h = 0, y + line_h, 0
            panels.append(_panel_json(p, pid, x, y))
            pid, x, line_h = pid + 1, x + p.width, max(line_h, p.height)
        y += line_h
    return {
        "__inputs": [{"name": "DS_PROMETHEUS", "label": "Prometheus", "type": "datasource",
                      "pluginId": "prometheus", "pluginName": "Prometheus"}],
        "uid": "voicecall-overview", "title": "voicecall", "tags": ["voicecall", "sip", "rtp"],
        "description": "voicecall cluster: SIP, calls, gateways, media, control plane, process. "
                       "Generated by deploy/grafana/build_dashboard.py.",
        "schemaVersion": 39, "version": 1, "editable": True, "graphTooltip": 1,
        "time": {"from": "now-1h", "to": "now"}, "refresh": "30s", "timezone": "",
        "annotations": {"list": []}, "links": [],
        "templating": {"list": [
            {"name": "DS_PROMETHEUS", "label": "Data source", "type": "datasource",
             "query": "prometheus", "current": {}, "hide": 0, "refresh": 1},
            {"name": "node", "label": "Node", "type": "query", "datasource": DS,
             "query": {"query": "label_values(voicecall_build_info, node)", "refId": "node"},
             "definition": "label_values(voicecall_build_info, node)", "refresh": 2,
             "multi": True, "includeAll": True, "allValue": ".*", "current": {}, "sort": 1,
             "hide": 0},
        ]},
        "panels": panels,
    }


def render() -> str:
    return json.dumps(build(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if OUT.read_text(encoding="utf-8") != text:
            print(f"{OUT} is stale: run python3 {Path(__file__).name}", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
