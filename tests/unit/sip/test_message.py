"""SIP messages: header multi-map, typed accessors, serialisation, responses (RFC 3261
§7, §8.2.6), datagram and stream framing (§18.3), limits and the §8.2 UAS checks."""

from __future__ import annotations

import dataclasses

import pytest

from switch.sip.headers import Headers
from switch.sip.message import REASONS, Request, Response, make_response
from switch.sip.parser import (
    MAX_HEADERS,
    MAX_VIAS,
    PING,
    SipFramingError,
    SipParseError,
    StreamFramer,
    error_response,
    is_keepalive,
    parse_message,
)
from switch.sip.uri import CSeq, parse_uri
from switch.sip.validate import (
    check_request,
    is_acceptable_response,
    is_merged_request,
    merge_key,
)
from tests.paths import CONFORMANCE

SDP = (
    b"v=0\r\no=- 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\n"
    b"m=audio 40000 RTP/AVP 8\r\na=rtpmap:8 PCMA/8000\r\n"
)


def invite(*extra: str, body: bytes = SDP, cl: str | None = None) -> bytes:
    lines = [
        "INVITE sip:bob@biloxi.example.com SIP/2.0",
        "Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds",
        "Max-Forwards: 70",
        "To: Bob <sip:bob@biloxi.example.com>",
        "From: Alice <sip:alice@atlanta.example.com>;tag=1928301774",
        "Call-ID: a84b4c76e66710@pc33.atlanta.example.com",
        "CSeq: 314159 INVITE",
        "Contact: <sip:alice@pc33.atlanta.example.com>",
        "Content-Type: application/sdp",
        *extra,
        f"Content-Length: {len(body) if cl is None else cl}",
        "",
        "",
    ]
    return "\r\n".join(lines).encode() + body


def parse_request(data: bytes) -> Request:
    msg = parse_message(data)
    assert isinstance(msg, Request)
    return msg


UAS = {
    "methods": frozenset({"INVITE", "ACK", "BYE", "CANCEL", "OPTIONS"}),
    "extensions": frozenset({"100rel", "timer"}),
    "accept_types": frozenset({"application/sdp"}),
}


def verdict(req: Request) -> Response | None:
    return check_request(req, **UAS)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------
# Headers


def test_compact_forms_become_long_names_and_lookup_ignores_case() -> None:
    h = Headers([("i", "x@y"), ("v", "SIP/2.0/UDP a"), ("o", "presence"), ("X-Foo", "1")])
    assert [n for n, _ in h] == ["Call-ID", "Via", "Event", "X-Foo"]
    assert h.get("CALL-ID") == h.get("i") == "x@y"
    assert h.get("x-foo") == "1" and "x-FOO" in h and "Route" not in h
    assert len(h) == 4


def test_get_all_splits_list_headers_but_not_others() -> None:
    h = Headers(
        [
            ("Supported", "100rel, timer"),
            ("k", "replaces"),
            ("Date", "Sat, 13 Nov 2010 23:29:00 GMT"),
            ("WWW-Authenticate", 'Digest realm="a", nonce="b"'),
        ]
    )
    assert h.get_all("Supported") == ["100rel", "timer", "replaces"]
    assert h.get_all("Date") == ["Sat, 13 Nov 2010 23:29:00 GMT"]
    assert h.get_all("WWW-Authenticate") == ['Digest realm="a", nonce="b"']
    assert h.get_raw("Supported") == ["100rel, timer", "replaces"]


def test_headers_are_immutable_and_changes_return_new_maps() -> None:
    h = Headers([("Via", "SIP/2.0/UDP b"), ("To", "<sip:a@b>")])
    h2 = h.prepend("Via", "SIP/2.0/UDP a").add("Route", "<sip:p;lr>")
    assert h.get_all("Via") == ["SIP/2.0/UDP b"]
    assert h2.get_all("Via") == ["SIP/2.0/UDP a", "SIP/2.0/UDP b"]
    assert list(h2)[-1] == ("Route", "<sip:p;lr>")
    h3 = h2.set("via", "SIP/2.0/TCP c")
    assert h3.get_all("Via") == ["SIP/2.0/TCP c"] and next(iter(h3))[0] == "Via"
    assert "Route" not in h3.remove("Route")
    assert h3.remove_first("Via").get("Via") is None
    assert h == Headers([("v", "SIP/2.0/UDP b"), ("t", "<sip:a@b>")])
    assert hash(h) == hash(Headers([("v", "SIP/2.0/UDP b"), ("t", "<sip:a@b>")]))


