"""``Runtime.ring_or_fail`` against a scripted leg: alerting reported once (also when the
18x beat the waiter), the no-answer timeout, a dead peer that never answers anything, and
callStop while ringing — each with the stateCode and Q.850 the CDR will carry."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from switch.events import CallEventBus, LegEvent, LegEventKind
from switch.events import Leg as LegName
from switch.leg import LegFailed, LegRinging
from switch.services.runtime import Runtime, ServiceTimers


class ScriptedLeg:
    """The parts of ``switch.leg.Leg`` that ``ring_or_fail`` uses."""

    def __init__(self) -> None:
        self.listeners: list[Callable[[Any, Any], None]] = []
        self.hangups = 0
        self.on_hangup: Callable[[], None] | None = None

    def on_event(self, listener: Callable[[Any, Any], None]) -> None:
        self.listeners.append(listener)

    def emit(self, ev: object) -> None:
        for li in list(self.listeners):
            li(self, ev)


class ScriptedMediaLeg:
    """The parts of ``MediaLeg``: futures and the ``rang`` flag driven by the script."""

    def __init__(self) -> None:
        loop = asyncio.get_running_loop()
        self.leg = ScriptedLeg()
        self.answered: asyncio.Future[None] = loop.create_future()
        self.finished: asyncio.Future[object] = loop.create_future()
        self.rang = False
        self.end: float | None = None
        self.leg.on_event(self._track)

    def _track(self, _leg: object, ev: object) -> None:
        if isinstance(ev, LegRinging):
            self.rang = True
        elif isinstance(ev, LegFailed) and not self.finished.done():
            self.finished.set_result(ev)

    @property
    def is_answered(self) -> bool:
        return self.answered.done()

    @property
    def terminated(self) -> bool:
        return self.finished.done()

    def hangup(self) -> None:
        self.leg.hangups += 1
        if self.leg.on_hangup is not None:
            self.leg.on_hangup()


def runtime(events: list[LegEvent], timeout: float = 0.05) -> Runtime:
    bus = CallEventBus()
    bus.subscribe(lambda e: events.append(e) if isinstance(e, LegEvent) else None)
    return Runtime(ua=None, media=None, bus=bus,  # type: ignore[arg-type]
                   timers=ServiceTimers(no_answer_timeout_s=timeout, cancel_grace_s=0.2))


async def ring(rt: Runtime, ml: ScriptedMediaLeg, *, caller_side: bool = False,
               abort: asyncio.Event | None = None) -> Any:
    return await rt.ring_or_fail(ml, session_id="s1", label=LegName.B,  # type: ignore[arg-type]
                                 caller="+8675500000002", called="+8613900000022",
                                 caller_side=caller_side, abort=abort)


async def test_dead_peer_fails_at_the_timeout_as_unreachable_without_waiting_timer_b() -> None:
    events: list[LegEvent] = []
    ml = ScriptedMediaLeg()          # nothing ever comes back; hangup changes nothing
    fail = await asyncio.wait_for(ring(runtime(events), ml), 1.0)
    assert (fail.state_code, fail.q850, fail.sip_code) == (8103, 102, 408)
    assert ml.leg.hangups == 1 and ml.end is not None
    assert events == []              # it never alerted

    ml2 = ScriptedMediaLeg()
    fail = await asyncio.wait_for(ring(runtime([]), ml2, caller_side=True), 1.0)
    assert fail.state_code == 8109


async def test_rang_out_is_no_answer_19() -> None:
    events: list[LegEvent] = []
    ml = ScriptedMediaLeg()
    ml.leg.on_hangup = lambda: ml.leg.emit(LegFailed(487, "Request Terminated"))
    task = asyncio.ensure_future(ring(runtime(events), ml))
    await asyncio.sleep(0)
    ml.leg.emit(LegRinging(180, None))
    ml.leg.emit(LegRinging(183, b"v=0"))
    fail = await asyncio.wait_for(task, 1.0)
    assert (fail.state_code, fail.q850, fail.sip_code) == (8101, 19, 487)
    assert [e.kind for e in events] == [LegEventKind.ALERTING]


async def test_ringing_before_the_waiter_ran_is_still_reported() -> None:
    events: list[LegEvent] = []
    ml = ScriptedMediaLeg()
    ml.leg.emit(LegRinging(180, None))          # before ring_or_fail subscribed
    ml.leg.on_hangup = lambda: ml.leg.emit(LegFailed(487, "Request Terminated"))
    await asyncio.wait_for(ring(runtime(events), ml), 1.0)
    assert [e.kind for e in events] == [LegEventKind.ALERTING]


async def test_busy_is_8102_17_and_caller_side_8108() -> None:
    for caller_side, code in ((False, 8102), (True, 8108)):
        ml = ScriptedMediaLeg()
        task = asyncio.ensure_future(ring(runtime([], timeout=5), ml, caller_side=caller_side))
        await asyncio.sleep(0)
        ml.leg.emit(LegRinging(180, None))
        ml.leg.emit(LegFailed(486, "Busy Here"))
        fail = await asyncio.wait_for(task, 1.0)
        assert (fail.state_code, fail.q850, fail.sip_code) == (code, 17, 486)


async def test_callstop_while_ringing_cancels_with_8017() -> None:
    ml = ScriptedMediaLeg()
    ml.leg.on_hangup = lambda: ml.leg.emit(LegFailed(487, "Request Terminated"))
    stop = asyncio.Event()
    task = asyncio.ensure_future(ring(runtime([], timeout=5), ml, abort=stop))
    await asyncio.sleep(0)
    ml.leg.emit(LegRinging(180, None))
    stop.set()
    fail = await asyncio.wait_for(task, 1.0)
    assert (fail.state_code, fail.sip_code) == (8017, 487)
    assert ml.leg.hangups == 1


async def test_answer_returns_none_and_reports_answer() -> None:
    events: list[LegEvent] = []
    ml = ScriptedMediaLeg()
    task = asyncio.ensure_future(ring(runtime(events, timeout=5), ml))
    await asyncio.sleep(0)
    ml.leg.emit(LegRinging(180, None))
    ml.answered.set_result(None)
    assert await asyncio.wait_for(task, 1.0) is None
    assert [e.kind for e in events] == [LegEventKind.ALERTING, LegEventKind.ANSWER]
    assert ml.leg.hangups == 0
