"""URIs, name-addr, Via and CSeq values (RFC 3261 §19, §20.10, §20.42, §25.1)."""

from __future__ import annotations

import dataclasses

import pytest

from switch.sip.uri import (
    CSeq,
    NameAddr,
    SipParseError,
    SipUri,
    Via,
    parse_cseq,
    parse_name_addr,
    parse_name_addrs,
    parse_uri,
    parse_via,
    split_list,
    uri_equal,
)

# ---------------------------------------------------------------------------------------
# parsing and serialising URIs


def test_sip_uri_parts() -> None:
    u = parse_uri("sip:alice:secret@Atlanta.example.com:5070;transport=TCP;lr?Subject=hi&X=y")
    assert u == SipUri(
        scheme="sip",
        user="alice",
        password="secret",
        host="Atlanta.example.com",
        port=5070,
        params=(("transport", "TCP"), ("lr", None)),
        headers=(("Subject", "hi"), ("X", "y")),
    )
    assert u.transport == "tcp"
    assert u.param("TRANSPORT") == "TCP" and u.has_param("lr") and u.param("lr") is None
    assert not u.has_param("maddr")
    assert str(u) == "sip:alice:secret@Atlanta.example.com:5070;transport=TCP;lr?Subject=hi&X=y"


def test_scheme_is_lower_cased_and_default_transports_follow_the_scheme() -> None:
    assert parse_uri("SIP:bob@example.com").scheme == "sip"
    assert parse_uri("sip:bob@example.com").transport == "udp"
    assert parse_uri("sips:bob@example.com").transport == "tls"


def test_ipv6_host_is_stored_without_brackets_and_written_with_them() -> None:
    u = parse_uri("sip:[2001:db8::10]:5070;transport=tcp")
    assert (u.host, u.port) == ("2001:db8::10", 5070)
    assert u.host_port == "[2001:db8::10]:5070"
    assert str(u) == "sip:[2001:db8::10]:5070;transport=tcp"


def test_tel_uri_keeps_the_number_in_user() -> None:
    u = parse_uri("tel:+1-201-555-0123;phone-context=example.com")
    assert (u.scheme, u.user) == ("tel", "+1-201-555-0123")
    assert u.param("phone-context") == "example.com"
    assert str(u) == "tel:+1-201-555-0123;phone-context=example.com"
    assert uri_equal(u, parse_uri("tel:+12015550123;phone-context=example.com"))


def test_unknown_schemes_are_opaque() -> None:
    u = parse_uri("urn:service:sos")
    assert (u.scheme, u.opaque, str(u)) == ("urn", "service:sos", "urn:service:sos")


def test_with_params_sets_flags_replaces_values_and_removes() -> None:
    u = parse_uri("sip:gw.example.net;transport=udp;maddr=192.0.2.1")
    v = u.with_params(transport="tcp", lr=True, maddr=None)
    assert str(v) == "sip:gw.example.net;transport=tcp;lr"
    assert str(dataclasses.replace(v, port=5080)) == "sip:gw.example.net:5080;transport=tcp;lr"


def test_user_unescaped_decodes_percent_escapes() -> None:
    assert parse_uri("sip:I%20have%20spaces@example.net").user_unescaped == "I have spaces"
    assert parse_uri("sip:example.net").user_unescaped is None


def test_lenient_user_part_accepts_hash_from_carriers() -> None:
    assert parse_uri("sip:*21#@gw.example.net").user == "*21#"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "sip:",
        "sip:user@",
        "sip:host:99999",
        "sip:host:abc",
        "sip:us er@host",
        "<sip:a@b>",
        "sip:a@b;;x",
        "sip:[::1",
        "sip:a@b?x",
        "sip:a@host;p=%zz",
        "sip:%4@host",
        "1sip:a@b",
        "sip:a@b c",
        "sip:a@host;p=a b",
        "sip:a@b>",
    ],
)
def test_malformed_uris_raise_sip_parse_error(text: str) -> None:
    with pytest.raises(SipParseError):
        parse_uri(text)


