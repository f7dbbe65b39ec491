"""SDP (RFC 4566) parsing and the offer/answer model (RFC 3264) for G.711 audio, sans-I/O.

Our own parser because we need what generic ones drop: ``a=ptime``, session-level ``c=``
inherited by media, direction attributes at both levels, static payload types without
``a=rtpmap``. Every malformed or unacceptable input raises :class:`~media.errors.SdpError`
with a reason (the switch answers 488); nothing else escapes.
"""

from __future__ import annotations

import enum
import ipaddress
import re
from dataclasses import dataclass, field

from media.errors import SdpError

MAX_SDP_BYTES = 65536
MAX_MEDIA = 32
STATIC_PT = {0: "PCMU", 8: "PCMA"}
SUPPORTED_CODECS = ("PCMA", "PCMU")
TELEPHONE_EVENT = "telephone-event"
RTP_PROFILES = ("RTP/AVP", "RTP/AVPF")
_LINE = re.compile(r"^([a-z])=(.*)$")


class Direction(enum.Enum):
    SENDRECV = "sendrecv"
    SENDONLY = "sendonly"
    RECVONLY = "recvonly"
    INACTIVE = "inactive"

    @property
    def sends(self) -> bool:
        return self in (Direction.SENDRECV, Direction.SENDONLY)

    @property
    def receives(self) -> bool:
        return self in (Direction.SENDRECV, Direction.RECVONLY)

    def reverse(self) -> Direction:
        """The direction seen from the other side (RFC 3264 §6.1)."""
        return {
            Direction.SENDONLY: Direction.RECVONLY,
            Direction.RECVONLY: Direction.SENDONLY,
        }.get(self, self)

    def intersect(self, other: Direction) -> Direction:
        send = self.sends and other.sends
        recv = self.receives and other.receives
        if send and recv:
            return Direction.SENDRECV
        if send:
            return Direction.SENDONLY
        if recv:
            return Direction.RECVONLY
        return Direction.INACTIVE


@dataclass(frozen=True)
class Connection:
    addrtype: str  # "IP4" | "IP6"
    address: str


@dataclass(frozen=True)
class RtpMap:
    encoding: str
    clock_rate: int
    channels: int = 1


@dataclass(frozen=True)
class MediaDescription:
    media: str
    port: int
    proto: str
    formats: tuple[str, ...]
    connection: Connection | None
    rtpmaps: dict[int, RtpMap] = field(default_factory=dict)
    fmtps: dict[int, str] = field(default_factory=dict)
    ptime: int | None = None
    direction: Direction | None = None
    rtcp_port: int | None = None
    attributes: tuple[tuple[str, str | None], ...] = ()

    def codec_of(self, pt: int) -> RtpMap | None:
        if pt in self.rtpmaps:
            return self.rtpmaps[pt]
        if pt in STATIC_PT:
            return RtpMap(STATIC_PT[pt], 8000, 1)
        return None


@dataclass(frozen=True)
class SessionDescription:
    origin: str
    session_name: str
    connection: Connection | None
    direction: Direction | None
    media: tuple[MediaDescription, ...]


