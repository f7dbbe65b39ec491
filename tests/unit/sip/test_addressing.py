"""Where messages go: the server's Via rewrite (RFC 3261 §18.2.1, RFC 3581), response
destinations (§18.2.2) and request destinations (§8.1.2, RFC 3263 without DNS)."""

from __future__ import annotations

import pytest

from switch.sip.addressing import (
    Peer,
    is_numeric_host,
    next_hop_uri,
    request_destination,
    response_destination,
    stamp_via,
    stamp_via_received,
)
from switch.sip.uri import Via, parse_uri, parse_via
from tests.unit.sip.test_transaction_support import request

SRC = Peer("udp", "203.0.113.7", 61000)


# --------------------------------------------------------------- §18.2.1 + RFC 3581


def test_received_is_added_when_sent_by_differs_from_the_source() -> None:
    via = stamp_via(parse_via("SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bKa"), SRC)
    assert via.received == "203.0.113.7"
    assert via.rport is None


def test_received_is_not_added_when_sent_by_is_the_source_address() -> None:
    via = parse_via("SIP/2.0/UDP 203.0.113.7:5060;branch=z9hG4bKa")
    assert stamp_via(via, SRC) is via


def test_sent_by_host_name_always_gets_received() -> None:
    """§18.2.1: "If the host portion of the sent-by ... contains a domain name ... the
    server ... MUST add a received parameter"."""
    via = stamp_via(parse_via("SIP/2.0/UDP pc33.example.com;branch=z9hG4bKa"), SRC)
    assert via.received == "203.0.113.7"


def test_rport_is_filled_and_received_added_even_if_identical() -> None:
    """RFC 3581 §4: fill rport with the source port; add received "even if it is
    identical to the value of the sent-by component"."""
    via = stamp_via(parse_via("SIP/2.0/UDP 203.0.113.7:5060;rport;branch=z9hG4bKa"), SRC)
    assert via.rport == "61000"
    assert via.received == "203.0.113.7"
    assert str(via) == (
        "SIP/2.0/UDP 203.0.113.7:5060;rport=61000;branch=z9hG4bKa;received=203.0.113.7"
    )


def test_stamping_is_idempotent() -> None:
    via = stamp_via(parse_via("SIP/2.0/UDP 10.0.0.5;rport;branch=z9hG4bKa"), SRC)
    assert stamp_via(via, SRC) is via


def test_ipv6_source_compares_without_brackets() -> None:
    src = Peer("udp", "2001:db8::1", 5060)
    via = parse_via("SIP/2.0/UDP [2001:db8::1]:5060;branch=z9hG4bKa")
    assert stamp_via(via, src) is via
    other = stamp_via(via, Peer("udp", "2001:db8::2", 5060))
    assert other.received == "2001:db8::2"


def test_stamp_via_received_rewrites_only_the_top_via() -> None:
    req = request("OPTIONS", via_host="10.0.0.5", rport=True,
                  extra_vias=("SIP/2.0/UDP 10.0.0.9;branch=z9hG4bK-lower",))
    out = stamp_via_received(req, SRC)
    assert out.top_via.received == "203.0.113.7" and out.top_via.rport == "61000"
    assert out.vias[1] == req.vias[1]
    assert len(out.vias) == 2
    plain = request("OPTIONS", via_host="203.0.113.7")
    assert stamp_via_received(plain, SRC) is plain


# ------------------------------------------------------------------------- §18.2.2


def _stamped(text: str, src: Peer = SRC) -> Via:
    return stamp_via(parse_via(text), src)


def test_unreliable_response_goes_to_received_at_the_sent_by_port() -> None:
    via = _stamped("SIP/2.0/UDP 10.0.0.5:5070;branch=z9hG4bKa")
    assert response_destination(via, SRC) == Peer("udp", "203.0.113.7", 5070)


def test_unreliable_response_defaults_to_port_5060() -> None:
    via = _stamped("SIP/2.0/UDP 203.0.113.7;branch=z9hG4bKa")
    assert response_destination(via, SRC) == Peer("udp", "203.0.113.7", 5060)


