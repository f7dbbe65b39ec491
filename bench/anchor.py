"""Anchor: CPU per relayed RTP packet, voicecall's bridge vs rtpengine, in the same run.

    .venv/bin/python bench/anchor.py                       # 500 calls, 10 s, 2 rounds
    .venv/bin/python bench/anchor.py --calls 200 --duration 5 --rounds 1 --json out.json

Both relays get the same load from the same generator process (bench/media.py's native C
generator): N calls, two legs each, 20 ms A-law RTP on both legs, received back on the other
leg (loss and added jitter measured by the generator as in bench/media.py).

* voicecall: a MediaEngine in this process (uvloop), N bridges (``media.run_step`` of
  bench/media.py, mode bridge); CPU = this process's utime+stime over the traffic window.
* rtpengine (Debian ``rtpengine-daemon``, userspace: ``--table=-1``), driven over its ng
  protocol (bench/ng.py): per call ``offer`` with leg A's SDP, ``answer`` with leg B's, the
  generator sends A's RTP to the port in the answer's SDP and B's to the port in the offer's;
  CPU = rtpengine's utime+stime (/proc/PID/stat, all threads) over the same window.

CPU per relayed packet = CPU seconds / packets relayed in the window (for voicecall the
engine's sent-packet counter, for rtpengine the packets the generator received). Rounds
alternate voicecall, rtpengine, … so a burst of load from others on the shared machine does not
land on one side only; the ratio is of the per-side medians. Goal: ours / rtpengine ≤ 1.5.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench import media as mb  # noqa: E402
from bench import ng  # noqa: E402
from tests.integration.harness import free_port  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")
RATIO_GOAL = 1.5


def proc_cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rtpengine_calls(client: ng.NgClient, gen_ports: list[int], tag: str) -> list[int]:
    """Create one relayed call per pair of generator ports; returns, per generator socket,
    the rtpengine port it must send to."""
    targets = [0] * len(gen_ports)
    for c in range(len(gen_ports) // 2):
        pa, pb = gen_ports[2 * c], gen_ports[2 * c + 1]
        call_id = f"{tag}-{c}"
        offered = client.request(ng.offer(call_id, "a", ng.sdp_for(pa)))
        answered = client.request(ng.answer(call_id, "a", "b", ng.sdp_for(pb)))
        targets[2 * c + 1] = ng.sdp_audio_port(_sdp(offered))   # B sends here
        targets[2 * c] = ng.sdp_audio_port(_sdp(answered))      # A sends here
    return targets


def _sdp(reply: dict[str, object]) -> bytes:
    sdp = reply.get("sdp")
    if not isinstance(sdp, bytes):
        raise ng.NgError(f"reply without SDP: {reply}")
    return sdp


def rtpengine_delete(client: ng.NgClient, n: int, tag: str) -> None:
    for c in range(n):
        with contextlib.suppress(ng.NgError):
            client.request(ng.delete(f"{tag}-{c}", "a"))


async def rtpengine_step(client: ng.NgClient, pid: int, gen: mb.GenClient, n: int,
                         duration: float, tag: str) -> dict[str, Any]:
    ports = (await gen.call(30, cmd="open", n=2 * n))["ports"]
    try:
        t_setup = time.monotonic()
        targets = await asyncio.to_thread(rtpengine_calls, client, ports, tag)
        setup_s = time.monotonic() - t_setup
        await asyncio.sleep(0.2)
        c0, w0, m0 = proc_cpu_s(pid), time.monotonic(), mb.machine_busy_s()
        own0 = mb.cpu_s()
        res = await gen.call(duration + 60, cmd="run", targets=targets, duration=duration,
                             send=True)
        c1, w1, m1 = proc_cpu_s(pid), time.monotonic(), mb.machine_busy_s()
        own = mb.cpu_s() - own0
    finally:
        await asyncio.to_thread(rtpengine_delete, client, n, tag)
        await gen.call(30, cmd="close")
    sent, received = res["sent"], res["received"]
    lost = sum(max(0, sent[2 * c] - received[2 * c + 1]) + max(0, sent[2 * c + 1] - received[2 * c])
               for c in range(n))
    relayed = sum(received)
    return {
        "relay": "rtpengine", "n": n, "duration_s": duration, "setup_s": setup_s,
        "cpu_s": c1 - c0, "cpu_pct": 100 * (c1 - c0) / (w1 - w0), "packets": relayed,
        "cpu_us_per_packet": 1e6 * (c1 - c0) / relayed if relayed else None,
        "sent": sum(sent), "lost": lost, "jitter_p99_ms": res["delays"].get("added_p99_ms"),
        "gen_late_p99_ms": res["gen_late_p99_ms"],
        "gen_cpu_pct": 100 * res["gen_cpu_s"] / (w1 - w0),
        "others_cpu_pct": max(0.0, 100 * ((m1 - m0) - (c1 - c0) - res["gen_cpu_s"] - own)
                              / (w1 - w0)),
        "load_avg_1m": os.getloadavg()[0],
    }


async def voicecall_step(engine: Any, gen: mb.GenClient, n: int, duration: float,
                         data_dir: Path) -> dict[str, Any]:
    r = await mb.run_step(engine, gen, "bridge", n, duration, data_dir)
    cpu_us = r["cpu_us_per_packet"]
    return {
        "relay": "voicecall", "n": n, "duration_s": duration,
        "cpu_s": (cpu_us or 0) * r["packets_out"] / 1e6, "cpu_pct": r["engine_cpu_pct"],
        "packets": r["packets_out"], "cpu_us_per_packet": cpu_us, "sent": r["sent"],
        "lost": r["lost"], "jitter_p99_ms": r["jitter_p99_ms"],
        "gen_late_p99_ms": r["gen_late_p99_ms"], "gen_cpu_pct": r["gen_cpu_pct"],
        "others_cpu_pct": r["others_cpu_pct"], "load_avg_1m": r["load_avg_1m"],
    }


async def run(n: int, duration: float, rounds: int, rtp_ports: str) -> dict[str, Any]:
    with contextlib.suppress(ValueError, OSError):
        _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    from media.config import MediaConfig
    from media.engine import MediaEngine

    workdir = Path(tempfile.mkdtemp(prefix="vc-anchor-"))
    lo, hi = (int(x) for x in rtp_ports.split("-"))
    mid = (lo + hi) // 2
    engine = MediaEngine(MediaConfig(rtp_ports=f"{lo}-{mid}", rtp_timeout_s=0),
                         bind_ip="127.0.0.1", advertise_ip="127.0.0.1", data_dir=workdir)
    rtpe = ng.Rtpengine(ng_port=free_port(), port_min=mid + 1, port_max=hi, workdir=workdir)
    proc = None
    steps: list[dict[str, Any]] = []
    try:
        await engine.start(default_prompts=False)
        exe = mb.build_native_generator(workdir)
        if exe is None:
            raise SystemExit("anchor: needs gcc for the native generator (same load both sides)")
        proc = await asyncio.create_subprocess_exec(
            str(exe), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            limit=1 << 24)
        gen = mb.GenClient(proc, native=True)
        client = await asyncio.to_thread(rtpe.start)
        assert rtpe.proc is not None
        pid = rtpe.proc.pid
        for k in range(rounds):
            for relay in ("voicecall", "rtpengine"):
                if relay == "voicecall":
                    s = await voicecall_step(engine, gen, n, duration, workdir)
                else:
                    s = await rtpengine_step(client, pid, gen, n, duration, f"r{k}")
                s["round"] = k
                steps.append(s)
                print(json.dumps(s), flush=True)
                print(f"# {relay:<9} N={n}: {s['cpu_us_per_packet'] or 0:.2f} us CPU/packet, "
                      f"{s['cpu_pct']:.0f}% of a core, lost={s['lost']}, "
                      f"jitter_p99={s['jitter_p99_ms'] or 0:.2f} ms, "
                      f"gen_cpu={s['gen_cpu_pct']:.0f}%, others={s['others_cpu_pct']:.0f}%, "
                      f"load={s['load_avg_1m']:.2f}", flush=True)
        client.close()
    finally:
        rtpe.stop()
        with contextlib.suppress(Exception):
            await engine.stop()
        if proc is not None and proc.returncode is None:
            proc.kill()  # our own child, by its handle
            await proc.wait()
        rtpe_log = rtpe.log_tail(5)
        shutil.rmtree(workdir, ignore_errors=True)

    def med(relay: str) -> float | None:
        v = [s["cpu_us_per_packet"] for s in steps if s["relay"] == relay and s["cpu_us_per_packet"]]
        return statistics.median(v) if v else None

    ours, theirs = med("voicecall"), med("rtpengine")
    ratio = ours / theirs if ours and theirs else None
    return {
        "calls": n, "duration_s": duration, "rounds": rounds, "steps": steps,
        "voicecall_us_per_packet": ours, "rtpengine_us_per_packet": theirs,
        "ratio": ratio, "goal": RATIO_GOAL, "met": ratio is not None and ratio <= RATIO_GOAL,
        "lossless": all(s["lost"] == 0 for s in steps),
        "rtpengine_version": rtpengine_version(), "rtpengine_log_tail": rtpe_log,
    }


def rtpengine_version() -> str:
    import subprocess

    binary = ng.Rtpengine.binary()
    if binary is None:
        return "not installed"
    r = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10,
                       check=False)
    return (r.stdout + r.stderr).strip().splitlines()[-1] if (r.stdout + r.stderr).strip() else "?"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calls", type=int, default=500, help="relayed calls (2 legs each)")
    ap.add_argument("--duration", type=float, default=10.0, help="seconds of traffic per step")
    ap.add_argument("--rounds", type=int, default=2, help="voicecall+rtpengine step pairs")
    ap.add_argument("--ports", default="12000-19999",
                    help="RTP ports: lower half for voicecall, upper half for rtpengine")
    ap.add_argument("--no-uvloop", action="store_true")
    ap.add_argument("--json", help="write the result to this file")
    args = ap.parse_args()
    if not args.no_uvloop:
        import uvloop

        uvloop.install()
    result = asyncio.run(run(args.calls, args.duration, args.rounds, args.ports))
    print(f"# CPU per relayed packet (median of {args.rounds} rounds): voicecall "
          f"{result['voicecall_us_per_packet'] or 0:.2f} us, rtpengine "
          f"{result['rtpengine_us_per_packet'] or 0:.2f} us ({result['rtpengine_version']}); "
          f"ratio {result['ratio'] or 0:.2f} (goal ≤ {RATIO_GOAL})", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    os._exit(0)


if __name__ == "__main__":
    main()
