"""Gateway (SIP trunk) health, sans-I/O: OPTIONS probe outcomes and call outcomes in, an
up/down verdict out. A gateway starts "up" so that a freshly started node routes at once;
one failed probe (timeout, transport error, 5xx other than 503 with Retry-After) marks it
down, one successful probe (any response but 408/5xx) brings it back, like Kamailio's
dispatcher with ``ds_probing_threshold=1``."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


def call_outcome(status: int, *, got_response: bool, cancelled: bool) -> str:
    """What one INVITE attempt to a gateway came to (voicecall_gateway_calls_total):
    ``status`` is its final response (or the 408/503 the UA made up when ``got_response``
    is False: no answer at all, transport failure). ``cancelled``: we gave up on it (our
    CANCEL, whatever the reason). ASR = answered / all outcomes."""
    if 200 <= status < 300:
        return "answered"
    if cancelled or status == 487:
        return "cancelled"
    if not got_response or 500 <= status < 600:
        return "unavailable"
    if status in (486, 600):
        return "busy"
    if status in (408, 480):
        return "no_answer"  # the far end's own no-answer timer / "temporarily unavailable"
    return "rejected"


class GatewayState(enum.Enum):
    UP = "up"
    DOWN = "down"


def probe_succeeded(status: int | None) -> bool:
    """Any answer proves the gateway is alive, except timeouts/408 and server failures."""
    if status is None or status == 408:
        return False
    return not 500 <= status < 600


@dataclass(slots=True)
class GatewayHealth:
    name: str
    state: GatewayState = GatewayState.UP
    changed_at: float = 0.0
    consecutive_failures: int = 0
    failure_threshold: int = 1
    last_status: int | None = field(default=None)

    @property
    def is_up(self) -> bool:
        return self.state is GatewayState.UP

    def probe_result(self, status: int | None, now: float) -> bool:
        """Record an OPTIONS outcome (None = timeout/transport error). Returns True when the
        state changed."""
        self.last_status = status
        if probe_succeeded(status):
            self.consecutive_failures = 0
            return self._set(GatewayState.UP, now)
        self.consecutive_failures += 1
        if self.consecutive_failures >= self.failure_threshold:
            return self._set(GatewayState.DOWN, now)
        return False

    def call_timed_out(self, now: float) -> bool:
        """An INVITE to this gateway got no response at all: treat like a failed probe."""
        return self.probe_result(None, now)

    def _set(self, state: GatewayState, now: float) -> bool:
        if state is self.state:
            return False
        self.state = state
        self.changed_at = now
        return True
