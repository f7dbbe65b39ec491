"""The four RFC 3261 §17 transaction state machines, sans-I/O, with the RFC 6026 fixes.

Each machine is a plain object fed inputs that carry the current time (``start``,
``receive``, ``send_response``, ``timer_fired``, ``transport_error``) and returning a list of
effects (frozen dataclasses) for its owner — normally :class:`~switch.sip.transaction_layer.
TransactionLayer` — to carry out: transmit a message, arm/disarm a timer, hand something to
the transaction user (TU), or report that the transaction is over. Machines never read a
clock, never touch a socket and never raise on network input: a message or timer that makes
no sense in the current state is absorbed and returns no effect.

RFC 6026 is applied to INVITE 2xx handling: the client INVITE transaction moves to
*Accepted* on a 2xx and passes every further 2xx (retransmissions, forks) to the TU for 64*T1
(Timer M); the server INVITE transaction moves to *Accepted* when the TU sends a 2xx,
absorbs INVITE retransmissions and passes an ACK that matches it to the TU for 64*T1
(Timer L). Retransmitting the 2xx until the ACK arrives remains the TU's job
(§13.3.1.4) — see :class:`Invite2xxRetransmitter`.
"""

from __future__ import annotations

import enum
import secrets
from dataclasses import dataclass

import structlog

from switch.sip.addressing import Peer, response_destination
from switch.sip.headers import Headers
from switch.sip.message import Request, Response, make_response
from switch.sip.timers import Timer, TimerSettings

log = structlog.get_logger("voicecall.sip.transaction")

MAGIC_COOKIE = "z9hG4bK"
_EPSILON = 1e-9  # float slack when the owner fires a timer exactly at its deadline


def new_branch() -> str:
    """A fresh RFC 3261 branch (§8.1.1.7: magic cookie + something unique)."""
    return MAGIC_COOKIE + secrets.token_hex(8)


def has_rfc3261_branch(branch: str | None) -> bool:
    """True when ``branch`` carries the magic cookie *and* an identifier after it. A bare
    ``z9hG4bK`` (RFC 4475 §3.2.1, badbranch) is treated as no branch: RFC 2543 matching."""
    return branch is not None and branch.startswith(MAGIC_COOKIE) and len(branch) > 7


# --------------------------------------------------------------------------------- effects


@dataclass(frozen=True, slots=True)
class Transmit:
    """Send ``message`` to ``peer`` (requests and retransmissions, responses)."""

    message: Request | Response
    peer: Peer


@dataclass(frozen=True, slots=True)
class StartTimer:
    """Arm (or re-arm, replacing) timer ``name`` to fire at absolute time ``deadline``."""

    name: Timer
    deadline: float


@dataclass(frozen=True, slots=True)
class CancelTimer:
    name: Timer


@dataclass(frozen=True, slots=True)
class DeliverResponse:
    """Pass a response up to the TU (client transactions)."""

    response: Response


@dataclass(frozen=True, slots=True)
class DeliverRequest:
    """Pass a request up to the TU (server transactions: the request that created it, or an
    ACK matching an INVITE server transaction in the Accepted state)."""

    request: Request


@dataclass(frozen=True, slots=True)
class Timeout:
    """The transaction failed on a timer: B/F (client: TU synthesises 408, §8.1.3.1),
    H (server: the ACK never came), CANCEL_GUARD (§9.1), WAIT_ACK (2xx never ACKed)."""

    kind: Timer


@dataclass(frozen=True, slots=True)
class TransportFailed:
    """A fatal transport error (§17.1.4 / §17.2.4); the TU is informed."""


@dataclass(frozen=True, slots=True)
class Terminated:
    """The machine reached Terminated; its owner forgets it."""


@dataclass(frozen=True, slots=True)
class SendCancel:
    """A client INVITE transaction asks its owner to run a non-INVITE client transaction
    for this CANCEL (§9.1) to the INVITE's peer."""

    request: Request


