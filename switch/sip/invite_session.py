"""INVITE sessions (RFC 3261 §13–§15, RFC 3262 100rel/PRACK, RFC 3311 UPDATE, RFC 4028
session timers, §14.1 glare): the layer between dialogs and the B2BUA.

Sans-I/O. Inputs are method calls carrying ``now`` (seconds on any monotonic scale); every
call returns a list of :data:`Effect` objects, in order:

* wire effects for the adapter — :class:`SendRequest` (through the transaction layer),
  :class:`SendAck` (an ACK for a 2xx: straight to the transport, §13.2.2.4),
  :class:`SendCancel` (CANCEL the initial INVITE), :class:`SendResponse` (through the
  server transaction it names, also for 2xx and reliable 1xx retransmissions, which are
  the session's job, §13.3.1.4 / RFC 3262 §3);
* timer effects — :class:`StartTimer` (replaces a running timer of the same key) and
  :class:`CancelTimer`; keys are per session; when one expires the adapter calls
  :meth:`InviteSession.on_timer`;
* session events for the B2BUA — :class:`Provisional`, :class:`EarlyMedia`,
  :class:`Answered`, :class:`AuthRequired`, :class:`Confirmed`, :class:`OfferReceived`,
  :class:`AnswerReceived`, :class:`OfferRejected`, :class:`InfoReceived`,
  :class:`RefreshFailed` and exactly one terminal event per session: :class:`Failed` (a UAC
  INVITE that never got a 2xx) or :class:`Ended`.

Adapter contract (``tests/unit/sip/test_invite_session_txn.py`` is a working miniature):

* requests carry a placeholder Via (``SIP/2.0/UDP 0.0.0.0;branch=z9hG4bK…;rport``) unless
  :class:`~switch.sip.dialog.LocalEndpoint` names the real transport/sent-by; the adapter
  fills in sent-by and keeps the branch. The destination is
  ``addressing.request_destination(effect.next_hop)``.
* routing: keep a :class:`~switch.sip.dialog.DialogIndex` (Call-ID + our tag → session).
  NewRequest of an INVITE without To tag → :meth:`InviteSession.uas`, then ``index.add``;
  any other NewRequest → ``index.for_request`` → :meth:`on_request` (the ACK for a 2xx
  comes with ``server_txn`` None), or ``DialogIndex.no_dialog(req)`` (481) when unknown;
  ResponseReceived / StrayResponse → ``index.for_response`` → :meth:`on_response`;
  TransactionTimedOut → ``index.for_sent_request(txn.request)`` →
  :meth:`on_transaction_timeout` (transport errors: :meth:`on_transport_error`);
  CancelReceived → the session of that INVITE server transaction → :meth:`on_cancel` (the
  layer has already answered the CANCEL).
* 2xx retransmission: the session does it (``TransactionLayer(retransmit_2xx=False)``,
  the layer's default). With the layer's retransmitter instead, set
  ``SessionConfig.retransmit_2xx=False`` and pass AckNotReceived to
  :meth:`on_ack_not_received`.
* :class:`SendCancel`: ``layer.cancel(client_txn_of(effect.invite))`` or send
  ``effect.cancel`` as a request.

Protocol errors of the *peer* never raise: they get the RFC's response or are dropped.
Misuse by the *caller* (e.g. ``answer()`` twice) raises :class:`SessionError`.
"""

from __future__ import annotations

import enum
import random
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import structlog

from switch.sip.dialog import (
    Dialog,
    DialogError,
    DialogId,
    LocalEndpoint,
    first_contact,
    header_tokens,
    make_headers,
    new_branch,
    new_token,
)
from switch.sip.message import Request, Response, make_response
from switch.sip.prack import (
    OPTION_TAG as REL100,
)
from switch.sip.prack import (
    RSEQ_MAX,
    PrackMode,
    RAck,
    RSeqTracker,
    RSeqVerdict,
    parse_rack,
    parse_rseq,
)
from switch.sip.sdp_offer_state import OfferAnswer, OfferAnswerError, OfferState, sdp_of
from switch.sip.session_timer import (
    Negotiated,
    SessionTimer,
    SessionTimerConfig,
    TooSmall,
)
from switch.sip.uri import NameAddr, SipUri

SDP = "application/sdp"

log = structlog.get_logger("voicecall.sip.session")


def _sdp(msg: Request | Response) -> bytes:
    """The SDP of a message (``b""`` if none): bodies of other types are not offers."""
    return sdp_of(msg.headers.get("Content-Type"), msg.body) or b""

# ---------------------------------------------------------------------------------------------
# configuration
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SessionConfig:
    local: LocalEndpoint
    t1: float = 0.5            # RFC 3261 T1 (seconds)
    t2: float = 4.0            # RFC 3261 T2
    prack: PrackMode = PrackMode.SUPPORTED
    timer: SessionTimerConfig = field(default_factory=SessionTimerConfig)
    #: §13.3.1.4 2xx retransmission by the session. Set False when the transaction layer's
    #: own retransmitter runs (``TransactionLayer.retransmit_2xx``); the session then only
    #: keeps its 64*T1 ACK deadline (or is told through :meth:`on_ack_not_received`).
    retransmit_2xx: bool = True
    #: 401/407 to our INVITE: False → :class:`Failed`; True → :class:`AuthRequired` and the
    #: application calls :meth:`InviteSession.authenticate` (or ``bye()``) within 64*T1.
    auth_retry: bool = False


# ---------------------------------------------------------------------------------------------
# states, reasons, timer keys
# ---------------------------------------------------------------------------------------------


class Role(enum.Enum):
    UAC = "uac"
    UAS = "uas"


class SessionState(enum.Enum):
    NULL = "null"                # UAC before invite()
    CALLING = "calling"          # UAC: INVITE sent, no dialog yet
    INCOMING = "incoming"        # UAS: INVITE received, nothing with a To tag sent yet
    EARLY = "early"              # an early dialog exists (1xx with tag sent / received)
    CONNECTING = "connecting"    # 2xx sent (UAS, waiting for ACK) or received (UAC, ACK held
                                 # until the app answers an offer that came in the 2xx)
    CONFIRMED = "confirmed"
    TERMINATING = "terminating"  # BYE sent, waiting for its response
    TERMINATED = "terminated"


class EndReason(enum.StrEnum):
    BYE_RECEIVED = "bye-received"
    BYE_SENT = "bye-sent"
    SESSION_TIMER_EXPIRED = "session-timer-expired"   # RFC 4028 §10
    ACK_TIMEOUT = "ack-timeout"                       # §13.3.1.4, 64*T1 without ACK
    PRACK_TIMEOUT = "prack-timeout"                   # RFC 3262 §3, 64*T1 without PRACK
    CANCELLED = "cancelled"                           # UAS: CANCEL received (487 sent)
    REJECTED = "rejected"                             # UAS: we sent a final non-2xx
    REQUEST_TIMEOUT = "request-timeout"               # in-dialog request: 408 / timeout
    DIALOG_GONE = "dialog-gone"                       # in-dialog request: 481 (§12.2.1.2)
    TRANSPORT = "transport"                           # transport error on our request
    NEGOTIATION_FAILED = "negotiation-failed"         # offer/answer broken beyond repair


class TimerKey(enum.StrEnum):
    RETRANSMIT_2XX = "2xx-retransmit"        # §13.3.1.4: T1 doubling to T2
    ACK_WAIT = "ack-wait"                    # §13.3.1.4: 64*T1
    RETRANSMIT_1XX = "1xx-retransmit"        # RFC 3262 §3: T1 doubling
    PRACK_WAIT = "prack-wait"                # RFC 3262 §3: 64*T1
    GLARE_RETRY = "glare-retry"              # §14.1 back-off after 491
    SESSION_REFRESH = "session-refresh"      # RFC 4028 §10: half the interval
    SESSION_EXPIRY = "session-expiry"        # RFC 4028 §10: interval - min(32, interval/3)
    CANCEL_GUARD = "cancel-guard"            # §9.1: 64*T1 after CANCEL without final
    BYE_GUARD = "bye-guard"                  # our own bound on TERMINATING
    ANSWER_WAIT = "answer-wait"              # the app must answer an offer in a 2xx (its
                                             # ACK is held) before the peer gives up: 64*T1
    AUTH_WAIT = "auth-wait"                  # the app must answer a 401/407 within 64*T1


# ---------------------------------------------------------------------------------------------
# effects (for the adapter)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SendRequest:
    """Send through a new client transaction. ``next_hop`` is the URI to resolve
    (``addressing.request_destination``): the first loose Route, else the Request-URI."""

    request: Request
    next_hop: SipUri


@dataclass(frozen=True, slots=True)
class SendAck:
    """ACK for a 2xx: no transaction, straight to the transport (§13.2.2.4, §17.1.1.3)."""

    request: Request
    next_hop: SipUri


@dataclass(frozen=True, slots=True)
class SendCancel:
    """CANCEL the initial INVITE (§9.1). ``cancel`` is the ready-built CANCEL (same
    Request-URI, Call-ID, From, To, CSeq number, Route and top Via as ``invite``); an adapter
    whose transaction layer builds CANCELs itself (``TransactionLayer.cancel(txn)``) may
    use ``invite`` to find the client transaction instead. Emitted only after a
    provisional response arrived."""

    invite: Request
    cancel: Request
    next_hop: SipUri


@dataclass(frozen=True, slots=True)
class SendResponse:
    """Send ``response`` through the server transaction the adapter gave us (opaque ref).
    Also used for 2xx / reliable-1xx retransmissions, which the transaction layer leaves to
    the transaction user."""

    server_txn: object
    response: Response


@dataclass(frozen=True, slots=True)
class StartTimer:
    key: TimerKey
    deadline: float


@dataclass(frozen=True, slots=True)
class CancelTimer:
    key: TimerKey


# ---------------------------------------------------------------------------------------------
# events (for the B2BUA)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Provisional:
    response: Response


@dataclass(frozen=True, slots=True)
class EarlyMedia:
    """SDP in a 1xx: the answer (reliable 1xx) or a preview of it (unreliable 1xx)."""

    sdp: bytes
    response: Response


@dataclass(frozen=True, slots=True)
class Answered:
    """UAC: 2xx to the initial INVITE. ``sdp`` is the answer; ``None`` when the answer came
    earlier (reliable 1xx) — see ``session.remote_sdp`` — or when the 2xx carries an *offer*
    (offer-less INVITE), which then follows as :class:`OfferReceived`."""

    response: Response
    sdp: bytes | None


