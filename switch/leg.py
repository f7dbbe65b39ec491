"""The ``Leg`` API the call services are written against: one call leg (one INVITE session
towards one peer), with typed events and the operations a service needs.

Events arrive in order on ``Leg.events`` (an ``asyncio.Queue``) and to every listener added
with ``Leg.on_event`` (the B2BUA relays with listeners: no task per leg). Every leg emits
exactly one terminal event: ``LegFailed`` (never answered) or ``LegEnded`` (after answer)."""

from __future__ import annotations

import asyncio
import contextvars
import enum
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog

from switch.aio.session import SessionAdapter
from switch.sip import invite_session as inv
from switch.sip.message import Request, Response

log = structlog.get_logger("voicecall.leg")


class Direction(enum.Enum):
    INBOUND = "inbound"     # the peer called us (we are UAS)
    OUTBOUND = "outbound"   # we called the peer (we are UAC)


@dataclass(frozen=True, slots=True)
class LegTrying:
    pass


@dataclass(frozen=True, slots=True)
class LegRinging:
    status: int                 # 180 / 181 / 182 / 183 ...
    sdp: bytes | None           # early-media SDP carried by the provisional, if any
    reliable: bool = False
    reason: str = ""            # Reason header (RFC 3326), e.g. a Q.850 cause of an announcement


@dataclass(frozen=True, slots=True)
class LegEarlyMedia:
    sdp: bytes
    reason: str = ""


@dataclass(frozen=True, slots=True)
class LegAnswered:
    sdp: bytes | None


@dataclass(frozen=True, slots=True)
class LegConfirmed:
    """Inbound leg: the caller ACKed our 2xx."""


@dataclass(frozen=True, slots=True)
class LegOffer:
    """The peer sent a new offer (re-INVITE/UPDATE): answer with ``accept_offer`` or
    ``reject_offer``."""

    sdp: bytes
    method: str


@dataclass(frozen=True, slots=True)
class LegAnswer:
    """The answer to an offer we sent (re-INVITE/UPDATE/PRACK/ACK)."""

    sdp: bytes
    method: str


@dataclass(frozen=True, slots=True)
class LegOfferRejected:
    status: int
    method: str


@dataclass(frozen=True, slots=True)
class LegInfo:
    content_type: str
    body: bytes


@dataclass(frozen=True, slots=True)
class LegFailed:
    """Terminal: the leg was never answered. ``status`` is the SIP final response (local
    408 for a timeout, 503 for a transport failure, 487 when we cancelled it)."""

    status: int
    reason: str
    response: Response | None = None


class EndCause(enum.StrEnum):
    REMOTE_BYE = "remote-bye"
    LOCAL_HANGUP = "local-hangup"
    SESSION_TIMER = "session-timer-expired"
    ACK_TIMEOUT = "ack-timeout"
    REQUEST_TIMEOUT = "request-timeout"
    DIALOG_GONE = "dialog-gone"
    TRANSPORT = "transport"
    NEGOTIATION = "negotiation-failed"
    CANCELLED = "cancelled"     # inbound leg: the caller cancelled before answer
    REJECTED = "rejected"       # inbound leg: we rejected it


@dataclass(frozen=True, slots=True)
class LegEnded:
    """Terminal: the leg ended after it was answered (or an inbound leg was cancelled or
    rejected: ``cause`` says which)."""

    cause: EndCause
    by_remote: bool
    status: int | None = None


LegEvent = (
    LegTrying | LegRinging | LegEarlyMedia | LegAnswered | LegConfirmed | LegOffer
    | LegAnswer | LegOfferRejected | LegInfo | LegFailed | LegEnded
)

