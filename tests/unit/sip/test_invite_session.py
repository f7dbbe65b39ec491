"""RFC 3261 §13–§15 call flows between two INVITE sessions on a virtual network (see
``test_invite_session_kit``): every message is serialised and parsed on the way."""

from __future__ import annotations

import random

import pytest

from switch.sip.invite_session import (
    Answered,
    AnswerReceived,
    Confirmed,
    EarlyMedia,
    Ended,
    EndReason,
    Failed,
    InfoReceived,
    InviteSession,
    OfferReceived,
    OfferRejected,
    Provisional,
    SendAck,
    SendRequest,
    SendResponse,
    SessionConfig,
    SessionError,
    SessionState,
    StartTimer,
    TimerKey,
)
from switch.sip.message import Request
from switch.sip.parser import parse_message
from switch.sip.session_timer import SessionTimerConfig

from .test_invite_session_kit import Net, endpoint

OFFER = b"v=0 offer-a\r\n"
ANSWER = b"v=0 answer-b\r\n"


def connected(**kw: object) -> Net:
    n = Net(**kw)  # type: ignore[arg-type]
    n.invite(OFFER)
    n.call(n.b, lambda: n.b.s.provisional(180, n.now))
    n.call(n.b, lambda: n.b.s.answer(ANSWER, n.now))
    assert n.a.s.state is SessionState.CONFIRMED
    assert n.b.s.state is SessionState.CONFIRMED
    return n


def terminal(side_events: list[object]) -> list[object]:
    return [e for e in side_events if isinstance(e, Failed | Ended)]


class TestBasicCall:
    def test_uac_and_uas_full_flow(self) -> None:
        n = Net()
        n.invite(OFFER)
        assert n.a.s.state is SessionState.CALLING
        assert n.b.s.state is SessionState.INCOMING
        assert n.b.s.remote_offer == OFFER

        n.call(n.b, lambda: n.b.s.provisional(180, n.now))
        assert n.a.s.state is SessionState.EARLY and n.b.s.state is SessionState.EARLY
        assert isinstance(n.a.events()[0], Provisional)

        n.call(n.b, lambda: n.b.s.answer(ANSWER, n.now))
        answered = n.a.events(Answered)
        assert len(answered) == 1 and answered[0].sdp == ANSWER  # type: ignore[attr-defined]
        assert n.b.events(Confirmed)
        assert n.a.s.local_sdp == OFFER and n.a.s.remote_sdp == ANSWER
        assert n.b.s.local_sdp == ANSWER and n.b.s.remote_sdp == OFFER
        assert n.a.s.dialog_id is not None and n.b.s.dialog_id is not None
        assert n.a.s.dialog_id.local_tag == n.b.s.dialog_id.remote_tag
        assert n.a.s.dialog_id.remote_tag == n.b.s.dialog_id.local_tag
        # the ACK carries the INVITE's CSeq number (§13.2.2.4)
        ack = n.a.acks_sent[0]
        assert ack.cseq.seq == n.a.requests("INVITE")[0].cseq.seq

        n.advance(5)
        n.call(n.a, lambda: n.a.s.bye(n.now))
        assert n.a.s.state is SessionState.TERMINATED
        assert n.b.s.state is SessionState.TERMINATED
        assert terminal(n.a.events()) == [Ended(EndReason.BYE_SENT)]
        assert terminal(n.b.events()) == [Ended(EndReason.BYE_RECEIVED)]
        assert n.a.timers == {} and n.b.timers == {}

    def test_callee_hangs_up(self) -> None:
        n = connected()
        n.advance(1)
        n.call(n.b, lambda: n.b.s.bye(n.now))
        bye = n.b.requests("BYE")[0]
        assert bye.from_.tag == n.b.s.dialog_id.local_tag  # type: ignore[union-attr]
        assert bye.cseq.method == "BYE"
        assert terminal(n.a.events()) == [Ended(EndReason.BYE_RECEIVED)]
        assert n.a.s.terminated and n.b.s.terminated

    def test_uas_final_failure_reaches_uac_as_failed(self) -> None:
        n = Net()
        n.invite()
        n.call(n.b, lambda: n.b.s.reject(486, n.now))
        assert terminal(n.b.events()) == [Ended(EndReason.REJECTED, 486)]
        [failed] = terminal(n.a.events())
        assert isinstance(failed, Failed) and failed.status == 486
        assert n.a.s.terminated and n.b.s.terminated

    def test_unreliable_183_with_sdp_is_early_media_preview(self) -> None:
        n = Net()
        n.invite()
        n.call(n.b, lambda: n.b.s.provisional(183, n.now, sdp=ANSWER))
        [em] = n.a.events(EarlyMedia)
        assert em.sdp == ANSWER  # type: ignore[attr-defined]
        # not an answer yet (RFC 3261 §13.2.1: only a reliable response or the 2xx)
        assert n.a.s.remote_sdp is None
        n.call(n.b, lambda: n.b.s.answer(ANSWER, n.now))
        assert n.a.s.remote_sdp == ANSWER

    def test_offerless_invite_offer_in_2xx_answer_in_ack(self) -> None:
        n = Net()
        n.invite(None)
        assert n.b.s.remote_offer is None
        n.call(n.b, lambda: n.b.s.answer(ANSWER, n.now))  # our offer
        assert n.a.s.state is SessionState.CONNECTING  # ACK held for the answer
        assert n.a.events(Answered)[0].sdp is None  # type: ignore[attr-defined]
        [offer] = n.a.events(OfferReceived)
        assert offer.sdp == ANSWER  # type: ignore[attr-defined]
        assert not n.a.acks_sent
        n.call(n.a, lambda: n.a.s.accept_offer(OFFER, n.now))
        assert n.a.acks_sent[0].body == OFFER
        assert n.a.s.state is SessionState.CONFIRMED
        assert n.b.events(AnswerReceived)[0].sdp == OFFER  # type: ignore[attr-defined]
        assert n.b.s.remote_sdp == OFFER

    def test_uas_answer_needs_sdp_when_invite_had_offer(self) -> None:
        n = Net()
        n.invite()
        with pytest.raises(SessionError):
            n.b.s.answer(None, n.now)
        with pytest.raises(SessionError):
            n.b.s.provisional(100, n.now)


