"""Admission of call requests: everything between "authenticated" and "handed to the switch".

Semantic validation with the vendor's result codes (numbers NUM-1/2/5/6/7, files and templates
PR-APPROVE/TPL-2, URLs EV-1, ``userData``), the APP-4 soft frequency limit, the atomic APP-2
concurrency admission in the database, then the :class:`CallBackend` call.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import itertools
import random
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import structlog

from control_api import numbers as nums
from control_api import templates as tpl
from control_api.backend import BackendError, CallBackend
from control_api.cluster import GONE_DESC, ClusterPeers
from control_api.codes import ApiError, Code, invalid
from control_api.config import Config
from control_api.models import CallbackBody, NotifyBody, StopBody, VerifyBody
from control_api.recordings import RecordingStore, object_name_for
from control_api.storage.repo import Row, Store
from switch.events import (
    CallbackRequest,
    CalleeMedia,
    LastMinTarget,
    NotificationRequest,
    PlayItem,
    ServiceType,
    VerificationRequest,
)

log = structlog.get_logger("voicecall.api")

_URL_CHARS_RE = re.compile(r"^[A-Za-z0-9\-:_./]+$")
_LOOPBACK = {"127.0.0.1", "localhost", "0.0.0.0", "::1", "[::1]", "::"}


@dataclass(frozen=True, slots=True)
class CallContext:
    """What the push side needs about a live call (kept in memory by the node running it)."""

    session_id: str
    app_key: str
    app_secret: str
    sign_newlines: bool
    service: ServiceType
    status_url: str
    fee_url: str
    user_data: str
    party_type_required: bool
    display_nbr: str
    a_party: str             # dialled on leg A — callback: callerNbr; notify/verify: calleeNbr
    display_callee_nbr: str
    callee: str
    record_object_name: str | None = None
    record_path: str | None = None
    # the stored call row (what the CDR is built from), so closing needs no read
    row: Row | None = dataclasses.field(default=None, compare=False, repr=False)


def context_from_row(call: Row, app: Row) -> CallContext:
    service = ServiceType(call["service_type"])
    obj = object_name_for(call["session_id"]) if call["record_flag"] else None
    return CallContext(
        session_id=call["session_id"], app_key=app["app_key"], app_secret=app["app_secret"],
        sign_newlines=bool(app["push_sign_newlines"]), service=service,
        status_url=call["status_url"], fee_url=call["fee_url"], user_data=call["user_data"],
        party_type_required=bool(call["party_type_required"]), display_nbr=call["display_nbr"],
        a_party=call["caller"] if service is ServiceType.CALLBACK else call["callee"],
        display_callee_nbr=call["display_callee_nbr"], callee=call["callee"],
        record_object_name=obj, row=dict(call))


class SessionRegistry:
    def __init__(self) -> None:
        self._live: dict[str, CallContext] = {}

    def add(self, ctx: CallContext) -> None:
        self._live[ctx.session_id] = ctx

    def get(self, session_id: str) -> CallContext | None:
        return self._live.get(session_id)

    def pop(self, session_id: str) -> CallContext | None:
        return self._live.pop(session_id, None)

    def __len__(self) -> int:
        return len(self._live)


def api_self_addresses(config: Config) -> set[tuple[str, int]]:
    """host/port pairs that reach this API: a webhook must not point here."""
    out: set[tuple[str, int]] = set()
    host, _, port = config.api.listen.rpartition(":")
    p = int(port)
    for h in {*_LOOPBACK, host.strip("[]")}:
        out.add((h, p))
    pu = urlsplit(config.api.public_url)
    if pu.hostname:
        out.add((pu.hostname, pu.port or (443 if pu.scheme == "https" else 80)))
    return out


class CallService:
    def __init__(self, config: Config, store: Store, backend: CallBackend,
                 sessions: SessionRegistry, recordings: RecordingStore,
                 clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.store = store
        self.backend = backend
        self.sessions = sessions
        self.recordings = recordings
        self.clock = clock
        self.node = config.node.name
        self._seq = itertools.count(1)
        self._self_addrs = api_self_addresses(config)
        self._rng = random.SystemRandom()
        self._background: set[asyncio.Task[None]] = set()
        # set by the control plane once it serves (None: single node, nothing to forward to)
        self.peers: ClusterPeers | None = None

    # -- identifiers ---------------------------------------------------------------------------

    def new_session_id(self) -> str:
        """``{node}_{n}_{random}_{yyyyMMddHHmmss}@{node}``, shaped like the vendor's
        ``1201_612_4294967295_20190124030424@callenabler245.huaweicaas.com``; the random part
        keeps ids unique across restarts and nodes."""
        stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime(self.clock()))
        return f"{self.node}_{next(self._seq)}_{secrets.randbelow(2**32)}_{stamp}@{self.node}"

    # -- field checks --------------------------------------------------------------------------

    def decode_url(self, value: str | None, field: str, default: str) -> str:
        """EV-1: request URL (Base64) wins over the app's; returns "" when neither is set."""
        if value is None:
            return default
        try:
            raw = base64.b64decode(value + "=" * (-len(value) % 4), validate=True)
            url = raw.decode("ascii")
        except (binascii.Error, ValueError, UnicodeDecodeError):
            raise invalid(f"{field} must be a Base64-encoded URL.") from None
        self.check_url(url, field)
        return url

    def check_url(self, url: str, field: str) -> None:
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            raise invalid(f"{field} is not a valid URL.") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise invalid(f"{field} must be an http:// or https:// URL.")
        if not _URL_CHARS_RE.match(url):
            raise invalid(f"{field} may contain only letters, digits and - : _ . /")
        port = port or (443 if parts.scheme == "https" else 80)
        if (parts.hostname, port) in self._self_addrs:
            raise invalid(f"{field} must not point at this API.")

    @staticmethod
    def check_user_data(value: str | None) -> str:
        if value is None:
            return ""
        if any(c in "{}" for c in value) or not all(" " <= c <= "~" for c in value):
            raise invalid("userData must be printable ASCII without '{' or '}'.")
        return value

    def check_dialable(self, number: str, field: str, code: Code = Code.INVALID_REQUEST) -> None:
        problem = nums.check_dialable(number, self.config.api.forbidden_prefixes)
        if problem is not None:
            if code is Code.INVALID_REQUEST:
                raise invalid(f"{field}: {problem.reason}")
            raise ApiError(code, f"Invalid caller number.{field}: {problem.reason}")

    async def check_bind(self, app: Row, bind: str | None) -> str:
        if bind is None:
            return ""
        row = await self.store.get_number(bind)
        if (row is None or row["account_id"] != app["account_id"] or row["state"] == "released"
                or (row["app_key"] and row["app_key"] != app["app_key"])):
            raise invalid("bindNbr does not belong to this app.")
        return bind

    async def resolve_display(self, app: Row, number: str, field: str, bind: str) -> str:
        """NUM-2/5/6: must be one of the account's (or this app's) numbers; a paused one is
        replaced by a random usable display number of the account, else by ``bindNbr``."""
        row = await self.store.get_number(number)
        if (row is None or row["account_id"] != app["account_id"] or row["state"] == "released"
                or (row["app_key"] and row["app_key"] != app["app_key"])):
            raise ApiError(Code.INVALID_DISPLAY_NUMBER, f"Display number invalid.{field}")
        if row["state"] == "active":
            return number
        candidates = [r["number"] for r in await self.store.list_numbers(
            account_id=app["account_id"], state="active", kind="display")
            if not r["app_key"] or r["app_key"] == app["app_key"]]
        if candidates:
            return self._rng.choice(candidates)
        if bind:
            return bind
        binds = await self.store.list_numbers(app_key=app["app_key"], state="active", kind="bind")
        if binds:
            return str(binds[0]["number"])
        raise ApiError(Code.INVALID_DISPLAY_NUMBER,
                       f"Display number invalid.{field} is paused and no other number is usable")

    async def resolve_file(self, app: Row, name: str | None, field: str) -> str | None:
        """PR-APPROVE: an approved play file of the app's account → absolute path."""
        if name is None:
            return None
        row = await self.store.get_play_file(app["account_id"], name)
        if row is None or row["state"] != "approved":
            raise invalid(f"{name} does not exist")
        return str(Path(row["path"]).resolve())

    async def render_template(self, app: Row, tpl_id: str, params: list[str] | None,
                              idx: int) -> str:
        row = await self.store.get_template(app["account_id"], tpl_id)
        if row is None or row["state"] != "approved":
            raise invalid(f"{tpl_id} does not exist")
        try:
            return tpl.render(row["text"], params or [])
        except ValueError as e:
            raise invalid(f"playInfoList[{idx}].{e}") from None

    async def check_frequency(self, callee: str) -> None:
        """APP-4: soft per-callee limit. ``enforce`` checks before admission; ``warn`` (the
        default: the vendor only *advises* these limits) logs from a background task so the
        advice costs the request no latency."""
        mode = self.config.api.callee_limit
        if mode == "off":
            return
        if mode == "warn":
            if len(self._background) >= 8:
                return  # advice only: under load skip it rather than queue database work
            task = asyncio.get_running_loop().create_task(self._frequency(callee, warn=True))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
            return
        await self._frequency(callee, warn=False)

    async def _frequency(self, callee: str, warn: bool) -> None:
        try:
            await self._frequency_check(callee, warn)
        except ApiError:
            raise
        except Exception:
            if not warn:
                raise
            log.exception("callee_frequency_check_failed")

    async def _frequency_check(self, callee: str, warn: bool) -> None:
        mode = "warn" if warn else "enforce"
        now_ms = int(self.clock() * 1000)
        day, month = await self.store.count_callee_calls_2(
            callee, now_ms - 30 * 86_400_000, now_ms - 86_400_000)
        over = None
        if day >= self.config.api.callee_limit_per_day:
            over = f"{day} calls in 24 h (limit {self.config.api.callee_limit_per_day})"
        elif month >= self.config.api.callee_limit_per_30d:
            over = f"{month} calls in 30 days (limit {self.config.api.callee_limit_per_30d})"
        if over is None:
            return
        if mode == "enforce":
            raise ApiError(Code.APP_CALL_LIMIT, f"Call frequency limit: calleeNbr has {over}.")
        log.warning("callee_frequency_advice", callee=callee, detail=over)

    # -- admission -----------------------------------------------------------------------------

    async def _admit_and_start(self, app: Row, ctx: CallContext, row: dict[str, Any],
                               start: Callable[[], Any], return_idle: bool) -> dict[str, Any]:
        # Every line logged from here on about this call (here, in the backend's start, in
        # the tasks it creates) carries the session and the app.
        with structlog.contextvars.bound_contextvars(session_id=ctx.session_id,
                                                     app_key=ctx.app_key):
            return await self._admit_and_start_bound(app, ctx, row, start, return_idle)

    async def _admit_and_start_bound(self, app: Row, ctx: CallContext, row: dict[str, Any],
                                     start: Callable[[], Any], return_idle: bool,
                                     ) -> dict[str, Any]:
        limit = int(app["max_concurrent_calls"])
        if not await self.store.admit_call(row, limit):
            raise ApiError(Code.CONCURRENCY)
        self.sessions.add(ctx)
        try:
            await start()
        except BackendError as e:
            await self._abort(ctx)
            code = Code(e.result_code) if e.result_code in Code.__members__.values() \
                else Code.INTERNAL
            raise ApiError(code, str(e) or None) from None
        except Exception:
            log.exception("backend_start_failed", session_id=ctx.session_id)
            await self._abort(ctx)
            raise ApiError(Code.INTERNAL) from None
        log.info("call_accepted", session_id=ctx.session_id, app_key=ctx.app_key,
                 service=ctx.service.value)
        out: dict[str, Any] = {"resultcode": "0", "resultdesc": "Success",
                               "sessionId": ctx.session_id}
        if return_idle:
            out["idlePort"] = max(0, min(65535, limit - await self.store.in_use(ctx.app_key)))
        return out

    async def _abort(self, ctx: CallContext) -> None:
        self.sessions.pop(ctx.session_id)
        await self.store.abort_call(ctx.session_id, ctx.app_key)

    def _row(self, app: Row, sid: str, service: ServiceType, display: str, caller: str,
             callee: str, display_callee: str, bind: str, user_data: str, status_url: str,
             fee_url: str, record: bool, party_type: bool) -> dict[str, Any]:
        return {
            "session_id": sid, "node": self.node, "app_key": app["app_key"],
            "account_id": app["account_id"], "service_type": service.value,
            "display_nbr": display, "caller": caller, "callee": callee,
            "display_callee_nbr": display_callee, "bind_nbr": bind, "user_data": user_data,
            "status_url": status_url, "fee_url": fee_url, "record_flag": record,
            "party_type_required": party_type, "created_at": int(self.clock() * 1000),
        }

    def _ctx(self, app: Row, row: dict[str, Any], record_path: str | None) -> CallContext:
        return dataclasses.replace(context_from_row(row, app), record_path=record_path)

    async def callback(self, app: Row, body: CallbackBody) -> dict[str, Any]:
        self.check_dialable(body.callerNbr, "callerNbr", Code.INVALID_CALLER_NUMBER)
        self.check_dialable(body.calleeNbr, "calleeNbr")
        bind = await self.check_bind(app, body.bindNbr)
        display = await self.resolve_display(app, body.displayNbr, "displayNbr", bind)
        display_callee = await self.resolve_display(app, body.displayCalleeNbr,
                                                    "displayCalleeNbr", bind)
        status_url = self.decode_url(body.statusUrl, "statusUrl", app["status_url"])
        fee_url = self.decode_url(body.feeUrl, "feeUrl", app["fee_url"])
        user_data = self.check_user_data(body.userData)
        record = body.recordFlag == "true"
        if record and not app["record"]:
            raise invalid("recordFlag: recording is not enabled for this app.")
        last_min = await self.resolve_file(app, body.lastMinVoice, "lastMinVoice") \
            if body.maxDuration else None
        pre = await self.resolve_file(app, body.preVoice, "preVoice") \
            if body.playPreVoice == "true" else None
        wait = await self.resolve_file(app, body.waitVoice, "waitVoice")
        hint = await self.resolve_file(app, body.recordHintTone, "recordHintTone") \
            if record else None
        await self.check_frequency(body.calleeNbr)
        sid = self.new_session_id()
        row = self._row(app, sid, ServiceType.CALLBACK, display, body.callerNbr, body.calleeNbr,
                        display_callee, bind, user_data, status_url, fee_url, record,
                        body.partyTypeRequiredInDisconnect == "true")
        record_path = (str(self.recordings.path_for(object_name_for(sid)).resolve())
                       if record else None)
        req = CallbackRequest(
            session_id=sid, app_key=app["app_key"], display_nbr=display,
            caller_nbr=body.callerNbr, display_callee_nbr=display_callee,
            callee_nbr=body.calleeNbr, max_duration_min=body.maxDuration,
            last_min_voice=last_min, last_min_to=LastMinTarget(body.lastMinToUE),
            play_pre_voice=body.playPreVoice == "true", pre_voice=pre, wait_voice=wait,
            callee_media=CalleeMedia(body.calleeMedia), record=record, record_hint_tone=hint,
            record_path=record_path)
        return await self._admit_and_start(
            app, self._ctx(app, row, record_path), row,
            lambda: self.backend.start_callback(req), body.returnIdlePort == "true")

    async def notify(self, app: Row, body: NotifyBody) -> dict[str, Any]:
        self.check_dialable(body.calleeNbr, "calleeNbr")
        bind = await self.check_bind(app, body.bindNbr)
        display = await self.resolve_display(app, body.displayNbr, "displayNbr", bind)
        status_url = self.decode_url(body.statusUrl, "statusUrl", app["status_url"])
        fee_url = self.decode_url(body.feeUrl, "feeUrl", app["fee_url"])
        user_data = self.check_user_data(body.userData)
        items: list[PlayItem] = []
        for i, it in enumerate(body.playInfoList):
            if (it.notifyVoice is None) == (it.templateId is None):
                raise invalid(f"playInfoList[{i}] needs exactly one of notifyVoice, templateId.")
            if it.templateParas is not None and it.templateId is None:
                raise invalid(f"playInfoList[{i}].templateParas needs templateId.")
            replay = it.replayAfterCollection == "true"
            trigger = it.collectContentTriggerReplaying
            if replay and it.collectInd == 0:
                raise invalid(f"playInfoList[{i}].replayAfterCollection needs collectInd.")
            if trigger is not None and (not replay or len(trigger) != it.collectInd
                                        or not all(c in "0123456789*#" for c in trigger)):
                raise invalid(f"playInfoList[{i}].collectContentTriggerReplaying must be "
                              f"{it.collectInd} DTMF digits with replayAfterCollection=true.")
            path = await self.resolve_file(app, it.notifyVoice, f"playInfoList[{i}].notifyVoice")
            text = (await self.render_template(app, it.templateId, it.templateParas, i)
                    if it.templateId is not None else None)
            items.append(PlayItem(file_path=path, tts_text=text, template_id=it.templateId,
                                  collect_digits=it.collectInd, replay_after_collection=replay,
                                  replay_trigger=trigger))
        await self.check_frequency(body.calleeNbr)
        sid = self.new_session_id()
        row = self._row(app, sid, ServiceType.PLAYBACK, display, display, body.calleeNbr,
                        "", bind, user_data, status_url, fee_url, False, False)
        req = NotificationRequest(session_id=sid, app_key=app["app_key"], display_nbr=display,
                                  callee_nbr=body.calleeNbr, items=tuple(items))
        return await self._admit_and_start(
            app, self._ctx(app, row, None), row,
            lambda: self.backend.start_notification(req), body.returnIdlePort == "true")

    async def verify(self, app: Row, body: VerifyBody) -> dict[str, Any]:
        if body.languageType not in (1, 2):
            raise invalid("languageType must be 2 (Mandarin) or 1 (English).")
        self.check_dialable(body.calleeNbr, "calleeNbr")
        bind = await self.check_bind(app, body.bindNbr)
        display = await self.resolve_display(app, body.displayNbr, "displayNbr", bind)
        status_url = self.decode_url(body.statusUrl, "statusUrl", app["status_url"])
        fee_url = self.decode_url(body.feeUrl, "feeUrl", app["fee_url"])
        user_data = self.check_user_data(body.userData)
        pre = await self.resolve_file(app, body.preTone, "preTone")
        pos = await self.resolve_file(app, body.posTone, "posTone")
        assert pre is not None
        await self.check_frequency(body.calleeNbr)
        sid = self.new_session_id()
        row = self._row(app, sid, ServiceType.PLAYBACK, display, display, body.calleeNbr,
                        "", bind, user_data, status_url, fee_url, False, False)
        req = VerificationRequest(session_id=sid, app_key=app["app_key"], display_nbr=display,
                                  callee_nbr=body.calleeNbr, language=body.languageType,
                                  pre_tone=pre, verify_code=body.verifyCode, pos_tone=pos,
                                  times=body.times)
        return await self._admit_and_start(
            app, self._ctx(app, row, None), row,
            lambda: self.backend.start_verification(req), body.returnIdlePort == "true")

    async def stop(self, app: Row, body: StopBody) -> dict[str, Any]:
        with structlog.contextvars.bound_contextvars(session_id=body.sessionid,
                                                     app_key=app["app_key"]):
            return await self._stop(app, body)

    async def _stop(self, app: Row, body: StopBody) -> dict[str, Any]:
        call = await self.store.get_call(body.sessionid)
        if call is None or call["app_key"] != app["app_key"] or call["ended_at"] is not None:
            raise ApiError(Code.NOT_FOUND, GONE_DESC)
        if call["node"] != self.node and self.peers is not None:
            # another node of the cluster runs it: that node stops it and its answer is ours
            return await self.peers.stop(call["node"], body.sessionid)
        return await self.stop_local(body.sessionid)

    async def stop_local(self, session_id: str) -> dict[str, Any]:
        """Stop a call this node runs (callStop, or one forwarded by another node)."""
        if not await self.backend.stop_call(session_id):
            raise ApiError(Code.NOT_FOUND, GONE_DESC)
        log.info("call_stop_requested")
        return {"resultcode": "0", "resultdesc": "Success"}
