"""Prometheus metrics of the signalling plane (SIP stack, user agent, gateways, services).

Names follow drachtio-server's (``*_sip_requests_in_total`` …) under the ``voicecall_``
prefix; every series carries the ``node`` label first (docs: /work/notes/metrics-catalogue.md,
section "Switch"). The object is created by the composition root on the node's shared
registry; tests create it on a private one.

Where the numbers live:

* per-message counters (requests/responses in and out, retransmissions, bad messages) are
  plain ints in dicts keyed by bounded label values (an unknown method is ``other``), ~0.2
  µs a message where a prometheus_client ``inc()`` on a cached child costs 1-2 µs (its
  lock and checks); a collector turns them into counter families at scrape time;
* gauges of things that already exist in a table (transactions, dialogs, registrations,
  gateway health) are read at scrape time by the same collector from callables the node
  installs (``SwitchMetrics.sources``), so the hot path pays nothing for them;
* per-call series (set-up time histograms, gateway outcomes, service calls/legs) are
  ordinary prometheus_client metrics; their label children are cached in small dicts
  (``labels()`` costs several µs).

The collector runs in the event loop (``GET /metrics`` is an async handler), the thread
that updates the dicts; ``dict.copy()`` keeps it safe anyway.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.registry import Collector

METHODS = frozenset({"INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "PRACK", "UPDATE",
                     "INFO", "MESSAGE", "NOTIFY", "SUBSCRIBE", "REFER", "PUBLISH"})

# Call set-up times: a local gateway rings in tens of ms, a mobile network in seconds, and
# an answer may take the whole no-answer timeout (60 s by default).
CALL_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 45.0,
                60.0)

BAD_REASONS = ("parse", "too_large", "unmatchable", "handler_error")
GATEWAY_OUTCOMES = ("answered", "busy", "no_answer", "rejected", "unavailable", "cancelled")
SERVICES = ("callback", "notify", "verify", "b2bua")


def method_label(method: str) -> str:
    return method if method in METHODS else "other"


def sip_class(status: int | None) -> str:
    """``b2bua`` outcome label: the final response's class ("2xx".."6xx"), "0" for none."""
    if status is None or not 200 <= status <= 699:
        return "0"
    return f"{status // 100}xx"


@dataclass
class Sources:
    """Scrape-time readers, installed by ``SwitchNode.start`` (None: series reads 0)."""

    transactions: Callable[[], tuple[int, int]] | None = None      # (client, server)
    dialogs: Callable[[], tuple[int, int]] | None = None           # (early, confirmed)
    registered: Callable[[], int] | None = None
    gateways: Callable[[], Mapping[str, bool]] | None = None       # name → up
    oversize: Callable[[], int] | None = None   # messages the transports dropped as too large


@dataclass
class MessageCounts:
    """The per-message counters (see the module docstring). Keys: method label, or
    (method label, status) for responses, or (kind, method label) for retransmissions."""

    requests_in: dict[str, int] = field(default_factory=dict)
    requests_out: dict[str, int] = field(default_factory=dict)
    responses_in: dict[tuple[str, int], int] = field(default_factory=dict)
    responses_out: dict[tuple[str, int], int] = field(default_factory=dict)
    retransmissions: dict[tuple[str, str], int] = field(default_factory=dict)
    bad: dict[str, int] = field(default_factory=lambda: dict.fromkeys(BAD_REASONS, 0))


