"""The default prompts of PR-DEFAULT, rendered at first start into ``data_dir`` (cached).

Speech is synthesised with espeak-ng + sox like any TTS text (never committed as binary
recordings); ``waitVoice`` is a ringback tone (450 Hz, 1 s on / 4 s off, the Chinese
national ringback cadence) generated with numpy. When espeak-ng is unavailable a spoken
prompt falls back to a short beep so calls still work, and the failure is logged.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import structlog

from media import g711
from media.errors import MediaError
from media.prompt import load_alaw
from media.tts import LANG_MANDARIN, TtsRenderer, spoken_text
from media.wav import alaw_wav_bytes

log = structlog.get_logger("media.prompts")

SPOKEN_DEFAULTS: dict[str, str] = {
    "preVoice": "正在为您转接中，请稍后",  # PR-PRE
    "lastMinVoice": "本次通话时长还剩1分钟",  # PR-LAST
    "recordHintTone": "您好，本次通话将被录音",  # PR-HINT
}
DEFAULT_PROMPT_NAMES = (*SPOKEN_DEFAULTS, "waitVoice")


def tone(freq: float, on_s: float, off_s: float, *, level: float = 0.25,
         repeats: int = 1) -> bytes:
    """A-law samples of ``repeats`` × (``freq`` Hz for ``on_s``, silence for ``off_s``)."""
    t = np.arange(int(8000 * on_s)) / 8000.0
    burst = (np.sin(2 * np.pi * freq * t) * level * 32767).astype(np.int16)
    ramp = min(80, len(burst) // 2)  # 10 ms fades: no clicks
    if ramp:
        env = np.linspace(0.0, 1.0, ramp)
        burst[:ramp] = (burst[:ramp] * env).astype(np.int16)
        burst[-ramp:] = (burst[-ramp:] * env[::-1]).astype(np.int16)
    one = np.concatenate([burst, np.zeros(int(8000 * off_s), dtype=np.int16)])
    return g711.alaw_encode(np.tile(one, repeats))


def ringback() -> bytes:
    return tone(450.0, 1.0, 4.0)


def _write(path: Path, alaw: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(alaw_wav_bytes(alaw))
    os.replace(tmp, path)


async def ensure_default_prompts(directory: Path, tts: TtsRenderer) -> dict[str, Path]:
    """Render any missing default prompt; returns name → path."""
    out: dict[str, Path] = {}
    voice = tts.voice_for(2)
    for name, text in SPOKEN_DEFAULTS.items():
        h = hashlib.sha256(f"{voice}\0{text}".encode()).hexdigest()[:12]
        path = directory / f"{name}-{h}.wav"
        if not path.exists():
            try:
                rendered = await tts.speak(spoken_text(text, [], LANG_MANDARIN), voice)
                _write(path, load_alaw(rendered.read_bytes()))
            except MediaError as e:
                log.error("default_prompt_tts_failed", prompt=name, error=str(e))
                path = directory / f"{name}-fallback.wav"
                _write(path, tone(1000.0, 0.3, 0.2, repeats=2))
        out[name] = path
    wait = directory / "waitVoice-ringback450.wav"
    if not wait.exists():
        _write(wait, ringback())
    out["waitVoice"] = wait
    return out
