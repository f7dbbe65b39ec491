"""Voice callback (SVC-CB): call A showing displayNbr; on answer optionally play preVoice;
call B showing displayCalleeNbr while waitVoice loops to A; relay B's early media per
``calleeMedia``; on B's answer play the record hint to both (REC-1, PR-HINT), bridge and
record; enforce maxDuration with the last-minute prompt (DUR-1, PR-LAST).

Every path ends with one disconnect per dialled leg and exactly one ``CallEnded``."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import Any

import structlog

from media.bridge import Bridge
from media.errors import PlayFileError
from media.recorder import Recorder
from switch.events import (
    CallbackRequest,
    CalleeMedia,
    CallEnded,
    LastMinTarget,
    LegEventKind,
    PartyType,
)
from switch.events import Leg as LegName
from switch.leg import LegEarlyMedia, LegEnded, LegEvent, LegRinging
from switch.services import causes
from switch.services.media_leg import MediaLeg
from switch.services.runtime import Runtime

log = structlog.get_logger("voicecall.callback")

SERVICE = "callback"


class CallbackCall:
    def __init__(self, rt: Runtime, req: CallbackRequest) -> None:
        self.rt = rt
        self.req = req
        self.sid = req.session_id
        self.a: MediaLeg | None = None
        self.b: MediaLeg | None = None
        self.bridge: Bridge | None = None
        self.recorder: Recorder | None = None
        self.record_start: float | None = None
        self.stop_requested = False
        self.state: tuple[int, str] = causes.NORMAL
        self.party: PartyType | None = None
        self.ul_fail_reason = 0
        self.a_failure: causes.LegFailure | None = None
        self.b_failure: causes.LegFailure | None = None
        self.fail_time: float | None = None
        self.log = log.bind(session_id=self.sid)
        self._stop = asyncio.Event()

    # ------------------------------------------------------------------ helpers
    def _prompt(self, path: str | None, default: str) -> Path:
        return Path(path) if path else self.rt.media.default_prompt(default)

    def _event(self, label: LegName, kind: LegEventKind, **kw: Any) -> None:
        if label is LegName.A:
            caller, called = self.req.display_nbr, self.req.caller_nbr
        else:
            caller, called = self.req.display_callee_nbr, self.req.callee_nbr
        self.rt.leg_event(self.sid, label, kind, caller=caller, called=called,
                          service=SERVICE, leg=label.value.lower(), **kw)

    async def _play(self, ml: MediaLeg, files: list[Path], *, loop: bool = False) -> bool:
        """Play to one leg until done; False when the leg ended (or stop) first."""
        try:
            pb = ml.endpoint.play(files, loop=loop)
        except PlayFileError as e:
            self.log.warning("prompt unplayable", error=str(e))
            return True
        waiters: list[asyncio.Future[Any]] = [asyncio.ensure_future(pb.done), ml.finished,
                                              asyncio.ensure_future(self._stop.wait())]
        done, pending = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        for p in pending:
            if p is not ml.finished:
                p.cancel()
        return waiters[0] in done and not ml.terminated and not self._stop.is_set()

    def stop(self) -> None:
        """callStop: release both parties (8017)."""
        self.stop_requested = True
        self._stop.set()

    # --------------------------------------------------------------------- flow
    async def run(self) -> None:
        # Every line this task logs (here, in the legs, the UA, the stack) names the session.
        with structlog.contextvars.bound_contextvars(session_id=self.sid):
            self.rt.metrics.call_started(SERVICE)
            try:
                await self._run()
            except asyncio.CancelledError:
                self.state = causes.INTERNAL
                raise
            except Exception:
                self.log.exception("callback failed")
                self.state = causes.INTERNAL
            finally:
                try:
                    await self._teardown()
                finally:
                    self.rt.metrics.call_ended(SERVICE)

    async def _run(self) -> None:
        rt, req = self.rt, self.req
        self.a = await rt.originate(session_id=self.sid, label=LegName.A, number=req.caller_nbr,
                                    from_number=req.display_nbr, service=SERVICE)
        self._event(LegName.A, LegEventKind.CALLOUT)
        fail = await self._until_answer(self.a, LegName.A, caller_side=True, abort=self._stop)
        if fail is not None:
            self.a_failure = fail
            self.state = (fail.state_code, fail.state_desc)
            self.fail_time = time.time()
            return
        if self._stop.is_set():
            return
        pre_voice = [self._prompt(req.pre_voice, "preVoice")] if req.play_pre_voice else []
        if pre_voice and not await self._play(self.a, pre_voice):
            return self._a_left_early()
        self.b = await rt.originate(session_id=self.sid, label=LegName.B, number=req.callee_nbr,
                                    from_number=req.display_callee_nbr, service=SERVICE)
        self._event(LegName.B, LegEventKind.CALLOUT)
        self._start_wait_voice()
        b_answer = asyncio.ensure_future(
            self._until_answer(self.b, LegName.B, caller_side=False))
        waiters: list[asyncio.Future[Any]] = [b_answer, self.a.finished,
                                              asyncio.ensure_future(self._stop.wait())]
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        if not b_answer.done():
            # A hung up (or callStop) while B was being called.
            if self.a.terminated:
                self.state = causes.CALLER_HUNG_UP_EARLY
                self.party = PartyType.CALLER
            self.b.hangup()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(b_answer, 10)
            return
        fail = b_answer.result()
        if fail is not None:
            self.b_failure = fail
            self.state = (fail.state_code, fail.state_desc)
            self.fail_time = time.time()
            return
        await self._connected()

    def _a_left_early(self) -> None:
        if self.stop_requested:
            self.state = causes.USER_REQUESTED   # callStop during preVoice
            return
        self.state = causes.CALLER_HUNG_UP_EARLY
        self.party = PartyType.CALLER

    async def _until_answer(self, ml: MediaLeg, label: LegName, *, caller_side: bool,
                            abort: asyncio.Event | None = None) -> causes.LegFailure | None:
        caller, called = ((self.req.display_nbr, self.req.caller_nbr) if label is LegName.A
                          else (self.req.display_callee_nbr, self.req.callee_nbr))
        return await self.rt.ring_or_fail(ml, session_id=self.sid, label=label, caller=caller,
                                          called=called, caller_side=caller_side,
                                          abort=abort)

    def _start_wait_voice(self) -> None:
        """PR-WAIT: loop waitVoice to A until B's early media really flows (``all``), or
        until B answers (``none``/``fail``). Without a waitVoice, A hears the default
        ringback-like tone until B's own media arrives."""
        assert self.a is not None and self.b is not None
        a, b = self.a, self.b
        files = [self._prompt(self.req.wait_voice, "waitVoice")]
        with contextlib.suppress(PlayFileError):
            a.endpoint.play(files, loop=True)
        mode = self.req.callee_media
        if mode is CalleeMedia.NONE:
            return
        failure_announcement = False

        def on_b(_leg: object, ev: LegEvent) -> None:
            nonlocal failure_announcement
            if isinstance(ev, LegRinging | LegEarlyMedia) and mode is CalleeMedia.FAIL:
                failure_announcement = failure_announcement or _is_failure_announcement(ev)

        def on_media() -> None:
            # Early media decided from RTP actually arriving, not from the 18x code.
            if b.is_answered or a.terminated or b.terminated:
                return
            if mode is CalleeMedia.FAIL and not failure_announcement:
                return
            a.endpoint.stop_playback()
            self.bridge = self.rt.media.bridge(a.endpoint, b.endpoint, early_media=True)
            self.log.info("relaying callee early media", callee_media=mode.value)

        b.leg.on_event(on_b)
        b.endpoint.events.once("media_started", on_media)

    async def _connected(self) -> None:
        assert self.a is not None and self.b is not None
        a, b, req = self.a, self.b, self.req
        a.endpoint.stop_playback()
        if self.bridge is not None:
            self.bridge.stop()
            self.bridge = None
        talk_start = time.time()
        if req.record:
            hint = [self._prompt(req.record_hint_tone, "recordHintTone")]
            # PR-HINT: both parties hear it (or neither: an empty file silences it).
            both = await asyncio.gather(self._play(a, hint), self._play(b, hint))
            if not all(both):
                return self._who_left()
        self.bridge = self.rt.media.bridge(a.endpoint, b.endpoint)
        if req.record and req.record_path:
            self.record_start = time.time()
            self.recorder = self.rt.media.record(a.endpoint, b.endpoint, Path(req.record_path))
        tasks: list[asyncio.Future[Any]] = [a.finished, b.finished,
                                            asyncio.ensure_future(self._stop.wait())]
        limiter: asyncio.Task[None] | None = None
        if req.max_duration_min > 0:
            limiter = asyncio.ensure_future(self._max_duration(talk_start))
            tasks.append(limiter)
        # A party whose RTP stopped ([media] rtp_timeout_s) is gone (8020, both released).
        a_lost, b_lost = a.media_lost(), b.media_lost()
        tasks += [a_lost, b_lost]
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        lost = "A" if a_lost.done() else "B" if b_lost.done() else None
        for t in tasks[2:]:
            if not t.done():
                t.cancel()
        if limiter is not None and limiter.done() and not limiter.cancelled() \
                and not a.terminated and not b.terminated:
            self.state = causes.MAX_DURATION
        elif lost is not None and not a.terminated and not b.terminated \
                and not self._stop.is_set():
            self.state = causes.MEDIA_TIMEOUT
            self.log.warning("media timeout ends the call", leg=lost)
        else:
            self._who_left()

    async def _max_duration(self, talk_start: float) -> None:
        """DUR-1: end the call when talk time (from B's answer) reaches maxDuration;
        PR-LAST: one minute before, play lastMinVoice to toa/tob/both."""
        assert self.a is not None and self.b is not None
        req = self.req
        limit = req.max_duration_min * 60.0
        warn_at = limit - self.rt.timers.last_minute_s
        now = time.time() - talk_start
        if warn_at >= 0:
            # maxDuration = 1: the last minute starts at the answer itself.
            await asyncio.sleep(max(0.0, warn_at - now))
            files = [self._prompt(req.last_min_voice, "lastMinVoice")]
            targets = {LastMinTarget.TOA: [self.a], LastMinTarget.TOB: [self.b],
                       LastMinTarget.BOTH: [self.a, self.b]}[req.last_min_to]
            for ml in targets:
                with contextlib.suppress(PlayFileError):
                    ml.endpoint.play(files)
        await asyncio.sleep(max(0.0, limit - (time.time() - talk_start)))

    def _who_left(self) -> None:
        assert self.a is not None and self.b is not None
        if self._stop.is_set() and self.stop_requested:
            self.state = causes.USER_REQUESTED
            return
        a_remote = isinstance(self.a.finished.result(), LegEnded) if self.a.terminated else False
        b_remote = isinstance(self.b.finished.result(), LegEnded) if self.b.terminated else False
        if a_remote and (not b_remote or (self.a.end or 0) <= (self.b.end or 0)):
            self.party = PartyType.CALLER
        elif b_remote:
            self.party = PartyType.CALLEE
        self.state = causes.NORMAL

    # ----------------------------------------------------------------- teardown
    async def _teardown(self) -> None:
        if self.stop_requested and self.state == causes.NORMAL:
            self.state = causes.USER_REQUESTED
        if self.bridge is not None:
            self.bridge.stop()
        recording = None
        if self.recorder is not None:
            with contextlib.suppress(Exception):
                recording = await self.recorder.stop()
        for ml, label in ((self.a, LegName.A), (self.b, LegName.B)):
            if ml is None:
                continue
            if not ml.terminated:
                ml.hangup()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(asyncio.shield(ml.finished), ml.hangup_grace_s)
            failure = self.a_failure if label is LegName.A else self.b_failure
            if failure is not None:
                self._event(label, LegEventKind.DISCONNECT,
                            state=(failure.state_code, failure.state_desc),
                            sip_code=failure.sip_code, q850=failure.q850)
            else:
                self._event(label, LegEventKind.DISCONNECT, state=self.state, party=self.party)
            with contextlib.suppress(Exception):
                await ml.close()
        assert self.a is not None or self.state == causes.INTERNAL
        a_fail, b_fail = self.a_failure, self.b_failure
        first_fail = a_fail or b_fail
        self.rt.end(CallEnded(
            session_id=self.sid, end_time=time.time(),
            a=self.a.times(q850=a_fail.q850 if a_fail else 0,
                           sip_code=a_fail.sip_code if a_fail else 0) if self.a else
            _empty_times(),
            b=self.b.times(q850=b_fail.q850 if b_fail else 0,
                           sip_code=b_fail.sip_code if b_fail else 0) if self.b else None,
            state_code=self.state[0], state_desc=self.state[1],
            ul_fail_reason=self.ul_fail_reason or (first_fail.sip_code if first_fail else 0),
            sip_status_code=first_fail.sip_code if first_fail else 0,
            party_type=self.party, fail_time=self.fail_time,
            record_start=self.record_start,
            recording_path=str(recording.path) if recording and recording.path else None,
            recording_duration_s=recording.duration_s if recording else 0.0,
        ))


def _is_failure_announcement(ev: LegEvent) -> bool:
    """``calleeMedia=fail``: a provisional that says the call will fail (a Reason header
    with a Q.850 cause, or 183 with a failure cause) carries an announcement worth
    relaying; ordinary ringback is not."""
    reason = getattr(ev, "reason", "") or ""
    return "cause=" in reason.lower()


def _empty_times() -> Any:
    from switch.events import LegTimes
    return LegTimes()
