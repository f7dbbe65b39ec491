"""What a SIPp party actually hears: a passive capture (AF_PACKET on ``lo``, the test runs
as root in this environment) of the RTP sent to its media port, decoded from PCMA, and
tone analysis of it by arrival time."""

from __future__ import annotations

import socket
import struct
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from media.g711 import alaw_decode

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4


@dataclass
class RtpSniffer:
    port: int                                            # UDP destination port to watch
    packets: list[tuple[float, int, bytes]] = field(default_factory=list)  # (t, pt, payload)
    _sock: socket.socket | None = None
    _thread: threading.Thread | None = None
    _stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> RtpSniffer:
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.ntohs(ETH_P_ALL))
        s.bind(("lo", 0))
        s.settimeout(0.2)
        self._sock = s
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            try:
                frame, addr = self._sock.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            if addr[2] == PACKET_OUTGOING or len(frame) < 14 + 20 + 8 + 12:
                continue
            if frame[12:14] != b"\x08\x00" or frame[14 + 9] != 17:
                continue
            ihl = (frame[14] & 0x0F) * 4
            udp = 14 + ihl
            dport = struct.unpack("!H", frame[udp + 2:udp + 4])[0]
            if dport != self.port:
                continue
            rtp = frame[udp + 8:]
            if len(rtp) < 12 or rtp[0] >> 6 != 2:
                continue
            cc = rtp[0] & 0x0F
            self.packets.append((time.time(), rtp[1] & 0x7F, rtp[12 + 4 * cc:]))

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        if self._sock is not None:
            self._sock.close()

    def audio(self, t0: float = 0.0, t1: float = float("inf")) -> np.ndarray:
        """PCMA audio (as float -1..1) received between t0 and t1 (wall clock)."""
        chunks = [p for t, pt, p in list(self.packets) if t0 <= t < t1 and pt == 8]
        if not chunks:
            return np.zeros(0)
        return alaw_decode(b"".join(chunks)).astype(np.float64) / 32768.0

    def count(self, t0: float = 0.0, t1: float = float("inf")) -> int:
        return sum(1 for t, pt, _ in list(self.packets) if t0 <= t < t1 and pt == 8)


def tone_energy(x: np.ndarray, freq: float, *, rate: int = 8000, bw: float = 25.0) -> float:
    """Share of the signal's energy within ±bw Hz of ``freq`` (0 when silent)."""
    if len(x) < 160:
        return 0.0
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x)))) ** 2
    freqs = np.fft.rfftfreq(len(x), 1 / rate)
    total = float(spec.sum())
    if total <= 1e-9:
        return 0.0
    return float(spec[(freqs > freq - bw) & (freqs < freq + bw)].sum()) / total


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x ** 2))) if len(x) else 0.0