Effect = (
    Transmit
    | StartTimer
    | CancelTimer
    | DeliverResponse
    | DeliverRequest
    | Timeout
    | TransportFailed
    | Terminated
    | SendCancel
)


# --------------------------------------------------------------------------------- states


class ClientInviteState(enum.StrEnum):
    CALLING = "Calling"
    PROCEEDING = "Proceeding"
    COMPLETED = "Completed"
    ACCEPTED = "Accepted"  # RFC 6026 §8.4
    TERMINATED = "Terminated"


class ClientNonInviteState(enum.StrEnum):
    TRYING = "Trying"
    PROCEEDING = "Proceeding"
    COMPLETED = "Completed"
    TERMINATED = "Terminated"


class ServerInviteState(enum.StrEnum):
    PROCEEDING = "Proceeding"
    COMPLETED = "Completed"
    CONFIRMED = "Confirmed"
    ACCEPTED = "Accepted"  # RFC 6026 §8.6
    TERMINATED = "Terminated"


class ServerNonInviteState(enum.StrEnum):
    TRYING = "Trying"
    PROCEEDING = "Proceeding"
    COMPLETED = "Completed"
    TERMINATED = "Terminated"


# ------------------------------------------------------------------------ request builders


def _route_headers(req: Request) -> list[str]:
    return list(req.headers.get_all("Route"))


def build_ack_for_non_2xx(invite: Request, response: Response) -> Request:
    """The ACK the client INVITE transaction sends for a 300–699 (§17.1.1.3): same
    Request-URI, Call-ID, From, CSeq number; To from the response (its tag); only the top
    Via of the INVITE (same branch); the INVITE's Route headers; no body."""
    h = Headers()
    h = h.add("Via", str(invite.top_via))
    mf = invite.headers.get("Max-Forwards")
    h = h.add("Max-Forwards", mf if mf is not None else "70")
    for route in _route_headers(invite):
        h = h.add("Route", route)
    h = h.add("From", _first(invite, "From"))
    h = h.add("To", _first(response, "To"))
    h = h.add("Call-ID", invite.call_id)
    h = h.add("CSeq", f"{invite.cseq.seq} ACK")
    h = h.add("Content-Length", "0")
    return Request("ACK", invite.uri, h)


def _first(msg: Request | Response, name: str) -> str:
    value = msg.headers.get(name)
    if value is None:
        raise ValueError(f"{name} header missing")
    return value


class CancelBuilder:
    """Builds the CANCEL for a client INVITE (§9.1) and decides when it may go out.

    §9.1: the CANCEL has the INVITE's Request-URI, Call-ID, To, From, CSeq number (method
    CANCEL), a single Via equal to the INVITE's top Via (same branch, so the server matches
    it to the INVITE transaction) and the INVITE's Route headers. "If no provisional response
    has been received, the CANCEL request MUST NOT be sent; rather, the client MUST wait for
    the arrival of a provisional response before sending the request." So
    :meth:`request_cancel` returns None until :meth:`on_provisional` is called; the INVITE's
    Timer B (or final response) ends the wait.
    """

    def __init__(self, invite: Request) -> None:
        self.invite = invite
        self.requested = False
        self.cancel: Request | None = None  # the CANCEL, once released

    @staticmethod
    def build(invite: Request) -> Request:
        h = Headers()
        h = h.add("Via", str(invite.top_via))
        mf = invite.headers.get("Max-Forwards")
        h = h.add("Max-Forwards", mf if mf is not None else "70")
        for route in _route_headers(invite):
            h = h.add("Route", route)
        h = h.add("From", _first(invite, "From"))
        h = h.add("To", _first(invite, "To"))
        h = h.add("Call-ID", invite.call_id)
        h = h.add("CSeq", f"{invite.cseq.seq} CANCEL")
        h = h.add("Content-Length", "0")
        return Request("CANCEL", invite.uri, h)

    def request_cancel(self, provisional_received: bool) -> Request | None:
        """The TU wants to cancel. Returns the CANCEL if it may be sent now."""
        self.requested = True
        return self._release(provisional_received)

    def on_provisional(self) -> Request | None:
        """A 1xx arrived. Returns the CANCEL if one was waiting for it."""
        return self._release(True)

    def _release(self, provisional_received: bool) -> Request | None:
        if self.requested and provisional_received and self.cancel is None:
            self.cancel = self.build(self.invite)
            return self.cancel
        return None


