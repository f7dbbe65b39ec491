"""INVITE client transaction (RFC 3261 §17.1.1, Figure 5, with RFC 6026's Accepted state).

The table below is Figure 5 written out: for every state and every event (each response
class, each timer, a transport error, the TU cancelling), the state the transaction moves
to and exactly what it does, once over UDP and once over TCP. Time is virtual; the event
happens at t=10 s unless it is a timer, which fires at its own deadline.
"""

from __future__ import annotations

import pytest

from switch.sip.addressing import Peer
from switch.sip.message import Request
from switch.sip.timers import Timer, TimerSettings
from switch.sip.transaction import (
    ClientInviteState,
    ClientInviteTransaction,
    SendCancel,
    Transmit,
)
from tests.unit.sip.test_transaction_support import (
    UAS,
    UAS_TCP,
    request,
    response_to,
    run_timers,
    summarize,
)

S = TimerSettings()  # T1 = 0.5 s, T2 = 4 s, T4 = 5 s
Calling = ClientInviteState.CALLING
Proceeding = ClientInviteState.PROCEEDING
Completed = ClientInviteState.COMPLETED
Accepted = ClientInviteState.ACCEPTED
Terminated = ClientInviteState.TERMINATED

STATUS = {"100": 100, "180": 180, "2xx": 200, "3xx": 302, "4xx": 486, "5xx": 503, "6xx": 603}
FINAL = ("3xx", "4xx", "5xx", "6xx")
TIMERS = ("timer A", "timer B", "timer D", "timer M", "timer cancel-guard")
EVENTS = (*STATUS, *TIMERS, "transport error", "TU cancels", "a request arrives")
STATES = (Calling, Proceeding, Completed, Accepted, Terminated)

Row = tuple[ClientInviteState, list[str]]


def _udp_table() -> dict[tuple[ClientInviteState, str], Row]:
    t: dict[tuple[ClientInviteState, str], Row] = {
        # Calling: A armed at 0.5 s, B at 32 s.
        (Calling, "100"): (Proceeding, ["cancel A", "cancel B", "deliver 100"]),
        (Calling, "180"): (Proceeding, ["cancel A", "cancel B", "deliver 180"]),
        (Calling, "2xx"): (Accepted, ["cancel A", "cancel B", "deliver 200", "start M +32"]),
        (Calling, "timer A"): (Calling, ["send INVITE", "start A +1"]),
        (Calling, "timer B"): (Terminated, ["timeout B", "cancel A", "terminated"]),
        (Calling, "transport error"): (
            Terminated, ["transport failed", "cancel A", "cancel B", "terminated"]),
        # Proceeding: no timer armed (A stopped; B only matters in Calling).
        (Proceeding, "100"): (Proceeding, ["deliver 100"]),
        (Proceeding, "180"): (Proceeding, ["deliver 180"]),
        (Proceeding, "2xx"): (Accepted, ["deliver 200", "start M +32"]),
        (Proceeding, "transport error"): (Terminated, ["transport failed", "terminated"]),
        (Proceeding, "TU cancels"): (Proceeding, ["send-cancel", "start cancel-guard +32"]),
        # Completed: D armed (32 s); a retransmitted final is re-ACKed, not re-delivered.
        (Completed, "timer D"): (Terminated, ["terminated"]),
        (Completed, "transport error"): (Terminated, ["cancel D", "terminated"]),
        # Accepted (RFC 6026): M armed; every 2xx goes to the TU.
        (Accepted, "2xx"): (Accepted, ["deliver 200"]),
        (Accepted, "timer M"): (Terminated, ["terminated"]),
        (Accepted, "transport error"): (Terminated, ["cancel M", "terminated"]),
    }
    for ev in FINAL:
        s = STATUS[ev]
        t[(Calling, ev)] = (
            Completed, ["cancel A", "cancel B", "send ACK", f"deliver {s}", "start D +32"])
        t[(Proceeding, ev)] = (Completed, ["send ACK", f"deliver {s}", "start D +32"])
        t[(Completed, ev)] = (Completed, ["send ACK"])
    return t


