"""RFC 3262: reliable provisional responses and PRACK, both directions."""

from __future__ import annotations

import pytest

from switch.sip.invite_session import (
    AnswerReceived,
    EarlyMedia,
    Ended,
    EndReason,
    Failed,
    OfferReceived,
    Provisional,
    SendRequest,
    SendResponse,
    SessionConfig,
    SessionState,
)
from switch.sip.message import Request, Response
from switch.sip.parser import parse_message
from switch.sip.prack import (
    PrackMode,
    RAck,
    RSeqTracker,
    RSeqVerdict,
    parse_rack,
    parse_rseq,
)

from .test_invite_session_kit import Net, endpoint

OFFER = b"v=0 offer-a\r\n"
ANSWER = b"v=0 answer-b\r\n"


def is_prack(m: Request | Response) -> bool:
    return isinstance(m, Request) and m.method == "PRACK"


class TestValues:
    def test_rack_roundtrip(self) -> None:
        assert parse_rack("776656 1 INVITE") == RAck(776656, 1, "INVITE")
        assert str(RAck(5, 2, "INVITE")) == "5 2 INVITE"
        assert parse_rack("x 1 INVITE") is None
        assert parse_rack("1 INVITE") is None

    def test_rseq_range(self) -> None:
        assert parse_rseq("1") == 1
        assert parse_rseq("0") is None
        assert parse_rseq(str(2**31)) is None
        assert parse_rseq("abc") is None

    def test_uac_in_order_rule(self) -> None:
        t = RSeqTracker()
        assert t.check(10) is RSeqVerdict.NEW
        assert t.check(10) is RSeqVerdict.RETRANSMISSION
        assert t.check(12) is RSeqVerdict.OUT_OF_ORDER
        assert t.check(11) is RSeqVerdict.NEW
        assert t.check(12) is RSeqVerdict.NEW
        assert t.check(9) is RSeqVerdict.RETRANSMISSION


