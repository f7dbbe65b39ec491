"""What the control API needs from the switch: a :class:`CallBackend`.

The request dataclasses live in :mod:`switch.events` (the switch must not import control_api);
they are re-exported here so API code has one import. The API calls the backend only after
authentication, validation, concurrency admission and storing the call row; anything the call
does afterwards arrives as events on the switch's :class:`~switch.events.CallEventBus`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from switch.events import (
    CallbackRequest,
    CallEventBus,
    NotificationRequest,
    PlayItem,
    VerificationRequest,
)

__all__ = [
    "BackendError",
    "CallBackend",
    "CallEventBus",
    "CallbackRequest",
    "NotificationRequest",
    "PlayItem",
    "SipTrace",
    "VerificationRequest",
]

SipTrace = dict[str, Any]
"""A SIP trace as plain JSON-ready data (the switch builds it; the API serves it as is).

Of a session (:meth:`CallBackend.sip_trace`)::

    {"session_id": str,
     "legs": [{"leg": "A"|"B", "role": "caller"|"callee", "number": str, "call_id": str,
               "messages": int}],
     "messages": [{"leg", "call_id", "time" (ISO 8601 UTC), "timestamp" (epoch s),
                   "direction" ("in"|"out"), "transport", "local", "remote", "first_line",
                   "text" (the whole message)}],        # all legs merged in time order
     "ladder": str}                                     # the text ladder diagram

Of SIP dialogs (:meth:`CallBackend.sip_dialog`): ``call_id``, ``call_ids`` (with the merged
ones), ``session_id`` (of ``call_id``, or None), ``messages`` (each with its ``call_id``) and
``ladder`` as above."""


class BackendError(Exception):
    """The switch refused to start a call (e.g. no free ports). ``result_code`` is the API
    result code to answer with (default ``1010001`` internal error)."""

    def __init__(self, message: str, result_code: str = "1010001") -> None:
        super().__init__(message)
        self.result_code = result_code


@runtime_checkable
class CallBackend(Protocol):
    """Implemented by the switch (issue C) and by :mod:`control_api.fake_backend` in tests.

    ``start_*`` return once the call has been accepted for dialling (not when it ends); they
    raise :class:`BackendError` to refuse it. ``stop_call`` releases both parties and returns
    ``False`` if the session is unknown or already over."""

    async def start_callback(self, req: CallbackRequest) -> None: ...

    async def start_notification(self, req: NotificationRequest) -> None: ...

    async def start_verification(self, req: VerificationRequest) -> None: ...

    async def stop_call(self, session_id: str) -> bool: ...

    # SIP traces for the admin API: in memory on the node that ran the call, the last
    # ``[sip] trace_calls`` Call-IDs; ``None`` when unknown here or expired.

    def sip_trace(self, session_id: str) -> SipTrace | None: ...

    def sip_dialogs(self, limit: int = 100, *, calls_only: bool = True,
                    ) -> list[dict[str, Any]]:
        """The newest traced Call-IDs (INVITE dialogs; with ``calls_only=False`` also OPTIONS,
        REGISTER …), newest first: ``call_id``, ``session_id`` (None for a call not started
        by the API), ``time``, ``timestamp``, ``last_timestamp``, ``direction``
        ("inbound"|"outbound"), ``first_line``, ``remote``, ``messages``."""
        ...

    def sip_dialog(self, call_id: str, also: Sequence[str] = ()) -> SipTrace | None:
        """One SIP dialog, or with ``also`` several merged (e.g. both legs of a B2BUA call);
        ``None`` if any is unknown or expired."""
        ...
