"""The transaction layer: matching (§17.1.3, §17.2.3 incl. RFC 2543), retransmission
absorption, CANCEL (§9.2), merged requests (§8.2.2.2), 2xx retransmission until ACK
(§13.3.1.4), timers through ``next_deadline``/``advance``, stray responses. Virtual time."""

from __future__ import annotations

import pytest

from switch.sip.addressing import Peer, stamp_via_received
from switch.sip.message import Request, Response, make_response
from switch.sip.parser import parse_message
from switch.sip.timers import TimerSettings
from switch.sip.transaction import (
    ClientInviteState,
    ClientInviteTransaction,
    ClientNonInviteTransaction,
    ServerInviteState,
    ServerInviteTransaction,
    ServerNonInviteTransaction,
)
from switch.sip.transaction_layer import (
    AckNotReceived,
    CancelReceived,
    FailureReason,
    LayerEvent,
    NewRequest,
    OutgoingMessage,
    ResponseReceived,
    ServerTransactionFailed,
    StrayResponse,
    TransactionLayer,
    TransactionTerminated,
    TransactionTimedOut,
)
from tests.paths import CONFORMANCE
from tests.unit.sip.test_transaction_support import (
    UAC,
    UAC_TCP,
    UAS,
    UAS_TCP,
    ack_for,
    request,
    response_to,
)


def _layer() -> TransactionLayer:
    tags = iter(f"tag{i}" for i in range(1000))
    return TransactionLayer(TimerSettings(), retransmit_2xx=True, tag_factory=lambda: next(tags))


def sent(events: list[LayerEvent]) -> list[str]:
    out = []
    for e in events:
        if isinstance(e, OutgoingMessage):
            m = e.message
            out.append(m.method if isinstance(m, Request) else str(m.status))
    return out


def kinds(events: list[LayerEvent]) -> list[str]:
    return [type(e).__name__ for e in events]


def run_until(layer: TransactionLayer, until: float) -> list[tuple[float, LayerEvent]]:
    """Let virtual time pass: call ``advance`` at every ``next_deadline`` up to ``until``."""
    log: list[tuple[float, LayerEvent]] = []
    while (d := layer.next_deadline()) is not None and d <= until:
        log.extend((d, e) for e in layer.advance(d))
    return log


def receive(layer: TransactionLayer, msg: Request | Response, source: Peer, now: float
            ) -> list[LayerEvent]:
    if isinstance(msg, Request):
        msg = stamp_via_received(msg, source)
    return layer.receive(msg, source, now)


def new_server(layer: TransactionLayer, req: Request, source: Peer = UAC, now: float = 0.0
               ) -> tuple[ServerInviteTransaction | ServerNonInviteTransaction, list[LayerEvent]]:
    events = receive(layer, req, source, now)
    new = [e for e in events if isinstance(e, NewRequest)]
    assert len(new) == 1 and new[0].server_txn is not None
    return new[0].server_txn, events


# ============================================================ server side: new requests


def test_a_new_invite_gets_100_trying_and_goes_to_the_tu() -> None:
    layer = _layer()
    inv = request("INVITE")
    txn, events = new_server(layer, inv)
    assert kinds(events) == ["OutgoingMessage", "NewRequest"]
    assert sent(events) == ["100"]
    assert isinstance(txn, ServerInviteTransaction)
    new = events[1]
    assert isinstance(new, NewRequest) and new.source == UAC
    assert events[0].peer == UAC  # type: ignore[union-attr]
    assert len(layer) == 1


def test_an_invite_retransmission_is_absorbed_and_answered_with_the_last_provisional() -> None:
    layer = _layer()
    inv = request("INVITE")
    txn, _ = new_server(layer, inv)
    layer.send_response(txn, make_response(txn.request, 180, to_tag="uas"), 0.2)
    again = receive(layer, inv, UAC, 0.5)
    assert sent(again) == ["180"]
    assert not any(isinstance(e, NewRequest) for e in again)