class TestCancel:
    def test_cancel_after_provisional_gives_487(self) -> None:
        n = Net()
        n.invite()
        n.call(n.b, lambda: n.b.s.provisional(180, n.now))
        n.call(n.a, lambda: n.a.s.cancel(n.now))
        cancel = next(m for m in n.a.sent if isinstance(m, Request) and m.method == "CANCEL")
        invite = n.a.requests("INVITE")[0]
        # §9.1: same Request-URI, Call-ID, From, To, CSeq number and top Via as the INVITE
        assert cancel.uri == invite.uri and cancel.call_id == invite.call_id
        assert cancel.cseq.seq == invite.cseq.seq and cancel.cseq.method == "CANCEL"
        assert cancel.headers.get("Via") == invite.headers.get("Via")
        assert cancel.to.tag is None
        assert n.b.responses(487, "INVITE")
        assert terminal(n.b.events()) == [Ended(EndReason.CANCELLED, 487)]
        [failed] = terminal(n.a.events())
        assert isinstance(failed, Failed) and failed.status == 487

    def test_cancel_before_any_provisional_waits_for_one(self) -> None:
        n = Net()
        n.invite()
        n.call(n.a, lambda: n.a.s.cancel(n.now))
        assert not [m for m in n.a.sent if isinstance(m, Request) and m.method == "CANCEL"]
        n.call(n.b, lambda: n.b.s.provisional(180, n.now))
        assert [m for m in n.a.sent if isinstance(m, Request) and m.method == "CANCEL"]
        assert n.a.s.terminated

    def test_2xx_crossing_cancel_is_acked_and_byed(self) -> None:
        n = Net(drop=lambda m: isinstance(m, Request) and m.method == "CANCEL")
        n.invite()
        n.call(n.b, lambda: n.b.s.provisional(180, n.now))
        n.call(n.a, lambda: n.a.s.cancel(n.now))
        n.call(n.b, lambda: n.b.s.answer(ANSWER, n.now))
        assert n.a.acks_sent and n.a.requests("BYE")
        [failed] = terminal(n.a.events())
        assert isinstance(failed, Failed) and failed.status == 487
        assert n.b.s.terminated and n.a.s.terminated

    def test_no_final_after_cancel_ends_after_64_t1(self) -> None:
        n = Net(drop=lambda m: isinstance(m, Request) and m.method == "CANCEL")
        n.invite()
        n.call(n.b, lambda: n.b.s.provisional(180, n.now))
        n.call(n.a, lambda: n.a.s.cancel(n.now))
        n.advance(31.9)
        assert not n.a.s.terminated
        n.advance(0.2)
        assert n.a.s.terminated
        assert isinstance(terminal(n.a.events())[0], Failed)


