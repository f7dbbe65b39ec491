"""One RTP leg: a UDP socket pair (RTP on an even port, RTCP on port+1) and everything that
flows through it — the asyncio adapter over the sans-I/O cores of this package.

Receive path (runs in the socket's reader callback, no task): validate the RTP header with
``struct``, latch onto the peer's real address (symmetric RTP: the first packet of a
negotiated payload type from any address wins, then the socket is ``connect``-ed so the
kernel filters everything else), update RFC 3550 statistics, then relay to the bridged leg
(header rewrite only), feed the recorder, detect DTMF.

Send path: prompts, tones and RFC 4733 events are paced by the node's single
:class:`~media.clock.MediaClock`; relayed packets go out as they arrive. Both share one
SSRC, one sequence counter and one timestamp line per endpoint, so a peer sees one
continuous stream across prompt ↔ bridge switches (marker bit on each talk-spurt start).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import enum
import functools
import os
import random
import socket
import struct
import time
from collections import deque
from collections.abc import Generator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog
from pyee.asyncio import AsyncIOEventEmitter

from media import g711, sdp
from media.dtmf import (
    DigitCollector,
    InbandDetector,
    PlannedEvent,
    TelephoneEventReceiver,
    dtmf_tone,
    normalize_digit,
    telephone_event_packets,
)
from media.errors import SdpError
from media.prompt import PromptSource
from media.rtp import (
    RTCP_BYE,
    RTCP_RR,
    RTCP_SR,
    RTP_HEADER,
    ReportBlock,
    RtpStats,
    RtpStatsSnapshot,
    build_bye,
    build_rr,
    build_sdes_cname,
    build_sr,
    ntp_from_unix,
    parse_rtcp,
    payload_offset,
    report_block,
)

if TYPE_CHECKING:
    from media.bridge import Bridge
    from media.engine import MediaEngine
    from media.recorder import Recorder

RELAY_HDR = struct.Struct("!BHII")  # octet 1 onwards of the fixed RTP header
SAMPLES_PER_TICK = 160
TS_MASK = 0xFFFFFFFF


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _disconnect(sock: socket.socket) -> None:
    """Dissolve a UDP socket's peer association: connect(2) with an AF_UNSPEC address."""
    unspec = (ctypes.c_ubyte * 16)()  # sa_family 0 = AF_UNSPEC
    if _libc().connect(sock.fileno(), ctypes.byref(unspec), ctypes.sizeof(unspec)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


class PlaybackResult(enum.Enum):
    COMPLETED = "completed"
    STOPPED = "stopped"
    BARGE_IN = "barge_in"  # a DTMF digit stopped it; the digit is queued for collect_digits
    REPLACED = "replaced"  # another play() started on the same endpoint
    CLOSED = "closed"


class Playback:
    """A prompt being played. ``await playback`` (or ``playback.done``) gives the
    :class:`PlaybackResult`; ``stop()`` ends it at the next tick boundary."""

    def __init__(self, endpoint: MediaEndpoint, source: PromptSource, *, barge_in: bool) -> None:
        self._endpoint = endpoint
        self.source = source
        self.barge_in = barge_in
        self.done: asyncio.Future[PlaybackResult] = endpoint._loop.create_future()

    def stop(self) -> None:
        self._endpoint._end_playback(self, PlaybackResult.STOPPED)

    @property
    def frames_played(self) -> int:
        return self.source.frames_played

    def __await__(self) -> Generator[Any, None, PlaybackResult]:
        # shield: cancelling the waiter must not cancel the shared ``done`` future
        return asyncio.shield(self.done).__await__()


class MediaEndpoint:
    """One leg's media. Created by :meth:`MediaEngine.open_endpoint`.

    Signalling-facing API (what the switch calls):

    * ``create_offer(*, direction=None) -> str`` — our SDP offer.
    * ``apply_answer(sdp: str) -> None`` — the peer's answer to our offer; raises SdpError.
    * ``answer_offer(sdp: str, *, direction=None) -> str`` — answer a peer's offer (initial
      or re-INVITE: hold/resume); raises SdpError, which the switch maps to 488.
    * ``hold()`` / ``resume()`` — set the direction our next offer/answer proposes.

    Media API: ``play``, ``stop_playback``, ``collect_digits``, ``inject_dtmf`` (SIP INFO),
    ``send_dtmf``, ``stats``, ``close``.

    ``events`` (pyee ``AsyncIOEventEmitter``):

    * ``"dtmf"`` (digit: str) — from RFC 4733, SIP INFO (``inject_dtmf``) or inband tones.
    * ``"media_started"`` () — first valid RTP packet received (real early media).
    * ``"media_timeout"`` (seconds: float) — no RTP for ``[media] rtp_timeout_s`` while the
      peer is supposed to send (not on hold); emitted once until RTP flows again.
    * ``"rtcp_bye"`` () — the peer sent RTCP BYE.
    """

    def __init__(self, engine: MediaEngine, *, call_id: str, leg: str, port: int,
                 rtp_sock: socket.socket, rtcp_sock: socket.socket) -> None:
        self._engine = engine
        self._loop = engine.loop
        self._clock = engine.clock
        cfg = engine.config
        self.call_id = call_id
        self.leg = leg
        self.port = port
        self._rtp_sock = rtp_sock
        self._rtcp_sock = rtcp_sock
        # The engine's call_id is its caller's key (the session id for service calls); it is
        # logged as session_id so it never shadows the SIP Call-ID bound by the switch.
        self.log = structlog.get_logger("media.endpoint").bind(session_id=call_id, leg=leg)
        self.events = AsyncIOEventEmitter(loop=self._loop)
        self._stats = RtpStats()
        self._codecs = tuple(cfg.codecs)
        self._ptime = cfg.ptime
        self._timeout_s = cfg.rtp_timeout_s
        self._inband_enabled = cfg.inband_dtmf
        self._gap_frames = max(0, cfg.prompt_gap_ms // 20)
        # SDP state
        self._session_id = random.getrandbits(31)
        self._session_version = random.getrandbits(16)
        self._local_dir = sdp.Direction.SENDRECV
        self._offer: sdp.LocalMedia | None = None
        self._neg: sdp.NegotiatedMedia | None = None
        self._sdp_remote: tuple[str, int] | None = None
        # transport state
        self._remote: tuple[str, int] | None = None
        self._rtcp_remote: tuple[str, int] | None = None
        self._latched = False
        self._rtcp_latched = False
        self._closed = False
        self._send_ok = False  # negotiated and our direction sends
        self._pt = 8
        self._te_pt: int | None = None
        self._codec = "PCMA"
        # outgoing stream continuity (RFC 3550 §5.1: random initial values)
        self.ssrc = random.getrandbits(32)
        self._seq = random.getrandbits(16)
        self._ts0 = random.getrandbits(32)
        self._last_ts = self._ts0
        self._last_sent_tick = -10
        self._relay_src: int | None = None
        self._relay_seq_off = 0
        self._relay_ts_off = 0
        # what the clock drives
        self._playback: Playback | None = None
        self._dtmf_plan: deque[tuple[PlannedEvent | None, int]] = deque()
        self._dtmf_event_ts = 0
        self._tone_frames: deque[bytes] = deque()
        self._on_clock = False
        self._frames_per_packet = 1
        self._agg: list[bytes] = []  # prompt frames waiting to fill a ptime > 20 ms packet
        self._agg_ts = 0
        self._agg_marker = False
        # receive side
        self._te_rx = TelephoneEventReceiver()
        self._inband: InbandDetector | None = None
        self._digits: asyncio.Queue[str] = asyncio.Queue(maxsize=64)
        self._collecting = 0
        self._relay_to: MediaEndpoint | None = None
        self.bridge: Bridge | None = None
        self._recorders: list[tuple[Recorder, int]] = []
        self._media_started = False
        self._last_rx = self._loop.time()
        self._timeout_emitted = False
        self._last_sr_mid = 0
        self._last_sr_arrival = 0.0
        self._rtcp_phase = random.randrange(5)
        self.invalid_packets = 0
        self.send_errors = 0
        # the peer's last RTCP report block about our stream, with our packets_sent when it
        # arrived (the denominator of the outgoing loss ratio)
        self._peer_report: ReportBlock | None = None
        self._peer_report_sent = 0
        # highest loss counts exported so far: RFC 3550 cumulative loss may shrink (late or
        # duplicate packets), a Prometheus counter must not
        self._lost_in_counted = 0
        self._lost_out_counted = 0
        self._loop.add_reader(rtp_sock.fileno(), self._on_rtp_readable)
        self._loop.add_reader(rtcp_sock.fileno(), self._on_rtcp_readable)

    # --- SDP ------------------------------------------------------------------------------

    def _local(self, direction: sdp.Direction | None) -> sdp.LocalMedia:
        self._session_version += 1
        return sdp.LocalMedia(
            address=self._engine.advertise_ip, port=self.port, codecs=self._codecs,
            ptime=self._ptime, direction=direction or self._local_dir,
            session_id=self._session_id, version=self._session_version,
        )

    def create_offer(self, *, direction: sdp.Direction | None = None) -> str:
        """SDP offer listing ``[media] codecs`` in order plus telephone-event."""
        self._offer = self._local(direction)
        return sdp.build_offer(self._offer)

    def apply_answer(self, sdp_text: str | bytes) -> None:
        """Apply the answer to our last offer. Raises :class:`SdpError`."""
        if self._offer is None:
            raise SdpError("no offer outstanding on this endpoint")
        neg = sdp.apply_answer(sdp.parse_sdp(sdp_text), self._offer)
        self._apply(neg)

    def answer_offer(self, sdp_text: str | bytes, *, direction: sdp.Direction | None = None
                     ) -> str:
        """Answer the peer's offer (initial INVITE or re-INVITE). Raises :class:`SdpError`."""
        text, neg = sdp.answer(sdp.parse_sdp(sdp_text), self._local(direction))
        self._apply(neg)
        return text

    def hold(self) -> None:
        """Our next offer/answer proposes sendonly (we stop listening for media timeout)."""
        self._local_dir = sdp.Direction.SENDONLY

    def resume(self) -> None:
        self._local_dir = sdp.Direction.SENDRECV

    @property
    def negotiated(self) -> sdp.NegotiatedMedia | None:
        return self._neg

    @property
    def codec(self) -> str:
        return self._codec

    def _apply(self, neg: sdp.NegotiatedMedia) -> None:
        if self._closed:
            raise SdpError("endpoint is closed")
        new_remote = (neg.remote_ip, neg.remote_port)
        if self._sdp_remote is not None and new_remote != self._sdp_remote and self._latched:
            # re-INVITE moved the peer: forget the latch, listen to anyone again
            self._reopen_sockets()
        self._sdp_remote = new_remote
        if not self._latched:
            self._remote = new_remote
        if not self._rtcp_latched:
            self._rtcp_remote = (neg.remote_ip, neg.remote_rtcp_port)
        self._neg = neg
        self._pt, self._te_pt, self._codec = neg.payload_type, neg.te_payload_type, neg.codec
        # the peer's a=ptime when it is a whole number of our 20 ms frames, else 20 ms
        # (ptime is a preference, RFC 4566 §6; 20 ms is what every G.711 peer accepts)
        self._frames_per_packet = neg.ptime // 20 if neg.ptime % 20 == 0 and \
            20 <= neg.ptime <= 120 else 1
        self._send_ok = neg.direction.sends and neg.remote_ip != "0.0.0.0"
        self._last_rx = self._loop.time()
        self._timeout_emitted = False
        self._update_inband()
        self.log.info("media_negotiated", codec=neg.codec, pt=neg.payload_type,
                      te_pt=neg.te_payload_type, remote=f"{neg.remote_ip}:{neg.remote_port}",
                      direction=neg.direction.value, ptime=neg.ptime)

    def _reopen_sockets(self) -> None:
        """A connected UDP socket only hears its peer: dissolve the association
        (connect to AF_UNSPEC, as connect(2) documents) so that anyone may be latched."""
        for sock, port in ((self._rtp_sock, self.port), (self._rtcp_sock, self.port + 1)):
            try:
                _disconnect(sock)
                if sock.getsockname()[1] != port:  # the kernel must keep our bound port
                    raise OSError("port lost on disconnect")
            except OSError:
                # no libc connect(AF_UNSPEC): re-create the socket on the same port
                self._loop.remove_reader(self._rtp_sock.fileno())
                self._loop.remove_reader(self._rtcp_sock.fileno())
                self._rtp_sock.close()
                self._rtcp_sock.close()
                try:
                    self._rtp_sock, self._rtcp_sock = self._engine._bind_pair(self.port)
                except OSError as e:
                    raise SdpError(f"cannot re-bind RTP port {self.port}: {e}") from None
                self._loop.add_reader(self._rtp_sock.fileno(), self._on_rtp_readable)
                self._loop.add_reader(self._rtcp_sock.fileno(), self._on_rtcp_readable)
                break
        self._latched = self._rtcp_latched = False

    def _update_inband(self) -> None:
        want = (
            self._inband_enabled and self._neg is not None and self._neg.te_payload_type is None
            and (self._relay_to is None or self._collecting > 0)
        )
        if want and self._inband is None:
            self._inband = InbandDetector()
        elif not want:
            self._inband = None

    # --- receive --------------------------------------------------------------------------

    def _on_rtp_readable(self) -> None:
        # One datagram per readiness callback: the poller is level-triggered, so a backlog
        # brings us straight back, and at 50 packets/s per socket a second recv() would
        # almost always end in a BlockingIOError, whose cost is as high as the packet's.
        try:
            if self._latched and self._remote is not None:
                # connected: the kernel only delivers the peer's packets
                data, addr = self._rtp_sock.recv(2048), self._remote
            else:
                data, addr = self._rtp_sock.recvfrom(2048)
        except OSError:  # BlockingIOError, or ICMP port unreachable on a connected socket
            return
        self._on_rtp(data, addr, self._loop.time())

    def _on_rtp(self, data: bytes, addr: tuple[str, int], now: float) -> None:
        if len(data) < 12 or (data[0] & 0xC0) != 0x80:
            self.invalid_packets += 1
            return
        b1 = data[1]
        if 200 <= b1 <= 204:  # RTCP multiplexed on the RTP port (RFC 5761)
            self._on_rtcp(data, addr, now)
            return
        neg = self._neg
        pt = b1 & 0x7F
        if neg is None or (pt != self._pt and pt != self._te_pt):
            self.invalid_packets += 1  # not negotiated (yet): never latch on it
            return
        if not self._latched:
            self._latch(addr)
        _, _, seq, ts, ssrc = RTP_HEADER.unpack_from(data)
        self._stats.on_packet(seq, ts, ssrc, len(data), now, jitter=pt == self._pt)
        self._last_rx = now
        if not self._media_started:
            self._media_started = True
            self.log.info("media_started", remote=f"{addr[0]}:{addr[1]}")
            self._emit("media_started")
        if self._timeout_emitted:
            self._timeout_emitted = False
        peer = self._relay_to
        if pt == self._te_pt:
            off = payload_offset(data)
            if off < 0:
                return
            digit = self._te_rx.on_packet(ssrc, ts, data[off:], now)
            if peer is not None:
                if peer._te_pt is not None:
                    peer._relay_in(data, b1, seq, ts, ssrc, self._codec, now, te=True)
                elif digit is not None:
                    peer.send_dtmf(digit)  # the peer has no telephone-event: play a tone
            if digit is not None:
                self._on_digit(digit, "rfc4733")
            return
        if peer is not None:
            peer._relay_in(data, b1, seq, ts, ssrc, self._codec, now)
        if self._recorders or self._inband is not None:
            off = payload_offset(data)
            if off < 0:
                return
            payload = data[off:]
            if self._recorders:
                alaw = payload if self._codec == "PCMA" else g711.ulaw_to_alaw(payload)
                for rec, direction in self._recorders:
                    rec.feed(direction, alaw, now)
            if self._inband is not None:
                for digit in self._inband.feed(g711.decode(self._codec, payload)):
                    self._on_digit(digit, "inband")

    def _latch(self, addr: tuple[str, int]) -> None:
        self._latched = True
        if addr != self._remote:
            self.log.info("rtp_latched", sdp=str(self._remote), actual=f"{addr[0]}:{addr[1]}")
        self._remote = addr
        try:
            self._rtp_sock.connect(addr)
        except OSError as e:
            self.log.warning("rtp_connect_failed", error=str(e))

    def _on_rtcp_readable(self) -> None:
        sock = self._rtcp_sock
        now = self._loop.time()
        for _ in range(64):  # RTCP is rare: drain what is there
            try:
                data, addr = sock.recvfrom(2048)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue
            self._on_rtcp(data, addr, now)

    def _on_rtcp(self, data: bytes, addr: tuple[str, int], now: float) -> None:
        try:
            packets = parse_rtcp(data)
        except (ValueError, struct.error):
            self.invalid_packets += 1
            return
        if self._neg is None:
            return
        if not self._rtcp_latched and addr[0] == (self._remote or ("",))[0]:
            self._rtcp_latched = True
            self._rtcp_remote = addr
            with contextlib.suppress(OSError):
                self._rtcp_sock.connect(addr)
        for p in packets:
            pt = p.packet_type
            if pt in (RTCP_SR, RTCP_RR):
                if pt == RTCP_SR:
                    self._last_sr_mid = (p.ntp_timestamp >> 16) & 0xFFFFFFFF
                    self._last_sr_arrival = now
                for block in p.report_blocks:
                    if block.ssrc == self.ssrc:  # the peer's view of what we send
                        self._peer_report = block
                        self._peer_report_sent = self._stats.packets_sent
            elif pt == RTCP_BYE:
                self.log.info("rtcp_bye_received")
                self._emit("rtcp_bye")

    def _emit(self, event: str, *args: object) -> None:
        """Emit from the socket/clock callbacks: a failing listener is logged, it must not
        break the packet path (pyee re-raises when nobody listens to "error")."""
        try:
            self.events.emit(event, *args)
        except Exception:
            self.log.exception("media_event_listener_failed", media_event=event)

    # --- digits ---------------------------------------------------------------------------

    def _on_digit(self, digit: str, source: str) -> None:
        self.log.info("dtmf_received", digit=digit, source=source)
        pb = self._playback
        if pb is not None and pb.barge_in:
            self._end_playback(pb, PlaybackResult.BARGE_IN)
        if self._digits.full():
            self._digits.get_nowait()
        self._digits.put_nowait(digit)
        self._emit("dtmf", digit)

    def inject_dtmf(self, digit: str, duration_ms: int = 100) -> None:
        """A digit signalled out of band (SIP INFO ``application/dtmf-relay``): handled as
        if received in RTP (event, barge-in, collection). Not forwarded to a bridged leg:
        the switch decides whether to relay INFO. Raises ValueError for a non-DTMF digit."""
        self._on_digit(normalize_digit(digit), "sip_info")

    async def collect_digits(self, count: int, *, first_digit_timeout: float = 5.0,
                             inter_digit_timeout: float = 5.0) -> str:
        """Collect up to ``count`` digits (DTMF-1). Digits typed since the last ``play()``
        started count (type-ahead, including a barge-in digit). Returns early with what was
        collected (maybe "") when the first digit does not come within
        ``first_digit_timeout`` or the next within ``inter_digit_timeout`` seconds."""
        loop = self._loop
        col = DigitCollector(count, loop.time(), first_digit_timeout=first_digit_timeout,
                             inter_digit_timeout=inter_digit_timeout)
        self._collecting += 1
        self._update_inband()
        try:
            while not col.done and not self._closed:
                if not self._digits.empty():
                    col.on_digit(self._digits.get_nowait(), loop.time())
                    continue
                remaining = col.deadline - loop.time()
                if remaining <= 0:
                    col.on_time(loop.time())
                    continue
                try:
                    digit = await asyncio.wait_for(self._digits.get(), remaining)
                except TimeoutError:
                    col.on_time(loop.time())
                    continue
                if digit:
                    col.on_digit(digit, loop.time())
        finally:
            self._collecting -= 1
            self._update_inband()
        self.log.info("digits_collected", digits=col.digits, timed_out=col.timed_out)
        return col.digits

    def send_dtmf(self, digits: str, *, duration_ms: int = 100, gap_ms: int = 60) -> None:
        """Send digits as RFC 4733 events when negotiated, else as inband tones. Audio
        (prompt or relay) towards the peer pauses while a digit is sent. Raises
        ValueError for characters that are not DTMF digits."""
        ds = [normalize_digit(d) for d in digits]
        gap_ticks = max(1, gap_ms // 20)
        for d in ds:
            if self._te_pt is not None:
                for pe in telephone_event_packets(d, duration_ms):
                    self._dtmf_plan.append((pe, 0))
                self._dtmf_plan.extend((None, 0) for _ in range(gap_ticks))
            else:
                tone = g711.alaw_encode(dtmf_tone(d, duration_ms))
                for i in range(0, len(tone), SAMPLES_PER_TICK):
                    chunk = tone[i:i + SAMPLES_PER_TICK]
                    self._tone_frames.append(chunk.ljust(SAMPLES_PER_TICK, b"\xd5"))
                self._tone_frames.extend(b"\xd5" * SAMPLES_PER_TICK for _ in range(gap_ticks))
        self._ensure_clock()

    # --- playback -------------------------------------------------------------------------

    def play(self, files: Sequence[Path], *, loop: bool = False, barge_in: bool = False
             ) -> Playback:
        """Play ``files`` in order (silence of ``[media] prompt_gap_ms`` between items),
        repeating while ``loop``; with ``barge_in`` the first DTMF digit stops it. Replaces
        a running playback. Raises PlayFileError when a file cannot be played."""
        items = [self._engine.load_prompt(Path(f)) for f in files]
        return self.play_audio(items, loop=loop, barge_in=barge_in)

    def play_audio(self, items: Sequence[bytes], *, loop: bool = False, barge_in: bool = False
                   ) -> Playback:
        """Like :meth:`play` with A-law sample buffers instead of files."""
        if self._playback is not None:
            self._end_playback(self._playback, PlaybackResult.REPLACED)
        while not self._digits.empty():  # type-ahead starts with this prompt
            self._digits.get_nowait()
        src = PromptSource(items, loop=loop, gap_frames=self._gap_frames)
        pb = Playback(self, src, barge_in=barge_in)
        if self._closed:
            pb.done.set_result(PlaybackResult.CLOSED)
            return pb
        self._playback = pb
        self._relay_src = None
        self._ensure_clock()
        return pb

    def stop_playback(self) -> None:
        if self._playback is not None:
            self._end_playback(self._playback, PlaybackResult.STOPPED)

    @property
    def playing(self) -> bool:
        return self._playback is not None

    def _end_playback(self, pb: Playback, result: PlaybackResult) -> None:
        if self._playback is pb:
            self._playback = None
            self._agg = []  # a stopped prompt's last <= 100 ms are not worth sending
        if not pb.done.done():
            pb.done.set_result(result)

    # --- clock-driven send ----------------------------------------------------------------

    def _ensure_clock(self) -> None:
        if not self._on_clock and not self._closed:
            self._on_clock = True
            self._clock.add(self)

    def on_tick(self, tick: int, now: float) -> None:
        pb = self._playback
        if pb is not None and not self._dtmf_plan and not self._tone_frames:
            # the common case, kept flat: one prompt frame out
            src = pb.source
            frame = src.next_frame()
            if frame is None:
                self._flush_agg()
                self._end_playback(pb, PlaybackResult.COMPLETED)
            else:
                marker = src.spurt_start or self._last_sent_tick != tick - 1
                src.spurt_start = False
                if self._send_ok:
                    self._relay_src = None
                    self._last_sent_tick = tick
                    if self._agg:  # filling a ptime > 20 ms packet
                        self._agg.append(frame)
                        if len(self._agg) >= self._frames_per_packet:
                            self._flush_agg()
                        return
                    ts = (self._ts0 + tick * SAMPLES_PER_TICK) & TS_MASK
                    delta = (ts - self._last_ts) & TS_MASK
                    if delta == 0 or delta >= 0x80000000:
                        ts = (self._last_ts + SAMPLES_PER_TICK) & TS_MASK
                    self._last_ts = ts
                    if self._frames_per_packet > 1:
                        self._agg, self._agg_ts, self._agg_marker = [frame], ts, marker
                        return
                    seq = self._seq
                    self._seq = (seq + 1) & 0xFFFF
                    if self._codec != "PCMA":
                        frame = g711.alaw_to_ulaw(frame)
                    self._send(RTP_HEADER.pack(0x80, (0x80 if marker else 0) | self._pt, seq,
                                               ts, self.ssrc) + frame)
                return
        elif self._dtmf_plan:
            self._flush_agg()
            pe, _ = self._dtmf_plan.popleft()
            if pe is not None:
                if pe.marker:
                    self._dtmf_event_ts = self._next_ts(tick)
                self._send_packet(self._te_pt or 101, pe.payload, tick, pe.marker,
                                  ts=self._dtmf_event_ts)
            self._last_sent_tick = -10  # audio after the event starts a new talk spurt
        elif self._tone_frames:
            self._flush_agg()
            self._send_audio(self._tone_frames.popleft(), tick, False)
        if not (self._dtmf_plan or self._tone_frames or self._playback):
            self._on_clock = False
            self._clock.discard(self)

    def _flush_agg(self) -> None:
        """Send the prompt frames gathered for a ptime > 20 ms packet (a short packet at
        the end of a prompt is fine: the timestamp says where it belongs)."""
        if not self._agg:
            return
        payload = b"".join(self._agg)
        self._agg = []
        if not self._send_ok or self._remote is None:
            return
        if self._codec != "PCMA":
            payload = g711.alaw_to_ulaw(payload)
        seq = self._seq
        self._seq = (seq + 1) & 0xFFFF
        self._send(RTP_HEADER.pack(0x80, (0x80 if self._agg_marker else 0) | self._pt, seq,
                                   self._agg_ts, self.ssrc) + payload)

    def _next_ts(self, tick: int) -> int:
        ts = (self._ts0 + tick * SAMPLES_PER_TICK) & TS_MASK
        delta = (ts - self._last_ts) & TS_MASK
        if delta == 0 or delta >= 0x80000000:  # never step back after relayed packets
            ts = (self._last_ts + SAMPLES_PER_TICK) & TS_MASK
        return ts

    def _send_audio(self, alaw: bytes, tick: int, marker: bool) -> None:
        payload = alaw if self._codec == "PCMA" else g711.alaw_to_ulaw(alaw)
        marker = marker or self._last_sent_tick != tick - 1
        self._send_packet(self._pt, payload, tick, marker, ts=self._next_ts(tick))

    def _send_packet(self, pt: int, payload: bytes, tick: int, marker: bool, *, ts: int) -> None:
        self._relay_src = None  # relayed packets after this re-anchor their mapping
        if not self._send_ok or self._remote is None:
            return
        seq = self._seq
        self._seq = (seq + 1) & 0xFFFF
        self._last_ts = ts
        self._last_sent_tick = tick
        pkt = RTP_HEADER.pack(0x80, (0x80 if marker else 0) | pt, seq, ts, self.ssrc) + payload
        self._send(pkt)

    def _send(self, pkt: bytes | bytearray) -> None:
        try:
            if self._latched:
                self._rtp_sock.send(pkt)
            else:
                assert self._remote is not None
                self._rtp_sock.sendto(pkt, self._remote)
            self._stats.on_sent(len(pkt))
        except OSError:  # full socket buffer, or ICMP unreachable on a connected socket
            self.send_errors += 1

    def _relay_in(self, data: bytes, b1: int, in_seq: int, in_ts: int, in_ssrc: int,
                  codec_in: str, now: float, *, te: bool = False) -> None:
        """A packet from the bridged leg: rewrite SSRC/sequence/timestamp/PT into our own
        stream and send it; transcode G.711 when the codecs differ. Dropped while a prompt
        or DTMF of our own is going out, or while our direction does not send.

        This is the hot path of a bridged call: header fields arrive already unpacked, the
        rewrite is one ``pack_into`` on a copy of the datagram."""
        if not self._send_ok or self._playback is not None or self._dtmf_plan or \
                self._tone_frames:
            return
        marker = b1 & 0x80
        if in_ssrc != self._relay_src:
            # (re)anchor: continue our own timestamp line at the present moment
            tick_f = self._clock.current_tick_float(now)
            target = (self._ts0 + int(tick_f * SAMPLES_PER_TICK)) & TS_MASK
            delta = (target - self._last_ts) & TS_MASK
            if delta == 0 or delta >= 0x80000000:
                target = (self._last_ts + SAMPLES_PER_TICK) & TS_MASK
            self._relay_ts_off = (target - in_ts) & TS_MASK
            self._relay_seq_off = (self._seq - in_seq) & 0xFFFF
            self._relay_src = in_ssrc
            marker = 0x80
            self._last_sent_tick = -10  # our next own packet starts a talk spurt
        seq = (in_seq + self._relay_seq_off) & 0xFFFF
        ts = (in_ts + self._relay_ts_off) & TS_MASK
        if ((seq - self._seq) & 0xFFFF) < 0x8000:
            self._seq = (seq + 1) & 0xFFFF
        self._last_ts = ts
        pt = self._te_pt if te else self._pt
        assert pt is not None
        b0 = data[0]
        if b0 == 0x80 and (te or codec_in == self._codec):
            pkt: bytes | bytearray = bytearray(data)
            RELAY_HDR.pack_into(pkt, 1, marker | pt, seq, ts, self.ssrc)
        else:
            # CSRCs, header extension or padding of the other leg are not ours: rebuild
            off = payload_offset(data)
            if off < 0:
                return
            end = len(data) - (data[-1] if b0 & 0x20 and data[-1] <= len(data) - off else 0)
            payload = data[off:end]
            if not te:
                payload = g711.transcode(codec_in, self._codec, payload)
            pkt = RTP_HEADER.pack(0x80, marker | pt, seq, ts, self.ssrc) + payload
        try:
            if self._latched:
                self._rtp_sock.send(pkt)
            elif self._remote is not None:
                self._rtp_sock.sendto(pkt, self._remote)
            else:
                return
            st = self._stats
            st.packets_sent += 1
            st.octets_sent += len(pkt)
        except OSError:
            self.send_errors += 1

    # --- housekeeping (1 Hz from the engine) ----------------------------------------------

    def housekeeping(self, tick: int, now: float) -> None:
        neg = self._neg
        if neg is None or self._closed:
            return
        if (self._timeout_s > 0 and neg.direction.receives and not self._timeout_emitted
                and now - self._last_rx >= self._timeout_s):
            self._timeout_emitted = True
            self._engine.totals.timeouts += 1
            self.log.warning("media_timeout", seconds=round(now - self._last_rx, 1))
            self._emit("media_timeout", now - self._last_rx)
        if (tick // 50 + self._rtcp_phase) % 5 == 0:
            self._send_rtcp(now)

    def _rtcp_packet(self, now: float) -> bytes:
        dlsr = 0
        if self._last_sr_arrival:
            dlsr = int((now - self._last_sr_arrival) * 65536) & 0xFFFFFFFF
        block = report_block(self._stats, self._last_sr_mid, dlsr)
        blocks = (block,) if block is not None else ()
        if self._stats.packets_sent:
            ntp = ntp_from_unix(time.time())
            rtp_ts = self._next_ts(int(self._clock.current_tick_float(now)))
            head = build_sr(self.ssrc, ntp, rtp_ts, self._stats.packets_sent,
                            self._stats.octets_sent, blocks)
        else:
            head = build_rr(self.ssrc, blocks)
        return head + build_sdes_cname(self.ssrc, f"voicecall@{self._engine.advertise_ip}")

    def _send_rtcp(self, now: float, *, bye: bool = False) -> None:
        if self._rtcp_remote is None:
            return
        pkt = self._rtcp_packet(now)
        if bye:
            pkt += build_bye(self.ssrc)
        try:
            if self._rtcp_latched:
                self._rtcp_sock.send(pkt)
            else:
                self._rtcp_sock.sendto(pkt, self._rtcp_remote)
        except OSError:
            self.send_errors += 1

    # --- misc -----------------------------------------------------------------------------

    @property
    def stats(self) -> RtpStatsSnapshot:
        return self._stats.snapshot()

    @property
    def peer_report(self) -> ReportBlock | None:
        """The last RTCP report block the peer sent about our stream, if any."""
        return self._peer_report

    def counted_loss(self) -> tuple[int, int]:
        """Packets lost (in, out) for the metrics counters: RFC 3550 cumulative loss of
        what we received, and what the peer reported about what we sent, each held at
        its highest value so far."""
        lost_in = self._stats.lost_total
        if lost_in > self._lost_in_counted:
            self._lost_in_counted = lost_in
        rep = self._peer_report
        if rep is not None and rep.cumulative_lost > self._lost_out_counted:
            self._lost_out_counted = rep.cumulative_lost
        return self._lost_in_counted, self._lost_out_counted

    def stream_quality(self) -> list[tuple[str, float, float]]:
        """(direction, jitter seconds, loss ratio) of each direction that carried RTP:
        "in" from our receiver statistics, "out" from the peer's last RTCP report (its
        loss ratio relative to the packets we had sent when that report arrived)."""
        out: list[tuple[str, float, float]] = []
        st = self._stats
        expected = st.expected_total
        if expected > 0:
            out.append(("in", st.jitter_s, min(1.0, st.lost_total / expected)))
        rep = self._peer_report
        if rep is not None and self._peer_report_sent > 0:
            ratio = max(0, rep.cumulative_lost) / self._peer_report_sent
            out.append(("out", rep.jitter / st.clock_rate, min(1.0, ratio)))
        return out

    @property
    def remote_address(self) -> tuple[str, int] | None:
        """Where RTP goes now (the latched source once the peer has sent)."""
        return self._remote

    @property
    def latched(self) -> bool:
        return self._latched

    @property
    def closed(self) -> bool:
        return self._closed

    async def close(self) -> None:
        """Send RTCP BYE, end playback and collection, release the port pair. Idempotent."""
        if self._closed:
            return
        self._closed = True
        now = self._loop.time()
        if self._neg is not None:
            self._send_rtcp(now, bye=True)
        if self._playback is not None:
            self._end_playback(self._playback, PlaybackResult.CLOSED)
        self._dtmf_plan.clear()
        self._tone_frames.clear()
        if self._on_clock:
            self._on_clock = False
            self._clock.discard(self)
        if self.bridge is not None:
            self.bridge.stop()
        for rec, _ in list(self._recorders):
            rec.flush(now)
        self._recorders.clear()
        if self._collecting and self._digits.empty():
            self._digits.put_nowait("")  # wake a waiting collect_digits
        for s in (self._rtp_sock, self._rtcp_sock):
            with contextlib.suppress(ValueError, OSError):
                self._loop.remove_reader(s.fileno())
            s.close()
        self._engine._release(self)
        snap = self._stats.snapshot()
        self.log.info("media_closed", packets_received=snap.packets_received,
                      packets_sent=snap.packets_sent, lost=snap.lost, jitter_ms=snap.jitter_ms)

    def __repr__(self) -> str:
        return f"<MediaEndpoint {self.call_id}/{self.leg} port={self.port}>"