def parse_sdp(text: str | bytes) -> SessionDescription:
    """Parse an SDP body; raises :class:`SdpError` naming the offending line."""
    if isinstance(text, bytes | bytearray):
        if len(text) > MAX_SDP_BYTES:
            raise SdpError(f"SDP larger than {MAX_SDP_BYTES} bytes")
        text = bytes(text).decode("utf-8", errors="replace")
    if len(text) > MAX_SDP_BYTES:
        raise SdpError(f"SDP larger than {MAX_SDP_BYTES} bytes")
    if "\x00" in text:
        raise SdpError("SDP contains a NUL character")
    lines = [ln for ln in text.replace("\r\n", "\n").replace("\r", "\n").split("\n") if ln]
    if not lines:
        raise SdpError("empty SDP")
    origin = ""
    session_name = ""
    s_conn: Connection | None = None
    s_dir: Direction | None = None
    media: list[MediaDescription] = []
    cur: dict[str, object] | None = None
    for lineno, raw in enumerate(lines, 1):
        line = raw.strip()
        m = _LINE.match(line)
        if m is None:
            raise SdpError(f"line {lineno}: not '<type>=<value>': {line[:60]!r}")
        kind, value = m.group(1), m.group(2)
        if lineno == 1:
            if kind != "v" or value.strip() != "0":
                raise SdpError("SDP must start with v=0")
            continue
        if kind == "m":
            if len(media) + (cur is not None) >= MAX_MEDIA:
                raise SdpError(f"more than {MAX_MEDIA} m= lines")
            if cur is not None:
                media.append(_finish_media(cur))
            cur = _parse_m(value, lineno)
        elif kind == "c":
            conn = _parse_c(value, lineno)
            if cur is None:
                s_conn = conn
            else:
                cur["connection"] = conn
        elif kind == "a":
            name, _, aval = value.partition(":")
            if cur is None:
                if name in _DIRECTIONS:
                    s_dir = Direction(name)
            else:
                _apply_media_attr(cur, name, aval if ":" in value else None, lineno)
        elif kind == "o" and cur is None:
            origin = value
        elif kind == "s" and cur is None:
            session_name = value
    if cur is not None:
        media.append(_finish_media(cur))
    if not media:
        raise SdpError("SDP has no m= line")
    return SessionDescription(origin, session_name, s_conn, s_dir, tuple(media))


_DIRECTIONS = {d.value for d in Direction}


def _parse_m(value: str, lineno: int) -> dict[str, object]:
    parts = value.split()
    if len(parts) < 3:
        raise SdpError(f"line {lineno}: m= needs '<media> <port> <proto> <fmt> ...'")
    media, port_s, proto = parts[0], parts[1], parts[2]
    port_s = port_s.split("/", 1)[0]
    if not port_s.isdigit() or int(port_s) > 65535:
        raise SdpError(f"line {lineno}: invalid port {parts[1]!r}")
    return {
        "media": media, "port": int(port_s), "proto": proto, "formats": tuple(parts[3:]),
        "connection": None, "rtpmaps": {}, "fmtps": {}, "ptime": None, "direction": None,
        "rtcp_port": None, "attributes": [],
    }


def _parse_c(value: str, lineno: int) -> Connection:
    parts = value.split()
    if len(parts) != 3 or parts[0] != "IN":
        raise SdpError(f"line {lineno}: c= must be 'IN IP4 <address>'")
    addrtype, addr = parts[1], parts[2].split("/", 1)[0]
    if addrtype not in ("IP4", "IP6"):
        raise SdpError(f"line {lineno}: unknown address type {addrtype!r}")
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        if addrtype == "IP4":
            raise SdpError(f"line {lineno}: invalid IPv4 address {addr!r}") from None
        raise SdpError(f"line {lineno}: invalid IPv6 address {addr!r}") from None
    if (ip.version == 4) != (addrtype == "IP4"):
        raise SdpError(f"line {lineno}: address {addr!r} does not match {addrtype}")
    return Connection(addrtype, addr)


def _apply_media_attr(cur: dict[str, object], name: str, val: str | None, lineno: int) -> None:
    attrs = cur["attributes"]
    assert isinstance(attrs, list)
    if len(attrs) > 256:
        raise SdpError(f"line {lineno}: too many attributes in one media section")
    attrs.append((name, val))
    if name in _DIRECTIONS:
        cur["direction"] = Direction(name)
    elif name == "rtpmap" and val is not None:
        pt_s, _, rest = val.partition(" ")
        enc = rest.strip().split("/")
        if not pt_s.isdigit() or len(enc) < 2 or not enc[1].isdigit():
            raise SdpError(f"line {lineno}: malformed a=rtpmap:{val[:40]}")
        ch = enc[2] if len(enc) > 2 else "1"
        if not ch.isdigit():
            raise SdpError(f"line {lineno}: malformed channel count in a=rtpmap")
        rtpmaps = cur["rtpmaps"]
        assert isinstance(rtpmaps, dict)
        rtpmaps[int(pt_s)] = RtpMap(enc[0], int(enc[1]), int(ch))
    elif name == "fmtp" and val is not None:
        pt_s, _, rest = val.partition(" ")
        if pt_s.isdigit():
            fmtps = cur["fmtps"]
            assert isinstance(fmtps, dict)
            fmtps[int(pt_s)] = rest.strip()
    elif name == "ptime" and val is not None:
        v = val.strip().split(".", 1)[0]
        if not v.isdigit() or not (1 <= int(v) <= 1000):
            raise SdpError(f"line {lineno}: invalid a=ptime:{val[:20]}")
        cur["ptime"] = int(v)
    elif name == "rtcp" and val is not None:
        p = val.split()[0] if val.split() else ""
        if not p.isdigit() or int(p) > 65535:
            raise SdpError(f"line {lineno}: invalid a=rtcp:{val[:20]}")
        cur["rtcp_port"] = int(p)