class Test2xxRetransmission:
    def test_2xx_retransmitted_t1_doubling_to_t2_until_ack(self) -> None:
        # drop the ACKs: the UAS retransmits the 2xx at 0.5, 1, 2, 4, 4, 4 ... (§13.3.1.4)
        n = Net(drop=lambda m: isinstance(m, Request) and m.method == "ACK")
        n.invite()
        n.call(n.b, lambda: n.b.s.answer(ANSWER, n.now))
        times = []
        for _ in range(80):
            before = len(n.b.responses(200, "INVITE"))
            n.advance(0.25)
            if len(n.b.responses(200, "INVITE")) > before:
                times.append(n.now)
        assert times[:7] == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5]
        # each retransmitted 2xx is re-ACKed by the UAC (the ACKs are lost on the way)
        assert len(n.a.acks_sent) == 1 + len(times)
        assert n.a.acks_sent[0].to_bytes() == n.a.acks_sent[-1].to_bytes()

    def test_ack_timeout_sends_bye(self) -> None:
        n = Net(drop=lambda m: isinstance(m, Request) and m.method == "ACK")
        n.invite()
        n.call(n.b, lambda: n.b.s.answer(ANSWER, n.now))
        n.advance(31.9)
        assert n.b.s.state is SessionState.CONNECTING
        n.advance(0.2)  # 64*T1 = 32 s
        assert terminal(n.b.events()) == [Ended(EndReason.ACK_TIMEOUT)]
        assert n.b.requests("BYE")
        assert n.a.s.terminated and n.b.s.terminated

    def test_ack_stops_retransmission(self) -> None:
        n = connected()
        assert TimerKey.RETRANSMIT_2XX not in n.b.timers
        assert TimerKey.ACK_WAIT not in n.b.timers
        count = len(n.b.responses(200, "INVITE"))
        n.advance(10)
        assert len(n.b.responses(200, "INVITE")) == count

    def test_session_retransmission_can_be_left_to_the_transaction_layer(self) -> None:
        cfg = SessionConfig(local=endpoint("bob", "10.0.0.2"), retransmit_2xx=False)
        n = Net(b_cfg=cfg, drop=lambda m: isinstance(m, Request) and m.method == "ACK")
        n.invite()
        n.call(n.b, lambda: n.b.s.answer(ANSWER, n.now))
        n.advance(10)
        assert len(n.b.responses(200, "INVITE")) == 1
        n.call(n.b, lambda: n.b.s.on_ack_not_received(n.now))
        assert terminal(n.b.events()) == [Ended(EndReason.ACK_TIMEOUT)]

    def test_uas_bye_before_ack_waits_for_ack(self) -> None:
        n = Net(drop=lambda m: isinstance(m, Request) and m.method == "ACK")
        n.invite()
        n.call(n.b, lambda: n.b.s.answer(ANSWER, n.now))
        n.call(n.b, lambda: n.b.s.bye(n.now))
        assert not n.b.requests("BYE")  # §15: not before the ACK (or its timeout)
        n.drop = lambda m: False
        n.advance(0.6)  # the retransmitted 2xx is ACKed this time
        assert n.b.requests("BYE")
        assert terminal(n.b.events()) == [Ended(EndReason.BYE_SENT)]


