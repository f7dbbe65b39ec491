"""Play file checks (PR-FILE): WAV, A-law, 8000 Hz, mono (64 kbit/s), at most 2 MB, with a safe
file name. Written here because ``media`` has no ``validate_play_file`` yet; it reads the
header with soundfile (libsndfile)."""

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
