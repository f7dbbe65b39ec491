"""Prometheus metrics of the signalling plane (SIP stack, user agent, gateways, services).

Names follow drachtio-server's (``*_sip_requests_in_total`` …) under the ``voicecall_``
prefix; every series carries the ``node`` label first (the "Switch" section of the metric
catalogue). The object is created by the composition root on the node's shared registry;
tests create it on a private one.

Where the numbers live:

* counters and call/leg gauges are plain ints in dicts keyed by bounded label values (an
  unknown method is ``other``): ~0.1 µs an event, where a prometheus_client ``inc()`` on a
  cached child costs 1-2 µs (a lock and checks) and ``labels()`` several µs. A collector
  turns them into metric families at scrape time;
* gauges of things that already exist in a table (transactions, dialogs, registrations,
  gateway health) are read at scrape time by the same collector from callables the node
  installs (``SwitchMetrics.sources``), so the hot path pays nothing for them;
* the set-up time histograms are prometheus_client ``Histogram`` s (four observations a
  bridged call).

The collector runs in the event loop (``GET /metrics`` is an async handler), the thread
that updates the dicts; it iterates over ``dict.copy()`` s anyway.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

METHODS = frozenset({"INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "PRACK", "UPDATE",
                     "INFO", "MESSAGE", "NOTIFY", "SUBSCRIBE", "REFER", "PUBLISH"})

# Call set-up times: a local gateway rings in tens of ms, a mobile network in seconds, and
# an answer may take the whole no-answer timeout (60 s by default).
CALL_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 45.0,
                60.0)

# Served at 0 from the start (see declare_gateways for why); other methods appear when seen.
COMMON_METHODS = ("INVITE", "ACK", "BYE", "CANCEL", "OPTIONS")

BAD_REASONS = ("parse", "too_large", "unmatchable", "handler_error")
GATEWAY_OUTCOMES = ("answered", "busy", "no_answer", "rejected", "unavailable", "cancelled")
SERVICES = ("callback", "notify", "verify", "b2bua")

Family = CounterMetricFamily | GaugeMetricFamily


def method_label(method: str) -> str:
    return method if method in METHODS else "other"


def sip_class(status: int | None) -> str:
    """``b2bua`` outcome label: the final response's class ("2xx".."6xx"), "0" for none."""
    if status is None or not 200 <= status <= 699:
        return "0"
    return f"{status // 100}xx"


def _code(status: int) -> str:
    # The parser only accepts 100..699; anything else (a bug) stays one bounded label.
    return str(status) if 100 <= status <= 699 else "other"


@dataclass
class Sources:
    """Scrape-time readers, installed by ``SwitchNode.start`` (None: the series reads 0)."""

    transactions: Callable[[], tuple[int, int]] | None = None      # (client, server)
    dialogs: Callable[[], tuple[int, int]] | None = None           # (early, confirmed)
    registered: Callable[[], int] | None = None
    gateways: Callable[[], Mapping[str, bool]] | None = None       # name → up
    oversize: Callable[[], int] | None = None   # messages the transports dropped as too large


@dataclass
class Counts:
    """Every counter and call/leg gauge, by label values (``node`` aside)."""

    requests_in: dict[str, int] = field(                                     # method
        default_factory=lambda: dict.fromkeys(COMMON_METHODS, 0))
    requests_out: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COMMON_METHODS, 0))
    responses_in: dict[tuple[str, int], int] = field(default_factory=dict)    # method, status
    responses_out: dict[tuple[str, int], int] = field(default_factory=dict)
    retransmissions: dict[tuple[str, str], int] = field(default_factory=dict)  # kind, method
    bad: dict[str, int] = field(default_factory=lambda: dict.fromkeys(BAD_REASONS, 0))
    gateway_calls: dict[tuple[str, str], int] = field(default_factory=dict)    # gw, outcome
    # By service; every service reads 0 from the start (rates and ASR need the series).
    calls_total: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SERVICES, 0))
    calls_active: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SERVICES, 0))
    legs_active: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SERVICES, 0))
    outcomes: dict[tuple[str, str, str], int] = field(default_factory=dict)  # service, leg, code


