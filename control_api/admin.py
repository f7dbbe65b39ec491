"""``/admin/v1``: provisioning that the vendor does in its web console (accounts, apps, numbers,
play files, templates and their approval), call search (EV-7), CDRs and manual re-push (EV-4),
billing summary (BILL-1..3), per-call SIP traces (lab debugging). Guarded by
``Authorization: Bearer <[api] admin_token>``."""

from __future__ import annotations

import calendar
import hmac
import secrets
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import structlog
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field

from control_api import numbers as nums
from control_api import templates as tpl
from control_api.billing import monthly_rent_milli
from control_api.cluster import (
    FORWARDED_BY,
    GONE_DESC,
    NODE_HEADER,
    STALE_AFTER_S,
    Forward,
    route_to_owner,
)
from control_api.codes import ApiError, Code, invalid
from control_api.playfiles import check_name, validate_play_file

if TYPE_CHECKING:
    from control_api.http import ApiContext

_bearer = HTTPBearer(auto_error=False)
_SEARCH_WINDOW_MS = 62 * 86_400_000   # EV-7: two months back

_TRACE_FORMAT = Query(None, pattern="^(json|ladder)$",
                      description="`ladder`: a text ladder diagram (as with `Accept: "
                                  "text/plain`); default JSON")
_TRACE_EXAMPLE = {
    "resultcode": "0", "resultdesc": "Success", "session_id": "vc1_1_1191419408_20261125092618@vc1",
    "legs": [{"leg": "A", "role": "caller", "number": "+8613800000011",
              "call_id": "db590f23d8306428cfe6@127.0.0.1", "messages": 7},
             {"leg": "B", "role": "callee", "number": "+8613900000022",
              "call_id": "29aaffc8aa99a80a15eb@127.0.0.1", "messages": 7}],
    "messages": [{"leg": "A", "call_id": "db590f23d8306428cfe6@127.0.0.1",
                  "time": "2026-11-25T09:26:18.868Z", "timestamp": 1795598778.868,
                  "direction": "out", "transport": "udp", "local": "127.0.0.1:5060",
                  "remote": "127.0.0.1:5071",
                  "first_line": "INVITE sip:+8613800000011@127.0.0.1:5071 SIP/2.0",
                  "text": "INVITE sip:+8613800000011@127.0.0.1:5071 SIP/2.0\r\nVia: …"}]}
_TRACE_DOC: dict[int | str, dict[str, Any]] = {
    200: {"description": "JSON (legs with their SIP Call-IDs, every message in time order) or, "
                         "with `format=ladder` or `Accept: text/plain`, the ladder diagram",
          "content": {"application/json": {"example": _TRACE_EXAMPLE},
                      "text/plain": {"schema": {"type": "string"}}}},
    404: {"description": "no such session, the trace expired (`[sip] trace_calls` newest "
                         "calls are kept) or the node that ran the call is down (a call of "
                         "another node is answered by that node)"},
    500: {"description": "the node that ran the call could not be reached (1010001)"}}


def _wants_ladder(request: Request, fmt: str | None) -> bool:
    if fmt is not None:
        return fmt == "ladder"
    accept = request.headers.get("accept", "")
    return "text/plain" in accept and "application/json" not in accept


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class AccountIn(_In):
    id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")
    name: str = Field("", max_length=128)


class AccountPatch(_In):
    state: Literal["active", "inactive"] | None = None
    name: str | None = Field(None, max_length=128)


class AppIn(_In):
    account: str = Field(min_length=1, max_length=64)
    app_key: str | None = Field(None, min_length=8, max_length=128,
                                pattern=r"^[A-Za-z0-9_\-]+$")
    name: str = Field("", max_length=128)
    status_url: str = Field("", max_length=1024)
    fee_url: str = Field("", max_length=1024)
    record: bool = False
    max_concurrent_calls: int = Field(10, ge=1, le=100_000)
    push_sign_newlines: bool = True


