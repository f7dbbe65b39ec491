"""Control API benchmark (prints numbers, asserts nothing).

1. API latency: signed click2Call requests at a fixed rate (default 200 req/s, open loop) to a
   node process running the control plane with the fake switch backend; every call pushes its
   status events and its CDR to a local receiver. Prints p50/p90/p99/max latency and errors.
2. CDR outbox throughput: N CDR rows written into the outbox, then the worker delivers them to
   the local receiver; prints FeeInfo per second and pushes per second (batched: several CDRs
   share a callEndTime, as under load).

    .venv/bin/python bench/api.py [--rate 200] [--seconds 10] [--cdrs 5000] [--db sqlite|postgres]

3. ``--switch`` (issue D): the REAL daemon (``control_api.cli serve``) with a SIPp UAS gateway
   that answers every INVITE with 486 at once, so each signed click2Call really originates a
   SIP call that ends within milliseconds, pushing status events and a CDR to a local receiver.
   Prints achieved rate, API latency percentiles, result codes, SIP calls seen by SIPp, status
   pushes and CDRs per second at the receiver, and the daemon's CPU time per request.

    .venv/bin/python bench/api.py --switch [--rate 200] [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from control_api.outbox import CdrOutbox  # noqa: E402
from control_api.storage.db import Database  # noqa: E402
from control_api.storage.repo import Store  # noqa: E402
from tests.integration.control_api.helpers import (  # noqa: E402
    APP_KEY,
    Receiver,
    aksk_headers,
    b64,
    free_port,
    node_toml,
)
from tests.integration.harness import Daemon  # noqa: E402
from tests.integration.harness import free_port as free_port_pair  # noqa: E402

# Busy at once: every INVITE gets 486 with a To tag, then the ACK closes the transaction.
BUSY_UAS = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="busy uas">
  <recv request="INVITE" />
  <send><![CDATA[
SIP/2.0 486 Busy Here
[last_Via:]
[last_From:]
[last_To:];tag=[pid]SIPpTag01[call_number]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0

]]></send>
  <recv request="ACK" />
</scenario>
"""


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


async def pg_database() -> tuple[str, str]:
    import asyncpg
    name = f"vc_bench_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect("postgresql://postgres@127.0.0.1:5432/postgres")
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    return name, f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"


async def drop_pg(name: str) -> None:
    import asyncpg
    conn = await asyncpg.connect("postgresql://postgres@127.0.0.1:5432/postgres")
    await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await conn.close()


