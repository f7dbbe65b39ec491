"""Call affinity in a cluster: a request about a call (callStop, its SIP trace) that reaches a
node other than the one running the call is handed to that node over HTTP.

Every node records itself in the shared database (table ``nodes``): its name, the base URL
of its API as the other nodes reach it, and a heartbeat refreshed every
:data:`HEARTBEAT_INTERVAL_S`. The call row names the node running the call; the receiving
node (after the caller's API authentication, which stays with the node the client signed
for) forwards to that node's admin API with the cluster's shared admin token and relays the
answer unchanged. The owner never forwards again (``X-Voicecall-Forwarded-By``), and marks
its answers with ``X-Voicecall-Node`` so an answer from the wrong process (a stale address,
a load balancer) is not mistaken for the owner's.

When the owner cannot answer, callStop says so with the contract's codes:

* heartbeat stale (or the node stopped cleanly): the node is down, and its calls with it
  (media and signalling ran in that process; it closes them as orphans when it starts
  again) → HTTP 404 ``1010404`` "sessionid does not exist or the call has ended";
* heartbeat fresh but no usable answer within :data:`FORWARD_TIMEOUT_S` (connection
  refused, timeout, foreign answer), or the node never registered an address (a node of an
  older version) → HTTP 500 ``1010001`` "Internal system error … retry later": the call
  may still run, so the client must not take it as ended.

Heartbeats are the nodes' own clocks (epoch ms), compared by the reading node: the nodes'
clocks must agree to well within :data:`STALE_AFTER_S` (NTP; CDR times need it anyway).

The decisions are pure functions (:func:`route_to_owner`, :func:`relay_stop_answer`); the
I/O is in :class:`ClusterPeers` and :class:`Heartbeat`.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
import structlog

from control_api.codes import ApiError, Code
from control_api.storage.repo import Row, Store

log = structlog.get_logger("voicecall.cluster")

HEARTBEAT_INTERVAL_S = 2.0
# Five missed heartbeats: a busy database or a GC pause does not declare a live node dead.
STALE_AFTER_S = 10.0
# The owner's stop is one database read and setting an event: a healthy node answers in
# milliseconds, so a few seconds covers a loaded one without letting clients hang.
FORWARD_TIMEOUT_S = 3.0
FORWARD_CONNECT_TIMEOUT_S = 1.0

FORWARDED_BY = "X-Voicecall-Forwarded-By"
NODE_HEADER = "X-Voicecall-Node"

GONE_DESC = "Invalid request.sessionid does not exist or the call has ended."
# callStop results the owner gives (service.stop_local, the exception handler); anything
# else from the owner's address is not a callStop answer.
_STOP_RESULTS = {Code.SUCCESS.value: 200, Code.NOT_FOUND.value: 404, Code.INTERNAL.value: 500}


@dataclass(frozen=True, slots=True)
class Forward:
    """Send the request to ``url`` (the owner's API base URL)."""

    node: str
    url: str


@dataclass(frozen=True, slots=True)
class OwnerDown:
    """The owner's heartbeat is stale (``age_s``) or it stopped cleanly (``age_s`` None)."""

    node: str
    age_s: int | None


@dataclass(frozen=True, slots=True)
class OwnerUnknown:
    """The owner never registered an API address (not in ``nodes``)."""

    node: str


Route = Forward | OwnerDown | OwnerUnknown


def route_to_owner(owner: str, peer: Row | None, now_ms: int,
                   stale_after_s: float = STALE_AFTER_S) -> Route:
    """Where a request about a call run by node ``owner`` (not this node) goes, given the
    owner's ``nodes`` row."""
    if peer is None or not peer.get("api_url"):
        return OwnerUnknown(owner)
    beat = int(peer["heartbeat_at"])
    if beat <= 0:
        return OwnerDown(owner, None)
    age_ms = now_ms - beat
    if age_ms > stale_after_s * 1000:
        return OwnerDown(owner, age_ms // 1000)
    return Forward(owner, str(peer["api_url"]).rstrip("/"))


def owner_down_error(route: OwnerDown) -> ApiError:
    why = "stopped" if route.age_s is None else f"no heartbeat for {route.age_s} s"
    return ApiError(Code.NOT_FOUND, f"{GONE_DESC[:-1]}: node {route.node}, which ran it, is "
                                    f"down ({why}).")


def unreachable_error(node: str, why: str) -> ApiError:
    return ApiError(Code.INTERNAL, f"Internal system error: node {node}, which runs the call, "
                                   f"could not be reached ({why}); retry later.")


def owner_unknown_error(route: OwnerUnknown) -> ApiError:
    return unreachable_error(route.node, "it has registered no API address")


def relay_stop_answer(owner: str, status: int, headers: Mapping[str, str],
                      body: bytes) -> dict[str, Any] | ApiError:
    """The owner's answer to a forwarded stop → the same callStop result (success dict, or an
    :class:`ApiError` with the owner's resultcode, resultdesc and HTTP status)."""
    answered_by = headers.get(NODE_HEADER, "")      # httpx.Headers: case-insensitive
    if answered_by != owner:
        hint = " (admin_token differs between the nodes?)" if status == 401 else ""
        return unreachable_error(owner, f"HTTP {status} from "
                                        f"{answered_by or 'something else'}{hint}")
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        doc = None
    code = doc.get("resultcode") if isinstance(doc, dict) else None
    desc = doc.get("resultdesc") if isinstance(doc, dict) else None
    if not isinstance(code, str) or not isinstance(desc, str) \
            or _STOP_RESULTS.get(code) != status:
        return unreachable_error(owner, f"unexpected answer HTTP {status}")
    if code == Code.SUCCESS.value:
        return {"resultcode": code, "resultdesc": desc}
    return ApiError(Code(code), desc, status)


def api_url_for(configured: str, host: str, port: int, own_address: str) -> str:
    """The base URL the other nodes use for this node's API: ``[api] internal_url`` if set,
    else the address the API listener bound, else (a wildcard bind) ``own_address`` (the
    host name's address) with the bound port."""
    if configured:
        return configured.rstrip("/")
    if host in ("0.0.0.0", "::", ""):
        host = own_address
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


async def own_address() -> str:
    """This host's address as its name resolves (in a container: its address on the network);
    127.0.0.1 if the name does not resolve."""
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(
            socket.gethostname(), None, type=socket.SOCK_STREAM)
    except OSError:
        return "127.0.0.1"
    addrs = [str(i[4][0]) for i in infos]
    return next((a for a in addrs if not a.startswith("127.") and a != "::1"),
                addrs[0] if addrs else "127.0.0.1")


class ClusterPeers:
    """Forwards requests about other nodes' calls to them."""

    def __init__(self, store: Store, client: httpx.AsyncClient, node: str, admin_token: str,
                 *, stale_after_s: float = STALE_AFTER_S, timeout_s: float = FORWARD_TIMEOUT_S,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.client = client
        self.node = node
        self.admin_token = admin_token
        self.stale_after_s = stale_after_s
        self.timeout = httpx.Timeout(timeout_s, connect=min(timeout_s,
                                                            FORWARD_CONNECT_TIMEOUT_S))
        self.clock = clock

    async def route(self, owner: str) -> Route:
        return route_to_owner(owner, await self.store.get_node(owner),
                              int(self.clock() * 1000), self.stale_after_s)

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin_token}", FORWARDED_BY: self.node}

    @staticmethod
    def _path(session_id: str, tail: str) -> str:
        return f"/admin/v1/calls/{quote(session_id, safe='@')}/{tail}"

    async def _send(self, route: Forward, method: str, path: str,
                    params: Mapping[str, str] | None = None,
                    headers: Mapping[str, str] | None = None) -> httpx.Response:
        try:
            return await self.client.request(
                method, route.url + path, params=params,
                headers={**self._headers(), **(headers or {})}, timeout=self.timeout)
        except httpx.HTTPError as e:
            why = type(e).__name__
            log.warning("forward_failed", node=route.node, url=route.url, path=path, error=why)
            raise unreachable_error(route.node, why) from None

    async def stop(self, owner: str, session_id: str) -> dict[str, Any]:
        """callStop of a call that ``owner`` runs: the owner's exact result, or the errors of
        the module docstring."""
        route = await self.route(owner)
        if isinstance(route, OwnerDown):
            raise owner_down_error(route)
        if isinstance(route, OwnerUnknown):
            raise owner_unknown_error(route)
        r = await self._send(route, "POST", self._path(session_id, "stop"))
        out = relay_stop_answer(owner, r.status_code, r.headers, r.content)
        if isinstance(out, ApiError):
            if out.code is Code.INTERNAL:
                log.warning("forward_answer", node=owner, status=r.status_code, desc=out.desc)
            raise out
        log.info("call_stop_forwarded", node=owner)
        return out

    async def get(self, owner: str, session_id: str, tail: str, params: Mapping[str, str],
                  headers: Mapping[str, str]) -> httpx.Response:
        """An admin GET about a call of ``owner`` (its SIP trace), answered by the owner:
        the response as the owner gave it (checked to come from the owner)."""
        route = await self.route(owner)
        if isinstance(route, OwnerDown):
            why = "stopped" if route.age_s is None else f"no heartbeat for {route.age_s} s"
            raise ApiError(Code.NOT_FOUND, f"Node {owner}, which ran session {session_id}, is "
                                           f"down ({why}); its traces were in its memory.")
        if isinstance(route, OwnerUnknown):
            raise owner_unknown_error(route)
        r = await self._send(route, "GET", self._path(session_id, tail), params, headers)
        if r.headers.get(NODE_HEADER) != owner:
            raise unreachable_error(owner, f"HTTP {r.status_code} from "
                                           f"{r.headers.get(NODE_HEADER) or 'something else'}")
        return r


class Heartbeat:
    """Keeps this node's ``nodes`` row fresh; marks it stopped on a clean stop."""

    def __init__(self, store: Store, node: str, api_url: str, started_at: float,
                 interval_s: float = HEARTBEAT_INTERVAL_S) -> None:
        self.store = store
        self.node = node
        self.api_url = api_url
        self.started_at_ms = int(started_at * 1000)
        self.interval_s = interval_s
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.store.node_alive(self.node, self.api_url, self.started_at_ms)
        log.info("node_registered", node=self.node, api_url=self.api_url)
        self._task = asyncio.create_task(self._loop(), name="node-heartbeat")

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.store.node_alive(self.node, self.api_url, self.started_at_ms)
            except Exception:
                log.exception("heartbeat_failed")

    async def stop(self) -> None:
        if self._task is None:
            return
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        self._task = None
        try:
            await self.store.node_stopped(self.node)
        except Exception:
            log.exception("node_stopped_failed")
