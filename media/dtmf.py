"""DTMF in every form a peer may use, sans-I/O.

* RFC 4733 telephone-events: :class:`TelephoneEventReceiver` turns packets into digits
  (one digit per event, keyed by the RTP timestamp, so repeated end packets, retransmits and
  a missing marker bit never produce a second digit) and :func:`telephone_event_packets`
  plans the packets for sending (marker on the first, three end packets).
* Inband tones: :class:`InbandDetector` (Goertzel power at the 8 DTMF frequencies, computed
  for a whole block at once with numpy) and :func:`dtmf_tone` to synthesise them.
* :class:`DigitCollector`: count, first-digit and inter-digit timeouts (DTMF-1..4), fed
  with digits and clock values.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

EVENTS = "0123456789*#ABCD"
DIGIT_TO_EVENT = {d: i for i, d in enumerate(EVENTS)}
LOW = (697.0, 770.0, 852.0, 941.0)
HIGH = (1209.0, 1336.0, 1477.0, 1633.0)
KEYPAD = ("123A", "456B", "789C", "*0#D")


def normalize_digit(digit: str) -> str:
    d = digit.strip().upper()
    if len(d) != 1 or d not in DIGIT_TO_EVENT:
        raise ValueError(f"not a DTMF digit: {digit!r}")
    return d


# --- RFC 4733 receive ----------------------------------------------------------------------


@dataclass(frozen=True)
class TelephoneEvent:
    event: int
    end: bool
    volume: int
    duration: int

    @property
    def digit(self) -> str | None:
        return EVENTS[self.event] if self.event < 16 else None


def parse_telephone_event(payload: bytes) -> TelephoneEvent | None:
    if len(payload) < 4:
        return None
    ev, flags, dur = struct.unpack_from("!BBH", payload)
    return TelephoneEvent(ev, bool(flags & 0x80), flags & 0x3F, dur)


def pack_telephone_event(event: int, end: bool, duration: int, volume: int = 10) -> bytes:
    return struct.pack("!BBH", event, (0x80 if end else 0) | (volume & 0x3F), duration & 0xFFFF)


class TelephoneEventReceiver:
    """Digits from RFC 4733 packets. A new event is recognised by a new RTP timestamp
    (RFC 4733 §2.5.1.2: all packets of one event share the timestamp), not by the marker
    bit, which may be lost with the first packet. Repeated end packets are absorbed.

    One exception: a sender replaying a capture may reuse the timestamp for a second
    press. When ``now`` is given, a non-end packet arriving more than ``REPRESS_GAP_S``
    after the previous event ended starts a new event (reordering never delays a packet
    that long, and nobody presses a key twice faster than that)."""

    REPRESS_GAP_S = 0.1

    def __init__(self) -> None:
        self._last_key: tuple[int, int, int] | None = None
        self._ended = False
        self._last_time = 0.0

    def on_packet(self, ssrc: int, timestamp: int, payload: bytes,
                  now: float | None = None) -> str | None:
        """Return the digit when this packet starts a new event, else ``None``."""
        ev = parse_telephone_event(payload)
        if ev is None or ev.digit is None:
            return None
        key = (ssrc, timestamp, ev.event)
        last_time, self._last_time = self._last_time, now or 0.0
        if key == self._last_key:
            repressed = (now is not None and self._ended and not ev.end
                         and now - last_time > self.REPRESS_GAP_S)
            if not repressed:
                self._ended = self._ended or ev.end
                return None
        self._last_key = key
        self._ended = ev.end
        return ev.digit


# --- RFC 4733 send ---------------------------------------------------------------------------


@dataclass(frozen=True)
class PlannedEvent:
    """One packet of an outgoing event: payload plus whether it carries the marker."""

    payload: bytes
    marker: bool


def telephone_event_packets(
    digit: str, duration_ms: int = 100, ptime_ms: int = 20, volume: int = 10
) -> list[PlannedEvent]:
    """Packets for one digit, one per ``ptime``: growing duration, marker on the first,
    then the end packet sent three times (RFC 4733 §2.5.1.4)."""
    event = DIGIT_TO_EVENT[normalize_digit(digit)]
    step = 8 * ptime_ms
    total = max(step, 8 * duration_ms)
    out: list[PlannedEvent] = []
    dur = step
    while dur < total:
        out.append(PlannedEvent(pack_telephone_event(event, False, dur, volume), not out))
        dur += step
    end = pack_telephone_event(event, True, total, volume)
    out.append(PlannedEvent(end, not out))
    out.extend(PlannedEvent(end, False) for _ in range(2))
    return out


# --- inband (Goertzel) -----------------------------------------------------------------------


def dtmf_tone(digit: str, duration_ms: int, *, rate: int = 8000, amplitude: float = 0.35,
              twist_db: float = 0.0) -> npt.NDArray[np.int16]:
    d = normalize_digit(digit)
    row = next(i for i, r in enumerate(KEYPAD) if d in r)
    col = KEYPAD[row].index(d)
    t = np.arange(int(rate * duration_ms / 1000)) / rate
    hi_gain = 10 ** (twist_db / 20)
    sig = np.sin(2 * np.pi * LOW[row] * t) + hi_gain * np.sin(2 * np.pi * HIGH[col] * t)
    sig *= amplitude * 32767 / (1 + hi_gain)
    return sig.astype(np.int16)


class InbandDetector:
    """DTMF detector over 8 kHz PCM. Power at each DTMF frequency is the Goertzel output
    |Σ x[n]·e^{-jωn}|², evaluated for all eight frequencies as one matrix product per
    block (no Python loop over samples). A digit is reported once, after it is seen in two
    consecutive blocks, and re-armed after a block without it."""

    BLOCK = 205  # 25.6 ms, the classic choice: bins land near all eight frequencies

    def __init__(self, rate: int = 8000, *, min_level_db: float = -35.0) -> None:
        n = np.arange(self.BLOCK)
        freqs = np.array(LOW + HIGH)
        self._basis = np.exp(-2j * np.pi * np.outer(freqs, n) / rate)
        self._window = np.hamming(self.BLOCK)
        self._buf = np.zeros(0, dtype=np.float64)
        # minimum per-tone amplitude as fraction of full scale
        self._min_power = (10 ** (min_level_db / 20) * 32767 * self.BLOCK / 4) ** 2
        self._candidate: str | None = None
        self._reported: str | None = None

    def feed(self, pcm: npt.NDArray[np.int16]) -> list[str]:
        self._buf = np.concatenate((self._buf, pcm.astype(np.float64)))
        digits: list[str] = []
        while len(self._buf) >= self.BLOCK:
            block, self._buf = self._buf[: self.BLOCK], self._buf[self.BLOCK:]
            d = self._classify(block)
            if d is not None and d == self._candidate and d != self._reported:
                digits.append(d)
                self._reported = d
            if d is None:
                self._reported = None
            self._candidate = d
        return digits

    def _classify(self, block: npt.NDArray[np.float64]) -> str | None:
        x = block * self._window
        power = np.abs(self._basis @ x) ** 2
        low, high = power[:4], power[4:]
        r, c = int(np.argmax(low)), int(np.argmax(high))
        pl, ph = low[r], high[c]
        if pl < self._min_power or ph < self._min_power:
            return None
        # twist: the two tones within 8 dB of each other (ITU-T Q.24 allows 4-8 dB)
        if pl > ph * 6.3 or ph > pl * 6.3:
            return None
        # each tone clearly above the other frequencies of its group (> 6 dB)
        if np.sort(low)[-2] * 4 > pl or np.sort(high)[-2] * 4 > ph:
            return None
        # the two tones carry most of the block's energy (rejects speech and noise)
        energy = float(np.dot(x, x)) * self.BLOCK / 2
        if (pl + ph) < 0.4 * energy:
            return None
        return KEYPAD[r][c]


# --- digit collection (DTMF-1..4) -----------------------------------------------------------


class DigitCollector:
    """Collect ``count`` digits. Times are seconds on the caller's monotonic clock.

    Finishes when ``count`` digits arrived, when no first digit came within
    ``first_digit_timeout`` of ``start``, or when ``inter_digit_timeout`` passes after a
    digit. The result is whatever was collected (possibly empty)."""

    def __init__(self, count: int, start: float, *, first_digit_timeout: float = 5.0,
                 inter_digit_timeout: float = 5.0) -> None:
        if not 1 <= count <= 32:
            raise ValueError("digit count must be 1..32 (DTMF-1)")
        self.count = count
        self.first_digit_timeout = first_digit_timeout
        self.inter_digit_timeout = inter_digit_timeout
        self.digits = ""
        self._deadline = start + first_digit_timeout
        self.timed_out = False

    @property
    def done(self) -> bool:
        return self.timed_out or len(self.digits) >= self.count

    @property
    def deadline(self) -> float:
        return self._deadline

    def on_digit(self, digit: str, now: float) -> bool:
        if self.done:
            return True
        self.digits += digit
        self._deadline = now + self.inter_digit_timeout
        return self.done

    def on_time(self, now: float) -> bool:
        if not self.done and now >= self._deadline:
            self.timed_out = True
        return self.done


def samples_for(ms: float, rate: int = 8000) -> int:
    return math.floor(rate * ms / 1000)
