"""SIP timer values (RFC 3261 §17 and Table 4, RFC 6026 Timers L/M) and a sans-I/O timer heap.

Nothing here reads a clock: deadlines are plain floats on whatever monotonic scale the caller
feeds in (``loop.time()`` in production, a virtual counter in tests).
"""

from __future__ import annotations

import enum
import heapq
import itertools
from collections.abc import Hashable
from dataclasses import dataclass, field


class Timer(enum.StrEnum):
    """Timer names. A–K are RFC 3261 Table 4, L/M are RFC 6026; the last three are ours."""

    A = "A"  # INVITE request retransmit (client, unreliable only)
    B = "B"  # INVITE transaction timeout (client)
    D = "D"  # wait for response retransmits after a non-2xx final (client INVITE)
    E = "E"  # non-INVITE request retransmit (client, unreliable only)
    F = "F"  # non-INVITE transaction timeout (client)
    G = "G"  # INVITE final response retransmit (server, unreliable only)
    H = "H"  # wait for ACK receipt (server INVITE)
    I = "I"  # noqa: E741  wait for ACK retransmits (server INVITE, Confirmed)
    J = "J"  # wait for request retransmits (server non-INVITE)
    K = "K"  # wait for response retransmits (client non-INVITE)
    L = "L"  # RFC 6026: server INVITE stays Accepted to absorb INVITE retransmits / pass ACKs
    M = "M"  # RFC 6026: client INVITE stays Accepted to pass 2xx retransmits to the TU
    # RFC 3261 §9.1: "If no final response is received to the INVITE within 64*T1 seconds
    # after the CANCEL was sent, the client SHOULD consider the INVITE transaction terminated."
    CANCEL_GUARD = "cancel-guard"
    # RFC 3261 §13.3.1.4: the UAS core retransmits a 2xx until the ACK arrives ...
    RETRANSMIT_2XX = "2xx-retransmit"
    # ... and gives up (confirms the dialog, then should BYE) after 64*T1 without an ACK.
    WAIT_ACK = "2xx-wait-ack"


RELIABLE_TRANSPORTS = frozenset({"tcp", "tls", "sctp", "ws", "wss"})


def is_reliable(transport: str) -> bool:
    return transport.lower() in RELIABLE_TRANSPORTS


@dataclass(frozen=True, slots=True)
class TimerSettings:
    """T1/T2/T4 in seconds (RFC 3261 Table 4) and every timer derived from them."""

    t1: float = 0.5  # RTT estimate
    t2: float = 4.0  # maximum retransmit interval for non-INVITE requests and INVITE responses
    t4: float = 5.0  # maximum duration a message remains in the network

    def __post_init__(self) -> None:
        if not (self.t1 > 0 and self.t2 >= self.t1 and self.t4 > 0):
            raise ValueError(f"bad SIP timers T1={self.t1} T2={self.t2} T4={self.t4}")

    @classmethod
    def from_ms(cls, t1_ms: int, t2_ms: int, t4_ms: int) -> TimerSettings:
        """From ``[sip] t1_ms / t2_ms / t4_ms`` (``SipConfig``)."""
        return cls(t1_ms / 1000.0, t2_ms / 1000.0, t4_ms / 1000.0)

    # Every value below is a duration in seconds; 0 means "fire immediately" which the
    # machines shortcut into an immediate transition (RFC 3261 says exactly that for
    # reliable transports: "Timer D ... zero seconds for reliable transports").

    @property
    def timeout_64t1(self) -> float:
        """Timers B, F, H, J (unreliable), L, M and the 2xx give-up: 64*T1."""
        return 64.0 * self.t1

    def timer_d(self, reliable: bool) -> float:
        # "at least 32 seconds for unreliable transports": it must outlive the server's
        # Timer G retransmissions (64*T1) if T1 was raised above the default.
        return 0.0 if reliable else max(32.0, 64.0 * self.t1)

    def timer_i(self, reliable: bool) -> float:
        return 0.0 if reliable else self.t4

    def timer_j(self, reliable: bool) -> float:
        return 0.0 if reliable else 64.0 * self.t1

    def timer_k(self, reliable: bool) -> float:
        return 0.0 if reliable else self.t4

    def next_invite_interval(self, interval: float) -> float:
        """Timer A doubles without a cap (RFC 3261 §17.1.1.2)."""
        return 2.0 * interval

    def next_capped_interval(self, interval: float) -> float:
        """Timers E, G and the 2xx retransmit double up to T2 (§17.1.2.2, §17.2.1, §13.3.1.4)."""
        return min(2.0 * interval, self.t2)


@dataclass(order=True, slots=True)
class _Entry:
    deadline: float
    seq: int
    owner: Hashable = field(compare=False)
    name: Timer = field(compare=False)
    live: bool = field(default=True, compare=False)


class TimerHeap:
    """One heap for every timer of every transaction, with O(1) lazy cancellation.

    The transaction layer keeps a single heap so the adapter needs only one OS timer
    (``next_deadline``). A timer is identified by ``(owner, name)``; rescheduling replaces.
    """

    def __init__(self) -> None:
        self._heap: list[_Entry] = []
        self._live: dict[tuple[Hashable, Timer], _Entry] = {}
        self._seq = itertools.count()

    def __len__(self) -> int:
        return len(self._live)

    def schedule(self, owner: Hashable, name: Timer, deadline: float) -> None:
        self.cancel(owner, name)
        entry = _Entry(deadline, next(self._seq), owner, name)
        self._live[(owner, name)] = entry
        heapq.heappush(self._heap, entry)
        self._compact()

    def cancel(self, owner: Hashable, name: Timer) -> None:
        entry = self._live.pop((owner, name), None)
        if entry is not None:
            entry.live = False

    def cancel_all(self, owner: Hashable) -> None:
        for name in Timer:
            self.cancel(owner, name)

    def deadline_of(self, owner: Hashable, name: Timer) -> float | None:
        entry = self._live.get((owner, name))
        return None if entry is None else entry.deadline

    def next_deadline(self) -> float | None:
        self._drop_dead_top()
        return self._heap[0].deadline if self._heap else None

    def pop_due(self, now: float) -> tuple[Hashable, Timer] | None:
        """The earliest timer whose deadline is ``<= now`` (removed), or None."""
        self._drop_dead_top()
        if not self._heap or self._heap[0].deadline > now:
            return None
        entry = heapq.heappop(self._heap)
        del self._live[(entry.owner, entry.name)]
        return entry.owner, entry.name

    def _drop_dead_top(self) -> None:
        while self._heap and not self._heap[0].live:
            heapq.heappop(self._heap)

    def _compact(self) -> None:
        # Cancelled entries stay in the heap until they reach the top; rebuild when they
        # outnumber live ones so memory stays O(live timers) under cancel-heavy load.
        if len(self._heap) > 64 and len(self._heap) > 2 * len(self._live):
            self._heap = [e for e in self._heap if e.live]
            heapq.heapify(self._heap)
