"""A call leg whose media is anchored on this node: the SIP ``Leg`` plus its RTP
``MediaEndpoint``. SDP offers and answers come from the media engine; early media is
applied as soon as SDP arrives; mid-call offers (hold/resume, refresh) are answered
locally; SIP INFO digits are fed to the endpoint like RFC 4733 ones.

Also keeps the per-leg timestamps a CDR needs (``LegTimes``)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import structlog

from media.endpoint import MediaEndpoint
from media.errors import SdpError
from switch.events import LegTimes
from switch.leg import (
    Leg,
    LegAnswered,
    LegEarlyMedia,
    LegEnded,
    LegEvent,
    LegFailed,
    LegInfo,
    LegOffer,
    LegRinging,
)

log = structlog.get_logger("voicecall.media_leg")


def parse_info_digit(content_type: str, body: bytes) -> tuple[str, int] | None:
    """The digit of a SIP INFO: ``application/dtmf-relay`` (``Signal=5`` / ``Duration=160``)
    or ``application/dtmf`` (the digit alone). None for anything else."""
    ctype = content_type.split(";", 1)[0].strip().lower()
    text = body.decode("ascii", "replace")
    if ctype == "application/dtmf-relay":
        signal, duration = None, 100
        for line in text.splitlines():
            key, _, value = line.partition("=")
            key = key.strip().lower()
            if key == "signal":
                signal = value.strip()
            elif key == "duration" and value.strip().isdigit():
                duration = int(value.strip())
        if signal:
            return signal[:1], duration
        return None
    if ctype == "application/dtmf":
        digit = text.strip()[:1]
        return (digit, 100) if digit else None
    return None


@dataclass(eq=False)
class MediaLeg:
    leg: Leg
    endpoint: MediaEndpoint
    start: float = field(default_factory=time.time)
    alerting: float | None = None
    answer: float | None = None
    end: float | None = None
    rang: bool = False
    early_sdp_applied: bool = False
    session_id: str = ""           # for log lines (they come from SIP/RTP callbacks)
    answered: asyncio.Future[None] = field(init=False)
    finished: asyncio.Future[LegFailed | LegEnded] = field(init=False)
    _media_waiters: list[asyncio.Future[float]] = field(init=False)

    def __post_init__(self) -> None:
        loop = asyncio.get_running_loop()
        self.answered = loop.create_future()
        self.finished = loop.create_future()
        self._media_waiters = []
        self.endpoint.events.on("media_timeout", self._on_media_timeout)
        ids = {"session_id": self.session_id} if self.session_id else {}
        self.log = log.bind(call_id=self.leg.call_id, leg=self.leg.label, **ids)
        self.leg.on_event(self._on_event)

    # -------------------------------------------------------------------- events
    def _on_event(self, leg: Leg, ev: LegEvent) -> None:
        if isinstance(ev, LegRinging):
            self.rang = True
            if self.alerting is None:
                self.alerting = time.time()
            if ev.sdp:
                self._apply_early(ev.sdp)
        elif isinstance(ev, LegEarlyMedia):
            if self.alerting is None:
                self.alerting = time.time()
            self._apply_early(ev.sdp)
        elif isinstance(ev, LegAnswered):
            self.answer = time.time()
            if ev.sdp:
                try:
                    self.endpoint.apply_answer(ev.sdp)
                except SdpError as e:
                    # An answer we cannot use: hang up rather than bridge silence.
                    self.log.warning("unusable SDP answer, hanging up", error=str(e))
                    leg.hangup()
                    return
            if not self.answered.done():
                self.answered.set_result(None)
        elif isinstance(ev, LegOffer):
            try:
                leg.accept_offer(self.endpoint.answer_offer(ev.sdp).encode())
            except SdpError as e:
                self.log.info("refusing mid-call offer", error=str(e))
                leg.reject_offer(488)
        elif isinstance(ev, LegInfo):
            parsed = parse_info_digit(ev.content_type, ev.body)
            if parsed is not None:
                try:
                    self.endpoint.inject_dtmf(*parsed)
                except ValueError:
                    self.log.info("ignoring INFO with a non-DTMF signal")
        elif isinstance(ev, LegFailed | LegEnded):
            self.end = time.time()
            if not self.finished.done():
                self.finished.set_result(ev)
            if not self.answered.done():
                self.answered.cancel()

    def _apply_early(self, sdp: bytes) -> None:
        try:
            self.endpoint.apply_answer(sdp)
            self.early_sdp_applied = True
        except SdpError as e:
            self.log.info("unusable early-media SDP ignored", error=str(e))

    def media_lost(self) -> asyncio.Future[float]:
        """A future set by the next media_timeout (no RTP for ``[media] rtp_timeout_s``).
        Fresh per phase, so silence before the phase (e.g. a silent caller while B rang)
        does not end the call later."""
        fut: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self._media_waiters = [f for f in self._media_waiters if not f.done()] + [fut]
        return fut

    def _on_media_timeout(self, seconds: float) -> None:
        if self.terminated:
            return
        self.log.warning("leg media timeout", seconds=round(seconds, 1))
        for f in self._media_waiters:
            if not f.done():
                f.set_result(seconds)

    # ---------------------------------------------------------------- operations
    @property
    def is_answered(self) -> bool:
        return self.answer is not None

    @property
    def terminated(self) -> bool:
        return self.finished.done()

    def hangup(self) -> None:
        self.leg.hangup()

    @property
    def hangup_grace_s(self) -> float:
        """How long a teardown waits for the BYE/CANCEL to complete. A leg that never got
        any 18x/2xx usually has a dead peer: its INVITE ends by itself at Timer B, and the
        call's report need not wait for that."""
        return 5.0 if (self.rang or self.is_answered) else 1.0

    def times(self, *, q850: int = 0, sip_code: int = 0) -> LegTimes:
        return LegTimes(start=self.start, alerting=self.alerting, answer=self.answer,
                        end=self.end, unanswered_q850=q850, sip_code=sip_code)

    async def close(self) -> None:
        await self.endpoint.close()
