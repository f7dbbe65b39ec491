"""Micro-benchmark of the SIP message layer: parse / typed access / serialise.

Run: ``.venv/bin/python bench/sip_parse.py`` — prints µs per operation for a typical
~700-byte INVITE (the CPS goal needs a few parses + serialisations per call).
"""

from __future__ import annotations

import timeit

from switch.sip.message import make_response
from switch.sip.parser import StreamFramer, parse_message

INVITE = (
    b"INVITE sip:+4915112345678@gw1.carrier.example.net:5060;user=phone SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-524287-1---a7f3c9e1b2d4;rport\r\n"
    b"Max-Forwards: 70\r\n"
    b'From: "Voice Call" <sip:+4930123456@switch.example.com>;tag=6f1c2a9b\r\n'
    b"To: <sip:+4915112345678@gw1.carrier.example.net;user=phone>\r\n"
    b"Call-ID: 3c26700f-7f1e-4b9e-9a41-2f7a1a0c9d11@192.0.2.10\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"Contact: <sip:switch@192.0.2.10:5060;transport=udp>\r\n"
    b"Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, PRACK, UPDATE, INFO\r\n"
    b"Supported: 100rel, timer, replaces\r\n"
    b"Session-Expires: 1800;refresher=uac\r\n"
    b"User-Agent: voicecall/0.1\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: 214\r\n"
    b"\r\n"
    b"v=0\r\no=- 3871928374 3871928374 IN IP4 192.0.2.10\r\ns=voicecall\r\n"
    b"c=IN IP4 192.0.2.10\r\nt=0 0\r\nm=audio 40000 RTP/AVP 8 0 101\r\n"
    b"a=rtpmap:8 PCMA/8000\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
    b"a=fmtp:101 0-15\r\na=ptime:20\r\na=sendrecv\r\n"
)


def per_op(fn: object, n: int = 20000) -> float:
    t = min(timeit.repeat(fn, number=n, repeat=5))  # type: ignore[arg-type]
    return t / n * 1e6


def distinct_invites(n: int) -> list[bytes]:
    """Like real traffic: every INVITE has its own branch, tags, Call-ID and callee, so the
    parse caches of switch.sip.uri do not help (only our own Contact repeats)."""
    out = []
    for i in range(n):
        m = INVITE.replace(b"a7f3c9e1b2d4", f"{i:012x}".encode())
        m = m.replace(b"tag=6f1c2a9b", f"tag={i:08x}".encode())
        m = m.replace(b"3c26700f", f"{i:08x}".encode())
        m = m.replace(b"+4915112345678", f"+49151{i:08d}".encode())
        out.append(m)
    return out


def main() -> None:
    msg = parse_message(INVITE)
    assert len(msg.body) == 214, len(msg.body)
    print(f"INVITE size: {len(INVITE)} bytes")
    cold = distinct_invites(5000)

    def parse_cold() -> None:
        for m in cold:
            parse_message(m)

    def parse_access_cold() -> None:
        for m in cold:
            r = parse_message(m)
            _ = (r.contacts, r.supported, r.content_type, r.top_via.branch)

    # the caches hold 4096 entries per parser: 5000 distinct messages always miss
    print(
        "parse_message, distinct INVITEs (cold; incl. Via/From/To/CSeq/Call-ID/Max-Forwards"
        f"): {per_op(parse_cold, 2) / len(cold):.1f} us"
    )
    print(f"  + contacts/supported/content_type/branch: {per_op(parse_access_cold, 2) / len(cold):.1f} us")
    print(
        "parse_message, the same INVITE again (warm caches, e.g. a retransmission): "
        f"{per_op(lambda: parse_message(INVITE)):.1f} us"
    )

    def serialise() -> None:
        # a fresh copy each time so the to_bytes cache does not hide the work
        m = msg.with_header("Max-Forwards", "69")
        m.to_bytes()

    print(f"with_header + to_bytes (uncached): {per_op(serialise):.1f} us")
    print(f"to_bytes (cached, retransmission): {per_op(msg.to_bytes):.2f} us")

    def respond() -> None:
        make_response(msg, 180, to_tag="a1b2c3").to_bytes()  # type: ignore[arg-type]

    print(f"make_response(180, to_tag) + to_bytes: {per_op(respond):.1f} us")

    stream = INVITE * 10

    def frame() -> None:
        StreamFramer().feed(stream)

    print(f"StreamFramer, per message: {per_op(frame, 2000) / 10:.1f} us")


def hostile() -> None:
    """Worst cases near the 65535-octet limit must stay linear (no regex backtracking)."""
    from switch.sip.parser import SipParseError

    head = INVITE.split(b"\r\n\r\n")[0].replace(b"Content-Length: 214", b"Content-Length: 0")
    cases = {
        "60 KB of quotes in Contact": head + b"\r\nContact: " + b'"\\' * 20000,
        "60 KB of spaces in Via": head.replace(b"SIP/2.0/UDP ", b"SIP/2.0/UDP " + b" " * 60000),
        "60 KB URI user part": head.replace(b"sip:switch@", b"sip:" + b"a" * 60000 + b"@"),
        "60 KB of ;; in To": head + b"\r\nX: 1\r\nRoute: <sip:a" + b";x" * 30000 + b">",
        "1000 header lines": head + b"\r\nX-A: 1" * 1000,
        "60 KB folded line": head + b"\r\nSubject: a" + b"\r\n b" * 15000,
    }
    for name, data in cases.items():
        data = data + b"\r\n\r\n"

        def run(d: bytes = data) -> None:
            try:
                m = parse_message(d)
                _ = (m.contacts, m.route)
            except SipParseError:
                pass

        print(f"hostile: {name} ({len(data)} B): {per_op(run, 20):.0f} us")


if __name__ == "__main__":
    main()
    hostile()