class TestUasSendsReliably:
    def test_reliable_180_gets_prack_with_matching_rack(self) -> None:
        n = Net()
        n.invite()
        assert "100rel" in n.a.requests("INVITE")[0].supported
        n.call(n.b, lambda: n.b.s.provisional(180, n.now, reliable=True))
        [r180] = n.b.responses(180)
        assert "100rel" in r180.require
        rseq = parse_rseq(r180.headers.get("RSeq"))
        assert rseq is not None
        [prack] = n.a.requests("PRACK")
        invite = n.a.requests("INVITE")[0]
        assert parse_rack(prack.headers.get("RAck")) == RAck(rseq, invite.cseq.seq, "INVITE")
        assert prack.to.tag == r180.to.tag
        assert prack.cseq.seq == invite.cseq.seq + 1
        assert n.b.responses(200, "PRACK")
        assert n.b.timers == {}  # retransmission and give-up timers stopped

    def test_retransmitted_t1_doubling_until_prack_and_uac_ignores_duplicates(self) -> None:
        lost = {"n": 0}

        def drop(m: Request | Response) -> bool:
            # the first PRACK is lost (the UAC's transaction would retransmit it; here
            # it times out) — the UAS keeps retransmitting the 180
            if is_prack(m) and lost["n"] == 0:
                lost["n"] += 1
                return True
            return False

        n = Net(drop=drop)
        n.invite()
        n.call(n.b, lambda: n.b.s.provisional(180, n.now, reliable=True))
        times = []
        for _ in range(30 * 4):
            before = len(n.b.responses(180))
            n.advance(0.25)
            if len(n.b.responses(180)) > before:
                times.append(n.now)
        # RFC 3262 §3: T1, then doubling (no T2 cap): 0.5, 1.5, 3.5, 7.5, 15.5
        assert times[:5] == [0.5, 1.5, 3.5, 7.5, 15.5]
        # §4: retransmissions (same RSeq) are not PRACKed again and not reported again
        assert len(n.a.requests("PRACK")) == 1
        assert len(n.a.events(Provisional)) == 1

    def test_no_prack_within_64_t1_rejects_invite_with_5xx(self) -> None:
        n = Net(drop=is_prack)
        n.invite()
        n.call(n.b, lambda: n.b.s.provisional(183, n.now, sdp=ANSWER, reliable=True))
        n.advance(31.9)
        assert n.b.s.state is SessionState.EARLY
        n.advance(0.2)
        [final] = [r for r in n.b.responses() if r.status >= 200]
        assert 500 <= final.status < 600
        assert [e for e in n.b.events() if isinstance(e, Ended)] == [
            Ended(EndReason.PRACK_TIMEOUT, final.status)]
        [failed] = [e for e in n.a.events() if isinstance(e, Failed)]
        assert failed.status == final.status
        assert n.b.timers == {}

    def test_2xx_waits_for_prack_of_reliable_1xx_with_sdp(self) -> None:
        held = {"on": True}
        n = Net(drop=lambda m: is_prack(m) and held["on"])
        n.invite()
        n.call(n.b, lambda: n.b.s.provisional(183, n.now, sdp=ANSWER, reliable=True))
        [em] = n.a.events(EarlyMedia)
        assert em.sdp == ANSWER  # type: ignore[attr-defined]
        assert n.a.s.remote_sdp == ANSWER  # the answer in a reliable 1xx counts
        n.call(n.b, lambda: n.b.s.answer(ANSWER, n.now))
        assert not n.b.responses(200, "INVITE")  # queued (RFC 3262 §3)
        held["on"] = False
        # the UAC's PRACK transaction would retransmit; emulate by a fresh PRACK
        n.call(n.a, lambda: list(_reprack(n)))
        [ok] = n.b.responses(200, "INVITE")
        assert ok.body == b""  # offer/answer already completed in the 183 / PRACK
        assert n.a.s.state is SessionState.CONFIRMED

    def test_second_reliable_provisional_waits_for_first_prack(self) -> None:
        held = {"on": True}
        n = Net(drop=lambda m: is_prack(m) and held["on"])
        n.invite()
        n.call(n.b, lambda: n.b.s.provisional(180, n.now, reliable=True))
        n.call(n.b, lambda: n.b.s.provisional(183, n.now, reliable=True))
        assert not n.b.responses(183)
        held["on"] = False
        n.call(n.a, lambda: list(_reprack(n)))
        [r183] = n.b.responses(183)
        r180 = n.b.responses(180)[0]
        assert parse_rseq(r183.headers.get("RSeq")) == parse_rseq(
            r180.headers.get("RSeq")) + 1  # type: ignore[operator]

    def test_prack_matching_nothing_gets_481(self) -> None:
        n = Net()
        n.invite()
        n.call(n.b, lambda: n.b.s.provisional(180, n.now, reliable=True))
        prack = n.a.requests("PRACK")[0]
        bogus = parse_message(prack.to_bytes().replace(b"RAck: ", b"RAck: 1").replace(
            f"CSeq: {prack.cseq.seq} PRACK".encode(), f"CSeq: {prack.cseq.seq + 1} PRACK".encode()))
        assert isinstance(bogus, Request)
        effects = n.b.s.on_request(bogus, "t", n.now)
        assert [e.response.status for e in effects if isinstance(e, SendResponse)] == [481]

    def test_uac_without_100rel_gets_unreliable_provisionals(self) -> None:
        cfg = SessionConfig(local=endpoint("alice", "10.0.0.1"), prack=PrackMode.DISABLED)
        n = Net(a_cfg=cfg)
        n.invite()
        assert "100rel" not in n.a.requests("INVITE")[0].supported
        n.call(n.b, lambda: n.b.s.provisional(180, n.now, reliable=True))
        [r180] = n.b.responses(180)
        assert r180.headers.get("RSeq") is None and "100rel" not in r180.require
        assert not n.a.requests("PRACK")
        assert n.b.timers == {}

    def test_uac_requiring_100rel_forces_reliable(self) -> None:
        cfg = SessionConfig(local=endpoint("alice", "10.0.0.1"), prack=PrackMode.REQUIRED)
        n = Net(a_cfg=cfg)
        n.invite()
        assert "100rel" in n.a.requests("INVITE")[0].require
        n.call(n.b, lambda: n.b.s.provisional(180, n.now))
        assert n.b.responses(180)[0].headers.get("RSeq") is not None
        assert n.a.requests("PRACK")

    def test_unsupported_required_extension_gets_420(self) -> None:
        n = Net()
        n.call(n.a, lambda: [])
        n.invite(extra_headers=[("Require", "foo, 100rel")])
        [resp] = n.b.responses(420)
        assert resp.headers.get("Unsupported") == "foo"
        assert n.b.s.terminated
        assert isinstance(next(e for e in n.a.events() if isinstance(e, Failed)), Failed)