# ------------------------------------------------------------------------------- machines


class _Machine:
    """Timer bookkeeping shared by the four machines (and the 2xx retransmitter).

    A machine remembers which timers it armed so a stale or unknown ``timer_fired`` is
    ignored instead of corrupting the state.
    """

    state: enum.StrEnum

    def __init__(self, settings: TimerSettings, reliable: bool) -> None:
        self.settings = settings
        self.reliable = reliable
        self._armed: dict[Timer, float] = {}

    def __repr__(self) -> str:
        req = getattr(self, "request", None)
        what = f"{req.method} {getattr(self, 'branch', None)}" if req is not None else ""
        return f"<{type(self).__name__} {what} {self.state}>"

    @property
    def armed_timers(self) -> dict[Timer, float]:
        return dict(self._armed)

    @property
    def terminated(self) -> bool:
        return str(self.state) == "Terminated"

    def _arm(self, effects: list[Effect], name: Timer, deadline: float) -> None:
        self._armed[name] = deadline
        effects.append(StartTimer(name, deadline))

    def _disarm(self, effects: list[Effect], *names: Timer) -> None:
        for name in names:
            if self._armed.pop(name, None) is not None:
                effects.append(CancelTimer(name))

    def _terminate(self, effects: list[Effect]) -> None:
        self._disarm(effects, *list(self._armed))
        self._set_terminated()
        effects.append(Terminated())

    def _set_terminated(self) -> None:
        raise NotImplementedError

    def _take_timer(self, name: Timer, now: float) -> bool:
        """Consume an armed timer that is due; False if it was not armed or is not due yet
        (a stale or duplicated expiry from the owner's heap → ignore)."""
        deadline = self._armed.get(name)
        if self.terminated or deadline is None or now < deadline - _EPSILON:
            return False
        del self._armed[name]
        return True