def _finish_media(cur: dict[str, object]) -> MediaDescription:
    attrs = cur.pop("attributes")
    assert isinstance(attrs, list)
    return MediaDescription(**cur, attributes=tuple(attrs))  # type: ignore[arg-type]


# --- offer/answer ------------------------------------------------------------------------


@dataclass(frozen=True)
class LocalMedia:
    """What this endpoint can do, used to write offers and answers."""

    address: str
    port: int
    codecs: tuple[str, ...] = SUPPORTED_CODECS
    ptime: int = 20
    te_payload_type: int = 101
    direction: Direction = Direction.SENDRECV
    session_id: int = 0
    version: int = 0


@dataclass(frozen=True)
class NegotiatedMedia:
    """The outcome of one offer/answer exchange for our audio stream."""

    remote_ip: str
    remote_port: int
    remote_rtcp_port: int
    codec: str  # "PCMA" | "PCMU"
    payload_type: int  # the PT we send and expect for the codec
    te_payload_type: int | None  # telephone-event PT, None when not negotiated
    ptime: int  # remote's preferred packetisation (ms), informational
    direction: Direction  # our direction after negotiation
    on_hold: bool  # remote asked us not to send (sendonly/inactive or c=0.0.0.0)


_DEFAULT_PT = {"PCMA": 8, "PCMU": 0}
_CODEC_PT_ORDER = ("PCMA", "PCMU")


def build_offer(local: LocalMedia) -> str:
    pts = [(_DEFAULT_PT[c], c) for c in local.codecs]
    return _render(local, pts, local.te_payload_type, local.direction)


def _render(local: LocalMedia, pts: list[tuple[int, str]], te_pt: int | None, direction: Direction,
            rejected: tuple[MediaDescription, ...] = (), audio_index: int = 0) -> str:
    lines = [
        "v=0",
        f"o=voicecall {local.session_id} {local.version} IN IP4 {local.address}",
        "s=voicecall",
        f"c=IN IP4 {local.address}",
        "t=0 0",
    ]
    for i, m in enumerate(rejected):
        if i == audio_index:
            lines.extend(_audio_lines(local, pts, te_pt, direction))
        else:
            lines.append(f"m={m.media} 0 {m.proto} {m.formats[0] if m.formats else '0'}")
    if not rejected:
        lines.extend(_audio_lines(local, pts, te_pt, direction))
    return "\r\n".join(lines) + "\r\n"


def _audio_lines(local: LocalMedia, pts: list[tuple[int, str]], te_pt: int | None,
                 direction: Direction) -> list[str]:
    fmts = [str(p) for p, _ in pts] + ([str(te_pt)] if te_pt is not None else [])
    out = [f"m=audio {local.port} RTP/AVP {' '.join(fmts)}"]
    for p, name in pts:
        out.append(f"a=rtpmap:{p} {name}/8000")
    if te_pt is not None:
        out.append(f"a=rtpmap:{te_pt} telephone-event/8000")
        out.append(f"a=fmtp:{te_pt} 0-16")
    out.append(f"a=ptime:{local.ptime}")
    out.append(f"a={direction.value}")
    return out


def _media_conn(sd: SessionDescription, m: MediaDescription) -> Connection:
    conn = m.connection or sd.connection
    if conn is None:
        raise SdpError("audio stream has no c= line at media or session level")
    if conn.addrtype != "IP4":
        raise SdpError("IPv6 media addresses are not supported")
    return conn


