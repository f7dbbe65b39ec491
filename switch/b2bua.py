"""Back-to-back user agent for calls that arrive over SIP (softphone → softphone, softphone →
gateway, gateway → softphone): the inbound leg A is routed by [[routes]]/[[users]] and
bridged to an outbound leg B as two independent dialogs.

Signalling only: SDP is passed through unchanged (the media engine replaces this when the
node anchors media). Provisional responses and early media are relayed, CANCEL becomes
CANCEL, final responses are mapped, re-INVITE/UPDATE offers and INFO are relayed, and a BYE
(or a failure) on either side ends the other."""

from __future__ import annotations

import asyncio
import functools
from dataclasses import dataclass, field

import structlog

from switch.leg import (
    Leg,
    LegAnswer,
    LegAnswered,
    LegEarlyMedia,
    LegEnded,
    LegEvent,
    LegFailed,
    LegInfo,
    LegOffer,
    LegOfferRejected,
    LegRinging,
)
from switch.metrics import SwitchMetrics, sip_class
from switch.ua import CallerIdentity, UserAgent

log = structlog.get_logger("voicecall.b2bua")

SERVICE = "b2bua"   # the service label of B2BUA calls in the metrics


def map_final_status(status: int) -> tuple[int, str | None]:
    """The final response A gets for B's failure. 503 and 5xx that describe *our* next hop
    are not passed upstream as-is (a 503 would make A's proxy think this node is
    overloaded, RFC 3261 §16.7 step 6); timeouts become 408; the rest passes through."""
    if status == 503:
        return 480, "Temporarily Unavailable"
    if status in (500, 502, 504):
        return 502, "Bad Gateway"
    if status == 487:
        return 487, None
    return status, None


@dataclass(eq=False)
class BridgedCall:
    a: Leg
    b: Leg
    caller: CallerIdentity
    called: str
    pending_offer: object | None = None   # token of the offer relayed and not yet answered
    no_answer_timer: asyncio.TimerHandle | None = None
    timed_out: bool = False
    ended: bool = False
    log: structlog.stdlib.BoundLogger = field(init=False)

    def __post_init__(self) -> None:
        self.log = log.bind(call_id=self.a.call_id, b_call_id=self.b.call_id)


def leg_outcome(leg: Leg, ev: LegFailed | LegEnded) -> str:
    """``call_outcomes_total`` state_code of a B2BUA leg: the class of the final response on
    its INVITE ("2xx" once answered), "0" when none went over the wire (B: a local timeout,
    transport failure or no route)."""
    if leg.answered:
        return "2xx"
    if isinstance(ev, LegFailed):
        return sip_class(ev.status if ev.response is not None else None)
    # Inbound A: a status ≥ 300 is the final response we rejected (or a CANCEL made us
    # send) it with; otherwise our 2xx went out and the call ended later.
    if ev.status is not None and ev.status >= 300:
        return sip_class(ev.status)
    return "2xx"