async def api_latency(db_url: str, tmp: Path, rate: float, seconds: float,
                      receiver: Receiver, with_status: bool) -> None:
    data_dir = tmp / "data"
    (data_dir / "prompts").mkdir(parents=True)
    from tests.integration.control_api.conftest import write_prompts
    write_prompts(data_dir)
    port = free_port()
    cfg = tmp / "bench.toml"
    cfg.write_text(node_toml(data_dir=str(data_dir), db_url=db_url, port=port,
                             max_calls=100_000, lease_s=120)
                   .replace("cdr_retry_interval_s = 0.5", "cdr_retry_interval_s = 60")
                   .replace("timeout_s = 1", "timeout_s = 10"))
    node_log = open(os.environ.get("BENCH_NODE_LOG", os.devnull), "w")  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, "-m", "tests.integration.control_api.node_proc",
                             str(cfg), "0.5"], cwd=REPO, stdout=subprocess.PIPE, stderr=node_log)
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 60)
        base = line.split()[1].decode()
        status_url, fee_url = b64(receiver.url("/status")), b64(receiver.url("/fee"))
        latencies: list[float] = []
        errors: dict[str, int] = {}
        limits = httpx.Limits(max_connections=500, max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=base, timeout=30, limits=limits) as client:
            async def one() -> None:
                body = {"displayNbr": "+8675500000001", "displayCalleeNbr": "+8675500000002",
                        "callerNbr": f"+86138{random.randrange(10**8):08d}",
                        "calleeNbr": f"+86139{random.randrange(10**8):08d}",
                        "feeUrl": fee_url}
                if with_status:
                    body["statusUrl"] = status_url
                t0 = time.perf_counter()
                try:
                    r = await client.post("/rest/httpsessions/click2Call/v2.0",
                                          content=json.dumps(body), headers=aksk_headers())
                    code = r.json().get("resultcode", "?")
                except httpx.HTTPError as e:
                    code = type(e).__name__
                latencies.append((time.perf_counter() - t0) * 1000)
                if code != "0":
                    errors[code] = errors.get(code, 0) + 1

            n = int(rate * seconds)
            start = time.perf_counter()
            tasks = []
            for i in range(n):
                delay = start + i / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.create_task(one()))
            await asyncio.gather(*tasks)
            elapsed = time.perf_counter() - start
        print(f"api: {n} signed click2Call at {rate:.0f} req/s target, achieved "
              f"{n / elapsed:.1f} req/s over {elapsed:.1f} s")
        print(f"api latency ms: p50 {pct(latencies, 50):.2f}  p90 {pct(latencies, 90):.2f}  "
              f"p99 {pct(latencies, 99):.2f}  max {max(latencies):.2f}  "
              f"mean {statistics.fmean(latencies):.2f}")
        print(f"api errors: {errors or 'none'}")
        deadline = time.time() + 30
        while time.time() < deadline and sum(
                len(r.body["feeLst"]) for r in receiver.on("/fee")) < n - sum(errors.values()):
            await asyncio.sleep(0.2)
        print(f"webhooks during load: {len(receiver.on('/status'))} status pushes, "
              f"{sum(len(r.body['feeLst']) for r in receiver.on('/fee'))} CDRs in "
              f"{len(receiver.on('/fee'))} pushes")
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        node_log.close()