_END_CAUSE = {
    inv.EndReason.BYE_RECEIVED: (EndCause.REMOTE_BYE, True),
    inv.EndReason.BYE_SENT: (EndCause.LOCAL_HANGUP, False),
    inv.EndReason.SESSION_TIMER_EXPIRED: (EndCause.SESSION_TIMER, True),
    inv.EndReason.ACK_TIMEOUT: (EndCause.ACK_TIMEOUT, True),
    inv.EndReason.PRACK_TIMEOUT: (EndCause.ACK_TIMEOUT, True),
    inv.EndReason.CANCELLED: (EndCause.CANCELLED, True),
    inv.EndReason.REJECTED: (EndCause.REJECTED, False),
    inv.EndReason.REQUEST_TIMEOUT: (EndCause.REQUEST_TIMEOUT, True),
    inv.EndReason.DIALOG_GONE: (EndCause.DIALOG_GONE, True),
    inv.EndReason.TRANSPORT: (EndCause.TRANSPORT, True),
    inv.EndReason.NEGOTIATION_FAILED: (EndCause.NEGOTIATION, False),
}

@dataclass(eq=False)
class Leg:
    """One call leg. Built by the user agent (``UserAgent.originate`` / inbound INVITE)."""

    direction: Direction
    call_id: str
    label: str = ""
    peer_number: str = ""          # the party on the far side of this leg (E.164 or user)
    local_number: str = ""         # what we present to it
    events: asyncio.Queue[LegEvent] = field(default_factory=asyncio.Queue)
    adapter: SessionAdapter | None = None
    answered: bool = False
    terminated: bool = False
    terminal_event: LegFailed | LegEnded | None = None
    invite: Request | None = None
    _listeners: list[Callable[[Leg, LegEvent], None]] = field(default_factory=list)
    _hangup_requested: bool = False
    # Context variables of whoever dialled the leg (a service call binds session_id for
    # structlog): the UA handles the peer's in-dialog requests inside them. None: none set.
    context: contextvars.Context | None = None

    def __post_init__(self) -> None:
        self.log = log.bind(call_id=self.call_id, leg=self.label or self.direction.value)

    # ------------------------------------------------------------------ events
    def on_event(self, listener: Callable[[Leg, LegEvent], None]) -> None:
        self._listeners.append(listener)

    def emit(self, event: LegEvent) -> None:
        if self.terminated:
            return
        if isinstance(event, LegAnswered):
            self.answered = True
        if isinstance(event, LegFailed | LegEnded):
            self.terminated = True
            self.terminal_event = event
        self.log.debug("leg event", kind=type(event).__name__)
        self.events.put_nowait(event)
        for listener in list(self._listeners):
            try:
                listener(self, event)
            except Exception:
                self.log.exception("leg listener failed")

    async def wait_for(self, *kinds: type, timeout: float | None = None) -> LegEvent:
        """The next event of one of ``kinds`` (or the terminal event, whichever first)."""
        async def _wait() -> LegEvent:
            while True:
                ev = await self.events.get()
                if isinstance(ev, (*kinds, LegFailed, LegEnded)):
                    return ev
        return await asyncio.wait_for(_wait(), timeout)

    def session_event(self, ev: inv.SessionEvent) -> None:
        """Translate one InviteSession event into Leg events."""
        if isinstance(ev, inv.Provisional):
            st = ev.response.status
            if st == 100:
                self.emit(LegTrying())
            else:
                self.emit(LegRinging(st, ev.response.body or None,
                                     reliable=ev.response.headers.get("RSeq") is not None,
                                     reason=ev.response.headers.get("Reason") or ""))
        elif isinstance(ev, inv.EarlyMedia):
            self.emit(LegEarlyMedia(ev.sdp, ev.response.headers.get("Reason") or ""))
        elif isinstance(ev, inv.Answered):
            sdp = ev.sdp
            if sdp is None and self.adapter is not None:
                sdp = self.adapter.session.remote_sdp
            self.emit(LegAnswered(sdp))
        elif isinstance(ev, inv.Confirmed):
            self.emit(LegConfirmed())
        elif isinstance(ev, inv.OfferReceived):
            self.emit(LegOffer(ev.sdp, ev.method))
        elif isinstance(ev, inv.AnswerReceived):
            self.emit(LegAnswer(ev.sdp, ev.method))
        elif isinstance(ev, inv.OfferRejected):
            self.emit(LegOfferRejected(ev.status, ev.method))
        elif isinstance(ev, inv.InfoReceived):
            req = ev.request
            self.emit(LegInfo(req.headers.get("Content-Type") or "", req.body))
        elif isinstance(ev, inv.RefreshFailed):
            self.log.info("session refresh failed", status=ev.status)
        elif isinstance(ev, inv.Failed):
            self.emit(LegFailed(ev.status, ev.reason, ev.response))
        elif isinstance(ev, inv.Ended):
            cause, by_remote = _END_CAUSE.get(ev.reason, (EndCause.LOCAL_HANGUP, False))
            if cause is EndCause.LOCAL_HANGUP or self._hangup_requested:
                by_remote = False if self._hangup_requested else by_remote
            if not self.answered and self.direction is Direction.INBOUND:
                # An inbound leg that never got our 2xx: cancelled or rejected.
                self.emit(LegEnded(cause, by_remote, ev.status))
            else:
                self.emit(LegEnded(cause, by_remote, ev.status))

    # -------------------------------------------------------------- operations
    def _run(self, fn: Callable[[float], list[inv.Effect]]) -> None:
        if self.adapter is None or self.terminated:
            return
        try:
            effects = fn(self.adapter.now)
        except inv.SessionError as e:
            self.log.info("operation not possible now", error=str(e))
            return
        self.adapter.run(effects)

    @property
    def session(self) -> inv.InviteSession | None:
        return self.adapter.session if self.adapter is not None else None

    def ring(self, status: int = 180, sdp: bytes | None = None, *, reliable: bool = False) -> None:
        """Inbound leg: send a provisional (180 ringing, 183 with early media)."""
        self._run(lambda now: self.adapter.session.provisional(  # type: ignore[union-attr]
            status, now=now, sdp=sdp, reliable=reliable))

    def answer(self, sdp: bytes | None) -> None:
        self._run(lambda now: self.adapter.session.answer(sdp=sdp, now=now))  # type: ignore[union-attr]

    def reject(self, status: int, reason: str | None = None) -> None:
        self._run(lambda now: self.adapter.session.reject(  # type: ignore[union-attr]
            status, now=now, reason=reason))

    def hangup(self) -> None:
        """End the leg whatever its state: CANCEL an unanswered outbound leg, 480 an
        unanswered inbound one, BYE an answered one."""
        if self.terminated or self.adapter is None:
            return
        self._hangup_requested = True
        s = self.adapter.session
        if self.answered or s.state in (inv.SessionState.CONNECTING, inv.SessionState.CONFIRMED):
            self._run(s.bye)
        elif self.direction is Direction.OUTBOUND:
            self._run(s.cancel)
        else:
            self._run(lambda now: s.reject(480, now=now, reason="Temporarily Unavailable"))

    def reinvite(self, sdp: bytes | None) -> None:
        self._run(lambda now: self.adapter.session.reinvite(sdp=sdp, now=now))  # type: ignore[union-attr]

    def update(self, sdp: bytes) -> None:
        self._run(lambda now: self.adapter.session.update(sdp=sdp, now=now))  # type: ignore[union-attr]

    def accept_offer(self, sdp: bytes) -> None:
        self._run(lambda now: self.adapter.session.accept_offer(sdp, now))  # type: ignore[union-attr]

    def reject_offer(self, status: int = 488) -> None:
        self._run(lambda now: self.adapter.session.reject_offer(now, status))  # type: ignore[union-attr]

    def send_info(self, content_type: str, body: bytes) -> None:
        self._run(lambda now: self.adapter.session.info(content_type, body, now))  # type: ignore[union-attr]