class ClientInviteTransaction(_Machine):
    """INVITE client transaction (§17.1.1, Figure 5; RFC 6026 Figure 5).

    Timer B is cancelled on the first provisional: RFC 3261 only acts on it in Calling, and
    the TU bounds ringing itself (it cancels; the CANCEL guard then ends the transaction
    64*T1 after the CANCEL if no final response arrives, §9.1).
    """

    def __init__(self, request: Request, peer: Peer, settings: TimerSettings | None = None):
        if request.method != "INVITE":
            raise ValueError(f"ClientInviteTransaction needs an INVITE, got {request.method}")
        super().__init__(settings or TimerSettings(), peer.reliable)
        self.request = request
        self.peer = peer
        self.state: ClientInviteState = ClientInviteState.CALLING
        self.branch = request.top_via.branch
        self.ack: Request | None = None
        self.final_response: Response | None = None
        self.canceller = CancelBuilder(request)
        self._interval_a = self.settings.t1

    def _set_terminated(self) -> None:
        self.state = ClientInviteState.TERMINATED

    def start(self, now: float) -> list[Effect]:
        effects: list[Effect] = [Transmit(self.request, self.peer)]
        if not self.reliable:
            self._arm(effects, Timer.A, now + self._interval_a)
        self._arm(effects, Timer.B, now + self.settings.timeout_64t1)
        return effects

    def receive(self, msg: Request | Response, now: float) -> list[Effect]:
        if not isinstance(msg, Response) or not 100 <= msg.status <= 699:
            return []
        effects: list[Effect] = []
        status = msg.status
        s = self.state
        if s in (ClientInviteState.CALLING, ClientInviteState.PROCEEDING):
            if status < 200:
                if s is ClientInviteState.CALLING:
                    self._disarm(effects, Timer.A, Timer.B)
                    self.state = ClientInviteState.PROCEEDING
                effects.append(DeliverResponse(msg))
                cancel = self.canceller.on_provisional()
                if cancel is not None:
                    self._send_cancel(effects, cancel, now)
            elif status < 300:
                self._disarm(effects, Timer.A, Timer.B, Timer.CANCEL_GUARD)
                self.state = ClientInviteState.ACCEPTED
                self.final_response = msg
                effects.append(DeliverResponse(msg))
                self._arm(effects, Timer.M, now + self.settings.timeout_64t1)
            else:
                self._disarm(effects, Timer.A, Timer.B, Timer.CANCEL_GUARD)
                self.final_response = msg
                self.ack = build_ack_for_non_2xx(self.request, msg)
                effects.append(Transmit(self.ack, self.peer))
                effects.append(DeliverResponse(msg))
                self.state = ClientInviteState.COMPLETED
                d = self.settings.timer_d(self.reliable)
                if d > 0:
                    self._arm(effects, Timer.D, now + d)
                else:
                    self._terminate(effects)
        elif s is ClientInviteState.COMPLETED:
            # Retransmitted final response: our ACK was lost, resend it; the TU saw it already.
            if status >= 300 and self.ack is not None:
                effects.append(Transmit(self.ack, self.peer))
        elif s is ClientInviteState.ACCEPTED and 200 <= status < 300:
            # RFC 6026 §8.4: every 2xx (retransmission or another fork) goes to the TU,
            # which ACKs each one itself.
            effects.append(DeliverResponse(msg))
        return effects

    def request_cancel(self, now: float) -> list[Effect]:
        """The TU wants to cancel this INVITE (§9.1). Yields ``SendCancel`` now if a
        provisional arrived, else on the first provisional; nothing once a final response
        arrived (too late: the TU handles the final response)."""
        if self.state not in (ClientInviteState.CALLING, ClientInviteState.PROCEEDING):
            return []
        effects: list[Effect] = []
        cancel = self.canceller.request_cancel(self.state is ClientInviteState.PROCEEDING)
        if cancel is not None:
            self._send_cancel(effects, cancel, now)
        return effects

    def _send_cancel(self, effects: list[Effect], cancel: Request, now: float) -> None:
        effects.append(SendCancel(cancel))
        self._arm(effects, Timer.CANCEL_GUARD, now + self.settings.timeout_64t1)

    def timer_fired(self, name: Timer, now: float) -> list[Effect]:
        if not self._take_timer(name, now):
            return []
        effects: list[Effect] = []
        s = self.state
        if name is Timer.A and s is ClientInviteState.CALLING:
            effects.append(Transmit(self.request, self.peer))
            self._interval_a = self.settings.next_invite_interval(self._interval_a)
            self._arm(effects, Timer.A, now + self._interval_a)
        elif name is Timer.B and s is ClientInviteState.CALLING:
            effects.append(Timeout(Timer.B))
            self._terminate(effects)
        elif name is Timer.CANCEL_GUARD and s is ClientInviteState.PROCEEDING:
            effects.append(Timeout(Timer.CANCEL_GUARD))
            self._terminate(effects)
        elif (name is Timer.D and s is ClientInviteState.COMPLETED) or (
            name is Timer.M and s is ClientInviteState.ACCEPTED
        ):
            self._terminate(effects)
        return effects

    def transport_error(self, now: float) -> list[Effect]:
        effects: list[Effect] = []
        if self.state in (ClientInviteState.CALLING, ClientInviteState.PROCEEDING):
            effects.append(TransportFailed())
            self._terminate(effects)
        elif self.state is not ClientInviteState.TERMINATED:
            # The TU already has the final response; only our ACK/absorption is lost.
            self._terminate(effects)
        return effects