# ---------------------------------------------------------------------------------------
# RFC 3261 §19.1.4 comparison: the RFC's own examples


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("sip:%61lice@atlanta.com;transport=TCP", "sip:alice@AtLanTa.CoM;Transport=tcp"),
        ("sip:carol@chicago.com", "sip:carol@chicago.com;newparam=5"),
        ("sip:carol@chicago.com", "sip:carol@chicago.com;security=on"),
        ("sip:carol@chicago.com;newparam=5", "sip:carol@chicago.com;security=on"),
        (
            "sip:biloxi.com;transport=tcp;method=REGISTER?to=sip:bob%40biloxi.com",
            "sip:biloxi.com;method=REGISTER;transport=tcp?to=sip:bob%40biloxi.com",
        ),
        (
            "sip:alice@atlanta.com?subject=project%20x&priority=urgent",
            "sip:alice@atlanta.com?priority=urgent&subject=project%20x",
        ),
        ("sip:[2001:DB8::1]", "sip:[2001:db8::1]"),
    ],
)
def test_rfc3261_equivalent_uris(a: str, b: str) -> None:
    assert uri_equal(parse_uri(a), parse_uri(b))
    assert uri_equal(parse_uri(b), parse_uri(a))


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("SIP:ALICE@AtLanTa.CoM;Transport=udp", "sip:alice@AtLanTa.CoM;Transport=UDP"),
        ("sip:bob@biloxi.com", "sip:bob@biloxi.com:5060"),
        ("sip:bob@biloxi.com", "sip:bob@biloxi.com;transport=udp"),
        ("sip:bob@biloxi.com", "sip:bob@biloxi.com:6000;transport=tcp"),
        ("sip:carol@chicago.com", "sip:carol@chicago.com?Subject=next%20meeting"),
        ("sip:bob@phone21.boxesbybob.com", "sip:bob@192.0.2.4"),
        ("sip:carol@chicago.com;security=on", "sip:carol@chicago.com;security=off"),
        ("sip:bob@biloxi.com", "sips:bob@biloxi.com"),
        ("sip:a%3Ab@host", "sip:a:b@host"),  # escaped reserved characters stay distinct
    ],
)
def test_rfc3261_non_equivalent_uris(a: str, b: str) -> None:
    assert not uri_equal(parse_uri(a), parse_uri(b))
    assert not uri_equal(parse_uri(b), parse_uri(a))


# ---------------------------------------------------------------------------------------
# name-addr (§20.10)


def test_name_addr_with_quoted_display_name_and_tag() -> None:
    na = parse_name_addr('"Alice \\"A\\" Smith" <sip:alice@atlanta.example.com>;tag=1928301774')
    assert na.display_name == 'Alice "A" Smith'
    assert na.uri == parse_uri("sip:alice@atlanta.example.com")
    assert na.tag == "1928301774"
    assert str(na) == '"Alice \\"A\\" Smith" <sip:alice@atlanta.example.com>;tag=1928301774'


def test_unquoted_display_name_tokens_may_be_separated_by_any_lws() -> None:
    na = parse_name_addr("Alice\t Liddell<sip:alice@example.com>;tag=1")
    assert na.display_name == "Alice\t Liddell" and na.tag == "1"


def test_addr_spec_parameters_belong_to_the_header_not_the_uri() -> None:
    na = parse_name_addr("sip:bob@biloxi.example.com;tag=a6c85cf;user=phone")
    assert na.uri.params == ()
    assert na.params == (("tag", "a6c85cf"), ("user", "phone"))
    assert str(na) == "<sip:bob@biloxi.example.com>;tag=a6c85cf;user=phone"  # always <> form


def test_with_tag_adds_or_replaces_the_tag() -> None:
    na = parse_name_addr("<sip:bob@biloxi.example.com>")
    assert na.tag is None
    tagged = na.with_tag("314159")
    assert tagged.tag == "314159" and str(tagged) == "<sip:bob@biloxi.example.com>;tag=314159"
    assert tagged.with_tag("x").params == (("tag", "x"),)


def test_display_names_cannot_inject_header_lines() -> None:
    na = NameAddr("evil\r\nVia: SIP/2.0/UDP attacker", parse_uri("sip:a@example.com"))
    assert "\r" not in str(na) and "\n" not in str(na)


