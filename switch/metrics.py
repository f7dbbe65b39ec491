"""Prometheus metrics of the signalling plane (SIP stack, user agent, gateways, services).

Names follow drachtio-server's (``*_sip_requests_in_total`` …) under the ``voicecall_``
prefix; every series carries the ``node`` label. The object is created by the composition
root on the node's shared registry; tests create it on a private one."""

from __future__ import annotations

from prometheus_client import CollectorRegistry


class SwitchMetrics:
    def __init__(self, registry: CollectorRegistry | None = None, node: str = "vc1") -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.node = node
