"""Prometheus metrics of the control plane, served at ``GET /metrics`` on the API listener.

One registry per plane (no module-level state). Request counts and latencies are observed by
the HTTP layer; push and outbox counters and live calls are read from the plane's objects at
scrape time by a collector, so those hot paths carry no metrics code."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _PlaneCollector(Collector):
    def __init__(self, node: str, read: Callable[[], dict[str, float]]) -> None:
        self.node = node
        self.read = read

    def collect(self) -> Iterator[Metric]:
        v = self.read()
        status = CounterMetricFamily("voicecall_status_pushes", "Status pushes (EV-2), "
                                     "never retried", labels=["node", "outcome"])
        status.add_metric([self.node, "ok"], v.get("status_ok", 0))
        status.add_metric([self.node, "failed"], v.get("status_failed", 0))
        yield status
        cdr = CounterMetricFamily("voicecall_cdr_push_items", "CDR (FeeInfo) delivery attempts "
                                  "by outcome (EV-4)", labels=["node", "outcome"])
        cdr.add_metric([self.node, "delivered"], v.get("cdr_delivered", 0))
        cdr.add_metric([self.node, "failed"], v.get("cdr_failed", 0))
        yield cdr
        live = GaugeMetricFamily("voicecall_api_calls_live", "Calls accepted by this node's "
                                 "API and not ended yet", labels=["node"])
        live.add_metric([self.node], v.get("calls_live", 0))
        yield live


class ControlMetrics:
    def __init__(self, node: str, read: Callable[[], dict[str, float]],
                 registry: CollectorRegistry | None = None) -> None:
        self.node = node
        # The daemon passes the node's one registry (switch + media + control series on one
        # /metrics); a plane started alone (tests) gets its own.
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self.requests = Counter("voicecall_api_requests", "Voice-Call API requests by operation "
                                "and resultcode", ["node", "operation", "resultcode"],
                                registry=self.registry)
        self.latency = Histogram("voicecall_api_request_seconds", "Voice-Call API latency",
                                 ["node", "operation"], registry=self.registry,
                                 buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1,
                                          2.5, 5))
        self.registry.register(_PlaneCollector(node, read))

    def observe(self, operation: str, resultcode: str, seconds: float) -> None:
        self.requests.labels(self.node, operation, resultcode).inc()
        self.latency.labels(self.node, operation).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
