"""Voice notification (SVC-NT) and voice verification code (SVC-VC): one outbound leg that
hears prompts (files or TTS) and, for notifications, keys DTMF (DTMF-1..4)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import Any

import structlog

from media.errors import PlayFileError, TemplateError, TtsError
from switch.events import (
    CallEnded,
    CollectInfo,
    LegEventKind,
    NotificationRequest,
    PartyType,
    PlayItem,
    VerificationRequest,
)
from switch.events import Leg as LegName
from switch.leg import LegEnded
from switch.services import causes
from switch.services.media_leg import MediaLeg
from switch.services.runtime import NoMediaPorts, Runtime

log = structlog.get_logger("voicecall.playback")

# A verification code with times = 0 repeats "until hang-up"; this bounds it anyway.
MAX_UNBOUNDED_PLAY_S = 1800.0


class _Ended(Exception):
    """The callee hung up, or callStop: stop the scenario."""


class PlaybackCall:
    """Common flow: dial, wait for answer, ``body()``, hang up, report."""

    service = "notify"   # the metrics' service label

    def __init__(self, rt: Runtime, session_id: str, display_nbr: str, callee_nbr: str) -> None:
        self.rt = rt
        self.sid = session_id
        self.display_nbr = display_nbr
        self.callee_nbr = callee_nbr
        self.leg: MediaLeg | None = None
        self.failure: causes.LegFailure | None = None
        self.state: tuple[int, str] = causes.NORMAL
        self.party: PartyType | None = None
        self.fail_time: float | None = None
        self.ul_fail_reason = 0
        self.tts_play_times = 0
        self.tts_seconds = 0.0
        self.stop_requested = False
        self._stop = asyncio.Event()
        self.log = log.bind(session_id=session_id)

    def stop(self) -> None:
        self.stop_requested = True
        self._stop.set()

    def _event(self, kind: LegEventKind, **kw: Any) -> None:
        self.rt.leg_event(self.sid, LegName.A, kind, caller=self.display_nbr,
                          called=self.callee_nbr, service=self.service, leg="callee", **kw)

    async def run(self) -> None:
        # Every line this task logs (here, in the leg, the UA, the stack) names the session.
        with structlog.contextvars.bound_contextvars(session_id=self.sid):
            self.rt.metrics.call_started(self.service)
            try:
                await self._run()
            except _Ended:
                pass
            except NoMediaPorts:
                self.state = causes.NO_PORTS
            except asyncio.CancelledError:
                self.state = causes.INTERNAL
                raise
            except Exception:
                self.log.exception("playback call failed")
                self.state = causes.INTERNAL
            finally:
                try:
                    await self._teardown()
                finally:
                    self.rt.metrics.call_ended(self.service)

    async def _run(self) -> None:
        self.leg = await self.rt.originate(session_id=self.sid, label=LegName.A,
                                           number=self.callee_nbr, from_number=self.display_nbr,
                                           service=self.service)
        self._event(LegEventKind.CALLOUT)
        fail = await self.rt.ring_or_fail(self.leg, session_id=self.sid, label=LegName.A,
                                          caller=self.display_nbr, called=self.callee_nbr,
                                          caller_side=False, abort=self._stop)
        if fail is not None:
            self.failure = fail
            self.state = (fail.state_code, fail.state_desc)
            self.fail_time = time.time()
            return
        await self.body(self.leg)

    async def body(self, ml: MediaLeg) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    # -------------------------------------------------------------- primitives
    async def _await(self, fut: Any) -> Any:
        """Await ``fut`` unless the leg ends or callStop comes first (→ _Ended)."""
        assert self.leg is not None
        task = asyncio.ensure_future(fut)
        stop = asyncio.ensure_future(self._stop.wait())
        lost = self.leg.media_lost()
        waiters: list[asyncio.Future[Any]] = [task, self.leg.finished, stop, lost]
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        if task.done():
            lost.cancel()
            return task.result()
        task.cancel()
        if self.leg.terminated:
            self.party = PartyType.CALLEE
        elif lost.done() and not self._stop.is_set():
            # No RTP from the callee for [media] rtp_timeout_s: the line is dead (8020).
            self.state = causes.MEDIA_TIMEOUT
        raise _Ended

    async def play(self, files: list[Path]) -> None:
        assert self.leg is not None
        try:
            pb = self.leg.endpoint.play(files)
        except PlayFileError as e:
            self.log.warning("play file unusable", error=str(e))
            self.state = causes.FILE_MISSING
            raise _Ended from e
        await self._await(pb.done)

    async def tts(self, text: str, language: int) -> Path:
        started = time.monotonic()
        try:
            path = await self._await(self.rt.media.tts(text, None, language))
        except (TtsError, TemplateError) as e:
            self.log.warning("tts failed", error=str(e))
            self.state = causes.TTS_FAILED
            raise _Ended from e
        self.tts_seconds += time.monotonic() - started
        self.tts_play_times += 1
        return Path(path)

    # ---------------------------------------------------------------- teardown
    async def _teardown(self) -> None:
        ml = self.leg
        if self.stop_requested and self.state == causes.NORMAL:
            self.state = causes.USER_REQUESTED
        if ml is not None:
            if not ml.terminated:
                ml.hangup()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(asyncio.shield(ml.finished), ml.hangup_grace_s)
            else:
                end = ml.finished.result()
                if self.party is None and isinstance(end, LegEnded) and end.by_remote:
                    self.party = PartyType.CALLEE
            f = self.failure
            if f is not None:
                self._event(LegEventKind.DISCONNECT, state=(f.state_code, f.state_desc),
                            sip_code=f.sip_code, q850=f.q850)
            else:
                self._event(LegEventKind.DISCONNECT, state=self.state, party=self.party)
            with contextlib.suppress(Exception):
                await ml.close()
        f = self.failure
        self.rt.end(CallEnded(
            session_id=self.sid, end_time=time.time(),
            a=ml.times(q850=f.q850 if f else 0, sip_code=f.sip_code if f else 0)
            if ml is not None else _no_times(),
            state_code=self.state[0], state_desc=self.state[1],
            ul_fail_reason=self.ul_fail_reason or (f.sip_code if f else 0),
            sip_status_code=f.sip_code if f else 0, party_type=self.party,
            fail_time=self.fail_time, tts_play_times=self.tts_play_times,
            tts_trans_duration_s=self.tts_seconds))


def _no_times() -> Any:
    from switch.events import LegTimes
    return LegTimes()


class NotificationCall(PlaybackCall):
    def __init__(self, rt: Runtime, req: NotificationRequest) -> None:
        super().__init__(rt, req.session_id, req.display_nbr, req.callee_nbr)
        self.req = req

    async def _audio(self, item: PlayItem) -> Path:
        if item.file_path:
            return Path(item.file_path)
        return await self.tts(item.tts_text or "", 2)

    async def body(self, ml: MediaLeg) -> None:
        """Items in order. An item with ``collect_digits`` waits for DTMF after it plays
        (5 s to start keying, DTMF-1); the digits are reported (DTMF-3); nothing keyed →
        stateCode 8008 and hang-up (teardown point 100). With replayAfterCollection the
        item plays again when the digits equal the trigger and any other digits end the
        call (DTMF-2); without it the next item follows. Hang-up after the last (DTMF-4)."""
        timers = self.rt.timers
        for item in self.req.items:
            while True:
                await self.play([await self._audio(item)])
                if item.collect_digits <= 0:
                    break
                digits = await self._await(ml.endpoint.collect_digits(
                    item.collect_digits, first_digit_timeout=timers.collect_first_digit_s,
                    inter_digit_timeout=timers.collect_inter_digit_s))
                self.rt.bus.emit(CollectInfo(self.sid, digits, time.time()))
                if not digits:
                    self.state = causes.COLLECT_FAILED
                    self.ul_fail_reason = 100
                    return
                if item.replay_after_collection:
                    if digits == (item.replay_trigger or ""):
                        continue
                    return
                break


class VerificationCall(PlaybackCall):
    service = "verify"

    def __init__(self, rt: Runtime, req: VerificationRequest) -> None:
        super().__init__(rt, req.session_id, req.display_nbr, req.callee_nbr)
        self.req = req

    async def body(self, ml: MediaLeg) -> None:
        """preTone, the code read digit by digit (TPL-4, languageType 2 Mandarin / 1
        English), posTone; all of it ``times`` times (0 = until hang-up, bounded)."""
        req = self.req
        code = await self.tts(req.verify_code, req.language)  # digits read one by one
        files = [Path(req.pre_tone), code] + ([Path(req.pos_tone)] if req.pos_tone else [])
        started = time.monotonic()
        n = 0
        while req.times == 0 or n < req.times:
            await self.play(files)
            n += 1
            if req.times == 0 and time.monotonic() - started > MAX_UNBOUNDED_PLAY_S:
                break
