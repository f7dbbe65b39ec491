"""Prometheus metrics of the media plane (RTP packets/loss/jitter, the clock, recordings).

Per-packet counts stay plain integers on the endpoints and are read at scrape time by a
collector; only per-stream and per-recording summaries are observed into histograms.
Every series carries the ``node`` label."""

from __future__ import annotations

from prometheus_client import CollectorRegistry


class MediaExporter:
    def __init__(self, registry: CollectorRegistry | None = None, node: str = "vc1") -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.node = node
