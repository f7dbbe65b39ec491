"""Real SIPp as the RTP peer of a MediaEngine endpoint.

SIPp (UAC) sends an INVITE with SDP to a tiny SIP stub in this test; the stub answers with
the endpoint's SDP answer, so SIPp sends RTP to the endpoint: pcap replays of SIPp's sample
captures (G.711 A-law with 30 ms packets, RFC 2833 digits) and, with ``-rtp_echo``, our own
prompt echoed back. Every SIPp process is killed by PID in teardown.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import cast

import dpkt
import pytest

from media.endpoint import MediaEndpoint
from media.engine import MediaEngine
from tests.integration.harness import Sipp, free_port
from tests.integration.media.conftest import Peer, alaw_ramp

SCENARIO = Path(__file__).resolve().parent / "scenarios" / "uac_media.xml"
PCAPS = Path("/usr/share/sip-tester")
EXEC_LINE = '  <nop><action><exec play_pcap_audio="PCAP_FILE"/></action></nop>\n'
pytestmark = pytest.mark.integration
StubFactory = Callable[["MediaEndpoint"], Awaitable[tuple["SipStub", int]]]


class SipStub(asyncio.DatagramProtocol):
    """Answers SIPp's INVITE with ``answer(sdp) -> sdp``, then 200s the BYE."""

    def __init__(self, answer: Callable[[str], str]) -> None:
        self._answer = answer
        self._cached: dict[str, bytes] = {}
        self.transport: asyncio.DatagramTransport | None = None
        self.bye = asyncio.Event()
        self.acked = asyncio.Event()
        self.errors: list[str] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        text = data.decode("utf-8", errors="replace")
        head, _, body = text.partition("\r\n\r\n")
        lines = head.split("\r\n")
        method = lines[0].split(" ", 1)[0]
        if method == "ACK":
            self.acked.set()
            return
        if method not in ("INVITE", "BYE"):
            return
        hdrs = [ln for ln in lines[1:] if re.match(r"(?i)(via|from|to|call-id|cseq):", ln)]
        key = f"{method}:{next((h for h in hdrs if h.lower().startswith('cseq')), '')}"
        if key not in self._cached:
            sdp = ""
            if method == "INVITE":
                try:
                    sdp = self._answer(body)
                except Exception as e:  # surfaced by the test, never swallowed
                    self.errors.append(repr(e))
                    return
            out = ["SIP/2.0 200 OK"]
            for h in hdrs:
                out.append(h + (";tag=stub1" if h.lower().startswith("to:") and
                                "tag=" not in h else ""))
            out.append("Contact: <sip:stub@127.0.0.1>")
            if sdp:
                out.append("Content-Type: application/sdp")
            out.append(f"Content-Length: {len(sdp.encode())}")
            self._cached[key] = ("\r\n".join(out) + "\r\n\r\n" + sdp).encode()
        assert self.transport is not None
        self.transport.sendto(self._cached[key], addr)
        if method == "BYE":
            self.bye.set()


@contextlib.contextmanager
def sipp_process(workdir: Path, scenario_text: str, stub_port: int, *, talk_ms: int,
                 rtp_echo: bool = False) -> Iterator[Sipp]:
    scen = workdir / "scenario.xml"
    scen.write_text(scenario_text)
    sip_port = free_port()
    media_port = free_port()
    args = [f"127.0.0.1:{stub_port}", "-sf", str(scen), "-s", "media", "-m", "1",
            "-d", str(talk_ms), "-mp", str(media_port), "-timeout", "40s", "-timeout_error",
            "-recv_timeout", "15s"]
    if rtp_echo:
        args.append("-rtp_echo")
    proc = Sipp(workdir, f"media_{sip_port}", args, port=sip_port).start()
    try:
        yield proc
    finally:
        proc.stop()  # kills this SIPp by its PID if it is still running


def scenario_with(pcaps: list[Path], gap_ms: int = 400) -> str:
    text = SCENARIO.read_text()
    block = "".join(
        EXEC_LINE.replace("PCAP_FILE", str(p)) + f'  <pause milliseconds="{gap_ms}"/>\n'
        for p in pcaps
    )
    return text.replace(EXEC_LINE, block)


@pytest.fixture
async def stub_for() -> AsyncIterator[StubFactory]:
    transports: list[asyncio.DatagramTransport] = []

    async def make(ep: MediaEndpoint) -> tuple[SipStub, int]:
        loop = asyncio.get_running_loop()
        transport, proto = await loop.create_datagram_endpoint(
            lambda: SipStub(ep.answer_offer), local_addr=("127.0.0.1", 0))
        transports.append(transport)
        return proto, transport.get_extra_info("sockname")[1]

    yield make
    for t in transports:
        t.close()