class ClientNonInviteTransaction(_Machine):
    """Non-INVITE client transaction (§17.1.2, Figure 6)."""

    def __init__(self, request: Request, peer: Peer, settings: TimerSettings | None = None):
        if request.method in ("INVITE", "ACK"):
            raise ValueError(f"ClientNonInviteTransaction cannot carry {request.method}")
        super().__init__(settings or TimerSettings(), peer.reliable)
        self.request = request
        self.peer = peer
        self.state: ClientNonInviteState = ClientNonInviteState.TRYING
        self.branch = request.top_via.branch
        self.final_response: Response | None = None
        self._interval_e = self.settings.t1

    def _set_terminated(self) -> None:
        self.state = ClientNonInviteState.TERMINATED

    def start(self, now: float) -> list[Effect]:
        effects: list[Effect] = [Transmit(self.request, self.peer)]
        if not self.reliable:
            self._arm(effects, Timer.E, now + self._interval_e)
        self._arm(effects, Timer.F, now + self.settings.timeout_64t1)
        return effects

    def receive(self, msg: Request | Response, now: float) -> list[Effect]:
        if not isinstance(msg, Response) or not 100 <= msg.status <= 699:
            return []
        effects: list[Effect] = []
        if self.state in (ClientNonInviteState.TRYING, ClientNonInviteState.PROCEEDING):
            if msg.status < 200:
                self.state = ClientNonInviteState.PROCEEDING
                effects.append(DeliverResponse(msg))
            else:
                self._disarm(effects, Timer.E, Timer.F)
                self.final_response = msg
                self.state = ClientNonInviteState.COMPLETED
                effects.append(DeliverResponse(msg))
                k = self.settings.timer_k(self.reliable)
                if k > 0:
                    self._arm(effects, Timer.K, now + k)
                else:
                    self._terminate(effects)
        # Completed: response retransmissions are absorbed.
        return effects

    def timer_fired(self, name: Timer, now: float) -> list[Effect]:
        if not self._take_timer(name, now):
            return []
        effects: list[Effect] = []
        s = self.state
        if name is Timer.E and s in (ClientNonInviteState.TRYING, ClientNonInviteState.PROCEEDING):
            effects.append(Transmit(self.request, self.peer))
            # §17.1.2.2: doubling up to T2 in Trying; in Proceeding "reset with a value of T2".
            if s is ClientNonInviteState.TRYING:
                self._interval_e = self.settings.next_capped_interval(self._interval_e)
            else:
                self._interval_e = self.settings.t2
            self._arm(effects, Timer.E, now + self._interval_e)
        elif name is Timer.F and s is not ClientNonInviteState.COMPLETED:
            effects.append(Timeout(Timer.F))
            self._terminate(effects)
        elif name is Timer.K and s is ClientNonInviteState.COMPLETED:
            self._terminate(effects)
        return effects

    def transport_error(self, now: float) -> list[Effect]:
        effects: list[Effect] = []
        if self.state in (ClientNonInviteState.TRYING, ClientNonInviteState.PROCEEDING):
            effects.append(TransportFailed())
            self._terminate(effects)
        elif self.state is ClientNonInviteState.COMPLETED:
            self._terminate(effects)
        return effects


class _ServerMachine(_Machine):
    def __init__(self, request: Request, source: Peer, settings: TimerSettings | None) -> None:
        # §18.2.2: responses go where the top Via (as stamped by us) says, or back over
        # the connection the request came in on.
        peer = response_destination(request.top_via, source)
        super().__init__(settings or TimerSettings(), peer.reliable)
        self.request = request
        self.source = source
        self.peer = peer
        self.branch = request.top_via.branch
        self.last_provisional: Response | None = None
        self.final_response: Response | None = None
        # To tag of the first response we sent with one (or chosen for a CANCEL's 200, §9.2):
        # RFC 2543 ACK matching compares against it, and the TU should reuse it.
        self.local_tag: str | None = None

    def _note_tag(self, resp: Response) -> None:
        if self.local_tag is None:
            tag = resp.to.tag
            if tag:
                self.local_tag = tag


