"""Number formats (NUM-1, NUM-2) and the regions that cannot be called (NUM-7).

Only mainland China (+86) is served. The forbidden table below is the documented source of
truth (tests cover every row):

=================  ==========================================================================
prefix             why
=================  ==========================================================================
``+852``           Hong Kong
``+853``           Macao
``+886``           Taiwan
any other non-+86  abroad (no international calls)
``+8695``          95xxx special short/service numbers (suspended by MIIT policy, FAQ 5.13)
``+8696``          96xxx special short numbers (same family, "各类特殊短号")
``+86990``-``999``  Xinjiang fixed-line area codes 990 Karamay, 991 Urumqi, 992 Kuitun,
                   993 Shihezi, 994 Changji, 995 Turpan, 996 Korla, 997 Aksu, 998 Kashgar,
                   999 Ili/Yining
``+86901``/``902``/``903``/``906``/``908``/``909``  Xinjiang: Tacheng, Hami, Hotan, Altay,
                   Kizilsu/Artux, Bortala/Bole
``+86891``-``897``  Tibet: 891 Lhasa, 892 Shigatse, 893 Shannan, 894 Nyingchi, 895 Chamdo,
                   896 Nagqu, 897 Ngari
=================  ==========================================================================

Mobile numbers of Xinjiang/Tibet are not distinguishable by a short prefix (the 7-digit
HLR segment decides); operators add those segments with ``[api] forbidden_prefixes``
(extra prefixes, e.g. ``"+861389910"``), which are checked like the rows above.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable
from dataclasses import dataclass

_E164_RE = re.compile(r"^\+[1-9]\d{3,29}$")   # String(4-31) with the leading "+"
_CN_MOBILE_RE = re.compile(r"^1[3-9]\d{9}$")
# area code without the leading 0: 10, 2x (2 digits, 8-digit subscriber) or 3 digits + 7/8
_CN_FIXED_RE = re.compile(r"^(?:(?:10|2\d)\d{8}|[3-9]\d{2}\d{7,8})$")

XINJIANG_AREA_CODES = ("990", "991", "992", "993", "994", "995", "996", "997", "998", "999",
                       "901", "902", "903", "906", "908", "909")
TIBET_AREA_CODES = ("891", "892", "893", "894", "895", "896", "897")

FORBIDDEN_PREFIXES: tuple[tuple[str, str], ...] = (
    ("+852", "Hong Kong numbers are not supported"),
    ("+853", "Macao numbers are not supported"),
    ("+886", "Taiwan numbers are not supported"),
    ("+8695", "95xxx special numbers are not supported"),
    ("+8696", "96xxx special numbers are not supported"),
    *((f"+86{c}", "Xinjiang numbers are not supported") for c in XINJIANG_AREA_CODES),
    *((f"+86{c}", "Tibet numbers are not supported") for c in TIBET_AREA_CODES),
)


class NumberKind(enum.StrEnum):
    MOBILE = "mobile"
    FIXED = "fixed"


@dataclass(frozen=True, slots=True)
class NumberProblem:
    reason: str
    forbidden: bool   # True: well-formed but in a region we may not call (NUM-7)


def e164_ok(number: str) -> bool:
    return bool(_E164_RE.match(number))


def classify(number: str) -> NumberKind | None:
    """Mainland number kind, or None if not a well-formed +86 mobile/fixed-line number."""
    if not number.startswith("+86"):
        return None
    national = number[3:]
    if _CN_MOBILE_RE.match(national):
        return NumberKind.MOBILE
    if _CN_FIXED_RE.match(national):
        return NumberKind.FIXED
    return None


def check_dialable(number: object, extra_forbidden: Iterable[str] = ()) -> NumberProblem | None:
    """NUM-1 + NUM-7 for ``callerNbr``/``calleeNbr``. ``None`` = may be dialled."""
    if not isinstance(number, str) or not e164_ok(number):
        return NumberProblem("The number format is incorrect.", forbidden=False)
    for prefix, why in FORBIDDEN_PREFIXES:
        if number.startswith(prefix):
            return NumberProblem(why + ".", forbidden=True)
    for prefix in extra_forbidden:
        if prefix and number.startswith(prefix):
            return NumberProblem("Numbers of this region are not supported.", forbidden=True)
    if not number.startswith("+86"):
        return NumberProblem("International numbers are not supported.", forbidden=True)
    if classify(number) is None:
        return NumberProblem("The number format is incorrect.", forbidden=False)
    return None


def check_provisionable(number: str) -> str | None:
    """NUM-2: display/bind numbers are mainland fixed-line numbers. Returns a reason or None."""
    if not e164_ok(number):
        return "number must be E.164 with '+', e.g. +8675512345678"
    if not number.startswith("+86"):
        return "only mainland China (+86) numbers can be provisioned"
    kind = classify(number)
    if kind is NumberKind.MOBILE:
        return "mobile numbers cannot be display or bind numbers"
    if kind is None:
        return "not a fixed-line number (+86, area code without 0, subscriber number)"
    return None
