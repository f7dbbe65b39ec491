"""RFC 4475 torture messages: every one of the 49 gets the outcome its section prescribes.

The UAS in these tests is the switch's own profile: it implements the methods below,
supports 100rel/timer/replaces, and understands application/sdp bodies only.
Each test names the RFC 4475 section it follows.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from switch.sip.message import Request, Response
from switch.sip.parser import SipParseError, StreamFramer, error_response, parse_message
from switch.sip.uri import parse_uri, uri_equal
from switch.sip.validate import (
    check_max_forwards,
    check_request,
    is_acceptable_response,
    multipart_types,
)
from tests.paths import CONFORMANCE

UAS_METHODS = frozenset({"INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "PRACK", "UPDATE", "INFO"})
UAS_EXTENSIONS = frozenset({"100rel", "timer", "replaces"})
UAS_ACCEPT = frozenset({"application/sdp"})


def load(name: str) -> bytes:
    path = CONFORMANCE / f"{name}.dat"
    assert path.is_file(), f"RFC 4475 corpus missing: {path}"
    return path.read_bytes()


def request(name: str) -> Request:
    msg = parse_message(load(name))
    assert isinstance(msg, Request)
    return msg


def response(name: str) -> Response:
    msg = parse_message(load(name))
    assert isinstance(msg, Response)
    return msg


def uas_verdict(req: Request) -> Response | None:
    return check_request(req, methods=UAS_METHODS, extensions=UAS_EXTENSIONS, accept_types=UAS_ACCEPT)


def rejected_by_parser(name: str) -> tuple[SipParseError, Response | None]:
    with pytest.raises(SipParseError) as info:
        parse_message(load(name))
    return info.value, error_response(info.value)


# ---------------------------------------------------------------------------------------
# The corpus itself


def test_corpus_has_all_49_messages_and_each_has_a_test_below() -> None:
    names = {p.stem for p in Path(CONFORMANCE).glob("*.dat")}
    assert len(names) == 49
    tested = {n.removeprefix("test_").split("_")[0] for n in globals() if n.startswith("test_")}
    assert names <= tested, f"untested: {sorted(names - tested)}"


@pytest.mark.parametrize("name", sorted(p.stem for p in Path(CONFORMANCE).glob("*.dat")))
def test_every_message_parses_or_raises_sip_parse_error_only(name: str) -> None:
    try:
        msg = parse_message(load(name))
    except SipParseError:
        return
    # whatever parsed re-serialises into something that parses to the same values
    again = parse_message(msg.to_bytes())
    assert again.headers.get_all("Via") and again.body == msg.body
    assert [str(v) for v in again.vias] == [str(v) for v in msg.vias]
    if "from" in msg.headers:
        assert again.from_ == msg.from_ and again.to == msg.to
        assert again.cseq == msg.cseq and again.call_id == msg.call_id


# What the switch does with each message, end to end through the message layer:
# "accept" = parses and passes the UAS core checks (or, for a response, is acceptable);
# "drop" = silently discarded; a number = the response code sent back.
# The per-message tests below assert the values behind each verdict.
EXPECTED = {
    "wsinv": "accept",  # §3.1.1.1
    "intmeth": "501",  # §3.1.1.2 unknown method
    "esc01": "accept",  # §3.1.1.3
    "escnull": "accept",  # §3.1.1.4
    "esc02": "501",  # §3.1.1.5 unknown method RE%47IST%45R
    "lwsdisp": "accept",  # §3.1.1.6
    "longreq": "accept",  # §3.1.1.7
    "dblreq": "accept",  # §3.1.1.8 (first message only)
    "semiuri": "accept",  # §3.1.1.9
    "transports": "accept",  # §3.1.1.10
    "mpart01": "415",  # §3.1.1.11 parses; an SDP-only UAS refuses a body without SDP
    "unreason": "accept",  # §3.1.1.12
    "noreason": "accept",  # §3.1.1.13
    "badinv01": "400",  # §3.1.2.1
    "clerr": "400",  # §3.1.2.2
    "ncl": "400",  # §3.1.2.3
    "scalar02": "400",  # §3.1.2.4
    "scalarlg": "drop",  # §3.1.2.5
    "quotbal": "400",  # §3.1.2.6
    "ltgtruri": "400",  # §3.1.2.7
    "lwsruri": "400",  # §3.1.2.8
    "lwsstart": "accept",  # §3.1.2.9 tolerated (allowed by the RFC)
    "trws": "accept",  # §3.1.2.10 tolerated (allowed by the RFC)
    "escruri": "400",  # §3.1.2.11
    "baddate": "accept",  # §3.1.2.12 Date ignored
    "regbadct": "400",  # §3.1.2.13
    "badaspec": "accept",  # §3.1.2.14 tolerated
    "baddn": "accept",  # §3.1.2.15 tolerated
    "badvers": "505",  # §3.1.2.16
    "mismatch01": "400",  # §3.1.2.17
    "mismatch02": "400",  # §3.1.2.18
    "bigcode": "drop",  # §3.1.2.19
    "badbranch": "accept",  # §3.2.1
    "insuf": "400",  # §3.3.1
    "unkscm": "416",  # §3.3.2
    "novelsc": "416",  # §3.3.3
    "unksm2": "accept",  # §3.3.4
    "bext01": "420",  # §3.3.5
    "invut": "415",  # §3.3.6
    "regaut01": "accept",  # §3.3.7 (the registrar then challenges with 401)
    "multi01": "400",  # §3.3.8
    "mcl01": "400",  # §3.3.9
    "bcast": "drop",  # §3.3.10
    "zeromf": "accept",  # §3.3.11 (483 only when forwarding)
    "cparam01": "accept",  # §3.3.12
    "cparam02": "accept",  # §3.3.13
    "regescrt": "accept",  # §3.3.14
    "sdp01": "406",  # §3.3.15
    "inv2543": "accept",  # §3.4.1
}


def switch_verdict(data: bytes) -> str:
    try:
        msg = parse_message(data)
    except SipParseError as exc:
        resp = error_response(exc)
        return "drop" if resp is None else str(resp.status)
    if isinstance(msg, Response):
        return "accept" if is_acceptable_response(msg) else "drop"
    verdict = check_request(
        msg,
        methods=UAS_METHODS | {"MESSAGE"},
        extensions=UAS_EXTENSIONS,
        accept_types=UAS_ACCEPT,
    )
    return "accept" if verdict is None else str(verdict.status)


@pytest.mark.parametrize(("name", "expected"), sorted(EXPECTED.items()))
def test_verdict(name: str, expected: str) -> None:
    assert switch_verdict(load(name)) == expected


def test_verdict_table_covers_the_corpus() -> None:
    assert set(EXPECTED) == {p.stem for p in Path(CONFORMANCE).glob("*.dat")}


# ---------------------------------------------------------------------------------------
# §3.1.1 Valid messages


def test_wsinv_short_tortuous_invite_values() -> None:
    """§3.1.1.1: odd whitespace, folding, compact and long names, escapes."""
    req = request("wsinv")
    assert req.method == "INVITE"
    assert str(req.uri) == "sip:vivekg@chair-dnrc.example.com;unknownparam"
    assert req.uri.has_param("unknownparam") and req.uri.param("unknownparam") is None
    assert uri_equal(req.to.uri, parse_uri("sip:vivekg@chair-dnrc.example.com"))
    assert req.to.tag == "1918181833n"
    assert req.from_.display_name == 'J Rosenberg \\"'
    assert req.from_.uri == parse_uri("sip:jdrosen@example.com")
    assert req.from_.tag == "98asjd8"
    assert req.max_forwards == 68
    assert req.call_id == "wsinv.ndaksdj@192.0.2.1"
    assert req.headers.get("Content-Length") == "150" and len(req.body) == 150
    assert (req.cseq.seq, req.cseq.method) == (9, "INVITE")
    # three Via values: one field, then one field with two comma-separated values
    assert [(v.transport, v.host, v.branch) for v in req.vias] == [
        ("UDP", "192.0.2.2", "390skdjuw"),
        ("TCP", "spindle.example.com", "z9hG4bK9ikj8"),
        ("UDP", "192.168.255.111", "z9hG4bK30239"),
    ]
    assert all(v.protocol == "SIP/2.0" for v in req.vias)
    assert req.headers.get("Subject") == ""  # "s :" with an empty value
    assert req.headers.get("NewFangledHeader") == "newfangled value continued newfangled value"
    assert req.headers.get("UnknownHeaderWithUnusualValue") == ";;,,;;,;"
    assert req.content_type == "application/sdp"
    (route,) = req.route
    assert route.uri.params == (("lr", None), ("unknownwith", "value"), ("unknown-no-value", None))
    (contact,) = req.contacts
    assert contact.display_name == 'Quoted string ""'
    assert contact.uri == parse_uri("sip:jdrosen@example.com")
    assert contact.params == (("newparam", "newvalue"), ("secondparam", None), ("q", "0.33"))
    assert uas_verdict(req) is None


def test_intmeth_wide_range_of_valid_characters_unknown_method_gets_501() -> None:
    """§3.1.1.2: every character the grammar allows; the method is unknown → 501."""
    req = request("intmeth")
    assert req.method == "!interesting-Method0123456789_*+`.%indeed'~"
    assert req.uri.user == "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
    assert req.uri.password == "&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"
    assert req.uri.host == "example.com"
    assert req.top_via.branch == "z9hG4bK-.!%66*_+`'~"
    assert req.to.display_name == "BEL:\x07 NUL:\x00 DEL:\x7f"
    assert req.to.uri.user == "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
    assert req.from_.display_name == "token1~` token2'+_ token3*%!.-"
    assert req.from_.param("fromParam''~+*_!.-%") == '"работающий"'
    assert req.from_.param_unquoted("fromParam''~+*_!.-%") == "работающий"
    assert req.from_.tag == "_token~1'+`*%!-."
    assert req.call_id == "intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{"
    assert req.cseq.method == req.method
    assert req.max_forwards == 255
    assert req.headers.get("extensionHeader-!.%*+_`'~") == "\ufeff大停電"
    resp = uas_verdict(req)
    assert resp is not None and resp.status == 501


def test_esc01_valid_escaping_compares_after_unescaping() -> None:
    """§3.1.1.3: escapes in the Request-URI user part, To/From users and URI parameters."""
    req = request("esc01")
    assert req.uri.user_unescaped == "sips:user@example.com"
    assert req.uri.host == "example.net"
    assert uri_equal(req.to.uri, parse_uri("sip:user@example.com"))
    assert req.from_.uri.user_unescaped == "I have spaces"
    (contact,) = req.contacts
    # "name" has the value "value%41", which is NOT "valueA": unescaping is not recursive
    assert uri_equal(contact.uri, parse_uri("sip:caller@host5.example.net;lr;name=value%2541"))
    assert not uri_equal(contact.uri, parse_uri("sip:caller@host5.example.net;lr;name=valueA"))
    assert uas_verdict(req) is None


def test_escnull_escaped_nulls_in_uris() -> None:
    """§3.1.1.4: %00 in user parts is legal and must not truncate anything."""
    req = request("escnull")
    assert req.to.uri.user_unescaped == "null-\x00-null"
    assert req.from_.uri.user == "null-%00-null"
    assert [c.uri.user_unescaped for c in req.contacts] == ["\x00", "\x00\x00"]
    assert uas_verdict(req) is None


def test_esc02_percent_that_is_not_an_escape_and_unknown_method_gets_501() -> None:
    """§3.1.1.5: RE%47IST%45R is a method other than REGISTER; C%6Fntact is not Contact."""
    req = request("esc02")
    assert req.method == "RE%47IST%45R"
    assert req.to.display_name == "%Z%45"
    assert req.top_via.branch == "z9hG4bK209%fzsnel234"
    assert [str(c.uri) for c in req.contacts] == [
        "sip:alias1@host1.example.com",
        "sip:alias3@host3.example.com",
    ]
    assert req.headers.get("C%6Fntact") == "<sip:alias2@host2.example.com>"
    resp = uas_verdict(req)
    assert resp is not None and resp.status == 501


def test_lwsdisp_no_lws_between_display_name_and_laquot() -> None:
    """§3.1.1.6"""
    req = request("lwsdisp")
    assert req.from_.display_name == "caller"
    assert req.from_.uri == parse_uri("sip:caller@example.com")
    assert req.from_.tag == "323"
    assert uas_verdict(req) is None


def test_longreq_long_values_in_header_fields() -> None:
    """§3.1.1.7: long names, values, parameters and 34 Via values in mixed spellings."""
    req = request("longreq")
    assert len(req.vias) == 34
    assert req.top_via.host == "sip33.example.com"
    assert req.vias[-1].received == "192.0.2.5"
    assert req.vias[-1].branch is not None and req.vias[-1].branch.endswith("branchvalue")
    assert req.to.display_name is not None and "extremeextreme" in req.to.display_name
    assert req.to.uri.port == 6000
    last_name, last_value = req.to.uri.params[-1]
    assert last_name.endswith("longParameterNameWithNoValue") and last_value is None
    assert req.to.uri.param("unknownparam1") is not None
    tag = req.from_.tag
    assert tag is not None and tag.startswith("12982982982") and tag.endswith("982424")
    assert req.call_id.startswith("longreq.onereally") and req.call_id.endswith("longcallid")
    assert len(req.body) == int(req.headers.get("Content-Length") or "-1")
    assert uas_verdict(req) is None


def test_dblreq_extra_octets_after_content_length_are_ignored() -> None:
    """§3.1.1.8: a UDP datagram holding a REGISTER and then an INVITE: only the first."""
    req = request("dblreq")
    assert req.method == "REGISTER"
    assert req.call_id == "dblreq.0ha0isndaksdj99sdfafnl3lk233412"
    assert req.body == b""
    assert uas_verdict(req) is None


def test_semiuri_semicolons_in_the_user_part() -> None:
    """§3.1.1.9: ``user;par=u%40example.net`` is the user part; the URI has no params."""
    req = request("semiuri")
    assert req.uri.user == "user;par=u%40example.net"
    assert req.uri.host == "example.com"
    assert req.uri.params == ()
    assert req.headers.get_all("Accept") == [
        "application/sdp",
        "application/pkcs7-mime",
        "multipart/mixed",
        "multipart/signed",
        "message/sip",
        "message/sipfrag",
    ]
    assert uas_verdict(req) is None


def test_transports_varied_and_unknown_via_transports() -> None:
    """§3.1.1.10"""
    req = request("transports")
    assert [v.transport for v in req.vias] == ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"]
    assert uas_verdict(req) is None


def test_mpart01_multipart_body_is_kept_byte_exact() -> None:
    """§3.1.1.11: a multipart/mixed MESSAGE with a binary part."""
    req = request("mpart01")
    assert req.method == "MESSAGE"
    assert req.content_type == "multipart/mixed"
    assert req.content_type_params["boundary"] == "7a9cbec02ceef655"
    assert len(req.body) == 553
    assert multipart_types(req.body, "7a9cbec02ceef655") == [
        "text/plain",
        "application/octet-stream",
    ]
    assert req.top_via.rport is True
    # An SDP-only UAS that implements MESSAGE refuses the body type with 415 + Accept.
    resp = check_request(
        req,
        methods=UAS_METHODS | {"MESSAGE"},
        extensions=UAS_EXTENSIONS,
        accept_types=UAS_ACCEPT,
    )
    assert resp is not None and resp.status == 415
    assert resp.headers.get("Accept") == "application/sdp"


def test_unreason_utf8_reason_phrase() -> None:
    """§3.1.1.12"""
    data = load("unreason")
    resp = response("unreason")
    expected = data.split(b"\r\n", 1)[0].split(b" ", 2)[2].decode("utf-8")
    assert resp.status == 200 and resp.reason == expected
    assert resp.reason.startswith("= 2**3 * 5**2 ")
    assert is_acceptable_response(resp)


def test_noreason_empty_reason_phrase() -> None:
    """§3.1.1.13"""
    resp = response("noreason")
    assert (resp.status, resp.reason) == (100, "")
    assert is_acceptable_response(resp)


# ---------------------------------------------------------------------------------------
# §3.1.2 Invalid messages


def test_badinv01_extraneous_header_field_separators_get_400() -> None:
    """§3.1.2.1"""
    exc, resp = rejected_by_parser("badinv01")
    assert "Via" in exc.reason
    assert resp is not None and resp.status == 400
    assert resp.headers.get("Call-ID") == "badinv01.0ha0isndaksdjasdf3234nas"


def test_clerr_content_length_larger_than_the_datagram_gets_400() -> None:
    """§3.1.2.2: on UDP the element answers 400; on a stream it waits for more octets."""
    exc, resp = rejected_by_parser("clerr")
    assert "Content-Length" in exc.reason
    assert resp is not None and resp.status == 400
    framer = StreamFramer()
    assert framer.feed(load("clerr")) == []
    assert framer.buffered == len(load("clerr"))


def test_ncl_negative_content_length_gets_400() -> None:
    """§3.1.2.3: on a stream the connection cannot be framed any more."""
    exc, resp = rejected_by_parser("ncl")
    assert exc.reason == "Bad Content-Length"
    assert resp is not None and resp.status == 400
    with pytest.raises(SipParseError):
        StreamFramer().feed(load("ncl"))


def test_scalar02_overlarge_request_scalars_get_400_for_cseq() -> None:
    """§3.1.2.4: CSeq 36893488147419103232 does not fit 32 bits."""
    exc, resp = rejected_by_parser("scalar02")
    assert "CSeq" in exc.reason
    assert resp is not None and resp.status == 400
    assert resp.headers.get("CSeq") == "36893488147419103232 REGISTER"  # echoed verbatim


def test_scalarlg_overlarge_response_scalars_are_dropped() -> None:
    """§3.1.2.5: a response is never answered: the parser error says "response" → drop."""
    exc, resp = rejected_by_parser("scalarlg")
    assert exc.is_response and exc.partial is None
    assert resp is None


def test_quotbal_unterminated_quoted_string_gets_400() -> None:
    """§3.1.2.6"""
    exc, resp = rejected_by_parser("quotbal")
    assert "quoted" in exc.reason and "To" in exc.reason
    assert resp is not None and resp.status == 400


def test_ltgtruri_angle_brackets_around_request_uri_get_400() -> None:
    """§3.1.2.7"""
    exc, resp = rejected_by_parser("ltgtruri")
    assert "Request-URI" in exc.reason
    assert resp is not None and resp.status == 400


def test_lwsruri_embedded_lws_in_request_uri_gets_400() -> None:
    """§3.1.2.8: ``sip:user@example.com; lr`` makes four request-line elements."""
    exc, resp = rejected_by_parser("lwsruri")
    assert exc.reason == "Bad request line"
    assert resp is not None and resp.status == 400


def test_lwsstart_multiple_sp_in_request_line_is_tolerated_and_not_forwarded() -> None:
    """§3.1.2.9: we are liberal here; what we send has single SPs."""
    req = request("lwsstart")
    assert (req.method, str(req.uri), req.version) == ("INVITE", "sip:user@example.com", "SIP/2.0")
    assert req.to_bytes().startswith(b"INVITE sip:user@example.com SIP/2.0\r\n")
    assert uas_verdict(req) is None


def test_trws_trailing_sp_after_request_line_is_tolerated() -> None:
    """§3.1.2.10"""
    req = request("trws")
    assert req.version == "SIP/2.0"
    assert req.to_bytes().startswith(b"OPTIONS sip:remote-target@example.com SIP/2.0\r\n")
    assert uas_verdict(req) is None


def test_escruri_escaped_headers_in_request_uri_get_400() -> None:
    """§3.1.2.11"""
    exc, resp = rejected_by_parser("escruri")
    assert exc.reason == "Request-URI must not contain headers"
    assert resp is not None and resp.status == 400


def test_baddate_invalid_time_zone_is_ignored() -> None:
    """§3.1.2.12: Date carries no protocol meaning for us, so the bad zone is ignored."""
    req = request("baddate")
    assert req.headers.get("Date") == "Fri, 01 Jan 2010 16:00:00 EST"
    assert uas_verdict(req) is None


def test_regbadct_uri_with_escaped_header_outside_angle_brackets_gets_400() -> None:
    """§3.1.2.13: a URI with ``?`` must be in name-addr form; the RFC allows 400."""
    req = request("regbadct")  # Contact is parsed lazily …
    resp = uas_verdict(req)  # … and the UAS core checks it
    assert resp is not None and resp.status == 400
    assert "Contact" in resp.reason


def test_badaspec_spaces_inside_angle_brackets_are_tolerated() -> None:
    """§3.1.2.14"""
    req = request("badaspec")
    assert req.to.display_name == "Watson, Thomas"
    assert req.to.uri == parse_uri("sip:t.watson@example.org")
    assert uas_verdict(req) is None


def test_baddn_unquoted_non_token_display_names_are_tolerated() -> None:
    """§3.1.2.15: From/To are single-valued, so ``Bell, Alexander`` is unambiguous."""
    req = request("baddn")
    assert req.from_.display_name == "Bell, Alexander"
    assert req.to.display_name == "Watson, Thomas"
    assert uas_verdict(req) is None
    # when we build a header from it, the display name is quoted
    assert str(req.from_) == '"Bell, Alexander" <sip:a.g.bell@example.com>;tag=43'


def test_badvers_unknown_protocol_version_gets_505() -> None:
    """§3.1.2.16"""
    req = request("badvers")
    assert req.version == "SIP/7.0"
    resp = uas_verdict(req)
    assert resp is not None and (resp.status, resp.reason) == (505, "Version Not Supported")


def test_mismatch01_start_line_and_cseq_method_mismatch_gets_400() -> None:
    """§3.1.2.17"""
    resp = uas_verdict(request("mismatch01"))
    assert resp is not None and resp.status == 400
    assert "CSeq" in resp.reason


def test_mismatch02_unknown_method_with_cseq_mismatch_gets_400_not_501() -> None:
    """§3.1.2.18"""
    resp = uas_verdict(request("mismatch02"))
    assert resp is not None and resp.status == 400


def test_bigcode_overlarge_response_code_is_dropped() -> None:
    """§3.1.2.19"""
    exc, resp = rejected_by_parser("bigcode")
    assert exc.is_response and exc.reason == "Bad status code"
    assert resp is None


# ---------------------------------------------------------------------------------------
# §3.2 Transaction layer semantics


def test_badbranch_branch_without_magic_cookie_is_processed_rfc2543_style() -> None:
    """§3.2.1: the branch is exactly ``z9hG4bK``: not an RFC 3261 branch."""
    req = request("badbranch")
    assert req.top_via.branch == "z9hG4bK"
    assert not req.top_via.has_rfc3261_branch
    assert uas_verdict(req) is None


# ---------------------------------------------------------------------------------------
# §3.3 Application-layer semantics


def test_insuf_missing_required_header_fields_get_400() -> None:
    """§3.3.1: no From, To, Call-ID (or Max-Forwards)."""
    req = request("insuf")
    resp = uas_verdict(req)
    assert resp is not None and resp.status == 400
    assert resp.reason == "Missing From"
    assert resp.headers.get("CSeq") == "193942 INVITE"


def test_unkscm_unknown_request_uri_scheme_gets_416() -> None:
    """§3.3.2"""
    req = request("unkscm")
    assert (req.uri.scheme, req.uri.opaque) == ("nobodyknowsthisscheme", "totallyopaquecontent")
    resp = uas_verdict(req)
    assert resp is not None and resp.status == 416


def test_novelsc_known_but_unsupported_scheme_gets_416() -> None:
    """§3.3.3: soap.beep is a real scheme; this UAS does not support it."""
    req = request("novelsc")
    assert req.uri.scheme == "soap.beep"
    resp = uas_verdict(req)
    assert resp is not None and resp.status == 416


def test_unksm2_unknown_schemes_in_header_fields_are_accepted() -> None:
    """§3.3.4"""
    req = request("unksm2")
    assert str(req.to.uri) == "isbn:2983792873"
    assert req.from_.uri.scheme == "http" and req.from_.tag == "3234233"
    assert str(req.contacts[0].uri) == "name:John_Smith"
    assert uas_verdict(req) is None


def test_bext01_unknown_require_options_get_420_with_unsupported() -> None:
    """§3.3.5: as a UAS we list the Require options (Proxy-Require is for proxies)."""
    resp = uas_verdict(request("bext01"))
    assert resp is not None and resp.status == 420
    assert resp.headers.get_all("Unsupported") == [
        "nothingSupportsThis",
        "nothingSupportsThisEither",
    ]


def test_invut_unknown_content_type_gets_415_with_accept() -> None:
    """§3.3.6"""
    resp = uas_verdict(request("invut"))
    assert resp is not None and resp.status == 415
    assert resp.headers.get_all("Accept") == ["application/sdp"]


def test_regaut01_unknown_authorization_scheme_parses_for_the_registrar() -> None:
    """§3.3.7: the registrar answers 401 with its own challenge; the core accepts it."""
    req = request("regaut01")
    assert req.headers.get("Authorization") == "NoOneKnowsThisScheme opaque-data=here"
    assert uas_verdict(req) is None


def test_multi01_multiple_values_in_single_value_fields_get_400() -> None:
    """§3.3.8"""
    resp = uas_verdict(request("multi01"))
    assert resp is not None and resp.status == 400
    assert resp.reason.startswith("Multiple ")


def test_mcl01_multiple_content_length_values_get_400() -> None:
    """§3.3.9"""
    exc, resp = rejected_by_parser("mcl01")
    assert exc.reason == "Multiple Content-Length values"
    assert resp is not None and resp.status == 400
    with pytest.raises(SipParseError):
        StreamFramer().feed(load("mcl01"))


def test_bcast_response_with_broadcast_via_is_dropped() -> None:
    """§3.3.10: well formed (parses), but a UA discards a response with two Vias
    (RFC 3261 §8.1.3.3) and nobody may send towards 255.255.255.255."""
    resp = response("bcast")
    assert resp.vias[1].host == "255.255.255.255"
    assert not is_acceptable_response(resp)
    assert not is_acceptable_response(resp, [("192.0.2.198", None)])


def test_zeromf_max_forwards_zero_is_answered_but_never_forwarded() -> None:
    """§3.3.11"""
    req = request("zeromf")
    assert req.max_forwards == 0
    assert uas_verdict(req) is None
    resp = check_max_forwards(req)
    assert resp is not None and (resp.status, resp.reason) == (483, "Too Many Hops")


def test_cparam01_contact_parameter_of_addr_spec_belongs_to_the_header() -> None:
    """§3.3.12"""
    req = request("cparam01")
    (contact,) = req.contacts
    assert contact.uri == parse_uri("sip:+19725552222@gw1.example.net")
    assert contact.params == (("unknownparam", None),)
    assert uas_verdict(req) is None


def test_cparam02_uri_parameter_inside_angle_brackets_belongs_to_the_uri() -> None:
    """§3.3.13"""
    req = request("cparam02")
    (contact,) = req.contacts
    assert contact.uri.params == (("unknownparam", None),)
    assert contact.params == ()
    assert uas_verdict(req) is None


def test_regescrt_escaped_route_header_in_contact_uri_is_accepted() -> None:
    """§3.3.14: the registrar stores the URI with its header; we parse it cleanly."""
    req = request("regescrt")
    (contact,) = req.contacts
    assert contact.uri.headers == (("Route", "%3Csip:sip.example.com%3E"),)
    assert uas_verdict(req) is None


def test_sdp01_accept_without_application_sdp_gets_406() -> None:
    """§3.3.15"""
    resp = uas_verdict(request("sdp01"))
    assert resp is not None and resp.status == 406


# ---------------------------------------------------------------------------------------
# §3.4 Backward compatibility


def test_inv2543_rfc2543_invite_is_accepted() -> None:
    """§3.4.1: no branch, no Max-Forwards, no Content-Length (UDP: body = rest)."""
    req = request("inv2543")
    assert req.top_via.branch is None and not req.top_via.has_rfc3261_branch
    assert req.max_forwards is None
    assert req.body.startswith(b"v=0\r\n") and req.body == load("inv2543").split(b"\r\n\r\n", 1)[1]
    assert req.record_route[0].uri.param("maddr") == "ss1.example.com"
    # RFC 3261 §20.10: parameters after an addr-spec belong to the header, not the URI
    assert req.to.param("user") == "phone" and req.to.uri.params == ()
    assert uas_verdict(req) is None
