"""A small driver for headless baresip 1.0 (Debian package) softphones in tests.

Each instance gets its own config directory (``-f``), listens for SIP on 127.0.0.1 only,
plays a WAV file as its microphone (``aufile``), has no audio player (no player module is
loaded, so received audio is decoded and dropped), speaks G.711, and is driven over
``ctrl_tcp``: netstring-framed JSON commands in, command responses and events out
(``{"event": true, "type": "REGISTER_OK", ...}``). DNS is pointed at 127.0.0.1 so nothing
leaves the loopback interface.

The process is ended by its PID in :meth:`Baresip.stop`.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MODULES = Path("/usr/lib/baresip/modules")


def netstring(payload: bytes) -> bytes:
    return str(len(payload)).encode() + b":" + payload + b","


class NetstringReader:
    """Splits a byte stream into netstring payloads."""

    def __init__(self) -> None:
        self.buf = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        self.buf += data
        out: list[bytes] = []
        while True:
            colon = self.buf.find(b":")
            if colon < 0:
                if len(self.buf) > 10:
                    raise ValueError(f"bad netstring prefix {bytes(self.buf[:20])!r}")
                return out
            length = int(self.buf[:colon])
            end = colon + 1 + length
            if len(self.buf) < end + 1:
                return out
            if self.buf[end:end + 1] != b",":
                raise ValueError("netstring without ','")
            out.append(bytes(self.buf[colon + 1:end]))
            del self.buf[:end + 1]


def _port_pair() -> int:
    """An even port P with P and P+1 free for both UDP and TCP on 127.0.0.1."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        if port % 2 or port > 65000:
            continue
        try:
            for p in (port, port + 1):
                for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
                    with socket.socket(socket.AF_INET, kind) as s:
                        s.bind(("127.0.0.1", p))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair")


def make_wav(path: Path, seconds: float = 3.0) -> Path:
    """A 8 kHz mono 16-bit tone (sox), the softphone's microphone."""
    sox = shutil.which("sox")
    if sox is None:
        raise RuntimeError("sox is not installed (Debian package sox)")
    subprocess.run([sox, "-n", "-r", "8000", "-c", "1", "-b", "16", str(path), "synth",
                    str(seconds), "sine", "440", "vol", "0.3"], check=True, timeout=30)
    return path


