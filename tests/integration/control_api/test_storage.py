"""The SQL layer on SQLite and on a throwaway PostgreSQL database: migrations, atomic
per-app admission shared by two "nodes", disjoint outbox claims, lease expiry, config upsert."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text

from control_api.config import parse_config
from control_api.plane import load_config_into_store
from control_api.storage.db import Database
from control_api.storage.repo import Store


@pytest.fixture
async def stores(db_url: str) -> AsyncIterator[tuple[Store, Store]]:
    """Two independent engines on one database, like two nodes."""
    a, b = Database(db_url), Database(db_url)
    await asyncio.gather(a.migrate(), b.migrate())        # concurrent start-up
    sa, sb = Store(a), Store(b)
    await sa.upsert_account("sp1", "x")
    await sa.upsert_app("k1", {"account_id": "sp1", "app_secret": "s", "status_url": "",
                               "fee_url": "", "record": True, "max_concurrent_calls": 5,
                               "push_sign_newlines": True, "state": "active"})
    yield sa, sb
    await a.close()
    await b.close()


def call_row(i: int, app_key: str = "k1", callee: str = "+8613800000002",
             created: int | None = None) -> dict[str, object]:
    return {"session_id": f"s{i}", "node": "n1", "app_key": app_key, "account_id": "sp1",
            "service_type": "002", "display_nbr": "+8675500000001", "caller": "+8613800000001",
            "callee": callee, "display_callee_nbr": "", "bind_nbr": "", "user_data": "",
            "status_url": "", "fee_url": "", "record_flag": False, "party_type_required": False,
            "created_at": created if created is not None else int(time.time() * 1000)}


async def test_migrations_are_idempotent(stores: tuple[Store, Store]) -> None:
    assert await stores[0].db.migrate() == 2
    assert await stores[1].db.migrate() == 2


async def test_admission_is_atomic_across_nodes(stores: tuple[Store, Store]) -> None:
    a, b = stores
    results = await asyncio.gather(*((a if i % 2 else b).admit_call(call_row(i), 5)
                                     for i in range(40)))
    assert sum(results) == 5
    assert await a.in_use("k1") == 5
    ended = await a.end_call("s" + str(results.index(True)), {"ended_at": 1}, None)
    assert ended and await b.in_use("k1") == 4
    # idempotent: closing twice releases once
    assert not await b.end_call("s" + str(results.index(True)), {"ended_at": 1}, None)
    assert await a.in_use("k1") == 4


async def _cdrs(store: Store, n: int, end: str = "2026-03-01 12:00:00") -> None:
    for i in range(n):
        assert await store.admit_call(call_row(1000 + i), 10_000)
        await store.end_call(f"s{1000 + i}", {"ended_at": 1}, {
            "session_id": f"s{1000 + i}", "app_key": "k1", "fee_url": "http://x/fee",
            "call_end_time": end, "payload": json.dumps({"i": i}), "state": "pending",
            "attempts": 0, "next_attempt_at": 0, "created_at": 0})


async def test_claims_are_disjoint_and_leases_expire(stores: tuple[Store, Store]) -> None:
    a, b = stores
    await a.update_app("k1", {"max_concurrent_calls": 10_000})
    await _cdrs(a, 30)
    now = int(time.time() * 1000)
    ca, cb = await asyncio.gather(a.claim_cdrs("A", now, 10_000, now, limit=20),
                                  b.claim_cdrs("B", now, 10_000, now, limit=20))
    ids_a = {r["id"] for r in ca.rows}
    ids_b = {r["id"] for r in cb.rows}
    assert not ids_a & ids_b and len(ids_a | ids_b) == 30
    again = await a.claim_cdrs("C", now + 1, 10_000, now)
    assert again.rows == ()                              # all leased
    later = await b.claim_cdrs("D", now + 20_000, 10_000, now)
    assert len(later.rows) == 30                         # leases expired: claimed again
    await b.cdr_delivered([r["id"] for r in later.rows], "D")
    await a.cdr_delivered(list(ids_a), "A")             # stale token: no effect, no error
    rows = await a.list_cdrs(limit=100)
    assert {r["state"] for r in rows} == {"delivered"}


async def test_failed_attempts_park_then_repush(stores: tuple[Store, Store]) -> None:
    a, _ = stores
    await _cdrs(a, 1)
    for attempt in range(3):
        now = int(time.time() * 1000) + attempt * 10
        claim = await a.claim_cdrs(f"T{attempt}", now, 1000, now)
        assert len(claim.rows) == 1
        await a.cdr_failed([claim.rows[0]["id"]], f"T{attempt}", "HTTP 500", 0, max_retries=2)
    row = (await a.list_cdrs())[0]
    assert row["state"] == "parked" and row["attempts"] == 3 and row["last_error"] == "HTTP 500"
    assert (await a.claim_cdrs("X", int(time.time() * 1000), 1000, 10**15)).rows == ()
    assert await a.repush_cdrs(state="parked") == 1
    assert len((await a.claim_cdrs("Y", int(time.time() * 1000), 1000, 10**15)).rows) == 1


async def test_config_upsert_and_irreversible_release(db_url: str, tmp_path: object) -> None:
    db = Database(db_url)
    await db.migrate()
    store = Store(db)
    toml = """