async def cdr_throughput(db_url: str, count: int, receiver: Receiver) -> None:
    db = Database(db_url)
    await db.migrate()
    store = Store(db)
    await store.upsert_account("sp1", "bench")
    await store.upsert_app(APP_KEY + "-cdr", {
        "account_id": "sp1", "app_secret": "s", "status_url": "", "fee_url": "",
        "record": False, "max_concurrent_calls": 10**6, "push_sign_newlines": True,
        "state": "active"})
    fee_url = receiver.url("/cdr-bench")
    base_second = int(time.time()) - 3600
    async with db.engine.begin() as conn:
        from control_api.storage import schema
        rows = []
        for i in range(count):
            end = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(base_second + i // 5))
            rows.append({"session_id": f"bench-{i}", "app_key": APP_KEY + "-cdr",
                         "fee_url": fee_url, "call_end_time": end,
                         "payload": json.dumps({"sessionId": f"bench-{i}", "callEndTime": end}),
                         "state": "pending", "attempts": 0, "next_attempt_at": 0,
                         "created_at": 0})
        await conn.execute(schema.cdr_outbox.insert(), rows)
    client = httpx.AsyncClient(limits=httpx.Limits(max_connections=100), trust_env=False)
    outbox = CdrOutbox(store, client, store.get_app, node="bench", timeout_s=10,
                       retry_interval_s=60, max_retries=6, batch_delay_s=0, poll_s=0.05,
                       lease_s=60, beijing_time=True)
    t0 = time.perf_counter()
    outbox.start()
    while outbox.delivered + outbox.failed < count:
        await asyncio.sleep(0.02)
    elapsed = time.perf_counter() - t0
    await outbox.stop()
    await client.aclose()
    await db.close()
    pushes = len(receiver.on("/cdr-bench"))
    print(f"cdr outbox: {outbox.delivered} CDRs delivered ({outbox.failed} failed) in "
          f"{pushes} pushes, {elapsed:.2f} s → {outbox.delivered / elapsed:.0f} CDR/s, "
          f"{pushes / elapsed:.0f} pushes/s (5 CDRs share each callEndTime)")


async def click2call(client: httpx.AsyncClient, i: int) -> str:
    """One signed click2Call numbered ``i`` (distinct caller and callee per request, so no
    frequency limit can bite); its resultcode, or what failed."""
    body = {"displayNbr": "+8675500000001", "displayCalleeNbr": "+8675500000002",
            "callerNbr": f"+86138{i:08d}", "calleeNbr": f"+86139{i:08d}"}
    try:
        r = await client.post("/rest/httpsessions/click2Call/v2.0", content=json.dumps(body),
                              headers=aksk_headers())
        return str(r.json().get("resultcode", f"http{r.status_code}"))
    except (httpx.HTTPError, ValueError) as e:
        return type(e).__name__


def switch_toml(*, sip_port: int, api_port: int, gw_port: int, status: str, fee: str,
                gateway: str = "busy", sip_extra: str = "", media: str = "") -> str:
    """The daemon's config for the --switch bench (and bench/memory.py): every called number
    routed to one SIPp gateway; ``sip_extra`` lines go into [sip], ``media`` is a whole
    [media] section."""
    return f"""
[node]
name = "vc1"
data_dir = "./data"

[sip]
listen = ["udp:127.0.0.1:{sip_port}"]
{sip_extra}
{media}

[api]
listen = "127.0.0.1:{api_port}"
callee_limit = "off"
max_inflight_requests = 0

[webhooks]
timeout_s = 10
cdr_retry_interval_s = 60

[log]
level = "warning"

[[gateways]]
name = "{gateway}"
address = "udp:127.0.0.1:{gw_port}"
ping_interval_s = 0

[[routes]]
prefix = "+86138"
gateways = ["{gateway}"]

[[routes]]
prefix = "+86139"
gateways = ["{gateway}"]

[[accounts]]
id = "sp1"

[[apps]]
account = "sp1"
app_key = "{APP_KEY}"
app_secret = "test-app-secret-01"
status_url = "{status}"
fee_url = "{fee}"
record = false
max_concurrent_calls = 100000

[[numbers]]
account = "sp1"
number = "+8675500000001"
kind = "display"

[[numbers]]
account = "sp1"
number = "+8675500000002"
kind = "display"
"""


def machine_busy_s() -> float:
    """CPU seconds all cores spent busy (not idle/iowait) since boot, from /proc/stat."""
    with open("/proc/stat", encoding="ascii") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (sum(v[:8]) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc/PID/stat (fields 14 and 15, in clock ticks)."""
    raw = Path(f"/proc/{pid}/stat").read_text()
    fields = raw[raw.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def sipp_calls(stat_file: Path) -> str:
    """Total calls, successful and failed calls from the last line of SIPp's -trace_stat CSV."""
    try:
        lines = [ln for ln in stat_file.read_text().splitlines() if ln.strip()]
    except OSError:
        return "no stat file"
    if len(lines) < 2:
        return "no stat rows"
    head, last = lines[0].split(";"), lines[-1].split(";")
    row = dict(zip(head, last, strict=False))
    return (f"{row.get('IncomingCall(C)', row.get('TotalCallCreated', '?'))} INVITEs received, "
            f"{row.get('SuccessfulCall(C)', '?')} successful, "
            f"{row.get('FailedCall(C)', '?')} failed (cumulative)")


async def switch_bench(tmp: Path, rate: float, seconds: float, receiver: Receiver,
                       warmup: int = 0) -> dict[str, object]:
    sip_port, gw_port, api_port = free_port_pair(), free_port_pair(), free_port()
    scen = tmp / "busy_uas.xml"
    scen.write_text(BUSY_UAS)
    stat = tmp / "uas_stat.csv"
    sipp_log = open(tmp / "sipp.out", "w")  # noqa: SIM115 (closed in finally)
    sipp = subprocess.Popen(
        ["sipp", "-sf", str(scen), "-i", "127.0.0.1", "-p", str(gw_port), "-t", "u1",
         "-mp", str(free_port_pair()), "-nostdin", "-trace_stat", "-stf", str(stat), "-fd", "1"],
        cwd=tmp, stdout=sipp_log, stderr=subprocess.STDOUT)
    daemon = Daemon(switch_toml(sip_port=sip_port, api_port=api_port, gw_port=gw_port,
                               status=receiver.url("/status"), fee=receiver.url("/fee")),
                    tmp)
    try:
        await asyncio.to_thread(daemon.start, 60.0)
        assert daemon.proc is not None
        pid = daemon.proc.pid
        base = f"http://127.0.0.1:{api_port}"
        latencies: list[float] = []
        codes: dict[str, int] = {}
        limits = httpx.Limits(max_connections=500, max_keepalive_connections=0)

        def cdrs() -> int:
            return sum(len(r.body.get("feeLst", [])) for r in receiver.on("/fee")
                       if isinstance(r.body, dict))

        async with httpx.AsyncClient(base_url=base, timeout=30, limits=limits,
                                     trust_env=False) as client:
            async def one(i: int, measured: bool = True) -> None:
                t0 = time.perf_counter()
                code = await click2call(client, i)
                if measured:
                    latencies.append((time.perf_counter() - t0) * 1000)
                    codes[code] = codes.get(code, 0) + 1

            # Warm-up (not measured): the first requests pay lazy imports, DB connections and
            # caches. Sent at 20/s; their pushes are waited for and left out of the counts.
            warm = []
            for i in range(warmup):
                warm.append(asyncio.create_task(one(10**7 + i, measured=False)))
                await asyncio.sleep(0.05)
            await asyncio.gather(*warm)
            warm_deadline = time.perf_counter() + 15
            while warmup and time.perf_counter() < warm_deadline and (
                    cdrs() < warmup or len(receiver.on("/status")) < 2 * warmup):
                await asyncio.sleep(0.1)
            cdr0, push0, fee0 = cdrs(), len(receiver.on("/status")), len(receiver.on("/fee"))
            cpu0, own0, busy0 = cpu_seconds(pid), time.process_time(), machine_busy_s()
            n = int(rate * seconds)
            start = time.perf_counter()
            tasks = []
            for i in range(n):
                delay = start + i / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.create_task(one(i)))
            sent = time.perf_counter() - start
            await asyncio.gather(*tasks)
            elapsed = time.perf_counter() - start
        ok = codes.get("0", 0)
        drain_deadline = time.perf_counter() + 15
        # Drain: wait (≤ 15 s) for one CDR and two status pushes (callout, disconnect of the
        # busy A leg) per accepted call.
        while time.perf_counter() < drain_deadline and (
                cdrs() - cdr0 < ok or len(receiver.on("/status")) - push0 < 2 * ok):
            await asyncio.sleep(0.1)
        window = time.perf_counter() - start
        cpu, own = cpu_seconds(pid) - cpu0, time.process_time() - own0
        # Everything else on the (shared) machine: all busy CPU minus the daemon and this
        # client (SIPp and the receiver's share is small and counted here too).
        others = max(0.0, machine_busy_s() - busy0 - cpu - own)
        print(f"switch: {n} signed click2Call, sent at {n / sent:.1f} req/s "
              f"(target {rate:.0f}), all answered after {elapsed:.1f} s")
        print(f"api latency ms: p50 {pct(latencies, 50):.2f}  p90 {pct(latencies, 90):.2f}  "
              f"p99 {pct(latencies, 99):.2f}  max {max(latencies):.2f}  "
              f"mean {statistics.fmean(latencies):.2f}")
        print(f"result codes: {dict(sorted(codes.items()))}")
        pushes, n_cdrs = len(receiver.on("/status")) - push0, cdrs() - cdr0
        fee_posts = len(receiver.on("/fee")) - fee0
        print(f"receiver over {window:.1f} s (load + drain): {pushes} status pushes "
              f"({pushes / window:.0f}/s), {n_cdrs} CDRs ({n_cdrs / window:.0f}/s) in "
              f"{fee_posts} fee pushes; missing after drain: {max(0, ok - n_cdrs)} CDRs, "
              f"{max(0, 2 * ok - pushes)} status pushes")
        print(f"daemon CPU: {cpu:.2f} s over the window = {cpu / n * 1000:.2f} ms per request "
              f"({cpu / window * 100:.0f}% of one core); bench client itself: {own:.2f} s CPU; "
              f"everything else on the machine {others / window * 100:.0f}% of one core")
        result: dict[str, object] = {
            "rate": rate, "seconds": seconds, "warmup": warmup, "requests": n,
            "sent_rate": n / sent,
            "answered_after_s": elapsed, "p50_ms": pct(latencies, 50),
            "p90_ms": pct(latencies, 90), "p99_ms": pct(latencies, 99),
            "max_ms": max(latencies), "codes": dict(sorted(codes.items())),
            "status_pushes": pushes, "cdrs": n_cdrs, "missing_cdrs": max(0, ok - n_cdrs),
            "missing_status": max(0, 2 * ok - pushes), "daemon_cpu_ms_per_request": cpu / n * 1000,
            "daemon_cpu_pct": cpu / window * 100, "client_cpu_s": own,
            "others_cpu_pct": others / window * 100,
            "load_avg_1m": os.getloadavg()[0]}
        if daemon.proc.poll() is not None:
            print(f"daemon EXITED with {daemon.proc.returncode}")
        ready = next((i for i, ln in enumerate(daemon.output) if "voicecall ready" in ln), 0)
        logged = daemon.output[ready + 1:]
        print(f"daemon log lines (warning+) after ready: {len(logged)}")
        for ln in logged[:8]:
            print("  ", ln.rstrip()[:240])
    finally:
        daemon.stop()
        if sipp.poll() is None:
            os.kill(sipp.pid, signal.SIGUSR1)    # SIPp dumps its final stats and exits
            try:
                sipp.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.kill(sipp.pid, signal.SIGKILL)
                sipp.wait()
        sipp_log.close()
    print(f"sipp UAS: {sipp_calls(stat)}")
    result["sipp"] = sipp_calls(stat)
    return result


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rate", type=float, default=200)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--cdrs", type=int, default=5000)
    ap.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    ap.add_argument("--status", action="store_true",
                    help="also push the 8 status events of every call to the receiver")
    ap.add_argument("--switch", action="store_true",
                    help="real daemon originating every click2Call to a SIPp UAS (486 Busy)")
    ap.add_argument("--json", help="--switch: write the measured numbers to this file")
    ap.add_argument("--warmup", type=int, default=0,
                    help="--switch: requests sent (at 20/s) and drained before the measurement")
    args = ap.parse_args()
    import structlog
    devnull = open(os.devnull, "w")  # noqa: SIM115 (lives as long as the process)
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(devnull))
    receiver = await Receiver().start()
    if args.switch:
        with tempfile.TemporaryDirectory() as d:
            result = await switch_bench(Path(d), args.rate, args.seconds, receiver,
                                        args.warmup)
        await receiver.stop()
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=2))
        return
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        pg_name = None
        if args.db == "postgres":
            pg_name, url = await pg_database()
            pg_name2, url2 = await pg_database()
        else:
            url = f"sqlite+aiosqlite:///{tmp}/api.db"
            url2 = f"sqlite+aiosqlite:///{tmp}/cdr.db"
        print(f"database: {args.db}")
        try:
            await api_latency(url, tmp, args.rate, args.seconds, receiver, args.status)
            await cdr_throughput(url2, args.cdrs, receiver)
        finally:
            if pg_name:
                await drop_pg(pg_name)
                await drop_pg(pg_name2)
    await receiver.stop()


if __name__ == "__main__":
    asyncio.run(main())