def test_header_names_must_be_tokens() -> None:
    with pytest.raises(ValueError):
        Headers([("Bad Name", "x")])
    with pytest.raises(ValueError):
        Headers().add("X-Evil:\r\nVia", "x")


# ---------------------------------------------------------------------------------------
# Typed accessors


def test_typed_accessors_of_an_invite() -> None:
    req = parse_request(
        invite("Supported: 100rel, Timer", "Require: timer", "Route: <sip:p1;lr>, <sip:p2;lr>")
    )
    assert req.call_id == "a84b4c76e66710@pc33.atlanta.example.com"
    assert req.cseq == CSeq(314159, "INVITE")
    assert req.top_via.branch == "z9hG4bK776asdhds" and len(req.vias) == 1
    assert req.from_.tag == "1928301774" and req.from_.display_name == "Alice"
    assert req.to.tag is None and req.to.uri == parse_uri("sip:bob@biloxi.example.com")
    assert [str(c.uri) for c in req.contacts] == ["sip:alice@pc33.atlanta.example.com"]
    assert req.max_forwards == 70
    assert req.content_type == "application/sdp"
    assert req.supported == frozenset({"100rel", "timer"})
    assert req.require == frozenset({"timer"})
    assert [str(r.uri) for r in req.route] == ["sip:p1;lr", "sip:p2;lr"]
    assert req.record_route == ()
    assert req.body == SDP


def test_contact_star_is_not_an_address() -> None:
    req = parse_request(invite("Expires: 0").replace(b"<sip:alice@pc33.atlanta.example.com>", b"*"))
    assert req.contacts == () and req.contact_star and req.expires == 0


def test_accessors_are_cached_and_replace_starts_a_fresh_cache() -> None:
    req = parse_request(invite())
    assert req.to is req.to
    changed = req.with_header("To", "<sip:carol@chicago.example.com>")
    assert changed.to.uri.user == "carol" and req.to.uri.user == "bob"
    assert changed == dataclasses.replace(req, headers=changed.headers)


def test_missing_field_accessor_raises_sip_parse_error() -> None:
    req = Request("OPTIONS", parse_uri("sip:a@b"), Headers())
    with pytest.raises(SipParseError):
        req.call_id  # noqa: B018
    assert req.max_forwards is None and req.content_type is None and req.contacts == ()


# ---------------------------------------------------------------------------------------
# Serialisation


def test_to_bytes_writes_canonical_names_and_a_correct_content_length() -> None:
    data = invite(body=SDP, cl="9999").replace(b"Content-Length: 9999", b"l: 9999")
    with pytest.raises(SipParseError):
        parse_message(data)  # CL larger than the datagram
    req = Request(
        "INVITE",
        parse_uri("sip:bob@biloxi.example.com"),
        Headers([("v", "SIP/2.0/UDP h;branch=z9hG4bK1"), ("l", "12345"), ("i", "c@h")]),
        body=SDP,
    )
    out = req.to_bytes()
    assert out.startswith(b"INVITE sip:bob@biloxi.example.com SIP/2.0\r\nVia: SIP/2.0/UDP h")
    assert out.count(b"Content-Length") == 1
    assert f"\r\nContent-Length: {len(SDP)}\r\n\r\n".encode() + SDP in out
    assert b"\r\nCall-ID: c@h\r\n" in out
    assert out.endswith(SDP)


def test_serialise_then_parse_round_trips() -> None:
    req = parse_request(invite("Subject: hello", "Supported: 100rel"))
    again = parse_request(req.to_bytes())
    assert again == req


def test_cr_lf_inside_a_value_is_refused_when_serialising() -> None:
    req = parse_request(invite()).with_header("Subject", "x\r\nVia: SIP/2.0/UDP evil")
    with pytest.raises(ValueError, match="CR/LF"):
        req.to_bytes()


