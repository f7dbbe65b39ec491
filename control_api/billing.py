"""Billing (BILL-1..3): minutes and charges of one call, number rent of one month.

The one rule for call minutes: a leg is billed per *started* minute of talk, i.e.
``ceil((end - answer) / 60 s)`` computed on whole milliseconds, 0 if the leg never answered.
A callback is billed on both legs (caller minutes from A's answer + callee minutes from B's
answer); a notification or verification code on its single leg. The charge is
``minutes × rate`` in thousandths of the currency unit (integers, no float rounding).
EV-6 "talk minutes" is the B-leg (callee) figure of a callback, the single leg otherwise.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal

from switch.events import ServiceType


def leg_minutes(answer: float | None, end: float | None) -> int:
    if answer is None or end is None:
        return 0
    ms = round(end * 1000) - round(answer * 1000)
    if ms <= 0:
        return 0
    return -(-ms // 60_000)


def rate_milli(rate: float | str | Decimal) -> int:
    """Rate per minute as thousandths (0.18 → 180)."""
    return int((Decimal(str(rate)) * 1000).quantize(Decimal(1), rounding=ROUND_HALF_UP))


@dataclass(frozen=True, slots=True)
class CallCharge:
    caller_minutes: int        # A leg (callback) / the only leg (notify, verify)
    callee_minutes: int        # B leg of a callback, 0 otherwise
    talk_minutes: int          # EV-6
    billed_minutes: int        # caller + callee
    charge_milli: int

    @property
    def charge(self) -> Decimal:
        return Decimal(self.charge_milli) / 1000


def charge_call(service: ServiceType | str, *, a_answer: float | None, b_answer: float | None,
                end: float | None, rate_per_minute: float | str | Decimal) -> CallCharge:
    a = leg_minutes(a_answer, end)
    if ServiceType(service) is ServiceType.CALLBACK:
        b = leg_minutes(b_answer, end)
        talk = b
    else:
        b = 0
        talk = a
    billed = a + b
    return CallCharge(a, b, talk, billed, billed * rate_milli(rate_per_minute))


def _month_bounds(year: int, month: int) -> tuple[float, float]:
    start = datetime(year, month, 1, tzinfo=UTC).timestamp()
    days = calendar.monthrange(year, month)[1]
    return start, start + days * 86_400


def number_pays_rent(issued_at: float, released_at: float | None, year: int, month: int) -> bool:
    """BILL-2: a number pays the month if it existed on day 1 (in use or paused), was issued
    during the month, or was released during the month; not after its release month."""
    start, end = _month_bounds(year, month)
    return issued_at < end and (released_at is None or released_at >= start)


def monthly_rent_milli(numbers: list[tuple[float, float | None]], year: int, month: int,
                       rent_per_month: float | str | Decimal) -> int:
    per = rate_milli(rent_per_month)
    return per * sum(1 for issued, released in numbers
                     if number_pays_rent(issued, released, year, month))
