"""Call recording (REC-1..4): both directions mixed into one A-law 8 kHz mono WAV.

:class:`RecordingMixer` is the sans-I/O core. Each direction's A-law payloads are placed on
a common sample timeline by arrival time: a packet that arrives after a gap is preceded by
silence (so the two voices stay aligned and lost/absent audio becomes silence), packets in
a burst are appended back to back. ``flush(now)`` mixes everything older than a short
settling delay and returns A-law bytes to append to the file.

:class:`Recorder` is the adapter the engine drives: it receives payloads from the
endpoints, is flushed a few times a second by the media clock, writes incrementally with
:class:`~media.wav.AlawWavWriter`, and on ``stop()`` patches the sizes, deletes the file
when the recording is shorter than 3 s (REC-3) and reports the duration.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import structlog

from media import g711
from media.wav import AlawWavWriter

log = structlog.get_logger("media.recorder")

RATE = 8000
MIN_RECORDING_S = 3.0  # REC-3
WAV_HEADER_BYTES = 44  # alaw_wav_header(): RIFF, fmt (16 bytes) and data chunk headers


class RecordingMixer:
    """Mix two A-law streams placed on a timeline of samples since the start.

    ``slack`` is how far (in samples) a direction may fall behind real time before a gap is
    filled with silence; ``settle`` is how long samples wait before being mixed, so that a
    slightly late packet of the other direction still lands at its place."""

    def __init__(self, *, slack: int = 480, settle: int = 1600) -> None:
        self._slack = slack
        self._settle = settle
        self._written = 0  # samples already mixed and handed out
        self._bufs = [bytearray(), bytearray()]
        t = g711.tables()
        self._dec = t.alaw_decode.astype(np.int32)
        self._enc = t.alaw_encode

    @property
    def written(self) -> int:
        return self._written

    def add(self, direction: int, alaw: bytes, now: int) -> None:
        """``alaw`` arrived on ``direction`` (0 or 1) at sample time ``now``."""
        buf = self._bufs[direction]
        end = self._written + len(buf)
        start_wanted = now - len(alaw)
        if end < start_wanted - self._slack:
            buf.extend(bytes([g711.ALAW_SILENCE]) * (start_wanted - end))
        buf.extend(alaw)

    def flush(self, now: int, *, final: bool = False) -> bytes:
        upto = (self._written + max(len(b) for b in self._bufs)) if final else now - self._settle
        n = upto - self._written
        if n <= 0:
            return b""
        mixed = np.zeros(n, dtype=np.int32)
        for buf in self._bufs:
            take = min(n, len(buf))
            if take:
                mixed[:take] += self._dec[np.frombuffer(buf, dtype=np.uint8, count=take)]
                del buf[:take]
        np.clip(mixed, -32768, 32767, out=mixed)
        self._written = upto
        return self._enc[mixed.astype(np.int16).view(np.uint16)].tobytes()


@dataclass(frozen=True)
class RecordingResult:
    """``path`` is None when no file was kept (shorter than 3 s, REC-3)."""

    path: Path | None
    duration_s: float


class Recorder:
    """A running recording of a two-leg call. Create it with ``MediaEngine.record``."""

    def __init__(self, path: Path, start_time: float, *, min_duration_s: float = MIN_RECORDING_S,
                 time_fn: Callable[[], float] | None = None,
                 detach: Callable[[Recorder], None] | None = None,
                 on_finish: Callable[[Recorder, RecordingResult], None] | None = None) -> None:
        self.path = path
        self._start = start_time
        self._time_fn = time_fn
        self._detach = detach
        self._on_finish = on_finish
        self.failed = False  # a write failed: the file (if any) is incomplete
        self._mixer = RecordingMixer()
        self._writer = AlawWavWriter(path)
        self._min = min_duration_s
        self._stopped = False
        self._result: RecordingResult | None = None

    def _now_samples(self, now: float) -> int:
        return int((now - self._start) * RATE)

    def feed(self, direction: int, alaw: bytes, now: float) -> None:
        if not self._stopped:
            self._mixer.add(direction, alaw, self._now_samples(now))

    def flush(self, now: float) -> None:
        if self._stopped:
            return
        try:
            self._writer.write(self._mixer.flush(self._now_samples(now)))
        except OSError as e:
            log.error("recording_write_failed", path=str(self.path), error=str(e))
            self.failed = True
            self._stopped = True
            with contextlib.suppress(OSError):
                self._writer.close()

    @property
    def duration_s(self) -> float:
        return self._mixer.written / RATE

    async def stop(self) -> RecordingResult:
        """Stop recording; the result's ``path`` is None when the file was not kept (< 3 s).
        Calling it again returns the same result."""
        if self._detach is not None:
            self._detach(self)
            self._detach = None
        now = self._time_fn() if self._time_fn is not None else self._start
        return self.finish(now)

    @property
    def stopped(self) -> bool:
        return self._stopped

    def finish(self, now: float) -> RecordingResult:
        """Stop synchronously: final mix, size patch, REC-3 deletion."""
        if self._result is not None:
            return self._result
        # the talk time is wall time since the start; pad the tail with silence to it
        elapsed = self._now_samples(now)
        if not self._stopped:
            self._stopped = True
            try:
                self._writer.write(self._mixer.flush(elapsed, final=True))
                tail = elapsed - self._mixer.written
                if tail > 0:
                    self._writer.write(bytes([g711.ALAW_SILENCE]) * tail)
            except OSError as e:
                log.error("recording_write_failed", path=str(self.path), error=str(e))
                self.failed = True
        try:
            self._writer.close()
        except OSError as e:  # the size patch failed: the header lies, the file is broken
            log.error("recording_write_failed", path=str(self.path), error=str(e))
            self.failed = True
        duration = self._writer.data_size / RATE
        kept: Path | None = self.path
        if duration < self._min or self._writer.data_size == 0:
            # OSError, not only FileNotFoundError: after a failed write the path may not
            # even be reachable (its directory could not be created), and stop() must not
            # raise into the call's teardown
            with contextlib.suppress(OSError):
                self.path.unlink()
            kept = None
        self._result = RecordingResult(kept, round(duration, 3))
        log.info("recording_finished", path=str(self.path), kept=kept is not None,
                 failed=self.failed, duration_s=self._result.duration_s)
        if self._on_finish is not None:
            self._on_finish(self, self._result)
        return self._result

    @property
    def file_bytes(self) -> int:
        """Size of the WAV file as written (header, samples, RIFF pad byte)."""
        size = self._writer.data_size
        return WAV_HEADER_BYTES + size + (size & 1) if size else 0