class _TableCollector(Collector):
    def __init__(self, node: str, sources: Sources, counts: MessageCounts) -> None:
        self.node = node
        self.sources = sources
        self.counts = counts

    def _families(self) -> tuple[CounterMetricFamily | GaugeMetricFamily, ...]:
        return (
            CounterMetricFamily("voicecall_sip_requests_in", "SIP requests received by "
                                "method (retransmissions included)", labels=["node", "method"]),
            CounterMetricFamily("voicecall_sip_requests_out", "SIP requests sent by method "
                                "(first transmissions only)", labels=["node", "method"]),
            CounterMetricFamily("voicecall_sip_responses_in", "SIP responses received by "
                                "CSeq method and status", labels=["node", "method", "code"]),
            CounterMetricFamily("voicecall_sip_responses_out", "SIP responses sent by CSeq "
                                "method and status (first transmissions only)",
                                labels=["node", "method", "code"]),
            CounterMetricFamily("voicecall_sip_retransmissions", "SIP retransmissions sent, "
                                "by kind and method", labels=["node", "kind", "method"]),
            CounterMetricFamily("voicecall_sip_bad_messages", "Messages received and not "
                                "processed, by reason", labels=["node", "reason"]),
            GaugeMetricFamily("voicecall_sip_transactions", "Live SIP transactions by side",
                              labels=["node", "side"]),
            GaugeMetricFamily("voicecall_sip_dialogs", "INVITE dialogs by state",
                              labels=["node", "state"]),
            GaugeMetricFamily("voicecall_registered_endpoints",
                              "Contacts bound by REGISTER (not yet swept)", labels=["node"]),
            GaugeMetricFamily("voicecall_gateway_up", "Gateway health from OPTIONS probes and "
                              "call timeouts (1 up, 0 down)", labels=["node", "gateway"]),
        )

    def describe(self) -> Iterable[CounterMetricFamily | GaugeMetricFamily]:
        return self._families()

    def collect(self) -> Iterable[CounterMetricFamily | GaugeMetricFamily]:
        s, node, c = self.sources, self.node, self.counts
        (req_in, req_out, resp_in, resp_out, retx, bad, txns, dialogs, registered,
         gateways) = self._families()
        for family, counts in ((req_in, c.requests_in), (req_out, c.requests_out)):
            for method, n in sorted(counts.copy().items()):
                family.add_metric([node, method], n)
        for family, rcounts in ((resp_in, c.responses_in), (resp_out, c.responses_out)):
            by_label: dict[tuple[str, str], int] = {}
            for (method, status), n in rcounts.copy().items():
                key = (method, _code(status))
                by_label[key] = by_label.get(key, 0) + n
            for (method, code), n in sorted(by_label.items()):
                family.add_metric([node, method, code], n)
        for (kind, method), n in sorted(c.retransmissions.copy().items()):
            retx.add_metric([node, kind, method], n)
        oversize = s.oversize() if s.oversize else 0
        for reason in BAD_REASONS:
            bad.add_metric([node, reason], c.bad[reason] + (
                oversize if reason == "too_large" else 0))
        client, server = s.transactions() if s.transactions else (0, 0)
        txns.add_metric([node, "client"], client)
        txns.add_metric([node, "server"], server)
        early, confirmed = s.dialogs() if s.dialogs else (0, 0)
        dialogs.add_metric([node, "early"], early)
        dialogs.add_metric([node, "confirmed"], confirmed)
        registered.add_metric([node], s.registered() if s.registered else 0)
        for name, up in sorted((s.gateways() if s.gateways else {}).items()):
            gateways.add_metric([node, name], 1 if up else 0)
        return (req_in, req_out, resp_in, resp_out, retx, bad, txns, dialogs, registered,
                gateways)


M = TypeVar("M", bound=MetricWrapperBase)


class _Children(Generic[M]):
    """label values → child of ``metric`` (labels ``node`` + the values), created on first
    use. Values must be bounded; callers normalise them first."""

    __slots__ = ("_cache", "_metric", "_node")

    def __init__(self, metric: M, node: str) -> None:
        self._metric = metric
        self._node = node
        self._cache: dict[tuple[str, ...], M] = {}

    def get(self, *labels: str) -> M:
        child = self._cache.get(labels)
        if child is None:
            child = self._cache[labels] = self._metric.labels(self._node, *labels)
        return child