def test_send_response_accepts_the_request_instead_of_the_transaction() -> None:
    layer = _layer()
    inv = request("OPTIONS")
    txn, _ = new_server(layer, inv)
    events = layer.send_response(txn.request, make_response(txn.request, 200, to_tag="u"), 0.1)
    assert sent(events) == ["200"]
    with pytest.raises(TypeError):
        layer.send_response(object(), make_response(txn.request, 200), 0.2)


def test_given_a_486_the_final_is_retransmitted_until_the_ack_and_timer_i_cleans_up() -> None:
    layer = _layer()
    inv = request("INVITE")
    txn, _ = new_server(layer, inv)
    busy = make_response(txn.request, 486, to_tag="uas")
    assert sent(layer.send_response(txn, busy, 0.0)) == ["486"]
    assert layer.next_deadline() == 0.5  # Timer G
    log = run_until(layer, 2.0)
    assert [(t, sent([e])) for t, e in log] == [(0.5, ["486"]), (1.5, ["486"])]
    ack = receive(layer, ack_for(inv, busy), UAC, 2.0)
    assert ack == []  # ACK for a non-2xx is the transaction's business, not the TU's
    assert txn.state is ServerInviteState.CONFIRMED
    assert layer.next_deadline() == 7.0  # Timer I = T4
    end = run_until(layer, 100.0)
    assert [type(e) for _, e in end] == [TransactionTerminated]
    assert len(layer) == 0 and layer.next_deadline() is None


def test_given_no_ack_to_a_486_timer_h_reports_the_failure() -> None:
    layer = _layer()
    txn, _ = new_server(layer, request("INVITE"))
    layer.send_response(txn, make_response(txn.request, 486, to_tag="uas"), 0.0)
    log = run_until(layer, 100.0)
    failures = [e for _, e in log if isinstance(e, ServerTransactionFailed)]
    assert failures == [ServerTransactionFailed(txn, FailureReason.TIMER_H)]
    assert log[-1] == (32.0, TransactionTerminated(txn))


def test_a_non_invite_retransmission_is_absorbed_then_answered_with_the_final() -> None:
    layer = _layer()
    req = request("REGISTER", uri="sip:192.0.2.20")
    txn, _ = new_server(layer, req)
    assert receive(layer, req, UAC, 0.5) == []  # Trying: absorbed
    layer.send_response(txn, make_response(txn.request, 200, to_tag="u"), 1.0)
    assert sent(receive(layer, req, UAC, 1.5)) == ["200"]
    log = run_until(layer, 100.0)
    assert log == [(33.0, TransactionTerminated(txn))]  # Timer J = 64*T1


def test_reliable_transport_server_transactions_end_with_the_final() -> None:
    layer = _layer()
    req = request("OPTIONS", transport="TCP", via_port=40001)
    txn, _ = new_server(layer, req, UAC_TCP)
    events = layer.send_response(txn, make_response(txn.request, 200, to_tag="u"), 1.0)
    assert kinds(events) == ["OutgoingMessage", "TransactionTerminated"]
    assert events[0].peer == UAC_TCP  # type: ignore[union-attr]  # same connection
    assert len(layer) == 0


def test_same_branch_from_another_sent_by_is_another_transaction() -> None:
    """§17.2.3: the sent-by value is part of the match, so two clients that happen to pick
    the same branch do not collide."""
    layer = _layer()
    a, _ = new_server(layer, request("OPTIONS", branch="z9hG4bKsame", via_host="192.0.2.10"))
    b, _ = new_server(layer, request("OPTIONS", branch="z9hG4bKsame", via_host="192.0.2.11",
                                     call_id="other"), Peer("udp", "192.0.2.11", 5060))
    assert a is not b and len(layer) == 2


def test_same_branch_other_method_is_another_transaction() -> None:
    layer = _layer()
    new_server(layer, request("INVITE", branch="z9hG4bKsame"))
    new_server(layer, request("BYE", branch="z9hG4bKsame", to_tag="x", cseq=2))
    assert len(layer) == 2


# ==================================================================== ACK for a 2xx