def _tcp_table() -> dict[tuple[ClientInviteState, str], Row]:
    t: dict[tuple[ClientInviteState, str], Row] = {
        # Calling: only B armed — no retransmissions over a reliable transport.
        (Calling, "100"): (Proceeding, ["cancel B", "deliver 100"]),
        (Calling, "180"): (Proceeding, ["cancel B", "deliver 180"]),
        (Calling, "2xx"): (Accepted, ["cancel B", "deliver 200", "start M +32"]),
        (Calling, "timer B"): (Terminated, ["timeout B", "terminated"]),
        (Calling, "transport error"): (
            Terminated, ["transport failed", "cancel B", "terminated"]),
        (Proceeding, "100"): (Proceeding, ["deliver 100"]),
        (Proceeding, "180"): (Proceeding, ["deliver 180"]),
        (Proceeding, "2xx"): (Accepted, ["deliver 200", "start M +32"]),
        (Proceeding, "transport error"): (Terminated, ["transport failed", "terminated"]),
        (Proceeding, "TU cancels"): (Proceeding, ["send-cancel", "start cancel-guard +32"]),
        (Accepted, "2xx"): (Accepted, ["deliver 200"]),
        (Accepted, "timer M"): (Terminated, ["terminated"]),
        (Accepted, "transport error"): (Terminated, ["cancel M", "terminated"]),
    }
    for ev in FINAL:
        s = STATUS[ev]
        # Timer D is zero over reliable transports: Completed is left at once.
        t[(Calling, ev)] = (Terminated, ["cancel B", "send ACK", f"deliver {s}", "terminated"])
        t[(Proceeding, ev)] = (Terminated, ["send ACK", f"deliver {s}", "terminated"])
    return t


TABLES = {"udp": (UAS, _udp_table()), "tcp": (UAS_TCP, _tcp_table())}


def _invite() -> Request:
    return request("INVITE", branch="z9hG4bK-ict", call_id="ict@192.0.2.10")


def drive(state: ClientInviteState, peer: Peer) -> ClientInviteTransaction | None:
    """A transaction in ``state`` (None if the transport makes the state unreachable)."""
    inv = _invite()
    t = ClientInviteTransaction(inv, peer, S)
    t.start(0.0)
    if state is Proceeding:
        t.receive(response_to(inv, 180), 0.1)
    elif state is Completed:
        t.receive(response_to(inv, 486), 0.1)
    elif state is Accepted:
        t.receive(response_to(inv, 200), 0.1)
    elif state is Terminated:
        t.transport_error(0.1)
    if t.state is not state:
        return None
    return t


def fire(t: ClientInviteTransaction, event: str) -> tuple[list[str], float]:
    now = 10.0
    if event in STATUS:
        return summarize(t.receive(response_to(t.request, STATUS[event]), now), now), now
    if event.startswith("timer "):
        name = Timer(event.removeprefix("timer "))
        now = t.armed_timers.get(name, now)
        return summarize(t.timer_fired(name, now), now), now
    if event == "transport error":
        return summarize(t.transport_error(now), now), now
    if event == "TU cancels":
        return summarize(t.request_cancel(now), now), now
    assert event == "a request arrives"
    return summarize(t.receive(request("INVITE"), now), now), now


@pytest.mark.parametrize("transport", ["udp", "tcp"])
@pytest.mark.parametrize("state", STATES, ids=str)
@pytest.mark.parametrize("event", EVENTS)
def test_every_state_and_event(transport: str, state: ClientInviteState, event: str) -> None:
    peer, table = TABLES[transport]
    t = drive(state, peer)
    if t is None:
        # Only Completed over TCP is unreachable: Timer D is 0 for reliable transports.
        assert (transport, state) == ("tcp", Completed)
        return
    expected_state, expected = table.get((state, event), (state, []))
    got, _ = fire(t, event)
    assert got == expected
    assert t.state is expected_state


def test_table_is_about_real_states_and_events() -> None:
    for _, table in TABLES.values():
        for state, event in table:
            assert state in STATES and event in EVENTS


# ------------------------------------------------------------------------- timer values