def _pick(m: MediaDescription, codecs: tuple[str, ...]) -> tuple[int, str, int | None] | None:
    """First offered format we support (offerer's preference), and the telephone-event PT."""
    chosen: tuple[int, str] | None = None
    te: int | None = None
    for f in m.formats:
        if not f.isdigit() or int(f) > 127:
            continue
        pt = int(f)
        rm = m.codec_of(pt)
        if rm is None:
            continue
        name = rm.encoding.upper()
        if name == TELEPHONE_EVENT.upper() and rm.clock_rate == 8000:
            te = pt if te is None else te
        elif chosen is None and name in codecs and rm.clock_rate == 8000 and rm.channels == 1:
            chosen = (pt, name)
    if chosen is None:
        return None
    return chosen[0], chosen[1], te


def _is_acceptable_audio(m: MediaDescription) -> bool:
    return m.media == "audio" and m.proto in RTP_PROFILES and m.port != 0


def answer(offer: SessionDescription, local: LocalMedia) -> tuple[str, NegotiatedMedia]:
    """Answer an offer (RFC 3264 §6): accept the first usable audio stream, reject the rest
    with port 0. Raises :class:`SdpError` when no audio stream is acceptable."""
    idx: int | None = None
    picked: tuple[int, str, int | None] | None = None
    reasons: list[str] = []
    for i, m in enumerate(offer.media):
        if m.media != "audio":
            continue
        if m.port == 0:
            reasons.append("audio stream disabled (port 0)")
            continue
        if m.proto not in RTP_PROFILES:
            reasons.append(f"unsupported transport {m.proto}")
            continue
        p = _pick(m, local.codecs)
        if p is None:
            reasons.append("no common codec (we support " + "/".join(local.codecs) + ")")
            continue
        idx, picked = i, p
        break
    if idx is None or picked is None:
        why = "; ".join(reasons) or "no audio stream offered"
        raise SdpError(f"no acceptable audio stream: {why}")
    m = offer.media[idx]
    conn = _media_conn(offer, m)
    remote_dir = m.direction or offer.direction or Direction.SENDRECV
    hold = conn.address == "0.0.0.0"
    if hold:
        remote_dir = remote_dir.intersect(Direction.RECVONLY.reverse())  # they don't receive
    our_dir = remote_dir.reverse().intersect(local.direction)
    pt, codec, te = picked
    text = _render(local, [(pt, codec)], te, our_dir, offer.media, idx)
    neg = NegotiatedMedia(
        remote_ip=conn.address, remote_port=m.port,
        remote_rtcp_port=m.rtcp_port or m.port + 1, codec=codec, payload_type=pt,
        te_payload_type=te, ptime=m.ptime or 20, direction=our_dir,
        on_hold=not remote_dir.receives,
    )
    return text, neg


def apply_answer(answer_sd: SessionDescription, local: LocalMedia) -> NegotiatedMedia:
    """Apply the peer's answer to the offer we built from ``local``."""
    if not answer_sd.media:
        raise SdpError("answer has no m= line")
    m = answer_sd.media[0]
    if m.media != "audio":
        raise SdpError(f"answer's first stream is {m.media!r}, we offered audio")
    if m.port == 0:
        raise SdpError("the peer rejected our audio stream (port 0)")
    if m.proto not in RTP_PROFILES:
        raise SdpError(f"answer uses unsupported transport {m.proto}")
    p = _pick(m, local.codecs)
    if p is None:
        raise SdpError("answer selects no codec we offered")
    pt, codec, te = p
    if pt != _DEFAULT_PT[codec] and pt not in m.rtpmaps:
        raise SdpError("answer payload type does not match our offer")
    conn = _media_conn(answer_sd, m)
    remote_dir = m.direction or answer_sd.direction or Direction.SENDRECV
    if conn.address == "0.0.0.0":
        remote_dir = remote_dir.intersect(Direction.SENDONLY)
    our_dir = remote_dir.reverse().intersect(local.direction)
    return NegotiatedMedia(
        remote_ip=conn.address, remote_port=m.port,
        remote_rtcp_port=m.rtcp_port or m.port + 1, codec=codec, payload_type=pt,
        te_payload_type=te, ptime=m.ptime or 20, direction=our_dir,
        on_hold=not remote_dir.receives,
    )