@dataclass(frozen=True, slots=True)
class AuthRequired:
    """UAC (``config.auth_retry``): our INVITE was challenged (401/407). Answer with
    ``authenticate(headers)`` (e.g. ``[("Proxy-Authorization", ...)]`` from
    ``switch.sip.digest``) or give up with ``bye()``."""

    response: Response


@dataclass(frozen=True, slots=True)
class Confirmed:
    """UAS: the ACK for our 2xx to the initial INVITE arrived."""

    ack: Request


@dataclass(frozen=True, slots=True)
class OfferReceived:
    """The peer offered (re-INVITE, UPDATE, 2xx/1xx to our offer-less INVITE): call
    ``accept_offer(answer)`` or ``reject_offer()``."""

    sdp: bytes
    method: str


@dataclass(frozen=True, slots=True)
class AnswerReceived:
    sdp: bytes
    method: str            # INVITE (2xx), ACK, UPDATE, PRACK


@dataclass(frozen=True, slots=True)
class OfferRejected:
    """Our re-INVITE / UPDATE offer was refused; the previous SDP stays in force."""

    status: int
    method: str
    response: Response | None


@dataclass(frozen=True, slots=True)
class InfoReceived:
    request: Request


@dataclass(frozen=True, slots=True)
class RefreshFailed:
    """A session refresh (RFC 4028) we sent failed with ``status``."""

    status: int


@dataclass(frozen=True, slots=True)
class Failed:
    """UAC: the INVITE ended without a 2xx (final 3xx–6xx, timeout, CANCEL)."""

    status: int
    reason: str
    response: Response | None


@dataclass(frozen=True, slots=True)
class Ended:
    reason: EndReason
    status: int | None = None


SessionEvent = (
    Provisional | EarlyMedia | Answered | AuthRequired | Confirmed | OfferReceived | AnswerReceived
    | OfferRejected | InfoReceived | RefreshFailed | Failed | Ended
)
Effect = SendRequest | SendAck | SendCancel | SendResponse | StartTimer | CancelTimer | SessionEvent


class SessionError(Exception):
    """The caller asked for something the session cannot do in its current state."""


# ---------------------------------------------------------------------------------------------
# internal records
# ---------------------------------------------------------------------------------------------


class _Purpose(enum.Enum):
    OFFER = "offer"        # carries / asks for an offer (re-INVITE, UPDATE with SDP)
    REFRESH = "refresh"    # RFC 4028 refresh
    PLAIN = "plain"


@dataclass(slots=True)
class _ClientInvite:
    request: Request
    initial: bool
    offer: bytes | None
    purpose: _Purpose
    final: bool = False
    ack: Request | None = None


@dataclass(slots=True)
class _ClientRequest:
    """An in-dialog non-INVITE request we sent and have no final response for."""

    request: Request
    remote_tag: str
    purpose: _Purpose = _Purpose.PLAIN
    offer: bytes | None = None


@dataclass(slots=True)
class _Reliable1xx:
    response: Response
    rseq: int
    has_sdp: bool
    interval: float


@dataclass(slots=True)
class _Pending2xx:
    response: Response
    server_txn: object
    cseq: int
    interval: float
    offer_in_2xx: bool
    initial: bool


@dataclass(slots=True)
class _ServerRequest:
    request: Request
    server_txn: object


class _AnswerVia(enum.Enum):
    INVITE_2XX = "invite-2xx"   # incoming re-INVITE with offer
    UPDATE_2XX = "update-2xx"   # incoming UPDATE with offer
    ACK = "ack"                 # offer in the 2xx to our offer-less (re-)INVITE
    PRACK = "prack"             # offer in a reliable 1xx to our offer-less INVITE


@dataclass(slots=True)
class _AwaitAnswer:
    via: _AnswerVia
    server: _ServerRequest | None = None
    response: Response | None = None     # the 1xx / 2xx that carried the offer
    dialog: Dialog | None = None


@dataclass(slots=True)
class _EarlyLeg:
    """UAC: one early dialog per To tag (forking, §13.2.2.4)."""

    dialog: Dialog
    rseq: RSeqTracker = field(default_factory=RSeqTracker)
    last_sdp: bytes | None = None


@dataclass(slots=True)
class _QueuedProvisional:
    status: int
    reason: str | None
    sdp: bytes | None
    headers: tuple[tuple[str, str], ...]


# ---------------------------------------------------------------------------------------------
# the session
# ---------------------------------------------------------------------------------------------


