"""Call-rate benchmark: SIPp UAC → voicecall B2BUA → SIPp UAS at rising calls per second.

    .venv/bin/python bench/cps.py                      # full run (≤ ~6 min)
    .venv/bin/python bench/cps.py --quick              # ≤ 90 s: fewer, shorter steps
    .venv/bin/python bench/cps.py --rates 300,500,700 --duration 5 --traces off
    .venv/bin/python bench/cps.py --profile            # + py-spy profile at the top rate

Each step offers R calls/s for ``--duration`` s (``-r R -m R*duration``), every call held
``--hold`` ms, with SIPp's concurrent-call cap ``-l`` at R × (hold + 2 s) so a stalled switch
throttles the offered load instead of piling up calls. The same step runs SIPp UAC → SIPp UAS
directly (baseline): if the baseline fails or falls short, the number is SIPp's, not ours.

Per step: offered and achieved rate (answered calls over the span from the first to the last
200 OK), calls attempted / succeeded / failed / unfinished, retransmissions (``rtx_sipp``:
sent by SIPp because the switch was late; ``rtx_sw``: received by SIPp, i.e. the switch
retransmitted), p50/p99 setup delay (INVITE → 200 at the UAC, SIPp ``rtd`` on the 200,
``-trace_rtt``, 1 ms resolution), switch CPU (% of one core over the step and ms per call,
from /proc/<pid>/stat), SIPp's own CPU (wait4 rusage) and how many lines the switch logged.

A series stops rising after the first step with a failed or unfinished call or an achieved
rate under 90 % of the offered one (a p99 setup delay over 1 s is reported, not a stop). The daemon runs with
``[log] level = "warning"`` and ``[sip] trace_calls = 0`` (series ``sw-notrace``) and with
the default 200 in-memory call traces (series ``sw-trace``).

``--profile`` attaches py-spy (``pip install py-spy`` into .venv; not a project dependency)
to a fresh trace-less daemon for one step at the highest 0-failure rate (or
``--profile-rate``) and prints the top functions by self and cumulative samples.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.integration.harness import free_port  # noqa: E402

SCENARIOS = REPO / "tests" / "integration" / "scenarios"
CALLEE = "+8675512345678"
CLK_TCK = os.sysconf("SC_CLK_TCK")
FULL_RATES = (50, 100, 200, 300, 400, 500, 600, 800, 1000, 1200)
QUICK_RATES = (100, 300, 500, 800)


# ---------------------------------------------------------------------------------------------
# processes
# ---------------------------------------------------------------------------------------------


def machine_busy_s() -> float:
    """CPU seconds all cores spent busy (not idle/iowait) since boot, from /proc/stat."""
    with open("/proc/stat", encoding="ascii") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (sum(v[:8]) - v[3] - v[4]) / CLK_TCK


def udp_rcvbuf_errors() -> int:
    """Datagrams the kernel dropped because a socket's receive buffer was full (system-wide)."""
    with open("/proc/net/snmp", encoding="ascii") as f:
        rows = [ln.split() for ln in f if ln.startswith("Udp:")]
    return int(dict(zip(rows[0], rows[1], strict=False)).get("RcvbufErrors", 0))


def proc_cpu_s(pid: int) -> float:
    """utime + stime of a live process, in seconds."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


@dataclass
class Child:
    """A SIPp process reaped with wait4 so its own CPU time is known."""

    proc: subprocess.Popen[bytes]
    rc: int | None = None
    cpu_s: float = 0.0

    def wait(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.poll():
                return True
            time.sleep(0.02)
        return False

    def poll(self) -> bool:
        if self.rc is not None:
            return True
        pid, status, ru = os.wait4(self.proc.pid, os.WNOHANG)
        if pid == 0:
            return False
        self.rc = os.waitstatus_to_exitcode(status)
        self.proc.returncode = self.rc
        self.cpu_s = ru.ru_utime + ru.ru_stime
        return True

    def stop(self) -> None:
        """SIGUSR1 (SIPp ends gracefully and writes its stats), then SIGKILL."""
        if self.poll():
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, signal.SIGUSR1)
        if not self.wait(2.0):
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGKILL)
            self.wait(5.0)


def start_sipp(args: Sequence[str], cwd: Path, name: str) -> Child:
    out = open(cwd / f"{name}.out", "wb")  # noqa: SIM115 - the child owns it
    try:
        proc = subprocess.Popen([SIPP, *args], cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
    finally:
        out.close()
    return Child(proc)


def daemon_config(sip_port: int, uac_port: int, uas_port: int, trace_calls: int) -> str:
    # The UAC is a gateway so its INVITEs are trusted; the UAS is the carrier the route uses.
    return f"""
