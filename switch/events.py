"""The contract between the control plane and the switch: call *requests* in, call *events* out.

The control API validates a request, resolves every name (play files, templates, numbers) into
what the switch needs (absolute file paths, rendered TTS text, E.164 numbers) and hands the
switch one of the ``*Request`` dataclasses below. The switch then reports what happens on the
wire through a :class:`CallEventBus` that it owns: :class:`LegEvent` for callout / alerting /
answer / disconnect of each leg, :class:`CollectInfo` for collected DTMF and exactly one
:class:`CallEnded` per session with everything a CDR (FeeInfo) needs.

This module lives in ``switch`` because events flow one way (switch → control_api) and the
switch must never import ``control_api``. It has no dependencies besides the standard library.

Times are float epoch seconds (``time.time()``), millisecond resolution is enough.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

_log = logging.getLogger("voicecall.switch.events")


# ---------------------------------------------------------------------------------------------
# Requests (control_api → switch)
# ---------------------------------------------------------------------------------------------


class ServiceType(enum.StrEnum):
    """``serviceType`` of the CDR: ``002`` callback, ``001`` notification/verification."""

    CALLBACK = "002"
    PLAYBACK = "001"


class LastMinTarget(enum.StrEnum):
    """``lastMinToUE``: who hears the last-minute prompt."""

    TOA = "toa"
    TOB = "tob"
    BOTH = "both"


class CalleeMedia(enum.StrEnum):
    """``calleeMedia``: which early media of B replaces ``waitVoice``."""

    ALL = "all"
    NONE = "none"
    FAIL = "fail"


@dataclass(frozen=True, slots=True)
class CallbackRequest:
    """Voice callback (SVC-CB): call A showing ``display_nbr``, then B showing
    ``display_callee_nbr``, bridge. Prompt paths are absolute approved A-law WAV files;
    ``None`` means "system default prompt" (PR-DEFAULT) — for ``wait_voice`` it means
    ringback/silence (PR-WAIT)."""

    session_id: str
    app_key: str
    display_nbr: str
    caller_nbr: str
    display_callee_nbr: str
    callee_nbr: str
    max_duration_min: int = 0                  # DUR-1: 0 = unlimited, counted from B answer
    last_min_voice: str | None = None          # PR-LAST, only meaningful if max_duration_min
    last_min_to: LastMinTarget = LastMinTarget.BOTH
    play_pre_voice: bool = False               # PR-PRE
    pre_voice: str | None = None
    wait_voice: str | None = None
    callee_media: CalleeMedia = CalleeMedia.ALL
    record: bool = False                       # REC-1 (already checked against the app)
    record_hint_tone: str | None = None        # PR-HINT, both parties
    record_path: str | None = None             # where the recorder writes (A-law WAV) if record


@dataclass(frozen=True, slots=True)
class PlayItem:
    """One ``playInfoList`` entry, resolved: either an audio file or a rendered TTS text."""

    file_path: str | None = None               # approved WAV (notifyVoice)
    tts_text: str | None = None                # template rendered with templateParas (TPL-2)
    template_id: str | None = None
    collect_digits: int = 0                    # DTMF-1: 0 = none, 1..32
    replay_after_collection: bool = False      # DTMF-2
    replay_trigger: str | None = None          # replay only if the digits equal this


@dataclass(frozen=True, slots=True)
class NotificationRequest:
    """Voice notification (SVC-NT): call ``callee_nbr`` showing ``display_nbr``, play items."""

    session_id: str
    app_key: str
    display_nbr: str
    callee_nbr: str
    items: tuple[PlayItem, ...]


@dataclass(frozen=True, slots=True)
class VerificationRequest:
    """Voice verification code (SVC-VC). ``language`` is ``languageType``: 2 Mandarin, 1 English.
    ``times`` 0 = repeat until hang-up."""

    session_id: str
    app_key: str
    display_nbr: str
    callee_nbr: str
    language: int
    pre_tone: str                              # approved WAV path
    verify_code: str                           # 1..8 digits
    pos_tone: str | None = None
    times: int = 3


# ---------------------------------------------------------------------------------------------
# Events (switch → control_api)
# ---------------------------------------------------------------------------------------------


class Leg(enum.StrEnum):
    """``A`` = first leg (callback caller; the only leg of notification/verification),
    ``B`` = forwarded leg of a callback."""

    A = "A"
    B = "B"


class LegEventKind(enum.StrEnum):
    CALLOUT = "callout"
    ALERTING = "alerting"
    ANSWER = "answer"
    DISCONNECT = "disconnect"


class PartyType(enum.StrEnum):
    """Who hung up first (``partyType`` of the disconnect push): "0" caller/A, "1" callee/B."""

    CALLER = "0"
    CALLEE = "1"


@dataclass(frozen=True, slots=True)
class LegEvent:
    """One status step of one leg. ``caller``/``called`` are the numbers of that leg as signalled
    (A leg: displayNbr → callerNbr; B leg: displayCalleeNbr → calleeNbr); empty strings let the
    control plane fill them from the request. ``state_code`` (§5.4) is set on disconnect."""

    session_id: str
    leg: Leg
    kind: LegEventKind
    timestamp: float
    caller: str = ""
    called: str = ""
    state_code: int | None = None
    state_desc: str = ""
    sip_code: int = 0                          # final SIP status of a failed leg, 0 if none
    q850: int = 0                              # Q.850 cause of a failed leg, 0 if none
    party_type: PartyType | None = None        # disconnect: who hung up first


@dataclass(frozen=True, slots=True)
class CollectInfo:
    """DTMF collected after a notification item (DTMF-3); ``digits`` may be empty."""

    session_id: str
    digits: str
    timestamp: float


@dataclass(frozen=True, slots=True)
class LegTimes:
    """Per-leg timestamps for the CDR; ``None`` when the step never happened."""

    start: float | None = None                 # INVITE sent (callOutStartTime / fwdStartTime)
    alerting: float | None = None              # 180/183 (callOutAlertingTime / fwdAlertingTime)
    answer: float | None = None                # 200 OK (callOutAnswerTime / fwdAnswerTime)
    end: float | None = None                   # BYE/CANCEL/final failure of this leg
    unanswered_q850: int = 0                   # callOutUnaswRsn / fwdUnaswRsn
    sip_code: int = 0                          # final failure status of this leg, 0 if none


@dataclass(frozen=True, slots=True)
class CallEnded:
    """Exactly one per session, after the last :class:`LegEvent`. ``end_time`` is
    ``callEndTime``. ``state_code`` is the call's overall hang-up reason (§5.4) and
    ``ul_fail_reason`` the teardown point (§6.4)."""

    session_id: str
    end_time: float
    a: LegTimes
    b: LegTimes | None = None                  # callback only (None if B never dialled)
    state_code: int = 0
    state_desc: str = ""
    ul_fail_reason: int = 0
    sip_status_code: int = 0
    party_type: PartyType | None = None
    fail_time: float | None = None
    record_start: float | None = None
    recording_path: str | None = None          # the request's record_path once written
    recording_duration_s: float = 0.0
    tts_play_times: int = 0
    tts_trans_duration_s: float = 0.0
    dyn_ivr_start: float | None = None
    dyn_ivr_path: str = ""
    extra: tuple[tuple[str, str], ...] = field(default_factory=tuple)  # diagnostics only


CallEvent = LegEvent | CollectInfo | CallEnded
CallEventHandler = Callable[[CallEvent], None]


class CallEventBus:
    """A small typed emitter. Handlers are plain synchronous callables that must not block
    (the control plane only enqueues); an exception in one handler is logged and does not stop
    the others or the call. Emission order is delivery order."""

    __slots__ = ("_handlers",)

    def __init__(self) -> None:
        self._handlers: list[CallEventHandler] = []

    def subscribe(self, handler: CallEventHandler) -> Callable[[], None]:
        self._handlers.append(handler)

        def unsubscribe() -> None:
            if handler in self._handlers:
                self._handlers.remove(handler)

        return unsubscribe

    def emit(self, event: CallEvent) -> None:
        for handler in tuple(self._handlers):
            try:
                handler(event)
            except Exception:  # a broken subscriber must not break the call
                _log.exception("call event handler failed for %s", type(event).__name__)
