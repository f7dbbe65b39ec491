"""The transaction layer (RFC 3261 §17): owns every transaction and one timer heap, matches
incoming messages to transactions (§17.1.3, §17.2.3 incl. RFC 2543 fallback), detects merged
requests (§8.2.2.2), answers CANCEL (§9.2) and — only when built with
``retransmit_2xx=True`` — retransmits 2xx to INVITE until the ACK (§13.3.1.4; by default
that stays the TU's job, e.g. ``InviteSession``), all sans-I/O.

Every input method takes ``now`` and returns a list of :data:`LayerEvent` for the adapter to
carry out in order: send the :class:`OutgoingMessage`, hand the rest to the TU. The adapter
keeps one OS timer armed at :meth:`TransactionLayer.next_deadline` and calls
:meth:`TransactionLayer.advance` when it fires.

Received requests should have their top Via stamped (``addressing.stamp_via_received``)
before :meth:`TransactionLayer.receive`; response routing works either way.

Memory: a transaction is dropped the moment it terminates. Upper bound on live server
transactions: requests/s × (TU answer time + 64*T1) — 32 s with default timers (Timer H /
J / L), T4 after an ACK. Client transactions live at most 64*T1 (B/F) + max(32 s, T4)
without a final response, or until 64*T1 after a CANCEL. ``max_server_transactions``
caps the total: past it new requests get a stateless 503 with Retry-After.
"""

from __future__ import annotations

import enum
import secrets
from collections.abc import Callable, Hashable
from dataclasses import dataclass

import structlog

from switch.sip.addressing import Peer, response_destination
from switch.sip.message import Request, Response, make_response
from switch.sip.timers import Timer, TimerHeap, TimerSettings
from switch.sip.transaction import (
    CancelTimer,
    ClientInviteState,
    ClientInviteTransaction,
    ClientNonInviteTransaction,
    ClientTransaction,
    DeliverRequest,
    DeliverResponse,
    Effect,
    Invite2xxRetransmitter,
    SendCancel,
    ServerInviteState,
    ServerInviteTransaction,
    ServerNonInviteTransaction,
    ServerTransaction,
    StartTimer,
    Terminated,
    Timeout,
    Transaction,
    Transmit,
    TransportFailed,
    has_rfc3261_branch,
)

log = structlog.get_logger("voicecall.sip.transaction_layer")

ServerTransactionRef = ServerTransaction
"""What the TU holds to answer a request (``send_response``)."""
ClientTransactionRef = ClientTransaction


class FailureReason(enum.StrEnum):
    TIMER_B = "Timer B"  # INVITE got no response: TU synthesises 408 (§8.1.3.1)
    TIMER_F = "Timer F"  # non-INVITE got no final response: 408
    TIMER_H = "Timer H"  # server INVITE: the ACK for our non-2xx final never came
    CANCEL_GUARD = "no final response 64*T1 after CANCEL"  # §9.1
    TRANSPORT = "transport error"  # §17.1.4 / §17.2.4: TU treats like 503 (§8.1.3.1)


_TIMEOUT_REASON = {
    Timer.B: FailureReason.TIMER_B,
    Timer.F: FailureReason.TIMER_F,
    Timer.H: FailureReason.TIMER_H,
    Timer.CANCEL_GUARD: FailureReason.CANCEL_GUARD,
}


# -------------------------------------------------------------------------- layer events


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    """Serialise ``message`` and send it to ``peer``. ``txn`` is the transaction it belongs
    to (None for stateless answers and 2xx retransmissions), for error reporting.
    ``retransmission``: a copy of something already sent (Timer A/E/G, the 2xx
    retransmitter, a response resent for a retransmitted request, a re-ACK, a TU 2xx or
    reliable-1xx retransmission), for metrics that count first transmissions only."""

    message: Request | Response
    peer: Peer
    txn: Transaction | None = None
    retransmission: bool = False


@dataclass(frozen=True, slots=True)
class NewRequest:
    """A new request for the TU. ``server_txn`` is the transaction to answer it through;
    None for an ACK to a 2xx (its own "transaction", §17.1.1.3 / §13.2.2.4)."""

    request: Request
    server_txn: ServerTransactionRef | None
    source: Peer


@dataclass(frozen=True, slots=True)
class ResponseReceived:
    """A response for the TU's client transaction (every 1xx, the final; for INVITE every
    2xx including retransmissions and forks — the TU ACKs each 2xx, §13.2.2.4)."""

    response: Response
    client_txn: ClientTransactionRef


