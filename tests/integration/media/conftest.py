"""Fixtures: a running MediaEngine on 127.0.0.1 and raw UDP peers that play the far end."""

from __future__ import annotations

import asyncio
import random
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from media.config import MediaConfig
from media.engine import MediaEngine
from media.rtp import RtpPacket, parse_rtp


class Peer:
    """A far end: one UDP socket for RTP (and one for RTCP on port+1)."""

    def __init__(self) -> None:
        for _ in range(100):
            rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            rtcp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                rtp.bind(("127.0.0.1", 0))
                port = rtp.getsockname()[1]
                if port % 2:
                    raise OSError
                rtcp.bind(("127.0.0.1", port + 1))
            except OSError:
                rtp.close()
                rtcp.close()
                continue
            break
        else:
            raise RuntimeError("no free port pair")
        rtp.setblocking(False)
        rtcp.setblocking(False)
        self.sock, self.rtcp, self.port = rtp, rtcp, port
        self.ssrc = random.getrandbits(32)
        self.seq = random.getrandbits(16)
        self.ts = random.getrandbits(32)

    def sdp(self, *formats: str, extra: str = "", port: int | None = None) -> str:
        fmts = formats or ("8", "0", "101")
        lines = [
            "v=0", "o=peer 1 1 IN IP4 127.0.0.1", "s=peer", "c=IN IP4 127.0.0.1", "t=0 0",
            f"m=audio {port or self.port} RTP/AVP {' '.join(fmts)}",
        ]
        if "101" in fmts:
            lines.append("a=rtpmap:101 telephone-event/8000")
        return "\r\n".join(lines) + "\r\n" + extra

    def send(self, addr: tuple[str, int], payload: bytes, pt: int = 8, *, marker: bool = False,
             ts: int | None = None) -> None:
        pkt = RtpPacket(pt, self.seq, self.ts if ts is None else ts, self.ssrc, payload, marker)
        self.sock.sendto(pkt.pack(), addr)
        self.seq = (self.seq + 1) & 0xFFFF
        self.ts = (self.ts + 160) & 0xFFFFFFFF

    async def recv(self, timeout: float = 2.0, *, rtcp: bool = False) -> bytes:
        loop = asyncio.get_running_loop()
        sock = self.rtcp if rtcp else self.sock
        data = await asyncio.wait_for(loop.sock_recv(sock, 4096), timeout)
        return data

    async def packets(self, n: int, timeout: float = 5.0) -> list[RtpPacket]:
        out: list[RtpPacket] = []
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while len(out) < n:
            remaining = end - loop.time()
            if remaining <= 0:
                break
            try:
                data = await self.recv(remaining)
            except TimeoutError:
                break
            p = parse_rtp(data)
            if p is not None:
                out.append(p)
        return out

    async def drain(self, quiet: float = 0.15) -> list[RtpPacket]:
        out: list[RtpPacket] = []
        while True:
            try:
                data = await self.recv(quiet)
            except TimeoutError:
                return out
            p = parse_rtp(data)
            if p is not None:
                out.append(p)

    def close(self) -> None:
        self.sock.close()
        self.rtcp.close()


def free_range(width: int = 40) -> str:
    for _ in range(200):
        base = random.randrange(40000, 60000, 2)
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.bind(("127.0.0.1", base))
        except OSError:
            continue
        return f"{base}-{base + width - 1}"
    raise RuntimeError("no free port range")


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[MediaEngine]:
    eng = MediaEngine(MediaConfig(rtp_ports=free_range(), rtp_timeout_s=0.5),
                      bind_ip="127.0.0.1", advertise_ip="127.0.0.1", data_dir=tmp_path)
    await eng.start(default_prompts=False)
    yield eng
    await eng.stop()


@pytest.fixture
def peers() -> Iterator[Callable[[], Peer]]:
    made: list[Peer] = []

    def factory() -> Peer:
        p = Peer()
        made.append(p)
        return p

    yield factory
    for p in made:
        p.close()


def alaw_ramp(n: int) -> bytes:
    """Distinct-looking A-law bytes so order and completeness can be checked."""
    return bytes((i * 7 + (i >> 8)) & 0xFF for i in range(n))