def _counter(name: str, doc: str, *labels: str) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, labels=["node", *labels])


def _gauge(name: str, doc: str, *labels: str) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=["node", *labels])


# Label-value tuples of any arity (the counts' keys, node aside).
Counted = Mapping[Any, int]


def _add(family: Family, node: str, counts: Counted) -> Family:
    for labels, n in sorted(counts.items()):
        family.add_metric([node, *labels], n)
    return family


def _by_code(counts: dict[tuple[str, int], int]) -> dict[tuple[str, ...], int]:
    out: dict[tuple[str, ...], int] = {}
    for (method, status), n in counts.copy().items():
        key = (method, _code(status))
        out[key] = out.get(key, 0) + n
    return out


def _keyed(counts: Mapping[str, int]) -> dict[tuple[str, ...], int]:
    return {(k,): n for k, n in counts.items()}


class _SwitchCollector(Collector):
    def __init__(self, node: str, sources: Sources, counts: Counts) -> None:
        self.node = node
        self.sources = sources
        self.counts = counts

    def describe(self) -> Iterable[Family]:
        return self._families(describe=True)

    def collect(self) -> Iterable[Family]:
        return self._families(describe=False)

    def _families(self, *, describe: bool) -> list[Family]:
        node, c, s = self.node, self.counts, self.sources
        def read(counts: Callable[[], Counted]) -> Counted:
            return {} if describe else counts()

        oversize = s.oversize() if s.oversize and not describe else 0
        client, server = s.transactions() if s.transactions and not describe else (0, 0)
        early, confirmed = s.dialogs() if s.dialogs and not describe else (0, 0)
        return [
            _add(_counter("voicecall_sip_requests_in", "SIP requests received by method "
                          "(retransmissions included)", "method"),
                 node, read(lambda: _keyed(c.requests_in.copy()))),
            _add(_counter("voicecall_sip_requests_out", "SIP requests sent by method (first "
                          "transmissions only)", "method"),
                 node, read(lambda: _keyed(c.requests_out.copy()))),
            _add(_counter("voicecall_sip_responses_in", "SIP responses received by CSeq "
                          "method and status", "method", "code"),
                 node, read(lambda: _by_code(c.responses_in))),
            _add(_counter("voicecall_sip_responses_out", "SIP responses sent by CSeq method "
                          "and status (first transmissions only)", "method", "code"),
                 node, read(lambda: _by_code(c.responses_out))),
            _add(_counter("voicecall_sip_retransmissions", "SIP retransmissions sent, by "
                          "kind and method", "kind", "method"),
                 node, read(c.retransmissions.copy)),
            _add(_counter("voicecall_sip_bad_messages", "Messages received and not "
                          "processed, by reason", "reason"),
                 node, read(lambda: {(r,): c.bad[r] + (oversize if r == "too_large" else 0)
                                     for r in BAD_REASONS})),
            _add(_gauge("voicecall_sip_transactions", "Live SIP transactions by side",
                        "side"),
                 node, read(lambda: {("client",): client, ("server",): server})),
            _add(_gauge("voicecall_sip_dialogs", "INVITE dialogs by state", "state"),
                 node, read(lambda: {("early",): early, ("confirmed",): confirmed})),
            _add(_gauge("voicecall_registered_endpoints", "Contacts bound by REGISTER and "
                        "not expired"),
                 node, read(lambda: {(): s.registered() if s.registered else 0})),
            _add(_gauge("voicecall_gateway_up", "Gateway health from OPTIONS probes and "
                        "call timeouts (1 up, 0 down)", "gateway"),
                 node, read(lambda: {(name,): int(up) for name, up in
                                     (s.gateways() if s.gateways else {}).items()})),
            _add(_counter("voicecall_gateway_calls", "INVITE attempts to a gateway by "
                          "outcome (ASR = answered / all)", "gateway", "outcome"),
                 node, read(c.gateway_calls.copy)),
            _add(_gauge("voicecall_calls_active", "Calls in progress by service", "service"),
                 node, read(lambda: _keyed(c.calls_active.copy()))),
            _add(_gauge("voicecall_legs_active", "Call legs not ended yet by service",
                        "service"),
                 node, read(lambda: _keyed(c.legs_active.copy()))),
            _add(_counter("voicecall_calls", "Calls started by service", "service"),
                 node, read(lambda: _keyed(c.calls_total.copy()))),
            _add(_counter("voicecall_call_outcomes", "Leg disconnects by service, leg and "
                          "stateCode (b2bua: class of the leg's final response)",
                          "service", "leg", "state_code"),
                 node, read(c.outcomes.copy)),
        ]


