"""WAV (RIFF) reading and incremental A-law writing, sans-I/O where possible.

stdlib ``wave`` cannot read format tag 6 (A-law), so the RIFF chunks are walked here.
:class:`AlawWavWriter` writes the header first with placeholder sizes, appends data as it
comes, and patches the RIFF and data sizes on close, so a crash leaves a readable file
whose size fields are only stale (never a header-only file: nothing is created until the
first samples arrive).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from media.errors import PlayFileError

WAVE_FORMAT_PCM = 1
WAVE_FORMAT_ALAW = 6
WAVE_FORMAT_MULAW = 7
WAVE_FORMAT_EXTENSIBLE = 0xFFFE


@dataclass(frozen=True)
class WavInfo:
    format_tag: int
    channels: int
    sample_rate: int
    byte_rate: int
    block_align: int
    bits_per_sample: int
    data_offset: int
    data_size: int

    @property
    def duration_s(self) -> float:
        return self.data_size / self.byte_rate if self.byte_rate else 0.0


def parse_wav_header(data: bytes) -> WavInfo:
    """Walk the RIFF chunks of a whole file held in memory; raises :class:`PlayFileError`."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise PlayFileError("not a WAV file (no RIFF/WAVE header)")
    off = 12
    fmt: tuple[int, int, int, int, int, int] | None = None
    while off + 8 <= len(data):
        cid = data[off:off + 4]
        (size,) = struct.unpack_from("<I", data, off + 4)
        body = off + 8
        if cid == b"fmt ":
            if size < 16 or body + 16 > len(data):
                raise PlayFileError("WAV fmt chunk is truncated")
            fmt = struct.unpack_from("<HHIIHH", data, body)
            if fmt[0] == WAVE_FORMAT_EXTENSIBLE and size >= 40 and body + 40 <= len(data):
                # the real format tag is the first two bytes of the SubFormat GUID
                (sub,) = struct.unpack_from("<H", data, body + 24)
                fmt = (sub, *fmt[1:])
        elif cid == b"data":
            if fmt is None:
                raise PlayFileError("WAV data chunk comes before the fmt chunk")
            avail = len(data) - body
            # streaming writers leave 0 or 0xFFFFFFFF: trust the bytes actually present
            dsize = avail if size in (0, 0xFFFFFFFF) or size > avail else size
            return WavInfo(*fmt, data_offset=body, data_size=dsize)
        off = body + size + (size & 1)
    if fmt is None:
        raise PlayFileError("WAV file has no fmt chunk")
    raise PlayFileError("WAV file has no data chunk")


def read_wav(data: bytes) -> tuple[WavInfo, bytes]:
    info = parse_wav_header(data)
    return info, data[info.data_offset:info.data_offset + info.data_size]


def alaw_wav_header(data_size: int) -> bytes:
    """44-byte canonical header for A-law 8 kHz mono (REC-2, PR-FILE)."""
    return (
        b"RIFF" + struct.pack("<I", 36 + data_size) + b"WAVE"
        + b"fmt " + struct.pack("<IHHIIHH", 16, WAVE_FORMAT_ALAW, 1, 8000, 8000, 1, 8)
        + b"data" + struct.pack("<I", data_size)
    )


def alaw_wav_bytes(payload: bytes) -> bytes:
    return alaw_wav_header(len(payload)) + payload + (b"\x00" if len(payload) & 1 else b"")


class AlawWavWriter:
    """Incremental A-law WAV writer: header at open, appends, sizes patched on close."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._f: BinaryIO | None = None
        self.data_size = 0

    def write(self, alaw: bytes) -> None:
        if not alaw:
            return
        if self._f is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # unbuffered: each flush (every 0.5 s) reaches the file, so a crash loses little
            self._f = open(self.path, "wb", buffering=0)  # noqa: SIM115 - open across writes
            self._f.write(alaw_wav_header(0xFFFFFFFF - 36))
        self._f.write(alaw)
        self.data_size += len(alaw)

    def close(self) -> None:
        f, self._f = self._f, None
        if f is None:
            return
        try:
            if self.data_size & 1:
                f.write(b"\x00")  # RIFF chunks are word aligned
            f.seek(4)
            f.write(struct.pack("<I", 36 + self.data_size + (self.data_size & 1)))
            f.seek(40)
            f.write(struct.pack("<I", self.data_size))
        finally:
            f.close()

    @property
    def duration_s(self) -> float:
        return self.data_size / 8000.0
