"""Webhook delivery: signing (§1.3), the status pusher (EV-2: in order per call, concurrent
across calls, never retried) and the receiver success rule ("Our decisions": HTTP 200 and, if
the JSON body has ``resultcode``, it is ``"0"``)."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import structlog

from control_api.auth import AKSK_AUTHORIZATION, BEIJING_OFFSET_S, push_digest

log = structlog.get_logger("voicecall.pusher")


@dataclass(frozen=True, slots=True)
class PushTarget:
    url: str
    app_key: str
    app_secret: str
    newlines: bool = True


def push_headers(target: PushTarget, now: float, beijing_time: bool) -> dict[str, str]:
    nonce = secrets.token_hex(16)
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ",
                            time.gmtime(now + (BEIJING_OFFSET_S if beijing_time else 0)))
    digest = push_digest(target.app_secret, target.url, nonce, created, target.newlines)
    return {
        "Content-Type": "application/json;charset=UTF-8",
        "Authorization": AKSK_AUTHORIZATION,
        "X-AKSK": (f'UsernameToken Username="{target.app_key}", PasswordDigest="{digest}", '
                   f'Nonce="{nonce}", Created="{created}"'),
    }


@dataclass(frozen=True, slots=True)
class Delivery:
    """The outcome of one webhook POST. ``result`` is the metric label: ``ok``; ``http_error``
    (the receiver answered but refused: not HTTP 200, or ``resultcode`` ≠ "0"); ``timeout``
    (no complete answer within the timeout); ``error`` (any other failure: connection refused
    or reset, bad response, nothing to post to). ``seconds``: the HTTP exchange only (None
    when no request was made)."""

    ok: bool
    reason: str
    result: str
    seconds: float | None


# (kind "status" | "cdr", outcome) → counted by the control-plane metrics
DeliveryObserver = Callable[[str, Delivery], None]


def _ignore(_kind: str, _d: Delivery) -> None:
    pass


def receiver_accepted(status: int, body: bytes) -> tuple[bool, str]:
    if status != 200:
        return False, f"HTTP {status}"
    try:
        data = json.loads(body) if body.strip() else None
    except (ValueError, UnicodeDecodeError):
        return True, ""
    if isinstance(data, dict) and "resultcode" in data and str(data["resultcode"]) != "0":
        return False, f"resultcode {data['resultcode']!r}"
    return True, ""


async def post_json(client: httpx.AsyncClient, target: PushTarget, body: dict[str, Any],
                    timeout_s: float, beijing_time: bool) -> Delivery:
    """POST once. Never raises for network problems."""
    payload = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
    headers = push_headers(target, time.time(), beijing_time)
    t0 = time.perf_counter()
    try:
        resp = await client.post(target.url, content=payload, headers=headers,
                                 timeout=timeout_s)
    except httpx.TimeoutException as e:
        return Delivery(False, f"{type(e).__name__}: {e}"[:300], "timeout",
                        time.perf_counter() - t0)
    except httpx.HTTPError as e:
        return Delivery(False, f"{type(e).__name__}: {e}"[:300], "error",
                        time.perf_counter() - t0)
    seconds = time.perf_counter() - t0
    ok, reason = receiver_accepted(resp.status_code, resp.content)
    return Delivery(ok, reason, "ok" if ok else "http_error", seconds)


class StatusPusher:
    """One chain of pushes per session: a new push waits for the previous one of the same call
    (order), pushes of different calls run concurrently. Failures are logged, never retried."""

    def __init__(self, client: httpx.AsyncClient, timeout_s: float, beijing_time: bool,
                 observe: DeliveryObserver = _ignore) -> None:
        self._client = client
        self._timeout = timeout_s
        self._beijing = beijing_time
        self._observe = observe
        self._tails: dict[str, asyncio.Task[None]] = {}
        self.sent = 0
        self.failed = 0

    def push(self, session_id: str, target: PushTarget, body: dict[str, Any]) -> None:
        prev = self._tails.get(session_id)
        task = asyncio.create_task(self._send_after(prev, session_id, target, body))
        self._tails[session_id] = task
        task.add_done_callback(lambda t: self._forget(session_id, t))

    def _forget(self, session_id: str, task: asyncio.Task[None]) -> None:
        if self._tails.get(session_id) is task:
            del self._tails[session_id]

    async def _send_after(self, prev: asyncio.Task[None] | None, session_id: str,
                          target: PushTarget, body: dict[str, Any]) -> None:
        if prev is not None:
            await asyncio.gather(prev, return_exceptions=True)
        d = await post_json(self._client, target, body, self._timeout, self._beijing)
        self._observe("status", d)
        if d.ok:
            self.sent += 1
        else:
            self.failed += 1
            log.bind(session_id=session_id, app_key=target.app_key).warning(
                "status_push_failed", event_type=body.get("eventType"), url=target.url,
                result=d.result, reason=d.reason)

    async def drain(self) -> None:
        while self._tails:
            await asyncio.gather(*self._tails.values(), return_exceptions=True)

    async def close(self) -> None:
        for task in list(self._tails.values()):
            task.cancel()
        await asyncio.gather(*self._tails.values(), return_exceptions=True)
