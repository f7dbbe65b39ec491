"""Kamailio run from the deploy configuration (deploy/kamailio/kamailio.cfg) on 127.0.0.1,
with the test's sockets and a dispatcher list generated from deploy/kamailio/dispatcher.list
(same columns, destinations replaced by the test's nodes). Started and stopped by its PID."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.paths import REPO

DEPLOY = REPO / "deploy" / "kamailio"
KAMAILIO = "/usr/sbin/kamailio"
KAMCMD = "/usr/sbin/kamcmd"

_DEST = re.compile(r"^(\s*\d+\s+)sip:\S+(.*)$")
_TARGET = re.compile(r"URI:\s*(\S+)\s+FLAGS:\s*(\S+)")


def dispatcher_list(node_ports: list[int], deploy_list: Path = DEPLOY / "dispatcher.list") -> str:
    """The deploy list with its destinations, in order, pointed at 127.0.0.1:<node port>;
    flags, priority and attributes columns as the deploy file has them."""
    out: list[str] = []
    ports = iter(node_ports)
    for line in deploy_list.read_text().splitlines():
        m = _DEST.match(line)
        if m is None:
            out.append(line)
            continue
        port = next(ports, None)
        if port is not None:
            out.append(f"{m.group(1)}sip:127.0.0.1:{port}{m.group(2)}")
    if next(ports, None) is not None:
        raise ValueError("deploy dispatcher.list has fewer destinations than the test's nodes")
    return "\n".join(out) + "\n"


@dataclass
class Kamailio:
    workdir: Path
    port: int
    node_ports: list[int]
    ping_interval_s: int = 1
    tcp_port: int | None = None   # also listen on TCP (LISTEN_TCP) for callers
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path = field(init=False)
    _rundir: str = ""

    def __post_init__(self) -> None:
        self.log_path = self.workdir / "kamailio.log"

    @property
    def ctl(self) -> str:
        return f"unix:{self._rundir}/kamailio_ctl"

    def start(self, timeout: float = 20.0) -> Kamailio:
        if not Path(KAMAILIO).exists():
            raise RuntimeError("kamailio is not installed; `make test` installs it (Debian package)")
        dlist = self.workdir / "dispatcher.list"
        dlist.write_text(dispatcher_list(self.node_ports))
        # A unix socket path must stay under ~108 bytes: pytest's tmp_path can be longer.
        self._rundir = tempfile.mkdtemp(prefix="vc-kam-")
        defines = {
            "LISTEN": f"udp:127.0.0.1:{self.port}",
            "DISPATCHER_LIST": f'"{dlist}"',
            "CTL_SOCKET": f'"{self.ctl}"',
            "CHILDREN": "1",          # one UDP worker: a 200 never overtakes its 180
            "DS_PING_INTERVAL": str(self.ping_interval_s),
        }
        if self.tcp_port is not None:
            defines["LISTEN_TCP"] = f"tcp:127.0.0.1:{self.tcp_port}"
        args = [KAMAILIO, "-f", str(DEPLOY / "kamailio.cfg"), "-DD", "-E",
                "-Y", self._rundir, "-P", f"{self._rundir}/kamailio.pid", "-w", self._rundir,
                "-m", "64", "-M", "8"]
        for k, v in defines.items():
            args += ["-A", f"{k}={v}"]
        with self.log_path.open("wb") as log:
            # Its own process group: Kamailio forks its workers, and stop() ends them all.
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            if len(self.targets(check=False)) == len(self.node_ports):
                return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("kamailio did not start:\n" + self.log()[-4000:])

    def set_nodes(self, node_ports: list[int]) -> None:
        """Point the dispatcher at these nodes: rewrite the list, ``dispatcher.reload``."""
        self.node_ports = list(node_ports)
        (self.workdir / "dispatcher.list").write_text(dispatcher_list(self.node_ports))
        self.rpc("dispatcher.reload")
        want = {f"sip:127.0.0.1:{p}" for p in self.node_ports}
        deadline = time.monotonic() + 10
        while set(self.targets()) != want:
            if time.monotonic() > deadline:
                raise AssertionError(f"dispatcher.reload: {self.targets()} != {want}")
            time.sleep(0.1)

    def rpc(self, *cmd: str, check: bool = True) -> str:
        r = subprocess.run([KAMCMD, "-s", self.ctl, *cmd], capture_output=True, text=True,
                           timeout=10, check=False)
        if check and r.returncode != 0:
            raise AssertionError(f"kamcmd {cmd} failed: {r.stdout}{r.stderr}")
        return r.stdout if r.returncode == 0 else ""

    def targets(self, check: bool = True) -> dict[str, str]:
        """Dispatcher destinations → flags (``AP`` active+probing, ``IP`` inactive …)."""
        return dict(_TARGET.findall(self.rpc("dispatcher.list", check=check)))

    def flags_of(self, node_port: int) -> str:
        return self.targets().get(f"sip:127.0.0.1:{node_port}", "")

    def wait_flags(self, node_port: int, first: str, timeout: float = 20.0) -> str:
        """Wait until the node's state flag (first letter: A active, I inactive, D disabled)
        is ``first``; returns the flags."""
        deadline = time.monotonic() + timeout
        flags = ""
        while time.monotonic() < deadline:
            flags = self.flags_of(node_port)
            if flags.startswith(first):
                return flags
            time.sleep(0.2)
        raise AssertionError(f"node {node_port}: flags {flags!r}, wanted {first}*\n"
                             + self.log()[-3000:])

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is not None:
            pgid = self.proc.pid      # the group it leads (start_new_session)
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(timeout=5)
            # A worker can outlive the main process (seen once after a test): end the group.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)
        self.proc = None
        if self._rundir:
            shutil.rmtree(self._rundir, ignore_errors=True)