class ServerInviteTransaction(_ServerMachine):
    """INVITE server transaction (§17.2.1, Figure 7; RFC 6026 Figure 7).

    ``send_trying``: §17.2.1 says the transaction MUST send a 100 (Trying) unless the TU
    answers within 200 ms; we send it at once (deterministic, and it stops Timer A early).
    """

    def __init__(
        self,
        request: Request,
        source: Peer,
        settings: TimerSettings | None = None,
        *,
        send_trying: bool = True,
    ) -> None:
        if request.method != "INVITE":
            raise ValueError(f"ServerInviteTransaction needs an INVITE, got {request.method}")
        super().__init__(request, source, settings)
        self.state: ServerInviteState = ServerInviteState.PROCEEDING
        self.send_trying = send_trying
        self._interval_g = self.settings.t1

    def _set_terminated(self) -> None:
        self.state = ServerInviteState.TERMINATED

    def start(self, now: float) -> list[Effect]:
        effects: list[Effect] = []
        if self.send_trying:
            trying = make_response(self.request, 100, "Trying")
            self.last_provisional = trying
            effects.append(Transmit(trying, self.peer))
        effects.append(DeliverRequest(self.request))
        return effects

    def receive(self, msg: Request | Response, now: float) -> list[Effect]:
        if not isinstance(msg, Request):
            return []
        effects: list[Effect] = []
        s = self.state
        if msg.method == "INVITE":
            # A retransmission: §17.2.1 resend the most recent provisional / the final.
            if s is ServerInviteState.PROCEEDING and self.last_provisional is not None:
                effects.append(Transmit(self.last_provisional, self.peer))
            elif s is ServerInviteState.COMPLETED and self.final_response is not None:
                effects.append(Transmit(self.final_response, self.peer))
            # Confirmed / Accepted: absorbed (RFC 6026 §7.1 for Accepted).
        elif msg.method == "ACK":
            if s is ServerInviteState.COMPLETED:
                self._disarm(effects, Timer.G, Timer.H)
                self.state = ServerInviteState.CONFIRMED
                i = self.settings.timer_i(self.reliable)
                if i > 0:
                    self._arm(effects, Timer.I, now + i)
                else:
                    self._terminate(effects)
            elif s is ServerInviteState.ACCEPTED:
                # RFC 6026 §8.6: an ACK matching us in Accepted is the ACK for the 2xx.
                effects.append(DeliverRequest(msg))
            # Confirmed: ACK retransmissions absorbed; Proceeding: a bogus ACK, dropped.
        return effects

    def send_response(self, resp: Response, now: float) -> list[Effect]:
        """The TU's response. Out-of-state responses (e.g. a 487 after a 200) are dropped
        with a log line: the wire must not see them (§17.2.1)."""
        effects: list[Effect] = []
        status = resp.status
        s = self.state
        if s is ServerInviteState.PROCEEDING:
            self._note_tag(resp)
            effects.append(Transmit(resp, self.peer))
            if status < 200:
                self.last_provisional = resp
            elif status < 300:
                self.final_response = resp
                self.state = ServerInviteState.ACCEPTED
                self._arm(effects, Timer.L, now + self.settings.timeout_64t1)
            else:
                self.final_response = resp
                self.state = ServerInviteState.COMPLETED
                if not self.reliable:
                    self._arm(effects, Timer.G, now + self._interval_g)
                self._arm(effects, Timer.H, now + self.settings.timeout_64t1)
        elif s is ServerInviteState.ACCEPTED and 200 <= status < 300:
            # RFC 6026 §8.7: 2xx retransmissions from the TU pass straight through.
            effects.append(Transmit(resp, self.peer))
        else:
            log.info("response dropped: transaction not proceeding", state=str(s),
                     status=status, call_id=self.request.call_id)
        return effects

    def timer_fired(self, name: Timer, now: float) -> list[Effect]:
        if not self._take_timer(name, now):
            return []
        effects: list[Effect] = []
        s = self.state
        if name is Timer.G and s is ServerInviteState.COMPLETED and self.final_response:
            effects.append(Transmit(self.final_response, self.peer))
            self._interval_g = self.settings.next_capped_interval(self._interval_g)
            self._arm(effects, Timer.G, now + self._interval_g)
        elif name is Timer.H and s is ServerInviteState.COMPLETED:
            effects.append(Timeout(Timer.H))
            self._terminate(effects)
        elif (name is Timer.I and s is ServerInviteState.CONFIRMED) or (
            name is Timer.L and s is ServerInviteState.ACCEPTED
        ):
            self._terminate(effects)
        return effects

    def transport_error(self, now: float) -> list[Effect]:
        effects: list[Effect] = []
        if self.state is ServerInviteState.CONFIRMED:
            # Nothing of ours is in flight any more; just stop absorbing ACKs.
            self._terminate(effects)
        elif self.state is not ServerInviteState.TERMINATED:
            effects.append(TransportFailed())
            self._terminate(effects)
        return effects


