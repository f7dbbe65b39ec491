"""PR-FILE validation and the prompt frame source."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from media.errors import PlayFileError
from media.prompt import PromptSource, load_alaw, validate_play_file
from media.wav import alaw_wav_bytes, parse_wav_header


def test_valid_alaw_file_passes_and_reads_back_with_soundfile(tmp_path: Path) -> None:
    p = tmp_path / "ok.wav"
    p.write_bytes(alaw_wav_bytes(b"\xd5" * 8000))
    validate_play_file(p)
    validate_play_file(p.read_bytes())
    info = sf.info(str(p))
    assert (info.samplerate, info.channels, info.subtype) == (8000, 1, "ALAW")


def test_empty_alaw_file_is_valid_silence(tmp_path: Path) -> None:
    validate_play_file(alaw_wav_bytes(b""))


def _sf_file(tmp_path: Path, **kw: object) -> bytes:
    p = tmp_path / "x.wav"
    rate = int(kw.pop("samplerate", 8000))  # type: ignore[call-overload]
    ch = int(kw.pop("channels", 1))  # type: ignore[call-overload]
    sf.write(str(p), np.zeros((800, ch), dtype=np.int16), rate, **kw)
    return p.read_bytes()


@pytest.mark.parametrize(
    ("kw", "reason"),
    [
        ({"subtype": "PCM_16"}, "format tag 1"),
        ({"subtype": "ULAW"}, "format tag 7"),
        ({"subtype": "ALAW", "samplerate": 16000}, "16000 Hz"),
        ({"subtype": "ALAW", "channels": 2}, "2 channels"),
    ],
)
def test_wrong_formats_have_a_clear_reason(tmp_path: Path, kw: dict[str, object], reason: str
                                           ) -> None:
    with pytest.raises(PlayFileError, match=reason):
        validate_play_file(_sf_file(tmp_path, **kw))


def test_too_big(tmp_path: Path) -> None:
    p = tmp_path / "big.wav"
    p.write_bytes(alaw_wav_bytes(b"\xd5" * (2 * 1024 * 1024)))
    with pytest.raises(PlayFileError, match="at most 2 MB"):
        validate_play_file(p)


@pytest.mark.parametrize("data", [b"", b"RIFF", b"ID3\x03" + b"\x00" * 100,
                                  b"RIFF\x00\x00\x00\x00WAVEdata\x00\x00\x00\x00"])
def test_not_wav(data: bytes) -> None:
    with pytest.raises(PlayFileError):
        validate_play_file(data)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(PlayFileError, match="cannot read"):
        validate_play_file(tmp_path / "nope.wav")


def test_streaming_size_fields_and_odd_chunks_are_handled() -> None:
    body = b"\x01" * 10
    raw = bytearray(alaw_wav_bytes(body))
    raw[40:44] = struct.pack("<I", 0xFFFFFFFF)
    info = parse_wav_header(bytes(raw))
    assert info.data_size == len(raw) - 44
    # a LIST chunk of odd length before fmt/data
    fancy = b"RIFF\x00\x00\x00\x00WAVELIST\x03\x00\x00\x00abc\x00" + bytes(raw[12:])
    assert load_alaw(fancy)[:10] == body


def test_source_sequence_gap_and_padding() -> None:
    src = PromptSource([b"\x01" * 200, b"\x02" * 160], gap_frames=2)
    frames = []
    while (f := src.next_frame()) is not None:
        frames.append(f)
    assert [len(f) for f in frames] == [160] * 5
    assert frames[0] == b"\x01" * 160
    assert frames[1] == b"\x01" * 40 + b"\xd5" * 120
    assert frames[2] == frames[3] == b"\xd5" * 160
    assert frames[4] == b"\x02" * 160
    assert src.finished


def test_source_loops_until_stopped() -> None:
    src = PromptSource([b"\x07" * 160], loop=True, gap_frames=1)
    frames = [src.next_frame() for _ in range(7)]
    assert frames == [b"\x07" * 160, b"\xd5" * 160] * 3 + [b"\x07" * 160]


def test_source_empty_items_finish_immediately() -> None:
    assert PromptSource([b""], loop=True).next_frame() is None
    assert PromptSource([]).next_frame() is None
