"""The switch side of ``control_api.backend.CallBackend``: starts each accepted request as a
scenario task and ends it on callStop. (Structural typing: this module does not import
control_api.)

It also answers the admin API's SIP-trace questions: which SIP Call-IDs a session's legs had
(kept for the last sessions after they end, as long as the traces themselves) and the trace
documents of :mod:`switch.trace`, as plain data."""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import structlog

from switch.events import CallbackRequest, NotificationRequest, VerificationRequest
from switch.services.callback import CallbackCall
from switch.services.media_leg import MediaLeg
from switch.services.playback import NotificationCall, VerificationCall
from switch.services.runtime import Runtime
from switch.trace import (
    CallTraces,
    TracedLeg,
    dialog_document,
    recent_dialogs,
    session_document,
)

log = structlog.get_logger("voicecall.backend")

Scenario = CallbackCall | NotificationCall | VerificationCall


class SwitchBackend:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.calls: dict[str, tuple[Scenario, asyncio.Task[None]]] = {}
        # legs of ended sessions, newest last; bounded like the traces they point into
        self._ended: OrderedDict[str, tuple[TracedLeg, ...]] = OrderedDict()

    def _start(self, sid: str, scenario: Scenario) -> None:
        # A task runs in a copy of the context it is created in: every log line of the
        # scenario (and of whatever it awaits) carries the session and app it belongs to.
        with structlog.contextvars.bound_contextvars(session_id=sid,
                                                     app_key=scenario.req.app_key):
            task = asyncio.create_task(scenario.run(), name=f"call-{sid}")
        self.calls[sid] = (scenario, task)
        task.add_done_callback(lambda _t: self._ended_call(sid))

    def _ended_call(self, sid: str) -> None:
        entry = self.calls.pop(sid, None)
        if entry is None:
            return
        legs = _traced_legs(entry[0])
        # One line pairing the session with its legs' SIP Call-IDs (``call_id`` = leg A,
        # ``b_call_id`` = leg B, as the B2BUA logs its calls): from a session's log lines to
        # its SIP trace, and to the far ends' logs, which know only the Call-ID.
        ids = {"b_call_id" if leg.leg == "B" else "call_id": leg.call_id for leg in legs}
        if ids:
            log.info("call_legs", session_id=sid, app_key=entry[0].req.app_key, **ids)
        if self.traces.max_calls == 0:
            return
        self._ended[sid] = legs
        while len(self._ended) > self.traces.max_calls:
            self._ended.popitem(last=False)

    async def start_callback(self, req: CallbackRequest) -> None:
        self._start(req.session_id, CallbackCall(self.runtime, req))

    async def start_notification(self, req: NotificationRequest) -> None:
        self._start(req.session_id, NotificationCall(self.runtime, req))

    async def start_verification(self, req: VerificationRequest) -> None:
        self._start(req.session_id, VerificationCall(self.runtime, req))

    async def stop_call(self, session_id: str) -> bool:
        entry = self.calls.get(session_id)
        if entry is None:
            return False
        entry[0].stop()
        return True

    # -- SIP traces (admin API) -----------------------------------------------------------------

    @property
    def traces(self) -> CallTraces:
        return self.runtime.ua.stack.traces

    def _legs(self, session_id: str) -> tuple[TracedLeg, ...] | None:
        entry = self.calls.get(session_id)
        if entry is not None:
            return _traced_legs(entry[0])
        return self._ended.get(session_id)

    def sip_trace(self, session_id: str) -> dict[str, Any] | None:
        """The session's legs with their Call-IDs, every SIP message of them in time order
        and the ladder text; ``None`` for an unknown session or one whose traces expired."""
        legs = self._legs(session_id)
        if legs is None:
            return None
        return session_document(self.traces, session_id, legs)

    def sip_dialogs(self, limit: int = 100, *, calls_only: bool = True,
                    ) -> list[dict[str, Any]]:
        return recent_dialogs(self.traces, self._sessions_by_call_id(), limit,
                              calls_only=calls_only)

    def sip_dialog(self, call_id: str, also: Sequence[str] = ()) -> dict[str, Any] | None:
        return dialog_document(self.traces, call_id, self._sessions_by_call_id().get(call_id),
                               also)

    def _sessions_by_call_id(self) -> dict[str, str]:
        out = {leg.call_id: sid for sid, legs in self._ended.items() for leg in legs}
        for sid, (scenario, _) in self.calls.items():
            out.update((leg.call_id, sid) for leg in _traced_legs(scenario))
        return out

    @property
    def active(self) -> int:
        return len(self.calls)

    async def close(self) -> None:
        """Stop every call (node shutdown): each still reports its disconnect and CDR."""
        for scenario, _ in list(self.calls.values()):
            scenario.stop()
        tasks = [t for _, t in self.calls.values()]
        if tasks:
            with contextlib.suppress(Exception):
                await asyncio.wait(tasks, timeout=10)


def _traced_legs(scenario: Scenario) -> tuple[TracedLeg, ...]:
    """The legs a scenario has dialled so far: a callback's A (caller) and B (callee), the
    single A leg (the callee) of a notification or verification."""
    if isinstance(scenario, CallbackCall):
        pairs: list[tuple[MediaLeg | None, str]] = [(scenario.a, "caller"), (scenario.b, "callee")]
    else:
        pairs = [(scenario.leg, "callee")]
    return tuple(TracedLeg(ml.leg.label or "?", role, ml.leg.peer_number, ml.leg.call_id)
                 for ml, role in pairs if ml is not None)
