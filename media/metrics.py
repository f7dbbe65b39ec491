"""Prometheus metrics of the media plane (RTP packets/loss/jitter, the clock, recordings).

Per-packet counts stay plain integers on the endpoints (:class:`~media.rtp.RtpStats`) and
are read at scrape time by a collector, together with :class:`MediaTotals`, where an
endpoint's counts are folded when it closes (so counters never go backwards). The clock's
monotonic totals and lateness buckets are plain integers too. Only per-stream and
per-recording summaries are observed into histograms, once when the stream or the
recording ends. Every series carries the ``node`` label first.

Loss and jitter ``direction="in"`` are what this node measured on the RTP it received
(RFC 3550 A.3/A.8); ``direction="out"`` is what the peer reported about our stream in the
report block of its RTCP SR/RR, for streams whose peer sends RTCP (many SIP endpoints,
SIPp among them, do not: those streams have no "out" observation).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from media.clock import MediaClock

if TYPE_CHECKING:
    from media.engine import MediaEngine

JITTER_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2, 0.5)
LOSS_RATIO_BUCKETS = (0.0, 0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
RECORDING_BUCKETS = (1.0, 3.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
DIRECTIONS = ("in", "out")


@dataclass(slots=True)
class MediaTotals:
    """What closed endpoints and finished recordings counted, kept by the engine."""

    packets_in: int = 0
    bytes_in: int = 0
    packets_out: int = 0
    bytes_out: int = 0
    lost_in: int = 0
    lost_out: int = 0
    timeouts: int = 0
    recordings_kept: int = 0
    recordings_discarded: int = 0
    recordings_failed: int = 0
    recording_bytes: int = 0


class MediaExporter:
    """The media series of one node on ``registry``. ``MediaEngine`` calls
    :meth:`attach` with itself; until then the scrape shows zeros."""

    def __init__(self, registry: CollectorRegistry | None = None, node: str = "vc1") -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.node = node
        self._engine: MediaEngine | None = None
        jitter = Histogram("voicecall_rtp_jitter_seconds",
                           "RFC 3550 interarrival jitter of an RTP stream when it closed",
                           ["node", "direction"], buckets=JITTER_BUCKETS, registry=self.registry)
        loss = Histogram("voicecall_rtp_loss_ratio",
                         "Fraction of an RTP stream's packets lost, observed when it closed",
                         ["node", "direction"], buckets=LOSS_RATIO_BUCKETS,
                         registry=self.registry)
        self._jitter = {d: jitter.labels(node, d) for d in DIRECTIONS}
        self._loss = {d: loss.labels(node, d) for d in DIRECTIONS}
        self._rec_duration = Histogram(
            "voicecall_recording_duration_seconds", "Duration of finished recordings",
            ["node"], buckets=RECORDING_BUCKETS, registry=self.registry).labels(node)
        self.registry.register(_MediaCollector(self))

    def attach(self, engine: MediaEngine) -> None:
        self._engine = engine

    @property
    def engine(self) -> MediaEngine | None:
        return self._engine

    def observe_stream(self, direction: str, jitter_s: float, loss_ratio: float) -> None:
        self._jitter[direction].observe(jitter_s)
        self._loss[direction].observe(loss_ratio)

    def observe_recording(self, duration_s: float) -> None:
        self._rec_duration.observe(duration_s)


def _cumulative(bounds: tuple[float, ...], counts: list[int]) -> Iterator[tuple[str, float]]:
    acc = 0
    for le, c in zip(bounds, counts, strict=False):
        acc += c
        yield floatToGoString(le), acc
    yield "+Inf", sum(counts)


_NO_LATENESS = tuple(_cumulative(MediaClock.LATENESS_BUCKETS,
                                 [0] * (len(MediaClock.LATENESS_BUCKETS) + 1)))


@dataclass(frozen=True)
class _Sample:
    """One scrape's numbers (all zero before the engine is attached or started)."""

    packets: tuple[int, int] = (0, 0)  # (in, out)
    bytes: tuple[int, int] = (0, 0)
    lost: tuple[int, int] = (0, 0)
    timeouts: int = 0
    endpoints: int = 0
    ports_free: int = 0
    ticks: int = 0
    late_ticks: int = 0
    skipped_ticks: int = 0
    lateness: tuple[tuple[str, float], ...] = _NO_LATENESS
    lateness_sum: float = 0.0
    recordings: tuple[int, int, int] = (0, 0, 0)  # kept, discarded, failed
    recording_bytes: int = 0


