"""REC-1..4: the mixer's alignment and the recorder's file, read back with soundfile."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

from media import g711
from media.recorder import Recorder, RecordingMixer


def tone(freq: float, n: int, amp: float = 4000) -> np.ndarray:
    return (np.sin(2 * np.pi * freq * np.arange(n) / 8000) * amp).astype(np.int16)


def test_mixer_sums_both_directions() -> None:
    m = RecordingMixer(settle=0)
    a, b = tone(440, 160), tone(1000, 160)
    m.add(0, g711.alaw_encode(a), 160)
    m.add(1, g711.alaw_encode(b), 160)
    out = g711.alaw_decode(m.flush(160)).astype(np.int32)
    ref = g711.alaw_decode(g711.alaw_encode(a)).astype(np.int32) + g711.alaw_decode(
        g711.alaw_encode(b)).astype(np.int32)
    assert np.max(np.abs(out - ref)) <= np.max(np.abs(ref)) * 0.07 + 16


def test_mixer_fills_gaps_with_silence_and_keeps_time() -> None:
    m = RecordingMixer(settle=0)
    frame = g711.alaw_encode(tone(440, 160))
    m.add(0, frame, 160)  # 0..20 ms
    m.add(0, frame, 8160)  # next packet a second later: 980 ms of silence in between
    out = m.flush(8160)
    assert len(out) == 8160
    assert out[160:8000] == bytes([g711.ALAW_SILENCE]) * 7840
    assert out[8000:] == frame


def test_mixer_one_silent_direction_leaves_the_other_unchanged() -> None:
    m = RecordingMixer(settle=0)
    frames = [g711.alaw_encode(tone(300, 160)) for _ in range(10)]
    for i, f in enumerate(frames):
        m.add(1, f, 160 * (i + 1))
    assert m.flush(1600) == b"".join(frames)


def _run(tmp_path: Path, seconds: float) -> tuple[Recorder, Path]:
    path = tmp_path / "rec" / "call.wav"
    rec = Recorder(path, 100.0)
    frame_a = g711.alaw_encode(tone(440, 160))
    frame_b = g711.alaw_encode(tone(1200, 160))
    n = int(seconds * 50)
    for i in range(n):
        t = 100.0 + (i + 1) * 0.02
        rec.feed(0, frame_a, t + 0.003)
        if i % 2 == 0 or i > n // 2:  # direction b loses every other packet in the first half
            rec.feed(1, frame_b, t + 0.001)
        if i % 25 == 0:
            rec.flush(t)
            if i:  # written incrementally: the file grows while the call runs
                assert path.exists() and path.stat().st_size > 44
    return rec, path


def test_recorder_writes_alaw_8k_mono_of_the_talk_time(tmp_path: Path) -> None:
    rec, path = _run(tmp_path, 5.0)
    result = rec.finish(100.0 + 5.0)
    assert result.path == path
    info = sf.info(str(path))
    assert (info.samplerate, info.channels, info.subtype, info.format) == (8000, 1, "ALAW", "WAV")
    assert abs(info.duration - 5.0) <= 0.040
    assert abs(result.duration_s - info.duration) < 0.001
    raw = path.read_bytes()
    assert raw[20:22] == b"\x06\x00"  # format tag 6
    data, _ = sf.read(str(path), dtype="int16")
    assert np.abs(data).max() > 1000  # real audio, not a header-only file


def test_recorder_under_three_seconds_is_deleted(tmp_path: Path) -> None:
    rec, path = _run(tmp_path, 2.5)
    result = rec.finish(102.5)
    assert result.path is None and abs(result.duration_s - 2.5) <= 0.04
    assert not path.exists()


def test_recorder_silent_call_still_has_its_duration(tmp_path: Path) -> None:
    path = tmp_path / "silent.wav"
    rec = Recorder(path, 0.0)
    result = rec.finish(4.0)
    assert result.path == path and abs(sf.info(str(path)).duration - 4.0) <= 0.04


async def test_stop_is_idempotent(tmp_path: Path) -> None:
    path = tmp_path / "x.wav"
    now = [0.0]
    rec = Recorder(path, 0.0, time_fn=lambda: now[0])
    now[0] = 3.5
    r1 = await rec.stop()
    r2 = await rec.stop()
    assert r1 == r2 and r1.path == path
