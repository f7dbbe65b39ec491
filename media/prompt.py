"""Prompt files (PR-FILE) and the prompt player's frame source, sans-I/O.

:func:`validate_play_file` is the check the control API runs at upload. The player is a
:class:`PromptSource` that the media clock asks for one frame per tick: it walks a
sequence of A-law payloads, inserts silence between items, loops when asked, and says
when a new talk spurt starts (RTP marker bit).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from media import g711
from media.errors import PlayFileError
from media.wav import (
    WAVE_FORMAT_ALAW,
    WAVE_FORMAT_MULAW,
    WAVE_FORMAT_PCM,
    parse_wav_header,
)

MAX_PLAY_FILE_BYTES = 2 * 1024 * 1024
_FORMAT_NAMES = {1: "PCM", 3: "IEEE float", 6: "A-law", 7: "µ-law", 0x55: "MP3", 2: "ADPCM"}


def validate_play_file(path_or_bytes: str | os.PathLike[str] | bytes) -> None:
    """Raise :class:`PlayFileError` with a human reason unless the file is a WAV,
    A-law (format tag 6), 8000 Hz, mono, 8 bits (64 kbit/s), at most 2 MB (PR-FILE)."""
    if isinstance(path_or_bytes, bytes | bytearray):
        data = bytes(path_or_bytes)
    else:
        p = Path(path_or_bytes)
        try:
            size = p.stat().st_size
        except OSError as e:
            raise PlayFileError(f"cannot read the file: {e.strerror}") from None
        if size > MAX_PLAY_FILE_BYTES:
            raise PlayFileError(_too_big(size))
        data = p.read_bytes()
    if len(data) > MAX_PLAY_FILE_BYTES:
        raise PlayFileError(_too_big(len(data)))
    info = parse_wav_header(data)
    if info.format_tag != WAVE_FORMAT_ALAW:
        name = _FORMAT_NAMES.get(info.format_tag, "unknown")
        raise PlayFileError(
            f"WAV encoding is {name} (format tag {info.format_tag}); play files must be "
            "A-law (format tag 6)"
        )
    if info.sample_rate != 8000:
        raise PlayFileError(f"sample rate is {info.sample_rate} Hz; play files must be 8000 Hz")
    if info.channels != 1:
        raise PlayFileError(f"file has {info.channels} channels; play files must be mono")
    if info.bits_per_sample != 8 or info.byte_rate != 8000:
        raise PlayFileError(
            f"bit rate is {info.byte_rate * 8 // 1000} kbit/s ({info.bits_per_sample} bits "
            "per sample); play files must be 64 kbit/s (8 bits per sample)"
        )


def _too_big(size: int) -> str:
    return f"file is {size} bytes; play files must be at most 2 MB ({MAX_PLAY_FILE_BYTES} bytes)"


def load_alaw(data: bytes) -> bytes:
    """A-law samples of a WAV file held in memory. A-law is taken as is; µ-law and 16-bit
    PCM at 8 kHz mono are converted (internal files such as TTS output), anything else is
    refused with :class:`PlayFileError`."""
    info = parse_wav_header(data)
    raw = data[info.data_offset:info.data_offset + info.data_size]
    if info.sample_rate != 8000 or info.channels != 1:
        raise PlayFileError(
            f"cannot play {info.sample_rate} Hz / {info.channels} channels; need 8000 Hz mono"
        )
    if info.format_tag == WAVE_FORMAT_ALAW and info.bits_per_sample == 8:
        return raw
    if info.format_tag == WAVE_FORMAT_MULAW and info.bits_per_sample == 8:
        return g711.ulaw_to_alaw(raw)
    if info.format_tag == WAVE_FORMAT_PCM and info.bits_per_sample == 16:
        pcm = np.frombuffer(raw[: len(raw) & ~1], dtype="<i2").astype(np.int16)
        return g711.alaw_encode(pcm)
    raise PlayFileError(f"cannot play WAV format tag {info.format_tag}")


class PromptSource:
    """Frames of a prompt sequence: ``next_frame()`` gives exactly ``frame`` A-law bytes per
    call, or ``None`` when done. The last frame of an item is padded with silence, and
    ``gap_frames`` of silence separate items (and loop rounds). The frames are cut once
    up front, so the per-tick work is a list index (this runs for every stream every
    20 ms)."""

    def __init__(self, items: Sequence[bytes], *, loop: bool = False, frame: int = 160,
                 gap_frames: int = 10) -> None:
        silence = bytes([g711.ALAW_SILENCE]) * frame
        frames: list[bytes] = []
        for k, item in enumerate(i for i in items if i):
            if k:
                frames.extend([silence] * gap_frames)
            for off in range(0, len(item), frame):
                chunk = item[off:off + frame]
                frames.append(chunk if len(chunk) == frame else
                              chunk + silence[: frame - len(chunk)])
        self._loop = loop and bool(frames)
        if self._loop:
            frames.extend([silence] * gap_frames)
        self._frames = frames
        self._i = 0
        self.frames_played = 0
        self.spurt_start = True  # next frame begins a talk spurt (RTP marker)

    @property
    def finished(self) -> bool:
        return not self._loop and self._i >= len(self._frames)

    def next_frame(self) -> bytes | None:
        i = self._i
        if i >= len(self._frames):
            if not self._loop:
                return None
            i = 0
        self._i = i + 1
        self.frames_played += 1
        return self._frames[i]