def _sample(engine: MediaEngine | None) -> _Sample:
    if engine is None:
        return _Sample()
    t = engine.totals
    p_in, b_in, p_out, b_out = t.packets_in, t.bytes_in, t.packets_out, t.bytes_out
    l_in, l_out = t.lost_in, t.lost_out
    endpoints = engine.live_endpoints()
    for ep in endpoints:
        st = ep._stats
        p_in += st.packets_received
        b_in += st.octets_received
        p_out += st.packets_sent
        b_out += st.octets_sent
        li, lo = ep.counted_loss()
        l_in += li
        l_out += lo
    sample = _Sample(
        packets=(p_in, p_out), bytes=(b_in, b_out), lost=(l_in, l_out), timeouts=t.timeouts,
        endpoints=len(endpoints), ports_free=engine.port_pairs_free,
        recordings=(t.recordings_kept, t.recordings_discarded, t.recordings_failed),
        recording_bytes=t.recording_bytes,
    )
    clock = engine.clock_or_none
    if clock is None:
        return sample
    return replace(
        sample, ticks=clock.total_ticks, late_ticks=clock.total_late_ticks,
        skipped_ticks=clock.total_skipped_ticks,
        lateness=tuple(_cumulative(clock.LATENESS_BUCKETS, clock.lateness_counts)),
        lateness_sum=clock.lateness_sum,
    )


class _MediaCollector(Collector):
    """Reads the engine's integers at scrape time (on the event loop: the API's /metrics
    handler runs there, so endpoints do not change under it)."""

    def __init__(self, exporter: MediaExporter) -> None:
        self._exp = exporter

    def describe(self) -> Iterable[Metric]:
        return self._metrics(_Sample())

    def collect(self) -> Iterable[Metric]:
        return self._metrics(_sample(self._exp.engine))

    def _metrics(self, s: _Sample) -> list[Metric]:
        node = self._exp.node
        nd = ["node", "direction"]
        n = ["node"]
        out: list[Metric] = []

        def per_direction(name: str, doc: str, values: tuple[int, int]) -> None:
            fam = CounterMetricFamily(name, doc, labels=nd)
            fam.add_metric([node, "in"], values[0])
            fam.add_metric([node, "out"], values[1])
            out.append(fam)

        def counter(name: str, doc: str, value: float) -> None:
            fam = CounterMetricFamily(name, doc, labels=n)
            fam.add_metric([node], value)
            out.append(fam)

        def gauge(name: str, doc: str, value: float) -> None:
            fam = GaugeMetricFamily(name, doc, labels=n)
            fam.add_metric([node], value)
            out.append(fam)

        per_direction("voicecall_rtp_packets", "RTP packets received (accepted) / sent",
                      s.packets)
        per_direction("voicecall_rtp_bytes", "RTP bytes (headers included) received / sent",
                      s.bytes)
        per_direction("voicecall_rtp_packets_lost", "RTP packets lost: in = expected - "
                      "received (RFC 3550), out = as reported by the peer's RTCP", s.lost)
        counter("voicecall_rtp_timeouts", "Media timeouts (no RTP for [media] rtp_timeout_s)",
                s.timeouts)
        gauge("voicecall_media_endpoints", "Open media endpoints", s.endpoints)
        gauge("voicecall_rtp_ports_free", "Free RTP/RTCP port pairs", s.ports_free)
        counter("voicecall_media_ticks", "20 ms media clock ticks run", s.ticks)
        counter("voicecall_media_late_ticks",
                "Media clock ticks run more than 2 ms after their deadline", s.late_ticks)
        counter("voicecall_media_skipped_ticks",
                "Media clock ticks skipped because the event loop was blocked",
                s.skipped_ticks)
        hist = HistogramMetricFamily("voicecall_media_tick_lateness_seconds",
                                     "How late media clock ticks ran", labels=n)
        hist.add_metric([node], list(s.lateness), s.lateness_sum)
        out.append(hist)
        recs = CounterMetricFamily("voicecall_recordings", "Finished recordings by result",
                                   labels=["node", "result"])
        for result, value in zip(("kept", "discarded", "failed"), s.recordings, strict=True):
            recs.add_metric([node, result], value)
        out.append(recs)
        counter("voicecall_recording_bytes", "Bytes of kept recording files",
                s.recording_bytes)
        return out
