"""The HTTP surface: the Voice-Call compatible API (``/rest/...``), the admin API
(``/admin/v1``, see :mod:`control_api.admin`), signed recording downloads, the OpenAPI document.

Order of checks for ``/rest`` calls: body size (413) → IP block (1020176) → X-AKSK/X-WSSE
(401) → JSON and types (1010002) → semantics (service) → concurrency (1020165) → switch.
Every error is JSON ``{"resultcode","resultdesc"}``; nothing escapes as a bare 500.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import structlog
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from control_api.auth import Authenticator
from control_api.codes import ApiError, Code
from control_api.config import Config
from control_api.metrics import CONTENT_TYPE, ControlMetrics
from control_api.models import (
    CallbackBody,
    NotifyBody,
    PlayContentInfo,
    SessionResult,
    StopBody,
    VerifyBody,
)
from control_api.recordings import RecordingStore, safe_name
from control_api.service import CallService
from control_api.storage.repo import Row, Store

log = structlog.get_logger("voicecall.http")

M = TypeVar("M", bound=BaseModel)


@dataclass
class ApiContext:
    config: Config
    store: Store
    service: CallService
    auth: Authenticator
    recordings: RecordingStore
    record_domain: str
    clock: Callable[[], float] = time.time
    nudge_outbox: Callable[[], None] = field(default=lambda: None)
    metrics: ControlMetrics | None = None

    async def observed(self, operation: str, op: Callable[[], Awaitable[Response]]) -> Response:
        """Run one API operation, counting it by resultcode and timing it (``/metrics``)."""
        if self.metrics is None:
            return await op()
        t0 = time.perf_counter()
        code = Code.INTERNAL.value
        try:
            resp = await op()
            code = "0" if resp.status_code in (200, 301) else code
            return resp
        except ApiError as e:
            code = e.code.value
            raise
        finally:
            self.metrics.observe(operation, code, time.perf_counter() - t0)


def error_response(err: ApiError) -> JSONResponse:
    return JSONResponse({"resultcode": err.code.value, "resultdesc": err.desc},
                        status_code=err.status)


class BodyLimitMiddleware:
    """413 for bodies above ``max_bytes`` (declared or streamed), before any routing or
    authentication work. The body is buffered (bounded) and replayed to the app."""

    def __init__(self, app: ASGIApp, max_bytes: int, max_inflight: int = 0) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_inflight = max_inflight
        self.inflight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if not scope.get("path", "").startswith("/rest/") or not self.max_inflight:
            await self._limited(scope, receive, send)
            return
        # Load shedding: beyond max_inflight concurrent API calls, answer at once with the
        # vendor's flow-control code instead of queueing until clients time out.
        if self.inflight >= self.max_inflight:
            await error_response(ApiError(Code.FLOW_CONTROL))(scope, receive, send)
            return
        self.inflight += 1
        try:
            await self._limited(scope, receive, send)
        finally:
            self.inflight -= 1

    async def _limited(self, scope: Scope, receive: Receive, send: Send) -> None:
        too_big = ApiError(Code.PAYLOAD_TOO_LARGE,
                           f"Request body larger than {self.max_bytes} bytes.")
        for k, v in scope.get("headers", []):
            if k == b"content-length" and (not v.isdigit() or int(v) > self.max_bytes):
                await error_response(too_big)(scope, receive, send)
                return
        chunks: list[bytes] = []
        size = 0
        more = True
        disconnected = False
        while more:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                disconnected = True
                break
            chunk = msg.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await error_response(too_big)(scope, receive, send)
                return
            chunks.append(chunk)
            more = msg.get("more_body", False)
        body = b"".join(chunks)
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent and not disconnected:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive() if not disconnected else {"type": "http.disconnect"}

        await self.app(scope, replay, send)


def _loc(loc: Any) -> str:
    out = ""
    for part in loc:
        if part == "body" and not out:
            continue
        out += f"[{part}]" if isinstance(part, int) else ("." if out else "") + str(part)
    return out


def validation_error(errors: list[Any]) -> ApiError:
    """First pydantic error → 1010002 naming the parameter (1010023/1010024 for the display and
    caller numbers, as the vendor does)."""
    err = errors[0] if errors else {"loc": (), "type": "", "msg": "invalid"}
    where = _loc(err.get("loc", ()))
    kind = err.get("type", "")
    if kind == "json_invalid":
        return ApiError(Code.INVALID_REQUEST, "Invalid request.The body is not valid JSON.")
    if not where:
        return ApiError(Code.INVALID_REQUEST, "Invalid request.The body must be a JSON object.")
    if where in ("displayNbr", "displayCalleeNbr") and kind != "missing":
        return ApiError(Code.INVALID_DISPLAY_NUMBER, f"Display number invalid.{where}")
    if where == "callerNbr" and kind != "missing":
        return ApiError(Code.INVALID_CALLER_NUMBER, "Invalid caller number.callerNbr")
    if kind == "missing":
        return ApiError(Code.INVALID_REQUEST, f"Invalid request.{where} is missing.")
    if kind == "extra_forbidden":
        return ApiError(Code.INVALID_REQUEST, f"Invalid request.{where} is not a supported "
                        "parameter.")
    msg = str(err.get("msg", "invalid"))[:100]
    return ApiError(Code.INVALID_REQUEST, f"Invalid request.{where}: {msg}")


async def parse_body(request: Request, model: type[M]) -> M:
    raw = await request.body()
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise ApiError(Code.INVALID_REQUEST, "Invalid request.The body is not valid JSON.") \
            from None
    except RecursionError:
        raise ApiError(Code.INVALID_REQUEST, "Invalid request.The body is nested too deeply.") \
            from None
    if not isinstance(data, dict):
        raise ApiError(Code.INVALID_REQUEST, "Invalid request.The body must be a JSON object.")
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise validation_error(list(e.errors())) from None
    except RecursionError:
        raise ApiError(Code.INVALID_REQUEST, "Invalid request.The body is nested too deeply.") \
            from None


def client_ip(request: Request) -> str:
    return request.client.host if request.client else "unknown"


async def authenticate(request: Request) -> Row:
    ctx: ApiContext = request.app.state.ctx
    ip = client_ip(request)
    now = ctx.clock()
    ctx.auth.check_not_blocked(ip, now)
    token = ctx.auth.token(request.headers, ip, now)
    app = await ctx.store.get_app(token.username)
    ctx.auth.verify(token, app["app_secret"] if app else None, ip, now)
    assert app is not None
    if app["state"] != "active":
        raise ApiError(Code.APP_SUSPENDED)
    account = await ctx.store.get_account(app["account_id"])
    if account is None or account["state"] != "active":
        raise ApiError(Code.ACCOUNT_INACTIVE)
    return app


_CLOSE = {"Connection": "close"}   # appendix 3: the server closes the short connection


def _body_doc(model: type[BaseModel]) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {"application/json;charset=UTF-8": {
        "schema": {"$ref": f"#/components/schemas/{model.__name__}"}}}},
        "security": [{"X-AKSK": []}, {"X-WSSE": []}]}


_ERR_DOC: dict[int | str, dict[str, Any]] = {
    s: {"model": SessionResult, "description": d} for s, d in (
        (400, "invalid parameter (1010002, 1010023, 1010024)"),
        (401, "authentication (1010003, 1010013, 1023033-1023037)"),
        (403, "permission or limits (1010008, 1020165, 1020176 ...)"),
        (413, "body too large"), (500, "internal error (1010001)"))}


def create_app(ctx: ApiContext) -> FastAPI:
    app = FastAPI(title="voicecall control API",
                  version="1.0",
                  description="Voice-Call compatible API (click2Call, callnotify, callVerify, "
                              "callStop, record download) and the /admin/v1 provisioning API.")
    app.state.ctx = ctx

    @app.exception_handler(ApiError)
    async def _api_error(_req: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc)

    if ctx.config.api.demo_webhooks:
        @app.post("/demo/webhooks/{kind}", include_in_schema=False)
        async def _demo_webhook(kind: str, request: Request) -> JSONResponse:
            """The embedded demo's receiver: prints what a customer's statusUrl/feeUrl
            would get, and accepts it."""
            body = (await request.body())[:65536].decode("utf-8", "replace")
            log.info("demo_webhook_received", kind=kind, body=body)
            return JSONResponse({"resultcode": "0", "resultdesc": "Success"})

    @app.exception_handler(RequestValidationError)
    async def _validation(_req: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(validation_error(list(exc.errors())))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_req: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 405:
            return error_response(ApiError(Code.INVALID_API))
        if exc.status_code == 404:
            return error_response(ApiError(Code.NOT_FOUND, "Invalid Rest API.", 404))
        return error_response(ApiError(Code.INVALID_REQUEST, str(exc.detail)[:100],
                                       exc.status_code))

    @app.exception_handler(Exception)
    async def _internal(_req: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled", error=type(exc).__name__)
        return error_response(ApiError(Code.INTERNAL))

    async def _handle(request: Request, model: type[M],
                      op: Callable[[Row, M], Awaitable[dict[str, Any]]]) -> Response:
        async def run() -> Response:
            app_row = await authenticate(request)
            body = await parse_body(request, model)
            result = await op(app_row, body)
            return JSONResponse(result, headers=_CLOSE)

        return await ctx.observed(model.__name__.removesuffix("Body").lower(), run)

    @app.post("/rest/httpsessions/click2Call/v2.0", response_model=SessionResult,
              responses=_ERR_DOC, openapi_extra=_body_doc(CallbackBody),
              summary="Voice callback (CreateVoiceCallback)", tags=["voice call"])
    async def click2call(request: Request) -> Response:
        return await _handle(request, CallbackBody, ctx.service.callback)

    for version in ("v1.0", "v2.0"):
        app.add_api_route(
            f"/rest/httpsessions/callnotify/{version}",
            _make_notify(ctx), methods=["POST"], response_model=SessionResult,
            responses=_ERR_DOC, openapi_extra=_body_doc(NotifyBody), tags=["voice call"],
            summary=f"Voice notification (CreateVoiceNotification) {version}",
            name=f"callnotify_{version}")

    @app.post("/rest/httpsessions/callVerify/v1.0", response_model=SessionResult,
              responses=_ERR_DOC, openapi_extra=_body_doc(VerifyBody),
              summary="Voice verification code (CreateVoiceVerificationCode)",
              tags=["voice call"])
    async def call_verify(request: Request) -> Response:
        return await _handle(request, VerifyBody, ctx.service.verify)

    @app.post("/rest/httpsessions/callStop/v2.0", response_model=SessionResult,
              responses=_ERR_DOC, openapi_extra=_body_doc(StopBody),
              summary="Terminate a call (TerminateCall)", tags=["voice call"])
    async def call_stop(request: Request) -> Response:
        return await _handle(request, StopBody, ctx.service.stop)

    @app.get("/rest/provision/voice/record/v1.0", status_code=301, responses=_ERR_DOC,
             openapi_extra={"security": [{"X-AKSK": []}, {"X-WSSE": []}]},
             summary="Recording download address (301 + Location)", tags=["voice call"])
    async def record_url(request: Request,
                         fileName: str = Query(..., min_length=1, max_length=128),
                         recordDomain: str = Query(..., min_length=1, max_length=128),
                         ) -> Response:
        async def run() -> Response:
            app_row = await authenticate(request)
            call = await ctx.store.find_recording(fileName) if safe_name(fileName) else None
            if (call is None or call["app_key"] != app_row["app_key"]
                    or recordDomain != ctx.record_domain
                    or not ctx.recordings.path_for(fileName).is_file()):
                raise ApiError(Code.NOT_FOUND, "The record does not exist.")
            return Response(status_code=301, headers={
                "Location": ctx.recordings.signed_url(fileName, ctx.clock()), **_CLOSE})

        return await ctx.observed("record", run)

    @app.get("/recordings/{name}", summary="Signed recording download", tags=["recordings"],
             response_class=FileResponse)
    async def download(name: str, expires: str = "", sig: str = "") -> Response:
        if not ctx.recordings.verify(name, expires, sig, ctx.clock()):
            raise ApiError(Code.NOT_FOUND, "The record does not exist or the link expired.")
        path = ctx.recordings.path_for(name)
        if not path.is_file():
            raise ApiError(Code.NOT_FOUND, "The record does not exist.")
        return FileResponse(path, media_type="audio/wav", filename=name)

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        if ctx.metrics is None:
            raise ApiError(Code.NOT_FOUND, "Metrics are not enabled.")
        return Response(ctx.metrics.render(), media_type=CONTENT_TYPE)

    from control_api.admin import build_admin_router
    app.include_router(build_admin_router(ctx), prefix="/admin/v1")

    def custom_openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        from fastapi.openapi.utils import get_openapi
        schema = get_openapi(title=app.title, version=app.version,
                             description=app.description, routes=app.routes)
        comps = schema.setdefault("components", {})
        schemas = comps.setdefault("schemas", {})
        for model in (CallbackBody, NotifyBody, VerifyBody, StopBody, PlayContentInfo):
            js = model.model_json_schema(ref_template="#/components/schemas/{model}")
            for name, sub in js.pop("$defs", {}).items():
                schemas.setdefault(name, sub)
            schemas[model.__name__] = js
        sec = comps.setdefault("securitySchemes", {})
        sec["X-AKSK"] = {"type": "apiKey", "in": "header", "name": "X-AKSK",
                         "description": "UsernameToken Username, PasswordDigest="
                                        "Base64(HMAC-SHA256(secret, Nonce+Created)), Nonce, "
                                        "Created; plus Authorization: AKSK realm=...."}
        sec["X-WSSE"] = {"type": "apiKey", "in": "header", "name": "X-WSSE",
                         "description": "legacy: Base64(SHA256(Nonce+Created+secret))"}
        sec["AdminBearer"] = {"type": "http", "scheme": "bearer"}
        app.openapi_schema = schema
        return schema

    app.openapi = custom_openapi  # type: ignore[method-assign]
    return app


def _make_notify(ctx: ApiContext) -> Callable[[Request], Awaitable[Response]]:
    async def callnotify(request: Request) -> Response:
        async def run() -> Response:
            app_row = await authenticate(request)
            body = await parse_body(request, NotifyBody)
            return JSONResponse(await ctx.service.notify(app_row, body), headers=_CLOSE)

        return await ctx.observed("notify", run)

    return callnotify
