"""RTP/RTCP wire format and RFC 3550 receiver statistics."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from media.rtp import (
    RtpPacket,
    RtpStats,
    build_bye,
    build_rr,
    build_sdes_cname,
    build_sr,
    is_rtcp,
    pack_rtp,
    parse_rtcp,
    parse_rtp,
    report_block,
)


@given(
    pt=st.integers(0, 127), seq=st.integers(0, 0xFFFF), ts=st.integers(0, 0xFFFFFFFF),
    ssrc=st.integers(0, 0xFFFFFFFF), payload=st.binary(max_size=300), marker=st.booleans(),
    csrc=st.lists(st.integers(0, 0xFFFFFFFF), max_size=15).map(tuple),
)
def test_pack_parse_round_trip(pt: int, seq: int, ts: int, ssrc: int, payload: bytes,
                               marker: bool, csrc: tuple[int, ...]) -> None:
    pkt = RtpPacket(pt, seq, ts, ssrc, payload, marker, csrc)
    assert parse_rtp(pkt.pack()) == pkt


def test_header_extension_and_padding_are_skipped() -> None:
    base = bytearray(pack_rtp(8, 1, 160, 7, b""))
    base[0] |= 0x10 | 0x20  # X and P
    ext = b"\xbe\xde\x00\x01" + b"\x10\xaa\x00\x00"
    pkt = bytes(base) + ext + b"abcd" + b"\x00\x00\x03"
    parsed = parse_rtp(pkt)
    assert parsed is not None and parsed.payload == b"abcd"


def test_garbage_is_not_rtp() -> None:
    assert parse_rtp(b"") is None
    assert parse_rtp(b"\x00" * 12) is None  # version 0
    assert parse_rtp(bytes([0x8F]) + b"\x00" * 11) is None  # 15 CSRCs announced, none present


def _feed(stats: RtpStats, seqs: list[int], arrivals: list[float], ts_step: int = 160) -> None:
    for seq, t in zip(seqs, arrivals, strict=True):
        stats.on_packet(seq & 0xFFFF, (seq * ts_step) & 0xFFFFFFFF, 1234, 172, t)


def test_loss_counts_missing_sequence_numbers_across_wrap() -> None:
    stats = RtpStats()
    seqs = [s for s in range(65000, 65000 + 2000) if s % 10 != 3]  # 10 % loss, wraps at 65536
    _feed(stats, seqs, [i * 0.02 for i in range(len(seqs))])
    assert stats.expected == 65000 + 1999 - 65001 + 1
    assert stats.lost == 200
    assert stats.cycles == 1 << 16


def test_fraction_lost_interval() -> None:
    stats = RtpStats()
    _feed(stats, list(range(100)), [i * 0.02 for i in range(100)])
    stats.fraction_lost_interval()
    _feed(stats, [s for s in range(100, 200) if s % 4], [2 + i * 0.02 for i in range(75)])
    assert stats.fraction_lost_interval() == (25 << 8) // 100


def test_jitter_zero_for_perfect_pacing_and_tracks_synthetic_jitter() -> None:
    perfect = RtpStats()
    _feed(perfect, list(range(500)), [i * 0.02 for i in range(500)])
    assert perfect.jitter_ms < 0.2
    rng = random.Random(7)
    noisy = RtpStats()
    _feed(noisy, list(range(3000)), [i * 0.02 + rng.uniform(0, 0.010) for i in range(3000)])
    # uniform(0, 10 ms) arrivals: E|D| for the difference of two uniforms = 10/3 ms
    assert 2.5 < noisy.jitter_ms < 4.2


def test_duplicates_and_reordering_do_not_count_as_loss() -> None:
    stats = RtpStats()
    seqs = [0, 1, 2, 4, 3, 5, 5, 6]
    _feed(stats, seqs, [i * 0.02 for i in range(len(seqs))])
    assert stats.lost <= 0


def test_ssrc_change_restarts_sequence_tracking() -> None:
    stats = RtpStats()
    _feed(stats, list(range(10)), [i * 0.02 for i in range(10)])
    for i, s in enumerate(range(5000, 5010)):
        stats.on_packet(s, s * 160, 999, 172, 1 + i * 0.02)
    assert stats.ssrc_changes == 1 and stats.lost == 0


def test_rtcp_sr_rr_bye_round_trip() -> None:
    stats = RtpStats()
    _feed(stats, [s for s in range(50) if s != 20], [i * 0.02 for i in range(49)])
    block = report_block(stats, lsr=0x12345678, dlsr=99)
    assert block is not None and block.cumulative_lost == 1
    compound = (build_sr(42, 0x0123456789ABCDEF, 8000, 10, 1720, (block,))
                + build_sdes_cname(42, "vc@127.0.0.1") + build_bye(42))
    assert is_rtcp(compound)
    sr, sdes, bye = parse_rtcp(compound)
    assert sr.packet_type == 200 and sr.ssrc == 42 and sr.ntp_timestamp == 0x0123456789ABCDEF
    assert sr.packet_count == 10 and sr.report_blocks[0].cumulative_lost == 1
    assert sr.report_blocks[0].lsr == 0x12345678
    assert sdes.packet_type == 202
    assert bye.packet_type == 203 and bye.bye_ssrcs == (42,)
    rr = parse_rtcp(build_rr(7, ()))[0]
    assert rr.packet_type == 201 and rr.ssrc == 7


def test_malformed_rtcp_raises_value_error() -> None:
    import pytest
    with pytest.raises(ValueError):
        parse_rtcp(b"\x81\xc9\x00\x10" + b"\x00" * 8)  # length beyond datagram
