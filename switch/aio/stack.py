"""The SIP stack adapter: transports ↔ sans-I/O parser/validator ↔ transaction layer ↔ the
transaction user (registrar, B2BUA). It owns the loop clock and the one timer handle that
drives every SIP timer (``TransactionLayer.next_deadline``)."""

from __future__ import annotations

import asyncio
import contextvars
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

import structlog

from switch.aio.transports import TransportManager
from switch.metrics import SwitchMetrics
from switch.sip import transaction_layer as tl
from switch.sip.addressing import Peer, response_destination, stamp_via_received
from switch.sip.message import Request, Response, make_response
from switch.sip.parser import SipParseError, error_response, parse_message
from switch.sip.timers import TimerSettings
from switch.sip.uri import Via
from switch.trace import CallTraces, TraceEntry

log = structlog.get_logger("voicecall.sip")

MAGIC_COOKIE = "z9hG4bK"
# Branches of the ACKs (for 2xx) sent lately: the session resends the same ACK when a 2xx
# comes again, and that is a retransmission, not a new request.
_ACK_MEMORY = 4096


def new_branch() -> str:
    return MAGIC_COOKIE + secrets.token_hex(8)


def new_tag() -> str:
    return secrets.token_hex(6)


def _unmatchable(req: Request) -> str | None:
    """Why ``req`` cannot enter a transaction (a missing/unparseable Via, From, To,
    Call-ID or CSeq), or None."""
    try:
        req.top_via  # noqa: B018 - the accessors raise on a missing or bad field
        req.from_  # noqa: B018
        req.to  # noqa: B018
        if not req.call_id:
            return "Missing Call-ID"
        req.cseq  # noqa: B018
    except (SipParseError, ValueError) as e:
        return str(e) or "Bad Request"
    return None


def _with_to_tag(resp: Response) -> Response:
    """RFC 3261 §8.2.6.2: a UAS adds a To tag to every response but 100 (Trying). The
    session layer tags its dialog responses; the UA core's stateless answers (401, 200 to
    OPTIONS, 4xx from the §8.2 checks) get a fresh one here. A To that does not parse is
    echoed as it is (answering a 400)."""
    if resp.status <= 100:
        return resp
    value = resp.headers.get("To")
    if value is None:
        return resp
    try:
        to = resp.to
    except (SipParseError, ValueError):
        return resp
    if to.tag is not None:
        return resp
    return replace(resp, headers=resp.headers.set("To", str(to.with_tag(new_tag()))))


ResponseCallback = Callable[[Response | None], None]
"""Called with each response of a client transaction; ``None`` means it timed out or the
transport failed (the caller synthesises 408/503)."""


def _in_context(ctx: contextvars.Context, callback: ResponseCallback) -> ResponseCallback:
    def run(resp: Response | None) -> None:
        # A fresh copy each time: a context cannot be entered twice, and a synchronous
        # transport error while a response is handled can time out this same transaction.
        ctx.copy().run(callback, resp)
    return run


class TransactionUser(Protocol):
    def on_request(self, req: Request, txn: tl.ServerTransactionRef | None, source: Peer) -> None: ...
    def on_cancel(self, cancel: Request, invite_txn: tl.ServerTransactionRef | None) -> None: ...
    def on_server_failure(self, txn: tl.ServerTransactionRef, reason: str) -> None: ...
    def on_ack_timeout(self, resp: Response) -> None: ...
    def on_stray_response(self, resp: Response, source: Peer) -> None: ...


@dataclass(slots=True)
class StackCounters:
    messages_in: int = 0
    messages_out: int = 0
    bad_messages: int = 0
    stray_responses: int = 0