# ---------------------------------------------------------------------------------------
# make_response (RFC 3261 §8.2.6)


def test_make_response_copies_the_identifying_fields_and_adds_the_to_tag() -> None:
    data = invite("Timestamp: 54").replace(
        b"Via: SIP/2.0/UDP pc33",
        b"Via: SIP/2.0/UDP proxy.example.com;branch=z9hG4bKp1\r\nVia: SIP/2.0/UDP pc33",
    )
    req = parse_request(data)
    resp = make_response(req, 180, to_tag="a6c85cf", headers=[("Contact", "<sip:bob@192.0.2.4>")])
    assert (resp.status, resp.reason) == (180, "Ringing")
    assert resp.headers.get_all("Via") == req.headers.get_all("Via")
    assert resp.from_ == req.from_ and resp.call_id == req.call_id and resp.cseq == req.cseq
    assert resp.to.tag == "a6c85cf" and resp.to.uri == req.to.uri
    assert resp.headers.get("Timestamp") is None  # only a 100 echoes Timestamp
    assert resp.headers.get("Contact") == "<sip:bob@192.0.2.4>"
    assert make_response(req, 100).headers.get("Timestamp") == "54"
    assert resp.method == "INVITE" and resp.is_provisional
    parsed = parse_message(resp.to_bytes())
    assert isinstance(parsed, Response)
    assert parsed.headers.remove("Content-Length") == resp.headers and parsed.status == 180


def test_make_response_keeps_an_existing_to_tag_and_default_reasons() -> None:
    req = parse_request(invite().replace(b"To: Bob <sip:bob@biloxi.example.com>", b"To: <sip:bob@b>;tag=x"))
    resp = make_response(req, 486, to_tag="other")
    assert resp.to.tag == "x" and resp.reason == REASONS[486] == "Busy Here"
    assert make_response(req, 299).reason == "OK"  # unknown code: reason of its class
    assert make_response(req, 404, "Nobody Here").reason == "Nobody Here"
    with pytest.raises(ValueError):
        make_response(req, 99)


# ---------------------------------------------------------------------------------------
# Datagram parsing rules and limits


def test_datagram_without_content_length_takes_the_rest_as_body() -> None:
    data = invite().replace(f"Content-Length: {len(SDP)}\r\n".encode(), b"")
    assert parse_request(data).body == SDP


def test_leading_crlf_and_bare_lf_line_ends_are_tolerated() -> None:
    head = invite().split(b"\r\n\r\n")[0]
    body = SDP + b"\r\n\r\n"  # a blank line inside the body must not end the headers
    head = head.replace(f"Content-Length: {len(SDP)}".encode(), f"l: {len(body)}".encode())
    data = b"\r\n\r\n" + head.replace(b"\r\n", b"\n")
    req = parse_request(data + b"\n\n" + body)
    assert req.call_id == "a84b4c76e66710@pc33.atlanta.example.com"
    assert req.body == body


def test_crlf_headers_ended_by_a_bare_lf_empty_line() -> None:
    head, body = invite().split(b"\r\n\r\n", 1)
    assert parse_request(head + b"\r\n\n" + body).body == SDP


def test_folding_joins_continuation_lines_with_one_space() -> None:
    """RFC 3261 §7.3.1: a line starting with SP/HTAB continues the previous field; a
    whitespace-only continuation adds nothing."""
    req = parse_request(invite("Subject: a\r\n \r\n\t b", "X-Empty:\r\n  filled"))
    assert req.headers.get("Subject") == "a b"
    assert req.headers.get("X-Empty") == "filled"


def test_bare_cr_inside_a_header_is_an_error() -> None:
    with pytest.raises(SipParseError, match="Bare CR"):
        parse_message(invite("Subject: a\rb"))


def test_message_larger_than_max_size_gets_513() -> None:
    with pytest.raises(SipParseError) as info:
        parse_message(invite(), max_size=100)
    assert info.value.status == 513


def test_content_length_above_max_size_is_refused() -> None:
    with pytest.raises(SipParseError, match="Content-Length"):
        parse_message(invite(cl="70000"))