@dataclass
class Baresip:
    """One headless baresip process registered as ``user`` to ``registrar`` (host:port)."""

    workdir: Path
    name: str
    user: str
    password: str
    registrar: str            # "127.0.0.1:5060"
    wav: Path
    auto_answer: bool = False
    account_params: str = ""
    sip_port: int = 0         # chosen in start(): UDP/TCP here, TLS on sip_port + 1
    ctrl_port: int = 0
    rtp_port: int = 0         # RTP here, RTCP on rtp_port + 1
    account_line: str = ""
    proc: subprocess.Popen[bytes] | None = None
    events: list[dict[str, Any]] = field(default_factory=list)
    responses: list[dict[str, Any]] = field(default_factory=list)
    _sock: socket.socket | None = None
    _reader: threading.Thread | None = None
    _cond: threading.Condition = field(default_factory=threading.Condition)

    @property
    def confdir(self) -> Path:
        return self.workdir / f"baresip_{self.name}"

    @property
    def log_path(self) -> Path:
        return self.workdir / f"baresip_{self.name}.log"

    @property
    def aor(self) -> str:
        return f"sip:{self.user}@{self.registrar}"

    def write_config(self) -> None:
        d = self.confdir
        d.mkdir(parents=True, exist_ok=True)
        (d / "config").write_text(f"""
poll_method\t\tepoll
sip_listen\t\t127.0.0.1:{self.sip_port}
net_interface\t\t127.0.0.1
dns_server\t\t127.0.0.1:53
call_local_timeout\t30
call_max_calls\t\t4
audio_source\t\taufile,{self.wav}
audio_alert\t\taufile,{self.wav}
audio_level\t\tno
rtp_ports\t\t{self.rtp_port}-{self.rtp_port + 1}
rtp_timeout\t\t0
jitter_buffer_delay\t1-5
module_path\t\t{MODULES}
module\t\t\tg711.so
module\t\t\taufile.so
module_tmp\t\taccount.so
module_app\t\tmenu.so
module_app\t\tctrl_tcp.so
ctrl_tcp_listen\t\t127.0.0.1:{self.ctrl_port}
""", encoding="utf-8")
        params = f";auth_pass={self.password};regint=300;audio_codecs=PCMA,PCMU"
        if self.auto_answer:
            params += ";answermode=auto"
        params += self.account_params
        self.account_line = f"<sip:{self.user}@{self.registrar};transport=udp>{params}"
        # No account at start-up: it is created over ctrl_tcp (``uanew``) once we listen,
        # so the REGISTER_OK/REGISTER_FAIL event is not emitted before we are connected.
        (d / "accounts").write_text("", encoding="utf-8")
        (d / "contacts").write_text("", encoding="utf-8")

    def register(self, timeout: float = 10.0) -> dict[str, Any]:
        """Create the account (baresip REGISTERs at once); the REGISTER_OK or REGISTER_FAIL
        event that follows."""
        self.command("uanew", self.account_line, token=f"uanew-{self.name}")
        return self._wait(lambda: next((e for e in self.events if e.get("type") in
                                        ("REGISTER_OK", "REGISTER_FAIL")), None),
                          timeout, "REGISTER_OK/REGISTER_FAIL")

    def start(self, timeout: float = 10.0, attempts: int = 3) -> Baresip:
        """Start on fresh ports; retried when a port found free was taken meanwhile."""
        for attempt in range(attempts):
            self.sip_port, self.ctrl_port, self.rtp_port = _port_pair(), _port_pair(), _port_pair()
            try:
                return self._start(timeout)
            except RuntimeError as e:
                if "in use" not in str(e).lower() or attempt + 1 == attempts:
                    raise
        raise AssertionError("unreachable")

    def _start(self, timeout: float) -> Baresip:
        self.write_config()
        log = self.log_path.open("wb")
        self.proc = subprocess.Popen(["baresip", "-f", str(self.confdir)], cwd=self.workdir,
                                     stdin=subprocess.DEVNULL, stdout=log,
                                     stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                self.proc = None
                raise RuntimeError(f"baresip {self.name} exited:\n{self.log()}")
            try:
                self._sock = socket.create_connection(("127.0.0.1", self.ctrl_port), timeout=1)
                break
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"baresip {self.name}: no ctrl_tcp:\n{self.log()}") from None
                time.sleep(0.1)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        return self

    def _read(self) -> None:
        sock = self._sock
        assert sock is not None
        sock.settimeout(None)
        reader = NetstringReader()
        while True:
            try:
                data = sock.recv(65536)
            except OSError:
                return
            if not data:
                return
            for payload in reader.feed(data):
                msg = json.loads(payload.decode("utf-8", "replace"))
                with self._cond:
                    if msg.get("event"):
                        self.events.append(msg)
                    else:
                        self.responses.append(msg)
                    self._cond.notify_all()

    def command(self, command: str, params: str = "", token: str = "t",
                timeout: float = 5.0) -> dict[str, Any]:
        """Send a ctrl_tcp command and wait for its response (matched by token)."""
        assert self._sock is not None
        body = json.dumps({"command": command, "params": params, "token": token}).encode()
        self._sock.sendall(netstring(body))
        return self._wait(lambda: next((r for r in self.responses
                                        if r.get("token") == token), None), timeout,
                          f"response to {command}")

    def wait_event(self, type_: str, timeout: float = 10.0,
                   pred: Callable[[dict[str, Any]], bool] = lambda e: True) -> dict[str, Any]:
        return self._wait(lambda: next((e for e in self.events
                                        if e.get("type") == type_ and pred(e)), None),
                          timeout, f"event {type_}")

    def _wait(self, find: Callable[[], dict[str, Any] | None], timeout: float,
              what: str) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while (found := find()) is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(
                        f"baresip {self.name}: no {what} within {timeout} s; events: "
                        f"{[e.get('type') for e in self.events]}\n{self.log()[-3000:]}")
                self._cond.wait(left)
        return found

    def event_types(self) -> list[str]:
        with self._cond:
            return [str(e.get("type")) for e in self.events]

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
            self._sock = None
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(timeout=5)
            self.proc = None
        if self._reader is not None:
            self._reader.join(timeout=2)
            self._reader = None