class B2bua:
    def __init__(self, ua: UserAgent, *, metrics: SwitchMetrics | None = None) -> None:
        self.ua = ua
        self.metrics = metrics if metrics is not None else ua.metrics
        self.calls: dict[int, BridgedCall] = {}
        ua.on_incoming_call = self.on_incoming_call

    def on_incoming_call(self, a: Leg, called: str, caller: CallerIdentity) -> None:
        invite = a.invite
        sdp = invite.body if invite is not None and invite.body else None
        b = self.ua.originate(called, caller.number, sdp, display_name=caller.display_name,
                              label="B")
        call = BridgedCall(a, b, caller, called)
        self.calls[id(call)] = call
        call.log.info("b2bua call", caller=caller.number, called=called,
                      via=caller.gateway or caller.username)
        m = self.metrics
        m.call_started(SERVICE)
        for leg, name in ((a, "a"), (b, "b")):
            m.leg_started(SERVICE)
            if leg.terminal_event is not None:
                self._leg_done(leg, name, leg.terminal_event)
            else:
                leg.on_event(functools.partial(self._leg_event, name))
        a.on_event(lambda leg, ev: self._from_a(call, ev))
        b.on_event(lambda leg, ev: self._from_b(call, ev))
        call.no_answer_timer = self.ua.stack.loop.call_later(
            self.ua.sip.no_answer_timeout_s, self._no_answer, call)
        if a.terminated:
            b.hangup()

    def _no_answer(self, call: BridgedCall) -> None:
        """Nobody answered within ``sip.no_answer_timeout_s``: CANCEL B, A gets 480."""
        if not call.b.answered and not call.b.terminated:
            call.timed_out = True
            call.log.info("no answer, cancelling", timeout_s=self.ua.sip.no_answer_timeout_s)
            call.b.hangup()

    def _leg_event(self, name: str, leg: Leg, ev: LegEvent) -> None:
        if isinstance(ev, LegFailed | LegEnded):
            self._leg_done(leg, name, ev)

    def _leg_done(self, leg: Leg, name: str, ev: LegFailed | LegEnded) -> None:
        self.metrics.leg_ended(SERVICE)
        self.metrics.leg_outcome(SERVICE, name, leg_outcome(leg, ev))

    # ------------------------------------------------------------------ A side
    def _from_a(self, call: BridgedCall, ev: LegEvent) -> None:
        if isinstance(ev, LegEnded | LegFailed):
            self._finish(call)
            call.b.hangup()
        elif isinstance(ev, LegOffer):
            self._relay_offer(call, call.a, call.b, ev)
        elif isinstance(ev, LegInfo):
            call.b.send_info(ev.content_type, ev.body)

    # ------------------------------------------------------------------ B side
    def _from_b(self, call: BridgedCall, ev: LegEvent) -> None:
        a = call.a
        if isinstance(ev, LegRinging):
            if ev.sdp is None:
                a.ring(ev.status if ev.status < 183 else 180)
        elif isinstance(ev, LegEarlyMedia):
            a.ring(183, ev.sdp, reliable=self._a_supports_100rel(a))
        elif isinstance(ev, LegAnswered):
            if call.no_answer_timer is not None:
                call.no_answer_timer.cancel()
            a.answer(ev.sdp)
        elif isinstance(ev, LegFailed):
            self._finish(call)
            status, reason = map_final_status(ev.status)
            if call.timed_out:
                status, reason = 480, "No Answer"
            if not a.terminated:
                a.reject(status, reason or ev.reason)
        elif isinstance(ev, LegEnded):
            self._finish(call)
            a.hangup()
        elif isinstance(ev, LegOffer):
            self._relay_offer(call, call.b, a, ev)
        elif isinstance(ev, LegInfo):
            a.send_info(ev.content_type, ev.body)

    def _relay_offer(self, call: BridgedCall, src: Leg, dst: Leg, ev: LegOffer) -> None:
        """Forward an offer from ``src`` to ``dst`` with the same method when possible; the
        answer comes back as ``LegAnswer`` on ``dst`` and is given to ``src``."""
        token = object()
        call.pending_offer = token

        def on_answer(leg: Leg, answer: LegEvent) -> None:
            if call.pending_offer is not token:
                return
            if isinstance(answer, LegAnswer):
                call.pending_offer = None
                src.accept_offer(answer.sdp)
            elif isinstance(answer, LegOfferRejected):
                call.pending_offer = None
                src.reject_offer(answer.status)

        dst.on_event(on_answer)
        if ev.method == "UPDATE":
            dst.update(ev.sdp)
        else:
            dst.reinvite(ev.sdp)

    @staticmethod
    def _a_supports_100rel(a: Leg) -> bool:
        inv = a.invite
        if inv is None:
            return False
        return "100rel" in inv.supported or "100rel" in inv.require

    def _finish(self, call: BridgedCall) -> None:
        if call.no_answer_timer is not None:
            call.no_answer_timer.cancel()
        if not call.ended:
            call.ended = True
            self.calls.pop(id(call), None)
            self.metrics.call_ended(SERVICE)
            call.log.info("b2bua call ended")
