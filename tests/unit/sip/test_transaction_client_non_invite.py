"""Non-INVITE client transaction (RFC 3261 §17.1.2, Figure 6), every state × event, over
UDP and TCP. Events happen at t=10 s; timers fire at their own deadline."""

from __future__ import annotations

import pytest

from switch.sip.addressing import Peer
from switch.sip.message import Request
from switch.sip.timers import Timer, TimerSettings
from switch.sip.transaction import ClientNonInviteState, ClientNonInviteTransaction
from tests.unit.sip.test_transaction_support import (
    UAS,
    UAS_TCP,
    request,
    response_to,
    run_timers,
    summarize,
)

S = TimerSettings()
Trying = ClientNonInviteState.TRYING
Proceeding = ClientNonInviteState.PROCEEDING
Completed = ClientNonInviteState.COMPLETED
Terminated = ClientNonInviteState.TERMINATED

STATUS = {"100": 100, "180": 180, "2xx": 200, "3xx": 302, "4xx": 404, "5xx": 500, "6xx": 600}
FINAL = ("2xx", "3xx", "4xx", "5xx", "6xx")
EVENTS = (*STATUS, "timer E", "timer F", "timer K", "transport error", "a request arrives")
STATES = (Trying, Proceeding, Completed, Terminated)

Row = tuple[ClientNonInviteState, list[str]]


def _udp_table() -> dict[tuple[ClientNonInviteState, str], Row]:
    t: dict[tuple[ClientNonInviteState, str], Row] = {
        # Trying: E armed at 0.5 s, F at 32 s.
        (Trying, "100"): (Proceeding, ["deliver 100"]),
        (Trying, "180"): (Proceeding, ["deliver 180"]),
        (Trying, "timer E"): (Trying, ["send OPTIONS", "start E +1"]),
        (Trying, "timer F"): (Terminated, ["timeout F", "cancel E", "terminated"]),
        (Trying, "transport error"): (
            Terminated, ["transport failed", "cancel E", "cancel F", "terminated"]),
        # Proceeding: E keeps running, and is reset to T2 when it fires (§17.1.2.2).
        (Proceeding, "100"): (Proceeding, ["deliver 100"]),
        (Proceeding, "180"): (Proceeding, ["deliver 180"]),
        (Proceeding, "timer E"): (Proceeding, ["send OPTIONS", "start E +4"]),
        (Proceeding, "timer F"): (Terminated, ["timeout F", "cancel E", "terminated"]),
        (Proceeding, "transport error"): (
            Terminated, ["transport failed", "cancel E", "cancel F", "terminated"]),
        # Completed: K = T4 absorbs response retransmissions.
        (Completed, "timer K"): (Terminated, ["terminated"]),
        (Completed, "transport error"): (Terminated, ["cancel K", "terminated"]),
    }
    for ev in FINAL:
        s = STATUS[ev]
        for st in (Trying, Proceeding):
            t[(st, ev)] = (Completed, ["cancel E", "cancel F", f"deliver {s}", "start K +5"])
    return t


def _tcp_table() -> dict[tuple[ClientNonInviteState, str], Row]:
    t: dict[tuple[ClientNonInviteState, str], Row] = {
        (Trying, "100"): (Proceeding, ["deliver 100"]),
        (Trying, "180"): (Proceeding, ["deliver 180"]),
        (Trying, "timer F"): (Terminated, ["timeout F", "terminated"]),
        (Trying, "transport error"): (Terminated, ["transport failed", "cancel F", "terminated"]),
        (Proceeding, "100"): (Proceeding, ["deliver 100"]),
        (Proceeding, "180"): (Proceeding, ["deliver 180"]),
        (Proceeding, "timer F"): (Terminated, ["timeout F", "terminated"]),
        (Proceeding, "transport error"): (
            Terminated, ["transport failed", "cancel F", "terminated"]),
    }
    for ev in FINAL:
        s = STATUS[ev]
        for st in (Trying, Proceeding):
            # Timer K is zero for reliable transports.
            t[(st, ev)] = (Terminated, ["cancel F", f"deliver {s}", "terminated"])
    return t


TABLES = {"udp": (UAS, _udp_table()), "tcp": (UAS_TCP, _tcp_table())}


