"""RFC 3261 §12: dialog creation, route sets, CSeq rules, request construction, target
refresh. Messages are written as they would appear on the wire and parsed."""

from __future__ import annotations

import pytest

from switch.sip.dialog import (
    MAGIC_COOKIE,
    Dialog,
    DialogError,
    DialogId,
    DialogState,
    LocalEndpoint,
)
from switch.sip.message import Request, Response
from switch.sip.parser import parse_message
from switch.sip.uri import parse_uri

LOCAL = LocalEndpoint(contact=parse_uri("sip:alice@10.0.0.1:5060"))


def msg(text: str) -> Request | Response:
    data = text.strip("\n").replace("\n", "\r\n") + "\r\n\r\n"
    return parse_message(data.encode())


INVITE = """\
INVITE sip:bob@biloxi.example.com SIP/2.0
Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK74bf9
Max-Forwards: 70
From: Alice <sip:alice@atlanta.example.com>;tag=9fxced76sl
To: Bob <sip:bob@biloxi.example.com>
Call-ID: 3848276298220188511@atlanta.example.com
CSeq: 314159 INVITE
Contact: <sip:alice@10.0.0.1:5060>
Record-Route: <sip:p2.example.com;lr>, <sip:p1.example.com;lr>
Content-Length: 0"""

OK_200 = """\
SIP/2.0 200 OK
Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK74bf9
From: Alice <sip:alice@atlanta.example.com>;tag=9fxced76sl
To: Bob <sip:bob@biloxi.example.com>;tag=8321234356
Call-ID: 3848276298220188511@atlanta.example.com
CSeq: 314159 INVITE
Contact: <sip:bob@192.0.2.4:5062>
{rr}Content-Length: 0"""


def invite() -> Request:
    m = msg(INVITE)
    assert isinstance(m, Request)
    return m


def ok(rr: str = "") -> Response:
    m = msg(OK_200.format(rr=rr))
    assert isinstance(m, Response)
    return m


def uac_dialog(rr: str = "") -> Dialog:
    return Dialog.uac(invite(), ok(rr), LOCAL)


class TestUacCreation:
    def test_2xx_creates_confirmed_dialog_with_id_and_target(self) -> None:
        d = uac_dialog()
        assert d.state is DialogState.CONFIRMED
        assert d.id == DialogId("3848276298220188511@atlanta.example.com", "9fxced76sl",
                                "8321234356")
        assert str(d.remote_target) == "sip:bob@192.0.2.4:5062"
        assert d.local_seq == 314159 and d.remote_seq is None
        assert d.route_set == ()
        assert not d.secure

    def test_1xx_with_tag_creates_early_dialog(self) -> None:
        ringing = msg(OK_200.format(rr="").replace("200 OK", "180 Ringing"))
        assert isinstance(ringing, Response)
        d = Dialog.uac(invite(), ringing, LOCAL)
        assert d.state is DialogState.EARLY

    def test_response_without_to_tag_cannot_create_dialog(self) -> None:
        text = OK_200.format(rr="").replace(";tag=8321234356", "")
        resp = msg(text)
        assert isinstance(resp, Response)
        with pytest.raises(DialogError):
            Dialog.uac(invite(), resp, LOCAL)

    def test_record_route_of_response_is_reversed_for_the_uac(self) -> None:
        d = uac_dialog("Record-Route: <sip:p2.example.com;lr>, <sip:p1.example.com;lr>\n")
        assert [str(r.uri) for r in d.route_set] == [
            "sip:p1.example.com;lr", "sip:p2.example.com;lr"]

    def test_sips_request_uri_makes_the_dialog_secure(self) -> None:
        text = INVITE.replace("INVITE sip:bob@biloxi", "INVITE sips:bob@biloxi")
        req = msg(text)
        assert isinstance(req, Request)
        assert Dialog.uac(req, ok(), LOCAL).secure


class TestUasCreation:
    def test_record_route_kept_in_order_and_remote_cseq_set(self) -> None:
        d = Dialog.uas(invite(), "uas-tag", LOCAL)
        assert [str(r.uri) for r in d.route_set] == [
            "sip:p2.example.com;lr", "sip:p1.example.com;lr"]
        assert d.remote_seq == 314159 and d.local_seq is None
        assert d.id == DialogId("3848276298220188511@atlanta.example.com", "uas-tag",
                                "9fxced76sl")
        assert str(d.remote_target) == "sip:alice@10.0.0.1:5060"

    def test_invite_without_contact_is_refused(self) -> None:
        req = msg(INVITE.replace("Contact: <sip:alice@10.0.0.1:5060>\n", ""))
        assert isinstance(req, Request)
        with pytest.raises(DialogError):
            Dialog.uas(req, "t", LOCAL)


