"""The engine over real UDP sockets on 127.0.0.1, with raw-socket peers as far ends."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from pathlib import Path

import numpy as np
import soundfile as sf

from media import g711
from media.dtmf import dtmf_tone, parse_telephone_event
from media.endpoint import MediaEndpoint, PlaybackResult
from media.engine import MediaEngine
from media.rtp import RtpPacket, parse_rtcp, parse_rtp
from media.wav import alaw_wav_bytes
from tests.integration.media.conftest import Peer, alaw_ramp
from tests.unit.media.test_dtmf import PCAPS, rtp_from_pcap

PeerFactory = Callable[[], Peer]
ADDR = "127.0.0.1"


async def connected(engine: MediaEngine, peer: Peer, *formats: str, leg: str = "a"
                    ) -> MediaEndpoint:
    ep = await engine.open_endpoint(call_id="call-1", leg=leg)
    ep.answer_offer(peer.sdp(*formats))
    return ep


def seq_steps(pkts: list[RtpPacket]) -> set[int]:
    return {(b.sequence - a.sequence) & 0xFFFF for a, b in itertools.pairwise(pkts)}


async def test_prompt_arrives_complete_in_order_and_paced(engine: MediaEngine,
                                                          peers: PeerFactory,
                                                          tmp_path: Path) -> None:
    peer = peers()
    ep = await connected(engine, peer)
    audio = alaw_ramp(160 * 25 + 37)
    f = tmp_path / "p.wav"
    f.write_bytes(alaw_wav_bytes(audio))
    pb = ep.play([f])
    got = await peer.packets(26, timeout=3)
    assert await pb == PlaybackResult.COMPLETED
    assert len(got) == 26
    assert b"".join(p.payload for p in got)[: len(audio)] == audio
    assert got[0].marker and not any(p.marker for p in got[1:])
    assert seq_steps(got) == {1}
    assert {(b.timestamp - a.timestamp) & 0xFFFFFFFF for a, b in itertools.pairwise(got)} == {160}
    assert len({p.ssrc for p in got}) == 1 and all(p.payload_type == 8 for p in got)
    assert ep.stats.packets_sent == 26


async def test_pcmu_leg_gets_transcoded_prompt(engine: MediaEngine, peers: PeerFactory,
                                               tmp_path: Path) -> None:
    peer = peers()
    ep = await connected(engine, peer, "0")
    audio = alaw_ramp(160 * 5)
    await ep.play_audio([audio])
    got = await peer.packets(5)
    assert [p.payload_type for p in got] == [0] * 5
    assert b"".join(p.payload for p in got) == g711.alaw_to_ulaw(audio)


async def test_symmetric_rtp_latches_to_the_real_source(engine: MediaEngine,
                                                         peers: PeerFactory) -> None:
    announced, real = peers(), peers()
    ep = await engine.open_endpoint(call_id="c", leg="a")
    ep.answer_offer(announced.sdp())  # SDP says "announced", the packets come from "real" (NAT)
    real.send((ADDR, ep.port), b"\xd5" * 160)
    await asyncio.sleep(0.05)
    assert ep.latched and ep.remote_address == (ADDR, real.port)
    ep.play_audio([b"\x11" * 320])
    got = await real.packets(2)
    assert [p.payload for p in got] == [b"\x11" * 160] * 2
    assert await announced.drain(0.1) == []


async def test_unnegotiated_payload_types_and_garbage_never_latch(engine: MediaEngine,
                                                                   peers: PeerFactory) -> None:
    peer, attacker = peers(), peers()
    ep = await connected(engine, peer, "8")
    for junk in (b"", b"\x00" * 40, b"\x80" * 5, b"\xff" * 1500):
        attacker.sock.sendto(junk, (ADDR, ep.port))
    attacker.send((ADDR, ep.port), b"\x00" * 160, pt=18)  # G.729: not negotiated
    await asyncio.sleep(0.05)
    assert not ep.latched and ep.invalid_packets >= 5
    assert ep.remote_address == (ADDR, peer.port)


async def test_bridge_relays_with_header_rewrite_and_continuity(engine: MediaEngine,
                                                                peers: PeerFactory) -> None:
    pa, pb_ = peers(), peers()
    a = await connected(engine, pa, leg="a")
    b = await connected(engine, pb_, leg="b")
    # prompt to b first, then the bridge: b must see one continuous stream
    await b.play_audio([b"\x22" * 480])
    before = await pb_.packets(3)
    br = engine.bridge(a, b)
    frames = [alaw_ramp(160)[i:] + alaw_ramp(160)[:i] for i in range(20)]
    for i, fr in enumerate(frames):
        pa.send((ADDR, a.port), fr, marker=i == 0)
        await asyncio.sleep(0.02)
    after = await pb_.packets(20)
    assert [p.payload for p in after] == frames  # no decode: payload bytes untouched
    stream = before + after
    assert len({p.ssrc for p in stream}) == 1 and stream[0].ssrc == b.ssrc
    assert seq_steps(stream) == {1}
    ts_steps = [(y.timestamp - x.timestamp) & 0xFFFFFFFF for x, y in itertools.pairwise(stream)]
    assert all(0 < s < 8000 for s in ts_steps)  # forward, no jumps back across the switch
    assert ts_steps[3:] == [160] * 19  # relayed packets keep the sender's spacing
    assert after[0].marker  # a new talk spurt starts at the switch
    # and the other way round
    pb_.send((ADDR, b.port), b"\x33" * 160)
    back = await pa.packets(1)
    assert back[0].payload == b"\x33" * 160 and back[0].ssrc == a.ssrc
    br.stop()
    pa.send((ADDR, a.port), b"\x44" * 160)
    assert await pb_.drain(0.1) == []


async def test_bridge_transcodes_when_codecs_differ(engine: MediaEngine,
                                                    peers: PeerFactory) -> None:
    pa, pb_ = peers(), peers()
    a = await connected(engine, pa, "8", leg="a")
    b = await connected(engine, pb_, "0", leg="b")
    engine.bridge(a, b)
    frame = alaw_ramp(160)
    pa.send((ADDR, a.port), frame)
    got = await pb_.packets(1)
    assert got[0].payload_type == 0 and got[0].payload == g711.alaw_to_ulaw(frame)
    pb_.send((ADDR, b.port), g711.alaw_to_ulaw(frame), pt=0)
    back = await pa.packets(1)
    assert back[0].payload_type == 8 and back[0].payload == g711.ulaw_to_alaw(
        g711.alaw_to_ulaw(frame))


async def test_early_media_only_callee_to_caller_then_connect(engine: MediaEngine,
                                                              peers: PeerFactory) -> None:
    pa, pb_ = peers(), peers()
    a = await connected(engine, pa, leg="a")
    b = await connected(engine, pb_, leg="b")
    br = engine.bridge(a, b, early_media=True)
    pa.send((ADDR, a.port), b"\x01" * 160)
    pb_.send((ADDR, b.port), b"\x02" * 160)
    assert [p.payload for p in await pa.packets(1)] == [b"\x02" * 160]
    assert await pb_.drain(0.1) == []
    br.connect()
    pa.send((ADDR, a.port), b"\x03" * 160)
    assert [p.payload for p in await pb_.packets(1)] == [b"\x03" * 160]
    br.mute("b_to_a")
    pb_.send((ADDR, b.port), b"\x04" * 160)
    assert await pa.drain(0.1) == []


async def test_prompt_on_a_bridged_leg_overrides_relay(engine: MediaEngine,
                                                       peers: PeerFactory) -> None:
    pa, pb_ = peers(), peers()
    a = await connected(engine, pa, leg="a")
    b = await connected(engine, pb_, leg="b")
    engine.bridge(a, b)
    for _ in range(3):  # relay first
        pa.send((ADDR, a.port), b"\x11" * 160)
        await asyncio.sleep(0.02)
    relayed = await pb_.packets(3)
    playing = b.play_audio([b"\x55" * 1600])  # lastMinVoice to b while bridged
    for _ in range(5):
        pa.send((ADDR, a.port), b"\x66" * 160)
        await asyncio.sleep(0.02)
    await playing
    prompt = await pb_.drain(0.1)
    assert {p.payload for p in prompt} == {b"\x55" * 160}  # the relay waits
    for _ in range(3):  # and resumes after the prompt
        pa.send((ADDR, a.port), b"\x77" * 160)
        await asyncio.sleep(0.02)
    after = await pb_.packets(3)
    stream = relayed + prompt + after
    assert [p.payload[0] for p in stream] == [0x11] * 3 + [0x55] * 10 + [0x77] * 3
    assert len({p.ssrc for p in stream}) == 1
    assert seq_steps(stream) == {1}
    ts_steps = [(y.timestamp - x.timestamp) & 0xFFFFFFFF for x, y in itertools.pairwise(stream)]
    assert all(0 < s < 8000 for s in ts_steps)
    assert prompt[0].marker and after[0].marker


async def test_rfc4733_pcap_digits_and_barge_in(engine: MediaEngine, peers: PeerFactory) -> None:
    peer = peers()
    ep = await connected(engine, peer)
    seen: list[str] = []
    ep.events.on("dtmf", seen.append)
    pb = ep.play_audio([b"\xd5" * 8000 * 10], barge_in=True)
    await asyncio.sleep(0.1)
    for name in ("4", "star"):
        for raw in rtp_from_pcap(PCAPS / f"dtmf_2833_{name}.pcap"):
            p = parse_rtp(raw)
            assert p is not None
            peer.send((ADDR, ep.port), p.payload, pt=101, marker=p.marker, ts=p.timestamp)
            await asyncio.sleep(0.005)
    assert await asyncio.wait_for(pb, 1) == PlaybackResult.BARGE_IN
    assert await ep.collect_digits(2, first_digit_timeout=1) == "4*"
    assert seen == ["4", "*"]
    assert ep.stats.jitter_ms < 5  # event packets do not count as jitter


async def test_inband_digits_when_no_telephone_event(engine: MediaEngine,
                                                     peers: PeerFactory) -> None:
    peer = peers()
    ep = await connected(engine, peer, "0")
    collecting = asyncio.create_task(ep.collect_digits(3, first_digit_timeout=3))
    await asyncio.sleep(0.02)
    pcm = np.concatenate([np.concatenate([dtmf_tone(d, 100), np.zeros(800, np.int16)])
                          for d in "937"])
    ulaw = g711.ulaw_encode(pcm)
    for i in range(0, len(ulaw), 160):
        peer.send((ADDR, ep.port), ulaw[i:i + 160], pt=0)
        await asyncio.sleep(0.002)
    assert await asyncio.wait_for(collecting, 3) == "937"


async def test_sip_info_digits_and_timeouts(engine: MediaEngine, peers: PeerFactory) -> None:
    peer = peers()
    ep = await connected(engine, peer)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    assert await ep.collect_digits(4, first_digit_timeout=0.3) == ""
    assert 0.25 < loop.time() - t0 < 1.0
    task = asyncio.create_task(ep.collect_digits(4, first_digit_timeout=2,
                                                 inter_digit_timeout=0.3))
    await asyncio.sleep(0.05)
    ep.inject_dtmf("1", 160)
    ep.inject_dtmf("2", 160)
    t1 = loop.time()
    assert await task == "12"
    assert 0.25 < loop.time() - t1 < 1.0


async def test_send_dtmf_rfc4733(engine: MediaEngine, peers: PeerFactory) -> None:
    peer = peers()
    ep = await connected(engine, peer)
    ep.send_dtmf("5")
    got = await peer.packets(8, timeout=2)
    events = [(p.marker, p.timestamp, parse_telephone_event(p.payload)) for p in got
              if p.payload_type == 101]
    assert events[0][0] and not any(m for m, _, _ in events[1:])
    assert len({ts for _, ts, _ in events}) == 1
    assert all(e is not None and e.event == 5 for _, _, e in events)
    assert sum(1 for _, _, e in events if e and e.end) == 3


async def test_media_started_and_timeout_events(engine: MediaEngine, peers: PeerFactory) -> None:
    peer = peers()
    ep = await connected(engine, peer)
    started = asyncio.Event()
    timeouts: list[float] = []
    ep.events.on("media_started", started.set)
    ep.events.on("media_timeout", timeouts.append)
    peer.send((ADDR, ep.port), b"\xd5" * 160)
    await asyncio.wait_for(started.wait(), 1)
    await asyncio.sleep(2.2)  # rtp_timeout_s=0.5, checked once a second
    assert len(timeouts) == 1


async def test_no_timeout_while_peer_holds(engine: MediaEngine, peers: PeerFactory) -> None:
    peer = peers()
    ep = await connected(engine, peer)
    ep.answer_offer(peer.sdp(extra="a=sendonly\r\n"))
    ep.answer_offer(peer.sdp() + "a=inactive\r\n")
    timeouts: list[float] = []
    ep.events.on("media_timeout", timeouts.append)
    await ep.play_audio([b"\x01" * 320])
    assert await peer.drain(0.1) == []  # inactive: we do not send either
    await asyncio.sleep(1.5)
    assert timeouts == []


async def test_close_sends_rtcp_bye_and_releases_ports(engine: MediaEngine,
                                                       peers: PeerFactory) -> None:
    peer = peers()
    ep = await connected(engine, peer)
    await ep.play_audio([b"\x01" * 320])
    port = ep.port
    await ep.close()
    rtcp = parse_rtcp(await peer.recv(1, rtcp=True))
    assert [p.packet_type for p in rtcp] == [200, 202, 203]
    assert rtcp[0].packet_count == 2 and rtcp[-1].bye_ssrcs == (ep.ssrc,)
    assert engine.endpoints == 0
    for _ in range(30):  # the pair goes back to the pool and is bindable again
        again = await engine.open_endpoint(call_id="c2", leg="a")
        if again.port == port:
            break
    assert again.port == port


async def test_recorder_mixes_both_directions_of_a_bridge(engine: MediaEngine,
                                                          peers: PeerFactory,
                                                          tmp_path: Path) -> None:
    pa, pb_ = peers(), peers()
    a = await connected(engine, pa, leg="a")
    b = await connected(engine, pb_, "0", leg="b")
    engine.bridge(a, b)
    path = tmp_path / "rec.wav"
    rec = engine.record(a, b, path)
    t = np.arange(160) / 8000
    fa = g711.alaw_encode((np.sin(2 * np.pi * 400 * t) * 6000).astype(np.int16))
    fb = g711.ulaw_encode((np.sin(2 * np.pi * 1000 * t) * 6000).astype(np.int16))
    loop = asyncio.get_running_loop()
    start = loop.time()
    for k in range(175):  # 3.5 s
        pa.send((ADDR, a.port), fa)
        if k < 100:
            pb_.send((ADDR, b.port), fb, pt=0)
        await asyncio.sleep(max(0.0, start + (k + 1) * 0.02 - loop.time()))
    result = await rec.stop()
    assert result.path == path
    info = sf.info(str(path))
    assert (info.samplerate, info.channels, info.subtype) == (8000, 1, "ALAW")
    assert abs(info.duration - result.duration_s) < 0.001
    assert abs(info.duration - (loop.time() - start)) <= 0.040
    data, _ = sf.read(str(path), dtype="int16")
    spec = np.abs(np.fft.rfft(data[8000:16000].astype(float)))
    assert spec[1000] > 0.2 * spec.max() and spec[400] > 0.2 * spec.max()  # both voices


async def test_short_recording_is_discarded(engine: MediaEngine, peers: PeerFactory,
                                            tmp_path: Path) -> None:
    pa, pb_ = peers(), peers()
    a = await connected(engine, pa, leg="a")
    b = await connected(engine, pb_, leg="b")
    rec = engine.record(a, b, tmp_path / "short.wav")
    pa.send((ADDR, a.port), b"\x10" * 160)
    await asyncio.sleep(0.5)
    result = await rec.stop()
    assert result.path is None and 0.4 < result.duration_s < 1.0
    assert not (tmp_path / "short.wav").exists()


async def test_reinvite_to_a_new_address_unlatches_and_follows(engine: MediaEngine,
                                                               peers: PeerFactory) -> None:
    first, second = peers(), peers()
    ep = await connected(engine, first)
    first.send((ADDR, ep.port), b"\xd5" * 160)
    await asyncio.sleep(0.05)
    assert ep.latched
    ep.answer_offer(second.sdp())  # re-INVITE: the peer moved
    assert not ep.latched and ep.remote_address == (ADDR, second.port)
    await ep.play_audio([b"\x09" * 160])
    assert [p.payload for p in await second.packets(1)] == [b"\x09" * 160]
    second.send((ADDR, ep.port), b"\xd5" * 160)
    await asyncio.sleep(0.05)
    assert ep.latched and ep.remote_address == (ADDR, second.port)


async def test_hold_stops_sending_and_resume_restarts(engine: MediaEngine,
                                                      peers: PeerFactory) -> None:
    peer = peers()
    ep = await connected(engine, peer)
    ep.answer_offer(peer.sdp(extra="a=sendonly\r\n"))  # the peer holds us
    assert ep.negotiated is not None and ep.negotiated.on_hold
    await ep.play_audio([b"\x01" * 320])
    assert await peer.drain(0.1) == []
    ep.answer_offer(peer.sdp(extra="a=sendrecv\r\n"))
    await ep.play_audio([b"\x02" * 320])
    got = await peer.packets(2)
    assert [p.payload for p in got] == [b"\x02" * 160] * 2 and got[0].marker


async def test_garbage_rtcp_and_peer_bye(engine: MediaEngine, peers: PeerFactory) -> None:
    from media.rtp import build_bye

    peer = peers()
    ep = await connected(engine, peer)
    byes: list[bool] = []
    ep.events.on("rtcp_bye", lambda: byes.append(True))
    for junk in (b"\x80\xc8\xff\xff", b"\x81\xc9\x00\x01", b"x" * 3000, b""):
        peer.rtcp.sendto(junk, (ADDR, ep.port + 1))
    peer.rtcp.sendto(build_bye(peer.ssrc), (ADDR, ep.port + 1))
    await asyncio.sleep(0.1)
    assert byes == [True] and ep.invalid_packets >= 2


async def test_default_prompts_are_rendered_once_and_valid(tmp_path: Path) -> None:
    from media.config import MediaConfig
    from media.prompt import validate_play_file
    from tests.integration.media.conftest import free_range

    eng = MediaEngine(MediaConfig(rtp_ports=free_range()), bind_ip=ADDR, advertise_ip=ADDR,
                      data_dir=tmp_path)
    await eng.start()
    paths = {n: eng.default_prompt(n) for n in
             ("preVoice", "lastMinVoice", "recordHintTone", "waitVoice")}
    for name, p in paths.items():
        validate_play_file(p)
        assert "fallback" not in p.name, f"{name} fell back to a beep: is espeak-ng missing?"
        assert sf.info(str(p)).duration > 1.0
    mtimes = {n: p.stat().st_mtime_ns for n, p in paths.items()}
    await eng.stop()
    again = MediaEngine(MediaConfig(rtp_ports=free_range()), bind_ip=ADDR, advertise_ip=ADDR,
                        data_dir=tmp_path)
    await again.start()
    assert {n: again.default_prompt(n).stat().st_mtime_ns for n in paths} == mtimes  # cached
    await again.stop()


async def test_a_failing_listener_does_not_break_the_packet_path(engine: MediaEngine,
                                                                 peers: PeerFactory) -> None:
    pa, pb_ = peers(), peers()
    a = await connected(engine, pa, leg="a")
    b = await connected(engine, pb_, leg="b")
    engine.bridge(a, b)

    def boom() -> None:
        raise RuntimeError("listener bug")

    a.events.on("media_started", boom)
    pa.send((ADDR, a.port), b"\x07" * 160)
    pa.send((ADDR, a.port), b"\x08" * 160)
    assert [p.payload for p in await pb_.packets(2)] == [b"\x07" * 160, b"\x08" * 160]


async def test_metrics_snapshot(engine: MediaEngine, peers: PeerFactory) -> None:
    peer = peers()
    ep = await connected(engine, peer)
    playing = ep.play_audio([b"\x01" * 1600])
    await asyncio.sleep(0.05)
    m = engine.metrics()
    assert m.endpoints == 1 and m.clock_active_senders == 1 and m.clock_ticks > 0
    assert m.port_pairs_free == 19
    await playing
    await asyncio.sleep(0.05)
    assert engine.metrics().clock_active_senders == 0


async def test_random_datagrams_never_raise_in_the_receive_path(engine: MediaEngine,
                                                                peers: PeerFactory) -> None:
    import random as _random

    pa, pb_ = peers(), peers()
    a = await connected(engine, pa, leg="a")
    b = await connected(engine, pb_, "0", leg="b")  # transcoding path too
    engine.bridge(a, b)
    engine.record(a, b, Path(engine.data_dir) / "fuzz.wav")
    rng = _random.Random(4733)
    now = asyncio.get_running_loop().time()
    for i in range(20000):
        n = rng.choice([0, 1, 11, 12, 13, 16, 20, 172, rng.randrange(0, 1500)])
        data = bytearray(rng.getrandbits(8) for _ in range(n))
        if n >= 2 and i % 2:
            data[0] = 0x80 | (data[0] & 0x3F)  # version 2, random flags/CSRC count
            data[1] = (data[1] & 0x80) | rng.choice([8, 0, 101, 13, 200, 201, 203])
        a._on_rtp(bytes(data), (ADDR, pa.port), now + i * 0.001)
        a._on_rtcp(bytes(data), (ADDR, pa.port + 1), now)
    assert a.stats.packets_received > 0


async def test_port_pool_exhaustion_is_a_clear_error(tmp_path: Path) -> None:
    import pytest

    from media.config import MediaConfig
    from media.errors import PortPoolExhausted
    from tests.integration.media.conftest import free_range

    lo = int(free_range().split("-")[0])
    eng = MediaEngine(MediaConfig(rtp_ports=f"{lo}-{lo + 7}"), bind_ip=ADDR, advertise_ip=ADDR,
                      data_dir=tmp_path)
    await eng.start(default_prompts=False)
    try:
        eps = [await eng.open_endpoint(call_id="c", leg=str(i)) for i in range(4)]
        assert sorted(e.port for e in eps) == [lo, lo + 2, lo + 4, lo + 6]
        with pytest.raises(PortPoolExhausted):
            await eng.open_endpoint(call_id="c", leg="x")
        await eps[1].close()
        again = await eng.open_endpoint(call_id="c", leg="y")
        assert again.port == eps[1].port
    finally:
        await eng.stop()


async def test_prompt_follows_the_peers_ptime_when_a_multiple_of_20(engine: MediaEngine,
                                                                  peers: PeerFactory) -> None:
    peer = peers()
    ep = await connected(engine, peer)
    ep.answer_offer(peer.sdp(extra="a=ptime:40\r\n"))
    audio = alaw_ramp(160 * 9)  # 180 ms: four 40 ms packets and a last 20 ms one
    await ep.play_audio([audio])
    got = await peer.packets(5)
    assert [len(p.payload) for p in got] == [320, 320, 320, 320, 160]
    assert b"".join(p.payload for p in got) == audio
    assert [(y.timestamp - x.timestamp) & 0xFFFFFFFF for x, y in itertools.pairwise(got)] == [
        320] * 4
    assert seq_steps(got) == {1} and got[0].marker and not any(p.marker for p in got[1:])
    # 30 ms is not a multiple of our 20 ms frame: we send 20 ms (ptime is a preference)
    ep.answer_offer(peer.sdp(extra="a=ptime:30\r\n"))
    await ep.play_audio([audio[:480]])
    assert [len(p.payload) for p in await peer.packets(3)] == [160] * 3
