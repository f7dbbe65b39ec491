"""Play file checks (PR-FILE): WAV, A-law, 8000 Hz, mono (64 kbit/s), at most 2 MB, with a safe
file name. The media plane's ``media.prompt.validate_play_file`` is the source of truth when it
is importable (it is what the player accepts); otherwise a libsndfile header check stands in."""

from __future__ import annotations

import io
import re

import soundfile

MAX_PLAY_FILE_BYTES = 2 * 1024 * 1024
_NAME_RE = re.compile(r"^[A-Za-z0-9_@\-][A-Za-z0-9_.@\-]{0,127}$")


def check_name(name: str) -> str | None:
    """§9.2: letters, digits and ``- _ . @``; never a path. Returns a reason or None."""
    if not _NAME_RE.match(name) or ".." in name:
        return "file name: 1-128 letters, digits, '-', '_', '.', '@' (no path)"
    return None


def validate_play_file(data: bytes) -> str | None:
    """Reason the bytes are not an acceptable prompt, or None."""
    try:
        from media.prompt import validate_play_file as media_validate
    except ImportError:
        return _soundfile_check(data)
    try:
        media_validate(data)
    except Exception as e:  # PlayFileError with the reason; junk may raise other errors
        return str(e) or type(e).__name__
    return None


def _soundfile_check(data: bytes) -> str | None:
    if len(data) > MAX_PLAY_FILE_BYTES:
        return f"file is {len(data)} bytes, at most {MAX_PLAY_FILE_BYTES} (2 MB)"
    if len(data) < 44:
        return "not a WAV file"
    try:
        info = soundfile.info(io.BytesIO(data))
    except Exception as e:  # libsndfile raises RuntimeError/LibsndfileError on junk
        return f"not a readable audio file ({type(e).__name__})"
    problems = []
    if info.format != "WAV":
        problems.append(f"container {info.format}, need WAV")
    if info.subtype != "ALAW":
        problems.append(f"encoding {info.subtype}, need A-law")
    if info.samplerate != 8000:
        problems.append(f"{info.samplerate} Hz, need 8000 Hz")
    if info.channels != 1:
        problems.append(f"{info.channels} channels, need mono")
    if info.frames == 0:
        problems.append("no audio")
    return "; ".join(problems) or None