class TestRequestConstruction:
    def test_no_route_set_request_uri_is_remote_target(self) -> None:
        d = uac_dialog()
        bye = d.create_request("BYE")
        assert str(bye.uri) == "sip:bob@192.0.2.4:5062"
        assert bye.headers.get_all("Route") == []
        assert bye.cseq.seq == 314160 and bye.cseq.method == "BYE"
        assert bye.from_.tag == "9fxced76sl" and bye.to.tag == "8321234356"
        assert bye.call_id == "3848276298220188511@atlanta.example.com"
        assert bye.max_forwards == 70
        assert bye.top_via.branch is not None and bye.top_via.branch.startswith(MAGIC_COOKIE)
        assert d.next_hop(bye) == bye.uri

    def test_loose_routing_keeps_target_and_lists_the_route_set(self) -> None:
        d = uac_dialog("Record-Route: <sip:p2.example.com;lr>, <sip:p1.example.com;lr>\n")
        bye = d.create_request("BYE")
        assert str(bye.uri) == "sip:bob@192.0.2.4:5062"
        assert [str(r.uri) for r in bye.route] == ["sip:p1.example.com;lr",
                                                   "sip:p2.example.com;lr"]
        assert str(d.next_hop(bye)) == "sip:p1.example.com;lr"

    def test_strict_router_goes_into_request_uri_and_target_becomes_last_route(self) -> None:
        # §12.2.1.1: first route without lr → strict routing.
        rr = "Record-Route: <sip:p2.example.com;lr>, <sip:p1.example.com;method=INVITE>\n"
        d = uac_dialog(rr)
        req = d.create_request("INFO", body=b"x", content_type="text/plain")
        assert str(req.uri) == "sip:p1.example.com"  # method param is not allowed in R-URI
        assert [str(r.uri) for r in req.route] == ["sip:p2.example.com;lr",
                                                   "sip:bob@192.0.2.4:5062"]
        assert d.next_hop(req) == req.uri
        assert req.headers.get("Content-Type") == "text/plain"

    def test_each_request_gets_a_fresh_branch_and_next_cseq(self) -> None:
        d = uac_dialog()
        r1 = d.create_request("INFO")
        r2 = d.create_request("INFO")
        assert r2.cseq.seq == r1.cseq.seq + 1
        assert r1.top_via.branch != r2.top_via.branch

    def test_ack_reuses_the_invite_cseq_and_does_not_consume_one(self) -> None:
        d = uac_dialog()
        ack = d.create_request("ACK", cseq=314159)
        assert ack.cseq.seq == 314159 and ack.cseq.method == "ACK"
        assert d.create_request("BYE").cseq.seq == 314160
        with pytest.raises(DialogError):
            d.create_request("ACK")

    def test_cancel_is_not_a_dialog_request(self) -> None:
        with pytest.raises(DialogError):
            uac_dialog().create_request("CANCEL")

    def test_target_refresh_methods_carry_contact(self) -> None:
        d = uac_dialog()
        assert d.create_request("UPDATE").contacts[0].uri == LOCAL.contact
        assert d.create_request("INVITE").contacts[0].uri == LOCAL.contact
        assert d.create_request("BYE").contacts == ()

    def test_uas_dialog_first_request_starts_its_own_cseq_space(self) -> None:
        d = Dialog.uas(invite(), "uas-tag", LOCAL, initial_local_seq=7)
        bye = d.create_request("BYE")
        assert bye.cseq.seq == 8
        assert bye.from_.tag == "uas-tag" and bye.to.tag == "9fxced76sl"
        assert [str(r.uri) for r in bye.route] == ["sip:p2.example.com;lr",
                                                   "sip:p1.example.com;lr"]
        assert str(bye.uri) == "sip:alice@10.0.0.1:5060"


class TestRemoteCSeq:
    def request(self, seq: int, method: str = "INFO", tag: str = "8321234356") -> Request:
        req = msg(f"""\
{method} sip:alice@10.0.0.1:5060 SIP/2.0
Via: SIP/2.0/UDP 192.0.2.4:5062;branch=z9hG4bKx{seq}
Max-Forwards: 70
From: Bob <sip:bob@biloxi.example.com>;tag={tag}
To: Alice <sip:alice@atlanta.example.com>;tag=9fxced76sl
Call-ID: 3848276298220188511@atlanta.example.com
CSeq: {seq} {method}
Contact: <sip:bob@192.0.2.99:5070>
Content-Length: 0""")
        assert isinstance(req, Request)
        return req

    def test_first_request_sets_remote_cseq_then_lower_is_out_of_order(self) -> None:
        d = uac_dialog()
        assert d.check_remote_cseq(self.request(100))
        assert d.remote_seq == 100
        assert d.check_remote_cseq(self.request(101))
        assert not d.check_remote_cseq(self.request(99))  # §12.2.2 → 500
        assert d.remote_seq == 101

    def test_request_matches_dialog_by_tags(self) -> None:
        d = uac_dialog()
        assert d.matches(self.request(5))
        assert not d.matches(self.request(6, tag="another-fork"))

    def test_response_matching(self) -> None:
        d = uac_dialog()
        assert d.matches(ok())

    def test_target_refresh_replaces_remote_target_route_set_untouched(self) -> None:
        d = uac_dialog("Record-Route: <sip:p1.example.com;lr>\n")
        d.update_target(self.request(5, "UPDATE"))
        assert str(d.remote_target) == "sip:bob@192.0.2.99:5070"
        assert [str(r.uri) for r in d.route_set] == ["sip:p1.example.com;lr"]

    def test_confirm_recomputes_route_set_from_2xx(self) -> None:
        ringing = msg(OK_200.format(rr="Record-Route: <sip:old.example.com;lr>\n")
                      .replace("200 OK", "183 Session Progress"))
        assert isinstance(ringing, Response)
        d = Dialog.uac(invite(), ringing, LOCAL)
        d.confirm(ok("Record-Route: <sip:new.example.com;lr>\n"))
        assert d.state is DialogState.CONFIRMED
        assert [str(r.uri) for r in d.route_set] == ["sip:new.example.com;lr"]


