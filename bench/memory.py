"""Memory per concurrent bridged call: the daemon's RSS growth while N callbacks are up.

    .venv/bin/python bench/memory.py                      # 1000 calls at 50 req/s
    .venv/bin/python bench/memory.py --calls 200 --rate 50 --json out.json

The real daemon (``control_api.cli serve``, ``[log] level = "warning"``, ``[media]
rtp_timeout_s = 0`` so silent parties are not hung up, app ``record = false``) and one SIPp
UAS gateway (tests/integration/scenarios/uas_basic.xml: 180, 200 with SDP, then waits for
the BYE) that answers both legs of every click2Call. Each signed click2Call (distinct
caller/callee numbers) makes the A leg, then the B leg, and bridges them: two SIP dialogs,
two RTP endpoints and one bridge per call, which is what a concurrent call costs the node.

Procedure: ``--warmup`` callbacks first (lazy imports, caches, pools), then the daemon's
VmRSS (/proc/PID/status) is sampled; N callbacks are posted at ``--rate``; once the receiver
has 2N ``answer`` status pushes (both legs of every call answered, i.e. bridged) and two
seconds have passed, VmRSS is sampled again. Memory per call = (after − before) / N. The
calls go up in two halves with a sample in between, so the marginal cost of the second half
is printed too (it leaves out one-time growth of pools and caches). The
calls are then torn down with the daemon (SIGTERM). Goal: ≤ 100 KiB per call, i.e. ≤ 100 MiB
for 1000 concurrent calls (the media target) — a budget that keeps a 1000-call node inside a
small VM next to PostgreSQL.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.api import click2call, switch_toml  # noqa: E402
from tests.integration.control_api.helpers import Receiver  # noqa: E402
from tests.integration.harness import Daemon, free_port  # noqa: E402

GOAL_KIB = 100

# --tracemalloc: run inside the daemon before it starts (bench/cps.py's prelude mechanism);
# SIGUSR2 dumps a snapshot to PATH.<n>, renamed into place once complete.
TRACEMALLOC_PRELUDE = """
import os, signal, tracemalloc
tracemalloc.start({frames})
def _bench_dump(sig, frame, _n=[0]):
    path = {path!r} + f".{{_n[0]}}"
    tracemalloc.take_snapshot().dump(path + ".tmp")
    os.rename(path + ".tmp", path)
    _n[0] += 1