def test_2xx_is_retransmitted_until_the_ack_which_goes_to_the_tu() -> None:
    """§13.3.1.4: the 2xx is retransmitted at T1, 2*T1, … capped at T2 until the ACK; the
    ACK (its own transaction, new branch) goes to the TU without a server transaction."""
    layer = _layer()
    inv = request("INVITE")
    txn, _ = new_server(layer, inv)
    ok = make_response(txn.request, 200, to_tag="uas")
    assert sent(layer.send_response(txn, ok, 0.0)) == ["200"]
    assert txn.state is ServerInviteState.ACCEPTED and layer.pending_2xx == 1
    log = run_until(layer, 4.0)
    assert [t for t, e in log if sent([e]) == ["200"]] == [0.5, 1.5, 3.5]
    events = receive(layer, ack_for(inv, ok), UAC, 4.0)
    assert kinds(events) == ["NewRequest"]
    new = events[0]
    assert isinstance(new, NewRequest) and new.server_txn is None and new.request.method == "ACK"
    assert layer.pending_2xx == 0
    rest = run_until(layer, 100.0)
    assert not any(isinstance(e, OutgoingMessage) for _, e in rest)
    assert [e for _, e in rest] == [TransactionTerminated(txn)]  # Timer L


def test_2xx_retransmission_interval_is_capped_at_t2_and_gives_up_at_64_t1() -> None:
    layer = _layer()
    txn, _ = new_server(layer, request("INVITE"))
    assert isinstance(txn, ServerInviteTransaction)
    ok = make_response(txn.request, 200, to_tag="uas")
    layer.send_response(txn, ok, 0.0)
    log = run_until(layer, 100.0)
    times = [t for t, e in log if sent([e]) == ["200"]]
    intervals = [b - a for a, b in zip([0.0, *times], times, strict=False)]
    assert intervals == [0.5, 1, 2, 4, 4, 4, 4, 4, 4, 4]
    assert (32.0, AckNotReceived(ok, txn)) in log
    assert layer.pending_2xx == 0 and len(layer) == 0


def test_2xx_over_tcp_is_not_retransmitted_but_the_ack_is_still_awaited() -> None:
    layer = _layer()
    txn, _ = new_server(layer, request("INVITE", transport="TCP", via_port=40001), UAC_TCP)
    assert isinstance(txn, ServerInviteTransaction)
    ok = make_response(txn.request, 200, to_tag="uas")
    layer.send_response(txn, ok, 0.0)
    log = run_until(layer, 100.0)
    assert not any(isinstance(e, OutgoingMessage) for _, e in log)
    assert (32.0, AckNotReceived(ok, txn)) in log


def test_an_ack_reusing_the_invite_branch_matches_the_accepted_transaction() -> None:
    """RFC 6026 §8.6: an ACK matching the transaction in Accepted is passed to the TU."""
    layer = _layer()
    inv = request("INVITE")
    txn, _ = new_server(layer, inv)
    ok = make_response(txn.request, 200, to_tag="uas")
    layer.send_response(txn, ok, 0.0)
    events = receive(layer, ack_for(inv, ok, branch=inv.top_via.branch), UAC, 0.2)
    assert kinds(events) == ["NewRequest"] and layer.pending_2xx == 0


def test_an_ack_matching_nothing_still_goes_to_the_tu() -> None:
    layer = _layer()
    inv = request("INVITE")
    ack = ack_for(inv, make_response(inv, 200, to_tag="gone"))
    events = receive(layer, ack, UAC, 0.0)
    assert kinds(events) == ["NewRequest"]


def test_a_second_2xx_from_the_tu_does_not_start_a_second_retransmitter() -> None:
    layer = _layer()
    txn, _ = new_server(layer, request("INVITE"))
    ok = make_response(txn.request, 200, to_tag="uas")
    layer.send_response(txn, ok, 0.0)
    assert sent(layer.send_response(txn, ok, 0.1)) == ["200"]
    assert layer.pending_2xx == 1


def test_2xx_retransmission_is_left_to_the_tu_unless_asked_for() -> None:
    """§13.3.1.4 makes it the UAS core's job; the layer only does it on request."""
    layer = TransactionLayer()
    txn, _ = new_server(layer, request("INVITE"))
    layer.send_response(txn, make_response(txn.request, 200, to_tag="uas"), 0.0)
    assert layer.pending_2xx == 0
    log = run_until(layer, 100.0)
    assert [e for _, e in log] == [TransactionTerminated(txn)]  # only Timer L


