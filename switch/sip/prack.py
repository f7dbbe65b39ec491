"""Reliability of provisional responses (RFC 3262): RSeq / RAck values, the UAC's in-order
check (§4) and the UAS's one-at-a-time rule with its retransmission schedule (§3).

The INVITE session uses these; they hold no I/O and no clock of their own.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

OPTION_TAG = "100rel"
#: §3: RSeq is 1 .. 2**31 - 1 and the initial value SHOULD be random below 2**31.
RSEQ_MAX = 2**31 - 1


class PrackMode(enum.Enum):
    """What we do about 100rel on INVITEs we send and receive."""

    DISABLED = "disabled"      # never advertise, never send reliably
    SUPPORTED = "supported"    # ``Supported: 100rel``; reliable 18x when the peer supports it
    REQUIRED = "required"      # ``Require: 100rel`` on INVITEs we send


@dataclass(frozen=True, slots=True)
class RAck:
    """``RAck: <rseq> <cseq-num> <method>`` (§7.2)."""

    rseq: int
    cseq: int
    method: str

    def __str__(self) -> str:
        return f"{self.rseq} {self.cseq} {self.method}"


def parse_rseq(value: str | None) -> int | None:
    if value is None:
        return None
    v = value.strip()
    if not v.isdigit():
        return None
    n = int(v)
    return n if 1 <= n <= RSEQ_MAX else None


def parse_rack(value: str | None) -> RAck | None:
    if value is None:
        return None
    parts = value.split()
    if len(parts) != 3 or not parts[0].isdigit() or not parts[1].isdigit():
        return None
    return RAck(int(parts[0]), int(parts[1]), parts[2].upper())


class RSeqVerdict(enum.Enum):
    NEW = "new"                          # in order: process and PRACK it
    RETRANSMISSION = "retransmission"    # already seen: discard (no second PRACK, §4)
    OUT_OF_ORDER = "out-of-order"        # a gap: discard, the UAS will retransmit (§4)


class RSeqTracker:
    """UAC side, per early dialog (§4): the first reliable 1xx fixes the sequence, later
    ones must be exactly one higher."""

    def __init__(self) -> None:
        self.last: int | None = None

    def check(self, rseq: int) -> RSeqVerdict:
        if self.last is None:
            self.last = rseq
            return RSeqVerdict.NEW
        if rseq <= self.last:
            return RSeqVerdict.RETRANSMISSION
        if rseq != self.last + 1:
            return RSeqVerdict.OUT_OF_ORDER
        self.last = rseq
        return RSeqVerdict.NEW
