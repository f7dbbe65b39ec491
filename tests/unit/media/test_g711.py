"""G.711 tables against the reference coder (CPython's audioop, present in 3.11)."""

from __future__ import annotations

import warnings

import numpy as np

from media import g711

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

ALL = np.arange(-32768, 32768, dtype=np.int32).astype(np.int16)
CODES = bytes(range(256))


def test_alaw_matches_reference_for_every_sample_and_code() -> None:
    assert g711.alaw_encode(ALL) == audioop.lin2alaw(ALL.tobytes(), 2)
    assert g711.alaw_decode(CODES).tobytes() == audioop.alaw2lin(CODES, 2)


def test_ulaw_matches_reference_for_every_sample_and_code() -> None:
    assert g711.ulaw_encode(ALL) == audioop.lin2ulaw(ALL.tobytes(), 2)
    assert g711.ulaw_decode(CODES).tobytes() == audioop.ulaw2lin(CODES, 2)


def test_transcode_tables_equal_decode_then_encode() -> None:
    assert g711.alaw_to_ulaw(CODES) == g711.ulaw_encode(g711.alaw_decode(CODES))
    assert g711.ulaw_to_alaw(CODES) == g711.alaw_encode(g711.ulaw_decode(CODES))
    assert g711.transcode("PCMA", "PCMA", b"\x01") == b"\x01"


def test_silence_codes_decode_to_near_zero() -> None:
    assert abs(int(g711.alaw_decode(bytes([g711.ALAW_SILENCE]))[0])) <= 8
    assert int(g711.ulaw_decode(bytes([g711.ULAW_SILENCE]))[0]) == 0