class SwitchMetrics:
    def __init__(self, registry: CollectorRegistry | None = None, node: str = "vc1") -> None:
        self.registry = r = registry if registry is not None else CollectorRegistry()
        self.node = node
        self.sources = Sources()
        self.counts = c = Counts()
        self.pdd_in = Histogram("voicecall_call_pdd_seconds_in", "Received INVITE to our first "
                                "18x", ["node"], buckets=CALL_BUCKETS, registry=r)
        self.pdd_out = Histogram("voicecall_call_pdd_seconds_out", "Sent INVITE to the first "
                                 "18x received", ["node"], buckets=CALL_BUCKETS, registry=r)
        self.answer_in = Histogram("voicecall_call_answer_seconds_in", "Received INVITE to our "
                                   "2xx", ["node"], buckets=CALL_BUCKETS, registry=r)
        self.answer_out = Histogram("voicecall_call_answer_seconds_out", "Sent INVITE to the "
                                    "2xx received", ["node"], buckets=CALL_BUCKETS, registry=r)
        r.register(_SwitchCollector(node, self.sources, c))
        # Bound once: the hooks below run for every message.
        self._req_in, self._req_out = c.requests_in, c.requests_out
        self._resp_in, self._resp_out = c.responses_in, c.responses_out
        self._retx = c.retransmissions
        self._pdd_in = self.pdd_in.labels(node)
        self._pdd_out = self.pdd_out.labels(node)
        self._answer_in = self.answer_in.labels(node)
        self._answer_out = self.answer_out.labels(node)

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
        self.counts.bad[reason] += 1

    # --------------------------------------------------------------------- set-up time
    def pdd(self, seconds: float, *, inbound: bool) -> None:
        (self._pdd_in if inbound else self._pdd_out).observe(seconds)

    def answer_time(self, seconds: float, *, inbound: bool) -> None:
        (self._answer_in if inbound else self._answer_out).observe(seconds)

    # ------------------------------------------------------------------------ gateways
    def declare_gateways(self, gateways: Iterable[str]) -> None:
        """Serve every gateway × outcome at 0 from the start: a labelled counter that first
        appears at 1 makes ``rate()``/``increase()`` miss that first event (an ASR panel
        reads NaN, an alert misses the first failures)."""
        d = self.counts.gateway_calls
        for g in gateways:
            for outcome in GATEWAY_OUTCOMES:
                d.setdefault((g, outcome), 0)

    def gateway_call(self, gateway: str, outcome: str) -> None:
        """``gateway`` is a configured gateway name (bounded by the config), ``outcome``
        one of GATEWAY_OUTCOMES."""
        d = self.counts.gateway_calls
        d[gateway, outcome] = d.get((gateway, outcome), 0) + 1

    # ------------------------------------------------------------------------ services
    def call_started(self, service: str) -> None:
        """``service`` is one of SERVICES."""
        c = self.counts
        c.calls_total[service] += 1
        c.calls_active[service] += 1

    def call_ended(self, service: str) -> None:
        self.counts.calls_active[service] -= 1

    def leg_started(self, service: str) -> None:
        self.counts.legs_active[service] += 1

    def leg_ended(self, service: str) -> None:
        self.counts.legs_active[service] -= 1

    def leg_outcome(self, service: str, leg: str, state_code: int | str | None) -> None:
        """One per leg disconnect. ``state_code``: the leg's stateCode (a fixed set from
        switch.services.causes) or, for b2bua, :func:`sip_class`."""
        key = (service, leg, "0" if state_code is None else str(state_code))
        d = self.counts.outcomes
        d[key] = d.get(key, 0) + 1