class AppPatch(_In):
    name: str | None = Field(None, max_length=128)
    status_url: str | None = Field(None, max_length=1024)
    fee_url: str | None = Field(None, max_length=1024)
    record: bool | None = None
    max_concurrent_calls: int | None = Field(None, ge=1, le=100_000)
    state: Literal["active", "suspended"] | None = None
    push_sign_newlines: bool | None = None


class NumberIn(_In):
    account: str = Field(min_length=1, max_length=64)
    number: str = Field(min_length=4, max_length=31)
    kind: Literal["display", "bind"] = "display"
    app_key: str | None = Field(None, max_length=128)


class NumberPatch(_In):
    state: Literal["active", "paused", "released"]


class TemplateIn(_In):
    account: str = Field(min_length=1, max_length=64)
    id: str = Field(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9_\-]+$")
    text: str = Field(min_length=1, max_length=2000)


class Decision(_In):
    reason: str = Field("", max_length=256)


class Repush(_In):
    ids: list[int] | None = Field(None, max_length=10_000)
    state: Literal["parked", "delivered"] | None = "parked"
    app_key: str | None = Field(None, max_length=128)


def error_json(err: ApiError) -> JSONResponse:
    return JSONResponse({"resultcode": err.code.value, "resultdesc": err.desc},
                        status_code=err.status)


def _ok(**extra: Any) -> dict[str, Any]:
    return {"resultcode": "0", "resultdesc": "Success", **extra}


def _public_app(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k != "app_secret"}


def parse_time(value: str | None, default: float) -> float:
    """``YYYY-MM-DD`` or ``YYYY-MM-DD HH:MM:SS`` (UTC) or epoch seconds."""
    if not value:
        return default
    if value.replace(".", "", 1).isdigit():
        return float(value)
    for fmt in ("%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d"):
        try:
            return calendar.timegm(time.strptime(value, fmt))
        except ValueError:
            continue
    raise invalid(f"time {value[:40]!r}: use YYYY-MM-DD[ HH:MM:SS] (UTC)")