signal.signal(signal.SIGUSR2, _bench_dump)
"""
SCENARIO = REPO / "tests" / "integration" / "scenarios" / "uas_basic.xml"


def node_toml(*, sip_port: int, api_port: int, gw_port: int, status: str, fee: str) -> str:
    # bench/api.py's daemon config, with a 60 s no-answer timeout and a wide RTP range with
    # no media timeout (the held calls send no RTP).
    return switch_toml(sip_port=sip_port, api_port=api_port, gw_port=gw_port, status=status,
                       fee=fee, gateway="gw", sip_extra="no_answer_timeout_s = 60",
                       media='[media]\nrtp_ports = "46000-59999"\nrtp_timeout_s = 0')


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def answers(receiver: Receiver) -> int:
    return sum(1 for r in receiver.on("/status")
               if isinstance(r.body, dict) and r.body.get("eventType") == "answer")


async def post_calls(base: str, first: int, count: int, rate: float) -> dict[str, int]:
    codes: dict[str, int] = {}
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=base, timeout=30, limits=limits,
                                 trust_env=False) as client:
        async def one(i: int) -> None:
            code = await click2call(client, i)
            codes[code] = codes.get(code, 0) + 1

        start = time.perf_counter()
        tasks = []
        for k in range(count):
            delay = start + k / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(first + k)))
        await asyncio.gather(*tasks)
    return codes


async def wait_answers(receiver: Receiver, want: int, timeout: float) -> float:
    t0 = time.monotonic()
    while answers(receiver) < want and time.monotonic() - t0 < timeout:
        await asyncio.sleep(0.2)
    return time.monotonic() - t0


async def snapshot(pid: int, path: Path, k: int) -> Path:
    os.kill(pid, signal.SIGUSR2)
    target = Path(f"{path}.{k}")
    deadline = time.monotonic() + 120
    while not target.exists():
        if time.monotonic() > deadline:
            raise RuntimeError("the daemon wrote no tracemalloc snapshot")
        await asyncio.sleep(0.2)
    return target


def tracemalloc_top(before: Path, after: Path, calls: int, top: int) -> list[str]:
    import tracemalloc

    a, b = tracemalloc.Snapshot.load(str(before)), tracemalloc.Snapshot.load(str(after))
    lines = []
    for key in ("filename", "lineno"):
        stats = b.compare_to(a, key)
        total = sum(st.size_diff for st in stats)
        lines.append(f"Python heap growth (tracemalloc) by {key}: {total / 1024 / calls:.1f} KiB "
                     "per call")
        for st in stats[:top]:
            frame = st.traceback[0]
            where = frame.filename.replace(str(REPO) + "/", "").split("site-packages/")[-1]
            where = where.split("lib/python3.11/")[-1]
            lines.append(f"{st.size_diff / 1024 / calls:8.2f} KiB/call "
                         f"{st.count_diff / calls:7.1f} obj/call  {where}"
                         + (f":{frame.lineno}" if key == "lineno" else ""))
    return lines


async def measure(tmp: Path, calls: int, rate: float, warmup: int,
                  trace: bool = False) -> dict[str, Any]:
    receiver = await Receiver().start()
    sip_port, gw_port, api_port = free_port(), free_port(), free_port()
    stat = tmp / "uas_stat.csv"
    sipp_log = open(tmp / "sipp.out", "w")  # noqa: SIM115 (closed in finally)
    sipp = subprocess.Popen(
        ["sipp", "-sf", str(SCENARIO), "-i", "127.0.0.1", "-p", str(gw_port), "-t", "u1",
         "-mp", str(free_port()), "-nostdin", "-trace_stat", "-stf", str(stat), "-fd", "1",
         "-max_recv_loops", "2000", "-max_sched_loops", "2000"],
        cwd=tmp, stdout=sipp_log, stderr=subprocess.STDOUT)
    config = node_toml(sip_port=sip_port, api_port=api_port, gw_port=gw_port,
                       status=receiver.url("/status"), fee=receiver.url("/fee"))
    snap = tmp / "tracemalloc"
    top: list[str] = []
    daemon: Any
    if trace:
        from bench.cps import Daemon as PreludeDaemon

        daemon = PreludeDaemon(config, tmp, TRACEMALLOC_PRELUDE.format(frames=1, path=str(snap)))
    else:
        daemon = Daemon(config, tmp)
    try:
        await asyncio.to_thread(daemon.start, 60.0)
        assert daemon.proc is not None
        pid = daemon.proc.pid
        base = f"http://127.0.0.1:{api_port}"
        rss_start = rss_kib(pid)
        wcodes = await post_calls(base, 0, warmup, min(rate, 20))
        await wait_answers(receiver, 2 * warmup, 30)
        await asyncio.sleep(2)
        before = rss_kib(pid)
        snap0 = await snapshot(pid, snap, 0) if trace else None
        t0 = time.monotonic()
        half = calls // 2
        codes = await post_calls(base, warmup, half, rate)
        await wait_answers(receiver, 2 * (warmup + half), 60 + half / 20)
        await asyncio.sleep(2)
        mid, mid_bridged = rss_kib(pid), answers(receiver) // 2 - warmup
        for k, v in (await post_calls(base, warmup + half, calls - half, rate)).items():
            codes[k] = codes.get(k, 0) + v
        waited = await wait_answers(receiver, 2 * (warmup + calls), 60 + calls / 20)
        await asyncio.sleep(2)
        after = rss_kib(pid)
        if snap0 is not None:
            top = tracemalloc_top(snap0, await snapshot(pid, snap, 1), max(1, calls), 25)
        bridged = answers(receiver) // 2 - warmup
        up_s = time.monotonic() - t0
        alive = daemon.proc.poll() is None
        ready = next((i for i, ln in enumerate(daemon.output) if "voicecall ready" in ln), 0)
        logged = [ln.rstrip()[:240] for ln in daemon.output[ready + 1:]]
    finally:
        daemon.stop()
        if sipp.poll() is None:
            os.kill(sipp.pid, signal.SIGUSR1)
            try:
                sipp.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.kill(sipp.pid, signal.SIGKILL)
                sipp.wait()
        sipp_log.close()
        await receiver.stop()
    per_call = (after - before) / bridged if bridged > 0 else None
    # The second half alone: what one more call costs once pools and caches have grown.
    marginal = ((after - mid) / (bridged - mid_bridged) if bridged > mid_bridged else None)
    return {
        "calls": calls, "rate": rate, "warmup": warmup, "codes": codes,
        "warmup_codes": wcodes, "bridged": bridged, "all_bridged": bridged == calls,
        "rss_kib_at_ready": rss_start, "rss_kib_before": before, "rss_kib_after": after,
        "rss_kib_half": mid, "bridged_at_half": mid_bridged,
        "kib_per_call": per_call, "marginal_kib_per_call": marginal, "goal_kib": GOAL_KIB,
        "met": per_call is not None and bridged == calls and per_call <= GOAL_KIB,
        "seconds_to_all_bridged": waited, "seconds_up": up_s, "daemon_alive": alive,
        "daemon_log_lines": len(logged), "daemon_log_head": logged[:5],
        "load_avg_1m": os.getloadavg()[0], "tracemalloc_top": top,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calls", type=int, default=1000, help="concurrent bridged calls")
    ap.add_argument("--rate", type=float, default=50, help="click2Call requests per second")
    ap.add_argument("--warmup", type=int, default=20, help="callbacks before the baseline RSS")
    ap.add_argument("--json", help="write the result to this file")
    ap.add_argument("--tracemalloc", action="store_true",
                    help="diagnosis: tracemalloc in the daemon, top growth by line per call "
                    "(slows the daemon and adds its own overhead to RSS)")
    args = ap.parse_args()
    import structlog

    devnull = open(os.devnull, "w")  # noqa: SIM115 (lives as long as the process)
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(devnull))
    with tempfile.TemporaryDirectory() as d:
        r = asyncio.run(measure(Path(d), args.calls, args.rate, args.warmup, args.tracemalloc))
    print(json.dumps({k: v for k, v in r.items() if k != "tracemalloc_top"}, indent=2))
    for line in r["tracemalloc_top"]:
        print(line)
    per = r["kib_per_call"]
    print(f"# memory: {r['bridged']}/{r['calls']} calls bridged; daemon RSS "
          f"{r['rss_kib_before'] / 1024:.1f} → {r['rss_kib_after'] / 1024:.1f} MiB = "
          f"{per if per is not None else float('nan'):.1f} KiB per concurrent bridged call "
          f"(goal ≤ {GOAL_KIB} KiB); second half alone "
          f"{r['marginal_kib_per_call'] or float('nan'):.1f} KiB per call")
    if args.json:
        Path(args.json).write_text(json.dumps(r, indent=2))


if __name__ == "__main__":
    main()
