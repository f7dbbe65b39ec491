"""Per-call SIP traces kept in memory for the last N calls (lab debugging: what went in and
out, when, to whom). Bounded in calls and in messages per call.

Besides the store this module holds the sans-I/O views of a trace: the multi-column text
ladder (:func:`render_ladder`) and the plain, JSON-ready documents the admin API serves
(:func:`session_document`, :func:`dialog_document`, :func:`recent_dialogs`). They are plain
``dict``/``list`` data so the control plane needs nothing of this module to use them."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

SWITCH_TITLE = "voicecall"


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
    """The newest ``max_calls`` calls (Call-IDs opened by an INVITE) and, apart, as many other
    exchanges (OPTIONS probes, REGISTER, …): a gateway probed every 30 s opens a Call-ID per
    probe, and those must not push the calls out."""

    def __init__(self, max_calls: int = 200, max_messages_per_call: int = 500) -> None:
        self.max_calls = max_calls
        self.max_messages = max_messages_per_call
        self._calls: OrderedDict[str, list[TraceEntry]] = OrderedDict()
        self._other: OrderedDict[str, list[TraceEntry]] = OrderedDict()

    def add(self, call_id: str, entry: TraceEntry) -> None:
        if self.max_calls == 0 or not call_id:
            return
        entries = self._calls.get(call_id)
        if entries is None:
            entries = self._other.get(call_id)
        if entries is None:
            bucket = self._calls if entry.first_line.startswith("INVITE ") else self._other
            entries = bucket[call_id] = []
            while len(bucket) > self.max_calls:
                bucket.popitem(last=False)
        if len(entries) < self.max_messages:
            entries.append(entry)

    def get(self, call_id: str) -> list[TraceEntry] | None:
        entries = self._calls.get(call_id)
        if entries is None:
            entries = self._other.get(call_id)
        return list(entries) if entries is not None else None

    def call_ids(self, *, calls_only: bool = False) -> list[str]:
        """Traced Call-IDs, oldest first; ``calls_only``: only those opened by an INVITE."""
        if calls_only or not self._other:
            return list(self._calls)
        both = [*self._calls.items(), *self._other.items()]
        both.sort(key=lambda kv: kv[1][0].timestamp if kv[1] else 0.0)
        return [k for k, _ in both]

    def ladder(self, call_id: str) -> str:
        """A text ladder diagram of one call's messages ("" if the call is unknown)."""
        entries = self._calls.get(call_id)
        if not entries:
            return ""
        return dialog_ladder(entries)


# ----------------------------------------------------------------------------- the ladder

@dataclass(frozen=True, slots=True)
class Column:
    """One party of a ladder. ``key`` is what :func:`render_ladder` entries refer to; the
    switch itself is the implicit middle column."""

    key: str
    title: str                               # "A caller", "B callee", "127.0.0.1:5070"
    address: str = ""                        # "udp:127.0.0.1:5071"
    side: Literal["left", "right"] = "right"


_MIN_GAP = 20
_MAX_GAP = 48
_TIME_W = 10   # "+123.456s" and a space


def _headers(data: bytes) -> list[str]:
    head = data.split(b"\r\n\r\n", 1)[0]
    return head.decode("utf-8", "replace").split("\r\n")[1:]


def _header(lines: Sequence[str], *names: str) -> str | None:
    for line in lines:
        name, sep, value = line.partition(":")
        if sep and name.strip().lower() in names:
            return value.strip()
    return None


def arrow_label(entry: TraceEntry) -> str:
    """What an arrow says: the method of a request, ``status reason (METHOD)`` of a response
    (so the 200 of a BYE is not taken for the 200 of the INVITE), ``+SDP`` with a body."""
    lines = _headers(entry.data)
    first = entry.first_line.strip()
    if first.startswith("SIP/"):
        label = first.split(" ", 1)[1] if " " in first else first
        cseq = _header(lines, "cseq")
        if cseq and " " in cseq:
            label += f" ({cseq.split()[-1]})"
    else:
        label = first.split(" ", 1)[0]
    ctype = _header(lines, "content-type", "c") or ""
    length = _header(lines, "content-length", "l")
    if "sdp" in ctype.lower() and (length is None or length.strip() not in ("", "0")):
        label += " +SDP"
    return label


def _initial_request(entry: TraceEntry) -> bool:
    """A request outside a dialog (no To tag): its Request-URI is worth showing."""
    if entry.first_line.startswith("SIP/"):
        return False
    to = _header(_headers(entry.data), "to", "t") or ""
    return ";tag=" not in to.replace(" ", "").lower()


def _fit(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(0, width - 1)] + "~"