def test_given_no_response_over_udp_timer_a_doubles_and_timer_b_times_out_at_64_t1() -> None:
    """§17.1.1.2: the INVITE is retransmitted at 0.5, 1.5, 3.5, 7.5, 15.5, 31.5 s (A =
    T1, 2*T1, 4*T1, … with no cap) and at 32 s Timer B tells the TU of a timeout."""
    t = ClientInviteTransaction(_invite(), UAS, S)
    assert summarize(t.start(0.0), 0.0) == ["send INVITE", "start A +0.5", "start B +32"]
    log = run_timers(t, until=100.0)
    sends = [when for when, what in log if what == "send INVITE"]
    assert sends == [0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    intervals = [b - a for a, b in zip([0.0, *sends], sends, strict=False)]
    assert intervals == [0.5, 1, 2, 4, 8, 16]
    assert (32.0, "timeout B") in log
    assert log[-1] == (32.0, "terminated")
    assert t.state is Terminated


def test_given_tcp_no_retransmission_and_timeout_at_64_t1() -> None:
    t = ClientInviteTransaction(_invite(), UAS_TCP, S)
    assert summarize(t.start(0.0), 0.0) == ["send INVITE", "start B +32"]
    assert run_timers(t, until=100.0) == [(32.0, "timeout B"), (32.0, "terminated")]


def test_timer_values_follow_t1_from_configuration() -> None:
    s = TimerSettings.from_ms(100, 2000, 3000)
    t = ClientInviteTransaction(_invite(), UAS, s)
    assert summarize(t.start(0.0), 0.0) == ["send INVITE", "start A +0.1", "start B +6.4"]
    t.receive(response_to(t.request, 404), 1.0)
    # Timer D stays at least 32 s for unreliable transports whatever T1 is.
    assert t.armed_timers == {Timer.D: 33.0}


def test_timer_d_outlives_timer_h_when_t1_is_large() -> None:
    s = TimerSettings(t1=1.0, t2=4.0, t4=5.0)
    t = ClientInviteTransaction(_invite(), UAS, s)
    t.start(0.0)
    t.receive(response_to(t.request, 404), 0.0)
    assert t.armed_timers == {Timer.D: 64.0}


# ------------------------------------------------------------------ the ACK (§17.1.1.3)


def test_ack_for_a_non_2xx_final_is_built_by_the_transaction() -> None:
    """§17.1.1.3: same Request-URI, Call-ID, From, CSeq number with method ACK, To with the
    response's tag, the INVITE's Route headers, and only its top Via (same branch)."""
    inv = request(
        "INVITE",
        branch="z9hG4bK-ack1",
        uri="sip:bob@192.0.2.20;transport=udp",
        routes=("<sip:proxy1.example.com;lr>", "<sip:proxy2.example.com;lr>"),
        extra_vias=("SIP/2.0/UDP 192.0.2.99;branch=z9hG4bK-lower",),
        cseq=42,
    )
    t = ClientInviteTransaction(inv, UAS, S)
    t.start(0.0)
    resp = response_to(inv, 486, to_tag="callee-tag")
    effects = t.receive(resp, 1.0)
    sent = [e for e in effects if isinstance(e, Transmit)]
    assert len(sent) == 1 and sent[0].peer == UAS  # same destination as the INVITE
    ack = sent[0].message
    assert isinstance(ack, Request)
    assert ack.method == "ACK"
    assert ack.uri == inv.uri
    assert ack.call_id == inv.call_id
    assert ack.from_ == inv.from_
    assert ack.to.tag == "callee-tag" and ack.to.uri == inv.to.uri
    assert (ack.cseq.seq, ack.cseq.method) == (42, "ACK")
    assert ack.vias == (inv.top_via,)
    assert ack.headers.get_all("Route") == inv.headers.get_all("Route")
    assert ack.body == b""
    assert t.ack is ack


def test_retransmitted_final_is_acked_again_but_not_delivered_twice() -> None:
    t = ClientInviteTransaction(_invite(), UAS, S)
    t.start(0.0)
    resp = response_to(t.request, 603)
    first = summarize(t.receive(resp, 1.0), 1.0)
    assert first.count("deliver 603") == 1
    again = t.receive(resp, 2.0)
    assert summarize(again, 2.0) == ["send ACK"]
    assert isinstance(again[0], Transmit) and again[0].message is t.ack


# -------------------------------------------------------------------- CANCEL (§9.1)


def test_cancel_before_any_provisional_waits_for_the_first_1xx() -> None:
    """§9.1: "If no provisional response has been received, the CANCEL request MUST NOT be
    sent; rather, the client MUST wait for the arrival of a provisional response"."""
    t = ClientInviteTransaction(_invite(), UAS, S)
    t.start(0.0)
    assert t.request_cancel(0.2) == []
    effects = t.receive(response_to(t.request, 100), 0.3)
    assert summarize(effects, 0.3) == [
        "cancel A", "cancel B", "deliver 100", "send-cancel", "start cancel-guard +32"]
    cancel = next(e.request for e in effects if isinstance(e, SendCancel))
    inv = t.request
    assert cancel.method == "CANCEL"
    assert cancel.uri == inv.uri and cancel.call_id == inv.call_id
    assert cancel.from_ == inv.from_ and cancel.to == inv.to
    assert (cancel.cseq.seq, cancel.cseq.method) == (inv.cseq.seq, "CANCEL")
    assert cancel.vias == (inv.top_via,)
    # Only one CANCEL, even if more provisionals arrive or the TU asks again.
    assert summarize(t.receive(response_to(inv, 180), 0.4), 0.4) == ["deliver 180"]
    assert t.request_cancel(0.5) == []


def test_pending_cancel_is_given_up_with_the_invite_timeout() -> None:
    t = ClientInviteTransaction(_invite(), UAS, S)
    t.start(0.0)
    t.request_cancel(0.2)
    log = run_timers(t, until=100.0)
    assert (32.0, "timeout B") in log
    assert all(what != "send-cancel" for _, what in log)


def test_no_final_response_64_t1_after_cancel_terminates_the_invite() -> None:
    """§9.1: "If no final response is received to the INVITE within 64*T1 seconds after
    the CANCEL was sent, the client SHOULD consider the INVITE transaction terminated"."""
    t = ClientInviteTransaction(_invite(), UAS, S)
    t.start(0.0)
    t.receive(response_to(t.request, 180), 1.0)
    t.request_cancel(60.0)
    assert run_timers(t, until=1000.0) == [
        (92.0, "timeout cancel-guard"), (92.0, "terminated")]


def test_487_after_cancel_is_acked_and_stops_the_guard() -> None:
    t = ClientInviteTransaction(_invite(), UAS, S)
    t.start(0.0)
    t.receive(response_to(t.request, 180), 1.0)
    t.request_cancel(2.0)
    got = summarize(t.receive(response_to(t.request, 487), 2.1), 2.1)
    assert got == ["cancel cancel-guard", "send ACK", "deliver 487", "start D +32"]


def test_cancel_after_final_response_is_a_no_op() -> None:
    t = ClientInviteTransaction(_invite(), UAS, S)
    t.start(0.0)
    t.receive(response_to(t.request, 200), 1.0)
    assert t.request_cancel(2.0) == []


# ---------------------------------------------------------------- odd input, no raise


def test_a_timer_that_was_never_armed_or_already_fired_is_ignored() -> None:
    t = ClientInviteTransaction(_invite(), UAS, S)
    t.start(0.0)
    assert t.timer_fired(Timer.K, 1.0) == []
    t.timer_fired(Timer.A, 0.5)
    assert t.timer_fired(Timer.A, 0.5) == []  # the same expiry delivered twice


def test_response_with_status_out_of_range_is_dropped() -> None:
    t = ClientInviteTransaction(_invite(), UAS, S)
    t.start(0.0)
    resp = response_to(t.request, 180)
    bogus = type(resp)(99, "Odd", resp.headers)
    assert t.receive(bogus, 1.0) == []
    assert t.state is Calling


def test_only_invite_may_start_a_client_invite_transaction() -> None:
    with pytest.raises(ValueError, match="INVITE"):
        ClientInviteTransaction(request("OPTIONS"), UAS, S)