@dataclass(frozen=True, slots=True)
class TransactionTimedOut:
    """A client transaction failed without a final response: Timer B/F (TU synthesises
    408), the §9.1 CANCEL guard, or a transport error (TU synthesises 503)."""

    client_txn: ClientTransactionRef
    reason: FailureReason = FailureReason.TIMER_B


@dataclass(frozen=True, slots=True)
class ServerTransactionFailed:
    """A server transaction failed: Timer H (the ACK never came) or a transport error."""

    server_txn: ServerTransactionRef
    reason: FailureReason


@dataclass(frozen=True, slots=True)
class TransactionTerminated:
    """The transaction is gone from the layer; the TU may forget its handle."""

    txn: Transaction


@dataclass(frozen=True, slots=True)
class StrayResponse:
    """A response matching no client transaction (§17.1.3). The TU may still want a 2xx
    to INVITE (a retransmission after Timer M, §13.2.2.4: re-ACK it); others are dropped."""

    response: Response
    source: Peer


@dataclass(frozen=True, slots=True)
class CancelReceived:
    """A CANCEL arrived (§9.2). The layer has already answered it (200 if it matched an
    INVITE server transaction, else 481). If ``invite_txn`` is still Proceeding the TU
    should answer the INVITE with 487, using ``invite_txn.local_tag`` as To tag if set."""

    cancel: Request
    invite_txn: ServerInviteTransaction | None


@dataclass(frozen=True, slots=True)
class AckNotReceived:
    """Our 2xx to an INVITE was retransmitted for 64*T1 without an ACK (§13.3.1.4): the
    dialog is confirmed but the TU SHOULD send BYE."""

    response: Response
    server_txn: ServerInviteTransaction | None


LayerEvent = (
    OutgoingMessage
    | NewRequest
    | ResponseReceived
    | TransactionTimedOut
    | ServerTransactionFailed
    | TransactionTerminated
    | StrayResponse
    | CancelReceived
    | AckNotReceived
)


# ----------------------------------------------------------------------------- matching

ClientKey = tuple[str, str]
ServerKey = tuple[Hashable, ...]
MergeKey = tuple[str | None, str, int, str]


def client_key_for_request(req: Request) -> ClientKey:
    branch = req.top_via.branch or ""
    return (branch, req.cseq.method if req.method != "ACK" else "INVITE")


def client_key_for_response(resp: Response) -> ClientKey:
    """§17.1.3: top Via branch + CSeq method (so a CANCEL's 200 never matches the INVITE)."""
    return (resp.top_via.branch or "", resp.cseq.method)


def _via_identity(req: Request) -> str:
    """The top Via for RFC 2543 matching, minus the parameters *we* add on receipt."""
    via = req.top_via.with_params(received=None, rport=None)
    return str(via).lower()


def server_key(
    req: Request,
    *,
    to_tag: str | None = None,
    use_to_tag: bool = True,
    method: str | None = None,
) -> ServerKey:
    """§17.2.3. With an RFC 3261 branch: branch + sent-by + method (ACK → INVITE). Without
    one (RFC 2543, RFC 4475 "badbranch"): Request-URI, To tag, From tag, Call-ID, CSeq and
    top Via. For an ACK the To tag to use is the one of *our response*, given by the
    caller; CANCEL uses its own method so it gets its own transaction (``method="INVITE"``
    finds the INVITE a CANCEL cancels, §9.2)."""
    via = req.top_via
    if method is None:
        method = "INVITE" if req.method == "ACK" else req.method
    if has_rfc3261_branch(via.branch):
        return ("3261", via.branch, via.host.lower(), via.port, method)
    tag = to_tag if not use_to_tag else req.to.tag
    return (
        "2543",
        str(req.uri),
        tag,
        req.from_.tag,
        req.call_id,
        req.cseq.seq,
        method,
        _via_identity(req),
    )


def _without_method(key: ServerKey) -> ServerKey:
    """A server key minus its method: what a CANCEL shares with the request it cancels."""
    return key[:-1] if key[0] == "3261" else (*key[:-2], key[-1])


def _merge_key(req: Request) -> MergeKey:
    return (req.from_.tag, req.call_id, req.cseq.seq, req.method)


def _default_tag() -> str:
    return secrets.token_hex(6)