def test_rport_sends_the_response_to_the_source_address_and_port() -> None:
    via = _stamped("SIP/2.0/UDP 10.0.0.5:5060;rport;branch=z9hG4bKa")
    assert response_destination(via, SRC) == SRC
    # Also when the adapter did not stamp: an empty rport means "the source port".
    raw = parse_via("SIP/2.0/UDP 10.0.0.5:5060;rport;branch=z9hG4bKa")
    assert response_destination(raw, SRC) == SRC


def test_maddr_wins_for_unreliable_transports() -> None:
    via = _stamped("SIP/2.0/UDP 10.0.0.5:5062;maddr=239.255.255.1;ttl=1;branch=z9hG4bKa")
    assert response_destination(via, SRC) == Peer("udp", "239.255.255.1", 5062)


@pytest.mark.parametrize("transport", ["tcp", "tls"])
def test_reliable_response_goes_back_over_the_same_connection(transport: str) -> None:
    src = Peer(transport, "203.0.113.7", 40123, connection_id=42)
    via = _stamped(f"SIP/2.0/{transport.upper()} 10.0.0.5:5060;branch=z9hG4bKa", src)
    assert response_destination(via, src) == src


# ---------------------------------------------------------------- request routing


@pytest.mark.parametrize(
    ("uri", "peer"),
    [
        ("sip:bob@192.0.2.4", Peer("udp", "192.0.2.4", 5060)),
        ("sip:bob@192.0.2.4:5080", Peer("udp", "192.0.2.4", 5080)),
        ("sip:bob@192.0.2.4;transport=TCP", Peer("tcp", "192.0.2.4", 5060)),
        ("sip:bob@192.0.2.4;transport=tls", Peer("tls", "192.0.2.4", 5061)),
        ("sips:bob@192.0.2.4", Peer("tls", "192.0.2.4", 5061)),
        ("sip:bob@[2001:db8::9]:5070", Peer("udp", "2001:db8::9", 5070)),
        ("sip:bob@example.com;maddr=192.0.2.8", Peer("udp", "192.0.2.8", 5060)),
        # No DNS here: a host name is handed to the adapter (getaddrinfo, no SRV/NAPTR).
        ("sip:bob@gw.example.com", Peer("udp", "gw.example.com", 5060)),
    ],
)
def test_request_destination(uri: str, peer: Peer) -> None:
    assert request_destination(parse_uri(uri)) == peer


def test_request_destination_rejects_unknown_transports() -> None:
    with pytest.raises(ValueError, match="sctp"):
        request_destination(parse_uri("sip:bob@192.0.2.4;transport=sctp"))


@pytest.mark.parametrize("uri", ["tel:+4930123456", "mailto:bob@example.com"])
def test_request_destination_needs_a_sip_uri_with_a_host(uri: str) -> None:
    with pytest.raises(ValueError, match="cannot route"):
        request_destination(parse_uri(uri))


def test_next_hop_is_the_first_route_else_the_request_uri() -> None:
    routed = request("INVITE", routes=("<sip:192.0.2.50;lr>", "<sip:192.0.2.51;lr>"))
    assert str(next_hop_uri(routed)) == "sip:192.0.2.50;lr"
    assert next_hop_uri(request("INVITE")) == request("INVITE").uri


def test_peer_helpers() -> None:
    assert Peer("tcp", "h", 1).reliable and not Peer("udp", "h", 1).reliable
    assert str(Peer("tcp", "2001:db8::1", 5060, 3)) == "tcp:[2001:db8::1]:5060#3"
    assert Peer("tcp", "a", 1, 3).same_endpoint(Peer("tcp", "A", 1))
    assert not Peer("tcp", "a", 1, 3).same_endpoint(Peer("tcp", "a", 1, 4))
    assert is_numeric_host("[2001:db8::1]") and not is_numeric_host("example.com")
