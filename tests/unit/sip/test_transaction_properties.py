"""Property tests: random sequences of network events, TU actions and timer expiries
never make a machine (or the layer) raise, never arm a timer in the past, and once the
stimuli stop every transaction terminates within 64*T1 + T4 of virtual time — provided the
TU does its part (answers every request, cancels a ringing INVITE it gives up on)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from switch.sip.addressing import Peer, stamp_via_received
from switch.sip.message import Request, make_response
from switch.sip.timers import Timer, TimerSettings
from switch.sip.transaction import (
    ClientInviteState,
    ClientInviteTransaction,
    ClientNonInviteTransaction,
    DeliverResponse,
    Effect,
    ServerInviteTransaction,
    ServerNonInviteTransaction,
    StartTimer,
    Terminated,
)
from switch.sip.transaction_layer import (
    NewRequest,
    OutgoingMessage,
    TransactionLayer,
)
from tests.unit.sip.test_transaction_support import (
    UAC,
    UAC_TCP,
    UAS,
    UAS_TCP,
    ack_for,
    request,
    response_to,
)

S = TimerSettings()
BOUND = 64 * S.t1 + S.t4
STATUSES = [100, 180, 183, 200, 202, 302, 404, 486, 487, 500, 503, 603]
Machine = (
    ClientInviteTransaction
    | ClientNonInviteTransaction
    | ServerInviteTransaction
    | ServerNonInviteTransaction
)

event = st.one_of(
    st.tuples(st.just("response"), st.sampled_from(STATUSES)),
    st.tuples(st.just("tu-response"), st.sampled_from(STATUSES)),
    st.tuples(st.just("retransmission"), st.just(0)),
    st.tuples(st.just("ack"), st.sampled_from([200, 486])),
    st.tuples(st.just("timer"), st.sampled_from(list(Timer))),
    st.tuples(st.just("transport-error"), st.just(0)),
    st.tuples(st.just("cancel"), st.just(0)),
)
steps = st.lists(st.tuples(st.floats(0, 40, allow_nan=False), event), max_size=25)


@dataclass
class Driver:
    machine: Machine
    now: float = 0.0
    terminated_at: float | None = None
    finals_delivered: int = 0

    def take(self, effects: list[Effect]) -> None:
        for e in effects:
            if isinstance(e, StartTimer):
                assert e.deadline >= self.now
            if isinstance(e, Terminated):
                assert self.terminated_at is None, "terminated twice"
                self.terminated_at = self.now
            if isinstance(e, DeliverResponse) and e.response.status >= 300:
                self.finals_delivered += 1
        assert self.machine.terminated == (self.terminated_at is not None)

    def run_timers(self, until: float) -> None:
        m = self.machine
        while not m.terminated and m.armed_timers:
            name, deadline = min(m.armed_timers.items(), key=lambda kv: kv[1])
            if deadline > until:
                break
            self.now = max(self.now, deadline)
            self.take(m.timer_fired(name, self.now))

    def apply(self, kind: str, arg: object) -> None:
        m = self.machine
        now = self.now
        req = m.request
        if kind == "response":
            assert isinstance(arg, int)
            self.take(m.receive(response_to(req, arg), now))
        elif kind == "tu-response":
            assert isinstance(arg, int)
            if isinstance(m, ServerInviteTransaction | ServerNonInviteTransaction):
                self.take(m.send_response(make_response(req, arg, to_tag="uas"), now))
        elif kind == "retransmission":
            self.take(m.receive(req, now))
        elif kind == "ack":
            assert isinstance(arg, int)
            if req.method == "INVITE":
                self.take(m.receive(ack_for(req, make_response(req, arg, to_tag="uas"),
                                            branch=req.top_via.branch), now))
        elif kind == "timer":
            assert isinstance(arg, Timer)
            self.take(m.timer_fired(arg, now))  # usually not due or not armed: ignored
        elif kind == "transport-error":
            self.take(m.transport_error(now))
        elif kind == "cancel" and isinstance(m, ClientInviteTransaction):
            self.take(m.request_cancel(now))

    def tu_does_its_part(self) -> None:
        m = self.machine
        if isinstance(m, ServerInviteTransaction | ServerNonInviteTransaction):
            self.take(m.send_response(make_response(m.request, 480, to_tag="uas"), self.now))
        if isinstance(m, ClientInviteTransaction) and m.state is ClientInviteState.PROCEEDING:
            self.take(m.request_cancel(self.now))


def _make(kind: str, reliable: bool) -> Machine:
    if kind == "ict":
        return ClientInviteTransaction(request("INVITE"), UAS_TCP if reliable else UAS, S)
    if kind == "nict":
        return ClientNonInviteTransaction(request("OPTIONS"), UAS_TCP if reliable else UAS, S)
    transport = "TCP" if reliable else "UDP"
    src = UAC_TCP if reliable else UAC
    if kind == "ist":
        return ServerInviteTransaction(request("INVITE", transport=transport), src, S)
    return ServerNonInviteTransaction(request("OPTIONS", transport=transport), src, S)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    kind=st.sampled_from(["ict", "nict", "ist", "nist"]),
    reliable=st.booleans(),
    script=steps,
)
def test_machines_never_raise_and_always_terminate(
    kind: str, reliable: bool, script: list[tuple[float, tuple[str, object]]]
) -> None:
    d = Driver(_make(kind, reliable))
    d.take(d.machine.start(0.0))
    last_stimulus = 0.0
    for dt, (ev, arg) in script:
        d.run_timers(d.now + dt)
        d.now += dt
        if not d.machine.terminated:
            last_stimulus = d.now
        d.apply(ev, arg)
    if not d.machine.terminated:
        last_stimulus = d.now
    d.tu_does_its_part()
    d.run_timers(float("inf"))
    assert d.machine.terminated, d.machine.state
    assert d.terminated_at is not None
    assert d.terminated_at <= last_stimulus + BOUND
    assert d.finals_delivered <= 1  # a non-2xx final reaches the TU once
    # Once terminated, nothing does anything.
    for ev, arg in [("response", 200), ("retransmission", 0), ("transport-error", 0)]:
        before = d.terminated_at
        d.apply(ev, arg)
        assert d.terminated_at == before


# ----------------------------------------------------------------------------- layer

PEERS = [UAC, Peer("udp", "192.0.2.30", 5060), UAC_TCP]
layer_event = st.one_of(
    st.tuples(st.just("in-request"), st.sampled_from(["INVITE", "OPTIONS", "BYE", "CANCEL",
                                                       "ACK"]), st.integers(0, 3),
              st.integers(0, 2)),
    st.tuples(st.just("in-response"), st.sampled_from(STATUSES), st.integers(0, 5),
              st.integers(0, 2)),
    st.tuples(st.just("send-request"), st.sampled_from(["INVITE", "OPTIONS"]),
              st.integers(0, 1000), st.integers(0, 1)),
    st.tuples(st.just("tu-respond"), st.sampled_from(STATUSES), st.integers(0, 20),
              st.integers(0, 0)),
    st.tuples(st.just("tu-cancel"), st.just(0), st.integers(0, 20), st.integers(0, 0)),
    st.tuples(st.just("transport-error"), st.just(0), st.integers(0, 2), st.integers(0, 0)),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(script=st.lists(st.tuples(st.floats(0, 20, allow_nan=False), layer_event),
                       max_size=30))
def test_layer_never_raises_and_empties(
    script: list[tuple[float, tuple[str, object, int, int]]]
) -> None:
    layer = TransactionLayer(S, retransmit_2xx=True)
    now = 0.0
    servers: list[ServerInviteTransaction | ServerNonInviteTransaction] = []
    clients: list[ClientInviteTransaction | ClientNonInviteTransaction] = []
    sent_requests: list[Request] = []
    last = 0.0

    def run(until: float) -> None:
        while (dl := layer.next_deadline()) is not None and dl <= until:
            collect(layer.advance(dl))

    def collect(events: Sequence[object]) -> None:
        for e in events:
            if isinstance(e, NewRequest) and e.server_txn is not None:
                servers.append(e.server_txn)
            if isinstance(e, OutgoingMessage):
                assert e.peer.port > 0

    for dt, (kind, a, b, c) in script:
        run(now + dt)
        now += dt
        last = now
        if kind == "in-request":
            assert isinstance(a, str)
            src = PEERS[c]
            tr = src.transport.upper()
            if a == "ACK":
                inv = request("INVITE", branch=f"z9hG4bK-{b}", transport=tr)
                msg = ack_for(inv, make_response(inv, 200 if b % 2 else 486, to_tag="uas"))
            else:
                msg = request(a, branch=f"z9hG4bK-{b}" if b else None, transport=tr,
                              to_tag="t" if a == "BYE" else None)
            collect(layer.receive(stamp_via_received(msg, src), src, now))
        elif kind == "in-response":
            assert isinstance(a, int)
            if sent_requests:
                req = sent_requests[b % len(sent_requests)]
                collect(layer.receive(response_to(req, a), UAS, now))
        elif kind == "send-request":
            assert isinstance(a, str)
            req = request(a, branch=f"z9hG4bK-out{b}", via_host="192.0.2.1")
            if any(r.top_via.branch == req.top_via.branch for r in sent_requests):
                continue
            txn, events = layer.send_request(req, [UAS, UAS_TCP][c], now)
            sent_requests.append(req)
            clients.append(txn)
            collect(events)
        elif kind == "tu-respond":
            assert isinstance(a, int)
            if servers:
                stxn = servers[b % len(servers)]
                collect(layer.send_response(stxn, make_response(stxn.request, a, to_tag="u"), now))
        elif kind == "tu-cancel":
            if clients:
                collect(layer.cancel(clients[b % len(clients)], now))
        elif kind == "transport-error":
            collect(layer.transport_error(PEERS[b], now))
    # The TU does its part: answer everything, cancel ringing INVITEs.
    for stxn in servers:
        if not stxn.terminated:
            collect(layer.send_response(stxn, make_response(stxn.request, 500, to_tag="u"), now))
    for ctxn in clients:
        if isinstance(ctxn, ClientInviteTransaction) and not ctxn.terminated:
            collect(layer.cancel(ctxn, now))
    end = now
    while (dl := layer.next_deadline()) is not None:
        assert dl <= last + BOUND + 1e-6, (dl, last)
        events = layer.advance(dl)
        collect(events)
        end = dl
    assert len(layer) == 0 and layer.pending_2xx == 0, (layer.client_transactions,
                                                          layer.server_transactions)
    assert end <= last + BOUND + 1e-6