# -------------------------------------------------------------------------------- layer


@dataclass(slots=True)
class LayerCounters:
    """Monotonic counters for metrics (the adapter exports them)."""

    client_transactions: int = 0  # started
    server_transactions: int = 0  # created by a new request
    retransmissions_absorbed: int = 0  # requests matched to a live server transaction
    stray_responses: int = 0
    merged_requests: int = 0  # answered 482 (§8.2.2.2)
    cancels: int = 0  # CANCELs answered (200 or 481)
    overload_rejections: int = 0  # stateless 503 past max_server_transactions
    timeouts: int = 0  # Timer B/F/H and the CANCEL guard
    transport_failures: int = 0
    dropped: int = 0  # messages unusable for matching


class TransactionLayer:
    """All transactions of one SIP stack. See the module docstring."""

    def __init__(
        self,
        settings: TimerSettings | None = None,
        *,
        send_trying: bool = True,
        retransmit_2xx: bool = False,
        max_server_transactions: int = 100_000,
        tag_factory: Callable[[], str] = _default_tag,
    ) -> None:
        self.settings = settings or TimerSettings()
        self.send_trying = send_trying
        self.retransmit_2xx = retransmit_2xx
        self.max_server_transactions = max_server_transactions
        self.tag_factory = tag_factory
        self._clients: dict[ClientKey, ClientTransaction] = {}
        self._servers: dict[ServerKey, ServerTransaction] = {}
        self._server_keys: dict[ServerTransaction, ServerKey] = {}
        self._merge: dict[MergeKey, ServerTransaction] = {}
        # §9.2: what a CANCEL can match — every live non-CANCEL server transaction, keyed
        # by its server key minus the method.
        self._cancellable: dict[ServerKey, ServerTransaction] = {}
        self._retransmitters: dict[tuple[str, int, str | None], Invite2xxRetransmitter] = {}
        self._internal_cancels: set[ClientNonInviteTransaction] = set()
        self._timers = TimerHeap()
        self.counters = LayerCounters()

    # --------------------------------------------------------------------- inspection
    @property
    def client_transactions(self) -> tuple[ClientTransaction, ...]:
        return tuple(self._clients.values())

    @property
    def server_transactions(self) -> tuple[ServerTransaction, ...]:
        return tuple(self._servers.values())

    @property
    def pending_2xx(self) -> int:
        return len(self._retransmitters)

    def __len__(self) -> int:
        return len(self._clients) + len(self._servers)

    def next_deadline(self) -> float | None:
        """Absolute time of the earliest armed timer, or None."""
        return self._timers.next_deadline()

    def find_server_transaction(self, req: Request) -> ServerTransaction | None:
        try:
            return self._servers.get(server_key(req))
        except ValueError:
            return None

    # ---------------------------------------------------------------------- TU → wire
    def send_request(
        self, req: Request, peer: Peer, now: float
    ) -> tuple[ClientTransaction, list[LayerEvent]]:
        """Start a client transaction for ``req`` (its top Via must carry a fresh RFC 3261
        branch — the adapter's ``prepare_request`` adds it). ACK is never sent this way:
        ACK for 2xx goes out statelessly, ACK for non-2xx is built by the transaction."""
        if req.method == "ACK":
            raise ValueError("ACK has no client transaction; send it statelessly")
        if not has_rfc3261_branch(req.top_via.branch):
            raise ValueError("request needs a top Via with an RFC 3261 branch (z9hG4bK...)")
        key = client_key_for_request(req)
        if key in self._clients:
            raise ValueError(f"branch {key[0]} already used by a live client transaction")
        txn: ClientTransaction
        if req.method == "INVITE":
            txn = ClientInviteTransaction(req, peer, self.settings)
        else:
            txn = ClientNonInviteTransaction(req, peer, self.settings)
        self._clients[key] = txn
        self.counters.client_transactions += 1
        log.debug("client transaction", method=req.method, branch=key[0], peer=str(peer),
                  call_id=req.call_id)
        out: list[LayerEvent] = []
        self._apply(txn, txn.start(now), now, out)
        return txn, out

    def cancel(self, txn: ClientTransaction | object, now: float) -> list[LayerEvent]:
        """Cancel a pending INVITE (§9.1): the CANCEL goes out now if a provisional came,
        else on the first provisional. No-op for anything else / once final."""
        out: list[LayerEvent] = []
        if isinstance(txn, ClientInviteTransaction) and not txn.terminated:
            self._apply(txn, txn.request_cancel(now), now, out)
        return out

    def send_response(
        self, txn_or_req: ServerTransaction | Request | object, resp: Response, now: float
    ) -> list[LayerEvent]:
        """Send the TU's response through its server transaction (given directly or as
        the request it answers). With ``retransmit_2xx=True`` a 2xx to INVITE also starts
        the §13.3.1.4 retransmitter (stopped by the ACK, ``AckNotReceived`` after 64*T1).
        Responses for unknown/terminated transactions are dropped with a log line."""
        out: list[LayerEvent] = []
        txn: ServerTransaction | None
        if isinstance(txn_or_req, Request):
            txn = self.find_server_transaction(txn_or_req)
        elif isinstance(txn_or_req, ServerInviteTransaction | ServerNonInviteTransaction):
            txn = txn_or_req
        else:
            raise TypeError(f"send_response needs a server transaction, got {txn_or_req!r}")
        if txn is None or txn.terminated:
            log.info("response dropped: no live server transaction", status=resp.status)
            return out
        # The TU resends its 2xx (RFC 6026 §8.7, Accepted) and reliable 1xx (RFC 3262 §3,
        # the same object again) through here.
        again = resp is txn.last_provisional or (
            isinstance(txn, ServerInviteTransaction)
            and txn.state is ServerInviteState.ACCEPTED
        )
        effects = txn.send_response(resp, now)
        self._apply(txn, effects, now, out, retransmission=again)
        if (
            self.retransmit_2xx
            and isinstance(txn, ServerInviteTransaction)
            and 200 <= resp.status < 300
            and any(isinstance(e, Transmit) for e in effects)
        ):
            self._start_retransmitter(resp, txn, now, out)
        return out

    # ---------------------------------------------------------------------- wire → TU
    def receive(self, msg: Request | Response, source: Peer, now: float) -> list[LayerEvent]:
        out: list[LayerEvent] = []
        try:
            if isinstance(msg, Response):
                self._receive_response(msg, source, now, out)
            else:
                self._receive_request(msg, source, now, out)
        except ValueError as e:  # SipParseError included: a header the matcher needs
            self.counters.dropped += 1
            log.info("message dropped: unusable for transaction matching", error=str(e),
                     source=str(source))
        except Exception:
            # Network input must never take the stack down; a bug here is logged loudly.
            self.counters.dropped += 1
            log.exception("message dropped: transaction layer error", source=str(source))
        return out

    def _receive_response(
        self, resp: Response, source: Peer, now: float, out: list[LayerEvent]
    ) -> None:
        txn = self._clients.get(client_key_for_response(resp))
        if txn is None or txn.terminated:
            self.counters.stray_responses += 1
            log.debug("stray response", status=resp.status, method=resp.cseq.method,
                      call_id=resp.call_id, source=str(source))
            out.append(StrayResponse(resp, source))
            return
        # Completed: the final response came again because our ACK was lost; re-ACK.
        again = isinstance(txn, ClientInviteTransaction) and txn.state is ClientInviteState.COMPLETED
        self._apply(txn, txn.receive(resp, now), now, out, retransmission=again)

    def _receive_request(
        self, req: Request, source: Peer, now: float, out: list[LayerEvent]
    ) -> None:
        if req.method == "ACK":
            self._receive_ack(req, source, now, out)
            return
        key = server_key(req)
        txn = self._servers.get(key)
        if txn is not None:
            # A retransmission: the transaction absorbs it or resends its last response.
            self.counters.retransmissions_absorbed += 1
            self._apply(txn, txn.receive(req, now), now, out, retransmission=True)
            return
        if len(self._servers) >= self.max_server_transactions and not (
            # A CANCEL of a live INVITE is still honoured: it frees resources, and there
            # can be only one per INVITE (it shares the INVITE's branch and sent-by).
            req.method == "CANCEL"
            and isinstance(self._cancellable.get(_without_method(key)), ServerInviteTransaction)
        ):
            self.counters.overload_rejections += 1
            log.warning("server transaction limit reached: 503", method=req.method,
                        call_id=req.call_id, limit=self.max_server_transactions)
            self._reject_stateless(req, source, 503, "Service Unavailable", out,
                                   headers=(("Retry-After", "5"),))
            return
        if req.method == "CANCEL":
            self._receive_cancel(req, key, source, now, out)
            return
        new: ServerTransaction
        if req.method == "INVITE":
            new = ServerInviteTransaction(req, source, self.settings, send_trying=self.send_trying)
        else:
            new = ServerNonInviteTransaction(req, source, self.settings)
        merged = req.to.tag is None and self._merge.get(_merge_key(req)) is not None
        self._register_server(new, key, req)
        if merged:
            self.counters.merged_requests += 1
            log.info("merged request: 482", method=req.method, call_id=req.call_id,
                     branch=req.top_via.branch, source=str(source))
            # §8.2.2.2: same From tag, Call-ID and CSeq as a request already being handled,
            # arriving by another path (fork merge): 482 through a transaction of its own so
            # its retransmissions are absorbed; the TU never sees it.
            resp = make_response(req, 482, "Loop Detected", to_tag=self.tag_factory())
            self._apply(new, new.send_response(resp, now), now, out)
            return
        self.counters.server_transactions += 1
        self._apply(new, new.start(now), now, out)

    def _receive_ack(self, ack: Request, source: Peer, now: float, out: list[LayerEvent]) -> None:
        txn = self._find_ist_for_ack(ack)
        if txn is not None:
            if txn.state is ServerInviteState.ACCEPTED:
                self._stop_retransmitter(ack, now, out)
            self._apply(txn, txn.receive(ack, now), now, out, source)
            return
        # ACK for a 2xx: a transaction of its own that the TU/dialog handles (§17.2.3).
        self._stop_retransmitter(ack, now, out)
        out.append(NewRequest(ack, None, source))

    def _find_ist_for_ack(self, ack: Request) -> ServerInviteTransaction | None:
        if has_rfc3261_branch(ack.top_via.branch):
            candidates = [self._servers.get(server_key(ack))]
        else:
            # RFC 2543: the ACK's To tag is the tag of our response; the INVITE had either
            # the same tag (re-INVITE) or none (initial INVITE).
            candidates = [
                self._servers.get(server_key(ack)),
                self._servers.get(server_key(ack, to_tag=None, use_to_tag=False)),
            ]
        for txn in candidates:
            if isinstance(txn, ServerInviteTransaction) and not txn.terminated:
                if has_rfc3261_branch(ack.top_via.branch) or txn.request.to.tag is not None:
                    return txn
                if ack.to.tag is not None and ack.to.tag == txn.local_tag:
                    return txn
        return None

    def _receive_cancel(
        self, cancel: Request, key: ServerKey, source: Peer, now: float, out: list[LayerEvent]
    ) -> None:
        # §9.2: the request it cancels matches like a retransmission of it, method aside.
        target = self._cancellable.get(_without_method(key))
        txn = ServerNonInviteTransaction(cancel, source, self.settings)
        self._register_server(txn, key, cancel)
        self.counters.cancels += 1
        log.info("CANCEL", matched=None if target is None else target.request.method,
                 state=None if target is None else str(target.state), call_id=cancel.call_id)
        if target is None or target.terminated:
            resp = make_response(cancel, 481, "Call/Transaction Does Not Exist",
                                 to_tag=self.tag_factory())
            self._apply(txn, txn.send_response(resp, now), now, out)
            out.append(CancelReceived(cancel, None))
            return
        if not isinstance(target, ServerInviteTransaction):
            # "Regardless of the method of the original request, as long as the CANCEL
            # matched an existing transaction, the UAS answers the CANCEL request itself
            # with a 200 (OK)"; it has no effect on a non-INVITE.
            resp = make_response(cancel, 200, "OK", to_tag=target.local_tag or self.tag_factory())
            self._apply(txn, txn.send_response(resp, now), now, out)
            out.append(CancelReceived(cancel, None))
            return
        ist = target
        if ist.local_tag is None and ist.request.to.tag is None:
            # "The To tag of the response to the CANCEL and the response to the original
            # request SHOULD be the same": pick it now; the TU reuses ist.local_tag.
            ist.local_tag = self.tag_factory()
        tag = ist.request.to.tag or ist.local_tag
        resp = make_response(cancel, 200, "OK", to_tag=tag)
        self._apply(txn, txn.send_response(resp, now), now, out)
        out.append(CancelReceived(cancel, ist))

    def _reject_stateless(
        self,
        req: Request,
        source: Peer,
        status: int,
        reason: str,
        out: list[LayerEvent],
        headers: tuple[tuple[str, str], ...] = (),
    ) -> None:
        resp = make_response(req, status, reason, to_tag=req.to.tag or self.tag_factory(),
                             headers=headers)
        out.append(OutgoingMessage(resp, response_destination(req.top_via, source)))

    # ------------------------------------------------------------------------- timers
    def advance(self, now: float) -> list[LayerEvent]:
        """Fire every timer due at ``now`` (in deadline order)."""
        out: list[LayerEvent] = []
        while (due := self._timers.pop_due(now)) is not None:
            owner, name = due
            if isinstance(owner, Invite2xxRetransmitter):
                self._apply_retransmitter(owner, owner.timer_fired(name, now), now, out)
            elif isinstance(
                owner,
                ClientInviteTransaction
                | ClientNonInviteTransaction
                | ServerInviteTransaction
                | ServerNonInviteTransaction,
            ):
                # Timer A/E/G: the only transmissions a timer causes are retransmissions.
                self._apply(owner, owner.timer_fired(name, now), now, out, retransmission=True)
        return out

    # -------------------------------------------------------------------- transport
    def transport_error(self, peer: Peer, now: float) -> list[LayerEvent]:
        """The adapter could not send to / lost the connection to ``peer``: every live
        transaction (and 2xx retransmitter) towards it fails (§17.1.4, §17.2.4)."""
        out: list[LayerEvent] = []
        txns: list[Transaction] = [
            t for t in (*self._clients.values(), *self._servers.values())
            if t.peer.same_endpoint(peer)
        ]
        for txn in txns:
            if not txn.terminated:
                self._apply(txn, txn.transport_error(now), now, out)
        for rt in [r for r in self._retransmitters.values() if r.peer.same_endpoint(peer)]:
            self._apply_retransmitter(rt, rt.transport_error(now), now, out)
        return out

    def transaction_transport_error(self, txn: Transaction, now: float) -> list[LayerEvent]:
        """Sending a message of ``txn`` (``OutgoingMessage.txn``) failed."""
        out: list[LayerEvent] = []
        if not txn.terminated:
            self._apply(txn, txn.transport_error(now), now, out)
        return out

    # ------------------------------------------------------------------------ effects
    def _register_server(self, txn: ServerTransaction, key: ServerKey, req: Request) -> None:
        self._servers[key] = txn
        self._server_keys[txn] = key
        if req.method != "CANCEL":
            ckey = _without_method(key)
            # A client reusing one branch for two methods: the INVITE is what gets cancelled.
            if ckey not in self._cancellable or isinstance(txn, ServerInviteTransaction):
                self._cancellable[ckey] = txn
        if req.to.tag is None:
            self._merge.setdefault(_merge_key(req), txn)

    def _forget(self, txn: Transaction) -> None:
        self._timers.cancel_all(txn)
        if isinstance(txn, ClientInviteTransaction | ClientNonInviteTransaction):
            key = client_key_for_request(txn.request)
            if self._clients.get(key) is txn:
                del self._clients[key]
            if isinstance(txn, ClientNonInviteTransaction):
                self._internal_cancels.discard(txn)
        else:
            skey = self._server_keys.pop(txn, None)
            if skey is not None and self._servers.get(skey) is txn:
                del self._servers[skey]
            if skey is not None and self._cancellable.get(_without_method(skey)) is txn:
                del self._cancellable[_without_method(skey)]
            if txn.request.to.tag is None:
                mkey = _merge_key(txn.request)
                if self._merge.get(mkey) is txn:
                    del self._merge[mkey]

    def _apply(
        self,
        txn: Transaction,
        effects: list[Effect],
        now: float,
        out: list[LayerEvent],
        source: Peer | None = None,
        *,
        retransmission: bool = False,
    ) -> None:
        internal = txn in self._internal_cancels
        for eff in effects:
            if isinstance(eff, Transmit):
                out.append(OutgoingMessage(eff.message, eff.peer, txn, retransmission))
            elif isinstance(eff, StartTimer):
                self._timers.schedule(txn, eff.name, eff.deadline)
            elif isinstance(eff, CancelTimer):
                self._timers.cancel(txn, eff.name)
            elif isinstance(eff, DeliverResponse):
                if isinstance(txn, ClientInviteTransaction | ClientNonInviteTransaction):
                    if not internal:
                        out.append(ResponseReceived(eff.response, txn))
                    else:
                        log.debug("CANCEL answered", status=eff.response.status,
                                  call_id=eff.response.call_id)
            elif isinstance(eff, DeliverRequest):
                if isinstance(txn, ServerInviteTransaction | ServerNonInviteTransaction):
                    if eff.request.method == "ACK":
                        out.append(NewRequest(eff.request, None, source or txn.source))
                    else:
                        out.append(NewRequest(eff.request, txn, txn.source))
            elif isinstance(eff, Timeout | TransportFailed):
                reason = (
                    FailureReason.TRANSPORT
                    if isinstance(eff, TransportFailed)
                    else _TIMEOUT_REASON.get(eff.kind, FailureReason.TIMER_B)
                )
                if reason is FailureReason.TRANSPORT:
                    self.counters.transport_failures += 1
                else:
                    self.counters.timeouts += 1
                log.info("transaction failed", reason=str(reason), method=txn.request.method,
                         call_id=txn.request.call_id, peer=str(txn.peer))
                if isinstance(txn, ClientInviteTransaction | ClientNonInviteTransaction):
                    if not internal:
                        out.append(TransactionTimedOut(txn, reason))
                elif isinstance(txn, ServerInviteTransaction | ServerNonInviteTransaction):
                    out.append(ServerTransactionFailed(txn, reason))
            elif isinstance(eff, SendCancel):
                if isinstance(txn, ClientInviteTransaction):
                    self._start_cancel(txn, eff.request, now, out)
            elif isinstance(eff, Terminated):
                self._forget(txn)
                out.append(TransactionTerminated(txn))

    def _start_cancel(
        self, invite: ClientInviteTransaction, cancel: Request, now: float, out: list[LayerEvent]
    ) -> None:
        key = client_key_for_request(cancel)
        if key in self._clients:
            return
        ctxn = ClientNonInviteTransaction(cancel, invite.peer, self.settings)
        self._clients[key] = ctxn
        self._internal_cancels.add(ctxn)
        self._apply(ctxn, ctxn.start(now), now, out)

    # ------------------------------------------------------------ 2xx retransmission
    def _start_retransmitter(
        self, resp: Response, txn: ServerInviteTransaction, now: float, out: list[LayerEvent]
    ) -> None:
        rt = Invite2xxRetransmitter(resp, txn.peer, self.settings, server_txn=txn)
        if rt.key in self._retransmitters:
            return  # the TU resent the same 2xx; one retransmitter per 2xx is enough
        self._retransmitters[rt.key] = rt
        self._apply_retransmitter(rt, rt.start(now), now, out)

    def _stop_retransmitter(self, ack: Request, now: float, out: list[LayerEvent]) -> None:
        try:
            key = (ack.call_id, ack.cseq.seq, ack.to.tag)
        except ValueError:
            return
        rt = self._retransmitters.get(key)
        if rt is not None:
            self._apply_retransmitter(rt, rt.ack_received(now), now, out)

    def _apply_retransmitter(
        self, rt: Invite2xxRetransmitter, effects: list[Effect], now: float, out: list[LayerEvent]
    ) -> None:
        for eff in effects:
            if isinstance(eff, Transmit):
                # The retransmitter starts after the 2xx went out: it only ever resends.
                out.append(OutgoingMessage(eff.message, eff.peer, None, True))
            elif isinstance(eff, StartTimer):
                self._timers.schedule(rt, eff.name, eff.deadline)
            elif isinstance(eff, CancelTimer):
                self._timers.cancel(rt, eff.name)
            elif isinstance(eff, Timeout | TransportFailed):
                out.append(AckNotReceived(rt.response, rt.server_txn))
            elif isinstance(eff, Terminated):
                self._timers.cancel_all(rt)
                if self._retransmitters.get(rt.key) is rt:
                    del self._retransmitters[rt.key]


__all__ = [
    "AckNotReceived",
    "CancelReceived",
    "ClientInviteState",
    "ClientTransactionRef",
    "FailureReason",
    "LayerCounters",
    "LayerEvent",
    "NewRequest",
    "OutgoingMessage",
    "ResponseReceived",
    "ServerTransactionFailed",
    "ServerTransactionRef",
    "StrayResponse",
    "TransactionLayer",
    "TransactionTerminated",
    "TransactionTimedOut",
    "client_key_for_request",
    "client_key_for_response",
    "server_key",
]
