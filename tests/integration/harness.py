"""Run the real daemon and real SIPp processes on 127.0.0.1 with free ports and bounded time.

Every process started here is ended by its PID in ``close``/``__exit__``; nothing else is
touched."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.paths import REPO

SCENARIOS = Path(__file__).resolve().parent / "scenarios"


def free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1 (and port+1 for SIPp's media sockets)."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind(("127.0.0.1", 0))
            port = u.getsockname()[1]
            if port % 2:
                continue
            try:
                with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                    t.bind(("127.0.0.1", port))
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u2:
                    u2.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port pair found")


def _ensure_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(f"{name} is not installed; `make test` installs it (Debian package)")
    return path


@dataclass
class Daemon:
    """``voicecall serve`` as a subprocess, ready once it prints its ``ready`` line."""

    config_text: str
    workdir: Path
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[str] | None = None
    output: list[str] = field(default_factory=list)
    _ready: threading.Event = field(default_factory=threading.Event)
    _reader: threading.Thread | None = None

    def start(self, timeout: float = 20.0) -> Daemon:
        cfg = self.workdir / "voicecall.toml"
        cfg.write_text(self.config_text, encoding="utf-8")
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        env.pop("VOICECALL_CONFIG", None)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "control_api.cli", "serve", "--config", str(cfg)],
            cwd=self.workdir, env={**env, "PYTHONPATH": str(REPO)},
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
        )
        self._ready = threading.Event()
        self._reader = threading.Thread(target=self._read_output, args=(self.proc,), daemon=True)
        self._reader.start()
        if self._ready.wait(timeout) and self.proc.poll() is None:
            return self
        self.stop()
        raise RuntimeError("daemon did not become ready:\n" + "".join(self.output[-50:]))

    def _read_output(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self.output.append(line)
            if "voicecall ready" in line:
                self._ready.set()

    def drain(self) -> str:
        """Output printed so far."""
        return "".join(self.output)

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        if self._reader is not None:
            self._reader.join(timeout=5)
        self.proc = None

    def __enter__(self) -> Daemon:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class SippResult:
    returncode: int
    stdout: str
    errors: str
    messages: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def explain(self) -> str:
        return (f"sipp exit {self.returncode}\n--- errors ---\n{self.errors[-4000:]}\n"
                f"--- stdout ---\n{self.stdout[-3000:]}\n--- messages ---\n{self.messages[-6000:]}")

    def count(self, pattern: str) -> int:
        return len(re.findall(pattern, self.messages))


class Sipp:
    """One SIPp process (UAC or UAS) with message and error traces in ``workdir``."""

    def __init__(self, workdir: Path, name: str, args: Sequence[str], *, port: int,
                 transport: str = "u1") -> None:
        self.workdir = workdir
        self.name = name
        self.port = port
        self.msg_file = workdir / f"{name}_messages.log"
        self.err_file = workdir / f"{name}_errors.log"
        self.args = [
            _ensure_tool("sipp"), *args,
            "-i", "127.0.0.1", "-p", str(port), "-t", transport,
            "-nostdin", "-trace_msg", "-message_file", str(self.msg_file),
            "-trace_err", "-error_file", str(self.err_file),
        ]
        self.proc: subprocess.Popen[str] | None = None

    def start(self, ready_timeout: float = 10.0) -> Sipp:
        self.proc = subprocess.Popen(self.args, cwd=self.workdir, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        # A loaded machine can take seconds to start SIPp; a request sent to a UAS that has
        # not bound its port yet is lost (or refused) and the call fails for the wrong
        # reason. Wait until its port is bound (or it exits: the caller sees that).
        deadline = time.monotonic() + ready_timeout
        while (time.monotonic() < deadline and self.proc.poll() is None
               and not _port_bound(self.port)):
            time.sleep(0.02)
        return self

    def wait(self, timeout: float = 60.0) -> SippResult:
        assert self.proc is not None
        try:
            out, _ = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate(timeout=5)
            out = (out or "") + "\n[harness: sipp killed after timeout]"
        rc = self.proc.returncode
        self.proc = None
        return SippResult(rc, out or "", _read(self.err_file), _read(self.msg_file))

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate(timeout=5)
        self.proc = None


def _port_bound(port: int) -> bool:
    """A socket (UDP, or TCP listening) has 127.0.0.1:``port`` or *:``port`` as local address."""
    suffix = f":{port:04X}"
    for table, listen_only in (("/proc/net/udp", False), ("/proc/net/tcp", True)):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            if len(f) > 3 and f[1].endswith(suffix) and (not listen_only or f[3] == "0A"):
                return True
    return False


def _read(p: Path) -> str:
    try:
        return p.read_text(errors="replace")
    except OSError:
        return ""


def _scenario_args(scenario: str | Path) -> list[str]:
    """A file in scenarios/, an absolute path, or the name of a SIPp built-in scenario."""
    s = str(scenario)
    if s.endswith(".xml"):
        p = Path(s)
        return ["-sf", str(p if p.is_absolute() else SCENARIOS / p)]
    return ["-sn", s]


def uas(workdir: Path, scenario: str | Path, *, port: int, transport: str = "u1",
        extra: Sequence[str] = (), calls: int = 1, timeout_s: int = 30) -> Sipp:
    scen = _scenario_args(scenario)
    return Sipp(workdir, f"uas_{port}", [*scen, "-m", str(calls), "-timeout", f"{timeout_s}s",
                                         "-timeout_error", *extra], port=port, transport=transport)


def uac(workdir: Path, scenario: str | Path, target: str, *, port: int, service: str,
        transport: str = "u1", extra: Sequence[str] = (), calls: int = 1,
        timeout_s: int = 30) -> Sipp:
    scen = _scenario_args(scenario)
    return Sipp(workdir, f"uac_{port}", [target, *scen, "-s", service, "-m", str(calls),
                                         "-timeout", f"{timeout_s}s", "-timeout_error",
                                         "-recv_timeout", "20s", *extra],
                port=port, transport=transport)


@contextlib.contextmanager
def running(*procs: Sipp) -> Iterator[None]:
    try:
        yield
    finally:
        for p in procs:
            p.stop()
