"""An in-process stand-in for the switch: accepts requests and emits realistic event sequences
on a :class:`CallEventBus` (callout → alerting → answer → … → disconnect → CallEnded). Used by
tests, the benchmark and the kill-and-restart test process; not used in production."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import soundfile

from control_api.backend import (
    BackendError,
    CallbackRequest,
    NotificationRequest,
    VerificationRequest,
)
from switch.events import (
    CallEnded,
    CallEventBus,
    CollectInfo,
    Leg,
    LegEvent,
    LegEventKind,
    LegTimes,
    PartyType,
)
from switch.trace import (
    CallTraces,
    TracedLeg,
    TraceEntry,
    dialog_document,
    recent_dialogs,
    session_document,
)

# What the fake "sends" and "receives" on a leg for each event it emits: (direction, first
# line, CSeq), enough for the admin API's SIP-trace views to have something realistic to
# show. A leg that ends without having answered was cancelled.
_FAKE_SIP: dict[str, tuple[tuple[str, str, str], ...]] = {
    "callout": (("out", "INVITE sip:{n}@fake.invalid SIP/2.0", "1 INVITE"),
                ("in", "SIP/2.0 100 Trying", "1 INVITE")),
    "alerting": (("in", "SIP/2.0 180 Ringing", "1 INVITE"),),
    "answer": (("in", "SIP/2.0 200 OK", "1 INVITE"),
               ("out", "ACK sip:{n}@fake.invalid SIP/2.0", "1 ACK")),
    "disconnect": (("out", "BYE sip:{n}@fake.invalid SIP/2.0", "2 BYE"),
                   ("in", "SIP/2.0 200 OK", "2 BYE")),
    "cancel": (("out", "CANCEL sip:{n}@fake.invalid SIP/2.0", "1 CANCEL"),
               ("in", "SIP/2.0 200 OK", "1 CANCEL"),
               ("in", "SIP/2.0 487 Request Terminated", "1 INVITE"),
               ("out", "ACK sip:{n}@fake.invalid SIP/2.0", "1 ACK")),
}


@dataclass(frozen=True, slots=True)
class FakeScript:
    ring_s: float = 0.01
    a_answers: bool = True
    b_answers: bool = True
    talk_s: float = 0.05
    digits: str = "1"
    record_duration_s: float | None = None      # reported duration (default: talk time)
    end_at: float | None = None                 # force callEndTime (CDR batching tests)
    refuse: bool = False                        # start_* raises BackendError
    start_delay_s: float = 0.0                  # start_* takes this long to return


RequestT = CallbackRequest | NotificationRequest | VerificationRequest


@dataclass
class FakeBackend:
    bus: CallEventBus
    script_for: Callable[[RequestT], FakeScript] = field(default=lambda _r: FakeScript())
    requests: list[RequestT] = field(default_factory=list)
    _stops: dict[str, asyncio.Event] = field(default_factory=dict)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    traces: CallTraces = field(default_factory=CallTraces)
    # per session, newest last, as many as the traces keep: its request, its traced legs
    _traced: OrderedDict[str, tuple[RequestT, dict[Leg, TracedLeg]]] = field(
        default_factory=OrderedDict)
    _answered: set[str] = field(default_factory=set)     # Call-IDs of answered legs
    _ids: itertools.count[int] = field(default_factory=itertools.count)

    def _launch(self, req: RequestT, coro_fn: Callable[[RequestT, FakeScript, asyncio.Event],
                                                       object]) -> None:
        script = self.script_for(req)
        if script.refuse:
            raise BackendError("Insufficient voice ports.")
        self.requests.append(req)
        self._traced[req.session_id] = (req, {})
        while len(self._traced) > max(1, self.traces.max_calls):
            _, (_, legs) = self._traced.popitem(last=False)
            self._answered.difference_update(t.call_id for t in legs.values())
        stop = asyncio.Event()
        self._stops[req.session_id] = stop
        task: asyncio.Task[None] = asyncio.create_task(coro_fn(req, script, stop))  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def start_callback(self, req: CallbackRequest) -> None:
        delay = self.script_for(req).start_delay_s
        if delay:
            await asyncio.sleep(delay)
        self._launch(req, self._callback)  # type: ignore[arg-type]

    async def start_notification(self, req: NotificationRequest) -> None:
        self._launch(req, self._playback)  # type: ignore[arg-type]

    async def start_verification(self, req: VerificationRequest) -> None:
        self._launch(req, self._playback)  # type: ignore[arg-type]

    async def stop_call(self, session_id: str) -> bool:
        ev = self._stops.get(session_id)
        if ev is None or ev.is_set():
            return False
        ev.set()
        return True

    async def hang_up_all(self) -> None:
        """Stop every call in progress (as callStop would) and wait for their events."""
        for ev in list(self._stops.values()):
            ev.set()
        await self.drain()

    async def drain(self) -> None:
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    # -- scenarios -----------------------------------------------------------------------------

    @staticmethod
    async def _wait(stop: asyncio.Event, seconds: float) -> bool:
        """Sleep; True if the call was stopped meanwhile."""
        try:
            await asyncio.wait_for(stop.wait(), seconds)
            return True
        except TimeoutError:
            return False

    # -- SIP traces (synthetic) ----------------------------------------------------------------

    def sip_trace(self, session_id: str) -> dict[str, Any] | None:
        entry = self._traced.get(session_id)
        if entry is None:
            return None
        return session_document(self.traces, session_id, list(entry[1].values()))

    def sip_dialogs(self, limit: int = 100, *, calls_only: bool = True,
                    ) -> list[dict[str, Any]]:
        return recent_dialogs(self.traces, self._sessions_by_call_id(), limit,
                              calls_only=calls_only)

    def sip_dialog(self, call_id: str, also: Sequence[str] = ()) -> dict[str, Any] | None:
        return dialog_document(self.traces, call_id, self._sessions_by_call_id().get(call_id),
                               also)

    def _sessions_by_call_id(self) -> dict[str, str]:
        return {t.call_id: sid for sid, (_, legs) in self._traced.items() for t in legs.values()}

    def _trace(self, sid: str, leg: Leg, kind: LegEventKind, now: float) -> None:
        entry = self._traced.get(sid)
        if entry is None:
            return
        req, legs = entry
        traced = legs.get(leg)
        if traced is None:
            caller_leg = isinstance(req, CallbackRequest) and leg is Leg.A
            number = req.caller_nbr if isinstance(req, CallbackRequest) and caller_leg \
                else req.callee_nbr
            traced = legs[leg] = TracedLeg(leg.value, "caller" if caller_leg else "callee",
                                           number, f"fake{next(self._ids)}@fake.invalid")
        step = kind.value
        if kind is LegEventKind.ANSWER:
            self._answered.add(traced.call_id)
        elif kind is LegEventKind.DISCONNECT and traced.call_id not in self._answered:
            step = "cancel"
        port = 5071 if leg is Leg.A else 5072
        for direction, first, cseq in _FAKE_SIP.get(step, ()):
            line = first.format(n=traced.number)
            tag = "" if line.startswith(("INVITE", "CANCEL")) else ";tag=fake"  # in dialog
            data = (f"{line}\r\nTo: <sip:{traced.number}@fake.invalid>{tag}\r\n"
                    f"Call-ID: {traced.call_id}\r\nCSeq: {cseq}\r\n\r\n").encode()
            self.traces.add(traced.call_id, TraceEntry(now, direction, "udp", "127.0.0.1:5060",
                                                       f"127.0.0.1:{port}", line, data))

    def _leg(self, sid: str, leg: Leg, kind: LegEventKind, **kw: object) -> float:
        now = time.time()
        self._trace(sid, leg, kind, now)
        self.bus.emit(LegEvent(session_id=sid, leg=leg, kind=kind, timestamp=now, **kw))  # type: ignore[arg-type]
        return now

    def _end(self, sid: str, script: FakeScript, **kw: object) -> None:
        self._stops.pop(sid, None)
        end = script.end_at if script.end_at is not None else time.time()
        self.bus.emit(CallEnded(session_id=sid, end_time=end, **kw))  # type: ignore[arg-type]

    async def _callback(self, req: CallbackRequest, s: FakeScript, stop: asyncio.Event) -> None:
        sid = req.session_id
        a_start = self._leg(sid, Leg.A, LegEventKind.CALLOUT)
        stopped = await self._wait(stop, s.ring_s)
        a_alert = self._leg(sid, Leg.A, LegEventKind.ALERTING)
        if not s.a_answers or stopped:
            code = 8017 if stopped else 8107
            t = self._leg(sid, Leg.A, LegEventKind.DISCONNECT, state_code=code, q850=19)
            self._end(sid, s, a=LegTimes(a_start, a_alert, None, t, 19, 480),
                      state_code=code, ul_fail_reason=514, sip_status_code=480, fail_time=t)
            return
        a_ans = self._leg(sid, Leg.A, LegEventKind.ANSWER)
        b_start = self._leg(sid, Leg.B, LegEventKind.CALLOUT)
        stopped = await self._wait(stop, s.ring_s)
        b_alert = self._leg(sid, Leg.B, LegEventKind.ALERTING)
        if not s.b_answers or stopped:
            code = 8017 if stopped else 8101
            t = self._leg(sid, Leg.B, LegEventKind.DISCONNECT, state_code=code, q850=19)
            self._leg(sid, Leg.A, LegEventKind.DISCONNECT, state_code=code)
            self._end(sid, s, a=LegTimes(a_start, a_alert, a_ans, t),
                      b=LegTimes(b_start, b_alert, None, t, 19, 480), state_code=code,
                      ul_fail_reason=514, sip_status_code=480, fail_time=t)
            return
        b_ans = self._leg(sid, Leg.B, LegEventKind.ANSWER)
        rec_start = time.time()
        stopped = await self._wait(stop, s.talk_s)
        code = 8017 if stopped else 0
        party = PartyType.CALLER
        t = self._leg(sid, Leg.A, LegEventKind.DISCONNECT, state_code=code, party_type=party)
        self._leg(sid, Leg.B, LegEventKind.DISCONNECT, state_code=code, party_type=party)
        duration = s.record_duration_s if s.record_duration_s is not None else t - b_ans
        if req.record and req.record_path:
            frames = max(160, int(min(duration, 5.0) * 8000))
            soundfile.write(req.record_path, np.zeros(frames, dtype=np.int16), 8000,
                            format="WAV", subtype="ALAW")
        self._end(sid, s, a=LegTimes(a_start, a_alert, a_ans, t),
                  b=LegTimes(b_start, b_alert, b_ans, t), state_code=code, party_type=party,
                  record_start=rec_start if req.record else None,
                  recording_path=req.record_path if req.record else None,
                  recording_duration_s=duration if req.record else 0.0)

    async def _playback(self, req: NotificationRequest | VerificationRequest, s: FakeScript,
                        stop: asyncio.Event) -> None:
        sid = req.session_id
        a_start = self._leg(sid, Leg.A, LegEventKind.CALLOUT)
        stopped = await self._wait(stop, s.ring_s)
        a_alert = self._leg(sid, Leg.A, LegEventKind.ALERTING)
        if not s.a_answers or stopped:
            code = 8017 if stopped else 8101
            t = self._leg(sid, Leg.A, LegEventKind.DISCONNECT, state_code=code, q850=19)
            self._end(sid, s, a=LegTimes(a_start, a_alert, None, t, 19, 480), state_code=code,
                      ul_fail_reason=514, sip_status_code=480, fail_time=t)
            return
        a_ans = self._leg(sid, Leg.A, LegEventKind.ANSWER)
        stopped = await self._wait(stop, s.talk_s)
        tts = 0
        if isinstance(req, NotificationRequest):
            for item in req.items:
                tts += 1 if item.tts_text else 0
                if item.collect_digits and not stopped:
                    self.bus.emit(CollectInfo(sid, s.digits[: item.collect_digits], time.time()))
        else:
            tts = max(1, req.times)
        code = 8017 if stopped else 0
        t = self._leg(sid, Leg.A, LegEventKind.DISCONNECT, state_code=code)
        self._end(sid, s, a=LegTimes(a_start, a_alert, a_ans, t), state_code=code,
                  tts_play_times=tts, tts_trans_duration_s=0.2 * tts)
