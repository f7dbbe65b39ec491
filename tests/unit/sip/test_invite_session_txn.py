"""The session layer on top of the real transaction layer (``transaction_layer.py``), both
sans-I/O, joined by a minimal adapter like the one the asyncio stack needs: it rewrites the
placeholder Via, turns effects into transaction-layer calls and routes layer events to
sessions with :class:`DialogIndex`. Bytes cross a virtual UDP wire (serialise, parse, stamp
the Via). This checks the contract between the two layers, not either one alone."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

from switch.sip import transaction_layer as tl
from switch.sip.addressing import Peer, request_destination, stamp_via_received
from switch.sip.dialog import PLACEHOLDER_SENT_BY, DialogIndex, LocalEndpoint
from switch.sip.invite_session import (
    Answered,
    AnswerReceived,
    CancelTimer,
    Confirmed,
    Effect,
    Ended,
    EndReason,
    Failed,
    InviteSession,
    OfferReceived,
    SendAck,
    SendCancel,
    SendRequest,
    SendResponse,
    SessionConfig,
    SessionState,
    StartTimer,
    TimerKey,
)
from switch.sip.message import Request, Response, make_response
from switch.sip.parser import parse_message
from switch.sip.uri import parse_name_addr, parse_uri

OFFER = b"v=0 offer\r\n"
ANSWER = b"v=0 answer\r\n"


@dataclass(eq=False)
class Stack:
    """One UA: a transaction layer, its sessions, and the adapter logic between them."""

    name: str
    addr: Peer
    wire: Wire
    layer: tl.TransactionLayer = field(default_factory=tl.TransactionLayer)
    index: DialogIndex[InviteSession] = field(default_factory=DialogIndex)
    by_server_txn: dict[object, InviteSession] = field(default_factory=dict)
    invite_txns: dict[tuple[str, int], object] = field(default_factory=dict)
    timers: dict[tuple[int, TimerKey], tuple[float, InviteSession]] = field(default_factory=dict)
    events: list[object] = field(default_factory=list)
    sessions: list[InviteSession] = field(default_factory=list)
    on_new_session: Callable[[InviteSession], None] | None = None

    @property
    def config(self) -> SessionConfig:
        return SessionConfig(local=LocalEndpoint(
            contact=parse_uri(f"sip:{self.name}@{self.addr.host}:{self.addr.port}")))

    # -- effects of a session --------------------------------------------------------------

    def run(self, s: InviteSession, effects: list[Effect]) -> None:
        now = self.wire.now
        if s.call_id and s.local_tag:
            self.index.add(s.call_id, s.local_tag, s)
        for e in effects:
            if isinstance(e, SendRequest):
                req = self.prepare(e.request)
                txn, evs = self.layer.send_request(req, request_destination(e.next_hop), now)
                if req.method == "INVITE":
                    self.invite_txns[(req.call_id, req.cseq.seq)] = txn
                self.handle(evs)
            elif isinstance(e, SendAck):
                ack = self.prepare(e.request)
                self.wire.send(self, ack, request_destination(e.next_hop))
            elif isinstance(e, SendCancel):
                txn = self.invite_txns[(e.invite.call_id, e.invite.cseq.seq)]
                self.handle(self.layer.cancel(txn, now))
            elif isinstance(e, SendResponse):
                self.handle(self.layer.send_response(e.server_txn, e.response, now))
            elif isinstance(e, StartTimer):
                self.timers[(id(s), e.key)] = (e.deadline, s)
            elif isinstance(e, CancelTimer):
                self.timers.pop((id(s), e.key), None)
            else:
                self.events.append(e)

    def prepare(self, req: Request) -> Request:
        """Fill our sent-by into the placeholder Via (keeping the branch)."""
        via = req.top_via
        if via.host != PLACEHOLDER_SENT_BY:
            return req
        new = replace(via, host=self.addr.host, port=self.addr.port)
        return replace(req, headers=req.headers.remove_first("Via").prepend("Via", str(new)))

    # -- events of the transaction layer ------------------------------------------------------

    def handle(self, evs: list[tl.LayerEvent]) -> None:
        now = self.wire.now
        for ev in evs:
            if isinstance(ev, tl.OutgoingMessage):
                self.wire.send(self, ev.message, ev.peer)
            elif isinstance(ev, tl.NewRequest):
                req = ev.request
                if req.method == "INVITE" and req.to.tag is None:
                    s, effects = InviteSession.uas(req, ev.server_txn, now, self.config)
                    self.sessions.append(s)
                    self.by_server_txn[ev.server_txn] = s
                    self.run(s, effects)
                    if self.on_new_session:
                        self.on_new_session(s)
                    continue
                found = self.index.for_request(req)
                if found is None:
                    if req.method != "ACK" and ev.server_txn is not None:
                        self.handle(self.layer.send_response(
                            ev.server_txn, DialogIndex.no_dialog(req), now))
                    continue
                self.run(found, found.on_request(req, ev.server_txn, now))
            elif isinstance(ev, tl.ResponseReceived | tl.StrayResponse):
                found = self.index.for_response(ev.response)
                if found is not None:
                    self.run(found, found.on_response(ev.response, now))
            elif isinstance(ev, tl.TransactionTimedOut):
                found = self.index.for_sent_request(ev.client_txn.request)
                if found is not None:
                    self.run(found, found.on_transaction_timeout(ev.client_txn.request, now))
            elif isinstance(ev, tl.CancelReceived):
                s = self.by_server_txn.get(ev.invite_txn) if ev.invite_txn else None
                if s is not None:
                    self.run(s, s.on_cancel(now))

    def due(self) -> float | None:
        times = [t for t, _ in self.timers.values()]
        nd = self.layer.next_deadline()
        if nd is not None:
            times.append(nd)
        return min(times) if times else None

    def fire(self) -> None:
        now = self.wire.now
        self.handle(self.layer.advance(now))
        for key, (t, s) in sorted(self.timers.items(), key=lambda kv: kv[1][0]):
            if t <= now and self.timers.get(key, (None,))[0] == t:
                del self.timers[key]
                self.run(s, s.on_timer(key[1], now))


@dataclass(eq=False)
class Wire:
    now: float = 0.0
    stacks: list[Stack] = field(default_factory=list)
    drop: Callable[[Request | Response], bool] = lambda m: False
    log: list[Request | Response] = field(default_factory=list)
    held: list[tuple[Stack, Request | Response, Peer]] | None = None

    def flush(self) -> None:
        """Deliver what is in flight, FIFO; what that triggers queues behind it."""
        queue = self.held or []
        self.held = queue
        while queue:
            src, msg, dest = queue.pop(0)
            self._deliver(src, msg, dest)
        self.held = None

    def send(self, src: Stack, msg: Request | Response, dest: Peer) -> None:
        if self.held is not None:
            self.held.append((src, msg, dest))  # in flight until flush(): crossing messages
            return
        self._deliver(src, msg, dest)

    def _deliver(self, src: Stack, msg: Request | Response, dest: Peer) -> None:
        parsed = parse_message(msg.to_bytes())
        self.log.append(parsed)
        if self.drop(parsed):
            return
        dst = next(s for s in self.stacks if s.addr.host == dest.host and s.addr.port == dest.port)
        if isinstance(parsed, Request):
            parsed = stamp_via_received(parsed, src.addr)
        dst.handle(dst.layer.receive(parsed, src.addr, self.now))

    def advance(self, dt: float) -> None:
        end = self.now + dt
        while True:
            dues = [(d, s) for s in self.stacks if (d := s.due()) is not None and d <= end]
            if not dues:
                break
            t, stack = min(dues, key=lambda x: x[0])
            self.now = max(self.now, t)
            stack.fire()
        self.now = end


def pair() -> tuple[Wire, Stack, Stack]:
    w = Wire()
    a = Stack("alice", Peer("udp", "127.0.0.1", 5061), w)
    b = Stack("bob", Peer("udp", "127.0.0.1", 5062), w)
    w.stacks += [a, b]
    return w, a, b


def call(w: Wire, a: Stack, sdp: bytes | None = OFFER) -> InviteSession:
    s = InviteSession.uac(a.config)
    a.run(s, s.invite(request_uri=parse_uri("sip:bob@127.0.0.1:5062"),
                      from_=parse_name_addr("<sip:alice@example.com>"),
                      to=parse_name_addr("<sip:bob@example.com>"), sdp=sdp, now=w.now))
    return s


def test_call_setup_and_teardown_over_real_transactions() -> None:
    w, a, b = pair()
    uac = call(w, a)
    [uas] = b.sessions
    # the transaction layer sent 100 Trying by itself; the session has nothing to add
    assert uas.state is SessionState.INCOMING
    b.run(uas, uas.provisional(180, w.now, reliable=True))
    assert uac.state is SessionState.EARLY
    assert any(isinstance(m, Request) and m.method == "PRACK" for m in w.log)
    b.run(uas, uas.answer(ANSWER, w.now))
    assert uac.state is SessionState.CONFIRMED and uas.state is SessionState.CONFIRMED
    assert next(e for e in a.events if isinstance(e, Answered)).sdp == ANSWER
    assert [e for e in b.events if isinstance(e, Confirmed)]
    # every request the layer sent carried our sent-by, not the placeholder
    assert all(m.top_via.host == "127.0.0.1" for m in w.log if isinstance(m, Request))
    w.advance(5)
    a.run(uac, uac.bye(w.now))
    assert uac.terminated and uas.terminated
    assert Ended(EndReason.BYE_RECEIVED) in b.events
    w.advance(40)  # every transaction finishes, no timer is left
    assert a.layer.client_transactions == () and b.layer.server_transactions == ()
    assert a.timers == {} and b.timers == {}


def test_cancel_through_the_transaction_layer() -> None:
    w, a, b = pair()
    uac = call(w, a)
    [uas] = b.sessions
    b.run(uas, uas.provisional(180, w.now))
    a.run(uac, uac.cancel(w.now))
    assert uas.terminated and Ended(EndReason.CANCELLED, 487) in b.events
    [failed] = [e for e in a.events if isinstance(e, Failed)]
    assert failed.status == 487
    w.advance(40)
    assert a.layer.client_transactions == () and b.layer.server_transactions == ()


def test_lost_ack_2xx_retransmitted_by_session_and_reacked() -> None:
    w, a, b = pair()
    dropped = {"n": 0}

    def drop(m: Request | Response) -> bool:
        if isinstance(m, Request) and m.method == "ACK" and dropped["n"] < 2:
            dropped["n"] += 1
            return True
        return False

    w.drop = drop
    uac = call(w, a)
    [uas] = b.sessions
    b.run(uas, uas.answer(ANSWER, w.now))
    assert uac.state is SessionState.CONFIRMED and uas.state is SessionState.CONNECTING
    w.advance(2)  # 2xx again at 0.5 and 1.5 s; the second re-ACK gets through
    assert uas.state is SessionState.CONFIRMED
    oks = [m for m in w.log if isinstance(m, Response) and m.status == 200
           and m.cseq.method == "INVITE"]
    acks = [m for m in w.log if isinstance(m, Request) and m.method == "ACK"]
    assert len(oks) == 3 and len(acks) == 3


def test_reinvite_and_glare_over_real_transactions() -> None:
    w, a, b = pair()
    uac = call(w, a)
    [uas] = b.sessions
    b.run(uas, uas.answer(ANSWER, w.now))
    a.run(uac, uac.reinvite(b"v=0 hold\r\n", w.now))
    [offer] = [e for e in b.events if isinstance(e, OfferReceived)]
    b.run(uas, uas.accept_offer(b"v=0 held\r\n", w.now))
    assert next(e for e in a.events if isinstance(e, AnswerReceived)).sdp == b"v=0 held\r\n"
    # glare: both at once, each gets 491 from the other
    w.held = []
    a.run(uac, uac.reinvite(b"v=0 a\r\n", w.now))
    b.run(uas, uas.reinvite(b"v=0 b\r\n", w.now))
    w.flush()  # the two INVITEs cross on the wire
    statuses = [m.status for m in w.log if isinstance(m, Response) and m.cseq.method == "INVITE"]
    assert statuses.count(491) == 2
    assert (id(uac), TimerKey.GLARE_RETRY) in a.timers
    assert (id(uas), TimerKey.GLARE_RETRY) in b.timers
    w.advance(2.05)  # bob (not the Call-ID owner) retries first
    offers = [e for e in a.events if isinstance(e, OfferReceived)]
    assert offers and offers[-1].sdp == b"v=0 b\r\n"
    a.run(uac, uac.accept_offer(b"v=0 a-ans\r\n", w.now))
    w.advance(5)
    assert [e for e in b.events if isinstance(e, OfferReceived)][-1].sdp == b"v=0 a\r\n"
    b.run(uas, uas.accept_offer(b"v=0 b-ans\r\n", w.now))
    assert uac.remote_sdp == b"v=0 b-ans\r\n" and uas.remote_sdp == b"v=0 a\r\n"
    assert offer.sdp == b"v=0 hold\r\n"


def test_in_dialog_request_for_unknown_dialog_is_answered_481() -> None:
    w, a, b = pair()
    uac = call(w, a)
    [uas] = b.sessions
    b.run(uas, uas.answer(ANSWER, w.now))
    d = uac.dialog
    assert d is not None
    b.index.remove(uas.call_id or "", uas.local_tag or "")  # bob forgot the call
    a.run(uac, uac.info("text/plain", b"x", w.now))
    assert any(isinstance(m, Response) and m.status == 481 for m in w.log)
    assert Ended(EndReason.DIALOG_GONE, 481) in a.events


def test_invite_timeout_without_any_response_fails_408() -> None:
    w, a, _b = pair()
    w.drop = lambda m: isinstance(m, Request) and m.method == "INVITE"
    uac = call(w, a)
    w.advance(33)
    [failed] = [e for e in a.events if isinstance(e, Failed)]
    assert failed.status == 408 and uac.terminated


def test_no_response_stray() -> None:
    # an unsolicited response to an INVITE we never sent is ignored by everyone
    w, a, _b = pair()
    uac = call(w, a)
    inv = next(m for m in w.log if isinstance(m, Request) and m.method == "INVITE")
    bogus = make_response(inv, 200, None, to_tag="x",
                          headers=[("Contact", "<sip:bob@127.0.0.1:5062>")])
    odd = parse_message(bogus.to_bytes().replace(b"CSeq: 1 INVITE", b"CSeq: 77 INVITE"))
    assert isinstance(odd, Response)
    assert uac.on_response(odd, w.now) == []
