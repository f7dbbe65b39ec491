"""Test kit for the dialog / INVITE-session layer: a virtual network that wires two
:class:`InviteSession` objects together through real serialisation (``to_bytes`` →
``parse_message``), a stand-in for the transaction layer (server transaction refs, Timer
B/F-like timeouts for lost requests) and a virtual clock driving the session timers.

Nothing here asserts; the tests do. (The module name only makes it importable next to the
tests; it has no test functions.)
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from switch.sip.dialog import LocalEndpoint
from switch.sip.invite_session import (
    CancelTimer,
    Effect,
    InviteSession,
    SendAck,
    SendCancel,
    SendRequest,
    SendResponse,
    SessionConfig,
    StartTimer,
    TimerKey,
)
from switch.sip.message import Request, Response
from switch.sip.parser import parse_message
from switch.sip.uri import parse_name_addr, parse_uri

TIMEOUT = 32.0  # 64*T1 with T1 = 0.5: what Timer B/F would wait


def endpoint(user: str, host: str, port: int = 5060, **kw: object) -> LocalEndpoint:
    return LocalEndpoint(contact=parse_uri(f"sip:{user}@{host}:{port}"), **kw)  # type: ignore[arg-type]


def wire(msg: Request | Response) -> Request | Response:
    """What the peer sees: the bytes, parsed again."""
    return parse_message(msg.to_bytes())


@dataclass(eq=False)
class Txn:
    """Stands for a server transaction: who sent the request and what was answered."""

    request: Request
    owner: Side
    responses: list[Response] = field(default_factory=list)
    final: bool = False


@dataclass(eq=False)
class Side:
    name: str
    session: InviteSession | None = None
    timers: dict[TimerKey, float] = field(default_factory=dict)
    effects: list[Effect] = field(default_factory=list)
    sent: list[Request | Response] = field(default_factory=list)
    received: list[Request | Response] = field(default_factory=list)
    acks_sent: list[Request] = field(default_factory=list)
    previous: list[list[Effect]] = field(default_factory=list)  # effects of replaced sessions

    def events(self, kind: type | None = None) -> list[object]:
        wire_types = (SendRequest, SendAck, SendCancel, SendResponse, StartTimer, CancelTimer)
        out = [e for e in self.effects if not isinstance(e, wire_types)]
        if kind is not None:
            out = [e for e in out if isinstance(e, kind)]
        return out

    def requests(self, method: str) -> list[Request]:
        return [m for m in self.sent if isinstance(m, Request) and m.method == method]

    def responses(self, status: int | None = None, method: str | None = None) -> list[Response]:
        out = [m for m in self.sent if isinstance(m, Response)]
        if status is not None:
            out = [m for m in out if m.status == status]
        if method is not None:
            out = [m for m in out if m.cseq.method == method]
        return out

    @property
    def s(self) -> InviteSession:
        assert self.session is not None
        return self.session


class Net:
    """Two sessions, one virtual clock. ``a`` is the caller (UAC), ``b`` is created by the
    first INVITE that reaches it. ``drop(msg) -> bool`` loses messages on the way."""

    def __init__(
        self,
        a_cfg: SessionConfig | None = None,
        b_cfg: SessionConfig | None = None,
        *,
        seed: int = 1,
        drop: Callable[[Request | Response], bool] | None = None,
    ) -> None:
        self.now = 0.0
        self.a_cfg = a_cfg or SessionConfig(local=endpoint("alice", "10.0.0.1"))
        self.b_cfg = b_cfg or SessionConfig(local=endpoint("bob", "10.0.0.2"))
        self.a = Side("a", InviteSession.uac(self.a_cfg, rng=random.Random(seed)))
        self.b = Side("b")
        self.seed = seed
        self.drop = drop or (lambda m: False)
        self.b_txns: list[Txn] = []
        self._work: deque[Callable[[], None]] = deque()
        self._later: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        # client transactions without a final response, for the Timer B/F stand-in
        self._open: dict[tuple[str, str, int, str], bool] = {}

    def peer(self, side: Side) -> Side:
        return self.b if side is self.a else self.a

    # -- driving -------------------------------------------------------------------------

    def call(self, side: Side, fn: Callable[[], list[Effect]]) -> list[Effect]:
        effects = fn()
        self.apply(side, effects)
        self.pump()
        return effects

    def invite(self, sdp: bytes | None = b"v=0 offer-a\r\n", **kw: object) -> None:
        self.call(self.a, lambda: self.a.s.invite(
            request_uri=parse_uri("sip:bob@10.0.0.2"),
            from_=parse_name_addr("Alice <sip:alice@example.com>"),
            to=parse_name_addr("Bob <sip:bob@example.com>"),
            sdp=sdp, now=self.now, **kw))  # type: ignore[arg-type]

    def pump(self) -> None:
        while self._work:
            self._work.popleft()()

    def advance(self, dt: float) -> None:
        """Move the clock by ``dt``, firing session timers and scheduled losses in order."""
        end = self.now + dt
        while True:
            nxt = self._next_due(end)
            if nxt is None:
                break
            t, fire = nxt
            self.now = max(self.now, t)
            fire()
            self.pump()
        self.now = end

    def _next_due(self, end: float) -> tuple[float, Callable[[], None]] | None:
        best: tuple[float, Callable[[], None]] | None = None
        for side in (self.a, self.b):
            for key, t in side.timers.items():
                if t <= end and (best is None or t < best[0]):
                    best = (t, self._timer_fire(side, key))
        if self._later and self._later[0][0] <= end and (
            best is None or self._later[0][0] < best[0]
        ):
            t, _, fn = heapq.heappop(self._later)
            return t, fn
        return best

    def _timer_fire(self, side: Side, key: TimerKey) -> Callable[[], None]:
        def fire() -> None:
            side.timers.pop(key, None)
            self.apply(side, side.s.on_timer(key, self.now))
        return fire

    def later(self, dt: float, fn: Callable[[], None]) -> None:
        heapq.heappush(self._later, (self.now + dt, next(self._seq), fn))

    # -- effects → deliveries --------------------------------------------------------------

    def apply(self, side: Side, effects: list[Effect]) -> None:
        side.effects.extend(effects)
        for e in effects:
            if isinstance(e, StartTimer):
                side.timers[e.key] = e.deadline
            elif isinstance(e, CancelTimer):
                side.timers.pop(e.key, None)
            elif isinstance(e, SendRequest):
                self._send_request(side, e.request)
            elif isinstance(e, SendAck):
                side.sent.append(e.request)
                side.acks_sent.append(e.request)
                self._deliver(side, e.request, None)
            elif isinstance(e, SendCancel):
                side.sent.append(e.cancel)
                self._deliver_cancel(side, e.cancel)
            elif isinstance(e, SendResponse):
                txn = e.server_txn
                assert isinstance(txn, Txn), txn
                side.sent.append(e.response)
                txn.responses.append(e.response)
                if e.response.status >= 200:
                    txn.final = True
                self._deliver_response(txn.owner, e.response)

    def _key(self, msg: Request | Response) -> tuple[str, str, int, str]:
        return (msg.call_id, msg.from_.tag or "", msg.cseq.seq, msg.cseq.method)

    def _send_request(self, side: Side, req: Request) -> None:
        side.sent.append(req)
        key = self._key(req)
        self._open[key] = False
        # Timer B / F stand-in: a request with no final response after 64*T1 times out
        # (an INVITE only while nothing at all came back, like Timer B in Calling).

        def timeout() -> None:
            if key in self._open and (req.method != "INVITE" or not self._open[key]):
                del self._open[key]
                self.apply(side, side.s.on_transaction_timeout(req, self.now))
        self.later(TIMEOUT, timeout)
        self._deliver(side, req, Txn(req, side))

    def _deliver(self, src: Side, req: Request, txn: Txn | None) -> None:
        if self.drop(req):
            return
        dst = self.peer(src)
        msg = wire(req)
        assert isinstance(msg, Request)

        def run() -> None:
            dst.received.append(msg)
            fresh_invite = msg.method == "INVITE" and msg.to.tag is None
            if dst.session is None or (fresh_invite and dst.s.terminated):
                # out of dialog: the adapter would make a new UAS session (a retry after
                # 422, say); anything else for an unknown session is dropped here
                if msg.method != "INVITE" or txn is None:
                    return
                self.b_txns.append(txn)
                if dst.session is not None:
                    # a new session: keep the old one's history apart
                    dst.previous.append(dst.effects)
                    dst.effects = []
                    dst.timers = {}
                session, effects = InviteSession.uas(
                    msg, txn, self.now, self.b_cfg, rng=random.Random(self.seed + 1))
                dst.session = session
                self.apply(dst, effects)
                return
            if txn is not None and msg.method == "INVITE":
                self.b_txns.append(txn)
            self.apply(dst, dst.s.on_request(msg, txn, self.now))
        self._work.append(run)

    def _deliver_cancel(self, src: Side, cancel: Request) -> None:
        if self.drop(cancel):
            return
        dst = self.peer(src)

        def run() -> None:
            dst.received.append(cancel)
            if dst.session is not None:
                self.apply(dst, dst.s.on_cancel(self.now))
        self._work.append(run)

    def _deliver_response(self, dst: Side, resp: Response) -> None:
        if self.drop(resp):
            return
        msg = wire(resp)
        assert isinstance(msg, Response)
        key = self._key(msg)

        def run() -> None:
            dst.received.append(msg)
            if key in self._open:
                if msg.status >= 200:
                    del self._open[key]
                else:
                    self._open[key] = True
            self.apply(dst, dst.s.on_response(msg, self.now))
        self._work.append(run)
