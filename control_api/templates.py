"""TTS template rules (TPL-1, TPL-2): validating a template text at upload and filling it with
``templateParas`` at call time. Pure functions."""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

MAX_TEMPLATE_BYTES = 900
MAX_VALUE_BYTES = 32

_VAR_RE = re.compile(r"\$\{([^}]*)\}")
_TXT_RE = re.compile(r"^TXT_(\d+)$")
_NUM_RE = re.compile(r"^NUM_(\d+)$")
_DATE_VALUE_RE = re.compile(r"^\d{4}/(0[1-9]|1[0-2])/(0[1-9]|[12]\d|3[01])$")
_TIME_VALUE_RE = re.compile(r"^([01]\d|2[0-3]):[0-5]\d(:[0-5]\d)?$")


@dataclass(frozen=True, slots=True)
class Variable:
    kind: str          # "TXT", "NUM", "DATE", "TIME"
    size: int          # max characters (TXT) / digits (NUM); 0 for DATE/TIME
    span: tuple[int, int]


def utf8_len(text: str) -> int:
    """TPL-1 byte count: UTF-8 (a CJK character is 3 bytes, ASCII 1)."""
    return len(text.encode("utf-8"))


def parse_template(text: str) -> tuple[Variable, ...]:
    """Validate a template text (TPL-1/TPL-2). Raises ``ValueError`` with the reason."""
    if not text or not text.strip():
        raise ValueError("template text is empty")
    if utf8_len(text) > MAX_TEMPLATE_BYTES:
        raise ValueError(f"template is {utf8_len(text)} bytes, at most {MAX_TEMPLATE_BYTES}")
    if "${" in _VAR_RE.sub("", text):
        raise ValueError("unterminated '${' in template")
    out: list[Variable] = []
    for m in _VAR_RE.finditer(text):
        name = m.group(1)
        if (t := _TXT_RE.match(name)) is not None:
            n = int(t.group(1))
            if not 1 <= n <= MAX_VALUE_BYTES:
                raise ValueError(f"${{{name}}}: length must be 1..{MAX_VALUE_BYTES}")
            out.append(Variable("TXT", n, m.span()))
        elif (t := _NUM_RE.match(name)) is not None:
            n = int(t.group(1))
            if not 1 <= n <= MAX_VALUE_BYTES:
                raise ValueError(f"${{{name}}}: length must be 1..{MAX_VALUE_BYTES}")
            out.append(Variable("NUM", n, m.span()))
        elif name in ("DATE", "TIME"):
            out.append(Variable(name, 0, m.span()))
        else:
            raise ValueError(f"unknown variable ${{{name}}} (TXT_n, NUM_n, DATE, TIME)")
    # TPL-2: ${DATE} and ${TIME} next to each other must be separated by a comma
    for prev, cur in itertools.pairwise(out):
        if {prev.kind, cur.kind} == {"DATE", "TIME"}:
            between = text[prev.span[1]:cur.span[0]]
            if between.strip() not in (",", "，"):
                raise ValueError("${DATE} and ${TIME} must be separated by a comma")
    return tuple(out)


def check_value(var: Variable, value: str) -> str | None:
    """Reason the value does not fit the variable, or None."""
    if utf8_len(value) > MAX_VALUE_BYTES:
        return f"value longer than {MAX_VALUE_BYTES} bytes"
    if var.kind == "TXT":
        if not value or len(value) > var.size:
            return f"must be 1..{var.size} characters"
    elif var.kind == "NUM":
        if not value.isascii() or not value.isdigit() or len(value) > var.size:
            return f"must be 1..{var.size} digits 0-9"
    elif var.kind == "DATE":
        if not _DATE_VALUE_RE.match(value):
            return "must be YYYY/MM/DD"
    elif var.kind == "TIME" and not _TIME_VALUE_RE.match(value):
        return "must be HH:MM or HH:MM:SS"
    return None


def render(text: str, params: list[str] | tuple[str, ...]) -> str:
    """Fill the variables in order (TPL-2). Raises ``ValueError("templateParas[i] ...")``."""
    variables = parse_template(text)
    if len(params) != len(variables):
        raise ValueError(f"templateParas needs {len(variables)} values, got {len(params)}")
    pieces: list[str] = []
    pos = 0
    for i, (var, value) in enumerate(zip(variables, params, strict=True)):
        if not isinstance(value, str):
            raise ValueError(f"templateParas[{i}] must be a string")
        reason = check_value(var, value)
        if reason is not None:
            raise ValueError(f"templateParas[{i}] {reason}")
        pieces.append(text[pos:var.span[0]])
        pieces.append(value)
        pos = var.span[1]
    pieces.append(text[pos:])
    return "".join(pieces)
