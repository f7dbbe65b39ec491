"""RFC 3311 UPDATE in early and confirmed dialogs, with the §5.2 491 / 500 rules."""

from __future__ import annotations

import random

import pytest

from switch.sip.invite_session import (
    AnswerReceived,
    OfferReceived,
    OfferRejected,
    SendResponse,
    SessionError,
    SessionState,
    TimerKey,
)
from switch.sip.message import Request
from switch.sip.parser import parse_message

from .test_invite_session_kit import Net

OFFER = b"v=0 offer-a\r\n"
ANSWER = b"v=0 answer-b\r\n"


def connected() -> Net:
    n = Net()
    n.invite(OFFER)
    n.call(n.b, lambda: n.b.s.answer(ANSWER, n.now))
    return n


def inject_update(n: Net, body: bytes) -> list[int]:
    """An UPDATE with an offer from a, handed to b directly (bypassing a's own checks)."""
    d = n.a.s.dialog
    assert d is not None
    req = d.create_request("UPDATE", body=body, content_type="application/sdp")
    msg = parse_message(req.to_bytes())
    assert isinstance(msg, Request)
    effects = n.b.s.on_request(msg, "txn-u", n.now)
    return [e.response.status for e in effects if isinstance(e, SendResponse)]


class TestConfirmedDialog:
    def test_update_offer_answer(self) -> None:
        n = connected()
        n.call(n.a, lambda: n.a.s.update(b"v=0 u1\r\n", n.now))
        [offer] = n.b.events(OfferReceived)
        assert offer.method == "UPDATE" and offer.sdp == b"v=0 u1\r\n"  # type: ignore[attr-defined]
        n.call(n.b, lambda: n.b.s.accept_offer(b"v=0 u1-ans\r\n", n.now))
        [ok] = n.b.responses(200, "UPDATE")
        assert ok.body == b"v=0 u1-ans\r\n" and ok.contacts
        [ans] = n.a.events(AnswerReceived)
        assert ans.method == "UPDATE"  # type: ignore[attr-defined]
        assert n.a.s.local_sdp == b"v=0 u1\r\n" and n.a.s.remote_sdp == b"v=0 u1-ans\r\n"

    def test_update_rejected_keeps_old_sdp(self) -> None:
        n = connected()
        n.call(n.a, lambda: n.a.s.update(b"v=0 u1\r\n", n.now))
        n.call(n.b, lambda: n.b.s.reject_offer(n.now))
        [rej] = n.a.events(OfferRejected)
        assert rej.status == 488 and rej.method == "UPDATE"  # type: ignore[attr-defined]
        assert n.a.s.local_sdp == OFFER and n.b.s.local_sdp == ANSWER

    def test_update_without_sdp_answered_at_once(self) -> None:
        n = connected()
        n.call(n.a, lambda: n.a.s.update(None, n.now))
        assert n.b.responses(200, "UPDATE")
        assert not n.b.events(OfferReceived)

    def test_update_with_offer_while_our_offer_pending_gets_491(self) -> None:
        n = connected()
        # b has sent an offer (re-INVITE) not yet answered; a's UPDATE offer arrives
        n.drop = lambda m: isinstance(m, Request) and m.method == "INVITE"
        n.call(n.b, lambda: n.b.s.reinvite(b"v=0 b-offer\r\n", n.now))
        assert inject_update(n, b"v=0 a-offer\r\n") == [491]

    def test_update_with_offer_while_we_owe_an_answer_gets_500_retry_after(self) -> None:
        n = connected()
        n.call(n.a, lambda: n.a.s.reinvite(b"v=0 a-offer\r\n", n.now))
        assert n.b.events(OfferReceived)  # b owes the answer
        d = n.a.s.dialog
        assert d is not None
        req = d.create_request("UPDATE", body=b"v=0 second\r\n", content_type="application/sdp")
        msg = parse_message(req.to_bytes())
        assert isinstance(msg, Request)
        effects = n.b.s.on_request(msg, "txn-u", n.now)
        [resp] = [e.response for e in effects if isinstance(e, SendResponse)]
        assert resp.status == 500
        assert 0 <= int(resp.headers.get("Retry-After") or "-1") <= 10

    def test_simultaneous_updates_both_491_then_backoff(self) -> None:
        n = connected()
        n.a.s._rng = random.Random(3)
        n.b.s._rng = random.Random(4)
        n.apply(n.a, n.a.s.update(b"v=0 a\r\n", n.now))
        n.apply(n.b, n.b.s.update(b"v=0 b\r\n", n.now))
        n.pump()
        assert n.a.responses(491, "UPDATE") and n.b.responses(491, "UPDATE")
        assert TimerKey.GLARE_RETRY in n.a.timers and TimerKey.GLARE_RETRY in n.b.timers
        n.advance(2.05)  # b (not the Call-ID owner) retries within 0..2 s
        assert len(n.b.requests("UPDATE")) == 2
        assert len(n.a.requests("UPDATE")) == 1

    def test_update_needs_idle_offer_state(self) -> None:
        n = connected()
        n.call(n.a, lambda: n.a.s.update(b"v=0 u1\r\n", n.now))
        with pytest.raises(SessionError):
            n.a.s.update(b"v=0 u2\r\n", n.now)


