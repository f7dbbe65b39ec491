"""Media plane benchmark: bridged calls and prompt streams through a real MediaEngine.

    .venv/bin/python bench/media.py                       # everything, default steps
    .venv/bin/python bench/media.py --mode bridge --steps 250,500,1000 --duration 5
    .venv/bin/python bench/media.py --mode record --steps 200,400,600
    .venv/bin/python bench/media.py --mode prompts --steps 500,1000,1500

The engine runs in this process (uvloop); the traffic generator runs in a child process
(this same file with ``--role gen``) and talks to it over stdin/stdout JSON lines. For
each step of N:

* bridge / record: 2N endpoints, N bridges (``record`` adds a recorder per call). The
  generator sends 20 ms A-law RTP on both legs of every call (staggered over the 20 ms),
  each payload carrying its send time, and receives what the engine relays to the other
  leg: loss, one-way latency, and *added jitter* = p99 of |latency − median latency|.
  CPU per relayed packet = this process's CPU time / packets relayed during the window.
* prompts: N endpoints each looping a prompt to the generator on the shared clock; the
  generator measures every stream's inter-arrival error (|Δt − 20 ms|) and loss; the
  engine reports its clock's own tick lateness.

A step passes with 0 loss and p99 added jitter (pacing error) ≤ 2 ms. Steps rise until
one fails; every step is bounded in time and the whole run by ``--max-seconds``.
The generator is Python too, so at high N it may itself be the limit: its own send
lateness is printed so a result is never silently the generator's fault.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import select
import shutil
import socket
import struct
import sys
import tempfile
import time
from array import array
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

PERIOD = 0.020
JITTER_LIMIT_MS = 2.0
HDR = struct.Struct("!BBHII")
STAMP = struct.Struct("!d")


# ---------------------------------------------------------------------------------------------
# generator (child process, synchronous, epoll)
# ---------------------------------------------------------------------------------------------


class Generator:
    def __init__(self) -> None:
        self.socks: list[socket.socket] = []

    def open(self, n: int) -> list[int]:
        self.close()
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 18)
            s.bind(("127.0.0.1", 0))
            s.setblocking(False)
            self.socks.append(s)
        return [s.getsockname()[1] for s in self.socks]

    def close(self) -> None:
        for s in self.socks:
            s.close()
        self.socks = []

    def run(self, targets: list[int], duration: float, send: bool) -> dict[str, Any]:
        socks = self.socks
        n = len(socks)
        for s, port in zip(socks, targets, strict=True):
            s.connect(("127.0.0.1", port))
        ep = select.epoll()
        fd_index = {}
        for i, s in enumerate(socks):
            ep.register(s.fileno(), select.EPOLLIN)
            fd_index[s.fileno()] = i
        received = [0] * n
        sent = [0] * n
        last_arrival = [0.0] * n
        delays = array("d")
        gaps = array("d")
        payload_pad = b"\xd5" * (160 - STAMP.size)
        buckets = 20  # spread the streams over the 20 ms period, 1 ms apart
        by_bucket: list[list[int]] = [[] for _ in range(buckets)]
        for i in range(n):
            by_bucket[i % buckets].append(i)
        seq = [i * 7 & 0xFFFF for i in range(n)]
        ssrc = [0x1000 + i for i in range(n)]
        cpu0 = time.process_time()
        t0 = time.monotonic() + 0.05
        end = t0 + duration
        k = 0
        late: list[float] = []
        mono = time.monotonic
        while True:
            now = mono()
            if send and now < end:
                deadline = t0 + k * (PERIOD / buckets)
                if now >= deadline:
                    late.append(now - deadline)
                    tick = k // buckets
                    for i in by_bucket[k % buckets]:
                        hdr = HDR.pack(0x80, 8, seq[i], (tick * 160) & 0xFFFFFFFF, ssrc[i])
                        seq[i] = (seq[i] + 1) & 0xFFFF
                        try:
                            socks[i].send(hdr + STAMP.pack(mono()) + payload_pad)
                            sent[i] += 1
                        except OSError:
                            pass
                    k += 1
                    continue
                timeout = deadline - now
            else:
                if now >= end + 0.5:
                    break
                timeout = min(0.05, end + 0.5 - now)
            for fd, _ in ep.poll(timeout):
                i = fd_index[fd]
                s = socks[i]
                while True:
                    try:
                        data = s.recv(2048)
                    except (BlockingIOError, InterruptedError):
                        break
                    except OSError:
                        continue
                    t = mono()
                    received[i] += 1
                    if send:
                        if len(data) >= 20:
                            delays.append(t - STAMP.unpack_from(data, 12)[0])
                    else:
                        if last_arrival[i] and t > t0 + 0.5:  # after the warm-up backlog
                            gaps.append(abs(t - last_arrival[i] - PERIOD))
                        last_arrival[i] = t
        cpu = time.process_time() - cpu0
        ep.close()
        return {
            "sent": sent, "received": received, "delays": _pct(delays), "gaps": _pct(gaps),
            "gen_cpu_s": cpu, "gen_late_p99_ms": _p(late, 99) * 1000,
            "gen_late_max_ms": (max(late) if late else 0.0) * 1000,
        }


def _p(values: Any, q: float) -> float:
    if not len(values):
        return 0.0
    import numpy as np

    return float(np.percentile(np.frombuffer(values, dtype=np.float64)
                               if isinstance(values, array) else np.asarray(values), q))


def _pct(values: array) -> dict[str, float]:
    if not len(values):
        return {"n": 0}
    import numpy as np

    v = np.frombuffer(values, dtype=np.float64)
    med = float(np.median(v))
    return {
        "n": len(v), "p50_ms": med * 1000, "p99_ms": float(np.percentile(v, 99)) * 1000,
        "max_ms": float(v.max()) * 1000,
        "added_p99_ms": float(np.percentile(np.abs(v - med), 99)) * 1000,
    }


def generator_main() -> None:
    gen = Generator()
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["cmd"] == "open":
            out: Any = {"ports": gen.open(cmd["n"])}
        elif cmd["cmd"] == "run":
            out = gen.run(cmd["targets"], cmd["duration"], cmd["send"])
        elif cmd["cmd"] == "close":
            gen.close()
            out = {"ok": True}
        else:
            break
        sys.stdout.write(json.dumps(out) + "\n")
        sys.stdout.flush()


# ---------------------------------------------------------------------------------------------
# engine side (this process)
# ---------------------------------------------------------------------------------------------


class GenClient:
    def __init__(self, proc: asyncio.subprocess.Process, native: bool) -> None:
        self.proc = proc
        self.native = native

    def _line(self, cmd: dict[str, Any]) -> str:
        if not self.native:
            return json.dumps(cmd)
        if cmd["cmd"] == "open":
            return f"open {cmd['n']}"
        if cmd["cmd"] == "run":
            ports = " ".join(str(p) for p in cmd["targets"])
            return f"run {cmd['duration']} {int(cmd['send'])} {ports}"
        return "close"

    async def call(self, timeout: float, **cmd: Any) -> Any:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write((self._line(cmd) + "\n").encode())
        await self.proc.stdin.drain()
        line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        if not line:
            raise RuntimeError("generator exited")
        return json.loads(line)


async def baseline_ms(seconds: float = 2.0) -> float:
    """p99 lateness of an empty 20 ms call_at loop: what the host's scheduler alone costs."""
    loop = asyncio.get_running_loop()
    lat: list[float] = []
    done = loop.create_future()
    t0 = loop.time()
    n = int(seconds / PERIOD)

    def run(k: int) -> None:
        lat.append(loop.time() - (t0 + k * PERIOD))
        if k < n:
            loop.call_at(t0 + (k + 1) * PERIOD, run, k + 1)
        else:
            done.set_result(None)

    loop.call_at(t0, run, 0)
    await done
    return _p(lat, 99) * 1000