class ServerNonInviteTransaction(_ServerMachine):
    """Non-INVITE server transaction (§17.2.2, Figure 8)."""

    def __init__(
        self, request: Request, source: Peer, settings: TimerSettings | None = None
    ) -> None:
        if request.method in ("INVITE", "ACK"):
            raise ValueError(f"ServerNonInviteTransaction cannot carry {request.method}")
        super().__init__(request, source, settings)
        self.state: ServerNonInviteState = ServerNonInviteState.TRYING

    def _set_terminated(self) -> None:
        self.state = ServerNonInviteState.TERMINATED

    def start(self, now: float) -> list[Effect]:
        return [DeliverRequest(self.request)]

    def receive(self, msg: Request | Response, now: float) -> list[Effect]:
        if not isinstance(msg, Request) or msg.method != self.request.method:
            return []
        s = self.state
        if s is ServerNonInviteState.PROCEEDING and self.last_provisional is not None:
            return [Transmit(self.last_provisional, self.peer)]
        if s is ServerNonInviteState.COMPLETED and self.final_response is not None:
            return [Transmit(self.final_response, self.peer)]
        return []  # Trying: absorbed (the TU has not answered yet)

    def send_response(self, resp: Response, now: float) -> list[Effect]:
        effects: list[Effect] = []
        if self.state not in (ServerNonInviteState.TRYING, ServerNonInviteState.PROCEEDING):
            log.info("response dropped: transaction already completed", state=str(self.state),
                     status=resp.status, call_id=self.request.call_id)
            return effects
        self._note_tag(resp)
        effects.append(Transmit(resp, self.peer))
        if resp.status < 200:
            self.last_provisional = resp
            self.state = ServerNonInviteState.PROCEEDING
        else:
            self.final_response = resp
            self.state = ServerNonInviteState.COMPLETED
            j = self.settings.timer_j(self.reliable)
            if j > 0:
                self._arm(effects, Timer.J, now + j)
            else:
                self._terminate(effects)
        return effects

    def timer_fired(self, name: Timer, now: float) -> list[Effect]:
        if not self._take_timer(name, now):
            return []
        effects: list[Effect] = []
        if name is Timer.J and self.state is ServerNonInviteState.COMPLETED:
            self._terminate(effects)
        return effects

    def transport_error(self, now: float) -> list[Effect]:
        effects: list[Effect] = []
        if self.state is not ServerNonInviteState.TERMINATED:
            effects.append(TransportFailed())
            self._terminate(effects)
        return effects


class RetransmitterState(enum.StrEnum):
    WAITING_ACK = "WaitingAck"
    TERMINATED = "Terminated"


