"""G.711 A-law and µ-law through lookup tables (ITU-T G.711).

Decoding is a 256-entry table, encoding a 65,536-entry table indexed by the 16-bit sample
reinterpreted as unsigned; transcoding A-law ↔ µ-law is a 256-byte ``bytes.translate``
table, so the relay path never leaves C code. The tables are built once per process by
vectorised numpy code (no loops over samples) and kept in a read-only holder.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np
import numpy.typing as npt

Int16Array = npt.NDArray[np.int16]

ALAW_SILENCE = 0xD5  # A-law code of 0 (even-bit inversion of 0x80)
ULAW_SILENCE = 0xFF


def _alaw_decode_all() -> Int16Array:
    code = np.arange(256, dtype=np.int32) ^ 0x55
    sign = code & 0x80
    exp = (code >> 4) & 0x07
    mant = code & 0x0F
    mag = np.where(exp == 0, (mant << 4) + 8, ((mant << 4) + 0x108) << np.maximum(exp - 1, 0))
    return np.where(sign != 0, mag, -mag).astype(np.int16)


def _ulaw_decode_all() -> Int16Array:
    code = ~np.arange(256, dtype=np.int32) & 0xFF
    sign = code & 0x80
    exp = (code >> 4) & 0x07
    mant = code & 0x0F
    mag = (((mant << 3) + 0x84) << exp) - 0x84
    return np.where(sign != 0, -mag, mag).astype(np.int16)


def _alaw_encode_all() -> npt.NDArray[np.uint8]:
    pcm = np.arange(65536, dtype=np.int32)
    pcm = np.where(pcm >= 32768, pcm - 65536, pcm)  # index = sample as uint16
    mask = np.where(pcm >= 0, 0xD5, 0x55)
    mag = np.where(pcm >= 0, pcm, -pcm - 1)
    mag = np.minimum(mag, 32767) >> 3  # 13-bit magnitude
    # segment = position of the highest set bit above bit 4
    seg = np.zeros_like(mag)
    for s, limit in enumerate((0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF)):
        seg = np.where((mag > limit) & (seg == s), s + 1, seg)
    seg = np.minimum(seg, 8)
    out = np.where(
        seg >= 8,
        0x7F,
        (seg << 4) | np.where(seg < 2, (mag >> 1) & 0x0F, (mag >> seg) & 0x0F),
    )
    return ((out ^ mask) & 0xFF).astype(np.uint8)


def _ulaw_encode_all() -> npt.NDArray[np.uint8]:
    pcm = np.arange(65536, dtype=np.int32)
    pcm = np.where(pcm >= 32768, pcm - 65536, pcm)
    mask = np.where(pcm < 0, 0x7F, 0xFF)
    q = pcm >> 2  # arithmetic shift first, as the reference coder does, then magnitude
    mag = np.minimum(np.where(q < 0, -q, q), 8159) + 0x21  # 14-bit magnitude + bias (33)
    seg = np.zeros_like(mag)
    for s, limit in enumerate((0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF)):
        seg = np.where((mag > limit) & (seg == s), s + 1, seg)
    out = np.where(seg >= 8, 0x7F, (seg << 4) | ((mag >> (seg + 1)) & 0x0F))
    return ((out ^ mask) & 0xFF).astype(np.uint8)


@dataclass(frozen=True)
class G711Tables:
    alaw_decode: Int16Array
    ulaw_decode: Int16Array
    alaw_encode: npt.NDArray[np.uint8]
    ulaw_encode: npt.NDArray[np.uint8]
    alaw_to_ulaw: bytes  # for bytes.translate
    ulaw_to_alaw: bytes


@cache
def tables() -> G711Tables:
    ad, ud = _alaw_decode_all(), _ulaw_decode_all()
    ae, ue = _alaw_encode_all(), _ulaw_encode_all()
    for t in (ad, ud, ae, ue):
        t.setflags(write=False)
    a2u = ue[ad.view(np.uint16)].tobytes()
    u2a = ae[ud.view(np.uint16)].tobytes()
    return G711Tables(ad, ud, ae, ue, a2u, u2a)


def alaw_decode(data: bytes) -> Int16Array:
    return tables().alaw_decode[np.frombuffer(data, dtype=np.uint8)]


def ulaw_decode(data: bytes) -> Int16Array:
    return tables().ulaw_decode[np.frombuffer(data, dtype=np.uint8)]


def alaw_encode(pcm: npt.NDArray[np.int16]) -> bytes:
    return tables().alaw_encode[np.asarray(pcm, dtype=np.int16).view(np.uint16)].tobytes()


def ulaw_encode(pcm: npt.NDArray[np.int16]) -> bytes:
    return tables().ulaw_encode[np.asarray(pcm, dtype=np.int16).view(np.uint16)].tobytes()


def alaw_to_ulaw(data: bytes) -> bytes:
    return data.translate(tables().alaw_to_ulaw)


def ulaw_to_alaw(data: bytes) -> bytes:
    return data.translate(tables().ulaw_to_alaw)


def decode(codec: str, data: bytes) -> Int16Array:
    return alaw_decode(data) if codec == "PCMA" else ulaw_decode(data)


def encode(codec: str, pcm: npt.NDArray[np.int16]) -> bytes:
    return alaw_encode(pcm) if codec == "PCMA" else ulaw_encode(pcm)


def transcode(src: str, dst: str, data: bytes) -> bytes:
    if src == dst:
        return data
    return alaw_to_ulaw(data) if src == "PCMA" else ulaw_to_alaw(data)


def silence(codec: str, samples: int) -> bytes:
    return bytes([ALAW_SILENCE if codec == "PCMA" else ULAW_SILENCE]) * samples