def offer_for(port: int) -> str:
    return ("v=0\r\no=gen 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            f"m=audio {port} RTP/AVP 8 101\r\na=rtpmap:101 telephone-event/8000\r\n")


def rss_kib() -> int:
    """This process's resident set (VmRSS), KiB."""
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def machine_busy_s() -> float:
    """CPU seconds all cores spent busy (not idle/iowait) since boot, from /proc/stat: with
    the engine's and the generator's own CPU it shows what everything else on a shared
    machine took during a step."""
    with open("/proc/stat", encoding="ascii") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (sum(v[:8]) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def run_step(engine: Any, gen: GenClient, mode: str, n: int, duration: float,
                   data_dir: Path) -> dict[str, Any]:
    from media.endpoint import MediaEndpoint

    legs = 2 * n if mode in ("bridge", "record") else n
    ports = (await gen.call(30, cmd="open", n=legs))["ports"]
    rss0 = rss_kib()
    eps: list[MediaEndpoint] = []
    recorders = []
    try:
        for i in range(legs):
            ep = await engine.open_endpoint(call_id=f"bench-{i // 2}", leg="ab"[i % 2])
            ep.answer_offer(offer_for(ports[i]))
            eps.append(ep)
        if mode in ("bridge", "record"):
            for c in range(n):
                engine.bridge(eps[2 * c], eps[2 * c + 1])
                if mode == "record":
                    recorders.append(engine.record(eps[2 * c], eps[2 * c + 1],
                                                   data_dir / f"rec-{c}.wav"))
        else:
            prompt = bytes((i * 13) & 0xFF for i in range(8000))
            for ep in eps:
                ep.play_audio([prompt], loop=True)
        clock = engine.clock
        await asyncio.sleep(0.2)  # let setup-time lateness pass
        clock.reset_stats()
        sent0 = sum(ep.stats.packets_sent for ep in eps)
        c0, w0, m0 = cpu_s(), time.monotonic(), machine_busy_s()
        res = await gen.call(duration + 60, cmd="run", targets=[ep.port for ep in eps],
                             duration=duration, send=mode != "prompts")
        c1, w1, m1 = cpu_s(), time.monotonic(), machine_busy_s()
        rss1 = rss_kib()
        relayed = sum(ep.stats.packets_sent for ep in eps) - sent0
        ticks = clock.ticks_run
        out: dict[str, Any] = {
            "mode": mode, "n": n, "legs": legs, "duration_s": duration,
            "engine_cpu_pct": 100 * (c1 - c0) / (w1 - w0),
            "packets_out": relayed,
            "cpu_us_per_packet": 1e6 * (c1 - c0) / relayed if relayed else None,
            "clock_late_ticks": clock.late_ticks,
            "clock_skipped_ticks": clock.skipped_ticks, "ticks": ticks,
            "clock_lateness_p99_ms": clock.lateness_percentile(99) * 1000,
            "gen_cpu_pct": 100 * res["gen_cpu_s"] / (w1 - w0),
            # everything else on the machine, % of one core (estimate, floored at 0)
            "others_cpu_pct": max(0.0, 100 * ((m1 - m0) - (c1 - c0) - res["gen_cpu_s"])
                                  / (w1 - w0)),
            "gen_late_p99_ms": res["gen_late_p99_ms"],
            "gen_late_max_ms": res["gen_late_max_ms"],
            # engine process RSS before the endpoints were opened and after the traffic;
            # Python keeps freed memory, so only a step bigger than all before it shows growth
            "rss_kib_before": rss0, "rss_kib_after": rss1,
        }
        if mode in ("bridge", "record"):
            sent, received = res["sent"], res["received"]
            lost = 0
            for c in range(n):
                a, b = 2 * c, 2 * c + 1
                lost += max(0, sent[a] - received[b]) + max(0, sent[b] - received[a])
            out.update(sent=sum(sent), received=sum(received), lost=lost,
                       latency=res["delays"])
            jitter = res["delays"].get("added_p99_ms", 99.0)
        else:
            expected = int(duration / PERIOD)
            received = res["received"]
            short = sum(max(0, expected - 2 - r) for r in received)
            out.update(received=sum(received), expected_per_stream=expected,
                       streams_short=sum(1 for r in received if r < expected - 2),
                       lost=short, pacing=res["gaps"])
            jitter = res["gaps"].get("p99_ms", 99.0)
        out["jitter_p99_ms"] = jitter
        out["load_avg_1m"] = os.getloadavg()[0]
        out["pass"] = out["lost"] == 0 and jitter <= JITTER_LIMIT_MS
        return out
    finally:
        for rec in recorders:
            await rec.stop()
        for ep in eps:
            await ep.close()
        await gen.call(30, cmd="close")
        for f in data_dir.glob("rec-*.wav"):
            f.unlink()


async def engine_main(args: argparse.Namespace) -> None:
    with contextlib.suppress(ValueError, OSError):
        _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    from media.config import MediaConfig
    from media.engine import MediaEngine

    data_dir = Path(tempfile.mkdtemp(prefix="vc-bench-"))
    engine = MediaEngine(MediaConfig(rtp_ports=args.ports, rtp_timeout_s=0), bind_ip="127.0.0.1",
                         advertise_ip="127.0.0.1", data_dir=data_dir)
    await engine.start(default_prompts=False)
    native = None if args.gen == "python" else build_native_generator(data_dir)
    if args.gen == "c" and native is None:
        raise SystemExit("--gen c: gcc could not build the native generator")
    argv = [str(native)] if native else [sys.executable, __file__, "--role", "gen"]
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        limit=1 << 24)
    gen = GenClient(proc, native is not None)
    timer_p99 = await baseline_ms()
    print(f"# generator: {'native C (epoll)' if native else 'Python (epoll)'}; "
          f"engine: {'asyncio' if args.no_uvloop else 'uvloop'}; cpus: {os.cpu_count()}; "
          f"nice: {os.getpriority(os.PRIO_PROCESS, 0)}; "
          f"sched: {'FIFO' if os.sched_getscheduler(0) == os.SCHED_FIFO else 'OTHER'}; "
          f"baseline timer lateness p99 (empty loop, 2 s): {timer_p99:.2f} ms",
          flush=True)
    started = time.monotonic()
    summary: dict[str, Any] = {}
    results: list[dict[str, Any]] = []
    try:
        modes = ["bridge", "record", "prompts"] if args.mode == "all" else [args.mode]
        for mode in modes:
            steps = [int(x) for x in (args.steps or DEFAULT_STEPS[mode]).split(",")]
            best = best_lossless = 0
            passing = True
            for n in steps:
                if time.monotonic() - started > args.max_seconds:
                    print(f"# time budget of {args.max_seconds} s used up", flush=True)
                    break
                r = await run_step(engine, gen, mode, n, args.duration, data_dir)
                print(json.dumps(r), flush=True)
                results.append(r)
                print(f"# {mode} N={n}: lost={r['lost']} jitter_p99={r['jitter_p99_ms']:.2f} ms "
                      f"engine_cpu={r['engine_cpu_pct']:.0f}% "
                      f"cpu/pkt={r['cpu_us_per_packet'] or 0:.1f} us "
                      f"clock_p99={r['clock_lateness_p99_ms']:.2f} ms "
                      f"gen_late_p99={r['gen_late_p99_ms']:.2f} ms "
                      f"gen_cpu={r['gen_cpu_pct']:.0f}% others={r['others_cpu_pct']:.0f}% "
                      f"load={r['load_avg_1m']:.2f}", flush=True)
                if r["lost"]:
                    break  # loss: capacity reached; a jitter miss alone keeps rising
                best_lossless = n
                passing = passing and r["pass"]
                if passing:
                    best = n
            summary[mode] = {"pass": best, "lossless": best_lossless}
    finally:
        with contextlib.suppress(Exception):
            await engine.stop()
        if proc.returncode is None:
            proc.kill()  # our own child, by its handle (PID)
            await proc.wait()
        shutil.rmtree(data_dir, ignore_errors=True)
    print(f"# highest N: 'pass' = 0 loss and p99 added jitter / pacing error <= "
          f"{JITTER_LIMIT_MS} ms at every step up to it; 'lossless' = 0 loss:",
          json.dumps(summary), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({
            "summary": summary, "steps": results, "jitter_limit_ms": JITTER_LIMIT_MS,
            "duration_s": args.duration, "generator": "c" if native else "python",
            "baseline_timer_p99_ms": timer_p99,
            "uvloop": not args.no_uvloop}, indent=2))


DEFAULT_STEPS = {
    "bridge": "100,250,500,750,1000,1250,1500",
    "record": "100,200,400,600,800,1000",
    "prompts": "250,500,1000,1500,2000",
}


def build_native_generator(workdir: Path) -> Path | None:
    """Compile the C generator (same protocol, ~10x less CPU than the Python one) into
    ``workdir``; None when no C compiler is available."""
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        return None
    src = workdir / "rtpgen.c"
    exe = workdir / "rtpgen"
    src.write_text(NATIVE_GENERATOR)
    import subprocess

    r = subprocess.run([cc, "-O2", "-o", str(exe), str(src), "-lm"], capture_output=True,
                       text=True, timeout=60, check=False)
    if r.returncode != 0:
        print(f"# native generator build failed, using Python: {r.stderr[-300:]}", flush=True)
        return None
    return exe


NATIVE_GENERATOR = r"""/* RTP load generator for bench/media.py (protocol of the Python one). */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static int *socks; static int nsocks;
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9; }
static double cpu(void) { struct rusage r; getrusage(RUSAGE_SELF, &r);
  return r.ru_utime.tv_sec + r.ru_utime.tv_usec / 1e6 + r.ru_stime.tv_sec + r.ru_stime.tv_usec / 1e6; }
static int cmpd(const void *a, const void *b) { double x = *(const double *)a,
    y = *(const double *)b; return (x > y) - (x < y); }
static double pct(double *v, long n, double q) { if (!n) return 0;
    long i = (long)(q / 100.0 * (n - 1) + 0.5); return v[i]; }
static void stats(const char *name, double *v, long n, int added) {
  if (!n) { printf("\"%s\":{\"n\":0}", name); return; }
  qsort(v, n, sizeof(double), cmpd);
  double med = pct(v, n, 50), p99 = pct(v, n, 99), mx = v[n - 1];
  double *dev = malloc(sizeof(double) * n);
  for (long i = 0; i < n; i++) dev[i] = fabs(v[i] - med);
  qsort(dev, n, sizeof(double), cmpd);
  printf("\"%s\":{\"n\":%ld,\"p50_ms\":%.4f,\"p99_ms\":%.4f,\"max_ms\":%.4f,\"added_p99_ms\":%.4f}",
         name, n, med * 1e3, p99 * 1e3, mx * 1e3, added ? pct(dev, n, 99) * 1e3 : 0.0);
  free(dev);
}

int main(void) {
  char *line = NULL; size_t cap = 0;
  setvbuf(stdout, NULL, _IOFBF, 1 << 20);
  while (getline(&line, &cap, stdin) > 0) {
    if (!strncmp(line, "open ", 5)) {
      for (int i = 0; i < nsocks; i++) close(socks[i]);
      nsocks = atoi(line + 5); socks = realloc(socks, sizeof(int) * nsocks);
      printf("{\"ports\":[");
      for (int i = 0; i < nsocks; i++) {
        int s = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0); int buf = 1 << 18;
        setsockopt(s, SOL_SOCKET, SO_RCVBUF, &buf, sizeof buf);
        struct sockaddr_in a = {.sin_family = AF_INET,
            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        bind(s, (struct sockaddr *)&a, sizeof a); socklen_t l = sizeof a;
        getsockname(s, (struct sockaddr *)&a, &l); socks[i] = s;
        printf("%s%d", i ? "," : "", ntohs(a.sin_port));
      }
      printf("]}\n"); fflush(stdout);
    } else if (!strncmp(line, "close", 5)) {
      for (int i = 0; i < nsocks; i++) close(socks[i]);
      nsocks = 0; printf("{\"ok\":true}\n"); fflush(stdout);
    } else if (!strncmp(line, "run ", 4)) {
      char *p = line + 4; double duration = strtod(p, &p); int send_on = (int)strtol(p, &p,
          10);
      int ep = epoll_create1(0);
      for (int i = 0; i < nsocks; i++) {
        int port = (int)strtol(p, &p, 10);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port),
            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        connect(socks[i], (struct sockaddr *)&a, sizeof a);
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = i};
        epoll_ctl(ep, EPOLL_CTL_ADD, socks[i], &ev);
      }
      long cap_d = (long)(nsocks * 50 * (duration + 2)) + 1000;
      double *delays = malloc(sizeof(double) * cap_d), *gaps = malloc(sizeof(double) * cap_d);
      double *late = malloc(sizeof(double) * (long)(duration * 1000 + 100));
      long nd = 0, ng = 0, nl = 0;
      long *sent = calloc(nsocks, sizeof(long)), *recv_n = calloc(nsocks, sizeof(long));
      double *last = calloc(nsocks, sizeof(double));
      uint16_t *seq = calloc(nsocks, sizeof(uint16_t));
      unsigned char pkt[172]; memset(pkt, 0xd5, sizeof pkt);
      double c0 = cpu(), t0 = now() + 0.05, end = t0 + duration; long k = 0;
      struct epoll_event evs[256]; unsigned char rb[2048];
      for (;;) {
        double t = now(), timeout;
        if (send_on && t < end) {
          double deadline = t0 + k * 0.001;
          if (t >= deadline) {
            late[nl++] = t - deadline; long tick = k / 20;
            for (int i = (int)(k % 20); i < nsocks; i += 20) {
              pkt[0] = 0x80; pkt[1] = 8; *(uint16_t *)(pkt + 2) = htons(seq[i]++);
              *(uint32_t *)(pkt + 4) = htonl((uint32_t)(tick * 160));
                  *(uint32_t *)(pkt + 8) = htonl(0x1000 + i);
              double st = now(); uint64_t b; memcpy(&b, &st, 8); b = __builtin_bswap64(b);
                  memcpy(pkt + 12, &b, 8);
              if (send(socks[i], pkt, sizeof pkt, 0) > 0) sent[i]++;
            }
            k++; continue;
          }
          timeout = deadline - t;
        } else {
          if (t >= end + 0.5) break;
          timeout = end + 0.5 - t; if (timeout > 0.05) timeout = 0.05;
        }
        int n = epoll_wait(ep, evs, 256, (int)ceil(timeout * 1000));
        for (int e = 0; e < n; e++) {
          int i = evs[e].data.u32;
          for (;;) {
            ssize_t r = recv(socks[i], rb, sizeof rb, 0);
            if (r < 0) { if (errno == EAGAIN || errno == EWOULDBLOCK) break; continue; }
            double rt = now(); recv_n[i]++;
            if (send_on) {
              if (r >= 20 && nd < cap_d) { uint64_t b; memcpy(&b, rb + 12, 8);
                  b = __builtin_bswap64(b); double st; memcpy(&st, &b, 8);
                      delays[nd++] = rt - st; }
            } else {
              /* skip 0.5 s warm-up: the backlog queued before the run is read in a burst */
              if (last[i] > 0 && rt > t0 + 0.5 && ng < cap_d)
                gaps[ng++] = fabs(rt - last[i] - 0.020);
              last[i] = rt;
            }
          }
        }
      }
      double cpu_s = cpu() - c0; close(ep);
      printf("{\"sent\":[");
      for (int i = 0; i < nsocks; i++) printf("%s%ld", i ? "," : "", sent[i]);
      printf("],\"received\":[");
      for (int i = 0; i < nsocks; i++) printf("%s%ld", i ? "," : "", recv_n[i]);
      printf("],"); stats("delays", delays, nd, 1); printf(","); stats("gaps", gaps, ng, 0);
      qsort(late, nl, sizeof(double), cmpd);
      printf(",\"gen_cpu_s\":%.4f,\"gen_late_p99_ms\":%.4f,\"gen_late_max_ms\":%.4f}\n",
             cpu_s, pct(late, nl, 99) * 1e3, nl ? late[nl - 1] * 1e3 : 0.0);
      fflush(stdout);
      free(delays); free(gaps); free(late); free(sent); free(recv_n); free(last); free(seq);
    } else break;
  }
  return 0;
}
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--role", choices=["engine", "gen"], default="engine")
    ap.add_argument("--mode", choices=["all", "bridge", "record", "prompts"], default="all")
    ap.add_argument("--steps", default="", help="comma-separated N values (rising)")
    ap.add_argument("--duration", type=float, default=5.0, help="seconds of traffic per step")
    ap.add_argument("--max-seconds", type=float, default=600.0, help="budget for the whole run")
    ap.add_argument("--ports", default="30000-45999", help="engine RTP port range")
    ap.add_argument("--no-uvloop", action="store_true")
    ap.add_argument("--nice", type=int, default=0,
                    help="niceness for the engine and generator (e.g. -10 on a shared, busy "
                    "machine; needs root); the generator inherits it")
    ap.add_argument("--rt", type=int, default=0,
                    help="SCHED_FIFO priority (1-99) for engine and generator; needs root")
    ap.add_argument("--gen", choices=["auto", "c", "python"], default="auto",
                    help="traffic generator: native C (built with gcc, leaves the CPU to the "
                    "engine) or Python")
    ap.add_argument("--json", help="write the steps and the summary to this file")
    args = ap.parse_args()
    if args.role == "gen":
        generator_main()
        return
    if args.nice:
        os.setpriority(os.PRIO_PROCESS, 0, args.nice)
    if args.rt:
        # SCHED_FIFO like a production media server on a shared host; the kernel's RT
        # throttling (sched_rt_runtime_us) still leaves CPU to everything else.
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(args.rt))
    if not args.no_uvloop:
        import uvloop

        uvloop.install()
    asyncio.run(engine_main(args))
    os._exit(0)


if __name__ == "__main__":
    main()