def render_ladder(entries: Sequence[tuple[str, TraceEntry]], columns: Sequence[Column], *,
                  switch_title: str = SWITCH_TITLE, switch_address: str = "") -> str:
    """A multi-column ladder: ``left`` parties, the switch, ``right`` parties; one row per
    message (relative time, an arrow labelled by :func:`arrow_label`), in time order.

    ``entries`` pairs each message with the key of its column; a key with no column gets one
    of its own on the right. A message repeated byte for byte in the same direction is
    marked as a retransmission; one whose remote address is not its column's is annotated."""
    rows = sorted(entries, key=lambda kv: kv[1].timestamp)   # stable: equal stamps keep order
    cols = list(columns)
    known = {c.key for c in cols}
    for key, e in rows:
        if key not in known:
            known.add(key)
            cols.append(Column(key, e.remote, f"{e.transport}:{e.remote}", "right"))
    if not switch_address and rows:
        switch_address = rows[0][1].local
    left = [c for c in cols if c.side == "left"]
    right = [c for c in cols if c.side != "left"]
    heads: list[tuple[str, str]] = [(c.title, c.address) for c in left]
    heads.append((switch_title, switch_address))
    heads += [(c.title, c.address) for c in right]
    mid = len(left)
    by_key = {c.key: c for c in cols}
    index = {c.key: i for i, c in enumerate(left)}
    index.update({c.key: mid + 1 + i for i, c in enumerate(right)})

    labels = [arrow_label(e) for _, e in rows]
    widest = max([len(lb) + 8 for lb in labels] + [len(t) + 2 for h in heads for t in h] + [0])
    gap = max(_MIN_GAP, min(_MAX_GAP, widest + (widest % 2)))
    xs = [_TIME_W + gap // 2 + i * gap for i in range(len(heads))]
    width = xs[-1] + gap // 2

    def centred(texts: Sequence[str]) -> str:
        line = [" "] * width
        for x, t in zip(xs, texts, strict=True):
            t = _fit(t, gap - 2)
            start = max(0, x - len(t) // 2)
            line[start:start + len(t)] = t
        return "".join(line).rstrip()

    out = [centred([h[0] for h in heads]), centred([h[1] for h in heads])]
    bars = [" "] * width
    for x in xs:
        bars[x] = "|"
    out.append("".join(bars).rstrip())
    t0 = rows[0][1].timestamp if rows else 0.0
    seen: set[tuple[str, bytes]] = set()
    for (key, e), label in zip(rows, labels, strict=True):
        line = list(bars)
        party = xs[index[key]]
        switch = xs[mid]
        lo, hi = min(party, switch), max(party, switch)
        line[lo + 1:hi] = "-" * (hi - lo - 1)
        towards_party = e.direction == "out"
        if (party > switch) == towards_party:
            line[hi - 1] = ">"
        else:
            line[lo + 1] = "<"
        # at least "--" before the label and "-" plus the head after it
        text = f" {_fit(label, hi - lo - 7)} "
        start = lo + 1 + (hi - lo - 1 - len(text)) // 2
        line[start:start + len(text)] = text
        stamp = f"+{e.timestamp - t0:.3f}s"
        line[0:len(stamp)] = stamp
        notes = []
        if _initial_request(e):
            notes.append(e.first_line.removesuffix(" SIP/2.0"))   # who was asked for what
        col = by_key[key]
        if col.address and not col.address.endswith(e.remote):
            notes.append(f"{'to' if towards_party else 'from'} {e.transport}:{e.remote}")
        sig = (e.direction, e.data)
        if sig in seen:
            notes.append("retransmission")
        seen.add(sig)
        row = "".join(line).rstrip()
        out.append(row + ("   " + "; ".join(notes) if notes else ""))
    return "\n".join(out)


def _side_of(entries: Sequence[TraceEntry], remote: str) -> Literal["left", "right"]:
    """A party that sent us the first request of the exchange called us: it goes left."""
    for e in entries:
        if e.remote == remote:
            is_request = not e.first_line.startswith("SIP/")
            return "left" if e.direction == "in" and is_request else "right"
    return "right"


def dialog_ladder(entries: Sequence[TraceEntry]) -> str:
    """The ladder of one SIP dialog (one Call-ID): one column per remote address."""
    return dialogs_ladder([("", entries)])


def dialogs_ladder(dialogs: Sequence[tuple[str, Sequence[TraceEntry]]]) -> str:
    """Several dialogs (Call-ID, its messages) in one ladder, e.g. the two legs of a B2BUA
    call: one column per far end of each dialog, callers left, callees right."""
    cols: dict[str, Column] = {}
    tagged: list[tuple[str, TraceEntry]] = []
    for call_id, entries in dialogs:
        for e in entries:
            key = f"{call_id} {e.remote}"
            if key not in cols:
                cols[key] = Column(key, e.remote, f"{e.transport}:{e.remote}",
                                   _side_of(entries, e.remote))
            tagged.append((key, e))
    return render_ladder(tagged, list(cols.values()))


# ----------------------------------------------------------------------- JSON documents

@dataclass(frozen=True, slots=True)
class TracedLeg:
    """One leg of an API session: ``leg`` "A"/"B", ``role`` "caller"/"callee"."""

    leg: str
    role: str
    number: str
    call_id: str


def iso_time(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


def message_dict(e: TraceEntry, **extra: str) -> dict[str, Any]:
    return {**extra, "time": iso_time(e.timestamp), "timestamp": e.timestamp,
            "direction": e.direction, "transport": e.transport, "local": e.local,
            "remote": e.remote, "first_line": e.first_line,
            "text": e.data.decode("utf-8", "replace")}


def session_document(traces: CallTraces, session_id: str,
                     legs: Sequence[TracedLeg]) -> dict[str, Any] | None:
    """The trace of an API session: its legs and all their messages merged in time order,
    plus the ladder (callers on the left, callees on the right). ``None`` when no leg has a
    trace (expired, or tracing off)."""
    tagged: list[tuple[str, TraceEntry]] = []
    cols: list[Column] = []
    out_legs: list[dict[str, Any]] = []
    for leg in legs:
        entries = traces.get(leg.call_id) or []
        out_legs.append({"leg": leg.leg, "role": leg.role, "number": leg.number,
                         "call_id": leg.call_id, "messages": len(entries)})
        address = f"{entries[0].transport}:{entries[0].remote}" if entries else ""
        cols.append(Column(leg.leg, f"{leg.leg} {leg.role} {leg.number}".strip(), address,
                           "left" if leg.role == "caller" else "right"))
        tagged += [(leg.leg, e) for e in entries]
    if legs and not tagged:
        return None
    tagged.sort(key=lambda kv: kv[1].timestamp)
    by_leg = {leg.leg: leg.call_id for leg in legs}
    head = [f"SIP trace of session {session_id}"]
    head += [f"  {leg.leg} {leg.role:<6} {leg.number:<16} Call-ID {leg.call_id}" for leg in legs]
    if tagged:
        head.append(f"  t0 = {iso_time(tagged[0][1].timestamp)}")
    ladder = "\n".join(head) + "\n\n" + render_ladder(tagged, cols) if tagged \
        else "\n".join(head) + "\n\n(no SIP messages yet)"
    return {"session_id": session_id, "legs": out_legs,
            "messages": [message_dict(e, leg=k, call_id=by_leg[k]) for k, e in tagged],
            "ladder": ladder + "\n"}


def dialog_document(traces: CallTraces, call_id: str, session_id: str | None = None,
                    also: Sequence[str] = ()) -> dict[str, Any] | None:
    """One dialog, or with ``also`` several merged in time order (the two legs of a B2BUA
    call); ``None`` if any of them is unknown."""
    ids = list(dict.fromkeys([call_id, *also]))
    dialogs = [(cid, traces.get(cid)) for cid in ids]
    found = [(cid, entries) for cid, entries in dialogs if entries is not None]
    if len(found) != len(dialogs):
        return None
    tagged = sorted(((cid, e) for cid, entries in found for e in entries),
                    key=lambda kv: kv[1].timestamp)
    head = f"SIP trace of Call-ID {' + '.join(ids)}"
    if session_id:
        head += f" (session {session_id})"
    if tagged:
        head += f"\n  t0 = {iso_time(tagged[0][1].timestamp)}"
    return {"call_id": call_id, "call_ids": ids, "session_id": session_id,
            "messages": [message_dict(e, call_id=cid) for cid, e in tagged],
            "ladder": head + "\n\n" + dialogs_ladder(found) + "\n"}


def recent_dialogs(traces: CallTraces, sessions: dict[str, str] | None = None,
                   limit: int = 100, *, calls_only: bool = True) -> list[dict[str, Any]]:
    """The newest ``limit`` traced Call-IDs (calls only, or with OPTIONS, REGISTER …), newest
    first, each with what identifies it in a list: when, the first request line, the far
    end, how many messages, its API session."""
    sessions = sessions or {}
    out: list[dict[str, Any]] = []
    for call_id in reversed(traces.call_ids(calls_only=calls_only)):
        if len(out) >= limit:
            break
        entries = traces.get(call_id) or []
        if not entries:
            continue
        first = entries[0]
        out.append({"call_id": call_id, "session_id": sessions.get(call_id),
                    "time": iso_time(first.timestamp), "timestamp": first.timestamp,
                    "last_timestamp": entries[-1].timestamp,
                    "direction": "inbound" if first.direction == "in" else "outbound",
                    "first_line": first.first_line, "remote": f"{first.transport}:{first.remote}",
                    "messages": len(entries)})
    return out
