"""One table from a SIP final status to what the control API reports: the Q.850 cause
(RFC 3398 §8.2.6.1, used in ``callOutUnaswRsn``/``fwdUnaswRsn``) and the ``stateCode`` of the
disconnect push (control-api §5.4), for the callee side (B of a callback, the only leg of a
notification/verification: 8100–8105) and the caller side (A of a callback: 8106–8111)."""

from __future__ import annotations

import enum
from dataclasses import dataclass

# RFC 3398 §8.2.6.1: SIP response → ISUP cause value.
Q850_BY_SIP: dict[int, int] = {
    400: 41, 401: 21, 402: 21, 403: 21, 404: 1, 405: 63, 406: 79, 407: 21, 408: 102,
    410: 22, 413: 127, 414: 127, 415: 79, 416: 127, 420: 127, 421: 127, 423: 127,
    480: 18, 481: 41, 482: 25, 483: 25, 484: 28, 485: 1, 486: 17, 487: 127, 488: 127,
    500: 41, 501: 79, 502: 38, 503: 41, 504: 102, 505: 127, 513: 127,
    600: 17, 603: 21, 604: 1, 606: 58,
}


def q850_for(status: int) -> int:
    """Q.850 cause for a SIP final failure; the class default of RFC 3398 otherwise
    (4xx/5xx/6xx without an entry: 127 interworking, unspecified)."""
    if status < 300:
        return 0
    return Q850_BY_SIP.get(status, 127)


class Failure(enum.Enum):
    """Why a leg never got answered, in the terms the stateCodes distinguish."""

    NOT_EXIST = "not-exist"        # 404/484/485/604
    NO_ANSWER = "no-answer"        # rang out (our CANCEL on timeout), 408 after ringing
    BUSY = "busy"                  # 486/600
    UNREACHABLE = "unreachable"    # 480, 5xx, gateway down, timeout before ringing
    POWERED_OFF = "powered-off"    # 410 Gone (subscriber absent)
    REJECTED = "rejected"          # 603/403/4xx: hung up or suspended


_CALLEE_CODE = {
    Failure.NOT_EXIST: (8100, "Callee number does not exist"),
    Failure.NO_ANSWER: (8101, "Callee no answer"),
    Failure.BUSY: (8102, "Callee busy"),
    Failure.UNREACHABLE: (8103, "Callee temporarily unreachable"),
    Failure.POWERED_OFF: (8104, "Callee powered off"),
    Failure.REJECTED: (8105, "Callee hung up or suspended"),
}
_CALLER_CODE = {
    Failure.NOT_EXIST: (8106, "Caller number does not exist"),
    Failure.NO_ANSWER: (8107, "Caller no answer"),
    Failure.BUSY: (8108, "Caller busy"),
    Failure.UNREACHABLE: (8109, "Caller temporarily unreachable"),
    Failure.POWERED_OFF: (8110, "Caller powered off"),
    Failure.REJECTED: (8111, "Caller hung up or suspended"),
}


def classify(status: int, *, rang: bool, timed_out: bool = False) -> Failure:
    """``timed_out``: we cancelled after the no-answer timeout; ``rang``: a 18x arrived."""
    if timed_out:
        return Failure.NO_ANSWER
    if status in (404, 484, 485, 604):
        return Failure.NOT_EXIST
    if status in (486, 600):
        return Failure.BUSY
    if status == 410:
        return Failure.POWERED_OFF
    if status in (408, 487):
        return Failure.NO_ANSWER if rang else Failure.UNREACHABLE
    if status == 480 or 500 <= status < 600:
        return Failure.UNREACHABLE
    return Failure.REJECTED


@dataclass(frozen=True, slots=True)
class LegFailure:
    state_code: int
    state_desc: str
    q850: int
    sip_code: int


def leg_failure(status: int, *, caller_side: bool, rang: bool,
                timed_out: bool = False) -> LegFailure:
    kind = classify(status, rang=rang, timed_out=timed_out)
    code, desc = (_CALLER_CODE if caller_side else _CALLEE_CODE)[kind]
    q850 = 19 if kind is Failure.NO_ANSWER else q850_for(status)   # 19: no answer (alerted)
    return LegFailure(code, desc, q850, status)


# stateCodes that do not come from a SIP status (control-api §5.4).
NORMAL = (0, "Normal hang-up after the call was connected")
CALLER_HUNG_UP_EARLY = (8009, "Calling user hung up before connection")
HUNG_UP_WHILE_RINGING = (8004, "Hung up while ringing")
MAX_DURATION = (8010, "Maximum call duration reached")
USER_REQUESTED = (8017, "User-requested hang-up")
COLLECT_FAILED = (8008, "Play-and-collect failed")
PLAY_FAILED = (8007, "Playing to user failed")
FILE_MISSING = (8006, "Play file does not exist")
TTS_FAILED = (8005, "TTS conversion failed")
INTERNAL = (8000, "Internal error")
NO_PORTS = (7109, "Not enough voice ports")
MEDIA_TIMEOUT = (8020, "Service exception (media timeout)")
