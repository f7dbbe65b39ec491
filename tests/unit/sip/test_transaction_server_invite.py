"""INVITE server transaction (RFC 3261 §17.2.1, Figure 7, with RFC 6026's Accepted state),
every state × event over UDP and TCP. Events happen at t=10 s; timers fire at their own
deadline. The transaction was created at t=0 by an INVITE; the TU's final response (when the
state needs one) was sent at t=1 s and the ACK (for Confirmed) arrived at t=2 s."""

from __future__ import annotations

import pytest

from switch.sip.addressing import Peer, stamp_via_received
from switch.sip.message import Request, make_response
from switch.sip.timers import Timer, TimerSettings
from switch.sip.transaction import (
    DeliverRequest,
    ServerInviteState,
    ServerInviteTransaction,
    Transmit,
)
from tests.unit.sip.test_transaction_support import (
    UAC,
    UAC_TCP,
    ack_for,
    request,
    response_to,
    run_timers,
    summarize,
)

S = TimerSettings()
Proceeding = ServerInviteState.PROCEEDING
Completed = ServerInviteState.COMPLETED
Confirmed = ServerInviteState.CONFIRMED
Accepted = ServerInviteState.ACCEPTED
Terminated = ServerInviteState.TERMINATED

TU = {"TU 1xx": 180, "TU 2xx": 200, "TU 3xx": 302, "TU 4xx": 486, "TU 5xx": 500, "TU 6xx": 603}
NON_2XX = ("TU 3xx", "TU 4xx", "TU 5xx", "TU 6xx")
EVENTS = (
    "INVITE retransmission",
    "ACK",
    *TU,
    "timer G",
    "timer H",
    "timer I",
    "timer L",
    "transport error",
    "a response arrives",
)
STATES = (Proceeding, Completed, Confirmed, Accepted, Terminated)

Row = tuple[ServerInviteState, list[str]]


def _udp_table() -> dict[tuple[ServerInviteState, str], Row]:
    t: dict[tuple[ServerInviteState, str], Row] = {
        # Proceeding: the most recent provisional (our 100 Trying) answers retransmissions.
        (Proceeding, "INVITE retransmission"): (Proceeding, ["send 100"]),
        (Proceeding, "TU 1xx"): (Proceeding, ["send 180"]),
        (Proceeding, "TU 2xx"): (Accepted, ["send 200", "start L +32"]),
        (Proceeding, "transport error"): (Terminated, ["transport failed", "terminated"]),
        # Completed (486 sent at t=1): G at 1.5 s, H at 33 s.
        (Completed, "INVITE retransmission"): (Completed, ["send 486"]),
        (Completed, "ACK"): (Confirmed, ["cancel G", "cancel H", "start I +5"]),
        (Completed, "timer G"): (Completed, ["send 486", "start G +1"]),
        (Completed, "timer H"): (Terminated, ["timeout H", "cancel G", "terminated"]),
        (Completed, "transport error"): (
            Terminated, ["transport failed", "cancel G", "cancel H", "terminated"]),
        # Confirmed: I = T4 absorbs ACK retransmissions.
        (Confirmed, "timer I"): (Terminated, ["terminated"]),
        (Confirmed, "transport error"): (Terminated, ["cancel I", "terminated"]),
        # Accepted (RFC 6026): INVITE retransmissions absorbed, ACK to the TU, the TU's
        # own 2xx retransmissions pass through, L = 64*T1.
        (Accepted, "ACK"): (Accepted, ["deliver ACK"]),
        (Accepted, "TU 2xx"): (Accepted, ["send 200"]),
        (Accepted, "timer L"): (Terminated, ["terminated"]),
        (Accepted, "transport error"): (
            Terminated, ["transport failed", "cancel L", "terminated"]),
    }
    for ev in NON_2XX:
        s = TU[ev]
        t[(Proceeding, ev)] = (Completed, [f"send {s}", "start G +0.5", "start H +32"])
    return t