class SipStack:
    def __init__(
        self,
        *,
        advertise: str,
        user_agent: str,
        settings: TimerSettings,
        traces: CallTraces,
        max_message_bytes: int = 65535,
        metrics: SwitchMetrics | None = None,
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.advertise = advertise
        self.user_agent = user_agent
        self.settings = settings
        self.traces = traces
        self.max_message_bytes = max_message_bytes
        self.layer = tl.TransactionLayer(settings)
        self.transports: TransportManager | None = None
        self.tu: TransactionUser | None = None
        self.counters = StackCounters()
        self._callbacks: dict[object, ResponseCallback] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self.metrics = metrics if metrics is not None else SwitchMetrics()
        # Set-up times of initial INVITEs (no To tag), by transaction: started, and started
        # once the first 18x was seen. Entries go with the final response / the transaction.
        self._inv_started: dict[object, float] = {}
        self._inv_ringing: dict[object, float] = {}
        self._acks_sent: dict[str, None] = {}
        self.metrics.sources.transactions = self._transaction_counts

    def _transaction_counts(self) -> tuple[int, int]:
        clients = len(self.layer.client_transactions)
        return clients, len(self.layer) - clients

    def attach(self, transports: TransportManager, tu: TransactionUser) -> None:
        self.transports = transports
        self.tu = tu

    # ----------------------------------------------------------------- input
    def on_bytes(self, data: bytes, source: Peer) -> None:
        try:
            self._on_bytes(data, source)
        except Exception:
            # A bug in one call's handling must not take the transport down with it.
            self.counters.bad_messages += 1
            self.metrics.bad_message("handler_error")
            log.exception("message handling failed", source=str(source))

    def _on_bytes(self, data: bytes, source: Peer) -> None:
        self.counters.messages_in += 1
        try:
            msg = parse_message(data, max_size=self.max_message_bytes)
        except SipParseError as e:
            self.counters.bad_messages += 1
            self.metrics.bad_message("too_large" if e.status == 513 else "parse")
            self._answer_bad_request(e, source)
            return
        self._trace(msg, data, "in", source)
        now = self.loop.time()
        if isinstance(msg, Request):
            self.metrics.request_in(msg.method)
            missing = _unmatchable(msg)
            if missing is not None:
                # The transaction layer cannot match a request without these (it drops
                # it); RFC 3261 §8.2 / RFC 4475 §3.3.1 "insuf" want a 400, sent statelessly.
                self.counters.bad_messages += 1
                self.metrics.bad_message("unmatchable")
                self._answer_bad_request(SipParseError(missing, partial=msg), source)
                return
            msg = stamp_via_received(msg, source)
        else:
            try:
                self.metrics.response_in(msg.cseq.method, msg.status)
            except ValueError:
                pass  # no usable CSeq: the layer drops it below and counts it unmatchable
        dropped = self.layer.counters.dropped
        effects = self.layer.receive(msg, source, now)
        if self.layer.counters.dropped != dropped:
            self.metrics.bad_message("unmatchable")
        self._run(effects)

    def on_transport_error(self, peer: Peer, reason: str) -> None:
        log.info("transport error", peer=str(peer), reason=reason)
        self._run(self.layer.transport_error(peer, self.loop.time()))

    def _answer_bad_request(self, e: SipParseError, source: Peer) -> None:
        # RFC 3261 §16.3/§8.2: answer 400 when enough of the request parsed to route a
        # response; drop anything else (responses, garbage) silently.
        if e.partial is None:
            return
        try:
            # None for responses and ACK (never answered, §17.2.1); 400 with the reason,
            # or the status the parser chose (513 for an oversized message).
            answer = error_response(e)
        except Exception:  # the partial request lacks what a response needs
            return
        if answer is None:
            return
        if answer.status == 400:
            answer = make_response(e.partial, 400, f"Bad Request ({e.reason})"[:120])
        resp = _with_to_tag(answer)
        try:
            req = stamp_via_received(e.partial, source)
            dest = response_destination(req.top_via, source)
        except Exception:
            # The top Via itself is unreadable (RFC 4475 §3.1.2.1 "badinv01"): the packet's
            # source is the only address known, so answer there (symmetric, RFC 3581).
            dest = source
        self._transmit(resp, dest, resp.to_bytes())

    # ---------------------------------------------------------------- output
    def send_request(self, req: Request, peer: Peer, on_response: ResponseCallback) -> object:
        """Send a request in a new client transaction; returns the transaction handle.

        ``on_response`` runs in the context variables of the caller (like a callback of
        ``loop.call_soon``): a service call's task binds ``session_id`` for structlog, and
        what its legs log on their responses keeps it."""
        ctx = contextvars.copy_context()
        if len(ctx):
            on_response = _in_context(ctx, on_response)
        req = self.prepare_request(req, peer)
        now = self.loop.time()
        txn, effects = self.layer.send_request(req, peer, now)
        self._callbacks[txn] = on_response
        # An initial INVITE (ours: a To without tag; cheaper than parsing the To).
        if req.method == "INVITE" and ";tag=" not in (req.headers.get("To") or ""):
            self._inv_started[txn] = now
        self._run(effects)
        return txn

    def prepare_request(self, req: Request, peer: Peer) -> Request:
        """Fill in our Via (sent-by, branch, rport) and the defaults every request carries."""
        port = self.transports.local_port(peer.transport) if self.transports else 5060
        via = Via("SIP/2.0", peer.transport.upper(), self.advertise, port,
                  (("branch", new_branch()), ("rport", None)))
        headers = req.headers
        vias = headers.get_all("Via")
        if vias and "0.0.0.0" in vias[0]:
            # Placeholder Via from the dialog layer: replace it, keep its branch.
            old = req.top_via
            if old.branch:
                via = replace(via, params=(("branch", old.branch), ("rport", None)))
            headers = headers.remove("Via")
        elif req.method == "ACK" or req.method == "CANCEL":
            pass
        headers = headers.prepend("Via", str(via))
        if headers.get("Max-Forwards") is None:
            headers = headers.add("Max-Forwards", "70")
        if headers.get("User-Agent") is None and self.user_agent:
            headers = headers.add("User-Agent", self.user_agent)
        return replace(req, headers=headers)

    def cancel(self, txn: object) -> None:
        self._run(self.layer.cancel(txn, self.loop.time()))

    def send_response(self, txn: tl.ServerTransactionRef, resp: Response) -> None:
        resp = _with_to_tag(resp)
        if resp.headers.get("Server") is None and self.user_agent:
            resp = replace(resp, headers=resp.headers.add("Server", self.user_agent))
        now = self.loop.time()
        if resp.status > 100 and (self._inv_started or self._inv_ringing):
            self._setup_time(txn, resp.status, now, inbound=True)
        self._run(self.layer.send_response(txn, resp, now))

    def send_stateless(self, msg: Request | Response, peer: Peer) -> None:
        """ACK for 2xx and 2xx retransmissions: straight to the transport (RFC 3261 §13)."""
        again = False
        if isinstance(msg, Request) and msg.method == "ACK":
            again = self._ack_seen(msg)
        self._transmit(msg, peer, msg.to_bytes(), again)

    def _ack_seen(self, ack: Request) -> bool:
        """Whether this ACK (same branch: the session resends the very ACK it built) went
        out before; remembers the last ``_ACK_MEMORY`` branches. The branch is cut out of
        our own top Via's text: parsing the Via would cost ~10 µs an ACK."""
        via = ack.headers.get("Via") or ""
        start = via.find("branch=")
        if start < 0:
            return False
        branch = via[start + 7:].split(";", 1)[0].split(",", 1)[0]
        sent = self._acks_sent
        if branch in sent:
            return True
        sent[branch] = None
        if len(sent) > _ACK_MEMORY:
            del sent[next(iter(sent))]
        return False

    def _setup_time(self, txn: object, status: int, now: float, *, inbound: bool) -> None:
        """PDD (first 18x) and answer time (2xx) of an initial INVITE transaction."""
        if status < 200:
            started = self._inv_started.pop(txn, None)
            if started is not None:
                self.metrics.pdd(now - started, inbound=inbound)
                self._inv_ringing[txn] = started
            return
        started = self._inv_started.pop(txn, None)
        if started is None:
            started = self._inv_ringing.pop(txn, None)
        if started is not None and status < 300:
            self.metrics.answer_time(now - started, inbound=inbound)

    def respond_stateless(self, req: Request, source: Peer, resp: Response) -> None:
        self._transmit(resp, response_destination(req.top_via, source), resp.to_bytes())

    # ---------------------------------------------------------------- effects
    def _run(self, effects: Sequence[object]) -> None:
        for eff in effects:
            if isinstance(eff, tl.OutgoingMessage):
                # A server transaction's request method is the CSeq method of its responses
                # (parsing our own CSeq again would cost more than the counting).
                txn = eff.txn
                self._transmit(eff.message, eff.peer, eff.message.to_bytes(), eff.retransmission,
                               txn.request.method if txn is not None else None)
            elif isinstance(eff, tl.NewRequest):
                req = eff.request
                if (eff.server_txn is not None and req.method == "INVITE"
                        and req.to.tag is None):
                    self._inv_started[eff.server_txn] = self.loop.time()
                if self.tu is not None:
                    self.tu.on_request(req, eff.server_txn, eff.source)
            elif isinstance(eff, tl.ResponseReceived):
                if self._inv_started or self._inv_ringing:
                    status = eff.response.status
                    if status > 100:
                        self._setup_time(eff.client_txn, status, self.loop.time(),
                                         inbound=False)
                cb = self._callbacks.get(eff.client_txn)
                if cb is not None:
                    cb(eff.response)
                else:
                    self.counters.stray_responses += 1
            elif isinstance(eff, tl.TransactionTimedOut):
                cb = self._callbacks.pop(eff.client_txn, None)
                if cb is not None:
                    cb(None)
            elif isinstance(eff, tl.TransactionTerminated):
                self._callbacks.pop(eff.txn, None)
                if self._inv_started or self._inv_ringing:
                    self._inv_started.pop(eff.txn, None)
                    self._inv_ringing.pop(eff.txn, None)
            elif isinstance(eff, tl.CancelReceived):
                if self.tu is not None:
                    self.tu.on_cancel(eff.cancel, eff.invite_txn)
            elif isinstance(eff, tl.StrayResponse):
                self.counters.stray_responses += 1
                if self.tu is not None:
                    self.tu.on_stray_response(eff.response, eff.source)
            elif isinstance(eff, tl.ServerTransactionFailed):
                if self.tu is not None:
                    self.tu.on_server_failure(eff.server_txn, str(eff.reason))
            elif isinstance(eff, tl.AckNotReceived) and self.tu is not None:
                self.tu.on_ack_timeout(eff.response)
        self._schedule()

    def _transmit(self, msg: Request | Response, peer: Peer, data: bytes,
                  retransmission: bool = False, method: str | None = None) -> None:
        if self.transports is None:
            return
        self.counters.messages_out += 1
        if isinstance(msg, Request):
            self.metrics.request_out(msg.method, retransmission=retransmission)
        else:
            if method is None:
                try:
                    method = msg.cseq.method
                except ValueError:  # a 400 to a request whose CSeq did not parse
                    method = "other"
            self.metrics.response_out(method, msg.status, retransmission=retransmission)
        self._trace(msg, data, "out", peer)
        self.transports.send(data, peer)

    def _schedule(self) -> None:
        deadline = self.layer.next_deadline()
        if deadline is None:
            return
        if self._timer_at is not None and self._timer_at <= deadline:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = deadline
        self._timer = self.loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        self._run(self.layer.advance(self.loop.time()))

    def _trace(self, msg: Request | Response, data: bytes, direction: str, peer: Peer) -> None:
        if self.traces.max_calls == 0:
            return
        try:
            call_id = msg.call_id
        except Exception:
            return
        first = data.split(b"\r\n", 1)[0].decode("utf-8", "replace")
        port = self.transports.local_port(peer.transport) if self.transports else 0
        self.traces.add(call_id, TraceEntry(time.time(), direction, peer.transport,
                                            f"{self.advertise}:{port}", f"{peer.host}:{peer.port}",
                                            first, data))

    async def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self.transports is not None:
            await self.transports.close()