# ========================================================================= CANCEL


def _cancel_for(inv: Request) -> Request:
    return request("CANCEL", branch=inv.top_via.branch, call_id=inv.call_id,
                   cseq=inv.cseq.seq, uri=str(inv.uri))


def test_cancel_of_a_ringing_invite_is_answered_200_and_the_tu_answers_487() -> None:
    """§9.2: the CANCEL matches the INVITE like a retransmission would, method aside; the
    UAS answers the CANCEL 200 and the INVITE 487; the two To tags are the same."""
    layer = _layer()
    inv = request("INVITE")
    ist, _ = new_server(layer, inv)
    cancel = _cancel_for(inv)
    events = receive(layer, cancel, UAC, 1.0)
    assert sent(events) == ["200"]
    got = [e for e in events if isinstance(e, CancelReceived)]
    assert len(got) == 1 and got[0].invite_txn is ist
    assert isinstance(ist, ServerInviteTransaction)
    ok = events[0].message  # type: ignore[union-attr]
    assert isinstance(ok, Response) and ok.cseq.method == "CANCEL"
    assert ok.to.tag == ist.local_tag is not None
    # The TU answers the INVITE with 487 using that tag; the ACK completes it.
    terminated = make_response(ist.request, 487, to_tag=ist.local_tag)
    assert sent(layer.send_response(ist, terminated, 1.1)) == ["487"]
    assert receive(layer, ack_for(inv, terminated), UAC, 1.2) == []
    assert ist.state is ServerInviteState.CONFIRMED
    # A retransmitted CANCEL gets its 200 again, and the TU hears of it only once.
    again = receive(layer, cancel, UAC, 1.3)
    assert sent(again) == ["200"] and not any(isinstance(e, CancelReceived) for e in again)


def test_cancel_reuses_the_to_tag_of_an_earlier_provisional() -> None:
    layer = _layer()
    inv = request("INVITE")
    ist, _ = new_server(layer, inv)
    layer.send_response(ist, make_response(ist.request, 180, to_tag="ring-tag"), 0.5)
    events = receive(layer, _cancel_for(inv), UAC, 1.0)
    assert events[0].message.to.tag == "ring-tag"  # type: ignore[union-attr]


def test_cancel_matching_nothing_gets_481() -> None:
    layer = _layer()
    cancel = request("CANCEL", branch="z9hG4bK-nothing")
    events = receive(layer, cancel, UAC, 0.0)
    assert sent(events) == ["481"]
    assert [e for e in events if isinstance(e, CancelReceived)] == [
        CancelReceived(stamp_via_received(cancel, UAC), None)]


def test_cancel_after_the_final_response_is_answered_200_and_changes_nothing() -> None:
    layer = _layer()
    inv = request("INVITE")
    ist, _ = new_server(layer, inv)
    layer.send_response(ist, make_response(ist.request, 200, to_tag="uas"), 0.5)
    events = receive(layer, _cancel_for(inv), UAC, 1.0)
    assert sent(events) == ["200"]
    assert ist.state is ServerInviteState.ACCEPTED
    assert sent(layer.send_response(ist, make_response(ist.request, 487), 1.1)) == []


def test_cancel_of_a_non_invite_is_answered_200_and_has_no_effect() -> None:
    """§9.2: "Regardless of the method of the original request, as long as the CANCEL
    matched an existing transaction, the UAS answers the CANCEL request itself with a
    200 (OK)"; only an INVITE is affected."""
    layer = _layer()
    opt = request("OPTIONS", branch="z9hG4bK-opt")
    txn, _ = new_server(layer, opt)
    cancel = request("CANCEL", branch="z9hG4bK-opt", uri=str(opt.uri))
    events = receive(layer, cancel, UAC, 0.5)
    assert sent(events) == ["200"]
    assert [e.invite_txn for e in events if isinstance(e, CancelReceived)] == [None]
    assert sent(layer.send_response(txn, make_response(txn.request, 200, to_tag="u"), 0.6)) == [
        "200"]