class TestReInvite:
    def test_reinvite_with_offer(self) -> None:
        n = connected()
        n.call(n.a, lambda: n.a.s.reinvite(b"v=0 hold\r\n", n.now))
        [offer] = n.b.events(OfferReceived)
        assert offer.sdp == b"v=0 hold\r\n" and offer.method == "INVITE"  # type: ignore[attr-defined]
        n.call(n.b, lambda: n.b.s.accept_offer(b"v=0 held\r\n", n.now))
        [ans] = n.a.events(AnswerReceived)
        assert ans.sdp == b"v=0 held\r\n"  # type: ignore[attr-defined]
        assert n.a.s.local_sdp == b"v=0 hold\r\n" and n.a.s.remote_sdp == b"v=0 held\r\n"
        assert n.b.s.local_sdp == b"v=0 held\r\n"
        reinv = n.a.requests("INVITE")[1]
        assert reinv.cseq.seq == n.a.requests("INVITE")[0].cseq.seq + 1
        assert reinv.to.tag == n.a.s.dialog_id.remote_tag  # type: ignore[union-attr]
        assert len(n.a.acks_sent) == 2 and n.a.acks_sent[1].cseq.seq == reinv.cseq.seq
        assert n.b.s.state is SessionState.CONFIRMED

    def test_reinvite_without_sdp_offer_in_2xx_answer_in_ack(self) -> None:
        n = connected()
        n.call(n.a, lambda: n.a.s.reinvite(None, n.now))
        # the UAS offers what is in force; the UAC gets the offer and answers in the ACK
        [offer] = n.a.events(OfferReceived)
        assert offer.sdp == ANSWER  # type: ignore[attr-defined]
        n.call(n.a, lambda: n.a.s.accept_offer(b"v=0 new-answer\r\n", n.now))
        assert n.a.acks_sent[-1].body == b"v=0 new-answer\r\n"
        [ans] = n.b.events(AnswerReceived)
        assert ans.method == "ACK"  # type: ignore[attr-defined]
        assert n.b.s.remote_sdp == b"v=0 new-answer\r\n"
        # the session is free for the next exchange
        n.call(n.b, lambda: n.b.s.reinvite(b"v=0 third\r\n", n.now))
        assert len(n.a.events(OfferReceived)) == 2

    def test_rejected_reinvite_keeps_previous_sdp(self) -> None:
        n = connected()
        n.call(n.a, lambda: n.a.s.reinvite(b"v=0 video\r\n", n.now))
        n.call(n.b, lambda: n.b.s.reject_offer(n.now))
        [rej] = n.a.events(OfferRejected)
        assert rej.status == 488  # type: ignore[attr-defined]
        assert n.a.s.local_sdp == OFFER and n.a.s.remote_sdp == ANSWER
        assert n.b.s.local_sdp == ANSWER and n.b.s.remote_sdp == OFFER
        assert n.a.s.state is SessionState.CONFIRMED
        n.call(n.a, lambda: n.a.s.reinvite(b"v=0 again\r\n", n.now))  # not stuck

    def test_reinvite_while_busy_is_a_caller_error(self) -> None:
        n = connected()
        n.call(n.a, lambda: n.a.s.reinvite(b"v=0 x\r\n", n.now))
        with pytest.raises(SessionError):
            n.a.s.reinvite(b"v=0 y\r\n", n.now)

    def test_target_refresh_by_reinvite(self) -> None:
        n = connected()
        moved = SessionConfig(local=endpoint("alice", "10.9.9.9", 5080))
        n.a.s.config = moved
        assert n.a.s.dialog is not None
        n.a.s.dialog.local = moved.local
        n.call(n.a, lambda: n.a.s.reinvite(b"v=0 moved\r\n", n.now))
        n.call(n.b, lambda: n.b.s.accept_offer(b"v=0 ok\r\n", n.now))
        assert n.b.s.dialog is not None
        assert str(n.b.s.dialog.remote_target) == "sip:alice@10.9.9.9:5080"
        n.call(n.b, lambda: n.b.s.bye(n.now))
        assert str(n.b.requests("BYE")[0].uri) == "sip:alice@10.9.9.9:5080"