class Invite2xxRetransmitter(_Machine):
    """The UAS core's 2xx retransmission (§13.3.1.4), sans-I/O.

    Start it right after the 2xx was first sent. Over unreliable transports the 2xx is
    retransmitted at T1, 2*T1, 4*T1 … capped at T2; over reliable ones nothing is
    retransmitted. The ACK stops it (:meth:`ack_received`); after 64*T1 without one it
    gives up with ``Timeout(Timer.WAIT_ACK)`` — "the dialog is confirmed, but the session
    SHOULD be terminated" (the TU sends BYE).
    """

    def __init__(
        self,
        response: Response,
        peer: Peer,
        settings: TimerSettings | None = None,
        *,
        server_txn: ServerInviteTransaction | None = None,
    ) -> None:
        if not 200 <= response.status < 300:
            raise ValueError("Invite2xxRetransmitter needs a 2xx response")
        super().__init__(settings or TimerSettings(), peer.reliable)
        self.response = response
        self.peer = peer
        self.server_txn = server_txn  # the INVITE server transaction it answers, if known
        self.state: RetransmitterState = RetransmitterState.WAITING_ACK
        self._interval = self.settings.t1
        self.key = (response.call_id, response.cseq.seq, response.to.tag)

    def _set_terminated(self) -> None:
        self.state = RetransmitterState.TERMINATED

    def start(self, now: float) -> list[Effect]:
        effects: list[Effect] = []
        if not self.reliable:
            self._arm(effects, Timer.RETRANSMIT_2XX, now + self._interval)
        self._arm(effects, Timer.WAIT_ACK, now + self.settings.timeout_64t1)
        return effects

    def matches_ack(self, ack: Request) -> bool:
        """ACK for this 2xx: same Call-ID, CSeq number and To tag (the dialog, §13.2.2.4)."""
        return ack.method == "ACK" and (ack.call_id, ack.cseq.seq, ack.to.tag) == self.key

    def ack_received(self, now: float) -> list[Effect]:
        effects: list[Effect] = []
        if not self.terminated:
            self._terminate(effects)
        return effects

    def timer_fired(self, name: Timer, now: float) -> list[Effect]:
        if not self._take_timer(name, now):
            return []
        effects: list[Effect] = []
        if name is Timer.RETRANSMIT_2XX:
            effects.append(Transmit(self.response, self.peer))
            self._interval = self.settings.next_capped_interval(self._interval)
            self._arm(effects, Timer.RETRANSMIT_2XX, now + self._interval)
        elif name is Timer.WAIT_ACK:
            effects.append(Timeout(Timer.WAIT_ACK))
            self._terminate(effects)
        return effects

    def transport_error(self, now: float) -> list[Effect]:
        effects: list[Effect] = []
        if not self.terminated:
            effects.append(TransportFailed())
            self._terminate(effects)
        return effects


ClientTransaction = ClientInviteTransaction | ClientNonInviteTransaction
ServerTransaction = ServerInviteTransaction | ServerNonInviteTransaction
Transaction = ClientTransaction | ServerTransaction

__all__ = [
    "MAGIC_COOKIE",
    "CancelBuilder",
    "CancelTimer",
    "ClientInviteState",
    "ClientInviteTransaction",
    "ClientNonInviteState",
    "ClientNonInviteTransaction",
    "ClientTransaction",
    "DeliverRequest",
    "DeliverResponse",
    "Effect",
    "Invite2xxRetransmitter",
    "RetransmitterState",
    "SendCancel",
    "ServerInviteState",
    "ServerInviteTransaction",
    "ServerNonInviteState",
    "ServerNonInviteTransaction",
    "ServerTransaction",
    "StartTimer",
    "Terminated",
    "Timeout",
    "Transaction",
    "Transmit",
    "TransportFailed",
    "build_ack_for_non_2xx",
    "has_rfc3261_branch",
    "new_branch",
]