[[accounts]]
id = "sp1"
[[apps]]
account = "sp1"
app_key = "k1"
app_secret = "first"
[[numbers]]
account = "sp1"
number = "+8675500000001"
state = "released"
[[templates]]
account = "sp1"
id = "bad"
text = "${DATE}${TIME}"
"""
    cfg = parse_config(toml, "t", environ={}).config
    warnings = await load_config_into_store(cfg, store)
    assert any("bad" in w for w in warnings)
    assert (await store.get_template("sp1", "bad"))["state"] == "rejected"  # type: ignore[index]
    cfg2 = parse_config(toml.replace("first", "second").replace('state = "released"',
                                                                 'state = "active"'),
                        "t", environ={}).config
    await load_config_into_store(cfg2, store)
    assert (await store.get_app("k1"))["app_secret"] == "second"  # type: ignore[index]
    assert (await store.get_number("+8675500000001"))["state"] == "released"  # type: ignore[index]
    assert await store.set_number_state("+8675500000001", "active") == "released"
    await db.close()


async def test_search_escapes_wildcards_and_usage(stores: tuple[Store, Store]) -> None:
    a, _ = stores
    await a.update_app("k1", {"max_concurrent_calls": 100})
    now = int(time.time() * 1000)
    for i, callee in enumerate(["+8613800000002", "+8613800000003", "+8613900000002"]):
        await a.admit_call(call_row(i, callee=callee, created=now - i), 100)
        await a.end_call(f"s{i}", {"ended_at": now, "minutes": 2, "charge_milli": 360}, None)
    found = await a.search_calls(since_ms=now - 10_000, callee="138000")
    assert {r["session_id"] for r in found} == {"s0", "s1"}
    assert await a.search_calls(since_ms=now - 10_000, callee="%") == []
    assert await a.search_calls(since_ms=now - 10_000, session_id="_") == []
    assert len(await a.search_calls(since_ms=now - 10_000, session_id="s")) == 3
    usage = await a.usage(now - 10_000, now + 10_000)
    assert len(usage) == 1 and usage[0]["calls"] == 3 and usage[0]["minutes"] == 6
    assert usage[0]["charge_milli"] == 1080


async def test_v1_database_gets_the_nodes_table(db_url: str) -> None:
    """A database made before migration 2 (no ``nodes``, schema_version 1) is upgraded."""
    db = Database(db_url)
    try:
        await db.migrate()
        async with db.engine.begin() as conn:
            await conn.execute(text("DROP TABLE nodes"))
            await conn.execute(text("DELETE FROM schema_version WHERE version = 2"))
        assert await db.migrate() == 2
        store = Store(db)
        await store.node_alive("vc1", "http://10.0.0.11:8080", 1000, now=5000)
        assert (await store.get_node("vc1")) == {"name": "vc1", "api_url": "http://10.0.0.11:8080",
                                                 "started_at": 1000, "heartbeat_at": 5000}
    finally:
        await db.close()


async def test_node_registry_is_shared(stores: tuple[Store, Store]) -> None:
    a, b = stores
    assert await b.get_node("vc1") is None
    await a.node_alive("vc1", "http://127.0.0.1:1", 1000, now=2000)
    await b.node_alive("vc2", "http://127.0.0.1:2", 1500, now=2500)
    await a.node_alive("vc1", "http://127.0.0.1:1", 1000, now=4000)       # heartbeat
    await a.node_stopped("vc2")
    assert [(n["name"], n["heartbeat_at"]) for n in await b.list_nodes()] == [
        ("vc1", 4000), ("vc2", 0)]
    await b.node_alive("vc2", "http://127.0.0.1:3", 9000, now=9000)       # restarted, moved
    assert await a.get_node("vc2") == {"name": "vc2", "api_url": "http://127.0.0.1:3",
                                       "started_at": 9000, "heartbeat_at": 9000}
