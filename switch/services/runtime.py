"""What every call scenario needs: originate a media-anchored leg, report leg events with
the right caller/called numbers, and finish a session with exactly one ``CallEnded``."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import structlog

from media.engine import MediaEngine
from media.errors import PortPoolExhausted
from switch.events import CallEnded, CallEventBus, LegEvent, LegEventKind, PartyType
from switch.events import Leg as LegName
from switch.leg import Leg, LegEnded, LegFailed, LegRinging
from switch.metrics import SwitchMetrics
from switch.services import causes
from switch.services.media_leg import MediaLeg
from switch.ua import UserAgent

log = structlog.get_logger("voicecall.services")


class NoMediaPorts(Exception):
    """No RTP port pair is free: the request is refused (stateCode 7109)."""


@dataclass(frozen=True, slots=True)
class ServiceTimers:
    no_answer_timeout_s: float = 60.0     # ringing longer than this is cancelled (8101/8107)
    collect_first_digit_s: float = 5.0    # DTMF-1: "start keying within 5 s"
    collect_inter_digit_s: float = 5.0
    last_minute_s: float = 60.0           # PR-LAST: one minute before maxDuration
    cancel_grace_s: float = 5.0           # after our CANCEL, how long to wait for the 487


@dataclass
class Runtime:
    ua: UserAgent
    media: MediaEngine
    bus: CallEventBus
    timers: ServiceTimers = field(default_factory=ServiceTimers)
    metrics: SwitchMetrics = field(default_factory=SwitchMetrics)

    async def originate(self, *, session_id: str, label: LegName, number: str,
                        from_number: str, service: str = "") -> MediaLeg:
        """Dial one leg. ``service`` (callback|notify|verify) counts it in
        voicecall_legs_active until its SIP leg ends; "" leaves it uncounted."""
        try:
            endpoint = await self.media.open_endpoint(call_id=session_id, leg=label.value)
        except PortPoolExhausted as e:
            raise NoMediaPorts(str(e)) from e
        offer = endpoint.create_offer().encode()
        leg = self.ua.originate(number, from_number, offer, label=label.value)
        # Lines this leg logs from SIP callbacks (outside the call's task and its context
        # variables) still name the session.
        leg.log = leg.log.bind(session_id=session_id)
        if service:
            self._count_leg(leg, service)
        return MediaLeg(leg, endpoint, session_id=session_id)

    def _count_leg(self, leg: Leg, service: str) -> None:
        metrics = self.metrics
        metrics.leg_started(service)

        def on_event(_leg: Leg, ev: object) -> None:
            if isinstance(ev, LegFailed | LegEnded):
                metrics.leg_ended(service)

        if leg.terminated:
            metrics.leg_ended(service)
        else:
            leg.on_event(on_event)

    def leg_event(self, session_id: str, label: LegName, kind: LegEventKind, *,
                  caller: str, called: str, state: tuple[int, str] | None = None,
                  sip_code: int = 0, q850: int = 0, party: PartyType | None = None,
                  service: str = "", leg: str = "") -> None:
        """Report one leg step on the bus. A DISCONNECT with ``service`` set is counted in
        voicecall_call_outcomes_total{service, leg, state_code}."""
        if service and kind is LegEventKind.DISCONNECT:
            self.metrics.leg_outcome(service, leg or label.value.lower(),
                                     state[0] if state is not None else None)
        self.bus.emit(LegEvent(
            session_id=session_id, leg=label, kind=kind, timestamp=time.time(),
            caller=caller, called=called,
            state_code=state[0] if state is not None else None,
            state_desc=state[1] if state is not None else "",
            sip_code=sip_code, q850=q850, party_type=party))

    async def ring_or_fail(self, ml: MediaLeg, *, session_id: str, label: LegName,
                           caller: str, called: str, caller_side: bool,
                           abort: asyncio.Event | None = None,
                           ) -> causes.LegFailure | None:
        """Wait until ``ml`` answers (None) or fails (its LegFailure), emitting alerting and
        answer events, cancelling after the no-answer timeout. ``abort`` (callStop) cancels
        the attempt too; the failure then carries stateCode 8017."""
        alerted = False
        loop = asyncio.get_running_loop()
        gave_up: asyncio.Future[None] = loop.create_future()

        def on_event(_leg: object, ev: object) -> None:
            nonlocal alerted
            if isinstance(ev, LegRinging) and not alerted:
                alerted = True
                self.leg_event(session_id, label, LegEventKind.ALERTING,
                               caller=caller, called=called)

        ml.leg.on_event(on_event)
        if ml.rang:
            # The 18x came in before this coroutine first ran (B is dialled and then this
            # waiter is scheduled as a task): report it now, or it would be lost.
            on_event(ml.leg, LegRinging(180, None))

        def give_up() -> None:
            if not ml.is_answered and not ml.terminated:
                ml.hangup()
                gave_up.set_result(None)

        timer = loop.call_later(self.timers.no_answer_timeout_s, give_up)
        try:
            waiters: list[asyncio.Future[Any]] = [ml.answered, ml.finished, gave_up]
            stop = asyncio.ensure_future(abort.wait()) if abort is not None else None
            if stop is not None:
                waiters.append(stop)
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            if stop is not None and not stop.done():
                stop.cancel()
            elif stop is not None and not ml.is_answered and not ml.terminated:
                ml.hangup()
                await asyncio.wait([ml.finished], timeout=self.timers.cancel_grace_s)
                if not ml.terminated:
                    ml.end = time.time()
                return causes.LegFailure(*causes.USER_REQUESTED, q850=16, sip_code=487)
            if gave_up.done() and not ml.terminated and ml.rang:
                # Our CANCEL is out; a live peer answers it with 487 at once.
                await asyncio.wait([ml.finished], timeout=self.timers.cancel_grace_s)
        finally:
            timer.cancel()
            if not gave_up.done():
                gave_up.cancel()
        if ml.answered.done() and not ml.answered.cancelled():
            self.leg_event(session_id, label, LegEventKind.ANSWER, caller=caller, called=called)
            return None
        timed_out = gave_up.done() and not gave_up.cancelled()
        if not ml.terminated:
            # Nothing came back at all (gateway down: without a provisional no CANCEL may
            # be sent, RFC 3261 §9.1.). The INVITE transaction ends by itself at Timer B;
            # the call does not wait for it. Reported as a 408 that never rang (8103/8109).
            ml.end = time.time()
            if not ml.rang:
                return causes.leg_failure(408, caller_side=caller_side, rang=False)
            return causes.leg_failure(487, caller_side=caller_side, rang=True, timed_out=True)
        ev = ml.finished.result()
        status = ev.status if isinstance(ev, LegFailed) else 487
        return causes.leg_failure(status, caller_side=caller_side, rang=ml.rang,
                                  timed_out=timed_out and ml.rang)

    def end(self, ended: CallEnded) -> None:
        self.bus.emit(ended)
