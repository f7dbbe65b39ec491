"""Relay between two legs (header rewrite only when the codecs match, G.711 transcoding
when they differ). The packet work happens in the endpoints' receive path; the bridge only
decides who relays to whom, so muting or ending it is an attribute change."""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING

import structlog

if TYPE_CHECKING:
    from media.endpoint import MediaEndpoint

log = structlog.get_logger("media.bridge")


class BridgeDirection(enum.Enum):
    A_TO_B = "a_to_b"  # what leg a says, leg b hears
    B_TO_A = "b_to_a"


class Bridge:
    """Created by ``MediaEngine.bridge(a, b, early_media=...)``.

    With ``early_media=True`` only b → a flows (the callee's ringback or announcement
    reaches the caller) until :meth:`connect` makes it two-way.

    * ``stop()`` — end relaying (both endpoints stay open); idempotent.
    * ``mute(direction)`` / ``unmute(direction)`` — ``BridgeDirection`` or its value
      ``"a_to_b"`` / ``"b_to_a"``.
    * ``connect()`` — leave early-media mode (unmute a → b).
    """

    def __init__(self, a: MediaEndpoint, b: MediaEndpoint, *, early_media: bool = False) -> None:
        if a is b:
            raise ValueError("cannot bridge an endpoint with itself")
        for ep in (a, b):
            if ep.closed:
                raise ValueError(f"{ep!r} is closed")
            if ep.bridge is not None:
                ep.bridge.stop()
        self.a = a
        self.b = b
        self.early_media = early_media
        self._muted: set[BridgeDirection] = {BridgeDirection.A_TO_B} if early_media else set()
        self.active = True
        a.bridge = self
        b.bridge = self
        self._apply()
        log.info("bridge_started", a=f"{a.call_id}/{a.leg}", b=f"{b.call_id}/{b.leg}",
                 early_media=early_media,
                 transcoding=a.codec != b.codec)

    def _apply(self) -> None:
        on = self.active
        self.a._relay_to = self.b if on and BridgeDirection.A_TO_B not in self._muted else None
        self.b._relay_to = self.a if on and BridgeDirection.B_TO_A not in self._muted else None
        self.a._update_inband()
        self.b._update_inband()

    def mute(self, direction: BridgeDirection | str) -> None:
        self._muted.add(BridgeDirection(direction))
        self._apply()

    def unmute(self, direction: BridgeDirection | str) -> None:
        self._muted.discard(BridgeDirection(direction))
        self._apply()

    def connect(self) -> None:
        self.early_media = False
        self.unmute(BridgeDirection.A_TO_B)

    @property
    def muted(self) -> frozenset[BridgeDirection]:
        return frozenset(self._muted)

    def stop(self) -> None:
        if not self.active:
            return
        self.active = False
        self._apply()
        for ep in (self.a, self.b):
            if ep.bridge is self:
                ep.bridge = None
        log.info("bridge_stopped", a=f"{self.a.call_id}/{self.a.leg}",
                 b=f"{self.b.call_id}/{self.b.leg}")