def test_cancel_of_an_rfc2543_invite_matches_without_branch() -> None:
    layer = _layer()
    inv = request("INVITE", branch=None)
    ist, _ = new_server(layer, inv)
    events = receive(layer, _cancel_for(inv), UAC, 1.0)
    assert [e.invite_txn for e in events if isinstance(e, CancelReceived)] == [ist]


# ================================================================= merged requests


def test_a_merged_request_is_answered_482() -> None:
    """§8.2.2.2: no To tag, and From tag + Call-ID + CSeq match a request in progress
    that arrived with another branch (a fork that came back by another path) → 482."""
    layer = _layer()
    first, _ = new_server(layer, request("INVITE", branch="z9hG4bK-path1"))
    merged = request("INVITE", branch="z9hG4bK-path2", via_host="192.0.2.30")
    src = Peer("udp", "192.0.2.30", 5060)
    events = receive(layer, merged, src, 0.1)
    assert sent(events) == ["482"] and not any(isinstance(e, NewRequest) for e in events)
    assert events[0].peer == src  # type: ignore[union-attr]
    # The 482 went through a transaction: its retransmission is answered, not re-judged.
    assert sent(receive(layer, merged, src, 0.6)) == ["482"]
    assert first.state is ServerInviteState.PROCEEDING


def test_in_dialog_requests_are_never_merged() -> None:
    layer = _layer()
    new_server(layer, request("BYE", branch="z9hG4bK-a", to_tag="t"))
    txn, _ = new_server(layer, request("BYE", branch="z9hG4bK-b", to_tag="t"))
    assert isinstance(txn, ServerNonInviteTransaction)


def test_after_the_first_transaction_ends_the_same_ids_are_not_merged() -> None:
    layer = _layer()
    first, _ = new_server(layer, request("OPTIONS", branch="z9hG4bK-1"))
    layer.send_response(first, make_response(first.request, 200, to_tag="u"), 0.0)
    run_until(layer, 100.0)
    assert len(layer) == 0
    new_server(layer, request("OPTIONS", branch="z9hG4bK-2"), now=100.0)


# ============================================================ RFC 2543 matching


def _conformance(name: str) -> Request:
    msg = parse_message((CONFORMANCE / name).read_bytes())
    assert isinstance(msg, Request)
    return msg


def test_rfc4475_inv2543_retransmission_and_ack_match_without_a_branch() -> None:
    """RFC 4475 §3.4.1 / RFC 3261 §17.2.3: without the magic cookie, match on
    Request-URI, To tag, From tag, Call-ID, CSeq and top Via; an ACK matches when its To
    tag is the tag of our response."""
    layer = _layer()
    inv = _conformance("inv2543.dat")
    src = Peer("udp", "192.0.2.5", 5060)
    ist, _ = new_server(layer, inv, src)
    assert sent(receive(layer, inv, src, 0.3)) == ["100"]  # a retransmission
    decline = make_response(ist.request, 603, to_tag="uas2543")
    layer.send_response(ist, decline, 0.5)
    ack = parse_message(
        b"ACK sip:UserB@example.com SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP iftgw.example.com\r\n"
        b"From: <sip:+13035551111@ift.client.example.net;user=phone>\r\n"
        b"To: sip:+16505552222@ss1.example.net;user=phone;tag=uas2543\r\n"
        b"Call-ID: inv2543.1717@ift.client.example.com\r\n"
        b"CSeq: 56 ACK\r\n\r\n"
    )
    assert isinstance(ack, Request)
    assert receive(layer, ack, src, 0.6) == []
    assert ist.state is ServerInviteState.CONFIRMED


def test_rfc2543_ack_with_another_to_tag_does_not_match() -> None:
    layer = _layer()
    inv = request("INVITE", branch=None)
    ist, _ = new_server(layer, inv)
    decline = make_response(ist.request, 603, to_tag="mine")
    layer.send_response(ist, decline, 0.5)
    wrong = ack_for(inv, make_response(inv, 603, to_tag="someone-else"), branch="z9hG4bK-x")
    events = receive(layer, request_without_branch(wrong), UAC, 0.6)
    assert kinds(events) == ["NewRequest"]  # not ours: the TU/dialog sees a stray ACK
    assert ist.state is ServerInviteState.COMPLETED


