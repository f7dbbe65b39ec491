"""Non-INVITE server transaction (RFC 3261 §17.2.2, Figure 8), every state × event over UDP
and TCP. Events happen at t=10 s; timers fire at their own deadline. A provisional (for
Proceeding) was sent at t=0.5 s and the final (for Completed) at t=1 s."""

from __future__ import annotations

import pytest

from switch.sip.addressing import Peer
from switch.sip.message import Request, make_response
from switch.sip.timers import Timer, TimerSettings
from switch.sip.transaction import ServerNonInviteState, ServerNonInviteTransaction
from tests.unit.sip.test_transaction_support import (
    UAC,
    UAC_TCP,
    request,
    response_to,
    run_timers,
    summarize,
)

S = TimerSettings()
Trying = ServerNonInviteState.TRYING
Proceeding = ServerNonInviteState.PROCEEDING
Completed = ServerNonInviteState.COMPLETED
Terminated = ServerNonInviteState.TERMINATED

TU = {"TU 1xx": 100, "TU 2xx": 200, "TU 3xx": 302, "TU 4xx": 404, "TU 5xx": 500, "TU 6xx": 603}
FINAL = ("TU 2xx", "TU 3xx", "TU 4xx", "TU 5xx", "TU 6xx")
EVENTS = (
    "request retransmission",
    "another method arrives",
    *TU,
    "timer J",
    "transport error",
    "a response arrives",
)
STATES = (Trying, Proceeding, Completed, Terminated)

Row = tuple[ServerNonInviteState, list[str]]


def _table(reliable: bool) -> dict[tuple[ServerNonInviteState, str], Row]:
    t: dict[tuple[ServerNonInviteState, str], Row] = {
        # Trying: nothing to resend yet — retransmissions are absorbed.
        (Trying, "TU 1xx"): (Proceeding, ["send 100"]),
        (Trying, "transport error"): (Terminated, ["transport failed", "terminated"]),
        (Proceeding, "request retransmission"): (Proceeding, ["send 183"]),
        (Proceeding, "TU 1xx"): (Proceeding, ["send 100"]),
        (Proceeding, "transport error"): (Terminated, ["transport failed", "terminated"]),
    }
    for ev in FINAL:
        s = TU[ev]
        for st in (Trying, Proceeding):
            if reliable:  # Timer J is zero for reliable transports
                t[(st, ev)] = (Terminated, [f"send {s}", "terminated"])
            else:
                t[(st, ev)] = (Completed, [f"send {s}", "start J +32"])
    if not reliable:
        # Completed: the final answers every retransmission until J = 64*T1.
        t[(Completed, "request retransmission")] = (Completed, ["send 200"])
        t[(Completed, "timer J")] = (Terminated, ["terminated"])
        t[(Completed, "transport error")] = (
            Terminated, ["transport failed", "cancel J", "terminated"])
    return t


TABLES = {"udp": (UAC, _table(False)), "tcp": (UAC_TCP, _table(True))}


def _options(transport: str = "UDP") -> Request:
    return request("OPTIONS", branch="z9hG4bK-nist", call_id="nist@192.0.2.10",
                   transport=transport)


def drive(state: ServerNonInviteState, source: Peer) -> ServerNonInviteTransaction | None:
    req = _options(source.transport.upper())
    t = ServerNonInviteTransaction(req, source, S)
    t.start(0.0)
    if state is Proceeding:
        t.send_response(make_response(req, 183), 0.5)
    elif state is Completed:
        t.send_response(make_response(req, 200, to_tag="uas"), 1.0)
    elif state is Terminated:
        t.transport_error(0.5)
    return t if t.state is state else None


def fire(t: ServerNonInviteTransaction, event: str) -> list[str]:
    now = 10.0
    req = t.request
    if event == "request retransmission":
        return summarize(t.receive(req, now), now)
    if event == "another method arrives":
        return summarize(t.receive(request("BYE"), now), now)
    if event in TU:
        return summarize(t.send_response(make_response(req, TU[event], to_tag="u"), now), now)
    if event == "timer J":
        now = t.armed_timers.get(Timer.J, now)
        return summarize(t.timer_fired(Timer.J, now), now)
    if event == "transport error":
        return summarize(t.transport_error(now), now)
    assert event == "a response arrives"
    return summarize(t.receive(response_to(req, 200), now), now)


@pytest.mark.parametrize("transport", ["udp", "tcp"])
@pytest.mark.parametrize("state", STATES, ids=str)
@pytest.mark.parametrize("event", EVENTS)
def test_every_state_and_event(transport: str, state: ServerNonInviteState, event: str) -> None:
    source, table = TABLES[transport]
    t = drive(state, source)
    if t is None:
        assert (transport, state) == ("tcp", Completed)  # J = 0 over TCP
        return
    expected_state, expected = table.get((state, event), (state, []))
    assert fire(t, event) == expected
    assert t.state is expected_state


def test_creation_passes_the_request_to_the_tu() -> None:
    t = ServerNonInviteTransaction(_options(), UAC, S)
    assert summarize(t.start(0.0), 0.0) == ["deliver OPTIONS"]
    assert t.state is Trying


def test_given_a_final_over_udp_timer_j_is_64_t1() -> None:
    """§17.2.2: "Timer J ... 64*T1 seconds for unreliable transports"."""
    req = _options()
    t = ServerNonInviteTransaction(req, UAC, S)
    t.start(0.0)
    t.send_response(make_response(req, 200, to_tag="u"), 2.0)
    assert t.armed_timers == {Timer.J: 34.0}
    assert run_timers(t, until=100.0) == [(34.0, "terminated")]


def test_a_second_final_from_the_tu_is_dropped() -> None:
    req = _options()
    t = ServerNonInviteTransaction(req, UAC, S)
    t.start(0.0)
    t.send_response(make_response(req, 200, to_tag="u"), 1.0)
    assert t.send_response(make_response(req, 500, to_tag="u"), 1.5) == []


@pytest.mark.parametrize("method", ["INVITE", "ACK"])
def test_invite_and_ack_never_get_a_non_invite_server_transaction(method: str) -> None:
    with pytest.raises(ValueError, match=method):
        ServerNonInviteTransaction(request(method), UAC, S)