class InviteSession:
    """One INVITE session, either role. Build with :meth:`uac` (then :meth:`invite`) or
    :meth:`uas` (from a received INVITE)."""

    def __init__(
        self,
        role: Role,
        config: SessionConfig,
        *,
        rng: random.Random | None = None,
        token: Callable[[], str] = new_token,
    ) -> None:
        self.role = role
        self.config = config
        self.state = SessionState.NULL
        self._rng = rng if rng is not None else random.Random()
        self._token = token
        self.oa = OfferAnswer()
        self.timer = SessionTimer(config.timer)
        self._dialog: Dialog | None = None
        self._fx: list[Effect] = []
        self._local_tag = ""
        self._timers: set[TimerKey] = set()
        self._terminal_sent = False
        self._peer_allow: set[str] = set()
        self._peer_supports: set[str] = set()
        # UAC side
        self._inv: _ClientInvite | None = None          # our INVITE in progress (any)
        self._initial_invite: Request | None = None
        self._early: dict[str, _EarlyLeg] = {}
        self._cancel_wanted = False
        self._cancel_sent = False
        self._got_provisional = False
        self._initial_route: tuple[NameAddr, ...] = ()
        self._client: dict[tuple[str, int], _ClientRequest] = {}   # (remote tag, cseq)
        self._acks: dict[int, Request] = {}                         # INVITE CSeq → our ACK
        self._glare: tuple[str, bytes | None, _Purpose] | None = None
        self._challenge: Response | None = None
        self._auth_attempts = 0
        # UAS side
        self._uas_invite: _ServerRequest | None = None    # initial INVITE (until final)
        self._srv_reinvite: _ServerRequest | None = None  # incoming re-INVITE (until final)
        self._srv_update: _ServerRequest | None = None    # incoming UPDATE awaiting answer
        self._pending_2xx: _Pending2xx | None = None
        self._queued_2xx: tuple[bytes | None, tuple[tuple[str, str], ...]] | None = None
        self._rel: _Reliable1xx | None = None
        self._rel_queue: deque[_QueuedProvisional] = deque()
        self._next_rseq = 0
        self._dialog_seq: int | None = None
        self._peer_100rel = False
        self._peer_requires_100rel = False
        self._bye_after_ack = False
        self._bye_headers: tuple[tuple[str, str], ...] = ()
        self._await: _AwaitAnswer | None = None

    # =========================================================================================
    # construction
    # =========================================================================================

    @classmethod
    def uac(
        cls, config: SessionConfig, *, rng: random.Random | None = None,
        token: Callable[[], str] = new_token,
    ) -> InviteSession:
        return cls(Role.UAC, config, rng=rng, token=token)

    @classmethod
    def uas(
        cls,
        invite: Request,
        server_txn: object,
        now: float,
        config: SessionConfig,
        *,
        rng: random.Random | None = None,
        token: Callable[[], str] = new_token,
    ) -> tuple[InviteSession, list[Effect]]:
        """A session for a received out-of-dialog INVITE. When the INVITE cannot be served
        (420 unsupported extension, 422 session interval too small) the session is already
        TERMINATED and the effects hold the response and ``Ended(REJECTED)``."""
        s = cls(Role.UAS, config, rng=rng, token=token)
        s._start_uas(invite, server_txn, now)
        return s, s._take()

    def _start_uas(self, invite: Request, txn: object, now: float) -> None:
        self.state = SessionState.INCOMING
        self._uas_invite = _ServerRequest(invite, txn)
        self._initial_invite = invite
        self._local_tag = self._token()
        self._peer_allow = header_tokens(invite, "Allow")
        self._peer_supports = header_tokens(invite, "Supported")
        require = header_tokens(invite, "Require")
        ours = {REL100} if self.config.prack is not PrackMode.DISABLED else set()
        if self.config.timer.enabled:
            ours.add("timer")
        if first_contact(invite) is None:
            # §8.1.1.8: an INVITE must carry exactly one Contact; we could not reach the
            # caller with BYE or re-INVITE without it.
            self._final_reject(400, "Missing Contact", ())
            return
        unsupported = sorted(require - ours)
        if unsupported:
            # §8.2.2.3
            self._final_reject(420, "Bad Extension", (("Unsupported", ", ".join(unsupported)),))
            return
        self._peer_100rel = (
            self.config.prack is not PrackMode.DISABLED
            and REL100 in (self._peer_supports | require)
        )
        self._peer_requires_100rel = REL100 in require
        verdict = self.timer.on_request(
            invite.headers.get("Session-Expires"), invite.headers.get("Min-SE"),
            "timer" in (self._peer_supports | require),
        )
        if isinstance(verdict, TooSmall):
            self._final_reject(422, "Session Interval Too Small",
                               (("Min-SE", str(verdict.min_se)),))
            return
        if _sdp(invite):
            self.oa.remote_offer(_sdp(invite))
        # §8.1.1.5 / RFC 3262 §3: our first CSeq in this dialog and the first RSeq are
        # random (well below 2**31, so they never wrap in practice)
        self._dialog_seq = self._rng.randint(1, 2**16)
        self._next_rseq = self._rng.randint(1, 2**30)

    # =========================================================================================
    # public properties
    # =========================================================================================

    @property
    def dialog(self) -> Dialog | None:
        if self._dialog is not None:
            return self._dialog
        for leg in self._early.values():
            return leg.dialog
        return None

    @property
    def local_tag(self) -> str | None:
        """Our tag (From tag as UAC, To tag as UAS): with the Call-ID it finds the session
        for every in-dialog request and response (see ``dialog.DialogIndex``)."""
        return self._local_tag or None

    @property
    def dialog_id(self) -> DialogId | None:
        d = self.dialog
        return d.id if d else None

    @property
    def call_id(self) -> str | None:
        if self._initial_invite is not None:
            return self._initial_invite.call_id
        return None

    @property
    def local_sdp(self) -> bytes | None:
        return self.oa.local_sdp

    @property
    def remote_sdp(self) -> bytes | None:
        return self.oa.remote_sdp

    @property
    def remote_offer(self) -> bytes | None:
        """UAS: the offer in the initial INVITE (``None`` for an offer-less INVITE)."""
        return self.oa.pending_remote_offer

    @property
    def peer_allow(self) -> frozenset[str]:
        """Methods the peer listed in Allow (lower case; empty if it never said)."""
        return frozenset(self._peer_allow)

    @property
    def peer_supported(self) -> frozenset[str]:
        """Option tags the peer listed in Supported (lower case)."""
        return frozenset(self._peer_supports)

    @property
    def terminated(self) -> bool:
        return self.state is SessionState.TERMINATED

    # =========================================================================================
    # UAC operations
    # =========================================================================================

    def invite(
        self,
        *,
        request_uri: SipUri,
        from_: NameAddr,
        to: NameAddr,
        sdp: bytes | None,
        now: float,
        call_id: str | None = None,
        route: Sequence[NameAddr] = (),
        extra_headers: Sequence[tuple[str, str]] = (),
    ) -> list[Effect]:
        """Send the initial INVITE (§13.2.1). ``sdp`` ``None`` sends an offer-less INVITE
        (the offer then comes in the first reliable 1xx or the 2xx)."""
        if self.role is not Role.UAC or self.state is not SessionState.NULL:
            raise SessionError("invite() is for a new UAC session")
        self._call_id = call_id or f"{self._token()}@{self.config.local.contact.host}"
        self._local_tag = self._token()
        self._from = from_.with_tag(self._local_tag)
        self._to = to.with_param("tag", None)
        self._request_uri = request_uri
        self._initial_route = tuple(route)
        self._extra = tuple(extra_headers)
        if sdp is not None:
            self.oa.local_offer(sdp)
        self.state = SessionState.CALLING
        self._send_initial_invite(1, sdp)
        return self._take()

    def _send_initial_invite(self, cseq: int, sdp: bytes | None) -> None:
        local = self.config.local
        items: list[tuple[str, str]] = [
            ("Via", local.via(new_branch(self._token))),
            ("Max-Forwards", str(local.max_forwards)),
        ]
        items += [("Route", str(r)) for r in self._initial_route]
        items += [
            ("From", str(self._from)),
            ("To", str(self._to)),
            ("Call-ID", self._call_id),
            ("CSeq", f"{cseq} INVITE"),
            ("Contact", f"<{local.contact}>"),
            ("Allow", ", ".join(local.allow)),
        ]
        supported = self._supported_tags(initial=True)
        if supported:
            items.append(("Supported", ", ".join(supported)))
        if self.config.prack is PrackMode.REQUIRED:
            items.append(("Require", REL100))
        items += self.timer.request_headers(initial=True)
        if local.user_agent:
            items.append(("User-Agent", local.user_agent))
        items += list(self._extra)
        body = sdp or b""
        if body:
            items.append(("Content-Type", SDP))
        req = Request(method="INVITE", uri=self._request_uri, headers=make_headers(items),
                      body=body)
        self._initial_invite = req
        self._inv = _ClientInvite(req, True, sdp, _Purpose.OFFER)
        if self._initial_route and self._initial_route[0].uri.has_param("lr"):
            hop = self._initial_route[0].uri
        else:
            hop = self._request_uri
        self._emit(SendRequest(req, hop))

    def cancel(self, now: float) -> list[Effect]:
        """§9.1: CANCEL the initial INVITE. Before any provisional response arrived the
        CANCEL is held back and sent with the first one."""
        if self.role is not Role.UAC:
            raise SessionError("cancel() is for the UAC; a UAS uses reject()")
        self._cancel_invite(now)
        return self._take()

    def authenticate(self, headers: Sequence[tuple[str, str]], now: float) -> list[Effect]:
        """Re-send the INVITE with credentials after :class:`AuthRequired` (§22.2): same
        Call-ID, From tag and offer, next CSeq, new branch. ``headers`` replace any
        Authorization / Proxy-Authorization sent before."""
        if self._challenge is None or self._inv is None:
            raise SessionError("authenticate() needs a pending 401/407 challenge")
        self._cancel(TimerKey.AUTH_WAIT)
        self._auth_attempts += 1
        creds = {"authorization", "proxy-authorization"}
        self._extra = (*[(k, v) for k, v in self._extra if k.lower() not in creds], *headers)
        self._resend_initial_invite(self._inv)
        return self._take()

    def _cancel_invite(self, now: float) -> None:
        if self._challenge is not None:
            # nothing is pending on the wire: the challenge is our final answer
            self._cancel(TimerKey.AUTH_WAIT)
            self._fail_challenge()
            return
        if self.state in (SessionState.CALLING, SessionState.EARLY) and not self._cancel_wanted:
            self._cancel_wanted = True
            if self._got_provisional:
                self._send_cancel(now)
            self._start(TimerKey.CANCEL_GUARD, now + 64 * self.config.t1)

    def _send_cancel(self, now: float) -> None:
        if self._cancel_sent or self._initial_invite is None:
            return
        inv = self._initial_invite
        self._cancel_sent = True
        items: list[tuple[str, str]] = [("Via", inv.headers.get("Via") or "")]
        items += [("Max-Forwards", str(self.config.local.max_forwards))]
        items += [("Route", r) for r in inv.headers.get_all("Route")]
        items += [
            ("From", inv.headers.get("From") or ""),
            ("To", inv.headers.get("To") or ""),
            ("Call-ID", inv.call_id),
            ("CSeq", f"{inv.cseq.seq} CANCEL"),
        ]
        req = Request(method="CANCEL", uri=inv.uri, headers=make_headers(items))
        hop = self._initial_route[0].uri if (
            self._initial_route and self._initial_route[0].uri.has_param("lr")) else inv.uri
        self._emit(SendCancel(inv, req, hop))

    # =========================================================================================
    # UAS operations
    # =========================================================================================

    def provisional(
        self,
        status: int,
        now: float,
        *,
        sdp: bytes | None = None,
        reliable: bool = False,
        reason: str | None = None,
        headers: Sequence[tuple[str, str]] = (),
    ) -> list[Effect]:
        """Send a 101–199 to the initial INVITE. ``reliable`` uses 100rel when the UAC
        supports it (and is forced when the UAC requires it). A second reliable 1xx waits
        until the first is PRACKed (RFC 3262 §3)."""
        self._require_uas_pending("provisional")
        if not 100 < status < 200:
            raise SessionError("provisional status must be 101..199 (100 is hop-by-hop)")
        reliable = (reliable or self._peer_requires_100rel) and self._peer_100rel
        if reliable and (self._rel is not None or self._rel_queue):
            self._rel_queue.append(_QueuedProvisional(status, reason, sdp, tuple(headers)))
            return self._take()
        self._send_provisional(status, reason, sdp, tuple(headers), reliable, now)
        return self._take()

    def _send_provisional(
        self, status: int, reason: str | None, sdp: bytes | None,
        headers: tuple[tuple[str, str], ...], reliable: bool, now: float,
    ) -> None:
        assert self._uas_invite is not None
        self._ensure_uas_dialog()
        items = [*self._uas_contact_headers(), *headers]
        body = b""
        if sdp is not None:
            body = sdp
            if reliable:
                try:
                    if self.oa.state is OfferState.REMOTE_OFFER_RECEIVED:
                        self.oa.local_answer(sdp)
                    elif self.oa.state is OfferState.IDLE and not self.oa.completed_once:
                        self.oa.local_offer(sdp)      # answer comes in the PRACK
                except OfferAnswerError as e:
                    raise SessionError(str(e)) from None
        if reliable:
            rseq = self._next_rseq
            self._next_rseq = self._next_rseq % RSEQ_MAX + 1
            items += [("Require", REL100), ("RSeq", str(rseq))]
        if body:
            items.append(("Content-Type", SDP))
        resp = self._response(self._uas_invite.request, status, reason, items, body)
        self.state = SessionState.EARLY
        self._emit(SendResponse(self._uas_invite.server_txn, resp))
        if reliable:
            self._rel = _Reliable1xx(resp, rseq, bool(body), self.config.t1)
            self._start(TimerKey.RETRANSMIT_1XX, now + self.config.t1)
            self._start(TimerKey.PRACK_WAIT, now + 64 * self.config.t1)

    def answer(
        self, sdp: bytes | None, now: float, *, headers: Sequence[tuple[str, str]] = ()
    ) -> list[Effect]:
        """Send the 2xx to the initial INVITE (§13.3.1.4). With an offer in the INVITE,
        ``sdp`` is the answer; for an offer-less INVITE it is our offer (answer in ACK)."""
        self._require_uas_pending("answer")
        if self._queued_2xx is not None:
            raise SessionError("answer() already called; the 2xx waits for the PRACK")
        if self._rel is not None and self._rel.has_sdp:
            # RFC 3262 §3: no 2xx before the PRACK of a reliable 1xx carrying SDP.
            self._queued_2xx = (sdp, tuple(headers))
            return self._take()
        self._send_answer(sdp, tuple(headers), now)
        return self._take()

    def _send_answer(
        self, sdp: bytes | None, headers: tuple[tuple[str, str], ...], now: float
    ) -> None:
        assert self._uas_invite is not None
        offer_in_2xx = False
        body = b""
        st = self.oa.state
        if st is OfferState.REMOTE_OFFER_RECEIVED:
            if not sdp:
                raise SessionError("the INVITE carried an offer: answer() needs the SDP answer")
            self.oa.local_answer(sdp)
            body = sdp
        elif st is OfferState.IDLE and not self.oa.completed_once:
            if not sdp:
                raise SessionError("offer-less INVITE: answer() needs our SDP offer")
            self.oa.local_offer(sdp)
            body, offer_in_2xx = sdp, True
        elif st is OfferState.LOCAL_OFFER_SENT:
            raise SessionError("our offer in a reliable 1xx is not answered yet")
        # else: exchange completed in 1xx/PRACK; RFC 6337 §3.1: no SDP in the 2xx.
        self._stop_reliable()
        self._ensure_uas_dialog()
        items = [*self._uas_contact_headers(), *self.timer.response_headers(), *headers]
        if body:
            items.append(("Content-Type", SDP))
        req, txn = self._uas_invite.request, self._uas_invite.server_txn
        resp = self._response(req, 200, None, items, body)
        self._uas_invite = None
        assert self._dialog is not None
        self._dialog.confirm()
        self.state = SessionState.CONNECTING
        self._emit(SendResponse(txn, resp))
        self._pending_2xx = _Pending2xx(resp, txn, req.cseq.seq, self.config.t1, offer_in_2xx,
                                        True)
        self._start_2xx_timers(now)
        self._arm_session_timer(now)

    def reject(
        self, status: int, now: float, *, reason: str | None = None,
        headers: Sequence[tuple[str, str]] = (),
    ) -> list[Effect]:
        """Final non-2xx to the initial INVITE (the transaction layer handles its ACK)."""
        self._require_uas_pending("reject")
        if not 300 <= status <= 699:
            raise SessionError("reject() takes a 3xx-6xx status")
        self._final_reject(status, reason, tuple(headers))
        return self._take()

    def _final_reject(
        self, status: int, reason: str | None, headers: tuple[tuple[str, str], ...],
        end_reason: EndReason = EndReason.REJECTED,
    ) -> None:
        assert self._uas_invite is not None
        self._stop_reliable()
        self._queued_2xx = None
        req, txn = self._uas_invite.request, self._uas_invite.server_txn
        items = list(headers)
        tag = self._dialog.local_tag if self._dialog else self._local_tag
        resp = make_response(req, status, reason, to_tag=tag, headers=items)
        self._uas_invite = None
        self._emit(SendResponse(txn, resp))
        self._answer_pending_requests()
        self._terminate(Ended(end_reason, status))

    def _require_uas_pending(self, what: str) -> None:
        if self.role is not Role.UAS or self._uas_invite is None or self.state not in (
            SessionState.INCOMING, SessionState.EARLY
        ):
            raise SessionError(f"{what}() needs an unanswered incoming INVITE "
                               f"(state {self.state.value})")

    def _ensure_uas_dialog(self) -> None:
        if self._dialog is None:
            assert self._initial_invite is not None
            self._dialog = Dialog.uas(self._initial_invite, self._local_tag, self.config.local,
                                      token=self._token, initial_local_seq=self._dialog_seq)

    def _uas_contact_headers(self) -> list[tuple[str, str]]:
        assert self._initial_invite is not None
        local = self.config.local
        items: list[tuple[str, str]] = [
            ("Record-Route", rr) for rr in self._initial_invite.headers.get_all("Record-Route")
        ]
        items += [("Contact", f"<{local.contact}>"), ("Allow", ", ".join(local.allow))]
        supported = self._supported_tags(initial=True)
        if supported:
            items.append(("Supported", ", ".join(supported)))
        if local.user_agent:
            items.append(("Server", local.user_agent))
        return items

    # =========================================================================================
    # operations for both roles
    # =========================================================================================

    def reinvite(
        self, sdp: bytes | None, now: float, *, headers: Sequence[tuple[str, str]] = ()
    ) -> list[Effect]:
        """§14.1 re-INVITE. ``sdp`` ``None``: offer-less (the offer comes in the 2xx and the
        answer goes in the ACK, after :meth:`accept_offer`)."""
        self._require_idle("reinvite")
        self._send_reinvite(sdp, _Purpose.OFFER, now, tuple(headers))
        return self._take()

    def update(
        self, sdp: bytes | None, now: float, *, headers: Sequence[tuple[str, str]] = ()
    ) -> list[Effect]:
        """RFC 3311 UPDATE, in an early or confirmed dialog. With ``sdp`` it is an offer
        (the answer arrives as :class:`AnswerReceived`)."""
        d = self.dialog
        if d is None or self.state in (SessionState.TERMINATING, SessionState.TERMINATED):
            raise SessionError("update() needs an early or confirmed dialog")
        if any(c.request.method == "UPDATE" for c in self._client.values()):
            raise SessionError("an UPDATE of ours is already pending")
        if sdp is not None and (self.oa.state is not OfferState.IDLE
                                or not self.oa.completed_once):
            raise SessionError(f"cannot offer now (offer state {self.oa.state.value})")
        self._send_update(sdp, _Purpose.OFFER if sdp is not None else _Purpose.PLAIN, now,
                          tuple(headers))
        return self._take()

    def bye(self, now: float, *, headers: Sequence[tuple[str, str]] = ()) -> list[Effect]:
        """Hang up in any state: CANCEL (UAC before 2xx), 480 (UAS before 2xx), BYE
        after 2xx (a UAS waits for the ACK first, §15). Idempotent. ``headers`` go into
        the BYE / the 480 (e.g. ``("Reason", "Q.850;cause=16")``, RFC 3326)."""
        st = self.state
        if st in (SessionState.TERMINATING, SessionState.TERMINATED):
            return self._take()
        if st is SessionState.NULL:
            self._terminate(Ended(EndReason.BYE_SENT))
        elif self.role is Role.UAC and st in (SessionState.CALLING, SessionState.EARLY):
            self._cancel_invite(now)
        elif self.role is Role.UAS and self._uas_invite is not None:
            self._final_reject(480, "Temporarily Unavailable", tuple(headers))
        elif self.role is Role.UAS and st is SessionState.CONNECTING and (
            self._pending_2xx is not None and self._pending_2xx.initial
        ):
            self._bye_after_ack = True
            self._bye_headers = tuple(headers)
        else:
            self._send_bye(EndReason.BYE_SENT, now, headers)
        return self._take()

    def info(
        self, content_type: str, body: bytes, now: float, *,
        headers: Sequence[tuple[str, str]] = (),
    ) -> list[Effect]:
        """INFO (RFC 6086) in the dialog, e.g. ``application/dtmf-relay``. A 408/481 to it
        ends the session (§12.2.1.2); other failures are ignored."""
        d = self._require_dialog("info")
        req = d.create_request("INFO", body=body, content_type=content_type,
                               extra_headers=headers)
        self._send_in_dialog(req, d)
        return self._take()

    def accept_offer(self, answer_sdp: bytes, now: float) -> list[Effect]:
        """Answer the offer announced by :class:`OfferReceived`."""
        a = self._await
        if a is None:
            raise SessionError("no offer is waiting for an answer")
        if not answer_sdp:
            raise SessionError("accept_offer() needs an SDP answer")
        self._await = None
        self.oa.local_answer(answer_sdp)
        if a.via is _AnswerVia.INVITE_2XX:
            assert a.server is not None
            self._srv_reinvite = None
            self._send_reinvite_2xx(a.server, answer_sdp, False, now)
        elif a.via is _AnswerVia.UPDATE_2XX:
            assert a.server is not None
            self._srv_update = None
            self._send_update_2xx(a.server, answer_sdp, now)
        elif a.via is _AnswerVia.ACK:
            self._send_held_ack(answer_sdp)
            if self.state is SessionState.CONNECTING:
                self.state = SessionState.CONFIRMED
        else:  # PRACK
            assert a.dialog is not None and a.response is not None
            self._send_prack(a.dialog, a.response, answer_sdp)
        return self._take()

    def reject_offer(self, now: float, status: int = 488) -> list[Effect]:
        """Refuse the offer announced by :class:`OfferReceived` (488 by default). An offer
        in a 2xx cannot be refused: the ACK goes out and the session is torn down
        (RFC 6337 §3.1.3); one in a reliable 1xx cancels the INVITE."""
        a = self._await
        if a is None:
            raise SessionError("no offer is waiting for an answer")
        self._await = None
        self.oa.rollback()
        if a.via in (_AnswerVia.INVITE_2XX, _AnswerVia.UPDATE_2XX):
            assert a.server is not None
            if a.via is _AnswerVia.INVITE_2XX:
                self._srv_reinvite = None
            else:
                self._srv_update = None
            resp = make_response(a.server.request, status, None)
            self._emit(SendResponse(a.server.server_txn, resp))
        elif a.via is _AnswerVia.ACK:
            self._send_held_ack(None)
            self._send_bye(EndReason.NEGOTIATION_FAILED, now)
        else:
            self._cancel_invite(now)
        return self._take()

    # =========================================================================================
    # inputs from the adapter
    # =========================================================================================

    def on_request(self, req: Request, server_txn: object, now: float) -> list[Effect]:
        """An in-dialog request (or the ACK for a 2xx, with ``server_txn`` None)."""
        try:
            self._on_request(req, server_txn, now)
        except (DialogError, OfferAnswerError, ValueError) as e:
            # A malformed peer message must not break the session: 400 if answerable.
            if server_txn is not None and req.method != "ACK":
                self._emit(SendResponse(server_txn, make_response(req, 400, f"Bad Request ({e})")))
        return self._take()

    def on_response(self, resp: Response, now: float) -> list[Effect]:
        try:
            self._on_response(resp, now)
        except (DialogError, OfferAnswerError, ValueError):
            pass  # a broken response is dropped like a lost one; timers recover
        return self._take()

    def on_transaction_timeout(self, request: Request, now: float) -> list[Effect]:
        self._request_failed(request, 408, EndReason.REQUEST_TIMEOUT, now)
        return self._take()

    def on_transport_error(self, request: Request, now: float) -> list[Effect]:
        self._request_failed(request, 503, EndReason.TRANSPORT, now)
        return self._take()

    def on_cancel(self, now: float) -> list[Effect]:
        """CANCEL for our INVITE server transaction (§9.2): 487 if still unanswered."""
        if self.role is Role.UAS and self._uas_invite is not None:
            self._final_reject(487, "Request Terminated", (), EndReason.CANCELLED)
        return self._take()

    def on_ack_not_received(self, now: float) -> list[Effect]:
        """The transaction layer's retransmitter gave up on our 2xx (AckNotReceived)."""
        self._t_ack_wait(now)
        return self._take()

    def on_timer(self, key: TimerKey, now: float) -> list[Effect]:
        self._timers.discard(key)
        handler = {
            TimerKey.RETRANSMIT_2XX: self._t_retransmit_2xx,
            TimerKey.ACK_WAIT: self._t_ack_wait,
            TimerKey.RETRANSMIT_1XX: self._t_retransmit_1xx,
            TimerKey.PRACK_WAIT: self._t_prack_wait,
            TimerKey.GLARE_RETRY: self._t_glare_retry,
            TimerKey.SESSION_REFRESH: self._t_session_refresh,
            TimerKey.SESSION_EXPIRY: self._t_session_expiry,
            TimerKey.CANCEL_GUARD: self._t_cancel_guard,
            TimerKey.BYE_GUARD: self._t_bye_guard,
            TimerKey.ANSWER_WAIT: self._t_answer_wait,
            TimerKey.AUTH_WAIT: self._t_auth_wait,
        }[key]
        handler(now)
        return self._take()

    # =========================================================================================
    # incoming requests
    # =========================================================================================

    def _on_request(self, req: Request, txn: object, now: float) -> None:
        method = req.method
        if self.state is SessionState.TERMINATED:
            if method != "ACK" and txn is not None:
                self._emit(SendResponse(txn, make_response(req, 481, None)))
            return
        d = self._dialog_for_request(req)
        if method == "ACK":
            if d is not None:
                self._on_ack(req, now)
            return
        if d is None:
            self._emit(SendResponse(txn, make_response(
                req, 481, "Call/Transaction Does Not Exist")))
            return
        if not d.check_remote_cseq(req):
            self._emit(SendResponse(txn, make_response(req, 500, "CSeq Out of Order")))
            return
        if method == "BYE":
            self._on_bye(req, txn, now)
        elif method == "INVITE":
            self._on_reinvite(req, txn, d, now)
        elif method == "UPDATE":
            self._on_update(req, txn, d, now)
        elif method == "PRACK":
            self._on_prack(req, txn, now)
        elif method == "INFO":
            self._emit(SendResponse(txn, make_response(req, 200, None)))
            self._emit(InfoReceived(req))
        elif method == "OPTIONS":
            self._emit(SendResponse(txn, self._response(
                req, 200, None, [("Allow", ", ".join(self.config.local.allow))], b"")))
        else:
            self._emit(SendResponse(txn, make_response(
                req, 405, None, headers=[("Allow", ", ".join(self.config.local.allow))])))

    def _dialog_for_request(self, req: Request) -> Dialog | None:
        if self._dialog is not None and self._dialog.matches(req):
            return self._dialog
        if self.role is Role.UAC:
            tag = req.from_.tag or ""
            leg = self._early.get(tag)
            if leg is not None and leg.dialog.matches(req):
                return leg.dialog
        return None

    def _on_ack(self, ack: Request, now: float) -> None:
        p = self._pending_2xx
        if p is None or ack.cseq.seq != p.cseq:
            return  # retransmitted ACK or stale: absorbed
        self._pending_2xx = None
        self._cancel(TimerKey.RETRANSMIT_2XX)
        self._cancel(TimerKey.ACK_WAIT)
        assert self._dialog is not None
        if p.offer_in_2xx:
            if _sdp(ack):
                self.oa.remote_answer(_sdp(ack))
                self._emit(AnswerReceived(_sdp(ack), "ACK"))
            else:
                # RFC 3261 §13.2.2.4 / RFC 6337: the answer had to be in the ACK.
                self.oa.rollback()
                self._set_confirmed(p, ack)
                self._send_bye(EndReason.NEGOTIATION_FAILED, now)
                return
        self._set_confirmed(p, ack)
        if self._bye_after_ack:
            self._bye_after_ack = False
            self._send_bye(EndReason.BYE_SENT, now, self._bye_headers)

    def _set_confirmed(self, p: _Pending2xx, ack: Request) -> None:
        if self.state is SessionState.CONNECTING:
            self.state = SessionState.CONFIRMED
        if p.initial:
            self._emit(Confirmed(ack))

    def _on_bye(self, req: Request, txn: object, now: float) -> None:
        self._emit(SendResponse(txn, make_response(req, 200, None)))
        if self._uas_invite is not None:
            # §15.1.2: BYE on an early dialog: the INVITE gets 487.
            inv = self._uas_invite
            self._uas_invite = None
            self._stop_reliable()
            tag = self._dialog.local_tag if self._dialog else self._local_tag
            self._emit(SendResponse(inv.server_txn, make_response(
                inv.request, 487, "Request Terminated", to_tag=tag)))
        self._answer_pending_requests()
        self._terminate(Ended(EndReason.BYE_RECEIVED))

    def _on_reinvite(self, req: Request, txn: object, d: Dialog, now: float) -> None:
        if self.state is not SessionState.CONFIRMED:
            # An INVITE inside an early dialog, or before our 2xx is ACKed (§14.2).
            self._emit(SendResponse(txn, self._retry_after(req, 500)))
            return
        if self._srv_reinvite is not None or self._pending_2xx is not None:
            # §14.2: a second INVITE before the first got its final response → 500.
            self._emit(SendResponse(txn, self._retry_after(req, 500)))
            return
        if (self._inv is not None and not self._inv.final) or (
            self.oa.state is OfferState.LOCAL_OFFER_SENT
        ):
            self._emit(SendResponse(txn, make_response(req, 491, "Request Pending")))  # §14.2
            return
        if self.oa.state is OfferState.REMOTE_OFFER_RECEIVED or self._await is not None:
            self._emit(SendResponse(txn, self._retry_after(req, 500)))  # RFC 3311 §5.2 too
            return
        verdict = self._timer_check(req)
        if isinstance(verdict, TooSmall):
            self._emit(SendResponse(txn, make_response(
                req, 422, "Session Interval Too Small",
                headers=[("Min-SE", str(verdict.min_se))])))
            return
        srv = _ServerRequest(req, txn)
        self._update_peer_caps(req)
        if _sdp(req):
            self.oa.remote_offer(_sdp(req))
            self._srv_reinvite = srv
            self._await = _AwaitAnswer(_AnswerVia.INVITE_2XX, server=srv)
            self._emit(OfferReceived(_sdp(req), "INVITE"))
        else:
            # Offer-less re-INVITE: we offer what is in force (RFC 3264 §8 "no change"),
            # the answer comes in the ACK.
            offer = self.oa.local_sdp
            if offer is not None:
                self.oa.local_offer(offer)
            self._send_reinvite_2xx(srv, offer, offer is not None, now)

    def _send_reinvite_2xx(
        self, srv: _ServerRequest, sdp: bytes | None, is_offer: bool, now: float
    ) -> None:
        assert self._dialog is not None
        self._dialog.update_target(srv.request)
        items = [*self._dialog_2xx_headers(), *self.timer.response_headers()]
        if sdp:
            items.append(("Content-Type", SDP))
        resp = self._response(srv.request, 200, None, items, sdp or b"")
        self._emit(SendResponse(srv.server_txn, resp))
        self._pending_2xx = _Pending2xx(resp, srv.server_txn, srv.request.cseq.seq,
                                        self.config.t1, is_offer, False)
        self._start_2xx_timers(now)
        self._arm_session_timer(now)

    def _on_update(self, req: Request, txn: object, d: Dialog, now: float) -> None:
        if _sdp(req):
            offerless_invite_pending = (
                self._inv is not None and not self._inv.final and self._inv.offer is None
            )
            if self.oa.state is OfferState.LOCAL_OFFER_SENT or offerless_invite_pending:
                # RFC 3311 §5.2; an offer-less INVITE of ours is owed an offer in its 2xx,
                # which would cross this one (RFC 6337 §3.3.1): 491 as well.
                self._emit(SendResponse(txn, make_response(req, 491, "Request Pending")))
                return
            if self.oa.state is OfferState.REMOTE_OFFER_RECEIVED or self._await is not None \
                    or not self.oa.completed_once:
                # RFC 3311 §5.2: we owe an answer to an earlier offer.
                self._emit(SendResponse(txn, self._retry_after(req, 500)))
                return
        verdict = self._timer_check(req)
        if isinstance(verdict, TooSmall):
            self._emit(SendResponse(txn, make_response(
                req, 422, "Session Interval Too Small",
                headers=[("Min-SE", str(verdict.min_se))])))
            return
        self._update_peer_caps(req)
        srv = _ServerRequest(req, txn)
        if _sdp(req):
            self.oa.remote_offer(_sdp(req))
            self._srv_update = srv
            self._await = _AwaitAnswer(_AnswerVia.UPDATE_2XX, server=srv)
            self._emit(OfferReceived(_sdp(req), "UPDATE"))
        else:
            self._send_update_2xx(srv, None, now)

    def _send_update_2xx(self, srv: _ServerRequest, sdp: bytes | None, now: float) -> None:
        d = self._dialog_for_request(srv.request)
        if d is not None:
            d.update_target(srv.request)
        items = [*self._dialog_2xx_headers(), *self.timer.response_headers()]
        if sdp:
            items.append(("Content-Type", SDP))
        self._emit(SendResponse(srv.server_txn, self._response(
            srv.request, 200, None, items, sdp or b"")))
        if self.state in (SessionState.CONFIRMED, SessionState.CONNECTING):
            self._arm_session_timer(now)

    def _on_prack(self, req: Request, txn: object, now: float) -> None:
        rack = parse_rack(req.headers.get("RAck"))
        rel = self._rel
        if (
            rel is None or rack is None or self._uas_invite is None
            or rack != RAck(rel.rseq, self._uas_invite.request.cseq.seq, "INVITE")
        ):
            # RFC 3262 §3: a PRACK matching no unacknowledged reliable 1xx → 481.
            self._emit(SendResponse(txn, make_response(
                req, 481, "No Matching Provisional Response")))
            return
        self._stop_reliable(keep_queue=True)
        body = b""
        # An offer in a PRACK is not supported (it would need the answer in the 200).
        if _sdp(req) and self.oa.state is OfferState.LOCAL_OFFER_SENT:
            self.oa.remote_answer(_sdp(req))
            self._emit(AnswerReceived(_sdp(req), "PRACK"))
        self._emit(SendResponse(txn, self._response(req, 200, None, [], body)))
        if self._rel_queue:
            q = self._rel_queue.popleft()
            self._send_provisional(q.status, q.reason, q.sdp, q.headers, True, now)
        elif self._queued_2xx is not None:
            sdp, headers = self._queued_2xx
            self._queued_2xx = None
            self._send_answer(sdp, headers, now)

    # =========================================================================================
    # incoming responses
    # =========================================================================================

    def _on_response(self, resp: Response, now: float) -> None:
        cseq = resp.cseq
        if cseq.method == "INVITE":
            inv = self._inv
            if inv is not None and cseq.seq == inv.request.cseq.seq:
                if inv.initial:
                    self._on_initial_invite_response(resp, inv, now)
                else:
                    self._on_reinvite_response(resp, inv, now)
            elif 200 <= resp.status < 300:
                self._on_stray_2xx(resp)
            return
        if cseq.method == "CANCEL":
            return
        key = (resp.to.tag or "", cseq.seq)
        c = self._client.get(key)
        if c is None or c.request.method != cseq.method or resp.status < 200:
            return
        del self._client[key]
        if self.state is SessionState.TERMINATED:
            return
        m = cseq.method
        if m == "BYE":
            if self.state is SessionState.TERMINATING:
                self._terminate(None)
            return
        if m == "UPDATE":
            self._on_update_response(resp, c, now)
            return
        if m == "PRACK":
            return
        if resp.status in (408, 481):
            self._in_dialog_gone(resp.status, now)

    def _on_initial_invite_response(
        self, resp: Response, inv: _ClientInvite, now: float
    ) -> None:
        status = resp.status
        tag = resp.to.tag
        if status < 200:
            if inv.final or self.state not in (SessionState.CALLING, SessionState.EARLY):
                return
            self._got_provisional = True
            if self._cancel_wanted:
                self._send_cancel(now)
            if status == 100:
                return
            if tag:
                self._on_early_provisional(resp, tag, now)
            else:
                self._emit(Provisional(resp))
            return
        if 200 <= status < 300:
            self._on_initial_2xx(resp, inv, now)
            return
        # 3xx–6xx: the transaction layer ACKs it (§17.1.1.3).
        if inv.final:
            return
        if status == 422 and not self._cancel_wanted and self.timer.on_422(
            resp.headers.get("Min-SE")
        ):
            # RFC 4028 §7.4: same Call-ID and From tag, a higher CSeq, larger interval.
            self._log("422 Session Interval Too Small: retrying", interval=self.timer.requested)
            self._resend_initial_invite(inv)
            return
        if status in (401, 407) and self.config.auth_retry and not self._cancel_wanted and (
            self._auth_attempts < 2
        ):
            # §22.2 / §22.3: the application answers the challenge with authenticate()
            inv.final = True
            self._challenge = resp
            self._start(TimerKey.AUTH_WAIT, now + 64 * self.config.t1)
            self._emit(AuthRequired(resp))
            return
        inv.final = True
        self._inv = None
        self.oa.rollback()
        self._terminate(Failed(status, resp.reason, resp))

    def _resend_initial_invite(self, inv: _ClientInvite) -> None:
        """The same INVITE again with the next CSeq and a new branch (after 401/407/422)."""
        self._early.clear()
        self._got_provisional = False
        self._cancel_sent = False
        self._challenge = None
        self._send_initial_invite(inv.request.cseq.seq + 1, inv.offer)

    def _on_early_provisional(self, resp: Response, tag: str, now: float) -> None:
        assert self._initial_invite is not None
        leg = self._early.get(tag)
        if leg is None:
            try:
                d = Dialog.uac(self._initial_invite, resp, self.config.local, self._token)
            except DialogError:
                self._emit(Provisional(resp))
                return
            leg = _EarlyLeg(d)
            self._early[tag] = leg
            self._peer_allow = header_tokens(resp, "Allow") or self._peer_allow
        rseq = parse_rseq(resp.headers.get("RSeq"))
        reliable = rseq is not None and REL100 in header_tokens(resp, "Require") and (
            self.config.prack is not PrackMode.DISABLED)
        if reliable:
            assert rseq is not None
            verdict = leg.rseq.check(rseq)
            if verdict is not RSeqVerdict.NEW:
                return  # RFC 3262 §4: retransmission or out of order: discard
        self.state = SessionState.EARLY
        if leg.dialog.remote_target == self._initial_invite.uri:
            leg.dialog.update_target(resp)
        self._emit(Provisional(resp))
        body = _sdp(resp)
        if not reliable:
            if body and body != leg.last_sdp:
                leg.last_sdp = body
                self._emit(EarlyMedia(body, resp))
            return
        hold_prack = False
        if body:
            if self.oa.state is OfferState.LOCAL_OFFER_SENT:
                self.oa.remote_answer(body)
                leg.last_sdp = body
                self._emit(EarlyMedia(body, resp))
            elif self.oa.state is OfferState.IDLE and not self.oa.completed_once:
                self.oa.remote_offer(body)
                leg.last_sdp = body
                self._await = _AwaitAnswer(_AnswerVia.PRACK, response=resp, dialog=leg.dialog)
                self._emit(OfferReceived(body, "INVITE"))
                hold_prack = True
            elif body != leg.last_sdp:
                leg.last_sdp = body
                self._emit(EarlyMedia(body, resp))
        if not hold_prack:
            self._send_prack(leg.dialog, resp, None)

    def _send_prack(self, d: Dialog, resp: Response, sdp: bytes | None) -> None:
        rseq = parse_rseq(resp.headers.get("RSeq")) or 0
        rack = RAck(rseq, resp.cseq.seq, resp.cseq.method)
        req = d.create_request("PRACK", body=sdp or b"", extra_headers=[("RAck", str(rack))])
        self._send_in_dialog(req, d)

    def _on_initial_2xx(self, resp: Response, inv: _ClientInvite, now: float) -> None:
        tag = resp.to.tag or ""
        assert self._initial_invite is not None
        if inv.final:
            if self._dialog is not None and tag == self._dialog.remote_tag:
                if inv.ack is not None:
                    self._emit(SendAck(inv.ack, self._dialog.next_hop(inv.ack)))
            else:
                self._ack_and_bye_fork(resp)
            return
        if self.state not in (SessionState.CALLING, SessionState.EARLY):
            self._ack_and_bye_fork(resp)
            return
        leg = self._early.get(tag)
        if leg is not None:
            d = leg.dialog
            d.confirm(resp)
        else:
            # raises DialogError (→ the 2xx is dropped, nothing changed) without a To tag
            d = Dialog.uac(self._initial_invite, resp, self.config.local, self._token)
        inv.final = True
        self._cancel(TimerKey.CANCEL_GUARD)
        self._dialog = d
        self._early.clear()  # other forks' early dialogs die with the 2xx (§13.2.2.4)
        if resp.headers.get("Allow") is not None:
            self._peer_allow = header_tokens(resp, "Allow")
        self._peer_supports = header_tokens(resp, "Supported")
        body = _sdp(resp)
        if self._cancel_wanted:
            # We wanted out; the 2xx crossed our CANCEL: ACK it and BYE (§15, §9.1).
            self._send_ack(d, inv, None)
            self.oa.rollback()
            self._terminate(Failed(487, "Cancelled (answered before CANCEL took effect)",
                                   resp), keep_state=True)
            self._send_bye_only(d)
            return
        st = self.oa.state
        answer: bytes | None = None
        if st is OfferState.LOCAL_OFFER_SENT:
            if not body and leg is not None and leg.last_sdp:
                # Interop: some gateways put the answer only in an unreliable 183 and send
                # the 2xx bare. RFC 3261 wants it repeated; we take the 183's rather than
                # tearing the call down.
                body = leg.last_sdp
            if not body:
                self._send_ack(d, inv, None)
                self.oa.rollback()
                self._terminate(Failed(500, "2xx without SDP answer", resp), keep_state=True)
                self._send_bye_only(d)
                return
            self.oa.remote_answer(body)
            answer = body
        elif (st is OfferState.IDLE and not self.oa.completed_once) or (
            st is OfferState.REMOTE_OFFER_RECEIVED
        ):
            if st is OfferState.IDLE:
                if not body:
                    self._send_ack(d, inv, None)
                    self._terminate(Failed(500, "2xx without SDP offer", resp),
                                    keep_state=True)
                    self._send_bye_only(d)
                    return
                self.oa.remote_offer(body)
            # the offer (in this 2xx or in an unanswered reliable 1xx) is answered in the ACK
            self._await = _AwaitAnswer(_AnswerVia.ACK, response=resp, dialog=d)
            self._start(TimerKey.ANSWER_WAIT, now + 64 * self.config.t1)
            self.state = SessionState.CONNECTING
            self._session_timer_from_2xx(resp, now)
            self._emit(Answered(resp, None))
            self._emit(OfferReceived(self.oa.pending_remote_offer or body, "INVITE"))
            return
        self._send_ack(d, inv, None)
        self.state = SessionState.CONFIRMED
        self._session_timer_from_2xx(resp, now)
        self._emit(Answered(resp, answer))

    def _send_ack(self, d: Dialog, inv: _ClientInvite, sdp: bytes | None) -> None:
        # §13.2.2.4: the ACK carries the INVITE's credentials
        creds = [(name, value) for name in ("Authorization", "Proxy-Authorization")
                 for value in inv.request.headers.get_all(name)]
        ack = d.create_request("ACK", cseq=inv.request.cseq.seq, body=sdp or b"",
                               extra_headers=creds)
        inv.ack = ack
        # kept for 2xx retransmissions after the INVITE is forgotten (§13.2.2.4); the last
        # two are enough since a new INVITE waits for the previous one to complete
        self._acks[inv.request.cseq.seq] = ack
        while len(self._acks) > 2:
            del self._acks[min(self._acks)]
        self._emit(SendAck(ack, d.next_hop(ack)))

    def _send_held_ack(self, sdp: bytes | None) -> None:
        a_inv = self._inv
        d = self._dialog
        if a_inv is None or d is None:
            return
        self._send_ack(d, a_inv, sdp)
        self._cancel(TimerKey.ANSWER_WAIT)
        if self._await is not None and self._await.via is _AnswerVia.ACK:
            self._await = None
        if not a_inv.initial:
            self._inv = None

    def _ack_and_bye_fork(self, resp: Response) -> None:
        """§13.2.2.4: a 2xx from a second fork (or after we gave up): ACK, then BYE it."""
        assert self._initial_invite is not None
        try:
            d = Dialog.uac(self._initial_invite, resp, self.config.local, self._token)
        except DialogError:
            return
        ack = d.create_request("ACK", cseq=resp.cseq.seq)
        self._emit(SendAck(ack, d.next_hop(ack)))
        bye = d.create_request("BYE")
        self._emit(SendRequest(bye, d.next_hop(bye)))

    def _on_stray_2xx(self, resp: Response) -> None:
        """A 2xx retransmission for an INVITE we no longer track: re-ACK, or ACK+BYE when
        it comes from another fork."""
        d = self._dialog
        if d is not None and (resp.to.tag or "") == d.remote_tag:
            ack = self._acks.get(resp.cseq.seq)
            if ack is not None:
                self._emit(SendAck(ack, d.next_hop(ack)))
            return
        if self._initial_invite is not None and resp.cseq.seq == self._initial_invite.cseq.seq:
            self._ack_and_bye_fork(resp)

    def _on_reinvite_response(self, resp: Response, inv: _ClientInvite, now: float) -> None:
        d = self._dialog
        status = resp.status
        if status < 200 or d is None:
            return
        if 200 <= status < 300:
            if inv.final:
                if inv.ack is not None:
                    self._emit(SendAck(inv.ack, d.next_hop(inv.ack)))
                return
            inv.final = True
            d.update_target(resp)
            self._update_peer_caps(resp)
            if self.state is SessionState.TERMINATING:
                self._send_ack(d, inv, None)
                self._inv = None
                return
            body = _sdp(resp)
            if inv.offer is not None:
                self._send_ack(d, inv, None)
                self._inv = None
                if body and self.oa.state is OfferState.LOCAL_OFFER_SENT:
                    self.oa.remote_answer(body)
                    self._emit(AnswerReceived(body, "INVITE"))
                else:
                    # a 2xx without the answer: our offer did not take effect
                    self.oa.rollback()
                    self._emit(OfferRejected(status, "INVITE", resp))
                self._session_timer_from_2xx(resp, now)
                return
            # offer-less re-INVITE: the 2xx carries the offer, the ACK our answer
            self._session_timer_from_2xx(resp, now)
            if body and self.oa.state is OfferState.IDLE:
                self.oa.remote_offer(body)
                self._await = _AwaitAnswer(_AnswerVia.ACK, response=resp, dialog=d)
                self._start(TimerKey.ANSWER_WAIT, now + 64 * self.config.t1)
                self._emit(OfferReceived(body, "INVITE"))
            else:
                self._send_ack(d, inv, None)
                self._inv = None
            return
        if inv.final:
            return
        inv.final = True
        self._inv = None
        self.oa.rollback()
        if self.state is not SessionState.CONFIRMED:
            return
        if status == 491:
            self._log("re-INVITE glare (491), backing off")
            self._schedule_glare_retry("INVITE", inv.offer, inv.purpose, now)
        elif status == 422 and self.timer.on_422(resp.headers.get("Min-SE")):
            self._send_reinvite(inv.offer, inv.purpose, now, ())
        elif status in (408, 481):
            if inv.purpose is _Purpose.REFRESH:
                self._emit(RefreshFailed(status))
            self._in_dialog_gone(status, now)
        elif inv.purpose is _Purpose.REFRESH:
            self._refresh_failed(status, now)
        else:
            self._emit(OfferRejected(status, "INVITE", resp))

    def _on_update_response(self, resp: Response, c: _ClientRequest, now: float) -> None:
        status = resp.status
        d = self.dialog
        if 200 <= status < 300:
            if d is not None:
                d.update_target(resp)
            self._update_peer_caps(resp)
            if c.offer is not None:
                if _sdp(resp) and self.oa.state is OfferState.LOCAL_OFFER_SENT:
                    self.oa.remote_answer(_sdp(resp))
                    self._emit(AnswerReceived(_sdp(resp), "UPDATE"))
                else:
                    self.oa.rollback()
                    self._emit(OfferRejected(status, "UPDATE", resp))
            if self.state in (SessionState.CONFIRMED, SessionState.CONNECTING):
                self._session_timer_from_2xx(resp, now)
            return
        if c.offer is not None:
            self.oa.rollback()
        if status == 491:
            self._log("UPDATE glare (491), backing off")
            self._schedule_glare_retry("UPDATE", c.offer, c.purpose, now)
        elif status == 422 and self.timer.on_422(resp.headers.get("Min-SE")):
            self._send_update(c.offer, c.purpose, now, ())
        elif status in (408, 481):
            if c.purpose is _Purpose.REFRESH:
                self._emit(RefreshFailed(status))
            self._in_dialog_gone(status, now)
        elif c.purpose is _Purpose.REFRESH:
            self._refresh_failed(status, now)
        elif c.offer is not None:
            self._emit(OfferRejected(status, "UPDATE", resp))

    def _request_failed(self, req: Request, status: int, reason: EndReason, now: float) -> None:
        if self.state is SessionState.TERMINATED:
            return
        m = req.method
        if m == "INVITE":
            inv = self._inv
            if inv is None or inv.request.cseq.seq != req.cseq.seq or inv.final:
                return
            inv.final = True
            self._inv = None
            self.oa.rollback()
            if inv.initial:
                if self._cancel_wanted:
                    # the §9.1 guard of the transaction layer, or Timer B after CANCEL
                    self._terminate(Failed(487, "Request Terminated", None))
                else:
                    self._terminate(Failed(status, "Request Timeout" if status == 408
                                           else "Transport Error", None))
                return
            if inv.purpose is _Purpose.REFRESH:
                self._emit(RefreshFailed(status))
            self._send_bye(reason, now)
            return
        key = ((req.to.tag or ""), req.cseq.seq)
        c = self._client.pop(key, None)
        if c is None:
            return
        if m == "BYE":
            self._terminate(None)
            return
        if m in ("PRACK", "CANCEL"):
            return
        if c.offer is not None:
            self.oa.rollback()
        if c.purpose is _Purpose.REFRESH:
            self._emit(RefreshFailed(status))
        # §12.2.1.2: a timed-out in-dialog request ends the dialog.
        self._abandon(reason, None, now, bye=True)

    def _in_dialog_gone(self, status: int, now: float) -> None:
        if status == 481:
            self._abandon(EndReason.DIALOG_GONE, 481, now, bye=False)
        else:
            self._abandon(EndReason.REQUEST_TIMEOUT, None, now, bye=True)

    def _abandon(self, reason: EndReason, status: int | None, now: float, *, bye: bool) -> None:
        """End the session after a failed in-dialog request (§12.2.1.2), whatever its
        phase: an unanswered INVITE of the peer still gets its final response, one of ours
        is CANCELled (Failed follows), a confirmed dialog gets a BYE unless it is gone."""
        if self.state in (SessionState.TERMINATING, SessionState.TERMINATED):
            return
        if self._uas_invite is not None:
            self._final_reject(480, None, (), reason)
            return
        if self.role is Role.UAC and self.state in (SessionState.CALLING, SessionState.EARLY):
            self._cancel_invite(now)
            return
        if bye:
            self._send_bye(reason, now)
        else:
            self._answer_pending_requests()
            self._terminate(Ended(reason, status))

    # =========================================================================================
    # timers
    # =========================================================================================

    def _t_retransmit_2xx(self, now: float) -> None:
        p = self._pending_2xx
        if p is None:
            return
        self._emit(SendResponse(p.server_txn, p.response))
        p.interval = min(2 * p.interval, self.config.t2)
        self._start(TimerKey.RETRANSMIT_2XX, now + p.interval)

    def _start_2xx_timers(self, now: float) -> None:
        if self.config.retransmit_2xx:
            self._start(TimerKey.RETRANSMIT_2XX, now + self.config.t1)
        self._start(TimerKey.ACK_WAIT, now + 64 * self.config.t1)

    def _t_ack_wait(self, now: float) -> None:
        p = self._pending_2xx
        if p is None:
            return
        self._pending_2xx = None
        self._cancel(TimerKey.RETRANSMIT_2XX)
        if p.offer_in_2xx:
            self.oa.rollback()
        # §13.3.1.4: no ACK within 64*T1: confirm the dialog and tear it down.
        self._bye_after_ack = False
        self._send_bye(EndReason.ACK_TIMEOUT, now)

    def _t_retransmit_1xx(self, now: float) -> None:
        rel = self._rel
        if rel is None or self._uas_invite is None:
            return
        self._emit(SendResponse(self._uas_invite.server_txn, rel.response))
        rel.interval *= 2  # RFC 3262 §3: doubles, no T2 cap
        self._start(TimerKey.RETRANSMIT_1XX, now + rel.interval)

    def _t_prack_wait(self, now: float) -> None:
        if self._rel is None or self._uas_invite is None:
            return
        # RFC 3262 §3: reject the INVITE with a 5xx.
        self._final_reject(500, "Reliable Provisional Not Acknowledged", (),
                           EndReason.PRACK_TIMEOUT)

    def _t_glare_retry(self, now: float) -> None:
        g = self._glare
        if g is None or self.state is not SessionState.CONFIRMED:
            self._glare = None
            return
        if self._busy():
            self._start(TimerKey.GLARE_RETRY, now + self._glare_backoff())
            return
        self._glare = None
        method, sdp, purpose = g
        if method == "INVITE":
            self._send_reinvite(sdp, purpose, now, ())
        else:
            self._send_update(sdp, purpose, now, ())

    def _t_session_refresh(self, now: float) -> None:
        if self.state is not SessionState.CONFIRMED:
            if self.state in (SessionState.CONNECTING,):
                self._start(TimerKey.SESSION_REFRESH, now + 2.0)
            return
        if self._busy():
            # Something else is in flight; a completed re-INVITE/UPDATE refreshes too.
            self._start(TimerKey.SESSION_REFRESH, now + 2.0)
            return
        # RFC 4028 §7.4/§10: UPDATE (no body) when the peer allows it, else a re-INVITE
        # with the SDP in force.
        self._log("session refresh", method="UPDATE" if "update" in self._peer_allow
                  else "INVITE")
        if "update" in self._peer_allow:
            self._send_update(None, _Purpose.REFRESH, now, ())
        else:
            self._send_reinvite(self.oa.local_sdp, _Purpose.REFRESH, now, ())

    def _t_session_expiry(self, now: float) -> None:
        if self.state in (SessionState.CONFIRMED, SessionState.CONNECTING):
            self._send_bye(EndReason.SESSION_TIMER_EXPIRED, now)

    def _t_cancel_guard(self, now: float) -> None:
        inv = self._inv
        if inv is None or not inv.initial or inv.final:
            return
        # §9.1: no final response 64*T1 after CANCEL: the INVITE is over.
        inv.final = True
        self._inv = None
        self._terminate(Failed(487, "Request Terminated (no final response to CANCEL)", None))

    def _t_auth_wait(self, now: float) -> None:
        if self._challenge is not None:
            self._fail_challenge()

    def _fail_challenge(self) -> None:
        resp = self._challenge
        assert resp is not None
        self._challenge = None
        self._inv = None
        self.oa.rollback()
        self._terminate(Failed(resp.status, resp.reason, resp))

    def _t_answer_wait(self, now: float) -> None:
        a = self._await
        if a is None or a.via is not _AnswerVia.ACK:
            return
        # The application never answered the offer in the 2xx: ACK (without the answer we
        # do not have) and tear down, as RFC 6337 §3.1.3 does for an unacceptable offer.
        self._await = None
        self.oa.rollback()
        self._send_held_ack(None)
        if self.state is SessionState.CONNECTING:
            self.state = SessionState.CONFIRMED
        self._send_bye(EndReason.NEGOTIATION_FAILED, now)

    def _t_bye_guard(self, now: float) -> None:
        if self.state is SessionState.TERMINATING:
            self._terminate(None)

    # =========================================================================================
    # helpers: sending
    # =========================================================================================

    def _send_reinvite(
        self, sdp: bytes | None, purpose: _Purpose, now: float,
        headers: tuple[tuple[str, str], ...],
    ) -> None:
        d = self._dialog
        assert d is not None
        if sdp is not None:
            self.oa.local_offer(sdp)
        items: list[tuple[str, str]] = [("Allow", ", ".join(self.config.local.allow))]
        supported = self._supported_tags(initial=False)
        if supported:
            items.append(("Supported", ", ".join(supported)))
        items += self.timer.request_headers(initial=False)
        items += list(headers)
        req = d.create_request("INVITE", body=sdp or b"", content_type=SDP,
                               extra_headers=items)
        self._inv = _ClientInvite(req, False, sdp, purpose)
        self._emit(SendRequest(req, d.next_hop(req)))

    def _send_update(
        self, sdp: bytes | None, purpose: _Purpose, now: float,
        headers: tuple[tuple[str, str], ...],
    ) -> None:
        d = self.dialog
        assert d is not None
        if sdp is not None:
            self.oa.local_offer(sdp)
        items: list[tuple[str, str]] = []
        supported = self._supported_tags(initial=False)
        if supported:
            items.append(("Supported", ", ".join(supported)))
        if self.state in (SessionState.CONFIRMED, SessionState.CONNECTING):
            items += self.timer.request_headers(initial=False)
        items += list(headers)
        req = d.create_request("UPDATE", body=sdp or b"", content_type=SDP,
                               extra_headers=items)
        self._client[(d.remote_tag, req.cseq.seq)] = _ClientRequest(req, d.remote_tag,
                                                                    purpose, sdp)
        self._emit(SendRequest(req, d.next_hop(req)))

    def _send_in_dialog(self, req: Request, d: Dialog) -> None:
        self._client[(d.remote_tag, req.cseq.seq)] = _ClientRequest(req, d.remote_tag)
        self._emit(SendRequest(req, d.next_hop(req)))

    def _send_bye(
        self, reason: EndReason, now: float, headers: Sequence[tuple[str, str]] = ()
    ) -> None:
        """Send BYE on the dialog, answer what is pending, go TERMINATING and report."""
        if self.state in (SessionState.TERMINATING, SessionState.TERMINATED):
            return
        d = self._dialog
        if self._await is not None and self._await.via is _AnswerVia.ACK:
            # an offer in a 2xx still unanswered: the 2xx must be ACKed before the BYE
            self.oa.rollback()
            self._send_held_ack(None)
        self._answer_pending_requests()
        self._pending_2xx = None
        self._cancel_all_timers()
        if d is None:
            self._terminate(Ended(reason))
            return
        bye = d.create_request("BYE", extra_headers=headers)
        self._send_in_dialog(bye, d)
        self.state = SessionState.TERMINATING
        self._final_event(Ended(reason))
        self._start(TimerKey.BYE_GUARD, now + 64 * self.config.t1)

    def _send_bye_only(self, d: Dialog) -> None:
        """BYE after a Failed: TERMINATED right away, the BYE's response is not awaited."""
        bye = d.create_request("BYE")
        self._emit(SendRequest(bye, d.next_hop(bye)))
        self.state = SessionState.TERMINATED
        d.terminate()

    def _answer_pending_requests(self) -> None:
        """§15.1.2: requests still pending when the session ends get 487."""
        for srv in (self._srv_reinvite, self._srv_update):
            if srv is not None:
                self._emit(SendResponse(srv.server_txn, make_response(
                    srv.request, 487, "Request Terminated")))
        self._srv_reinvite = None
        self._srv_update = None
        if self._await is not None and self._await.via in (
            _AnswerVia.INVITE_2XX, _AnswerVia.UPDATE_2XX
        ):
            self._await = None
            self.oa.rollback()

    def _response(
        self, req: Request, status: int, reason: str | None,
        items: Sequence[tuple[str, str]], body: bytes,
    ) -> Response:
        tag: str | None = None
        if req.to.tag is None:
            tag = self._dialog.local_tag if self._dialog else self._local_tag
        return make_response(req, status, reason, to_tag=tag, headers=list(items), body=body)

    def _retry_after(self, req: Request, status: int) -> Response:
        # §14.2 / RFC 3311 §5.2: Retry-After random in 0..10 s.
        return make_response(req, status, None,
                             headers=[("Retry-After", str(self._rng.randint(0, 10)))])

    def _dialog_2xx_headers(self) -> list[tuple[str, str]]:
        local = self.config.local
        items = [("Contact", f"<{local.contact}>"), ("Allow", ", ".join(local.allow))]
        supported = self._supported_tags(initial=False)
        if supported:
            items.append(("Supported", ", ".join(supported)))
        return items

    def _supported_tags(self, *, initial: bool) -> list[str]:
        tags: list[str] = []
        if initial and self.config.prack is not PrackMode.DISABLED:
            tags.append(REL100)
        if self.config.timer.enabled:
            tags.append("timer")
        return tags

    # =========================================================================================
    # helpers: state
    # =========================================================================================

    def _require_idle(self, what: str) -> None:
        if self.state is not SessionState.CONFIRMED or self._dialog is None:
            raise SessionError(f"{what}() needs a confirmed dialog (state {self.state.value})")
        if self._busy():
            raise SessionError(f"{what}(): another INVITE/offer is in progress (§14.1)")

    def _require_dialog(self, what: str) -> Dialog:
        d = self.dialog
        if d is None or self.state in (SessionState.TERMINATING, SessionState.TERMINATED):
            raise SessionError(f"{what}() needs a dialog (state {self.state.value})")
        return d

    def _busy(self) -> bool:
        return (
            (self._inv is not None and (not self._inv.final or self._await is not None))
            or self._srv_reinvite is not None
            or self._pending_2xx is not None
            or self.oa.state is not OfferState.IDLE
            or any(c.request.method == "UPDATE" for c in self._client.values())
        )

    def _update_peer_caps(self, msg: Request | Response) -> None:
        if msg.headers.get("Allow") is not None:
            self._peer_allow = header_tokens(msg, "Allow")
        if msg.headers.get("Supported") is not None:
            self._peer_supports = header_tokens(msg, "Supported")

    def _timer_check(self, req: Request) -> TooSmall | Negotiated | None:
        return self.timer.on_request(
            req.headers.get("Session-Expires"), req.headers.get("Min-SE"),
            "timer" in (header_tokens(req, "Supported") | header_tokens(req, "Require")),
        )

    def _session_timer_from_2xx(self, resp: Response, now: float) -> None:
        self.timer.on_2xx_to_our_request(resp.headers.get("Session-Expires"))
        self._arm_session_timer(now)

    def _arm_session_timer(self, now: float) -> None:
        self._cancel(TimerKey.SESSION_REFRESH)
        self._cancel(TimerKey.SESSION_EXPIRY)
        refresh = self.timer.refresh_at(now)
        expire = self.timer.expire_at(now)
        if refresh is not None:
            self._start(TimerKey.SESSION_REFRESH, refresh)
            active = self.timer.active
            assert active is not None
            # The refresher's own bound: if no refresh succeeds (rejected, or crowded out
            # by transactions that never finish) the session is over when it expires.
            expire = now + active.interval
        if expire is not None:
            self._start(TimerKey.SESSION_EXPIRY, expire)

    def _refresh_failed(self, status: int, now: float) -> None:
        """RFC 4028 §10: a refresh rejected with another status leaves the session running
        until it would expire (SESSION_EXPIRY stays armed); the app hears about it."""
        self._emit(RefreshFailed(status))

    def _schedule_glare_retry(
        self, method: str, sdp: bytes | None, purpose: _Purpose, now: float
    ) -> None:
        self._glare = (method, sdp, purpose)
        self._start(TimerKey.GLARE_RETRY, now + self._glare_backoff())

    def _glare_backoff(self) -> float:
        """§14.1: 2.1–4 s if we own the Call-ID (we sent the initial INVITE), else 0–2 s,
        both in units of 10 ms."""
        if self.role is Role.UAC:
            return 2.1 + self._rng.randint(0, 190) / 100.0
        return self._rng.randint(0, 200) / 100.0

    def _stop_reliable(self, *, keep_queue: bool = False) -> None:
        if self._rel is not None:
            self._rel = None
            self._cancel(TimerKey.RETRANSMIT_1XX)
            self._cancel(TimerKey.PRACK_WAIT)
        if not keep_queue:
            self._rel_queue.clear()

    def _final_event(self, ev: Failed | Ended) -> None:
        if not self._terminal_sent:
            self._terminal_sent = True
            if isinstance(ev, Failed):
                self._log("session failed", status=ev.status, reason=ev.reason)
            else:
                self._log("session ended", reason=ev.reason.value, status=ev.status)
            self._emit(ev)

    def _log(self, event: str, **kw: object) -> None:
        log.info(event, call_id=self.call_id, leg=self.role.value, state=self.state.value, **kw)

    def _terminate(self, ev: Failed | Ended | None, *, keep_state: bool = False) -> None:
        """Everything stops. ``ev`` is the terminal event (emitted once per session)."""
        self._cancel_all_timers()
        self._stop_reliable()
        self._pending_2xx = None
        self._queued_2xx = None
        self._await = None
        if ev is not None:
            self._final_event(ev)
        if not keep_state:
            self.state = SessionState.TERMINATED
            if self._dialog is not None:
                self._dialog.terminate()
        self._early.clear()

    def _cancel_all_timers(self) -> None:
        for key in sorted(self._timers):
            self._emit(CancelTimer(key))
        self._timers.clear()

    def _start(self, key: TimerKey, deadline: float) -> None:
        self._timers.add(key)
        self._emit(StartTimer(key, deadline))

    def _cancel(self, key: TimerKey) -> None:
        if key in self._timers:
            self._timers.discard(key)
            self._emit(CancelTimer(key))

    def _emit(self, effect: Effect) -> None:
        self._fx.append(effect)

    def _take(self) -> list[Effect]:
        out, self._fx = self._fx, []
        return out


__all__ = [
    "AnswerReceived",
    "Answered",
    "AuthRequired",
    "CancelTimer",
    "Confirmed",
    "EarlyMedia",
    "Effect",
    "EndReason",
    "Ended",
    "Failed",
    "InfoReceived",
    "InviteSession",
    "OfferReceived",
    "OfferRejected",
    "Provisional",
    "RefreshFailed",
    "Role",
    "SendAck",
    "SendCancel",
    "SendRequest",
    "SendResponse",
    "SessionConfig",
    "SessionError",
    "SessionEvent",
    "SessionState",
    "StartTimer",
    "TimerKey",
]