def request_without_branch(req: Request) -> Request:
    via = req.top_via.with_params(branch=None)
    return Request(req.method, req.uri, req.headers.set("Via", str(via)))


def test_rfc4475_badbranch_bare_magic_cookie_uses_rfc2543_matching() -> None:
    """RFC 4475 §3.2.1: ``branch=z9hG4bK`` alone is not a transaction id; two such requests
    with different Call-IDs are different transactions, a retransmission is one."""
    layer = _layer()
    opt = _conformance("badbranch.dat")
    src = Peer("udp", "192.0.2.1", 5060)
    txn, _ = new_server(layer, opt, src)
    assert receive(layer, opt, src, 0.1) == []  # retransmission absorbed
    other = Request(opt.method, opt.uri, opt.headers.set("Call-ID", "another-call"))
    txn2, _ = new_server(layer, other, src, 0.2)
    assert txn2 is not txn and len(layer) == 2


# ============================================================================ client


def _invite_out(branch: str = "z9hG4bK-out1") -> Request:
    return request("INVITE", branch=branch, via_host="192.0.2.1", call_id="out@192.0.2.1")


def test_client_invite_retransmits_on_timer_a_and_reports_timer_b() -> None:
    """Given an INVITE client transaction over UDP, when 0.5 s passes without response,
    Timer A fires and the INVITE is retransmitted; at 32 s Timer B fires and the TU is told
    of a timeout."""
    layer = _layer()
    txn, events = layer.send_request(_invite_out(), UAS, 0.0)
    assert sent(events) == ["INVITE"] and events[0].peer == UAS  # type: ignore[union-attr]
    assert layer.next_deadline() == 0.5
    log = run_until(layer, 100.0)
    assert [t for t, e in log if sent([e]) == ["INVITE"]] == [0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    assert [e for _, e in log if not isinstance(e, OutgoingMessage)] == [
        TransactionTimedOut(txn, FailureReason.TIMER_B), TransactionTerminated(txn)]
    assert layer.next_deadline() is None and len(layer) == 0


def test_client_invite_every_2xx_reaches_the_tu_until_timer_m_then_strays() -> None:
    layer = _layer()
    inv = _invite_out()
    txn, _ = layer.send_request(inv, UAS, 0.0)
    ringing = receive(layer, response_to(inv, 180), UAS, 0.1)
    assert kinds(ringing) == ["ResponseReceived"]
    ok = response_to(inv, 200)
    assert receive(layer, ok, UAS, 0.2) == [ResponseReceived(ok, txn)]
    assert receive(layer, ok, UAS, 0.7) == [ResponseReceived(ok, txn)]  # retransmission
    forked = response_to(inv, 200, to_tag="fork2")
    assert receive(layer, forked, UAS, 0.8) == [ResponseReceived(forked, txn)]
    assert run_until(layer, 100.0) == [(32.2, TransactionTerminated(txn))]
    assert receive(layer, ok, UAS, 40.0) == [StrayResponse(ok, UAS)]


def test_client_invite_non_2xx_is_acked_by_the_layer() -> None:
    layer = _layer()
    inv = _invite_out()
    txn, _ = layer.send_request(inv, UAS, 0.0)
    busy = response_to(inv, 486)
    events = receive(layer, busy, UAS, 0.1)
    assert kinds(events) == ["OutgoingMessage", "ResponseReceived"]
    assert sent(events) == ["ACK"]
    assert receive(layer, busy, UAS, 0.2)[0].message.method == "ACK"  # type: ignore[union-attr]
    assert txn.state is ClientInviteState.COMPLETED


def test_response_with_unknown_branch_is_stray() -> None:
    layer = _layer()
    resp = response_to(request("OPTIONS", branch="z9hG4bK-unknown"), 200)
    assert receive(layer, resp, UAS, 0.0) == [StrayResponse(resp, UAS)]


def test_response_with_same_branch_but_other_method_does_not_match() -> None:
    """§17.1.3: the CSeq method must match too — a 200 to CANCEL is not a 200 to INVITE."""
    layer = _layer()
    inv = _invite_out()
    layer.send_request(inv, UAS, 0.0)
    cancel_ok = response_to(_cancel_for(inv), 200)
    assert kinds(receive(layer, cancel_ok, UAS, 0.1)) == ["StrayResponse"]


def test_cancel_is_sent_after_the_first_provisional_and_its_200_is_kept_from_the_tu() -> None:
    layer = _layer()
    inv = _invite_out()
    txn, _ = layer.send_request(inv, UAS, 0.0)
    assert layer.cancel(txn, 0.05) == []  # nothing heard yet: wait (§9.1)
    events = receive(layer, response_to(inv, 180), UAS, 0.1)
    assert sent(events) == ["CANCEL"]
    cancel = next(e.message for e in events if isinstance(e, OutgoingMessage))
    assert isinstance(cancel, Request) and cancel.top_via.branch == inv.top_via.branch
    assert [e.peer for e in events if isinstance(e, OutgoingMessage)] == [UAS]
    assert receive(layer, response_to(cancel, 200), UAS, 0.2) == []
    terminated = receive(layer, response_to(inv, 487), UAS, 0.3)
    assert sent(terminated) == ["ACK"] and "ResponseReceived" in kinds(terminated)
    run_until(layer, 100.0)
    assert len(layer) == 0


def test_cancel_retransmits_like_any_non_invite() -> None:
    layer = _layer()
    inv = _invite_out()
    txn, _ = layer.send_request(inv, UAS, 0.0)
    receive(layer, response_to(inv, 180), UAS, 0.1)
    layer.cancel(txn, 1.0)
    log = run_until(layer, 2.0)
    assert [t for t, e in log if sent([e]) == ["CANCEL"]] == [1.5]


def test_cancel_with_no_final_response_ends_the_invite_after_64_t1() -> None:
    layer = _layer()
    inv = _invite_out()
    txn, _ = layer.send_request(inv, UAS, 0.0)
    receive(layer, response_to(inv, 180), UAS, 0.1)
    cancel_events = layer.cancel(txn, 10.0)
    cancel = next(e.message for e in cancel_events if isinstance(e, OutgoingMessage))
    assert isinstance(cancel, Request)
    receive(layer, response_to(cancel, 200), UAS, 10.1)
    log = run_until(layer, 100.0)
    assert (42.0, TransactionTimedOut(txn, FailureReason.CANCEL_GUARD)) in log
    assert len(layer) == 0


def test_cancel_of_anything_but_a_live_client_invite_is_a_no_op() -> None:
    layer = _layer()
    txn, _ = layer.send_request(request("OPTIONS", branch="z9hG4bK-o"), UAS, 0.0)
    assert layer.cancel(txn, 0.1) == []
    assert layer.cancel(object(), 0.1) == []


def test_client_non_invite_timeout_is_timer_f() -> None:
    layer = _layer()
    txn, _ = layer.send_request(request("OPTIONS", branch="z9hG4bK-o"), UAS_TCP, 0.0)
    assert isinstance(txn, ClientNonInviteTransaction)
    assert run_until(layer, 100.0) == [
        (32.0, TransactionTimedOut(txn, FailureReason.TIMER_F)),
        (32.0, TransactionTerminated(txn)),
    ]


def test_send_request_refuses_ack_missing_branch_and_reused_branch() -> None:
    layer = _layer()
    with pytest.raises(ValueError, match="ACK"):
        layer.send_request(request("ACK"), UAS, 0.0)
    with pytest.raises(ValueError, match="branch"):
        layer.send_request(request("OPTIONS", branch="nocookie"), UAS, 0.0)
    layer.send_request(request("OPTIONS", branch="z9hG4bK-x"), UAS, 0.0)
    with pytest.raises(ValueError, match="already used"):
        layer.send_request(request("OPTIONS", branch="z9hG4bK-x"), UAS, 0.0)


# ========================================================================= transport


def test_transport_error_fails_every_transaction_towards_that_peer() -> None:
    layer = _layer()
    inv = _invite_out()
    to_uas, _ = layer.send_request(inv, UAS_TCP, 0.0)
    other, _ = layer.send_request(request("OPTIONS", branch="z9hG4bK-2"), UAS, 0.0)
    events = layer.transport_error(Peer("tcp", "192.0.2.20", 5070, connection_id=3), 1.0)
    assert events == [
        TransactionTimedOut(to_uas, FailureReason.TRANSPORT), TransactionTerminated(to_uas)]
    assert isinstance(to_uas, ClientInviteTransaction)
    assert len(layer) == 1 and not other.terminated


def test_transport_error_on_a_server_connection_fails_its_transactions() -> None:
    layer = _layer()
    txn, _ = new_server(layer, request("INVITE", transport="TCP", via_port=40001), UAC_TCP)
    events = layer.transport_error(UAC_TCP, 1.0)
    assert events == [
        ServerTransactionFailed(txn, FailureReason.TRANSPORT), TransactionTerminated(txn)]


def test_transaction_transport_error_targets_one_transaction() -> None:
    layer = _layer()
    txn, _ = layer.send_request(request("OPTIONS", branch="z9hG4bK-o"), UAS, 0.0)
    events = layer.transaction_transport_error(txn, 0.1)
    assert kinds(events) == ["TransactionTimedOut", "TransactionTerminated"]
    assert layer.transaction_transport_error(txn, 0.2) == []


# ===================================================================== robustness


def test_overload_answers_503_statelessly() -> None:
    layer = TransactionLayer(max_server_transactions=2)
    new_server(layer, request("OPTIONS", branch="z9hG4bK-1", call_id="1"))
    new_server(layer, request("OPTIONS", branch="z9hG4bK-2", call_id="2"))
    events = receive(layer, request("OPTIONS", branch="z9hG4bK-3", call_id="3"), UAC, 0.0)
    assert sent(events) == ["503"]
    resp = events[0].message  # type: ignore[union-attr]
    assert isinstance(resp, Response) and resp.headers.get("Retry-After") == "5"
    assert len(layer) == 2


def test_a_request_without_the_headers_matching_needs_is_dropped_not_raised() -> None:
    layer = _layer()
    broken = Request("OPTIONS", request("OPTIONS").uri, request("OPTIONS").headers.remove("Via"))
    assert layer.receive(broken, UAC, 0.0) == []
    resp = response_to(request("OPTIONS"), 200)
    assert layer.receive(Response(200, "OK", resp.headers.remove("CSeq")), UAS, 0.0) == []


def test_counters_follow_what_happened() -> None:
    layer = _layer()
    inv = request("INVITE")
    new_server(layer, inv)
    receive(layer, inv, UAC, 0.1)
    receive(layer, request("INVITE", branch="z9hG4bK-other"), UAC, 0.2)  # merged
    receive(layer, _cancel_for(inv), UAC, 0.3)
    receive(layer, response_to(request("OPTIONS", branch="z9hG4bK-z"), 200), UAS, 0.4)
    c = layer.counters
    assert (c.server_transactions, c.retransmissions_absorbed, c.merged_requests,
            c.cancels, c.stray_responses) == (1, 1, 1, 1, 1)
    assert "ServerInviteTransaction INVITE z9hG4bK-1 Proceeding" in repr(
        layer.server_transactions[0])


def test_advance_before_any_deadline_does_nothing() -> None:
    layer = _layer()
    layer.send_request(_invite_out(), UAS, 0.0)
    assert layer.advance(0.49) == []
    assert sent(layer.advance(0.5)) == ["INVITE"]


def test_overload_still_honours_the_cancel_of_a_live_invite_but_no_other() -> None:
    layer = TransactionLayer(max_server_transactions=1)
    inv = request("INVITE")
    new_server(layer, inv)
    stray = request("CANCEL", branch="z9hG4bK-nothing", call_id="x")
    assert sent(receive(layer, stray, UAC, 0.1)) == ["503"]
    events = receive(layer, _cancel_for(inv), UAC, 0.2)
    assert sent(events) == ["200"] and "CancelReceived" in kinds(events)