def pcap_payloads(path: Path) -> list[bytes]:
    out: list[bytes] = []
    with path.open("rb") as f:
        for _, buf in dpkt.pcap.Reader(f):
            data = bytes(dpkt.ethernet.Ethernet(buf).data.data.data)
            out.append(data[12:])
    return out


async def finish(sipp: Sipp, stub: SipStub, timeout: float = 30) -> None:
    await asyncio.wait_for(stub.bye.wait(), timeout)
    result = await asyncio.to_thread(sipp.wait, 10)
    assert not stub.errors, stub.errors
    assert result.ok, result.explain()


async def test_g711a_pcap_with_30ms_packets_reaches_the_endpoint_and_is_relayed(
        engine: MediaEngine, peers: Callable[[], Peer], stub_for: StubFactory,
        tmp_path: Path) -> None:
    ep = await engine.open_endpoint(call_id="sipp-1", leg="a")
    listener = peers()
    other = await engine.open_endpoint(call_id="sipp-1", leg="b")
    other.answer_offer(listener.sdp("8"))
    engine.bridge(ep, other)
    started = asyncio.Event()
    ep.events.on("media_started", started.set)
    stub, stub_port = await stub_for(ep)
    expected = pcap_payloads(PCAPS / "g711a.pcap")
    with sipp_process(tmp_path, scenario_with([PCAPS / "g711a.pcap"]), stub_port,
                      talk_ms=7500) as sipp:
        await asyncio.wait_for(started.wait(), 10)
        got = await listener.packets(len(expected), timeout=15)
        await finish(sipp, stub)
    assert ep.negotiated is not None and ep.negotiated.ptime == 30
    assert len(expected) == 236 and all(len(p) == 240 for p in expected)
    assert [p.payload for p in got] == expected  # complete, in order, bytes untouched
    st = ep.stats
    assert st.packets_received == 236 and st.lost == 0
    assert len({p.ssrc for p in got}) == 1 and got[0].ssrc == other.ssrc


async def test_rfc2833_pcaps_replayed_by_sipp_are_detected(
        engine: MediaEngine, stub_for: StubFactory, tmp_path: Path) -> None:
    ep = await engine.open_endpoint(call_id="sipp-2", leg="a")
    seen: list[str] = []
    ep.events.on("dtmf", seen.append)
    stub, stub_port = await stub_for(ep)
    names = ["1", "1", "9", "star", "0", "pound"]  # the same capture twice: two presses
    files = [PCAPS / f"dtmf_2833_{n}.pcap" for n in names]
    with sipp_process(tmp_path, scenario_with(files), stub_port, talk_ms=500) as sipp:
        await asyncio.wait_for(stub.acked.wait(), 10)
        digits = await ep.collect_digits(6, first_digit_timeout=10, inter_digit_timeout=3)
        await finish(sipp, stub)
    assert digits == "119*0#"
    assert seen == list("119*0#")


async def test_prompt_echoed_by_sipp_arrives_complete_and_in_order(
        engine: MediaEngine, peers: Callable[[], Peer], stub_for: StubFactory,
        tmp_path: Path) -> None:
    ep = await engine.open_endpoint(call_id="sipp-3", leg="a")
    listener = peers()
    other = await engine.open_endpoint(call_id="sipp-3", leg="b")
    other.answer_offer(listener.sdp("8"))
    engine.bridge(ep, other)
    # relay only the echo coming back from SIPp: what `other` sends must not loop back
    engine_bridge = ep.bridge
    assert engine_bridge is not None
    engine_bridge.mute("b_to_a")
    stub, stub_port = await stub_for(ep)
    text = SCENARIO.read_text().replace(EXEC_LINE, "")
    audio = alaw_ramp(160 * 100)  # 2 s
    with sipp_process(tmp_path, text, stub_port, talk_ms=4000, rtp_echo=True) as sipp:
        await asyncio.wait_for(stub.acked.wait(), 10)
        playback = ep.play_audio([audio])
        got = await listener.packets(100, timeout=8)
        await playback
        await finish(sipp, stub)
    assert b"".join(p.payload for p in got) == audio
    assert [(p.sequence - got[0].sequence) & 0xFFFF for p in got] == list(range(100))
    assert ep.stats.packets_sent == 100 and ep.stats.packets_received == 100


def test_scenario_file_is_valid_xml() -> None:
    import xml.dom.minidom

    xml.dom.minidom.parseString(scenario_with([PCAPS / "g711a.pcap"]))