class TestGlare:
    def glare(self, a_seed: int = 7, b_seed: int = 9) -> Net:
        """Both sides send a re-INVITE at the same time: each gets 491 (§14.2)."""
        n = connected()
        n.a.s._rng = random.Random(a_seed)
        n.b.s._rng = random.Random(b_seed)
        ea = n.a.s.reinvite(b"v=0 a2\r\n", n.now)
        eb = n.b.s.reinvite(b"v=0 b2\r\n", n.now)
        n.apply(n.a, ea)
        n.apply(n.b, eb)
        n.pump()
        return n

    def test_both_get_491_and_retry_after_their_backoff(self) -> None:
        n = self.glare()
        assert n.a.responses(491, "INVITE") and n.b.responses(491, "INVITE")
        # §14.1: the Call-ID owner (the caller) waits 2.1..4 s, the other side 0..2 s
        ta = n.a.timers[TimerKey.GLARE_RETRY]
        tb = n.b.timers[TimerKey.GLARE_RETRY]
        assert 2.1 <= ta <= 4.0
        assert 0.0 <= tb <= 2.0
        expected_a = 2.1 + random.Random(7).randint(0, 190) / 100
        assert ta == pytest.approx(expected_a)
        n.advance(5)
        # b retried first (at tb) and got through; a, owing b an answer, holds its retry
        assert len(n.b.requests("INVITE")) == 2 and len(n.a.requests("INVITE")) == 2
        assert [e.sdp for e in n.a.events(OfferReceived)] == [b"v=0 b2\r\n"]  # type: ignore[attr-defined]
        n.call(n.a, lambda: n.a.s.accept_offer(b"v=0 a-answers-b\r\n", n.now))
        n.advance(5)
        assert len(n.a.requests("INVITE")) == 3
        assert [e.sdp for e in n.b.events(OfferReceived)] == [b"v=0 a2\r\n"]  # type: ignore[attr-defined]

    def test_reinvite_received_while_incoming_one_unanswered_gets_500(self) -> None:
        n = connected()
        n.call(n.a, lambda: n.a.s.reinvite(b"v=0 x\r\n", n.now))
        # a second INVITE arriving while b still owes the answer (§14.2 → 500 + Retry-After)
        inv = n.a.requests("INVITE")[-1]
        second = parse_message(inv.to_bytes().replace(
            f"CSeq: {inv.cseq.seq} INVITE".encode(), f"CSeq: {inv.cseq.seq + 1} INVITE".encode())
            .replace(b"z9hG4bK", b"z9hG4bKdup"))
        assert isinstance(second, Request)
        effects = n.b.s.on_request(second, "txn-2", n.now)
        [resp] = [e for e in effects if isinstance(e, SendResponse)]
        assert resp.response.status == 500
        retry_after = resp.response.headers.get("Retry-After")
        assert retry_after is not None and 0 <= int(retry_after) <= 10


class TestInDialogRequests:
    def test_info_both_ways(self) -> None:
        n = connected()
        n.call(n.a, lambda: n.a.s.info("application/dtmf-relay", b"Signal=5\r\n", n.now))
        [info] = n.b.events(InfoReceived)
        assert info.request.body == b"Signal=5\r\n"  # type: ignore[attr-defined]
        assert info.request.headers.get("Content-Type") == "application/dtmf-relay"  # type: ignore[attr-defined]
        assert n.b.responses(200, "INFO")

    def test_request_for_unknown_dialog_gets_481(self) -> None:
        n = connected()
        bye = n.a.s.dialog.create_request("BYE")  # type: ignore[union-attr]
        wrong = parse_message(bye.to_bytes().replace(
            n.a.s.dialog_id.local_tag.encode(), b"not-a-tag"))  # type: ignore[union-attr]
        assert isinstance(wrong, Request)
        effects = n.b.s.on_request(wrong, "t", n.now)
        assert [e.response.status for e in effects if isinstance(e, SendResponse)] == [481]
        assert n.b.s.state is SessionState.CONFIRMED

    def test_lower_cseq_gets_500(self) -> None:
        n = connected()
        n.call(n.a, lambda: n.a.s.info("text/plain", b"1", n.now))
        d = n.a.s.dialog
        assert d is not None
        d.local_seq = 0  # next request goes out with a lower CSeq than the last one
        old = d.create_request("INFO", body=b"2", content_type="text/plain")
        effects = n.b.s.on_request(parse_message(old.to_bytes()), "t", n.now)  # type: ignore[arg-type]
        assert [e.response.status for e in effects if isinstance(e, SendResponse)] == [500]

    def test_481_to_in_dialog_request_ends_the_session(self) -> None:
        n = connected()
        # b forgets the call silently (e.g. restarted); a's next request gets 481
        n.b.session = InviteSession.uac(SessionConfig(local=endpoint("x", "10.0.0.3")))
        n.b.session.state = SessionState.TERMINATED
        n.call(n.a, lambda: n.a.s.info("text/plain", b"hi", n.now))
        assert terminal(n.a.events()) == [Ended(EndReason.DIALOG_GONE, 481)]
        assert n.a.s.terminated

    def test_bye_timeout_still_terminates(self) -> None:
        n = connected()
        n.drop = lambda m: isinstance(m, Request) and m.method == "BYE"
        n.call(n.a, lambda: n.a.s.bye(n.now))
        assert n.a.s.state is SessionState.TERMINATING
        n.advance(40)
        assert n.a.s.terminated
        assert terminal(n.a.events()) == [Ended(EndReason.BYE_SENT)]


