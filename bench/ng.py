"""rtpengine's ng control protocol, for the anchor benchmark (bench/anchor.py).

An ng message is one UDP datagram: ``<cookie> <bencoded dictionary>``; the reply carries the
same cookie. The codec and the message builders are sans-I/O (unit-tested in
tests/unit/test_bench_ng.py); ``NgClient`` is a small blocking UDP client for a local
rtpengine, and ``Rtpengine`` starts one in userspace mode (no kernel forwarding table).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path


class BencodeError(ValueError):
    pass


def bencode(value: object) -> bytes:
    """Bencode has integers, byte strings, lists and dictionaries (byte-string keys, sorted);
    str is encoded as UTF-8 bytes."""
    out: list[bytes] = []
    _encode(value, out)
    return b"".join(out)


def _encode(v: object, out: list[bytes]) -> None:
    if isinstance(v, bool):  # bool is an int subclass; bencode has no booleans
        raise BencodeError("bencode has no booleans")
    if isinstance(v, int):
        out.append(b"i%de" % v)
    elif isinstance(v, (bytes, bytearray)):
        out.append(b"%d:" % len(v))
        out.append(bytes(v))
    elif isinstance(v, str):
        _encode(v.encode(), out)
    elif isinstance(v, (list, tuple)):
        out.append(b"l")
        for item in v:
            _encode(item, out)
        out.append(b"e")
    elif isinstance(v, Mapping):
        keys = [(k.encode() if isinstance(k, str) else k, k) for k in v]
        for kb, _ in keys:
            if not isinstance(kb, (bytes, bytearray)):
                raise BencodeError(f"dictionary key must be str or bytes, not {type(kb)}")
        out.append(b"d")
        for kb, k in sorted(keys, key=lambda p: p[0]):
            _encode(bytes(kb), out)
            _encode(v[k], out)
        out.append(b"e")
    else:
        raise BencodeError(f"cannot bencode {type(v).__name__}")


def bdecode(data: bytes) -> object:
    """Decode one complete bencoded value; byte strings come back as bytes, dictionary
    keys as str (ng keys are ASCII)."""
    value, end = _decode(data, 0)
    if end != len(data):
        raise BencodeError(f"trailing data at offset {end}")
    return value


_INT = re.compile(rb"i(0|-?[1-9]\d*)e")  # no leading zeros, no "-0"
_LEN = re.compile(rb"(0|[1-9]\d*):")


def _decode(data: bytes, i: int) -> tuple[object, int]:
    if i >= len(data):
        raise BencodeError("truncated")
    c = data[i:i + 1]
    if c == b"i":
        m = _INT.match(data, i)
        if m is None:
            raise BencodeError(f"bad integer at offset {i}")
        return int(m.group(1)), m.end()
    if c.isdigit():
        m = _LEN.match(data, i)
        if m is None:
            raise BencodeError(f"bad string length at offset {i}")
        n, start = int(m.group(1)), m.end()
        if start + n > len(data):
            raise BencodeError("truncated string")
        return data[start:start + n], start + n
    if c == b"l":
        items: list[object] = []
        i += 1
        while data[i:i + 1] != b"e":
            item, i = _decode(data, i)
            items.append(item)
        return items, i + 1
    if c == b"d":
        d: dict[str, object] = {}
        i += 1
        while data[i:i + 1] != b"e":
            key, i = _decode(data, i)
            if not isinstance(key, bytes):
                raise BencodeError("dictionary key is not a string")
            d[key.decode("utf-8", "replace")], i = _decode(data, i)
        return d, i + 1
    raise BencodeError(f"unexpected {c!r} at offset {i}")


# ---------------------------------------------------------------------------------------------
# ng messages
# ---------------------------------------------------------------------------------------------


def ng_message(cookie: str, command: Mapping[str, object]) -> bytes:
    if not cookie or " " in cookie:
        raise ValueError("the cookie is one non-empty token")
    return cookie.encode() + b" " + bencode(command)


def ng_parse(datagram: bytes) -> tuple[str, dict[str, object]]:
    cookie, sep, body = datagram.partition(b" ")
    if not sep:
        raise BencodeError("no cookie separator")
    value = bdecode(body)
    if not isinstance(value, dict):
        raise BencodeError("ng body is not a dictionary")
    return cookie.decode("ascii", "replace"), value


def offer(call_id: str, from_tag: str, sdp: str, **extra: object) -> dict[str, object]:
    return {"command": "offer", "call-id": call_id, "from-tag": from_tag, "sdp": sdp, **extra}


def answer(call_id: str, from_tag: str, to_tag: str, sdp: str,
           **extra: object) -> dict[str, object]:
    return {"command": "answer", "call-id": call_id, "from-tag": from_tag, "to-tag": to_tag,
            "sdp": sdp, **extra}


def delete(call_id: str, from_tag: str, **extra: object) -> dict[str, object]:
    return {"command": "delete", "call-id": call_id, "from-tag": from_tag, **extra}


def ping() -> dict[str, object]:
    return {"command": "ping"}


def sdp_for(port: int, ip: str = "127.0.0.1", session: int = 1) -> str:
    """A plain PCMA offer/answer for one audio stream at ip:port (what bench/media.py's
    generator sockets receive)."""
    return (f"v=0\r\no=gen {session} 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n"
            f"m=audio {port} RTP/AVP 8\r\na=rtpmap:8 PCMA/8000\r\na=sendrecv\r\n")


_MEDIA_PORT = re.compile(r"^m=audio (\d+) ", re.M)


def sdp_audio_port(sdp: str | bytes) -> int:
    text = sdp.decode() if isinstance(sdp, bytes) else sdp
    m = _MEDIA_PORT.search(text)
    if m is None:
        raise ValueError("no m=audio line in the SDP")
    return int(m.group(1))


class NgError(RuntimeError):
    pass


@dataclass
class NgClient:
    """Blocking ng client over UDP (one outstanding request at a time)."""

    address: tuple[str, int]
    timeout: float = 2.0
    retries: int = 3
    _sock: socket.socket = field(init=False)
    _cookies: itertools.count[int] = field(default_factory=itertools.count, init=False)

    def __post_init__(self) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.connect(self.address)
        self._sock.settimeout(self.timeout)
        self._prefix = f"vc{os.getpid()}_"

    def request(self, command: Mapping[str, object]) -> dict[str, object]:
        cookie = f"{self._prefix}{next(self._cookies)}"
        msg = ng_message(cookie, command)
        for _ in range(self.retries):
            self._sock.send(msg)
            deadline = time.monotonic() + self.timeout
            while time.monotonic() < deadline:
                try:
                    data = self._sock.recv(65535)
                except (TimeoutError, ConnectionRefusedError):
                    break
                got, reply = ng_parse(data)
                if got != cookie:
                    continue  # a late reply to an earlier, retried request
                if reply.get("result") not in (b"ok", b"pong"):
                    raise NgError(f"{command.get('command')}: {reply}")
                return reply
        raise NgError(f"no reply from rtpengine at {self.address} to {command.get('command')}")

    def close(self) -> None:
        self._sock.close()


@dataclass
class Rtpengine:
    """A userspace rtpengine (``--table=-1``) on 127.0.0.1, ended by its PID."""

    ng_port: int
    port_min: int
    port_max: int
    workdir: Path
    threads: int = 0  # 0: rtpengine's default (one per CPU)
    proc: subprocess.Popen[bytes] | None = None

    @staticmethod
    def binary() -> str | None:
        return shutil.which("rtpengine") or (
            "/usr/bin/rtpengine" if Path("/usr/bin/rtpengine").exists() else None)

    def argv(self, binary: str) -> list[str]:
        argv = [binary, "--table=-1", "--config-file=none", "--interface=127.0.0.1",
                f"--listen-ng=127.0.0.1:{self.ng_port}", "--foreground", "--log-stderr",
                "--log-level=4", f"--port-min={self.port_min}", f"--port-max={self.port_max}",
                "--endpoint-learning=immediate", "--timeout=600", "--delete-delay=0",
                f"--pidfile={self.workdir / 'rtpengine.pid'}"]
        if self.threads:
            argv.append(f"--num-threads={self.threads}")
        return argv

    def start(self, timeout: float = 10.0) -> NgClient:
        binary = self.binary()
        if binary is None:
            raise RuntimeError("rtpengine not installed (./.ci/apt-install rtpengine-daemon)")
        log = open(self.workdir / "rtpengine.log", "wb")  # noqa: SIM115 - the child owns it
        try:
            self.proc = subprocess.Popen(self.argv(binary), stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL)
        finally:
            log.close()
        client = NgClient(("127.0.0.1", self.ng_port), timeout=0.5, retries=1)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            with contextlib.suppress(NgError):
                client.request(ping())
                client.timeout, client.retries = 5.0, 3
                client._sock.settimeout(5.0)
                return client
        client.close()
        self.stop()
        raise RuntimeError("rtpengine did not answer ping:\n" + self.log_tail())

    def log_tail(self, n: int = 20) -> str:
        try:
            lines = (self.workdir / "rtpengine.log").read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:])

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