class TestEarlyDialog:
    def test_update_in_early_dialog_after_reliable_exchange(self) -> None:
        n = Net()
        n.invite(OFFER)
        n.call(n.b, lambda: n.b.s.provisional(183, n.now, sdp=ANSWER, reliable=True))
        assert n.a.s.state is SessionState.EARLY
        # the initial exchange completed in the 183: the caller may UPDATE the early session
        n.call(n.a, lambda: n.a.s.update(b"v=0 early-u\r\n", n.now))
        [offer] = n.b.events(OfferReceived)
        assert offer.method == "UPDATE"  # type: ignore[attr-defined]
        n.call(n.b, lambda: n.b.s.accept_offer(b"v=0 early-ans\r\n", n.now))
        assert n.a.events(AnswerReceived)
        n.call(n.b, lambda: n.b.s.answer(None, n.now))
        assert n.a.s.state is SessionState.CONFIRMED
        assert n.a.s.remote_sdp == b"v=0 early-ans\r\n"
        assert n.b.s.local_sdp == b"v=0 early-ans\r\n"

    def test_update_offer_before_initial_exchange_completes_gets_500(self) -> None:
        n = Net()
        n.invite(OFFER)
        n.call(n.b, lambda: n.b.s.provisional(180, n.now, reliable=True))
        # b still owes the answer to the INVITE's offer
        leg = n.a.s.dialog
        assert leg is not None
        req = leg.create_request("UPDATE", body=b"v=0 x\r\n", content_type="application/sdp")
        msg = parse_message(req.to_bytes())
        assert isinstance(msg, Request)
        effects = n.b.s.on_request(msg, "t", n.now)
        assert [e.response.status for e in effects if isinstance(e, SendResponse)] == [500]

    def test_uac_cannot_offer_in_update_before_the_answer(self) -> None:
        n = Net()
        n.invite(OFFER)
        n.call(n.b, lambda: n.b.s.provisional(180, n.now))
        with pytest.raises(SessionError):
            n.a.s.update(b"v=0 x\r\n", n.now)


class TestEarlyFailures:
    def test_update_timeout_in_early_dialog_cancels_our_invite(self) -> None:
        n = Net()
        n.invite(OFFER)
        n.call(n.b, lambda: n.b.s.provisional(183, n.now, sdp=ANSWER, reliable=True))
        n.drop = lambda m: isinstance(m, Request) and m.method == "UPDATE"
        n.call(n.a, lambda: n.a.s.update(None, n.now))
        n.advance(33)  # the UPDATE transaction times out (Timer F stand-in)
        assert any(isinstance(m, Request) and m.method == "CANCEL" for m in n.a.sent)
        assert n.a.s.terminated and n.b.s.terminated
        assert n.b.responses(487, "INVITE")

    def test_481_to_uas_update_in_early_dialog_still_answers_the_invite(self) -> None:
        n = Net()
        n.invite(OFFER)
        n.call(n.b, lambda: n.b.s.provisional(183, n.now, sdp=ANSWER, reliable=True))
        n.a.s.state = SessionState.TERMINATED  # the caller forgot the call: it answers 481
        n.call(n.b, lambda: n.b.s.update(None, n.now))
        assert n.a.responses(481, "UPDATE")
        finals = [r for r in n.b.responses() if r.cseq.method == "INVITE" and r.status >= 200]
        assert [r.status for r in finals] == [480]
        assert n.b.s.terminated