class TestForking:
    def test_second_2xx_from_another_fork_is_acked_and_byed(self) -> None:
        n = connected()
        ok = n.b.responses(200, "INVITE")[0]
        fork = parse_message(ok.to_bytes().replace(
            n.b.s.dialog_id.local_tag.encode(), b"fork2tag"))  # type: ignore[union-attr]
        effects = n.a.s.on_response(fork, n.now)  # type: ignore[arg-type]
        acks = [e for e in effects if isinstance(e, SendAck)]
        byes = [e for e in effects if isinstance(e, SendRequest) and e.request.method == "BYE"]
        assert len(acks) == 1 and acks[0].request.to.tag == "fork2tag"
        assert len(byes) == 1 and byes[0].request.to.tag == "fork2tag"
        assert n.a.s.state is SessionState.CONFIRMED  # the first fork's call goes on

    def test_early_dialogs_from_two_forks(self) -> None:
        n = Net()
        n.invite()
        n.call(n.b, lambda: n.b.s.provisional(180, n.now))
        ringing = n.b.responses(180)[0]
        fork = parse_message(ringing.to_bytes().replace(
            n.b.s.dialog_id.local_tag.encode(), b"fork2tag"))  # type: ignore[union-attr]
        n.apply(n.a, n.a.s.on_response(fork, n.now))  # type: ignore[arg-type]
        assert len(n.a.events(Provisional)) == 2
        n.call(n.b, lambda: n.b.s.answer(ANSWER, n.now))
        assert n.a.s.state is SessionState.CONFIRMED
        assert n.a.s.dialog_id.remote_tag == n.b.s.dialog_id.local_tag  # type: ignore[union-attr]


def test_no_timer_effect_without_deadline_in_the_future() -> None:
    n = connected()
    starts = [e for e in n.a.effects + n.b.effects if isinstance(e, StartTimer)]
    assert all(e.deadline >= 0 for e in starts)


def test_session_timer_disabled_sends_no_timer_headers() -> None:
    cfg = SessionConfig(local=endpoint("alice", "10.0.0.1"),
                        timer=SessionTimerConfig(enabled=False))
    n = Net(a_cfg=cfg)
    n.invite()
    inv = n.a.requests("INVITE")[0]
    assert inv.headers.get("Session-Expires") is None
    assert "timer" not in inv.supported


