"""The database gauges (CDR outbox depth by state, oldest pending age, per-app ports in use and
limit) sampled from a real SQLite database filled through the Store's own write paths, and the
rest of the control-plane registry (deliveries, build info, runtime collectors)."""

from __future__ import annotations

import importlib.metadata
import platform
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from control_api.metrics import ControlMetrics, GaugeSampler, register_runtime_collectors
from control_api.pusher import Delivery
from control_api.storage.db import Database
from control_api.storage.repo import GaugeSample, Store

NOW_MS = 1_800_000_000_000
NODE = "vc1"


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    db = Database(f"sqlite+aiosqlite:///{tmp_path}/vc.db")
    await db.migrate()
    s = Store(db)
    await s.upsert_account("sp1", "SP")
    for key, limit in (("app-a", 7), ("app-b", 2), ("app-c", 1)):
        await s.upsert_app(key, {"account_id": "sp1", "app_secret": "s", "status_url": "",
                                 "fee_url": "", "record": False, "max_concurrent_calls": limit,
                                 "push_sign_newlines": True, "state": "active"})
    yield s
    await db.close()


def call_row(sid: str, app_key: str) -> dict[str, Any]:
    return {"session_id": sid, "node": NODE, "app_key": app_key, "account_id": "sp1",
            "service_type": "002", "display_nbr": "+1", "caller": "+2", "callee": "+3",
            "created_at": NOW_MS - 60_000}


def cdr(sid: str, app_key: str, created_at: int) -> dict[str, Any]:
    return {"session_id": sid, "app_key": app_key, "fee_url": "http://127.0.0.1:9/fee",
            "call_end_time": "2027-01-15 08:00:00", "payload": "{}", "state": "pending",
            "attempts": 0, "next_attempt_at": 0, "created_at": created_at}


def value(m: ControlMetrics, name: str, **labels: str) -> float | None:
    return m.registry.get_sample_value(name, {"node": NODE, **labels})


async def test_outbox_and_concurrency_gauges_exact(store: Store) -> None:
    # app-a: 5 calls admitted, 4 ended (each with a CDR); app-b: 2 admitted (at its limit),
    # a third refused; app-c: none.
    for i in range(5):
        assert await store.admit_call(call_row(f"a{i}", "app-a"), 7)
    for i in range(2):
        assert await store.admit_call(call_row(f"b{i}", "app-b"), 2)
    assert not await store.admit_call(call_row("b2", "app-b"), 2)
    ages_s = {"a0": 95, "a1": 42, "a2": 30, "a3": 10}
    for sid, age in ages_s.items():
        assert await store.end_call(sid, {"ended_at": NOW_MS, "state_code": 0},
                                    cdr(sid, "app-a", NOW_MS - age * 1000))
    # Outbox states through the worker's own paths: claim everything, a0 and a3 fail with no
    # retry budget (parked), a2 is delivered, a1 is handed back (still pending).
    claim = await store.claim_cdrs("t1", NOW_MS, 60_000, settle_before=NOW_MS)
    ids = {r["session_id"]: int(r["id"]) for r in claim.rows}
    assert set(ids) == set(ages_s)
    await store.cdr_failed([ids["a0"], ids["a3"]], "t1", "HTTP 500", NOW_MS, max_retries=0)
    await store.cdr_delivered([ids["a2"]], "t1")
    await store.cdr_release("t1")
    # a later CDR of app-b, still pending
    assert await store.end_call("b0", {"ended_at": NOW_MS, "state_code": 0},
                                cdr("b0", "app-b", NOW_MS - 5_000))

    m = ControlMetrics(NODE, dict, clock=lambda: NOW_MS / 1000)
    sampler = GaugeSampler(store.sample_gauges, m.set_sample, interval_s=3600)
    assert await sampler.sample_once()

    assert value(m, "voicecall_cdr_outbox_items", state="pending") == 2      # a1, b0
    assert value(m, "voicecall_cdr_outbox_items", state="parked") == 2       # a0, a3
    assert value(m, "voicecall_cdr_outbox_oldest_age_seconds") == 42.0      # a1
    assert value(m, "voicecall_app_concurrent_calls", app_key="app-a") == 1
    assert value(m, "voicecall_app_concurrent_calls", app_key="app-b") == 1
    assert value(m, "voicecall_app_concurrent_calls", app_key="app-c") == 0
    assert value(m, "voicecall_app_concurrent_calls_limit", app_key="app-a") == 7
    assert value(m, "voicecall_app_concurrent_calls_limit", app_key="app-b") == 2
    assert value(m, "voicecall_app_concurrent_calls_limit", app_key="app-c") == 1

    # Everything delivered or re-pushed and delivered, every call ended: all back to 0.
    assert await store.repush_cdrs(state="parked") == 2
    claim = await store.claim_cdrs("t2", NOW_MS, 60_000, settle_before=NOW_MS)
    assert len(claim.rows) == 4
    await store.cdr_delivered([int(r["id"]) for r in claim.rows], "t2")
    for sid in ("a4", "b1"):
        assert await store.end_call(sid, {"ended_at": NOW_MS, "state_code": 0}, None)
    assert await sampler.sample_once()
    assert value(m, "voicecall_cdr_outbox_items", state="pending") == 0
    assert value(m, "voicecall_cdr_outbox_items", state="parked") == 0
    assert value(m, "voicecall_cdr_outbox_oldest_age_seconds") == 0
    for app in ("app-a", "app-b", "app-c"):
        assert value(m, "voicecall_app_concurrent_calls", app_key=app) == 0