def test_too_many_header_fields_and_vias_are_refused() -> None:
    many = [f"X-H{i}: {i}" for i in range(MAX_HEADERS + 1)]
    with pytest.raises(SipParseError, match="Too many header fields"):
        parse_message(invite(*many))
    vias = [f"Via: SIP/2.0/UDP h{i}.example.com;branch=z9hG4bK{i}" for i in range(MAX_VIAS)]
    with pytest.raises(SipParseError, match="Too many Via"):
        parse_message(invite(*vias))


def test_header_line_without_colon_gives_400_with_a_partial_request() -> None:
    with pytest.raises(SipParseError) as info:
        parse_message(invite("this is not a header"))
    resp = error_response(info.value)
    assert resp is not None and resp.status == 400 and resp.reason == "Malformed header line"
    assert resp.call_id == "a84b4c76e66710@pc33.atlanta.example.com"


def test_bad_ack_is_never_answered() -> None:
    data = invite("junk line").replace(b"INVITE", b"ACK")
    with pytest.raises(SipParseError) as info:
        parse_message(data)
    assert info.value.partial is not None and error_response(info.value) is None


def test_keepalive_datagrams_are_recognised() -> None:
    for data in (b"\r\n", b"\r\n\r\n", b"\x00\x00\x00\x00", b" "):
        assert is_keepalive(data)
    assert not is_keepalive(invite())
    assert not is_keepalive(b"jaK\n" + b"x" * 20)


def test_garbage_has_no_partial() -> None:
    for data in (b"", b"\r\n\r\n", b"hello", b"\x00\xff" * 10, b"SIP/2.0 2000\r\n\r\n"):
        with pytest.raises(SipParseError) as info:
            parse_message(data)
        assert error_response(info.value) is None
    bare = parse_message(b"SIP/2.0 200 OK\r\n\r\n")  # well formed, but unmatchable
    assert isinstance(bare, Response) and not is_acceptable_response(bare)


# ---------------------------------------------------------------------------------------
# Stream framing (RFC 3261 §18.3, RFC 5626 §3.5.1)


def test_framer_splits_several_messages_and_keeps_partial_tails() -> None:
    one = invite()
    framer = StreamFramer()
    assert framer.feed(one + one[:50]) == [one]
    assert framer.buffered == 50
    assert framer.feed(one[50:] + one) == [one, one]
    assert framer.buffered == 0


def test_framer_byte_by_byte() -> None:
    one = invite()
    framer = StreamFramer()
    out: list[bytes] = []
    for i in range(len(one) * 2):
        out.extend(framer.feed((one + one)[i : i + 1]))
    assert out == [one, one]


def test_double_crlf_ping_is_reported_in_order_and_single_crlf_pong_is_noticed() -> None:
    one = invite()
    framer = StreamFramer()
    assert framer.feed(b"\r\n\r\n" + one + b"\r\n") == [PING, one]
    assert framer.feed(b"\r\n") == [PING]  # the two halves make one ping
    client = StreamFramer()
    assert client.feed(b"\r\n") == [] and client.pong_received


def test_framer_refuses_missing_content_length_and_oversize_messages() -> None:
    no_cl = invite().replace(f"Content-Length: {len(SDP)}\r\n".encode(), b"")
    framer = StreamFramer()
    with pytest.raises(SipFramingError, match="Content-Length"):
        framer.feed(no_cl)
    with pytest.raises(SipFramingError):
        framer.feed(b"")  # unusable once failed
    with pytest.raises(SipFramingError, match="Too Large"):
        StreamFramer(max_size=200).feed(invite())
    with pytest.raises(SipFramingError, match="Too Large"):
        StreamFramer(max_size=1000).feed(b"X" * 1001)  # no end of headers in sight


def test_messages_framed_before_a_framing_error_are_handed_over_with_it() -> None:
    """RFC 4475 §3.1.1.8 over TCP: two good messages, then octets that cannot be framed."""
    data = (CONFORMANCE / "dblreq.dat").read_bytes()
    with pytest.raises(SipFramingError) as info:
        StreamFramer().feed(data)
    assert [m.split(b" ", 1)[0] for m in info.value.framed] == [b"REGISTER", b"INVITE"]
    assert all(isinstance(parse_message(m), Request) for m in info.value.framed)