class TestRobustness:
    def test_retransmitted_reinvite_2xx_is_acked_again(self) -> None:
        lost = {"n": 0}

        def drop(m: object) -> bool:
            # lose the first ACK of the re-INVITE only
            if isinstance(m, Request) and m.method == "ACK" and m.cseq.seq > 1 and not lost["n"]:
                lost["n"] = 1
                return True
            return False

        n = connected(drop=drop)
        n.call(n.a, lambda: n.a.s.reinvite(b"v=0 x\r\n", n.now))
        n.call(n.b, lambda: n.b.s.accept_offer(b"v=0 y\r\n", n.now))
        assert n.b.s._pending_2xx is not None  # b never saw the ACK
        n.advance(0.6)  # b retransmits its 2xx; a re-sends the same ACK
        assert n.a.acks_sent[-1].to_bytes() == n.a.acks_sent[-2].to_bytes()
        assert n.b.s._pending_2xx is None
        assert TimerKey.ACK_WAIT not in n.b.timers

    def test_2xx_without_to_tag_is_dropped_without_state_change(self) -> None:
        n = Net()
        n.invite()
        invite = n.b.received[0]
        assert isinstance(invite, Request)
        from switch.sip.message import make_response

        bad = make_response(invite, 200, None, headers=[("Contact", "<sip:b@10.0.0.2>")])
        assert n.a.s.on_response(bad, n.now) == []
        assert n.a.s.state is SessionState.CALLING
        n.call(n.a, lambda: n.a.s.bye(n.now))
        n.advance(33)
        assert n.a.s.terminated

    def test_reject_offer_in_reliable_1xx_cancels_the_invite(self) -> None:
        n = Net()
        n.invite(None)
        n.call(n.b, lambda: n.b.s.provisional(183, n.now, sdp=ANSWER, reliable=True))
        effects = n.call(n.a, lambda: n.a.s.reject_offer(n.now))
        assert any(type(e).__name__ == "SendCancel" for e in effects)
        assert n.b.responses(487, "INVITE")
        assert n.a.s.terminated and n.b.s.terminated

    def test_bye_while_answer_to_2xx_offer_is_pending_acks_first(self) -> None:
        n = Net()
        n.invite(None)
        n.call(n.b, lambda: n.b.s.answer(ANSWER, n.now))
        n.call(n.a, lambda: n.a.s.bye(n.now))
        kinds = [m.method for m in n.a.sent if isinstance(m, Request)]
        assert kinds[-2:] == ["ACK", "BYE"]
        assert n.a.s.terminated and n.b.s.terminated

    def test_unanswered_offer_in_2xx_times_out(self) -> None:
        n = Net()
        n.invite(None)
        n.call(n.b, lambda: n.b.s.answer(ANSWER, n.now))
        n.advance(32.1)
        assert n.a.acks_sent and n.a.requests("BYE")
        assert terminal(n.a.events()) == [Ended(EndReason.NEGOTIATION_FAILED)]


class TestDialogIndex:
    def test_requests_and_responses_find_their_session(self) -> None:
        from switch.sip.dialog import DialogIndex

        n = connected()
        index: DialogIndex[InviteSession] = DialogIndex()
        for side in (n.a, n.b):
            assert side.s.call_id and side.s.local_tag
            index.add(side.s.call_id, side.s.local_tag, side.s)
        n.call(n.a, lambda: n.a.s.info("text/plain", b"1", n.now))
        info = n.b.received[-1]
        assert isinstance(info, Request)
        assert index.for_request(info) is n.b.s
        ok = n.a.received[-1]
        assert index.for_response(ok) is n.a.s  # type: ignore[arg-type]
        assert index.for_sent_request(n.a.requests("INFO")[0]) is n.a.s
        stranger = parse_message(info.to_bytes().replace(
            n.b.s.local_tag.encode(), b"unknown"))  # type: ignore[union-attr]
        assert isinstance(stranger, Request)
        assert index.for_request(stranger) is None
        assert DialogIndex.is_in_dialog(stranger)
        assert DialogIndex.no_dialog(stranger).status == 481
        index.remove(n.b.s.call_id, n.b.s.local_tag)  # type: ignore[arg-type]
        assert index.for_request(info) is None and len(index) == 1


class TestInterop:
    def test_bare_2xx_after_unreliable_183_with_sdp_uses_the_183_answer(self) -> None:
        n = Net()
        n.invite(OFFER)
        n.call(n.b, lambda: n.b.s.provisional(183, n.now, sdp=ANSWER))
        ok = parse_message(n.b.s.answer(ANSWER, n.now)[0].response.to_bytes()  # type: ignore[union-attr]
                           .replace(b"Content-Type: application/sdp\r\n", b"")
                           .replace(ANSWER, b"").replace(b"Content-Length: 14", b"Content-Length: 0"))
        n.apply(n.a, n.a.s.on_response(ok, n.now))  # type: ignore[arg-type]
        assert n.a.s.state is SessionState.CONFIRMED
        assert n.a.s.remote_sdp == ANSWER

    def test_multipart_invite_offer_is_the_sdp_part(self) -> None:
        from switch.sip.sdp_offer_state import sdp_of

        body = (b"--unique-boundary-1\r\nContent-Type: application/sdp\r\n\r\nv=0 offer\r\n"
                b"\r\n--unique-boundary-1\r\nContent-Type: application/ISUP;version=itu-t92+\r\n"
                b"Content-Disposition: signal;handling=optional\r\n\r\n\x01\x00\x49\r\n"
                b"--unique-boundary-1--\r\n")
        ctype = 'multipart/mixed; boundary="unique-boundary-1"'
        assert sdp_of(ctype, body) == b"v=0 offer\r\n"
        assert sdp_of("application/sdp", b"v=0\r\n") == b"v=0\r\n"
        assert sdp_of("application/isup", b"\x01") is None
        assert sdp_of(None, b"") is None
        n = Net()
        n.invite(None, extra_headers=[("Content-Type", ctype)])
        n.b.session = None
        # hand b an INVITE whose body is the multipart one
        inv = n.a.requests("INVITE")[0]
        raw = inv.to_bytes().replace(b"Content-Length: 0", f"Content-Length: {len(body)}".encode())
        msg = parse_message(raw + body)
        assert isinstance(msg, Request)
        s, _ = InviteSession.uas(msg, "t", 0.0, n.b_cfg)
        assert s.remote_offer == b"v=0 offer\r\n"