def _options() -> Request:
    return request("OPTIONS", branch="z9hG4bK-nict", call_id="nict@192.0.2.10")


def drive(state: ClientNonInviteState, peer: Peer) -> ClientNonInviteTransaction | None:
    req = _options()
    t = ClientNonInviteTransaction(req, peer, S)
    t.start(0.0)
    if state is Proceeding:
        t.receive(response_to(req, 100), 0.1)
    elif state is Completed:
        t.receive(response_to(req, 200), 0.1)
    elif state is Terminated:
        t.transport_error(0.1)
    return t if t.state is state else None


def fire(t: ClientNonInviteTransaction, event: str) -> list[str]:
    now = 10.0
    if event in STATUS:
        return summarize(t.receive(response_to(t.request, STATUS[event]), now), now)
    if event.startswith("timer "):
        name = Timer(event.removeprefix("timer "))
        now = t.armed_timers.get(name, now)
        return summarize(t.timer_fired(name, now), now)
    if event == "transport error":
        return summarize(t.transport_error(now), now)
    assert event == "a request arrives"
    return summarize(t.receive(_options(), now), now)


@pytest.mark.parametrize("transport", ["udp", "tcp"])
@pytest.mark.parametrize("state", STATES, ids=str)
@pytest.mark.parametrize("event", EVENTS)
def test_every_state_and_event(transport: str, state: ClientNonInviteState, event: str) -> None:
    peer, table = TABLES[transport]
    t = drive(state, peer)
    if t is None:
        assert (transport, state) == ("tcp", Completed)  # K = 0 over TCP
        return
    expected_state, expected = table.get((state, event), (state, []))
    assert fire(t, event) == expected
    assert t.state is expected_state


def test_given_no_response_over_udp_timer_e_doubles_up_to_t2_then_timer_f_fires() -> None:
    """§17.1.2.2: retransmit at T1, then doubling intervals capped at T2 (0.5, 1, 2, 4, 4,
    …); at 64*T1 = 32 s Timer F informs the TU of a timeout."""
    t = ClientNonInviteTransaction(_options(), UAS, S)
    assert summarize(t.start(0.0), 0.0) == ["send OPTIONS", "start E +0.5", "start F +32"]
    log = run_timers(t, until=100.0)
    sends = [when for when, what in log if what == "send OPTIONS"]
    intervals = [b - a for a, b in zip([0.0, *sends], sends, strict=False)]
    assert intervals == [0.5, 1, 2, 4, 4, 4, 4, 4, 4, 4]
    assert sends[-1] == 31.5
    assert log[-3:] == [(32.0, "timeout F"), (32.0, "cancel E"), (32.0, "terminated")]


def test_given_a_provisional_retransmissions_continue_every_t2() -> None:
    t = ClientNonInviteTransaction(_options(), UAS, S)
    t.start(0.0)
    t.receive(response_to(t.request, 100), 0.2)
    log = run_timers(t, until=20.0)
    sends = [when for when, what in log if what == "send OPTIONS"]
    assert sends == [0.5, 4.5, 8.5, 12.5, 16.5]


def test_given_a_final_response_timer_k_is_t4() -> None:
    t = ClientNonInviteTransaction(_options(), UAS, S)
    t.start(0.0)
    t.receive(response_to(t.request, 200), 3.0)
    assert t.armed_timers == {Timer.K: 8.0}
    assert run_timers(t, until=100.0) == [(8.0, "terminated")]


def test_response_retransmissions_in_completed_are_absorbed() -> None:
    t = ClientNonInviteTransaction(_options(), UAS, S)
    t.start(0.0)
    final = response_to(t.request, 200)
    assert summarize(t.receive(final, 1.0), 1.0) == [
        "cancel E", "cancel F", "deliver 200", "start K +5"]
    assert t.receive(final, 1.1) == []
    assert t.final_response is final


@pytest.mark.parametrize("method", ["INVITE", "ACK"])
def test_invite_and_ack_never_get_a_non_invite_client_transaction(method: str) -> None:
    with pytest.raises(ValueError, match=method):
        ClientNonInviteTransaction(request(method), UAS, S)