def test_contact_list_splits_on_commas_outside_quotes_and_angle_brackets() -> None:
    contacts = parse_name_addrs(
        '"Doe, John" <sip:john@a.example.com;x=1>;q=0.7, sip:j@b.example.com;expires=60'
    )
    assert [c.display_name for c in contacts] == ["Doe, John", None]
    assert contacts[0].uri.param("x") == "1" and contacts[0].param("q") == "0.7"
    assert contacts[1].param("expires") == "60"


def test_split_list_keeps_empty_elements_so_callers_see_malformed_lists() -> None:
    assert split_list("a, b,,c") == ["a", "b", "", "c"]
    assert split_list('"x,y" <sip:a@b>, <sip:c@d>') == ['"x,y" <sip:a@b>', "<sip:c@d>"]


@pytest.mark.parametrize(
    "text",
    [
        '"unterminated <sip:a@b>',
        "<sip:a@b",
        "sip:a@b?Route=x",  # must be in <> (RFC 3261 §20)
        "<sip:a@b>;;tag=1",
        "<sip:a@b> junk",
        '"quoted only"',
        "",
    ],
)
def test_malformed_name_addrs_raise(text: str) -> None:
    with pytest.raises(SipParseError):
        parse_name_addr(text)


# ---------------------------------------------------------------------------------------
# Via (§20.42) and CSeq (§20.16)


def test_via_parts_and_rport_forms() -> None:
    v = parse_via("SIP/2.0/udp pc33.atlanta.example.com:5066;branch=z9hG4bK776asdhds;rport")
    assert (v.protocol, v.transport, v.host, v.port) == (
        "SIP/2.0",
        "UDP",
        "pc33.atlanta.example.com",
        5066,
    )
    assert v.branch == "z9hG4bK776asdhds" and v.has_rfc3261_branch
    assert v.rport is True and v.received is None
    stamped = v.with_params(received="192.0.2.1", rport="5066")
    assert stamped.rport == "5066" and stamped.received == "192.0.2.1"
    assert str(stamped) == (
        "SIP/2.0/UDP pc33.atlanta.example.com:5066;branch=z9hG4bK776asdhds;rport=5066;received=192.0.2.1"
    )
    assert parse_via(str(stamped)) == stamped
    assert v.sent_by == ("pc33.atlanta.example.com", 5066)


def test_via_ipv6_sent_by_and_maddr_ttl() -> None:
    v = parse_via("SIP/2.0/UDP [2001:db8::9]:5060;branch=z9hG4bKx;maddr=224.2.0.1;ttl=16")
    assert v.host == "2001:db8::9" and v.port == 5060
    assert (v.maddr, v.ttl) == ("224.2.0.1", 16)
    assert str(v).startswith("SIP/2.0/UDP [2001:db8::9]:5060;")


def test_via_without_rport_and_with_rfc2543_branch() -> None:
    v = parse_via("SIP/2.0/TCP host.example.com;branch=1234")
    assert v.rport is None and not v.has_rfc3261_branch


@pytest.mark.parametrize(
    "text",
    [
        "SIP/2.0 host",
        "SIP/2.0/UDP",
        "SIP/2.0/UDP host;;",
        "SIP/2.0/UDP host:70000",
        "SIP/2.0/UDP host junk",
        "SIP/2.0/UDP host;branch=",
    ],
)
def test_malformed_vias_raise(text: str) -> None:
    with pytest.raises(SipParseError):
        parse_via(text)


def test_cseq() -> None:
    assert parse_cseq("4711 INVITE") == CSeq(4711, "INVITE")
    assert str(CSeq(1, "BYE")) == "1 BYE"
    assert parse_cseq("4294967295 ACK").seq == 2**32 - 1
    for bad in ("4294967296 INVITE", "-1 INVITE", "1", "1 INVITE x", "x INVITE"):
        with pytest.raises(SipParseError):
            parse_cseq(bad)


def test_values_are_frozen_and_hashable() -> None:
    v = Via(host="example.com")
    with pytest.raises(dataclasses.FrozenInstanceError):
        v.host = "x"  # type: ignore[misc]
    assert len({parse_uri("sip:a@b"), parse_uri("sip:a@b")}) == 1