class TestAuthRetry:
    def challenged(self) -> Net:
        cfg = SessionConfig(local=endpoint("alice", "10.0.0.1"), auth_retry=True)
        n = Net(a_cfg=cfg)
        n.invite(OFFER)
        n.call(n.b, lambda: n.b.s.reject(
            407, n.now, headers=[("Proxy-Authenticate", 'Digest realm="gw", nonce="n1"')]))
        return n

    def test_challenge_answered_with_credentials(self) -> None:
        from switch.sip.invite_session import AuthRequired

        n = self.challenged()
        [challenge] = n.a.events(AuthRequired)
        assert challenge.response.status == 407  # type: ignore[attr-defined]
        assert not terminal(n.a.events())
        creds = 'Digest username="alice", realm="gw", nonce="n1", response="abc"'
        n.call(n.a, lambda: n.a.s.authenticate([("Proxy-Authorization", creds)], n.now))
        first, second = n.a.requests("INVITE")
        assert second.cseq.seq == first.cseq.seq + 1
        assert second.call_id == first.call_id and second.from_.tag == first.from_.tag
        assert second.top_via.branch != first.top_via.branch
        assert second.headers.get("Proxy-Authorization") == creds
        assert second.body == OFFER
        n.call(n.b, lambda: n.b.s.answer(ANSWER, n.now))
        assert n.a.s.state is SessionState.CONFIRMED
        assert n.a.acks_sent[0].headers.get("Proxy-Authorization") == creds  # §13.2.2.4

    def test_unanswered_challenge_fails_after_64_t1(self) -> None:
        n = self.challenged()
        n.advance(32.1)
        [failed] = terminal(n.a.events())
        assert isinstance(failed, Failed) and failed.status == 407
        assert n.a.s.terminated and n.a.timers == {}

    def test_bye_during_challenge_fails_at_once(self) -> None:
        n = self.challenged()
        n.call(n.a, lambda: n.a.s.bye(n.now))
        [failed] = terminal(n.a.events())
        assert isinstance(failed, Failed) and failed.status == 407
        assert n.a.s.terminated

    def test_without_auth_retry_a_challenge_is_a_failure(self) -> None:
        n = Net()
        n.invite(OFFER)
        n.call(n.b, lambda: n.b.s.reject(401, n.now))
        [failed] = terminal(n.a.events())
        assert isinstance(failed, Failed) and failed.status == 401


def test_invite_without_contact_gets_400() -> None:
    n = Net()
    n.invite()
    inv = n.b.received[0]
    assert isinstance(inv, Request)
    raw = b"\r\n".join(line for line in inv.to_bytes().split(b"\r\n")
                       if not line.startswith(b"Contact:"))
    msg = parse_message(raw)
    assert isinstance(msg, Request)
    s, effects = InviteSession.uas(msg, "t", 0.0, n.b_cfg)
    assert [e.response.status for e in effects if isinstance(e, SendResponse)] == [400]
    assert s.terminated


def test_bye_carries_reason_header_and_peer_capabilities_are_known() -> None:
    n = connected()
    assert "update" in n.a.s.peer_allow and "timer" in n.a.s.peer_supported
    assert "update" in n.b.s.peer_allow and "100rel" in n.b.s.peer_supported
    n.call(n.a, lambda: n.a.s.bye(n.now, headers=[("Reason", "Q.850;cause=16")]))
    assert n.a.requests("BYE")[0].headers.get("Reason") == "Q.850;cause=16"
