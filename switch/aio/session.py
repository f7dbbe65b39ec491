"""asyncio adapter for one ``InviteSession``: carries out its effects on the ``SipStack``
(requests through client transactions, ACKs and responses, loop timers) and hands its
session events to a sink (the ``Leg``)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog

from switch.aio.stack import SipStack
from switch.sip import invite_session as inv
from switch.sip.addressing import Peer, request_destination
from switch.sip.message import Request, Response

log = structlog.get_logger("voicecall.session")

EventSink = Callable[[inv.SessionEvent], None]


class SessionAdapter:
    def __init__(
        self,
        stack: SipStack,
        session: inv.InviteSession,
        sink: EventSink,
        *,
        peer_override: Peer | None = None,
    ) -> None:
        self.stack = stack
        self.session = session
        self.sink = sink
        # A softphone behind NAT is reached at the address its REGISTER came from, not at
        # the (private) Contact it wrote (RFC 3261 §10 + RFC 3581 practice).
        self.peer_override = peer_override
        self._timers: dict[inv.TimerKey, asyncio.TimerHandle] = {}
        self._invite_txn: object | None = None
        self.closed = False

    @property
    def now(self) -> float:
        return self.stack.loop.time()

    def run(self, effects: list[inv.Effect]) -> None:
        for eff in effects:
            if isinstance(eff, inv.SendRequest):
                self._send_request(eff.request, eff.next_hop)
            elif isinstance(eff, inv.SendAck):
                peer = self._peer_for(eff.next_hop)
                if peer is not None:
                    ack = self.stack.prepare_request(eff.request, peer)
                    self.stack.send_stateless(ack, peer)
            elif isinstance(eff, inv.SendCancel):
                if self._invite_txn is not None:
                    self.stack.cancel(self._invite_txn)
            elif isinstance(eff, inv.SendResponse):
                self.stack.send_response(eff.server_txn, eff.response)  # type: ignore[arg-type]
            elif isinstance(eff, inv.StartTimer):
                old = self._timers.pop(eff.key, None)
                if old is not None:
                    old.cancel()
                self._timers[eff.key] = self.stack.loop.call_at(
                    eff.deadline, self._on_timer, eff.key)
            elif isinstance(eff, inv.CancelTimer):
                old = self._timers.pop(eff.key, None)
                if old is not None:
                    old.cancel()
            else:
                self.sink(eff)

    def _peer_for(self, hop: object) -> Peer | None:
        if self.peer_override is not None:
            return self.peer_override
        try:
            return request_destination(hop)  # type: ignore[arg-type]
        except ValueError as e:
            log.info("no route to next hop", hop=str(hop), error=str(e))
            return None

    def _send_request(self, req: Request, hop: object) -> None:
        peer = self._peer_for(hop)
        if peer is None:
            self.run(self.session.on_transport_error(req, self.now))
            return

        def on_response(resp: Response | None, req: Request = req) -> None:
            if self.closed and resp is None:
                return
            if resp is None:
                self.run(self.session.on_transaction_timeout(req, self.now))
            else:
                self.run(self.session.on_response(resp, self.now))

        txn = self.stack.send_request(req, peer, on_response)
        if req.method == "INVITE" and (not self.session.dialog or self._invite_txn is None):
            self._invite_txn = txn

    def _on_timer(self, key: inv.TimerKey) -> None:
        self._timers.pop(key, None)
        self.run(self.session.on_timer(key, self.now))

    def close(self) -> None:
        """Forget every loop timer (the session is terminated and its grace time is over)."""
        for h in self._timers.values():
            h.cancel()
        self._timers.clear()
        self.closed = True