# ---------------------------------------------------------------------------------------
# UAS checks beyond RFC 4475


def test_known_but_unimplemented_method_gets_405_with_allow() -> None:
    req = parse_request(invite().replace(b"INVITE", b"SUBSCRIBE"))
    resp = verdict(req)
    assert resp is not None and resp.status == 405
    assert set(resp.headers.get_all("Allow")) == set(UAS["methods"])


def test_require_is_not_checked_for_cancel_and_ack_is_never_answered() -> None:
    cancel = parse_request(invite("Require: foo").replace(b"INVITE", b"CANCEL"))
    assert verdict(cancel) is None
    ack = parse_request(invite("Require: foo").replace(b"INVITE", b"ACK"))
    assert verdict(ack) is None


def test_supported_require_passes() -> None:
    assert verdict(parse_request(invite("Require: 100rel"))) is None


def test_multipart_with_an_sdp_part_is_accepted() -> None:
    body = (
        b"--b1\r\nContent-Type: application/sdp\r\n\r\n" + SDP + b"\r\n"
        b"--b1\r\nContent-Type: application/isup\r\n\r\nxyz\r\n--b1--\r\n"
    )
    data = invite(body=body).replace(
        b"Content-Type: application/sdp", b"Content-Type: multipart/mixed;boundary=b1", 1
    )
    assert verdict(parse_request(data)) is None
    no_sdp = body.replace(b"application/sdp", b"text/plain")
    data = invite(body=no_sdp).replace(
        b"Content-Type: application/sdp", b"Content-Type: multipart/mixed;boundary=b1", 1
    )
    resp = verdict(parse_request(data))
    assert resp is not None and resp.status == 415


def test_unknown_optional_body_is_ignored_instead_of_refused() -> None:
    data = invite("Content-Disposition: render;handling=optional").replace(
        b"Content-Type: application/sdp", b"Content-Type: application/x-private", 1
    )
    assert verdict(parse_request(data)) is None
    resp = verdict(parse_request(data.replace(b"handling=optional", b"handling=required")))
    assert resp is not None and resp.status == 415


def test_compressed_body_gets_415_with_accept_encoding() -> None:
    resp = verdict(parse_request(invite("Content-Encoding: gzip")))
    assert resp is not None and resp.status == 415
    assert resp.headers.get("Accept-Encoding") == "identity"


def test_accept_with_wildcards_is_fine_for_invite() -> None:
    assert verdict(parse_request(invite("Accept: application/*"))) is None
    assert verdict(parse_request(invite("Accept: text/html, */*;q=0.1"))) is None


def test_malformed_contact_gets_400() -> None:
    req = parse_request(invite().replace(b"<sip:alice@pc33.atlanta.example.com>", b"<sip:alice@"))
    resp = verdict(req)
    assert resp is not None and resp.status == 400 and "Contact" in resp.reason


def test_merged_request_detection_is_a_pure_function_of_the_first_branch() -> None:
    first = parse_request(invite())
    key = merge_key(first)
    assert key == ("a84b4c76e66710@pc33.atlanta.example.com", "1928301774", 314159, "INVITE")
    forked = parse_request(invite().replace(b"z9hG4bK776asdhds", b"z9hG4bKotherpath"))
    assert merge_key(forked) == key
    assert is_merged_request(forked, "z9hG4bK776asdhds")
    assert not is_merged_request(first, "z9hG4bK776asdhds")  # a retransmission
    in_dialog = parse_request(invite().replace(b"biloxi.example.com>", b"biloxi.example.com>;tag=9"))
    assert merge_key(in_dialog) is None


def test_acceptable_response_checks_via_count_and_our_sent_by() -> None:
    req = parse_request(invite())
    resp = make_response(req, 200, to_tag="t")
    assert is_acceptable_response(resp)
    assert is_acceptable_response(resp, [("PC33.atlanta.example.com", 5060)])
    assert not is_acceptable_response(resp, [("other.example.com", None)])
    two = dataclasses.replace(resp, headers=resp.headers.prepend("Via", "SIP/2.0/UDP x;branch=z9hG4bK2"))
    assert not is_acceptable_response(two)