class TestSessionsUseTheRouteSet:
    """§12.1.1 / §12.1.2 through the INVITE session: Record-Route echoed by the UAS,
    route sets applied to ACK and BYE on both sides."""

    def test_uas_echoes_record_route_and_routes_its_bye(self) -> None:
        from switch.sip.invite_session import InviteSession, SendRequest, SendResponse, SessionConfig

        cfg = SessionConfig(local=LocalEndpoint(contact=parse_uri("sip:bob@192.0.2.4:5062")))
        s, _ = InviteSession.uas(invite(), "txn", 0.0, cfg)
        [ringing] = [e.response for e in s.provisional(180, 0.0) if isinstance(e, SendResponse)]
        assert ringing.headers.get_all("Record-Route") == [
            "<sip:p2.example.com;lr>", "<sip:p1.example.com;lr>"]
        s.answer(b"v=0\r\n", 0.0)  # offer-less INVITE: our offer, the answer comes in the ACK
        ack = msg(f"""\
ACK sip:bob@192.0.2.4:5062 SIP/2.0
Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKack1
Max-Forwards: 70
From: Alice <sip:alice@atlanta.example.com>;tag=9fxced76sl
To: Bob <sip:bob@biloxi.example.com>;tag={s.local_tag}
Call-ID: 3848276298220188511@atlanta.example.com
CSeq: 314159 ACK
Content-Type: application/sdp
Content-Length: 11

v=0 answer""")
        assert isinstance(ack, Request)
        s.on_request(ack, None, 0.1)
        assert s.remote_sdp is not None and s.remote_sdp.startswith(b"v=0 answer")
        [bye] = [e for e in s.bye(1.0) if isinstance(e, SendRequest)]
        assert str(bye.request.uri) == "sip:alice@10.0.0.1:5060"
        assert [str(r.uri) for r in bye.request.route] == [
            "sip:p2.example.com;lr", "sip:p1.example.com;lr"]
        assert str(bye.next_hop) == "sip:p2.example.com;lr"

    def test_uac_reverses_record_route_for_ack_and_bye(self) -> None:
        from switch.sip.invite_session import InviteSession, SendAck, SendRequest, SessionConfig
        from switch.sip.message import make_response
        from switch.sip.uri import parse_name_addr

        cfg = SessionConfig(local=LOCAL)
        s = InviteSession.uac(cfg)
        [sent] = [e for e in s.invite(
            request_uri=parse_uri("sip:bob@biloxi.example.com"),
            from_=parse_name_addr("<sip:alice@atlanta.example.com>"),
            to=parse_name_addr("<sip:bob@biloxi.example.com>"),
            sdp=b"v=0\r\n", now=0.0) if isinstance(e, SendRequest)]
        ok = make_response(sent.request, 200, None, to_tag="b1", body=b"v=0 a\r\n", headers=[
            ("Record-Route", "<sip:p2.example.com;lr>, <sip:p1.example.com;lr>"),
            ("Contact", "<sip:bob@192.0.2.4:5062>"), ("Content-Type", "application/sdp")])
        [ack] = [e for e in s.on_response(ok, 0.1) if isinstance(e, SendAck)]
        assert [str(r.uri) for r in ack.request.route] == [
            "sip:p1.example.com;lr", "sip:p2.example.com;lr"]
        assert str(ack.request.uri) == "sip:bob@192.0.2.4:5062"
        assert str(ack.next_hop) == "sip:p1.example.com;lr"
        [bye] = [e for e in s.bye(1.0) if isinstance(e, SendRequest)]
        assert [str(r.uri) for r in bye.request.route] == [
            "sip:p1.example.com;lr", "sip:p2.example.com;lr"]