def _tcp_table() -> dict[tuple[ServerInviteState, str], Row]:
    t: dict[tuple[ServerInviteState, str], Row] = {
        (Proceeding, "INVITE retransmission"): (Proceeding, ["send 100"]),
        (Proceeding, "TU 1xx"): (Proceeding, ["send 180"]),
        (Proceeding, "TU 2xx"): (Accepted, ["send 200", "start L +32"]),
        (Proceeding, "transport error"): (Terminated, ["transport failed", "terminated"]),
        # No Timer G over TCP; Timer I is zero, so the ACK ends the transaction.
        (Completed, "INVITE retransmission"): (Completed, ["send 486"]),
        (Completed, "ACK"): (Terminated, ["cancel H", "terminated"]),
        (Completed, "timer H"): (Terminated, ["timeout H", "terminated"]),
        (Completed, "transport error"): (
            Terminated, ["transport failed", "cancel H", "terminated"]),
        (Accepted, "ACK"): (Accepted, ["deliver ACK"]),
        (Accepted, "TU 2xx"): (Accepted, ["send 200"]),
        (Accepted, "timer L"): (Terminated, ["terminated"]),
        (Accepted, "transport error"): (
            Terminated, ["transport failed", "cancel L", "terminated"]),
    }
    for ev in NON_2XX:
        t[(Proceeding, ev)] = (Completed, [f"send {TU[ev]}", "start H +32"])
    return t


TABLES = {"udp": (UAC, _udp_table()), "tcp": (UAC_TCP, _tcp_table())}


def _invite(transport: str = "UDP") -> Request:
    return request("INVITE", branch="z9hG4bK-ist", call_id="ist@192.0.2.10", transport=transport)


def drive(state: ServerInviteState, source: Peer) -> ServerInviteTransaction | None:
    inv = _invite(source.transport.upper())
    t = ServerInviteTransaction(inv, source, S)
    t.start(0.0)
    if state in (Completed, Confirmed):
        t.send_response(make_response(inv, 486, to_tag="uas"), 1.0)
        if state is Confirmed:
            t.receive(ack_for(inv, make_response(inv, 486, to_tag="uas")), 2.0)
    elif state is Accepted:
        t.send_response(make_response(inv, 200, to_tag="uas"), 1.0)
    elif state is Terminated:
        t.transport_error(0.5)
    return t if t.state is state else None


def fire(t: ServerInviteTransaction, event: str) -> list[str]:
    now = 10.0
    inv = t.request
    if event == "INVITE retransmission":
        return summarize(t.receive(inv, now), now)
    if event == "ACK":
        final = t.final_response or make_response(inv, 486, to_tag="uas")
        return summarize(t.receive(ack_for(inv, final, branch=inv.top_via.branch), now), now)
    if event in TU:
        return summarize(t.send_response(make_response(inv, TU[event], to_tag="uas"), now), now)
    if event.startswith("timer "):
        name = Timer(event.removeprefix("timer "))
        now = t.armed_timers.get(name, now)
        return summarize(t.timer_fired(name, now), now)
    if event == "transport error":
        return summarize(t.transport_error(now), now)
    assert event == "a response arrives"
    return summarize(t.receive(response_to(inv, 200), now), now)


@pytest.mark.parametrize("transport", ["udp", "tcp"])
@pytest.mark.parametrize("state", STATES, ids=str)
@pytest.mark.parametrize("event", EVENTS)
def test_every_state_and_event(transport: str, state: ServerInviteState, event: str) -> None:
    source, table = TABLES[transport]
    t = drive(state, source)
    if t is None:
        assert (transport, state) == ("tcp", Confirmed)  # Timer I = 0 over TCP
        return
    expected_state, expected = table.get((state, event), (state, []))
    assert fire(t, event) == expected
    assert t.state is expected_state


def test_creation_sends_100_trying_and_passes_the_invite_to_the_tu() -> None:
    """§17.2.1: "the server transaction MUST generate a 100 (Trying) response"."""
    inv = _invite()
    t = ServerInviteTransaction(inv, UAC, S)
    effects = t.start(0.0)
    assert summarize(effects, 0.0) == ["send 100", "deliver INVITE"]
    trying = effects[0]
    assert isinstance(trying, Transmit) and trying.peer == UAC
    assert trying.message.to.tag is None
    assert isinstance(effects[1], DeliverRequest) and effects[1].request is inv


