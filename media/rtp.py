"""RTP and RTCP wire formats and receiver statistics (RFC 3550), sans-I/O.

Headers are read and written with :mod:`struct` on the fixed 12-byte part; the relay path
uses :func:`rewrite_header` on a ``bytearray`` so that no packet object is built per packet.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

RTP_HEADER = struct.Struct("!BBHII")
RTP_VERSION = 2
RTP_SEQ_MOD = 1 << 16
MAX_DROPOUT = 3000  # RFC 3550 A.1
MAX_MISORDER = 100
MIN_SEQUENTIAL = 2


@dataclass(frozen=True, slots=True)
class RtpPacket:
    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    payload: bytes
    marker: bool = False
    csrc: tuple[int, ...] = ()

    def pack(self) -> bytes:
        return pack_rtp(
            self.payload_type, self.sequence, self.timestamp, self.ssrc, self.payload,
            marker=self.marker, csrc=self.csrc,
        )


def pack_rtp(
    payload_type: int, sequence: int, timestamp: int, ssrc: int, payload: bytes,
    *, marker: bool = False, csrc: tuple[int, ...] = (),
) -> bytes:
    b0 = (RTP_VERSION << 6) | len(csrc)
    b1 = (0x80 if marker else 0) | (payload_type & 0x7F)
    head = RTP_HEADER.pack(b0, b1, sequence & 0xFFFF, timestamp & 0xFFFFFFFF, ssrc & 0xFFFFFFFF)
    if csrc:
        head += struct.pack(f"!{len(csrc)}I", *csrc)
    return head + payload


def payload_offset(data: bytes | bytearray | memoryview) -> int:
    """Offset of the payload, or -1 when the packet is not a well-formed RTP packet.

    Handles CSRC lists and the header extension (RFC 3550 §5.3.1); padding is not
    subtracted here (see :func:`parse_rtp`)."""
    n = len(data)
    if n < 12 or (data[0] >> 6) != RTP_VERSION:
        return -1
    off = 12 + 4 * (data[0] & 0x0F)
    if data[0] & 0x10:
        if n < off + 4:
            return -1
        off += 4 + 4 * ((data[off + 2] << 8) | data[off + 3])
    return off if off <= n else -1


def parse_rtp(data: bytes) -> RtpPacket | None:
    """Parse one RTP packet; ``None`` for anything that is not RTP version 2."""
    off = payload_offset(data)
    if off < 0:
        return None
    b0, b1, seq, ts, ssrc = RTP_HEADER.unpack_from(data)
    end = len(data)
    if b0 & 0x20:  # padding: last octet counts the padding octets
        pad = data[-1]
        if pad == 0 or end - pad < off:
            return None
        end -= pad
    cc = b0 & 0x0F
    csrc = struct.unpack_from(f"!{cc}I", data, 12) if cc else ()
    return RtpPacket(b1 & 0x7F, seq, ts, ssrc, bytes(data[off:end]), bool(b1 & 0x80), csrc)


def is_rtcp(data: bytes | bytearray) -> bool:
    """RFC 5761 §4: RTCP packet types 192..223 occupy the second octet."""
    return len(data) >= 8 and (data[0] >> 6) == 2 and 192 <= data[1] <= 223


# --- receiver statistics (RFC 3550 appendix A.1, A.3, A.8) ---------------------------------


@dataclass(slots=True)
class RtpStats:
    """Per-leg receive and send counters. ``jitter`` is kept in timestamp units (A.8)."""

    clock_rate: int = 8000
    packets_received: int = 0
    octets_received: int = 0
    packets_sent: int = 0
    octets_sent: int = 0
    ssrc: int | None = None
    base_seq: int = 0
    max_seq: int = 0
    cycles: int = 0
    bad_seq: int = RTP_SEQ_MOD + 1
    probation: int = MIN_SEQUENTIAL
    received: int = 0  # packets counted towards loss (valid sequence)
    expected_prior: int = 0
    received_prior: int = 0
    jitter: float = 0.0
    transit: int | None = None
    last_arrival: float = 0.0
    ssrc_changes: int = 0
    # loss of earlier sources/sequence lines: A.1 restarts ``expected``/``received`` on an
    # SSRC change or a resync, and a stream's totals must not forget what came before
    lost_folded: int = 0
    expected_folded: int = 0

    # A.1 ------------------------------------------------------------------------------
    def _init_seq(self, seq: int) -> None:
        self.base_seq = seq
        self.max_seq = seq
        self.bad_seq = RTP_SEQ_MOD + 1
        self.cycles = 0
        self.received = 0
        self.received_prior = 0
        self.expected_prior = 0

    def _update_seq(self, seq: int) -> bool:
        udelta = (seq - self.max_seq) & 0xFFFF
        if self.probation:
            if seq == ((self.max_seq + 1) & 0xFFFF):
                self.probation -= 1
                self.max_seq = seq
                if self.probation == 0:
                    self._init_seq(seq)
                    self.received += 1
                    return True
            else:
                self.probation = MIN_SEQUENTIAL - 1
                self.max_seq = seq
            return False
        if udelta < MAX_DROPOUT:
            if seq < self.max_seq:
                self.cycles += RTP_SEQ_MOD
            self.max_seq = seq
        elif udelta <= RTP_SEQ_MOD - MAX_MISORDER:
            if seq == self.bad_seq:
                self._fold()
                self._init_seq(seq)  # the source restarted: resync
            else:
                self.bad_seq = (seq + 1) & 0xFFFF
                return False
        # else: duplicate or reordered packet, counted
        self.received += 1
        return True

    def on_packet(self, seq: int, timestamp: int, ssrc: int, size: int, arrival: float,
                  *, jitter: bool = True) -> None:
        """Account one received packet; ``arrival`` in seconds on any monotonic clock.
        ``jitter=False`` for packets whose timestamp is not a sampling instant (RFC 4733
        events repeat the event's start timestamp)."""
        self.packets_received += 1
        self.octets_received += size
        if (ssrc == self.ssrc and not self.probation
                and seq == ((self.max_seq + 1) & 0xFFFF) and seq):
            # fast path, the common case: in-order packet of the current source
            self.max_seq = seq
            self.received += 1
        elif ssrc != self.ssrc:
            if self.ssrc is not None:
                self.ssrc_changes += 1
                self._fold()
            self.ssrc = ssrc
            self.max_seq = (seq - 1) & 0xFFFF
            self.probation = MIN_SEQUENTIAL
            self.transit = None
            self._update_seq(seq)
        else:
            self._update_seq(seq)
        # A.8 interarrival jitter: J += (|D| - J) / 16, D in timestamp units
        if not jitter:
            return
        arrival_ts = int(arrival * self.clock_rate)
        transit = arrival_ts - timestamp
        if self.transit is not None:
            d = abs(transit - self.transit)
            if d < self.clock_rate * 10:  # ignore timestamp jumps (new talk spurt source)
                self.jitter += (d - self.jitter) / 16.0
        self.transit = transit
        self.last_arrival = arrival

    def _fold(self) -> None:
        expected = self.expected
        if expected:
            self.lost_folded += max(0, expected - self.received)
            self.expected_folded += expected

    def on_sent(self, size: int) -> None:
        self.packets_sent += 1
        self.octets_sent += size

    @property
    def extended_max(self) -> int:
        return self.cycles + self.max_seq

    @property
    def expected(self) -> int:
        if self.ssrc is None or self.probation:
            return 0
        return self.extended_max - self.base_seq + 1

    @property
    def lost(self) -> int:
        """Cumulative packets lost (A.3); negative when duplicates outnumber losses."""
        return self.expected - self.received if self.expected else 0

    @property
    def lost_total(self) -> int:
        """Packets lost over every source this leg heard, never negative per source
        (duplicates do not cancel losses of another source)."""
        return self.lost_folded + max(0, self.lost)

    @property
    def expected_total(self) -> int:
        return self.expected_folded + self.expected

    @property
    def jitter_s(self) -> float:
        return self.jitter / self.clock_rate

    @property
    def jitter_ms(self) -> float:
        return self.jitter * 1000.0 / self.clock_rate

    def fraction_lost_interval(self) -> int:
        """Fraction lost since the previous call, as the 8-bit RTCP value (A.3)."""
        expected = self.expected
        expected_interval = expected - self.expected_prior
        self.expected_prior = expected
        received_interval = self.received - self.received_prior
        self.received_prior = self.received
        lost_interval = expected_interval - received_interval
        if expected_interval == 0 or lost_interval <= 0:
            return 0
        return (lost_interval << 8) // expected_interval

    def snapshot(self) -> RtpStatsSnapshot:
        return RtpStatsSnapshot(
            packets_received=self.packets_received,
            packets_sent=self.packets_sent,
            octets_received=self.octets_received,
            octets_sent=self.octets_sent,
            expected=self.expected,
            lost=self.lost,
            jitter_ms=round(self.jitter_ms, 3),
            ssrc_changes=self.ssrc_changes,
        )


@dataclass(frozen=True)
class RtpStatsSnapshot:
    packets_received: int
    packets_sent: int
    octets_received: int
    octets_sent: int
    expected: int
    lost: int
    jitter_ms: float
    ssrc_changes: int


# --- RTCP (RFC 3550 §6) ------------------------------------------------------------------

RTCP_SR = 200
RTCP_RR = 201
RTCP_SDES = 202
RTCP_BYE = 203
NTP_EPOCH_OFFSET = 2208988800


@dataclass(frozen=True)
class ReportBlock:
    ssrc: int
    fraction_lost: int
    cumulative_lost: int
    highest_seq: int
    jitter: int
    lsr: int = 0
    dlsr: int = 0

    def pack(self) -> bytes:
        cum = self.cumulative_lost & 0xFFFFFF  # 24-bit signed, two's complement
        return struct.pack(
            "!IIIIII", self.ssrc, ((self.fraction_lost & 0xFF) << 24) | cum,
            self.highest_seq & 0xFFFFFFFF, self.jitter & 0xFFFFFFFF, self.lsr, self.dlsr,
        )


@dataclass(frozen=True)
class RtcpPacket:
    packet_type: int
    ssrc: int
    report_blocks: tuple[ReportBlock, ...] = ()
    ntp_timestamp: int = 0
    rtp_timestamp: int = 0
    packet_count: int = 0
    octet_count: int = 0
    bye_ssrcs: tuple[int, ...] = field(default_factory=tuple)


def _rtcp_header(pt: int, count: int, body_len: int) -> bytes:
    return struct.pack("!BBH", 0x80 | count, pt, (body_len + 4) // 4 - 1)


def ntp_from_unix(t: float) -> int:
    sec = int(t) + NTP_EPOCH_OFFSET
    frac = int((t - int(t)) * (1 << 32)) & 0xFFFFFFFF
    return (sec << 32) | frac


def build_sr(
    ssrc: int, ntp: int, rtp_ts: int, packets: int, octets: int, blocks: tuple[ReportBlock, ...]
) -> bytes:
    body = struct.pack(
        "!IQIII", ssrc, ntp, rtp_ts & 0xFFFFFFFF, packets & 0xFFFFFFFF, octets & 0xFFFFFFFF
    ) + b"".join(b.pack() for b in blocks)
    return _rtcp_header(RTCP_SR, len(blocks), len(body)) + body


def build_rr(ssrc: int, blocks: tuple[ReportBlock, ...]) -> bytes:
    body = struct.pack("!I", ssrc) + b"".join(b.pack() for b in blocks)
    return _rtcp_header(RTCP_RR, len(blocks), len(body)) + body


def build_sdes_cname(ssrc: int, cname: str) -> bytes:
    raw = cname.encode()[:255]
    item = struct.pack("!IBB", ssrc, 1, len(raw)) + raw + b"\x00"
    item += b"\x00" * (-len(item) % 4)
    return _rtcp_header(RTCP_SDES, 1, len(item)) + item


def build_bye(ssrc: int) -> bytes:
    body = struct.pack("!I", ssrc)
    return _rtcp_header(RTCP_BYE, 1, len(body)) + body


def report_block(stats: RtpStats, lsr: int = 0, dlsr: int = 0) -> ReportBlock | None:
    if stats.ssrc is None:
        return None
    lost = max(min(stats.lost, 0x7FFFFF), -0x800000)
    return ReportBlock(
        stats.ssrc, stats.fraction_lost_interval(), lost, stats.extended_max,
        int(stats.jitter), lsr, dlsr,
    )


def parse_rtcp(data: bytes) -> list[RtcpPacket]:
    """Parse a compound RTCP packet; raises ``ValueError`` on malformed input."""
    out: list[RtcpPacket] = []
    off = 0
    while off + 4 <= len(data):
        b0, pt, length = struct.unpack_from("!BBH", data, off)
        if b0 >> 6 != 2:
            raise ValueError("RTCP version is not 2")
        end = off + 4 * (length + 1)
        if end > len(data):
            raise ValueError("RTCP length field exceeds the datagram")
        count = b0 & 0x1F
        if pt == RTCP_SR and end - off >= 28:
            ssrc, ntp, rts, pc, oc = struct.unpack_from("!IQIII", data, off + 4)
            blocks = _blocks(data, off + 28, count, end)
            out.append(RtcpPacket(pt, ssrc, blocks, ntp, rts, pc, oc))
        elif pt == RTCP_RR and end - off >= 8:
            (ssrc,) = struct.unpack_from("!I", data, off + 4)
            out.append(RtcpPacket(pt, ssrc, _blocks(data, off + 8, count, end)))
        elif pt == RTCP_BYE:
            n = min(count, (end - off - 4) // 4)
            ssrcs = struct.unpack_from(f"!{n}I", data, off + 4) if n else ()
            out.append(RtcpPacket(pt, ssrcs[0] if ssrcs else 0, bye_ssrcs=tuple(ssrcs)))
        else:
            ssrc = struct.unpack_from("!I", data, off + 4)[0] if end - off >= 8 else 0
            out.append(RtcpPacket(pt, ssrc))
        off = end
    return out


def _blocks(data: bytes, off: int, count: int, end: int) -> tuple[ReportBlock, ...]:
    blocks = []
    for i in range(count):
        p = off + 24 * i
        if p + 24 > end:
            raise ValueError("RTCP report block truncated")
        ssrc, fl, hs, jit, lsr, dlsr = struct.unpack_from("!IIIIII", data, p)
        cum = fl & 0xFFFFFF
        if cum & 0x800000:
            cum -= 1 << 24
        blocks.append(ReportBlock(ssrc, fl >> 24, cum, hs, jit, lsr, dlsr))
    return tuple(blocks)
