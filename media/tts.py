"""TTS templates (TPL-1..5): validation, parameter filling, reading rules, synthesis.

The first three are pure functions the control API reuses at template registration and
at call request time:

* :func:`validate_template` — syntax and size (TPL-1, TPL-2); returns the variables.
* :func:`fill_template` — check ``templateParas`` against the variables and substitute.
* :func:`spoken_text` — the text handed to the synthesiser, following TPL-4: digit strings
  read digit by digit (1234 → 一二三四 / "one two three four"), ``YYYY/MM/DD`` read as a
  date and ``HH:MM[:SS]`` as a time.

:class:`TtsRenderer` speaks it with espeak-ng, converts to A-law 8 kHz mono with sox (both
as asyncio subprocesses with a timeout) and caches the WAV under ``data_dir/tts`` by a hash
of voice and text.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import itertools
import os
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import structlog

from media.config import MediaConfig
from media.errors import PlayFileError, TemplateError, TtsError
from media.prompt import validate_play_file

log = structlog.get_logger("media.tts")

MAX_TEMPLATE_BYTES = 900
MAX_VALUE_BYTES = 32
MAX_PLAIN_BYTES = 4096  # already-filled text handed to TTS (bounds espeak-ng's work)
LANG_ENGLISH = 1
LANG_MANDARIN = 2
RENDER_VERSION = "1"  # bump to invalidate cached renders when the rules change

_VAR = re.compile(r"\$\{([^}]*)\}")
_VAR_NAME = re.compile(r"^(?:(TXT|NUM)_(\d{1,2})|(DATE)|(TIME))$")
_DATE = re.compile(r"^(\d{4})/(\d{2})/(\d{2})$")
_TIME = re.compile(r"^(\d{2}):(\d{2})(?::(\d{2}))?$")


@dataclass(frozen=True)
class TemplateVariable:
    kind: str  # "TXT" | "NUM" | "DATE" | "TIME"
    length: int | None  # n of TXT_n / NUM_n
    start: int
    end: int

    @property
    def name(self) -> str:
        return f"{self.kind}_{self.length}" if self.length is not None else self.kind


def template_bytes(text: str) -> int:
    """TPL-1 size: UTF-8 bytes (a CJK character is 3 bytes, ASCII 1)."""
    return len(text.encode("utf-8"))


def validate_template(text: str) -> tuple[TemplateVariable, ...]:
    """Check a template (TPL-1, TPL-2); raise :class:`TemplateError` naming the problem."""
    if not isinstance(text, str) or not text.strip():
        raise TemplateError("template text is empty")
    size = template_bytes(text)
    if size > MAX_TEMPLATE_BYTES:
        raise TemplateError(
            f"template is {size} bytes; at most {MAX_TEMPLATE_BYTES} bytes are allowed "
            "(a Chinese character counts 3)"
        )
    variables: list[TemplateVariable] = []
    for m in _VAR.finditer(text):
        vm = _VAR_NAME.match(m.group(1))
        if vm is None:
            raise TemplateError(
                f"unknown variable ${{{m.group(1)}}}; use ${{TXT_n}}, ${{NUM_n}}, ${{DATE}} "
                "or ${TIME}"
            )
        if vm.group(1):
            n = int(vm.group(2))
            if not 1 <= n <= MAX_VALUE_BYTES:
                raise TemplateError(f"${{{m.group(1)}}}: n must be 1..{MAX_VALUE_BYTES}")
            variables.append(TemplateVariable(vm.group(1), n, m.start(), m.end()))
        else:
            variables.append(TemplateVariable(vm.group(3) or vm.group(4), None, m.start(),
                                              m.end()))
    rest = _VAR.sub("", text)
    if "${" in rest:
        raise TemplateError("unterminated variable: '${' without a closing '}'")
    for a, b in itertools.pairwise(variables):
        if {a.kind, b.kind} == {"DATE", "TIME"}:
            between = text[a.end:b.start]
            if "," not in between and "，" not in between:
                raise TemplateError("${DATE} and ${TIME} must be separated by a comma")
    return tuple(variables)


def check_param(var: TemplateVariable, value: str, index: int) -> None:
    """Validate one ``templateParas`` value for its variable (TPL-1, TPL-2)."""
    where = f"templateParas[{index}] for ${{{var.name}}}"
    if not isinstance(value, str):
        raise TemplateError(f"{where} must be a string")
    if template_bytes(value) > MAX_VALUE_BYTES:
        raise TemplateError(f"{where} is longer than {MAX_VALUE_BYTES} bytes")
    if var.kind == "NUM":
        assert var.length is not None
        if not value or not (value.isascii() and value.isdigit()):
            raise TemplateError(f"{where} must contain only digits 0-9")
        if len(value) > var.length:
            raise TemplateError(f"{where} has {len(value)} digits; at most {var.length}")
    elif var.kind == "TXT":
        assert var.length is not None
        if len(value) > var.length:
            raise TemplateError(f"{where} has {len(value)} characters; at most {var.length}")
    elif var.kind == "DATE":
        m = _DATE.match(value)
        if m is None:
            raise TemplateError(f"{where} must be YYYY/MM/DD")
        try:
            dt.date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
        except ValueError:
            raise TemplateError(f"{where} is not a valid date") from None
    else:
        m = _TIME.match(value)
        if m is None:
            raise TemplateError(f"{where} must be HH:MM or HH:MM:SS")
        h, mi, s = int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)
        if h > 23 or mi > 59 or s > 59:
            raise TemplateError(f"{where} is not a valid time")


def _check_params(text: str, params: Sequence[str]) -> tuple[TemplateVariable, ...]:
    variables = validate_template(text)
    if len(params) != len(variables):
        raise TemplateError(
            f"template has {len(variables)} variables but templateParas has {len(params)} values"
        )
    for i, (var, value) in enumerate(zip(variables, params, strict=True)):
        check_param(var, value, i)
    return variables


def fill_template(text: str, params: Sequence[str]) -> str:
    """Substitute ``params`` in order (TPL-2) after validating everything."""
    variables = _check_params(text, params)
    return _substitute(text, variables, list(params))


def _substitute(text: str, variables: Sequence[TemplateVariable], values: list[str]) -> str:
    out, pos = [], 0
    for var, val in zip(variables, values, strict=True):
        out.append(text[pos:var.start])
        out.append(val)
        pos = var.end
    out.append(text[pos:])
    return "".join(out)


# --- reading rules (TPL-4) ------------------------------------------------------------------

_ZH_DIGITS = "零一二三四五六七八九"
_EN_DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
_EN_TEENS = ("ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen",
             "seventeen", "eighteen", "nineteen")
_EN_TENS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")
_EN_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August",
              "September", "October", "November", "December")
_EN_ORD = {"one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth",
           "nine": "ninth", "twelve": "twelfth", "twenty": "twentieth", "thirty": "thirtieth"}


def _zh_int(n: int) -> str:
    """0..99 as a Mandarin number (十二, 三十一)."""
    if n < 10:
        return _ZH_DIGITS[n]
    tens, ones = divmod(n, 10)
    head = "十" if tens == 1 else _ZH_DIGITS[tens] + "十"
    return head + (_ZH_DIGITS[ones] if ones else "")


def _en_int(n: int) -> str:
    """0..9999 in English words."""
    if n < 10:
        return _EN_DIGITS[n]
    if n < 20:
        return _EN_TEENS[n - 10]
    if n < 100:
        t, o = divmod(n, 10)
        return _EN_TENS[t] + (f"-{_EN_DIGITS[o]}" if o else "")
    if n < 1000:
        h, r = divmod(n, 100)
        return f"{_EN_DIGITS[h]} hundred" + (f" {_en_int(r)}" if r else "")
    th, r = divmod(n, 1000)
    return f"{_en_int(th)} thousand" + (f" {_en_int(r)}" if r else "")


def _en_ordinal(n: int) -> str:
    words = _en_int(n)
    last = re.split(r"[- ]", words)[-1]
    ordinal = _EN_ORD.get(last, last + "th")
    return words[: len(words) - len(last)] + ordinal


def read_digits(digits: str, language: int) -> str:
    if language == LANG_MANDARIN:
        return "".join(_ZH_DIGITS[int(c)] for c in digits)
    return " ".join(_EN_DIGITS[int(c)] for c in digits)


def read_date(y: int, mo: int, d: int, language: int) -> str:
    if language == LANG_MANDARIN:
        return f"{read_digits(str(y), language)}年{_zh_int(mo)}月{_zh_int(d)}日"
    return f"{_EN_MONTHS[mo - 1]} {_en_ordinal(d)}, {_en_int(y)}"


def read_time(h: int, mi: int, s: int | None, language: int) -> str:
    if language == LANG_MANDARIN:
        out = f"{_zh_int(h)}点"
        if mi == 0 and not s:
            return out + "整"
        out += ("零" if mi < 10 else "") + _zh_int(mi) + "分"
        if s is not None:
            out += _zh_int(s) + "秒"
        return out
    words = _en_int(h)
    if mi == 0:
        words += " o'clock"
    else:
        words += (" oh " if mi < 10 else " ") + _en_int(mi)
    if s is not None:
        words += f" and {_en_int(s)} seconds"
    return words


_GENERIC = re.compile(
    r"(?P<date>\d{4}/\d{1,2}/\d{1,2})|(?P<time>\d{1,2}:\d{2}(?::\d{2})?)"
    r"|(?P<dec>\d+\.\d+)|(?P<num>\d+)"
)


def read_text(text: str, language: int) -> str:
    """Apply the reading rules to free text: dates, times, decimals, digit strings."""

    def repl(m: re.Match[str]) -> str:
        tok = m.group(0)
        if m.group("date"):
            y, mo, d = (int(x) for x in tok.split("/"))
            if 1 <= mo <= 12 and 1 <= d <= 31:
                return read_date(y, mo, d, language)
            return read_digits(tok.replace("/", ""), language)
        if m.group("time"):
            parts = [int(x) for x in tok.split(":")]
            if parts[0] <= 23 and parts[1] <= 59 and (len(parts) < 3 or parts[2] <= 59):
                return read_time(parts[0], parts[1], parts[2] if len(parts) > 2 else None,
                                 language)
            return read_digits(tok.replace(":", ""), language)
        if m.group("dec"):
            a, b = tok.split(".")
            point = "点" if language == LANG_MANDARIN else " point "
            return read_digits(a, language) + point + read_digits(b, language)
        return read_digits(tok, language) + ("" if language == LANG_MANDARIN else " ")

    out = _GENERIC.sub(repl, text)
    return re.sub(r" {2,}", " ", out).strip()


def _has_variables(text: str) -> bool:
    return any(_VAR_NAME.match(m.group(1)) for m in _VAR.finditer(text))


def spoken_text(text: str, params: Sequence[str], language: int) -> str:
    """The text to synthesise: template filled and read per TPL-4.

    Without ``params`` and without variables the text is taken as already-filled plain
    text (e.g. a template filled by the caller, which may be longer than 900 bytes once
    filled): it only gets the reading rules, bounded to ``MAX_PLAIN_BYTES``. Filling here
    (template + params) is better when possible: ``${NUM_n}`` values are then known to be
    digit strings and ``${TXT_n}`` values are read as text."""
    if language not in (LANG_ENGLISH, LANG_MANDARIN):
        raise TemplateError("languageType must be 1 (English) or 2 (Mandarin)")
    if not params and not _has_variables(text):
        if not text.strip():
            raise TemplateError("nothing to speak")
        if template_bytes(text) > MAX_PLAIN_BYTES:
            raise TemplateError(f"text to speak is longer than {MAX_PLAIN_BYTES} bytes")
        return read_text(text, language)
    variables = _check_params(text, params)
    values = []
    for var, val in zip(variables, params, strict=True):
        if var.kind == "NUM":
            spoken = read_digits(val, language)
            values.append(spoken if language == LANG_MANDARIN else f" {spoken} ")
        elif var.kind == "DATE":
            y, mo, d = (int(x) for x in val.split("/"))
            values.append(read_date(y, mo, d, language))
        elif var.kind == "TIME":
            parts = [int(x) for x in val.split(":")]
            values.append(read_time(parts[0], parts[1], parts[2] if len(parts) > 2 else None,
                                    language))
        else:
            values.append(read_text(val, language))
    # the fixed text follows the same rules; values are already words (no digits left)
    pieces, pos = [], 0
    for var, val in zip(variables, values, strict=True):
        pieces.append(read_text(text[pos:var.start], language))
        pieces.append(val)
        pos = var.end
    pieces.append(read_text(text[pos:], language))
    joiner = "" if language == LANG_MANDARIN else " "
    spoken = re.sub(r"\s{2,}", " ", joiner.join(p for p in pieces if p))
    return re.sub(r"\s+([,.;:!?])", r"\1", spoken).strip()


# --- synthesis --------------------------------------------------------------------------------


async def run_tool(argv: Sequence[str], stdin: bytes | None, timeout: float) -> None:
    """Run one external program; kill it (by its PID, through the process handle) when it
    overruns ``timeout`` or when the caller is cancelled."""
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
    except OSError as e:
        raise TtsError(f"cannot run {argv[0]}: {e.strerror}") from None
    try:
        _, err = await asyncio.wait_for(proc.communicate(stdin), timeout)
    except TimeoutError:
        raise TtsError(f"{argv[0]} did not finish within {timeout:g} s") from None
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
    if proc.returncode != 0:
        msg = err.decode(errors="replace").strip().splitlines()
        raise TtsError(f"{argv[0]} failed (exit {proc.returncode}): {msg[-1] if msg else ''}")


async def synthesize(text: str, voice: str, out: Path, timeout: float) -> None:
    """espeak-ng → sox → A-law 8 kHz mono WAV at ``out`` (written atomically)."""
    espeak = shutil.which("espeak-ng")
    sox = shutil.which("sox")
    if espeak is None or sox is None:
        raise TtsError("espeak-ng and sox must be installed for TTS")
    out.parent.mkdir(parents=True, exist_ok=True)
    raw = out.with_name(f".{out.stem}.{os.getpid()}.raw.wav")
    tmp = out.with_name(f".{out.stem}.{os.getpid()}.tmp.wav")
    try:
        # text goes through stdin: nothing in it can be taken for an option
        await run_tool([espeak, "-v", voice, "-b", "1", "-w", str(raw), "--stdin"],
                       text.encode("utf-8"), timeout)
        await run_tool([sox, "-q", str(raw), "-r", "8000", "-c", "1", "-e", "a-law", "-b", "8",
                        str(tmp), "norm", "-3"], None, timeout)
        try:
            validate_play_file(tmp)
        except PlayFileError as e:
            raise TtsError(f"sox produced an unusable file: {e}") from None
        os.replace(tmp, out)
    finally:
        for p in (raw, tmp):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()


class TtsRenderer:
    """Render and cache speech; concurrent requests for the same text share one run."""

    def __init__(self, cache_dir: Path, config: MediaConfig) -> None:
        self.cache_dir = cache_dir
        self._config = config
        self._inflight: dict[str, asyncio.Future[Path]] = {}

    def voice_for(self, language: int) -> str:
        """espeak-ng voice name: the language voice plus the configured variant (TPL-3)."""
        if language == LANG_MANDARIN:
            voice = self._config.tts_voice
        elif language == LANG_ENGLISH:
            voice = self._config.tts_voice_en
        else:
            raise TemplateError("languageType must be 1 (English) or 2 (Mandarin)")
        variant = self._config.tts_variant
        return f"{voice}+{variant}" if variant and "+" not in voice else voice

    def cache_path(self, text: str, voice: str) -> Path:
        h = hashlib.sha256(f"{RENDER_VERSION}\0{voice}\0{text}".encode()).hexdigest()[:32]
        return self.cache_dir / h[:2] / f"{h}.wav"

    async def render(self, template: str, params: Sequence[str], language: int) -> Path:
        voice = self.voice_for(language)
        text = spoken_text(template, params, language)
        return await self.speak(text, voice)

    async def speak(self, text: str, voice: str) -> Path:
        """Synthesise already-rendered ``text`` (cached)."""
        if not text.strip():
            raise TemplateError("nothing to speak")
        path = self.cache_path(text, voice)
        if path.exists():
            return path
        key = str(path)
        fut = self._inflight.get(key)
        if fut is not None:
            return await asyncio.shield(fut)
        fut = asyncio.get_running_loop().create_future()
        self._inflight[key] = fut
        try:
            await synthesize(text, voice, path, self._config.tts_timeout_s)
            log.info("tts_rendered", path=str(path), voice=voice, chars=len(text))
            fut.set_result(path)
            return path
        except Exception as e:
            fut.set_exception(e)
            fut.exception()  # retrieved: no warning when no other request shared it
            raise
        except BaseException:
            fut.cancel()
            raise
        finally:
            del self._inflight[key]
