"""Prometheus metrics of the control plane, served at ``GET /metrics`` on the API listener.

The node's one registry is passed in (a plane started alone gets its own); nothing is kept at
module level. API requests and webhook deliveries are observed where they happen. Values that
live in the shared database (CDR outbox depth, ports in use per app) are read every few
seconds by :class:`GaugeSampler` and served from its cache, so a scrape never waits on the
database. Live calls are read from the plane's objects at scrape time. Series are listed in
the "Control plane" section of the metric catalogue."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import platform
import time
from collections.abc import Awaitable, Callable, Iterator

import structlog
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from control_api.pusher import Delivery
from control_api.storage.repo import GaugeSample

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

log = structlog.get_logger("voicecall.metrics")

DELIVERY_KINDS = ("status", "cdr")
DELIVERY_RESULTS = ("ok", "http_error", "timeout", "error")
LATENCY_BUCKETS = (.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5)
DELIVERY_BUCKETS = (.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30)
LAG_BUCKETS = LATENCY_BUCKETS      # 1 ms … 5 s


def package_version() -> str:
    try:
        return importlib.metadata.version("voicecall")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def register_runtime_collectors(registry: CollectorRegistry) -> None:
    """process_*, python_info and python_gc_* on ``registry``, once: a registry that already
    has them (another component registered them first) refuses the duplicate names with
    ValueError, which is the "already there" answer. Relies on ``auto_describe=True`` (the
    daemon's registry and ours), without which a registry cannot see the duplicate."""
    makers: tuple[Callable[[], object], ...] = (
        lambda: ProcessCollector(registry=registry),
        lambda: PlatformCollector(registry=registry),
        lambda: GCCollector(registry=registry),      # registers itself on CPython only
    )
    for make in makers:
        with contextlib.suppress(ValueError):
            make()


class _PlaneCollector(Collector):
    """Scrape-time gauges: live calls from the plane, database values from the last sample."""

    def __init__(self, node: str, read: Callable[[], dict[str, float]],
                 sample: Callable[[], GaugeSample | None],
                 clock: Callable[[], float] = time.time) -> None:
        self.node = node
        self.read = read
        self.sample = sample
        self.clock = clock

    def collect(self) -> Iterator[Metric]:
        v = self.read()
        live = GaugeMetricFamily("voicecall_api_calls_live", "Calls accepted by this node's "
                                 "API and not ended yet", labels=["node"])
        live.add_metric([self.node], v.get("calls_live", 0))
        yield live
        s = self.sample()
        items = GaugeMetricFamily("voicecall_cdr_outbox_items", "CDRs waiting in the outbox "
                                  "by state (pending: to be pushed or retried; parked: retries "
                                  "exhausted, manual re-push). Cluster-wide: the shared database",
                                  labels=["node", "state"])
        items.add_metric([self.node, "pending"], s.cdr_pending if s else 0)
        items.add_metric([self.node, "parked"], s.cdr_parked if s else 0)
        yield items
        age = GaugeMetricFamily("voicecall_cdr_outbox_oldest_age_seconds", "Age of the oldest "
                                "pending CDR (0 when none)", labels=["node"])
        oldest = s.oldest_pending_ms if s else None
        age.add_metric([self.node], max(0.0, self.clock() - oldest / 1000)
                       if oldest is not None else 0.0)
        yield age
        in_use = GaugeMetricFamily("voicecall_app_concurrent_calls", "Calls in progress per "
                                   "app (APP-2 ports in use, cluster-wide)",
                                   labels=["node", "app_key"])
        limit = GaugeMetricFamily("voicecall_app_concurrent_calls_limit", "Concurrent call "
                                  "limit per app (max_concurrent_calls)",
                                  labels=["node", "app_key"])
        for app in s.apps if s else ():
            in_use.add_metric([self.node, app.app_key], app.in_use)
            limit.add_metric([self.node, app.app_key], app.limit)
        yield in_use
        yield limit


class ControlMetrics:
    def __init__(self, node: str, read: Callable[[], dict[str, float]],
                 registry: CollectorRegistry | None = None, *,
                 started_at: float | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.node = node
        # The daemon passes the node's one registry (switch + media + control series on one
        # /metrics); a plane started alone (tests) gets its own.
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self.sample: GaugeSample | None = None
        r = self.registry
        self.requests = Counter("voicecall_api_requests", "Voice-Call API requests by operation "
                                "and resultcode", ["node", "operation", "resultcode"], registry=r)
        self.latency = Histogram("voicecall_api_request_seconds", "Voice-Call API latency",
                                 ["node", "operation"], registry=r, buckets=LATENCY_BUCKETS)
        self.deliveries = Counter(
            "voicecall_webhook_deliveries", "Webhook POSTs by kind (status: EV-2, never "
            "retried; cdr: one FeeInfo batch, EV-4) and result (http_error: answered but not "
            "200 / resultcode 0; timeout: no answer in time; error: connection or other "
            "failure)", ["node", "kind", "result"], registry=r)
        self.delivery_seconds = Histogram(
            "voicecall_webhook_delivery_seconds", "Webhook POST duration (request to answer, "
            "or to the failure)", ["node", "kind"], registry=r, buckets=DELIVERY_BUCKETS)
        # Every label combination from the start: a failure rate reads 0, not "no data".
        self._delivery_counters = {(k, res): self.deliveries.labels(node, k, res)
                                   for k in DELIVERY_KINDS for res in DELIVERY_RESULTS}
        self._delivery_hists = {k: self.delivery_seconds.labels(node, k) for k in DELIVERY_KINDS}
        self.loop_lag = Histogram("voicecall_event_loop_lag_seconds", "How late the event loop "
                                  "ran a timer (sampled every 0.25 s)", ["node"], registry=r,
                                  buckets=LAG_BUCKETS).labels(node)
        Gauge("voicecall_build_info", "Version of the voicecall package and of Python (always "
              "1)", ["node", "version", "python"], registry=r).labels(
            node, package_version(), platform.python_version()).set(1)
        Gauge("voicecall_start_time_seconds", "When this node started, epoch seconds",
              ["node"], registry=r).labels(node).set(
            started_at if started_at is not None else clock())
        r.register(_PlaneCollector(node, read, lambda: self.sample, clock))
        register_runtime_collectors(r)

    def observe(self, operation: str, resultcode: str, seconds: float) -> None:
        self.requests.labels(self.node, operation, resultcode).inc()
        self.latency.labels(self.node, operation).observe(seconds)

    def observe_delivery(self, kind: str, d: Delivery) -> None:
        self._delivery_counters[(kind, d.result)].inc()
        if d.seconds is not None:
            self._delivery_hists[kind].observe(d.seconds)

    def observe_loop_lag(self, seconds: float) -> None:
        self.loop_lag.observe(seconds)

    def set_sample(self, sample: GaugeSample) -> None:
        self.sample = sample

    def render(self) -> bytes:
        return generate_latest(self.registry)


class GaugeSampler:
    """Reads :class:`GaugeSample` from the database every ``interval_s`` and hands it to
    ``publish``. A failed read is logged once per failure streak; the last good values stay
    (the oldest-pending age keeps growing from them, which is what a stuck outbox looks like)."""

    def __init__(self, read: Callable[[], Awaitable[GaugeSample]],
                 publish: Callable[[GaugeSample], None], interval_s: float) -> None:
        self._read = read
        self._publish = publish
        self.interval_s = interval_s
        self._task: asyncio.Task[None] | None = None
        self._failing = False

    async def sample_once(self) -> bool:
        try:
            sample = await self._read()
        except asyncio.CancelledError:
            raise
        except Exception as e:
            if not self._failing:
                log.warning("metrics_sample_failed", error=f"{type(e).__name__}: {e}"[:300])
            self._failing = True
            return False
        if self._failing:
            log.info("metrics_sample_recovered")
        self._failing = False
        self._publish(sample)
        return True

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="metrics-gauge-sampler")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            await self.sample_once()