class TestUacReceivesReliably:
    def test_out_of_order_rseq_discarded_until_the_gap_is_filled(self) -> None:
        n = Net(drop=lambda m: isinstance(m, Response) and m.status == 183)
        n.invite()
        n.call(n.b, lambda: n.b.s.provisional(180, n.now, reliable=True))
        r180 = n.b.responses(180)[0]
        rseq = parse_rseq(r180.headers.get("RSeq"))
        assert rseq is not None

        def variant(status: int, new_rseq: int) -> Response:
            m = parse_message(r180.to_bytes()
                              .replace(b"180 Ringing", f"{status} Session Progress".encode())
                              .replace(f"RSeq: {rseq}".encode(), f"RSeq: {new_rseq}".encode()))
            assert isinstance(m, Response)
            return m

        before = len(n.a.requests("PRACK"))
        n.apply(n.a, n.a.s.on_response(variant(183, rseq + 2), n.now))  # gap: discard
        assert len(n.a.requests("PRACK")) == before
        assert len(n.a.events(Provisional)) == 1
        n.apply(n.a, n.a.s.on_response(variant(183, rseq + 1), n.now))  # in order
        n.pump()
        assert len(n.a.requests("PRACK")) == before + 1
        n.apply(n.a, n.a.s.on_response(variant(183, rseq + 2), n.now))  # now in order
        n.pump()
        assert len(n.a.requests("PRACK")) == before + 2
        racks = [parse_rack(p.headers.get("RAck")) for p in n.a.requests("PRACK")]
        assert [r.rseq for r in racks if r] == [rseq, rseq + 1, rseq + 2]

    def test_offer_in_reliable_1xx_answered_in_prack(self) -> None:
        n = Net()
        n.invite(None)
        n.call(n.b, lambda: n.b.s.provisional(183, n.now, sdp=ANSWER, reliable=True))
        [offer] = n.a.events(OfferReceived)
        assert offer.sdp == ANSWER  # type: ignore[attr-defined]
        assert not n.a.requests("PRACK")  # held until the app answers
        n.call(n.a, lambda: n.a.s.accept_offer(OFFER, n.now))
        [prack] = n.a.requests("PRACK")
        assert prack.body == OFFER and prack.headers.get("Content-Type") == "application/sdp"
        [ans] = n.b.events(AnswerReceived)
        assert ans.method == "PRACK" and ans.sdp == OFFER  # type: ignore[attr-defined]
        n.call(n.b, lambda: n.b.s.answer(None, n.now))
        assert n.b.responses(200, "INVITE")[0].body == b""
        assert n.a.s.state is SessionState.CONFIRMED and n.b.s.state is SessionState.CONFIRMED
        assert n.a.s.local_sdp == OFFER and n.b.s.local_sdp == ANSWER

    def test_reliable_1xx_without_to_tag_treated_as_unreliable(self) -> None:
        n = Net()
        n.invite()
        invite = n.b.received[0]
        assert isinstance(invite, Request)
        from switch.sip.message import make_response

        resp = make_response(invite, 180, None, headers=[("Require", "100rel"), ("RSeq", "1")])
        effects = n.a.s.on_response(resp, n.now)
        assert [e for e in effects if isinstance(e, Provisional)]
        assert not [e for e in effects if isinstance(e, SendRequest)]


def _reprack(n: Net) -> list[object]:
    """What the UAC's PRACK client transaction would do: send the same PRACK again."""
    prack = n.a.requests("PRACK")[-1]
    n._send_request(n.a, prack)
    n.pump()
    return []


@pytest.mark.parametrize("status", [180, 183])
def test_reliable_provisional_carries_contact_and_tag(status: int) -> None:
    n = Net()
    n.invite()
    n.call(n.b, lambda: n.b.s.provisional(status, n.now, reliable=True))
    r = n.b.responses(status)[0]
    assert r.to.tag and r.contacts
