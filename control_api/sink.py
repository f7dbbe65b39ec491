"""Consumer of the switch's call events: status pushes (EV-2) and, at the end of a call, the
CDR row written together with closing the call (EV-3/EV-4) plus billing (BILL-1)."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import structlog

from control_api.billing import charge_call
from control_api.cdr import build_fee_info, fmt_time
from control_api.outbox import CdrOutbox
from control_api.pusher import PushTarget, StatusPusher
from control_api.recordings import RecordingStore
from control_api.service import CallContext, SessionRegistry, context_from_row
from control_api.storage.repo import Store
from switch.events import (
    CallEnded,
    CallEvent,
    CollectInfo,
    Leg,
    LegEvent,
    LegEventKind,
    ServiceType,
)

log = structlog.get_logger("voicecall.events")

STATE_DESC: dict[int, str] = {
    0: "The call is released normally.",
    7001: "Call frequency control (developer).", 7002: "Call frequency control (app).",
    7003: "Call frequency control (display number).", 7004: "The callee is on a blacklist.",
    7108: "The user is frozen.", 7109: "Insufficient voice ports.",
    8000: "Internal error.", 8001: "The user cannot be connected.",
    8002: "The far end played a failure announcement.", 8003: "Ringing timed out.",
    8004: "Hung up while ringing.", 8005: "TTS conversion failed.",
    8006: "The play file does not exist.", 8007: "Playing to the user failed.",
    8008: "Play-and-collect failed.", 8009: "The calling user hung up before connection.",
    8010: "The maximum call duration was reached.", 8012: "Invalid app_key.",
    8015: "Recording failed.", 8017: "User-requested hang-up.",
    8018: "No service permission.", 8020: "Service exception.",
    8100: "The callee number does not exist.", 8101: "The callee did not answer.",
    8102: "The callee is busy.", 8103: "The callee is temporarily unreachable.",
    8104: "The callee is powered off.", 8105: "The callee hung up or is suspended.",
    8106: "The caller number does not exist.", 8107: "The caller did not answer.",
    8108: "The caller is busy.", 8109: "The caller is temporarily unreachable.",
    8110: "The caller is powered off.", 8111: "The caller hung up or is suspended.",
}


class EventSink:
    def __init__(self, store: Store, sessions: SessionRegistry, pusher: StatusPusher,
                 outbox: CdrOutbox | None, recordings: RecordingStore, *, host_name: str,
                 record_domain: str, rate_per_minute: float) -> None:
        self.store = store
        self.sessions = sessions
        self.pusher = pusher
        self.outbox = outbox
        self.recordings = recordings
        self.host_name = host_name
        self.record_domain = record_domain
        self.rate = rate_per_minute
        self._tasks: set[asyncio.Task[None]] = set()
        # events of sessions not in memory (e.g. after a restart) wait for their context here
        self._pending: dict[str, list[CallEvent]] = {}
        # Extension ``statusInfo.seq``: 1, 2, 3 … per call in the order the switch emitted
        # the events, so a receiver can order pushes that overtake each other.
        self._seq: dict[str, int] = {}

    # the bus handler: synchronous, never blocks
    def on_event(self, event: CallEvent) -> None:
        ctx = self.sessions.get(event.session_id)
        if ctx is None:
            waiting = self._pending.get(event.session_id)
            if waiting is not None:
                waiting.append(event)
                return
            self._pending[event.session_id] = [event]
            self._spawn(self._recover(event.session_id))
            return
        self._dispatch(ctx, event)

    def _spawn(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _recover(self, session_id: str) -> None:
        with structlog.contextvars.bound_contextvars(session_id=session_id):
            await self._recover_bound(session_id)

    async def _recover_bound(self, session_id: str) -> None:
        ctx: CallContext | None = None
        try:
            call = await self.store.get_call(session_id)
            app = await self.store.get_app(call["app_key"]) if call else None
            if call is not None and app is not None:
                ctx = context_from_row(call, app)
        except Exception:
            log.exception("event_context_lookup_failed", session_id=session_id)
        events = self._pending.pop(session_id, [])
        if ctx is None:
            log.warning("event_for_unknown_session", session_id=session_id, dropped=len(events))
            return
        for ev in events:
            self._dispatch(ctx, ev)

    def _dispatch(self, ctx: CallContext, event: CallEvent) -> None:
        # The push and close tasks spawned here copy this context: their log lines (push
        # failures, the close, the CDR) carry the call's session and app.
        with structlog.contextvars.bound_contextvars(session_id=ctx.session_id,
                                                     app_key=ctx.app_key):
            self._dispatch_bound(ctx, event)

    def _dispatch_bound(self, ctx: CallContext, event: CallEvent) -> None:
        if isinstance(event, LegEvent):
            self._push(ctx, self.status_body(ctx, event))
        elif isinstance(event, CollectInfo):
            info: dict[str, Any] = {"sessionId": ctx.session_id,
                                    "timestamp": fmt_time(event.timestamp),
                                    "digitInfo": event.digits}
            if ctx.user_data:
                info["userData"] = ctx.user_data
            self._push(ctx, {"eventType": "collectInfo", "statusInfo": info})
        elif isinstance(event, CallEnded):
            self.sessions.pop(ctx.session_id)
            self._spawn(self._close(ctx, event))

    def _push(self, ctx: CallContext, body: dict[str, Any]) -> None:
        seq = self._seq.get(ctx.session_id, 0) + 1
        self._seq[ctx.session_id] = seq
        if not ctx.status_url:
            return  # EV-1: no URL, nothing pushed
        body["statusInfo"]["seq"] = seq
        self.pusher.push(ctx.session_id,
                         PushTarget(ctx.status_url, ctx.app_key, ctx.app_secret,
                                    ctx.sign_newlines), body)

    @staticmethod
    def status_body(ctx: CallContext, ev: LegEvent) -> dict[str, Any]:
        if ev.leg is Leg.B:
            caller, called = ctx.display_callee_nbr, ctx.callee
        else:
            caller, called = ctx.display_nbr, ctx.a_party
        info: dict[str, Any] = {
            "sessionId": ctx.session_id,
            "timestamp": fmt_time(ev.timestamp),
            "caller": ev.caller or caller,
            "called": ev.called or called,
        }
        if ev.kind is LegEventKind.DISCONNECT:
            code = ev.state_code if ev.state_code is not None else 0
            info["stateCode"] = code
            info["stateDesc"] = ev.state_desc or STATE_DESC.get(code, "Call released.")
            if (ctx.service is ServiceType.CALLBACK and ctx.party_type_required
                    and ev.party_type is not None):
                info["partyType"] = ev.party_type.value
        if ctx.user_data:
            info["userData"] = ctx.user_data
        return {"eventType": ev.kind.value, "statusInfo": info}

    async def _close(self, ctx: CallContext, ended: CallEnded) -> None:
        try:
            await self.close_call(ctx, ended)
        except Exception:
            log.exception("call_close_failed", session_id=ctx.session_id)
        finally:
            self._seq.pop(ctx.session_id, None)

    async def close_call(self, ctx: CallContext, ended: CallEnded) -> bool:
        call = ctx.row if ctx.row is not None else await self.store.get_call(ctx.session_id)
        if call is None:
            log.warning("call_end_for_unknown_session", session_id=ctx.session_id)
            return False
        obj = None
        if ctx.record_object_name:
            path = ended.recording_path or ctx.record_path
            obj = self.recordings.accept(path, ended.recording_duration_s,
                                         ctx.record_object_name)
        charge = charge_call(ctx.service, a_answer=ended.a.answer,
                             b_answer=ended.b.answer if ended.b else None,
                             end=ended.end_time, rate_per_minute=self.rate)
        fee = build_fee_info(call, ended, host_name=self.host_name, record_object_name=obj,
                             record_domain=self.record_domain if obj else None,
                             record_download_url=self.recordings.signed_url(obj) if obj else None)
        cdr = None
        if ctx.fee_url:
            cdr = {"session_id": ctx.session_id, "app_key": ctx.app_key, "fee_url": ctx.fee_url,
                   "call_end_time": fee["callEndTime"],
                   "payload": json.dumps(fee, ensure_ascii=False),
                   "state": "pending", "attempts": 0, "next_attempt_at": 0,
                   "created_at": int(time.time() * 1000)}
        closed = await self.store.end_call(ctx.session_id, {
            "ended_at": int(ended.end_time * 1000), "state_code": ended.state_code,
            "ul_fail_reason": ended.ul_fail_reason, "record_object_name": obj,
            "minutes": charge.billed_minutes, "charge_milli": charge.charge_milli}, cdr)
        if closed and cdr is not None and self.outbox is not None:
            self.outbox.nudge()
        if closed and ctx.record_object_name:
            # Extension (like Twilio's RecordingStatusCallback): a recorded call's last
            # status push says whether a file exists ("completed") or not ("absent": never
            # bridged, or under 3 s of talk, REC-3) and where to fetch it.
            info: dict[str, Any] = {"sessionId": ctx.session_id,
                                    "timestamp": fmt_time(time.time()),
                                    "recordingStatus": "completed" if obj else "absent",
                                    "recordDuration": round(ended.recording_duration_s, 2)}
            if obj:
                info.update(recordObjectName=obj, recordDomain=self.record_domain,
                            recordFileDownloadUrl=fee.get("recordFileDownloadUrl", ""))
            if ctx.user_data:
                info["userData"] = ctx.user_data
            self._push(ctx, {"eventType": "recordingStatus", "statusInfo": info})
        log.info("call_closed", session_id=ctx.session_id, state_code=ended.state_code,
                 minutes=charge.billed_minutes, cdr=cdr is not None)
        return closed

    async def drain(self) -> None:
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
