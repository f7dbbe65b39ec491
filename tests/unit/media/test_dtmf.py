"""DTMF: RFC 4733 packets from SIPp's sample captures, sending, Goertzel, collection."""

from __future__ import annotations

from pathlib import Path

import dpkt
import numpy as np
import pytest

from media.dtmf import (
    DigitCollector,
    InbandDetector,
    TelephoneEventReceiver,
    dtmf_tone,
    parse_telephone_event,
    telephone_event_packets,
)
from media.rtp import parse_rtp

PCAPS = Path("/usr/share/sip-tester")
NAMES = {**{str(i): str(i) for i in range(10)}, "star": "*", "pound": "#"}


def rtp_from_pcap(path: Path) -> list[bytes]:
    out = []
    with path.open("rb") as f:
        for _, buf in dpkt.pcap.Reader(f):
            ip = dpkt.ethernet.Ethernet(buf).data
            out.append(bytes(ip.data.data))
    return out


@pytest.mark.parametrize(("name", "digit"), sorted(NAMES.items()))
def test_sipp_capture_gives_exactly_one_digit(name: str, digit: str) -> None:
    packets = rtp_from_pcap(PCAPS / f"dtmf_2833_{name}.pcap")
    assert len(packets) >= 8  # the capture ends with repeated end packets
    rx = TelephoneEventReceiver()
    got = []
    for raw in packets:
        p = parse_rtp(raw)
        assert p is not None and p.payload_type == 101
        d = rx.on_packet(p.ssrc, p.timestamp, p.payload)
        if d:
            got.append(d)
    assert got == [digit]


def test_missing_marker_and_lost_start_still_detected_once() -> None:
    packets = [parse_rtp(r) for r in rtp_from_pcap(PCAPS / "dtmf_2833_5.pcap")]
    rx = TelephoneEventReceiver()
    got = [rx.on_packet(p.ssrc, p.timestamp, p.payload) for p in packets[3:] if p]
    assert [g for g in got if g] == ["5"]


def test_same_digit_twice_is_two_events_by_timestamp() -> None:
    rx = TelephoneEventReceiver()
    plan = telephone_event_packets("7")
    got = [rx.on_packet(1, 1000, pe.payload) for pe in plan]
    got += [rx.on_packet(1, 5000, pe.payload) for pe in plan]
    assert [g for g in got if g] == ["7", "7"]


def test_replayed_capture_with_the_same_timestamp_counts_each_press() -> None:
    rx = TelephoneEventReceiver()
    plan = telephone_event_packets("3")
    got = [rx.on_packet(1, 1000, pe.payload, 10.0 + i * 0.02) for i, pe in enumerate(plan)]
    # the same packets again 0.5 s later (a second replay of one capture)
    got += [rx.on_packet(1, 1000, pe.payload, 10.5 + i * 0.02) for i, pe in enumerate(plan)]
    # a late duplicate of the end packet right after is still absorbed
    got.append(rx.on_packet(1, 1000, plan[-1].payload, 10.5 + len(plan) * 0.02))
    assert [g for g in got if g] == ["3", "3"]


def test_different_event_on_the_same_timestamp_is_a_new_digit() -> None:
    rx = TelephoneEventReceiver()
    a = telephone_event_packets("1")[0].payload
    b = telephone_event_packets("2")[0].payload
    assert [rx.on_packet(1, 5, a), rx.on_packet(1, 5, b)] == ["1", "2"]


def test_send_plan_marker_first_and_three_end_packets() -> None:
    plan = telephone_event_packets("#", duration_ms=100)
    assert plan[0].marker and not any(p.marker for p in plan[1:])
    events = [parse_telephone_event(p.payload) for p in plan]
    assert all(e is not None and e.event == 11 for e in events)
    ends = [e for e in events if e and e.end]
    assert len(ends) == 3 and all(e.duration == 800 for e in ends)
    durations = [e.duration for e in events if e]
    assert durations == sorted(durations)


def test_invalid_digit_is_rejected() -> None:
    with pytest.raises(ValueError):
        telephone_event_packets("x")


def _sequence(digits: str, rng: np.random.Generator, noise: float, tone_ms: int = 60,
              twist: float = 0.0) -> np.ndarray:
    parts: list[np.ndarray] = [np.zeros(400)]
    for d in digits:
        parts += [dtmf_tone(d, tone_ms, twist_db=twist, amplitude=0.2), np.zeros(480)]
    sig = np.concatenate(parts).astype(np.float64)
    sig += rng.normal(0, noise, len(sig))
    return np.clip(sig, -32768, 32767).astype(np.int16)


@pytest.mark.parametrize("noise", [0.0, 300.0, 800.0])
def test_goertzel_detects_all_sixteen_digits_in_noise(noise: float) -> None:
    rng = np.random.default_rng(1)
    det = InbandDetector()
    sig = _sequence("0123456789*#ABCD", rng, noise)
    got: list[str] = []
    for i in range(0, len(sig), 160):  # fed in 20 ms RTP frames
        got += det.feed(sig[i:i + 160])
    assert "".join(got) == "0123456789*#ABCD"


def test_goertzel_tolerates_twist_and_rejects_noise_speechlike_and_single_tone() -> None:
    rng = np.random.default_rng(2)
    det = InbandDetector()
    assert det.feed(_sequence("159", rng, 200.0, twist=4.0)) == ["1", "5", "9"]
    det = InbandDetector()
    assert det.feed(rng.normal(0, 6000, 80000).astype(np.int16)) == []
    t = np.arange(16000) / 8000
    single = (np.sin(2 * np.pi * 697 * t) * 8000).astype(np.int16)
    assert InbandDetector().feed(single) == []
    chord = np.sum([np.sin(2 * np.pi * f * t) for f in (300, 697, 1209, 2500)], axis=0) * 3000
    assert InbandDetector().feed(chord.astype(np.int16)) == []


def test_held_key_reported_once() -> None:
    det = InbandDetector()
    assert det.feed(dtmf_tone("8", 1000)) == ["8"]


def test_collector_completes_on_count() -> None:
    c = DigitCollector(3, 0.0)
    assert not c.on_digit("1", 1.0) and not c.on_digit("2", 2.0)
    assert c.on_digit("3", 3.0) and c.digits == "123" and not c.timed_out


def test_collector_first_digit_timeout() -> None:
    c = DigitCollector(4, 10.0, first_digit_timeout=5.0)
    assert not c.on_time(14.9)
    assert c.on_time(15.0) and c.timed_out and c.digits == ""


def test_collector_inter_digit_timeout_restarts_after_each_digit() -> None:
    c = DigitCollector(4, 0.0, first_digit_timeout=5.0, inter_digit_timeout=2.0)
    c.on_digit("9", 4.0)
    assert c.deadline == 6.0 and not c.on_time(5.9)
    c.on_digit("8", 5.9)
    assert not c.on_time(7.8) and c.on_time(7.9) and c.digits == "98"


def test_collector_count_bounds() -> None:
    with pytest.raises(ValueError):
        DigitCollector(0, 0.0)
    with pytest.raises(ValueError):
        DigitCollector(33, 0.0)
