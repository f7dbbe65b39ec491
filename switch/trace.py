"""Per-call SIP traces kept in memory for the last N calls (lab debugging: what went in and
out, when, to whom). Bounded in calls and in messages per call."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class TraceEntry:
    timestamp: float          # wall-clock seconds (time.time()) for human ladders
    direction: str            # "in" | "out"
    transport: str
    local: str                # "host:port"
    remote: str               # "host:port"
    first_line: str
    data: bytes


class CallTraces:
    def __init__(self, max_calls: int = 200, max_messages_per_call: int = 500) -> None:
        self.max_calls = max_calls
        self.max_messages = max_messages_per_call
        self._calls: OrderedDict[str, list[TraceEntry]] = OrderedDict()

    def add(self, call_id: str, entry: TraceEntry) -> None:
        if self.max_calls == 0 or not call_id:
            return
        entries = self._calls.get(call_id)
        if entries is None:
            entries = self._calls[call_id] = []
            while len(self._calls) > self.max_calls:
                self._calls.popitem(last=False)
        if len(entries) < self.max_messages:
            entries.append(entry)

    def get(self, call_id: str) -> list[TraceEntry] | None:
        entries = self._calls.get(call_id)
        return list(entries) if entries is not None else None

    def call_ids(self) -> list[str]:
        return list(self._calls)

    def ladder(self, call_id: str) -> str:
        """A text ladder diagram of one call's messages."""
        entries = self._calls.get(call_id)
        if not entries:
            return ""
        t0 = entries[0].timestamp
        lines = []
        for e in entries:
            arrow = "<--" if e.direction == "in" else "-->"
            lines.append(f"{e.timestamp - t0:9.3f}s  {e.local:>21} {arrow} {e.remote:<21} "
                         f"{e.transport.upper():<4} {e.first_line}")
        return "\n".join(lines)