[node]
name = "bench"
data_dir = "./data"

[sip]
listen = ["udp:127.0.0.1:{sip_port}"]
advertise = "127.0.0.1"
trace_calls = {trace_calls}

[log]
level = "warning"

[api]
listen = "127.0.0.1:0"

[[gateways]]
name = "uac"
address = "udp:127.0.0.1:{uac_port}"
ping_interval_s = 0

[[gateways]]
name = "carrier"
address = "udp:127.0.0.1:{uas_port}"
ping_interval_s = 0

[[routes]]
prefix = "+86"
gateways = ["carrier"]
"""


# The daemon is started as ``python -c PRELUDE + run control_api.cli`` so experiments (GC
# statistics, GC tuning) can run inside it without touching the project's code.
_RUN_CLI = ("import runpy, sys; sys.argv[0] = 'voicecall'; "
            "runpy.run_module('control_api.cli', run_name='__main__', alter_sys=True)")

# Counts and times the cyclic garbage collector's passes per generation; printed at exit.
GC_STATS_PRELUDE = """
import atexit, gc, time
_gc = {'t0': 0.0, 'n': [0, 0, 0], 's': [0.0, 0.0, 0.0], 'max': [0.0, 0.0, 0.0]}
def _gc_cb(phase, info, _gc=_gc):
    if phase == 'start':
        _gc['t0'] = time.perf_counter()
    else:
        g = info['generation']; dt = time.perf_counter() - _gc['t0']
        _gc['n'][g] += 1; _gc['s'][g] += dt; _gc['max'][g] = max(_gc['max'][g], dt)
gc.callbacks.append(_gc_cb)
atexit.register(lambda: print('bench-gc passes/total/longest: ' + ' '.join(
    f'gen{g}={_gc["n"][g]}/{_gc["s"][g]:.2f}s/{1000 * _gc["max"][g]:.0f}ms' for g in range(3))
    + f'; tracked objects at exit {len(gc.get_objects())}', flush=True))
"""

# gc.freeze() once the daemon is ready: the ~100k objects of imports and startup leave the
# collector's generations (a full pass no longer walks them). With --gc-threshold.
GC_FREEZE_PRELUDE = """
import builtins, gc
_bench_print = builtins.print
def _bench_ready_print(*a, **k):
    _bench_print(*a, **k)
    if a and a[0] == 'voicecall ready':
        gc.collect(); gc.freeze()
