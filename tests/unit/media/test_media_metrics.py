"""The media series of the metric catalogue (issue E), read back from the node registry.

Real UDP on 127.0.0.1: a raw-socket peer sends RTP (with a sequence gap and irregular
spacing) and RTCP receiver reports to a real MediaEngine endpoint; counters are asserted
exactly with ``registry.get_sample_value``. The clock's counters are checked on a virtual
loop (exact) and on the real loop blocked on purpose."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from prometheus_client import CollectorRegistry

from media.clock import MediaClock
from media.config import MediaConfig
from media.endpoint import MediaEndpoint
from media.engine import MediaEngine
from media.metrics import MediaExporter
from media.rtp import ReportBlock, RtpStats, build_rr
from tests.integration.media.conftest import Peer, free_range
from tests.unit.media.test_clock import VirtualLoop

ADDR = "127.0.0.1"
NODE = "n1"
PORT_PAIRS = 20  # free_range() is 40 ports wide
PKT = 12 + 160  # one 20 ms A-law packet on the wire


class Node:
    def __init__(self, engine: MediaEngine, registry: CollectorRegistry) -> None:
        self.engine = engine
        self.registry = registry

    def value(self, name: str, **labels: str) -> float | None:
        return self.registry.get_sample_value(name, {"node": NODE, **labels})

    def v(self, name: str, **labels: str) -> float:
        got = self.value(name, **labels)
        assert got is not None, f"{name}{labels} is not exported"
        return got


async def make_node(tmp_path: Path, **cfg: Any) -> Node:
    registry = CollectorRegistry()
    engine = MediaEngine(MediaConfig(rtp_ports=free_range(), **cfg), bind_ip=ADDR,
                         advertise_ip=ADDR, data_dir=tmp_path,
                         metrics=MediaExporter(registry, NODE))
    await engine.start(default_prompts=False)
    return Node(engine, registry)


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Node]:
    n = await make_node(tmp_path, rtp_timeout_s=0.5, record_min_s=0.3)
    yield n
    await n.engine.stop()


@pytest.fixture
def peers() -> Iterator[Callable[[], Peer]]:
    made: list[Peer] = []

    def factory() -> Peer:
        p = Peer()
        made.append(p)
        return p

    yield factory
    for p in made:
        p.close()


async def until(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():
        assert loop.time() < end, "condition not reached in time"
        await asyncio.sleep(0.01)


async def connected(node: Node, peer: Peer, leg: str = "a") -> MediaEndpoint:
    ep = await node.engine.open_endpoint(call_id="call-1", leg=leg)
    ep.answer_offer(peer.sdp("8", "101"))
    return ep


async def send_with_gap(peer: Peer, ep: MediaEndpoint, first: int, gap: int, second: int
                        ) -> None:
    """``first`` packets, ``gap`` sequence numbers never sent, ``second`` packets; the
    spacing alternates 5 ms / 35 ms against a 20 ms timestamp step, so jitter > 0."""
    for i in range(first + second):
        if i == first:
            peer.seq = (peer.seq + gap) & 0xFFFF
            peer.ts = (peer.ts + 160 * gap) & 0xFFFFFFFF
        peer.send((ADDR, ep.port), bytes([i & 0xFF]) * 160)
        await asyncio.sleep(0.005 if i % 2 else 0.035)


async def test_rtp_in_and_out_counts_loss_and_jitter(node: Node,
                                                     peers: Callable[[], Peer]) -> None:
    assert node.v("voicecall_rtp_ports_free") == PORT_PAIRS
    assert node.v("voicecall_media_endpoints") == 0
    peer = peers()
    ep = await connected(node, peer)
    assert node.v("voicecall_media_endpoints") == 1
    assert node.v("voicecall_rtp_ports_free") == PORT_PAIRS - 1
    await send_with_gap(peer, ep, 10, 3, 10)
    await until(lambda: ep.stats.packets_received == 20)
    assert node.v("voicecall_rtp_packets_total", direction="in") == 20
    assert node.v("voicecall_rtp_bytes_total", direction="in") == 20 * PKT
    # RFC 3550 A.1: the first packet is the probation packet, so 22 expected, 19 counted
    assert node.v("voicecall_rtp_packets_lost_total", direction="in") == 3
    # what we send: a 5-frame prompt
    pb = ep.play_audio([b"\x55" * 800])
    got = await peer.packets(5)
    await pb
    assert len(got) == 5
    assert node.v("voicecall_rtp_packets_total", direction="out") == 5
    assert node.v("voicecall_rtp_bytes_total", direction="out") == 5 * PKT
    assert node.v("voicecall_rtp_jitter_seconds_count", direction="in") == 0  # live stream
    jitter_s = ep.stats.jitter_ms / 1000
    assert jitter_s > 0.001  # 15 ms arrival swings against a steady timestamp line

    await ep.close()
    # folded into the engine totals: no counter moves at close
    assert node.v("voicecall_rtp_packets_total", direction="in") == 20
    assert node.v("voicecall_rtp_bytes_total", direction="in") == 20 * PKT
    assert node.v("voicecall_rtp_packets_lost_total", direction="in") == 3
    assert node.v("voicecall_rtp_packets_total", direction="out") == 5
    assert node.v("voicecall_rtp_bytes_total", direction="out") == 5 * PKT
    assert node.v("voicecall_media_endpoints") == 0
    assert node.v("voicecall_rtp_ports_free") == PORT_PAIRS
    # one observation per direction that had RTP: "in" only (the peer sent no RTCP)
    assert node.v("voicecall_rtp_jitter_seconds_count", direction="in") == 1
    assert node.v("voicecall_rtp_jitter_seconds_sum", direction="in") == \
        pytest.approx(jitter_s, abs=1e-6)
    assert node.v("voicecall_rtp_loss_ratio_count", direction="in") == 1
    assert node.v("voicecall_rtp_loss_ratio_sum", direction="in") == pytest.approx(3 / 22)
    assert node.v("voicecall_rtp_loss_ratio_bucket", direction="in", le="0.1") == 0
    assert node.v("voicecall_rtp_loss_ratio_bucket", direction="in", le="0.2") == 1
    assert node.v("voicecall_rtp_jitter_seconds_count", direction="out") == 0
    assert node.v("voicecall_rtp_loss_ratio_count", direction="out") == 0

    # a second stream adds to the totals of the first
    peer2 = peers()
    ep2 = await connected(node, peer2, leg="b")
    for _ in range(4):
        peer2.send((ADDR, ep2.port), b"\xd5" * 160)
    await until(lambda: ep2.stats.packets_received == 4)
    assert node.v("voicecall_rtp_packets_total", direction="in") == 24
    await ep2.close()
    assert node.v("voicecall_rtp_packets_total", direction="in") == 24
    assert node.v("voicecall_rtp_packets_lost_total", direction="in") == 3
    assert node.v("voicecall_rtp_loss_ratio_count", direction="in") == 2
    assert node.v("voicecall_rtp_loss_ratio_bucket", direction="in", le="0.0") == 1


async def test_peer_rtcp_receiver_report_gives_out_loss_and_jitter(
        node: Node, peers: Callable[[], Peer]) -> None:
    peer = peers()
    ep = await connected(node, peer)
    await ep.play_audio([b"\x55" * 1600])  # 10 packets to the peer
    assert len(await peer.packets(10)) == 10
    assert node.v("voicecall_rtp_packets_total", direction="out") == 10

    def rr(lost: int, jitter: int) -> bytes:
        return build_rr(peer.ssrc, (ReportBlock(ep.ssrc, 51, lost, 0x10000 + 9, jitter),))

    peer.rtcp.sendto(rr(2, 80), (ADDR, ep.port + 1))
    await until(lambda: ep.peer_report is not None)
    assert node.v("voicecall_rtp_packets_lost_total", direction="out") == 2
    # a report block about another source is not about our stream
    other = build_rr(peer.ssrc, (ReportBlock(ep.ssrc ^ 1, 255, 500, 0, 8000),))
    peer.rtcp.sendto(other, (ADDR, ep.port + 1))
    # cumulative loss may shrink (late packets): the counter holds its highest value
    peer.rtcp.sendto(rr(1, 160), (ADDR, ep.port + 1))
    await until(lambda: ep.peer_report is not None and ep.peer_report.cumulative_lost == 1)
    assert node.v("voicecall_rtp_packets_lost_total", direction="out") == 2
    assert node.v("voicecall_rtp_packets_lost_total", direction="in") == 0
    await ep.close()
    assert node.v("voicecall_rtp_packets_lost_total", direction="out") == 2
    # the last report: 1 of the 10 packets we had sent, jitter 160 / 8000 Hz = 20 ms
    assert node.v("voicecall_rtp_loss_ratio_count", direction="out") == 1
    assert node.v("voicecall_rtp_loss_ratio_sum", direction="out") == pytest.approx(0.1)
    assert node.v("voicecall_rtp_jitter_seconds_count", direction="out") == 1
    assert node.v("voicecall_rtp_jitter_seconds_sum", direction="out") == pytest.approx(0.02)
    assert node.v("voicecall_rtp_jitter_seconds_count", direction="in") == 0  # no RTP in


def test_loss_of_an_earlier_source_survives_an_ssrc_change() -> None:
    st = RtpStats()
    for seq in (100, 101, 102, 105, 106):  # 103, 104 lost
        st.on_packet(seq, seq * 160, 0xAAAA, PKT, seq * 0.02)
    assert st.lost == 2 and st.lost_total == 2
    for seq in (7, 8, 9, 11):  # a new source; 10 lost
        st.on_packet(seq, seq * 160, 0xBBBB, PKT, 3 + seq * 0.02)
    assert st.lost == 1  # RFC 3550 restarts the count per source...
    assert st.lost_total == 3  # ...the stream's total does not
    assert st.expected_total == 6 + 4


async def test_media_timeout_counted_once_per_silence(node: Node,
                                                      peers: Callable[[], Peer]) -> None:
    peer = peers()
    ep = await connected(node, peer)
    fired: list[float] = []
    ep.events.on("media_timeout", fired.append)
    assert node.v("voicecall_rtp_timeouts_total") == 0
    await until(lambda: bool(fired), timeout=10)  # 0.5 s timeout, 1 Hz housekeeping
    assert node.v("voicecall_rtp_timeouts_total") == 1
    await asyncio.sleep(1.2)  # another housekeeping round: still the same silence
    assert node.v("voicecall_rtp_timeouts_total") == 1
    await ep.close()
    assert node.v("voicecall_rtp_timeouts_total") == 1


async def test_recordings_kept_discarded_failed(node: Node, peers: Callable[[], Peer],
                                                tmp_path: Path) -> None:
    pa, pb = peers(), peers()
    a = await connected(node, pa, leg="a")
    b = await connected(node, pb, leg="b")
    engine = node.engine

    kept_path = tmp_path / "rec" / "kept.wav"
    rec = engine.record(a, b, kept_path)
    for _ in range(25):  # 0.5 s of talk, above record_min_s = 0.3
        pa.send((ADDR, a.port), b"\x11" * 160)
        await asyncio.sleep(0.02)
    kept = await rec.stop()
    assert kept.path == kept_path and kept_path.exists()

    short = await engine.record(a, b, tmp_path / "rec" / "short.wav").stop()
    assert short.path is None

    blocker = tmp_path / "not_a_dir"
    blocker.write_text("x")
    bad = engine.record(a, b, blocker / "failed.wav")  # its directory cannot be created
    await asyncio.sleep(0.4)
    failed = await bad.stop()
    assert bad.failed

    assert node.v("voicecall_recordings_total", result="kept") == 1
    assert node.v("voicecall_recordings_total", result="discarded") == 1
    assert node.v("voicecall_recordings_total", result="failed") == 1
    assert node.v("voicecall_recording_bytes_total") == kept_path.stat().st_size
    assert node.v("voicecall_recording_duration_seconds_count") == 3
    assert node.v("voicecall_recording_duration_seconds_sum") == pytest.approx(
        kept.duration_s + short.duration_s + failed.duration_s)
    await rec.stop()  # idempotent: counted once
    assert node.v("voicecall_recordings_total", result="kept") == 1


def test_clock_totals_are_monotonic_across_reset_stats() -> None:
    loop = VirtualLoop()
    clock = MediaClock(cast(asyncio.AbstractEventLoop, cast(Any, loop)))
    clock.start()
    loop.run_until(1000.0 + 1.999, delay=lambda w: 0.004)  # 100 ticks, each 4 ms late
    assert (clock.total_ticks, clock.total_late_ticks, clock.total_skipped_ticks) == (100, 100, 0)
    clock.reset_stats()  # what the benchmark does between steps
    assert clock.late_ticks == 0 and clock.total_late_ticks == 100
    loop.run_until(1000.0 + 3.999)  # 100 more, on time
    loop.now += 1.0  # the loop blocked for a second: the tick due at 1004.0 runs at 1004.999
    loop.run_until(loop.now)
    # 49 whole periods behind (> max_lag_ticks): skipped, and the tick that runs is 19 ms late
    assert clock.total_skipped_ticks == 49 and clock.skipped_ticks == 49
    assert clock.total_ticks == 201 and clock.total_late_ticks == 101
    # lateness histogram: 100 on time (le=0.0005), 100 at 4 ms (le=0.005), 1 at 19 ms
    bounds = clock.LATENESS_BUCKETS
    assert clock.lateness_counts[bounds.index(0.0005)] == 100
    assert clock.lateness_counts[bounds.index(0.005)] == 100
    assert clock.lateness_counts[bounds.index(0.02)] == 1
    assert sum(clock.lateness_counts) == 201
    assert clock.lateness_sum == pytest.approx(100 * 0.004 + 0.019)


async def test_clock_late_ticks_exported_under_a_blocked_loop(node: Node) -> None:
    await asyncio.sleep(0.1)  # let the clock run
    ticks0 = node.v("voicecall_media_ticks_total")
    late0 = node.v("voicecall_media_late_ticks_total")
    skipped0 = node.v("voicecall_media_skipped_ticks_total")
    assert ticks0 > 0
    # block the loop for 4 periods: far from max_lag_ticks (10), so nothing is skipped
    # even if a loaded machine oversleeps by 100 ms
    time.sleep(0.08)
    await asyncio.sleep(0.05)
    late1 = node.v("voicecall_media_late_ticks_total")
    # 4 deadlines fall in the 80 ms: the first tick runs 60..80 ms late and the overdue
    # ones after it catch up at once, at least 3 of them more than 2 ms late
    assert late1 - late0 >= 3
    assert node.v("voicecall_media_tick_lateness_seconds_bucket", le="0.05") < \
        node.v("voicecall_media_tick_lateness_seconds_count")
    time.sleep(0.5)  # 25 periods: the clock jumps instead of bursting
    await asyncio.sleep(0.05)
    assert node.v("voicecall_media_skipped_ticks_total") - skipped0 >= 20
    node.engine.clock.reset_stats()
    assert node.v("voicecall_media_late_ticks_total") >= late1  # never backwards
    ticks = node.v("voicecall_media_ticks_total")
    assert node.v("voicecall_media_tick_lateness_seconds_count") == ticks
    assert node.v("voicecall_media_tick_lateness_seconds_bucket", le="+Inf") == ticks


async def test_scrape_before_start_and_without_engine_shows_zeros(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    exporter = MediaExporter(registry, NODE)
    assert registry.get_sample_value("voicecall_rtp_packets_total",
                                     {"node": NODE, "direction": "in"}) == 0
    MediaEngine(MediaConfig(rtp_ports=free_range()), bind_ip=ADDR, advertise_ip=ADDR,
                data_dir=tmp_path, metrics=exporter)
    assert registry.get_sample_value("voicecall_media_ticks_total", {"node": NODE}) == 0
    assert registry.get_sample_value("voicecall_rtp_ports_free", {"node": NODE}) == PORT_PAIRS
