"""The switch side of ``control_api.backend.CallBackend``: starts each accepted request as a
scenario task and ends it on callStop. (Structural typing: this module does not import
control_api.)"""

from __future__ import annotations

import asyncio
import contextlib

import structlog

from switch.events import CallbackRequest, NotificationRequest, VerificationRequest
from switch.services.callback import CallbackCall
from switch.services.playback import NotificationCall, VerificationCall
from switch.services.runtime import Runtime

log = structlog.get_logger("voicecall.backend")

Scenario = CallbackCall | NotificationCall | VerificationCall


class SwitchBackend:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.calls: dict[str, tuple[Scenario, asyncio.Task[None]]] = {}

    def _start(self, sid: str, scenario: Scenario) -> None:
        task = asyncio.create_task(scenario.run(), name=f"call-{sid}")
        self.calls[sid] = (scenario, task)
        task.add_done_callback(lambda _t: self.calls.pop(sid, None))

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