builtins.print = _bench_ready_print
"""


@dataclass
class Daemon:
    """``voicecall serve`` in a subprocess, ready once it prints ``voicecall ready``."""

    config_text: str
    workdir: Path
    prelude: str = ""
    proc: subprocess.Popen[str] | None = None
    output: list[str] = field(default_factory=list)
    _reader: threading.Thread | None = None

    def start(self, timeout: float = 20.0) -> Daemon:
        cfg = self.workdir / "voicecall.toml"
        cfg.write_text(self.config_text, encoding="utf-8")
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO)}
        env.pop("VOICECALL_CONFIG", None)
        self.proc = subprocess.Popen(
            [sys.executable, "-c", self.prelude + "\n" + _RUN_CLI, "serve", "--config", str(cfg)],
            cwd=self.workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, bufsize=1)
        ready = threading.Event()
        self._reader = threading.Thread(target=self._read, args=(self.proc, ready), daemon=True)
        self._reader.start()
        if ready.wait(timeout) and self.proc.poll() is None:
            return self
        self.stop()
        raise RuntimeError("daemon did not become ready:\n" + "".join(self.output[-50:]))

    def _read(self, proc: subprocess.Popen[str], ready: threading.Event) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self.output.append(line)
            if "voicecall ready" in line:
                ready.set()

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        if self._reader is not None:
            self._reader.join(timeout=5)  # the last lines (exit statistics)


@contextlib.contextmanager
def switch(workdir: Path, trace_calls: int,
           prelude: str = "") -> Iterator[tuple[Daemon, int, int, int]]:
    sip_port, uac_port, uas_port = free_port(), free_port(), free_port()
    d = workdir / f"daemon_trace{trace_calls}_{sip_port}"
    d.mkdir()
    daemon = Daemon(daemon_config(sip_port, uac_port, uas_port, trace_calls), d, prelude)
    daemon.start()
    try:
        yield daemon, sip_port, uac_port, uas_port
    finally:
        daemon.stop()
        ready = next((i for i, ln in enumerate(daemon.output) if "voicecall ready" in ln), 0)
        logged = [ln.rstrip() for ln in daemon.output[ready + 1:]]
        shown = [ln for ln in logged if ln.startswith("bench-")]
        other = [ln for ln in logged if not ln.startswith("bench-")]
        shown += other[-12:] + ([f"... and {len(other) - 12} lines before"] if len(other) > 12 else [])
        for line in shown:
            print(f"  [daemon] {line[:300]}")


# ---------------------------------------------------------------------------------------------
# one step
# ---------------------------------------------------------------------------------------------


@dataclass
class Step:
    series: str
    offered: int
    attempted: int = 0
    succeeded: int = 0
    failed: int = 0
    unfinished: int = 0
    achieved: float = 0.0
    rtx_sipp: int = 0
    rtx_sw: int = 0
    p50: float | None = None
    p99: float | None = None
    sw_cpu_pct: float | None = None
    sw_cpu_ms_per_call: float | None = None
    uac_cpu_pct: float = 0.0
    uas_cpu_pct: float = 0.0
    others_pct: float = 0.0      # CPU used by everything else on the machine (% of one core)
    udp_drops: int = 0           # receive-buffer drops on the machine during the step
    logged: int = 0
    wall_s: float = 0.0
    note: str = ""

    @property
    def clean(self) -> bool:
        return self.failed == 0 and self.unfinished == 0 and self.attempted > 0

    @property
    def rising(self) -> bool:
        """The series goes on: no failed call and the offered rate achieved (p99 aside)."""
        return self.clean and self.achieved >= 0.9 * self.offered

    @property
    def keeps_up(self) -> bool:
        return (self.clean and self.achieved >= 0.9 * self.offered
                and (self.p99 is None or self.p99 <= 1000))


def last_csv_row(path: Path) -> dict[str, str]:
    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        rows = list(csv.reader(f, delimiter=";"))
    if len(rows) < 2:
        return {}
    return dict(zip(rows[0], rows[-1], strict=False))


def retransmissions(counts: dict[str, str]) -> tuple[int, int]:
    """(retransmissions this SIPp sent, retransmissions it received) from -trace_counts."""
    sent_idx = {k.split("_", 1)[0] for k in counts if k.endswith("_Sent")}
    sent = received = 0
    for k, v in counts.items():
        if k.endswith("_Retrans") and v.strip().isdigit():
            if k.split("_", 1)[0] in sent_idx:
                sent += int(v)
            else:
                received += int(v)
    return sent, received


def one_file(d: Path, pattern: str) -> Path | None:
    found = sorted(d.glob(pattern))
    return found[0] if found else None


def percentile(sorted_values: list[float], q: float) -> float:
    i = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[i]


def run_step(series: str, rate: int, *, duration: float, hold_ms: int, workdir: Path,
             target_port: int, uac_port: int, uas_port: int,
             daemon: Daemon | None) -> Step:
    calls = max(1, round(rate * duration))
    d = Path(tempfile.mkdtemp(prefix=f"{series}_{rate}_", dir=workdir))
    limit = max(50, int(rate * (hold_ms / 1000 + 2)))
    loops = str(max(1000, 4 * rate))
    budget = duration + hold_ms / 1000 + 15
    common = ["-i", "127.0.0.1", "-nostdin", "-trace_counts", "-trace_stat", "-fd", "1",
              "-trace_err",
              "-max_recv_loops", loops, "-max_sched_loops", loops, "-timer_resol", "1"]
    # No -m on the UAS: a late retransmission of the previous step (a BYE the switch resent
    # during a stall) reaches this UAS as a new, aborted call and would count against -m,
    # leaving real calls of this step unanswered. The UAS is stopped after the UAC is done.
    for _ in range(3):  # a media port taken meanwhile by someone else: SIPp exits at once
        uas = start_sipp(["-sf", str(SCENARIOS / "uas_basic.xml"), "-p", str(uas_port),
                          "-mp", str(free_port()),
                          "-timeout", f"{budget + 5:.0f}s", "-stf", str(d / "uas_stat.csv"),
                          *common], d, "uas")
        time.sleep(0.3)
        if not uas.poll():
            break
    step = Step(series, rate)
    pid = daemon.proc.pid if daemon is not None and daemon.proc is not None else None
    cpu0 = proc_cpu_s(pid) if pid else 0.0
    busy0, drops0 = machine_busy_s(), udp_rcvbuf_errors()
    logged0 = len(daemon.output) if daemon is not None else 0
    t0 = time.monotonic()
    uac = start_sipp([f"127.0.0.1:{target_port}", "-sf", str(SCENARIOS / "uac_basic.xml"),
                      "-s", CALLEE, "-p", str(uac_port), "-mp", str(free_port()),
                      "-r", str(rate), "-rp", "1000", "-m", str(calls), "-l", str(limit),
                      "-d", str(hold_ms), "-recv_timeout", "5s", "-timeout", f"{budget:.0f}s",
                      "-trace_rtt", "-rtt_freq", "1", "-stf", str(d / "uac_stat.csv"), *common],
                     d, "uac")
    try:
        if not uac.wait(budget + 5):
            step.note = "uac killed after timeout"
            uac.stop()
        step.wall_s = time.monotonic() - t0
        busy = machine_busy_s() - busy0
        step.udp_drops = udp_rcvbuf_errors() - drops0
        sw_cpu = 0.0
        if pid:
            sw_cpu = proc_cpu_s(pid) - cpu0
            step.sw_cpu_pct = 100 * sw_cpu / step.wall_s
        uas.wait(1.0)  # its timewait (500 ms) for the last calls
        uas.stop()
    finally:
        uac.stop()
        uas.stop()
    if daemon is not None:
        step.logged = len(daemon.output) - logged0

    stat = last_csv_row(d / "uac_stat.csv") if (d / "uac_stat.csv").exists() else {}
    step.attempted = int(stat.get("OutgoingCall(C)", 0) or 0)
    step.succeeded = int(stat.get("SuccessfulCall(C)", 0) or 0)
    step.failed = int(stat.get("FailedCall(C)", 0) or 0)
    step.unfinished = calls - step.succeeded - step.failed
    if not stat:
        step.note = (step.note + " no UAC statistics").strip()
    for name in ("uac_basic_*_counts.csv", "uas_basic_*_counts.csv"):
        f = one_file(d, name)
        if f is not None:
            s, r = retransmissions(last_csv_row(f))
            step.rtx_sipp += s
            step.rtx_sw += r
    rtt = one_file(d, "uac_basic_*_rtt.csv")
    if rtt is not None:
        answered_at: list[float] = []
        delays: list[float] = []
        with open(rtt, encoding="utf-8") as fh:
            next(fh, None)
            for line in fh:
                parts = line.strip().split(";")
                if len(parts) >= 2:
                    answered_at.append(float(parts[0]))
                    delays.append(float(parts[1]))
        if delays:
            delays.sort()
            step.p50, step.p99 = percentile(delays, 0.50), percentile(delays, 0.99)
        if len(answered_at) > 1 and answered_at[-1] > answered_at[0]:
            step.achieved = (len(answered_at) - 1) / ((answered_at[-1] - answered_at[0]) / 1000)
    if step.sw_cpu_pct is not None and step.succeeded:
        step.sw_cpu_ms_per_call = 1000 * step.sw_cpu_pct / 100 * step.wall_s / step.succeeded
    step.uac_cpu_pct = 100 * uac.cpu_s / step.wall_s if step.wall_s else 0.0
    step.uas_cpu_pct = 100 * uas.cpu_s / step.wall_s if step.wall_s else 0.0
    # SIPp's CPU counted up to its exit, a bit past the window: an estimate, floored at 0.
    step.others_pct = max(0.0, 100 * (busy - sw_cpu - uac.cpu_s - uas.cpu_s) / step.wall_s)
    if uac.rc not in (0, None) and not step.note:
        step.note = f"uac exit {uac.rc}"
    return step


# ---------------------------------------------------------------------------------------------
# output
# ---------------------------------------------------------------------------------------------

HEADER = (f"{'series':<11} {'offered':>7} {'achieved':>8} {'calls':>6} {'ok':>6} {'fail':>5} "
          f"{'unfin':>5} {'rtx_sipp':>8} {'rtx_sw':>6} {'p50ms':>6} {'p99ms':>6} {'sw_cpu%':>7} "
          f"{'ms/call':>7} {'uac%':>5} {'uas%':>5} {'other%':>6} {'drops':>5} {'logs':>5}  note")


def fmt(v: float | None, spec: str) -> str:
    return format(v, spec) if v is not None else "-".rjust(int(spec.split(".")[0]))


def row(s: Step) -> str:
    return (f"{s.series:<11} {s.offered:>7} {s.achieved:>8.1f} {s.attempted:>6} {s.succeeded:>6} "
            f"{s.failed:>5} {s.unfinished:>5} {s.rtx_sipp:>8} {s.rtx_sw:>6} "
            f"{fmt(s.p50, '6.0f')} {fmt(s.p99, '6.0f')} {fmt(s.sw_cpu_pct, '7.1f')} "
            f"{fmt(s.sw_cpu_ms_per_call, '7.3f')} {s.uac_cpu_pct:>5.1f} {s.uas_cpu_pct:>5.1f} "
            f"{s.others_pct:>6.0f} {s.udp_drops:>5} {s.logged:>5}  {s.note}")


def highest(steps: list[Step], ok: str) -> str:
    best = None
    for s in steps:
        if not getattr(s, ok):
            break
        best = s.offered
    if best is None:
        return "none"
    if steps and all(getattr(s, ok) for s in steps):
        return f"≥ {best} (no tested step missed it; the limit was not reached)"
    return f"{best}"


# ---------------------------------------------------------------------------------------------
# profile (py-spy)
# ---------------------------------------------------------------------------------------------


def pyspy_path() -> str | None:
    p = Path(sys.executable).parent / "py-spy"
    return str(p) if p.exists() else shutil.which("py-spy")


def short_frame(frame: str) -> str:
    # "func (/abs/path/file.py:12)" → "func (switch/sip/uri.py:12)"
    m = re.match(r"(.*) \((.*):(\d+)\)$", frame)
    if not m:
        return frame
    func, path, line = m.groups()
    for root in (str(REPO) + "/", "site-packages/", "lib/python3.11/"):
        if root in path:
            path = path.split(root, 1)[1]
            break
    return f"{func} ({path}:{line})"


def print_profile(raw: Path, top: int, wall_s: float, rate_hz: int) -> None:
    selfc: Counter[str] = Counter()
    cumc: Counter[str] = Counter()
    total = gc_samples = 0
    for line in raw.read_text(encoding="utf-8", errors="replace").splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit() or not stack:
            continue
        count = int(n)
        frames = [short_frame(f) for f in stack.split(";")]
        total += count
        if any(f.startswith(("gc_collect", "collect_with_callback")) for f in frames):
            gc_samples += count
        selfc[frames[-1]] += count
        for f in set(frames):
            cumc[f] += count
    if not total:
        print("profile: no samples")
        return
    busy = 100 * total / (wall_s * rate_hz) if wall_s else 0.0
    print(f"\nprofile: {total} samples holding the GIL at {rate_hz} Hz over {wall_s:.1f} s "
          f"(switch busy ≈ {busy:.0f} % of one core); raw stacks: {raw}")
    print(f"cyclic garbage collector (gc_collect_main and below): {100 * gc_samples / total:.1f} %")
    print(f"\ntop {top} by self time (% of samples)")
    for f, c in selfc.most_common(top):
        print(f"  {100 * c / total:5.1f}%  {f}")
    # Cumulative: project frames only (the loop, runpy and CLI frames are always ~100 %).
    print(f"\ntop {top} project functions by cumulative time")
    ours = [(f, c) for f, c in cumc.most_common()
            if any(f"({p}/" in f for p in ("switch", "media", "control_api"))
            and not f.startswith(("<module>", "main ", "_cmd_serve", "run_daemon"))]
    for f, c in ours[:top]:
        print(f"  {100 * c / total:5.1f}%  {f}")


def profile_step(rate: int, args: argparse.Namespace, workdir: Path) -> None:
    spy = pyspy_path()
    if spy is None:
        print("\nprofile skipped: py-spy not installed (.venv/bin/pip install py-spy)")
        return
    # --native (which needs the blocking sampler) shows time spent in C, above all the cyclic
    # GC (gc_collect_main); without it GC time lands on whichever Python line allocated.
    hz = 100
    with switch(workdir, 0, args.prelude) as (daemon, sip_port, uac_port, uas_port):
        assert daemon.proc is not None
        raw = workdir / f"pyspy_{rate}.txt"
        rec = subprocess.Popen(
            [spy, "record", "--pid", str(daemon.proc.pid), "--native", "--gil", "-F", "-r", str(hz),
             "-f", "raw", "-o", str(raw), "-d", str(int(args.duration + args.hold / 1000 + 3))],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            time.sleep(0.5)
            step = run_step("profiled", rate, duration=args.duration, hold_ms=args.hold,
                            workdir=workdir, target_port=sip_port, uac_port=uac_port,
                            uas_port=uas_port, daemon=daemon)
        finally:
            try:
                rec.wait(timeout=args.duration + 30)
            except subprocess.TimeoutExpired:
                rec.kill()
                rec.wait(timeout=5)
        print("\n" + HEADER)
        print(row(step))
        if raw.exists():
            print_profile(raw, args.top, step.wall_s, hz)
        else:
            print("profile: py-spy wrote nothing")


# ---------------------------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="≤ 90 s: rates 100,300,500,800 × 3 s")
    ap.add_argument("--rates", help="comma-separated calls/s steps")
    ap.add_argument("--duration", type=float, help="seconds of new calls per step (10; quick 3)")
    ap.add_argument("--hold", type=int, default=1000, help="call hold time, ms (1000)")
    ap.add_argument("--traces", default=None,
                    help="which daemon variants: off, on or off,on (full: off,on; quick: off)")
    ap.add_argument("--keep-going", action="store_true",
                    help="run every step even after one fails (soak: --rates 300,300,300)")
    ap.add_argument("--no-baseline", action="store_true", help="skip SIPp → SIPp steps")
    ap.add_argument("--max-seconds", type=float, help="whole-run bound (360; quick 90)")
    ap.add_argument("--profile", action="store_true", help="py-spy one step at the top rate")
    ap.add_argument("--profile-rate", type=int, help="rate of the profiled step")
    ap.add_argument("--top", type=int, default=20)
    ap.add_argument("--gc-stats", action="store_true",
                    help="count/time the daemon's GC passes (printed when each daemon stops)")
    ap.add_argument("--gc-freeze", action="store_true",
                    help="experiment: gc.freeze() in the daemon once it is ready")
    ap.add_argument("--gc-threshold", help="experiment: gc.set_threshold(A,B,C) in the daemon")
    ap.add_argument("--prelude", default="",
                    help="Python run in the daemon before it starts (experiments, e.g. "
                         "'import gc; gc.freeze()')")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (SIPp files)")
    ap.add_argument("--json", help="write every step and the per-series limits to this file")
    args = ap.parse_args()
    rates = ([int(r) for r in args.rates.split(",")] if args.rates
             else list(QUICK_RATES if args.quick else FULL_RATES))
    args.duration = args.duration or (3.0 if args.quick else 10.0)
    max_s = args.max_seconds or (90.0 if args.quick else 360.0)
    args.prelude = "\n".join([
        args.prelude, GC_STATS_PRELUDE if args.gc_stats else "",
        GC_FREEZE_PRELUDE if args.gc_freeze else "",
        f"import gc; gc.set_threshold({args.gc_threshold})" if args.gc_threshold else ""])
    traces = (args.traces or ("off" if args.quick else "off,on")).split(",")
    started = time.monotonic()
    step_cost = args.duration + args.hold / 1000 + 2.5  # SIPp start, drain, UAS timewait
    reserve = step_cost + 3 if args.profile else 0.0

    def time_left() -> float:
        return max_s - (time.monotonic() - started) - reserve

    print(f"voicecall CPS benchmark: steps {rates} calls/s, {args.duration:g} s of calls each, "
          f"hold {args.hold} ms, bound {max_s:.0f} s, {os.cpu_count()} CPUs")
    print(f"sipp {SIPP}; series stop after the first step with a failed/unfinished call "
          f"or achieved < 90 % of offered")
    workdir = Path(tempfile.mkdtemp(prefix="vc_cps_"))
    results: dict[str, list[Step]] = {}
    skipped: list[str] = []
    try:
        print("\n" + HEADER, flush=True)
        for variant in traces:
            series = "sw-notrace" if variant == "off" else "sw-trace"
            with_base = variant == traces[0] and not args.no_baseline
            own: list[Step] = results.setdefault(series, [])
            base: list[Step] = results.setdefault("baseline", []) if with_base else []
            base_rising = with_base
            bp_uac, bp_uas = free_port(), free_port()
            with switch(workdir, 0 if variant == "off" else 200, args.prelude) as (daemon, sip, uac_p, uas_p):
                for rate in rates:
                    need = step_cost * (2 if base_rising else 1)
                    if time_left() < need:
                        skipped.append(f"{series} ≥ {rate}/s (time bound)")
                        break
                    s = run_step(series, rate, duration=args.duration, hold_ms=args.hold,
                                 workdir=workdir, target_port=sip, uac_port=uac_p,
                                 uas_port=uas_p, daemon=daemon)
                    own.append(s)
                    print(row(s), flush=True)
                    if base_rising:
                        b = run_step("baseline", rate, duration=args.duration,
                                     hold_ms=args.hold, workdir=workdir, target_port=bp_uas,
                                     uac_port=bp_uac, uas_port=bp_uas, daemon=None)
                        base.append(b)
                        print(row(b), flush=True)
                        base_rising = b.rising or args.keep_going
                    if not s.rising and not args.keep_going:
                        break
        summarize(results, skipped)
        if args.json:
            write_json(Path(args.json), results, skipped, rates, args.duration, args.hold)
        if args.profile:
            clean = [s for s in results.get("sw-notrace", []) if s.clean]
            rate = args.profile_rate or (clean[-1].offered if clean else rates[0])
            print(f"\n=== py-spy profile of the switch (trace_calls = 0) at {rate} calls/s ===")
            profile_step(rate, args, workdir)
    finally:
        if args.keep:
            print(f"\nwork directory kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print(f"\ntotal wall time {time.monotonic() - started:.0f} s")
    return 0


def highest_rate(steps: list[Step], ok: str) -> tuple[int | None, bool]:
    """(highest offered rate of the leading run of steps that satisfy ``ok``, whether every
    tested step satisfied it, i.e. the limit was not reached)."""
    best = None
    for s in steps:
        if not getattr(s, ok):
            return best, False
        best = s.offered
    return best, bool(steps)


def write_json(path: Path, results: dict[str, list[Step]], skipped: list[str],
               rates: list[int], duration: float, hold_ms: int) -> None:
    import json
    from dataclasses import asdict

    limits: dict[str, dict[str, object]] = {}
    out = {"rates": rates, "duration_s": duration, "hold_ms": hold_ms, "skipped": skipped,
           "series": {k: [asdict(s) for s in v] for k, v in results.items()}, "limits": limits}
    for series, steps in results.items():
        clean, clean_all = highest_rate(steps, "clean")
        kept, kept_all = highest_rate(steps, "keeps_up")
        limits[series] = {"zero_failures": clean, "zero_failures_not_reached": clean_all,
                                 "kept_up": kept, "kept_up_not_reached": kept_all}
    path.write_text(json.dumps(out, indent=2))


def summarize(results: dict[str, list[Step]], skipped: list[str]) -> None:
    base = {s.offered: s for s in results.get("baseline", [])}
    print("\nadded setup delay by the switch (switch − baseline, ms; 1 ms resolution)")
    for series in ("sw-notrace", "sw-trace"):
        for s in results.get(series, []):
            b = base.get(s.offered)
            if b is None or s.p50 is None or b.p50 is None or s.p99 is None or b.p99 is None:
                continue
            print(f"  {series:<11} {s.offered:>5}/s  p50 +{s.p50 - b.p50:.0f}  "
                  f"p99 +{s.p99 - b.p99:.0f}")
    print("\nhighest rate with 0 failed calls (calls/s)")
    for series, steps in results.items():
        print(f"  {series:<11} {highest(steps, 'clean')}")
    print("highest rate kept up with (0 failed, achieved ≥ 90 % of offered, p99 ≤ 1 s)")
    for series, steps in results.items():
        print(f"  {series:<11} {highest(steps, 'keeps_up')}")
    for note in skipped:
        print(f"  skipped: {note}")


SIPP = shutil.which("sipp") or "/usr/bin/sipp"

if __name__ == "__main__":
    sys.exit(main())