def test_without_automatic_trying_an_invite_retransmission_is_absorbed() -> None:
    inv = _invite()
    t = ServerInviteTransaction(inv, UAC, S, send_trying=False)
    assert summarize(t.start(0.0), 0.0) == ["deliver INVITE"]
    assert t.receive(inv, 0.5) == []
    t.send_response(make_response(inv, 183, to_tag="x"), 1.0)
    assert summarize(t.receive(inv, 1.5), 1.5) == ["send 183"]


def test_given_a_486_over_udp_timer_g_doubles_to_t2_and_timer_h_fires_at_64_t1() -> None:
    """§17.2.1: the final is retransmitted at T1, 2*T1, … capped at T2; "If timer H fires
    while in the Completed state, it implies that the ACK was never received" → the TU is
    told and the transaction terminates."""
    inv = _invite()
    t = ServerInviteTransaction(inv, UAC, S)
    t.start(0.0)
    t.send_response(make_response(inv, 486, to_tag="uas"), 0.0)
    log = run_timers(t, until=100.0)
    sends = [when for when, what in log if what == "send 486"]
    intervals = [b - a for a, b in zip([0.0, *sends], sends, strict=False)]
    assert intervals == [0.5, 1, 2, 4, 4, 4, 4, 4, 4, 4]
    assert log[-3:] == [(32.0, "timeout H"), (32.0, "cancel G"), (32.0, "terminated")]


def test_given_the_ack_over_udp_timer_i_is_t4() -> None:
    inv = _invite()
    t = ServerInviteTransaction(inv, UAC, S)
    t.start(0.0)
    final = make_response(inv, 404, to_tag="uas")
    t.send_response(final, 0.0)
    t.receive(ack_for(inv, final), 3.0)
    assert t.armed_timers == {Timer.I: 8.0}
    assert t.receive(ack_for(inv, final), 4.0) == []  # ACK retransmission absorbed
    assert run_timers(t, until=100.0) == [(8.0, "terminated")]


def test_given_a_2xx_timer_l_is_64_t1_and_late_tu_responses_are_dropped() -> None:
    inv = _invite()
    t = ServerInviteTransaction(inv, UAC, S)
    t.start(0.0)
    t.send_response(make_response(inv, 200, to_tag="uas"), 1.0)
    assert t.armed_timers == {Timer.L: 33.0}
    assert t.send_response(make_response(inv, 487, to_tag="uas"), 2.0) == []
    assert t.receive(inv, 2.5) == []  # RFC 6026: absorbed, the TU retransmits the 2xx
    assert run_timers(t, until=100.0) == [(33.0, "terminated")]


def test_retransmission_answered_with_most_recent_provisional() -> None:
    inv = _invite()
    t = ServerInviteTransaction(inv, UAC, S)
    t.start(0.0)
    ringing = make_response(inv, 180, to_tag="uas")
    t.send_response(ringing, 0.1)
    effects = t.receive(inv, 0.5)
    assert len(effects) == 1 and isinstance(effects[0], Transmit)
    assert effects[0].message is ringing
    assert t.local_tag == "uas"


def test_responses_go_where_the_via_says_received_and_rport() -> None:
    """§18.2.2 / RFC 3581: a NATed client (Via says 10.0.0.5:5060;rport) gets its responses
    at the address and port the request came from."""
    inv = request("INVITE", via_host="10.0.0.5", via_port=5060, rport=True)
    nat = Peer("udp", "203.0.113.7", 61000)
    t = ServerInviteTransaction(stamp_via_received(inv, nat), nat, S)
    assert t.peer == Peer("udp", "203.0.113.7", 61000)


def test_only_invite_may_start_a_server_invite_transaction() -> None:
    with pytest.raises(ValueError, match="INVITE"):
        ServerInviteTransaction(request("BYE"), UAC, S)