async def test_failed_sample_keeps_the_last_values(store: Store) -> None:
    m = ControlMetrics(NODE, dict, clock=lambda: NOW_MS / 1000)
    good = GaugeSample(3, 1, NOW_MS - 7_000, ())
    reads: list[GaugeSample | Exception] = [good, RuntimeError("database down")]

    async def read() -> GaugeSample:
        r = reads.pop(0)
        if isinstance(r, Exception):
            raise r
        return r

    sampler = GaugeSampler(read, m.set_sample, interval_s=3600)
    assert await sampler.sample_once()
    assert not await sampler.sample_once()
    assert value(m, "voicecall_cdr_outbox_items", state="pending") == 3
    assert value(m, "voicecall_cdr_outbox_items", state="parked") == 1
    assert value(m, "voicecall_cdr_outbox_oldest_age_seconds") == 7.0


def test_deliveries_build_info_and_runtime_collectors() -> None:
    reg = CollectorRegistry(auto_describe=True)
    m = ControlMetrics(NODE, lambda: {"calls_live": 3}, reg, started_at=1234.5)
    m.observe_delivery("status", Delivery(True, "", "ok", 0.02))
    m.observe_delivery("status", Delivery(False, "HTTP 500", "http_error", 0.01))
    m.observe_delivery("cdr", Delivery(False, "ReadTimeout", "timeout", 1.0))
    m.observe_delivery("cdr", Delivery(False, "app no longer exists", "error", None))
    got = {(k, r): reg.get_sample_value("voicecall_webhook_deliveries_total",
                                        {"node": NODE, "kind": k, "result": r})
           for k in ("status", "cdr") for r in ("ok", "http_error", "timeout", "error")}
    assert got == {("status", "ok"): 1, ("status", "http_error"): 1, ("status", "timeout"): 0,
                   ("status", "error"): 0, ("cdr", "ok"): 0, ("cdr", "http_error"): 0,
                   ("cdr", "timeout"): 1, ("cdr", "error"): 1}
    # a delivery that never reached HTTP has no duration
    assert reg.get_sample_value("voicecall_webhook_delivery_seconds_count",
                                {"node": NODE, "kind": "status"}) == 2
    assert reg.get_sample_value("voicecall_webhook_delivery_seconds_count",
                                {"node": NODE, "kind": "cdr"}) == 1
    assert reg.get_sample_value("voicecall_webhook_delivery_seconds_sum",
                                {"node": NODE, "kind": "cdr"}) == 1.0
    assert reg.get_sample_value("voicecall_build_info", {
        "node": NODE, "version": importlib.metadata.version("voicecall"),
        "python": platform.python_version()}) == 1
    assert reg.get_sample_value("voicecall_start_time_seconds", {"node": NODE}) == 1234.5
    assert reg.get_sample_value("voicecall_api_calls_live", {"node": NODE}) == 3
    # before the first sample the database gauges read 0, not missing
    assert reg.get_sample_value("voicecall_cdr_outbox_items",
                                {"node": NODE, "state": "pending"}) == 0
    assert reg.get_sample_value("process_start_time_seconds") is not None
    assert reg.get_sample_value("python_info", {
        "implementation": platform.python_implementation(),
        "major": str(platform.python_version_tuple()[0]),
        "minor": str(platform.python_version_tuple()[1]),
        "patchlevel": str(platform.python_version_tuple()[2]),
        "version": platform.python_version()}) == 1
    assert reg.get_sample_value("python_gc_collections_total", {"generation": "0"}) is not None
    # once per registry: registering again (a second component) neither raises nor doubles
    register_runtime_collectors(reg)
    text = m.render().decode()
    assert text.count("# TYPE process_cpu_seconds_total counter") == 1
    assert text.count("# TYPE python_info gauge") == 1
    assert text.count("# TYPE python_gc_collections_total counter") == 1
