"""The durable CDR outbox worker (EV-3, EV-4).

CDR rows are inserted in the same transaction that closes the call
(:meth:`Store.end_call`). This worker leases due rows, groups them per app, fee URL and
``callEndTime`` into pushes of at most 50 FeeInfo, and marks them delivered or failed. A failed
push is retried ``cdr_max_retries`` times ``cdr_retry_interval_s`` apart, then the rows are
parked for a manual re-push. Leases expire, so rows held by a killed process are delivered by
the next claimant: at-least-once, never lost. Several nodes share one outbox on PostgreSQL.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import structlog

from control_api.pusher import Delivery, DeliveryObserver, PushTarget, post_json
from control_api.storage.repo import Row, Store

log = structlog.get_logger("voicecall.outbox")

MAX_BATCH = 50

AppLookup = Callable[[str], Awaitable[Row | None]]


def group_batches(rows: tuple[Row, ...] | list[Row]) -> list[list[Row]]:
    """EV-3: CDRs of one app with the same callEndTime (and fee URL) in pushes of ≤ 50."""
    groups: dict[tuple[str, str, str], list[Row]] = {}
    for r in rows:
        groups.setdefault((r["app_key"], r["fee_url"], r["call_end_time"]), []).append(r)
    out: list[list[Row]] = []
    for g in groups.values():
        out.extend(g[i:i + MAX_BATCH] for i in range(0, len(g), MAX_BATCH))
    return out


class CdrOutbox:
    def __init__(self, store: Store, client: httpx.AsyncClient, app_lookup: AppLookup, *,
                 node: str, timeout_s: float, retry_interval_s: float, max_retries: int,
                 batch_delay_s: float, poll_s: float, lease_s: float,
                 beijing_time: bool, observe: DeliveryObserver | None = None) -> None:
        self.store = store
        self.client = client
        self.app_lookup = app_lookup
        self.node = node
        self.timeout_s = timeout_s
        self.retry_interval_s = retry_interval_s
        self.max_retries = max_retries
        self.batch_delay_s = batch_delay_s
        self.poll_s = poll_s
        self.lease_s = max(lease_s, timeout_s * 2)
        self.beijing_time = beijing_time
        self.observe = observe
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._sem = asyncio.Semaphore(32)
        self.delivered = 0
        self.failed = 0

    def nudge(self) -> None:
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="cdr-outbox")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        while True:
            try:
                n = await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception:  # database down, etc.: log, back off, keep the worker alive
                log.exception("outbox_cycle_failed")
                n = 0
            if n:
                continue  # there may be more due rows
            try:
                await asyncio.wait_for(self._wake.wait(), self.poll_s)
            except TimeoutError:
                pass
            self._wake.clear()
            if self.batch_delay_s:
                await asyncio.sleep(min(self.batch_delay_s, self.poll_s))

    async def run_once(self) -> int:
        """One claim-and-deliver cycle; returns how many CDR rows were handled. The pushes of a
        cycle run concurrently; their outcomes are recorded in one transaction per outcome."""
        now_ms = int(time.time() * 1000)
        token = f"{self.node}:{uuid.uuid4().hex[:16]}"
        claim = await self.store.claim_cdrs(
            token, now_ms, int(self.lease_s * 1000),
            settle_before=now_ms - int(self.batch_delay_s * 1000), limit=500)
        if not claim.rows:
            return 0
        batches = group_batches(claim.rows)
        try:
            outcomes = await asyncio.gather(*(self._deliver(b) for b in batches))
        except asyncio.CancelledError:
            # clean shutdown mid-delivery: hand the rows back now instead of after the lease
            # (the receiver may still have got them: at-least-once)
            await asyncio.shield(self.store.cdr_release(token))
            raise
        delivered = [int(r["id"]) for b, (ok, _) in zip(batches, outcomes, strict=True) if ok
                     for r in b]
        if delivered:
            await self.store.cdr_delivered(delivered, token)
            self.delivered += len(delivered)
        failed: dict[str, list[int]] = {}
        for b, (ok, reason) in zip(batches, outcomes, strict=True):
            if not ok:
                failed.setdefault(reason, []).extend(int(r["id"]) for r in b)
        next_at = int((time.time() + self.retry_interval_s) * 1000)
        for reason, ids in failed.items():
            await self.store.cdr_failed(ids, token, reason, next_at, self.max_retries)
            self.failed += len(ids)
        return len(claim.rows)

    async def _deliver(self, batch: list[Row]) -> tuple[bool, str]:
        app = await self.app_lookup(batch[0]["app_key"])
        if app is None:
            d = Delivery(False, "app no longer exists", "error", None)
        else:
            target = PushTarget(batch[0]["fee_url"], app["app_key"], app["app_secret"],
                                bool(app["push_sign_newlines"]))
            body: dict[str, Any] = {"eventType": "fee",
                                    "feeLst": [json.loads(r["payload"]) for r in batch]}
            async with self._sem:
                d = await post_json(self.client, target, body, self.timeout_s,
                                    self.beijing_time)
        if self.observe is not None:
            self.observe("cdr", d)
        # One line per CDR (a push carries up to 50 calls): every line about a call names
        # its session_id and app_key, so a search by session finds its CDR's fate.
        for r in batch:
            clog = log.bind(session_id=r["session_id"], app_key=r["app_key"])
            if d.ok:
                clog.info("cdr_delivered", batch_size=len(batch))
            else:
                clog.warning("cdr_push_failed", batch_size=len(batch), result=d.result,
                             reason=d.reason, attempt=int(r["attempts"]) + 1)
        return d.ok, d.reason