class SwitchMetrics:
    def __init__(self, registry: CollectorRegistry | None = None, node: str = "vc1") -> None:
        self.registry = r = registry if registry is not None else CollectorRegistry()
        self.node = node
        self.sources = Sources()
        self.messages = MessageCounts()
        self.gateway_calls = Counter("voicecall_gateway_calls", "Outbound INVITE attempts to a "
                                     "gateway by outcome (ASR = answered / all)",
                                     ["node", "gateway", "outcome"], registry=r)
        self.pdd_in = Histogram("voicecall_call_pdd_seconds_in", "Received INVITE to our first "
                                "18x", ["node"], buckets=CALL_BUCKETS, registry=r)
        self.pdd_out = Histogram("voicecall_call_pdd_seconds_out", "Sent INVITE to the first "
                                 "18x received", ["node"], buckets=CALL_BUCKETS, registry=r)
        self.answer_in = Histogram("voicecall_call_answer_seconds_in", "Received INVITE to our "
                                   "2xx", ["node"], buckets=CALL_BUCKETS, registry=r)
        self.answer_out = Histogram("voicecall_call_answer_seconds_out", "Sent INVITE to the "
                                    "2xx received", ["node"], buckets=CALL_BUCKETS, registry=r)
        self.calls_active = Gauge("voicecall_calls_active", "Calls in progress by service",
                                  ["node", "service"], registry=r)
        self.legs_active = Gauge("voicecall_legs_active", "Call legs not yet ended by service",
                                 ["node", "service"], registry=r)
        self.calls_total = Counter("voicecall_calls", "Calls started by service",
                                   ["node", "service"], registry=r)
        self.call_outcomes = Counter("voicecall_call_outcomes", "Leg disconnects by service, "
                                     "leg and stateCode (b2bua: SIP class of the final "
                                     "response)", ["node", "service", "leg", "state_code"],
                                     registry=r)
        r.register(_TableCollector(node, self.sources, self.messages))
        m = self.messages
        self._req_in, self._req_out = m.requests_in, m.requests_out
        self._resp_in, self._resp_out = m.responses_in, m.responses_out
        self._retx, self._bad = m.retransmissions, m.bad
        self._gw = _Children(self.gateway_calls, node)
        self._calls_active = _Children(self.calls_active, node)
        self._legs_active = _Children(self.legs_active, node)
        self._calls_total = _Children(self.calls_total, node)
        self._outcomes = _Children(self.call_outcomes, node)
        self._pdd_in = self.pdd_in.labels(node)
        self._pdd_out = self.pdd_out.labels(node)
        self._answer_in = self.answer_in.labels(node)
        self._answer_out = self.answer_out.labels(node)
        # Series that should read 0 before their first event (rates and ASR need them).
        for service in SERVICES:
            self._calls_active.get(service)
            self._legs_active.get(service)
            self._calls_total.get(service)

    # ------------------------------------------------------------------ SIP messages
    def request_in(self, method: str) -> None:
        key = method if method in METHODS else "other"
        d = self._req_in
        d[key] = d.get(key, 0) + 1

    def request_out(self, method: str, *, retransmission: bool = False) -> None:
        m = method if method in METHODS else "other"
        if retransmission:
            r = self._retx
            r["request", m] = r.get(("request", m), 0) + 1
        else:
            d = self._req_out
            d[m] = d.get(m, 0) + 1

    def response_in(self, method: str, status: int) -> None:
        key = (method if method in METHODS else "other", status)
        d = self._resp_in
        d[key] = d.get(key, 0) + 1

    def response_out(self, method: str, status: int, *, retransmission: bool = False) -> None:
        m = method if method in METHODS else "other"
        if retransmission:
            r = self._retx
            r["response", m] = r.get(("response", m), 0) + 1
        else:
            key = (m, status)
            d = self._resp_out
            d[key] = d.get(key, 0) + 1

    def bad_message(self, reason: str) -> None:
        """``reason`` is one of BAD_REASONS."""
        self._bad[reason] += 1

    # --------------------------------------------------------------------- set-up time
    def pdd(self, seconds: float, *, inbound: bool) -> None:
        (self._pdd_in if inbound else self._pdd_out).observe(seconds)

    def answer_time(self, seconds: float, *, inbound: bool) -> None:
        (self._answer_in if inbound else self._answer_out).observe(seconds)

    # ------------------------------------------------------------------------ gateways
    def gateway_call(self, gateway: str, outcome: str) -> None:
        """``gateway`` is a configured gateway name (bounded by the config)."""
        self._gw.get(gateway, outcome).inc()

    # ------------------------------------------------------------------------ services
    def call_started(self, service: str) -> None:
        self._calls_total.get(service).inc()
        self._calls_active.get(service).inc()

    def call_ended(self, service: str) -> None:
        self._calls_active.get(service).dec()

    def leg_started(self, service: str) -> None:
        self._legs_active.get(service).inc()

    def leg_ended(self, service: str) -> None:
        self._legs_active.get(service).dec()

    def leg_outcome(self, service: str, leg: str, state_code: int | str | None) -> None:
        """One per leg disconnect. ``state_code``: the leg's stateCode (a fixed set from
        switch.services.causes) or, for b2bua, :func:`sip_class`."""
        code = "0" if state_code is None else str(state_code)
        self._outcomes.get(service, leg, code).inc()


def _code(status: int) -> str:
    # The parser only accepts 100..699; anything else from a bug stays bounded.
    return str(status) if 100 <= status <= 699 else "other"
