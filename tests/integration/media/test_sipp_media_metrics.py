"""The media metrics with real SIPp as the RTP source: SIPp replays its G.711 A-law sample
capture (236 packets of 30 ms) into a bridged endpoint; the node's registry must count
exactly those packets in, the relayed copies out, no loss, and one stream observation
per leg that received RTP once the endpoints close. SIPp is killed by PID in teardown."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from media.engine import MediaEngine
from tests.integration.media.conftest import Peer
from tests.integration.media.test_sipp_media import (
    PCAPS,
    SipStub,
    finish,
    pcap_payloads,
    scenario_with,
    sipp_process,
)

pytestmark = pytest.mark.integration


async def test_sipp_pcap_counted_exactly_in_and_out(engine: MediaEngine,
                                                    peers: Callable[[], Peer],
                                                    tmp_path: Path) -> None:
    registry = engine.exporter.registry
    node = engine.exporter.node

    def value(name: str, **labels: str) -> float:
        got = registry.get_sample_value(name, {"node": node, **labels})
        assert got is not None, f"{name}{labels} is not exported"
        return got

    ep = await engine.open_endpoint(call_id="sipp-m", leg="a")
    listener = peers()
    other = await engine.open_endpoint(call_id="sipp-m", leg="b")
    other.answer_offer(listener.sdp("8"))
    engine.bridge(ep, other)
    loop = asyncio.get_running_loop()
    transport, stub = await loop.create_datagram_endpoint(
        lambda: SipStub(ep.answer_offer), local_addr=("127.0.0.1", 0))
    try:
        expected = pcap_payloads(PCAPS / "g711a.pcap")
        assert len(expected) == 236 and all(len(p) == 240 for p in expected)
        wire = 236 * (12 + 240)
        with sipp_process(tmp_path, scenario_with([PCAPS / "g711a.pcap"]),
                          transport.get_extra_info("sockname")[1], talk_ms=7500) as sipp:
            got = await listener.packets(236, timeout=20)
            await finish(sipp, stub)
    finally:
        transport.close()
    assert len(got) == 236
    assert value("voicecall_rtp_packets_total", direction="in") == 236
    assert value("voicecall_rtp_bytes_total", direction="in") == wire
    assert value("voicecall_rtp_packets_total", direction="out") == 236  # the relayed copies
    assert value("voicecall_rtp_bytes_total", direction="out") == wire
    assert value("voicecall_rtp_packets_lost_total", direction="in") == 0
    assert value("voicecall_media_endpoints") == 2
    await ep.close()
    await other.close()
    assert value("voicecall_rtp_packets_total", direction="in") == 236
    assert value("voicecall_rtp_packets_total", direction="out") == 236
    assert value("voicecall_media_endpoints") == 0
    # only leg a received RTP; SIPp sends no RTCP, so there is no "out" observation
    assert value("voicecall_rtp_loss_ratio_count", direction="in") == 1
    assert value("voicecall_rtp_loss_ratio_sum", direction="in") == 0
    assert value("voicecall_rtp_jitter_seconds_count", direction="in") == 1
    assert value("voicecall_rtp_jitter_seconds_count", direction="out") == 0