def build_admin_router(ctx: ApiContext) -> APIRouter:
    async def require_admin(request: Request,
                            cred: HTTPAuthorizationCredentials | None = Depends(_bearer)) -> None:
        token = cred.credentials if cred is not None else ""
        if not hmac.compare_digest(token.encode(), ctx.config.api.admin_token.encode()):
            raise ApiError(Code.INVALID_APP_KEY, "Admin token missing or wrong.", 401)

    r = APIRouter(dependencies=[Depends(require_admin)], tags=["admin"])
    store = ctx.store

    async def _account(account_id: str) -> dict[str, Any]:
        acc = await store.get_account(account_id)
        if acc is None:
            raise invalid(f"account {account_id} does not exist.")
        return acc

    # -- accounts --
    @r.get("/accounts")
    async def list_accounts() -> dict[str, Any]:
        return _ok(accounts=await store.list_accounts())

    @r.post("/accounts")
    async def create_account(body: AccountIn) -> dict[str, Any]:
        if await store.get_account(body.id) is not None:
            raise invalid(f"account {body.id} already exists.")
        await store.upsert_account(body.id, body.name)
        return _ok(account=await store.get_account(body.id))

    @r.patch("/accounts/{account_id}")
    async def patch_account(account_id: str, body: AccountPatch) -> dict[str, Any]:
        acc = await _account(account_id)
        if body.name is not None:
            await store.upsert_account(account_id, body.name)
        if body.state is not None:
            await store.set_account_state(account_id, body.state)
        return _ok(account=await store.get_account(acc["id"]))

    # -- apps (APP-1) --
    def _check_urls(status_url: str | None, fee_url: str | None) -> None:
        for field, url in (("status_url", status_url), ("fee_url", fee_url)):
            if url:
                ctx.service.check_url(url, field)

    @r.post("/apps")
    async def create_app(body: AppIn) -> dict[str, Any]:
        await _account(body.account)
        if await store.count_apps(body.account) >= ctx.config.api.max_apps_per_account:
            raise ApiError(Code.APP_CALL_LIMIT, "Too many apps for this account (quota).")
        _check_urls(body.status_url, body.fee_url)
        key = body.app_key or secrets.token_urlsafe(18)
        if await store.get_app(key) is not None:
            raise invalid(f"app_key {key} already exists.")
        secret = secrets.token_urlsafe(24)
        await store.create_app({
            "app_key": key, "account_id": body.account, "app_secret": secret,
            "name": body.name, "status_url": body.status_url, "fee_url": body.fee_url,
            "record": body.record, "max_concurrent_calls": body.max_concurrent_calls,
            "state": "active", "push_sign_newlines": body.push_sign_newlines})
        app = await store.get_app(key)
        assert app is not None
        return _ok(app=_public_app(app), app_secret=secret,
                   note="app_secret is shown only once")

    @r.get("/apps")
    async def list_apps(account: str | None = None) -> dict[str, Any]:
        return _ok(apps=[_public_app(a) for a in await store.list_apps(account)])

    @r.get("/apps/{app_key}")
    async def get_app(app_key: str) -> dict[str, Any]:
        app = await store.get_app(app_key)
        if app is None:
            raise ApiError(Code.NOT_FOUND, f"app {app_key} does not exist.")
        return _ok(app=_public_app(app), in_use=await store.in_use(app_key))

    @r.patch("/apps/{app_key}")
    async def patch_app(app_key: str, body: AppPatch) -> dict[str, Any]:
        _check_urls(body.status_url, body.fee_url)
        values = body.model_dump(exclude_none=True)
        if not await store.update_app(app_key, values):
            raise ApiError(Code.NOT_FOUND, f"app {app_key} does not exist.")
        app = await store.get_app(app_key)
        assert app is not None
        return _ok(app=_public_app(app))

    @r.post("/apps/{app_key}/reset-secret")
    async def reset_secret(app_key: str) -> dict[str, Any]:
        secret = secrets.token_urlsafe(24)
        if not await store.update_app(app_key, {"app_secret": secret}):
            raise ApiError(Code.NOT_FOUND, f"app {app_key} does not exist.")
        return _ok(app_key=app_key, app_secret=secret, note="app_secret is shown only once")

    # -- numbers (NUM-2, NUM-4, NUM-8) --
    @r.get("/numbers")
    async def list_numbers(account: str | None = None, app_key: str | None = None,
                           state: str | None = None) -> dict[str, Any]:
        return _ok(numbers=await store.list_numbers(account, app_key, state))

    @r.post("/numbers")
    async def add_number(body: NumberIn) -> dict[str, Any]:
        await _account(body.account)
        reason = nums.check_provisionable(body.number)
        if reason:
            raise invalid(f"number: {reason}")
        if body.kind == "bind" and not body.app_key:
            raise invalid("app_key is required for a bind number.")
        if body.app_key:
            app = await store.get_app(body.app_key)
            if app is None or app["account_id"] != body.account:
                raise invalid("app_key does not belong to the account.")
        if not await store.insert_number({"number": body.number, "account_id": body.account,
                                          "kind": body.kind, "app_key": body.app_key,
                                          "state": "active"}):
            raise invalid(f"number {body.number} already exists.")
        return _ok(number=await store.get_number(body.number))

    @r.patch("/numbers/{number}")
    async def set_number_state(number: str, body: NumberPatch) -> dict[str, Any]:
        res = await store.set_number_state(number, body.state)
        if res == "missing":
            raise ApiError(Code.NOT_FOUND, f"number {number} does not exist.")
        if res == "released":
            raise invalid(f"number {number} is released; release is irreversible.")
        return _ok(number=await store.get_number(number))

    @r.post("/numbers/{number}/release")
    async def release_number(number: str) -> dict[str, Any]:
        return await set_number_state(number, NumberPatch(state="released"))

    # -- play files (PR-FILE, PR-APPROVE) --
    @r.get("/play-files")
    async def list_play_files(account: str | None = None) -> dict[str, Any]:
        return _ok(play_files=await store.list_play_files(account))

    @r.put("/play-files/{account}/{name}",
           openapi_extra={"requestBody": {"required": True, "content": {
               "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}})
    async def upload_play_file(account: str, name: str, request: Request) -> dict[str, Any]:
        await _account(account)
        reason = check_name(name)
        if reason or check_name(account):   # both become path components under data_dir
            raise invalid(reason or "account id is not usable as a directory name")
        data = await request.body()
        problem = validate_play_file(data)
        if problem:
            raise invalid(f"{name}: {problem}")
        root = Path(ctx.config.node.data_dir) / "prompts" / account
        root.mkdir(parents=True, exist_ok=True)
        path = root / name
        tmp = path.with_suffix(path.suffix + ".part")
        tmp.write_bytes(data)
        tmp.replace(path)
        await store.upsert_play_file(account, name, {"path": str(path.resolve()),
                                                     "state": "pending", "reason": "",
                                                     "size": len(data)})
        return _ok(play_file=await store.get_play_file(account, name))

    async def _decide_file(account: str, name: str, state: str, reason: str) -> dict[str, Any]:
        if not await store.set_play_file_state(account, name, state, reason):
            raise ApiError(Code.NOT_FOUND, f"play file {name} does not exist.")
        return _ok(play_file=await store.get_play_file(account, name))

    @r.post("/play-files/{account}/{name}/approve")
    async def approve_file(account: str, name: str) -> dict[str, Any]:
        return await _decide_file(account, name, "approved", "")

    @r.post("/play-files/{account}/{name}/reject")
    async def reject_file(account: str, name: str, body: Decision) -> dict[str, Any]:
        return await _decide_file(account, name, "rejected", body.reason)

    # -- templates (TPL-1, TPL-2, TPL-5) --
    @r.get("/templates")
    async def list_templates(account: str | None = None) -> dict[str, Any]:
        return _ok(templates=await store.list_templates(account))

    @r.post("/templates")
    async def add_template(body: TemplateIn) -> dict[str, Any]:
        await _account(body.account)
        try:
            tpl.parse_template(body.text)
        except ValueError as e:
            raise invalid(f"text: {e}") from None
        await store.upsert_template(body.account, body.id, {"text": body.text,
                                                            "state": "pending", "reason": ""})
        return _ok(template=await store.get_template(body.account, body.id))

    async def _decide_tpl(account: str, tpl_id: str, state: str, reason: str) -> dict[str, Any]:
        if not await store.set_template_state(account, tpl_id, state, reason):
            raise ApiError(Code.NOT_FOUND, f"template {tpl_id} does not exist.")
        return _ok(template=await store.get_template(account, tpl_id))

    @r.post("/templates/{account}/{tpl_id}/approve")
    async def approve_tpl(account: str, tpl_id: str) -> dict[str, Any]:
        return await _decide_tpl(account, tpl_id, "approved", "")

    @r.post("/templates/{account}/{tpl_id}/reject")
    async def reject_tpl(account: str, tpl_id: str, body: Decision) -> dict[str, Any]:
        return await _decide_tpl(account, tpl_id, "rejected", body.reason)

    # -- calls (EV-7) --
    @r.get("/calls")
    async def search_calls(since: str | None = None, until: str | None = None,
                           service_type: Literal["001", "002"] | None = None,
                           app_key: str | None = None, account: str | None = None,
                           session_id: str | None = None, caller: str | None = None,
                           callee: str | None = None, limit: int = 100,
                           offset: int = 0) -> dict[str, Any]:
        now_ms = int(ctx.clock() * 1000)
        since_ms = int(parse_time(since, (now_ms - _SEARCH_WINDOW_MS) / 1000) * 1000)
        since_ms = max(since_ms, now_ms - _SEARCH_WINDOW_MS)
        until_ms = int(parse_time(until, now_ms / 1000) * 1000)
        if not 1 <= limit <= 1000 or offset < 0:
            raise invalid("limit must be 1..1000 and offset ≥ 0.")
        rows = await store.search_calls(since_ms=since_ms, until_ms=until_ms,
                                        service_type=service_type, app_key=app_key,
                                        account_id=account, session_id=session_id,
                                        caller=caller, callee=callee, limit=limit,
                                        offset=offset)
        return _ok(calls=rows)

    # -- cluster: requests about a call are answered by the node that runs it --
    node = ctx.config.node.name

    def _as_node(resp: Response) -> Response:
        """Mark an answer as this node's: a forwarding peer relays only its owner's answers."""
        resp.headers[NODE_HEADER] = node
        return resp

    def _forwardable(request: Request, call: dict[str, Any] | None) -> str | None:
        """The call's node when another node runs it and this request may go there (a
        forwarded request never goes further: no loops, whatever the rows say)."""
        if (call is None or call["node"] == node or ctx.service.peers is None
                or FORWARDED_BY in request.headers):
            return None
        return str(call["node"])

    @r.post("/calls/{session_id}/stop", response_model=None,
            summary="Stop a call on whichever node runs it (what callStop does, without the "
                    "app's signature; nodes forward callStop to each other through it)")
    async def stop_call(session_id: str, request: Request) -> Response:
        with structlog.contextvars.bound_contextvars(
                session_id=session_id, forwarded_by=request.headers.get(FORWARDED_BY)):
            return await _stop_call(session_id, request)

    async def _stop_call(session_id: str, request: Request) -> Response:
        try:
            call = await store.get_call(session_id)
            if call is None or call["ended_at"] is not None:
                raise ApiError(Code.NOT_FOUND, GONE_DESC)
            owner = _forwardable(request, call)
            if owner is not None:
                assert ctx.service.peers is not None
                result = await ctx.service.peers.stop(owner, session_id)
            elif call["node"] != node:
                raise ApiError(Code.NOT_FOUND, f"{GONE_DESC[:-1]} on node {node} (it runs on "
                                               f"{call['node']}).")
            else:
                result = await ctx.service.stop_local(session_id)
        except ApiError as e:
            return _as_node(error_json(e))
        return _as_node(JSONResponse(result))

    @r.get("/nodes", summary="The nodes of the cluster (shared database): API address, "
                             "heartbeat, alive")
    async def list_nodes() -> dict[str, Any]:
        now_ms = int(ctx.clock() * 1000)
        stale_s = ctx.service.peers.stale_after_s if ctx.service.peers else STALE_AFTER_S
        rows = await store.list_nodes()
        for row in rows:
            row["alive"] = isinstance(route_to_owner(row["name"], row, now_ms, stale_s),
                                      Forward)
        return _ok(nodes=rows, node=node)

    # -- SIP traces (lab debugging; in memory on the node that ran the call) --
    backend = ctx.service.backend

    def _trace_reply(doc: dict[str, Any], ladder: bool) -> Response | dict[str, Any]:
        text = doc.pop("ladder", "")
        if ladder:
            return PlainTextResponse(text)
        return _ok(**doc)

    def _reply(out: Response | dict[str, Any]) -> Response:
        return out if isinstance(out, Response) else JSONResponse(out)

    @r.get("/calls/{session_id}/sip-trace", responses=_TRACE_DOC, response_model=None,
           summary="SIP trace of a call (all its legs, JSON or a text ladder)")
    async def call_sip_trace(session_id: str, request: Request,
                             format: str | None = _TRACE_FORMAT,
                             ) -> Response | dict[str, Any]:
        """Every SIP message of the session's legs (callback: A caller and B callee;
        notification/verification: the callee) merged in time order: time, direction,
        transport, local and remote address, first line and the whole message."""
        doc = backend.sip_trace(session_id)
        if doc is not None:
            return _as_node(_reply(_trace_reply(doc, _wants_ladder(request, format))))
        try:
            call = await store.get_call(session_id)
            owner = _forwardable(request, call)
            if owner is not None:
                assert ctx.service.peers is not None
                headers = {"Accept": request.headers["accept"]} \
                    if "accept" in request.headers else {}
                r = await ctx.service.peers.get(owner, session_id, "sip-trace",
                                                dict(request.query_params), headers)
                return Response(r.content, r.status_code, media_type=r.headers.get(
                    "content-type"), headers={NODE_HEADER: owner})
            if call is None:
                why = "no such session"
            elif call["node"] != node:
                why = f"the call ran on node {call['node']}: ask that node's admin API"
            else:
                why = ("the trace expired or tracing is off (this node keeps the newest "
                       "[sip] trace_calls Call-IDs)")
            raise ApiError(Code.NOT_FOUND, f"No SIP trace for session {session_id}: {why}.")
        except ApiError as e:
            return _as_node(error_json(e))

    @r.get("/sip-traces", summary="Recent traced SIP Call-IDs (any call, newest first)")
    async def list_sip_traces(limit: int = Query(100, ge=1, le=10_000),
                              everything: bool = Query(False, alias="all", description=(
                                  "also OPTIONS probes, REGISTER and other non-call "
                                  "exchanges"))) -> dict[str, Any]:
        """Also calls not started by the API (softphone to softphone through the B2BUA);
        ``session_id`` is set for the legs of API calls."""
        return _ok(sip_traces=backend.sip_dialogs(limit, calls_only=not everything))

    @r.get("/sip-traces/{call_id:path}", responses=_TRACE_DOC, response_model=None,
           summary="SIP trace of one Call-ID (one dialog, JSON or a text ladder)")
    async def sip_trace(call_id: str, request: Request,
                        format: str | None = _TRACE_FORMAT,
                        with_: list[str] = Query([], alias="with", max_length=8, description=(
                            "more Call-IDs merged into the same trace (e.g. the other leg "
                            "of a B2BUA call)")),
                        ) -> Response | dict[str, Any]:
        doc = backend.sip_dialog(call_id, with_)
        if doc is None:
            ids = " + ".join([call_id, *with_])
            raise ApiError(Code.NOT_FOUND, f"No SIP trace for Call-ID {ids}: unknown on "
                                           f"this node or expired.")
        return _trace_reply(doc, _wants_ladder(request, format))

    # -- CDRs (EV-4 manual re-push) --
    @r.get("/cdrs")
    async def list_cdrs(state: Literal["pending", "delivered", "parked"] | None = None,
                        app_key: str | None = None, session_id: str | None = None,
                        limit: int = 100, offset: int = 0) -> dict[str, Any]:
        if not 1 <= limit <= 1000 or offset < 0:
            raise invalid("limit must be 1..1000 and offset ≥ 0.")
        return _ok(cdrs=await store.list_cdrs(state=state, app_key=app_key,
                                              session_id=session_id, limit=limit,
                                              offset=offset))

    @r.post("/cdrs/repush")
    async def repush(body: Repush) -> dict[str, Any]:
        n = await store.repush_cdrs(body.ids, state=None if body.ids else body.state,
                                    app_key=body.app_key)
        ctx.nudge_outbox()
        return _ok(requeued=n)

    # -- billing (BILL-1..3) --
    @r.get("/billing")
    async def billing(since: str | None = None, until: str | None = None,
                      account: str | None = None,
                      app_key: str | None = None) -> dict[str, Any]:
        now = ctx.clock()
        start = parse_time(since, now - 30 * 86_400)
        end = parse_time(until, now)
        if end <= start:
            raise invalid("until must be after since.")
        usage = await store.usage(int(start * 1000), int(end * 1000), account, app_key)
        for u in usage:
            u["charge"] = f"{int(u['charge_milli']) / 1000:.3f}"
        rent = []
        accounts = [account] if account else [a["id"] for a in await store.list_accounts()]
        d0 = datetime.fromtimestamp(start, UTC)
        d1 = datetime.fromtimestamp(end, UTC)
        for acc in accounts:
            rows = await store.list_numbers(acc)
            pairs = [(r["issued_at"] / 1000,
                      r["released_at"] / 1000 if r["released_at"] else None) for r in rows]
            y, m = d0.year, d0.month
            while (y, m) <= (d1.year, d1.month):
                milli = monthly_rent_milli(pairs, y, m,
                                           ctx.config.billing.number_rent_per_month)
                rent.append({"account_id": acc, "month": f"{y:04d}-{m:02d}",
                             "rent": f"{milli / 1000:.3f}"})
                y, m = (y + 1, 1) if m == 12 else (y, m + 1)
        return _ok(since=int(start), until=int(end),
                   rate_per_minute=ctx.config.billing.rate_per_minute, usage=usage, rent=rent)

    return r
