"""Control API benchmark (prints numbers, asserts nothing).

1. API latency: signed click2Call requests at a fixed rate (default 200 req/s, open loop) to a
   node process running the control plane with the fake switch backend; every call pushes its
   status events and its CDR to a local receiver. Prints p50/p90/p99/max latency and errors.
2. CDR outbox throughput: N CDR rows written into the outbox, then the worker delivers them to
   the local receiver; prints FeeInfo per second and pushes per second (batched: several CDRs
   share a callEndTime, as under load).

    .venv/bin/python bench/api.py [--rate 200] [--seconds 10] [--cdrs 5000] [--db sqlite|postgres]
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


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rate", type=float, default=200)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--cdrs", type=int, default=5000)
    ap.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    ap.add_argument("--status", action="store_true",
                    help="also push the 8 status events of every call to the receiver")
    args = ap.parse_args()
    import structlog
    devnull = open(os.devnull, "w")  # noqa: SIM115 (lives as long as the process)
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(devnull))
    receiver = await Receiver().start()
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
