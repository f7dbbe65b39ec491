"""SIP requests and responses (RFC 3261 §7) as frozen values, their typed header views,
serialisation and the UAS response builder of RFC 3261 §8.2.6.

Typed accessors (``call_id``, ``cseq``, ``vias``, ``from_``, ``to``, ``contacts``, …) parse
lazily and memoise into a per-instance cache that is excluded from equality, hashing and
``dataclasses.replace`` (a replaced message starts with an empty cache, so it never sees
stale values). ``to_bytes()`` is memoised the same way (retransmissions are free).

``to_bytes()`` always writes exactly one ``Content-Length`` equal to ``len(body)``, placed
after the other header fields; header names come out in their canonical long form.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Self, TypeVar

from switch.sip.headers import Headers
from switch.sip.uri import (
    CSeq,
    NameAddr,
    SipParseError,
    SipUri,
    Via,
    parse_cseq,
    parse_name_addr,
    parse_name_addrs,
    parse_vias,
    split_list,
)

__all__ = [
    "REASONS",
    "Request",
    "Response",
    "SipMessage",
    "make_response",
]

_T = TypeVar("_T")
_MISSING: Any = object()  # "not cached yet" (None is a valid cached value)

REASONS: Mapping[int, str] = {
    100: "Trying",
    180: "Ringing",
    181: "Call Is Being Forwarded",
    182: "Queued",
    183: "Session Progress",
    199: "Early Dialog Terminated",
    200: "OK",
    202: "Accepted",
    204: "No Notification",
    300: "Multiple Choices",
    301: "Moved Permanently",
    302: "Moved Temporarily",
    305: "Use Proxy",
    380: "Alternative Service",
    400: "Bad Request",
    401: "Unauthorized",
    402: "Payment Required",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    407: "Proxy Authentication Required",
    408: "Request Timeout",
    410: "Gone",
    412: "Conditional Request Failed",
    413: "Request Entity Too Large",
    414: "Request-URI Too Long",
    415: "Unsupported Media Type",
    416: "Unsupported URI Scheme",
    417: "Unknown Resource-Priority",
    420: "Bad Extension",
    421: "Extension Required",
    422: "Session Interval Too Small",
    423: "Interval Too Brief",
    428: "Use Identity Header",
    429: "Provide Referrer Identity",
    433: "Anonymity Disallowed",
    436: "Bad Identity-Info",
    437: "Unsupported Certificate",
    438: "Invalid Identity Header",
    439: "First Hop Lacks Outbound Support",
    440: "Max-Breadth Exceeded",
    469: "Bad Info Package",
    470: "Consent Needed",
    480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist",
    482: "Loop Detected",
    483: "Too Many Hops",
    484: "Address Incomplete",
    485: "Ambiguous",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    489: "Bad Event",
    491: "Request Pending",
    493: "Undecipherable",
    494: "Security Agreement Required",
    500: "Server Internal Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Server Time-out",
    505: "Version Not Supported",
    513: "Message Too Large",
    555: "Push Notification Service Not Supported",
    580: "Precondition Failure",
    600: "Busy Everywhere",
    603: "Decline",
    604: "Does Not Exist Anywhere",
    606: "Not Acceptable",
    607: "Unwanted",
    608: "Rejected",
}


def _reason_for(status: int) -> str:
    r = REASONS.get(status)
    if r is not None:
        return r
    # RFC 3261 §21: an unknown code is treated as x00 of its class.
    return REASONS.get(status // 100 * 100, "Unknown")


def _token_set(values: list[str]) -> frozenset[str]:
    out = set()
    for v in values:
        if not v:
            raise SipParseError("Empty option tag")
        out.add(v.lower())
    return frozenset(out)


class _MessageBase:
    """Typed views shared by :class:`Request` and :class:`Response` (slots-only mixin)."""

    __slots__ = ()

    headers: Headers
    body: bytes
    _cache: dict[str, Any]

    def _cached(self, key: str, fn: Callable[[], _T]) -> _T:
        # dict.get, not try/except KeyError: every field's first access is a miss, and
        # raising the KeyError cost more than the lookup (about 1 µs per field per message).
        cache = self._cache
        value = cache.get(key, _MISSING)
        if value is _MISSING:
            value = cache[key] = fn()
        return value

    def _required(self, name: str) -> str:
        v = self.headers.get(name)
        if v is None:
            raise SipParseError(f"Missing {name}")
        return v

    # -- mandatory fields ------------------------------------------------------------
    @property
    def call_id(self) -> str:
        return self._cached("call_id", lambda: _parse_call_id(self._required("Call-ID")))

    @property
    def cseq(self) -> CSeq:
        return self._cached("cseq", lambda: parse_cseq(self._required("CSeq")))

    @property
    def vias(self) -> tuple[Via, ...]:
        def parse() -> tuple[Via, ...]:
            raw = self.headers.get_raw("Via")
            if not raw:
                raise SipParseError("Missing Via")
            out: list[Via] = []
            for v in raw:
                out.extend(parse_vias(v))
            return tuple(out)

        return self._cached("vias", parse)

    @property
    def top_via(self) -> Via:
        return self.vias[0]

    @property
    def from_(self) -> NameAddr:
        return self._cached("from", lambda: parse_name_addr(self._required("From")))

    @property
    def to(self) -> NameAddr:
        return self._cached("to", lambda: parse_name_addr(self._required("To")))

    @property
    def from_tag(self) -> str | None:
        return self.from_.tag

    @property
    def to_tag(self) -> str | None:
        return self.to.tag

    # -- optional fields ---------------------------------------------------------------
    @property
    def contacts(self) -> tuple[NameAddr, ...]:
        """Contact addresses; empty when absent. ``Contact: *`` (REGISTER removal,
        RFC 3261 §10.2.2) gives an empty tuple with :attr:`contact_star` true."""

        def parse() -> tuple[NameAddr, ...]:
            out: list[NameAddr] = []
            for v in self.headers.get_raw("Contact"):
                if v.strip() == "*":
                    continue
                out.extend(parse_name_addrs(v))
            return tuple(out)

        return self._cached("contacts", parse)

    @property
    def contact_star(self) -> bool:
        return any(v.strip() == "*" for v in self.headers.get_raw("Contact"))

    @property
    def route(self) -> tuple[NameAddr, ...]:
        return self._cached("route", lambda: self._addr_list("Route"))

    @property
    def record_route(self) -> tuple[NameAddr, ...]:
        return self._cached("record_route", lambda: self._addr_list("Record-Route"))

    def _addr_list(self, name: str) -> tuple[NameAddr, ...]:
        out: list[NameAddr] = []
        for v in self.headers.get_raw(name):
            out.extend(parse_name_addrs(v))
        return tuple(out)

    @property
    def max_forwards(self) -> int | None:
        return self._cached("max_forwards", lambda: _parse_max_forwards(self.headers))

    @property
    def content_type(self) -> str | None:
        """Lower-case ``type/subtype`` without parameters, or ``None``."""

        def parse() -> str | None:
            v = self.headers.get("Content-Type")
            if v is None:
                return None
            mt = v.partition(";")[0].strip().lower().replace(" ", "")
            return mt or None

        return self._cached("content_type", parse)

    @property
    def content_type_params(self) -> dict[str, str]:
        v = self.headers.get("Content-Type") or ""
        out: dict[str, str] = {}
        for p in v.split(";")[1:]:
            k, _, val = p.partition("=")
            out[k.strip().lower()] = val.strip().strip('"')
        return out

    @property
    def require(self) -> frozenset[str]:
        """Option tags of Require (lower-case)."""
        return self._cached("require", lambda: _token_set(self.headers.get_all("Require")))

    @property
    def proxy_require(self) -> frozenset[str]:
        return self._cached("proxy_require", lambda: _token_set(self.headers.get_all("Proxy-Require")))

    @property
    def supported(self) -> frozenset[str]:
        return self._cached("supported", lambda: _token_set(self.headers.get_all("Supported")))

    @property
    def allow(self) -> frozenset[str]:
        """Methods of Allow (upper-case)."""
        return frozenset(m.upper() for m in self.headers.get_all("Allow") if m)

    @property
    def expires(self) -> int | None:
        """Expires header as an int (``None`` when absent or not a number)."""
        v = self.headers.get("Expires")
        if v is None:
            return None
        v = v.strip()
        return int(v) if v.isdigit() and v.isascii() and len(v) <= 10 else None

    # -- changes -----------------------------------------------------------------------
    def _replace(self, **changes: Any) -> Self:
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]

    def with_header(self, name: str, value: str) -> Self:
        """Copy with every ``name`` field replaced by one field ``value`` (at the first
        one's position; appended when absent)."""
        return self._replace(headers=self.headers.set(name, value))

    def with_headers(self, items: Iterable[tuple[str, str]] = (), /, **fields: str) -> Self:
        """Copy with each field set (replacing existing fields of that name). Keyword
        names use ``_`` for ``-``: ``msg.with_headers(Max_Forwards="69", Subject="x")``."""
        h = self.headers
        for n, v in items:
            h = h.set(n, v)
        for n, v in fields.items():
            h = h.set(n.replace("_", "-"), v)
        return self._replace(headers=h)

    def adding_header(self, name: str, value: str) -> Self:
        """Copy with one more ``name`` field after all others."""
        return self._replace(headers=self.headers.add(name, value))

    def without_header(self, name: str) -> Self:
        return self._replace(headers=self.headers.remove(name))

    def with_body(self, body: bytes, content_type: str | None = None) -> Self:
        """Copy with ``body``; sets Content-Type when given, drops it for an empty body.
        Content-Length is always computed by :meth:`to_bytes`."""
        h = self.headers
        if content_type is not None:
            h = h.set("Content-Type", content_type)
        elif not body:
            h = h.remove("Content-Type")
        return self._replace(headers=h, body=body)

    # -- serialisation -----------------------------------------------------------------
    def _start_line(self) -> str:
        raise NotImplementedError

    def to_bytes(self) -> bytes:
        cache = self._cache
        out = cache.get("bytes")
        if out is None:
            lines = [self._start_line()]
            lines.extend(f"{n}: {v}" for n, v in self.headers.items() if n != "Content-Length")
            lines.append(f"Content-Length: {len(self.body)}\r\n\r\n")
            text = "\r\n".join(lines)
            if text.count("\n") != len(lines) + 1 or text.count("\r") != len(lines) + 1:
                # A CR or LF inside a start line or header value would inject lines.
                raise ValueError("CR/LF inside a SIP start line or header field value")
            out = text.encode("utf-8", "surrogateescape") + self.body
            cache["bytes"] = out
        return out

    def __bytes__(self) -> bytes:
        return self.to_bytes()


def _parse_call_id(value: str) -> str:
    v = value.strip()
    if not v or " " in v or "\t" in v or "," in v:
        raise SipParseError("Bad Call-ID")
    return v


def _parse_max_forwards(headers: Headers) -> int | None:
    v = headers.get("Max-Forwards")
    if v is None:
        return None
    v = v.strip()
    # RFC 3261 §20.22 / RFC 4475 §3.1.2.4: 0-255, leading zeros allowed ("0068").
    if not v.isdigit() or not v.isascii() or len(v) > 10 or int(v) > 255:
        raise SipParseError("Bad Max-Forwards")
    return int(v)


@dataclass(frozen=True, slots=True)
class Request(_MessageBase):
    method: str
    uri: SipUri
    headers: Headers
    body: bytes = b""
    version: str = "SIP/2.0"
    _cache: dict[str, Any] = field(default_factory=dict, init=False, repr=False, compare=False, hash=False)

    is_request = True

    def _start_line(self) -> str:
        return f"{self.method} {self.uri} {self.version}"

    def __str__(self) -> str:
        return self.to_bytes().decode("utf-8", "replace")


@dataclass(frozen=True, slots=True)
class Response(_MessageBase):
    status: int
    reason: str
    headers: Headers
    body: bytes = b""
    version: str = "SIP/2.0"
    _cache: dict[str, Any] = field(default_factory=dict, init=False, repr=False, compare=False, hash=False)

    is_request = False

    @property
    def method(self) -> str:
        """Method of the request this answers (from CSeq, RFC 3261 §17.1.3)."""
        return self.cseq.method

    @property
    def is_provisional(self) -> bool:
        return self.status < 200

    @property
    def is_final(self) -> bool:
        return self.status >= 200

    def _start_line(self) -> str:
        return f"{self.version} {self.status} {self.reason}"

    def __str__(self) -> str:
        return self.to_bytes().decode("utf-8", "replace")


SipMessage = Request | Response


def make_response(
    req: Request,
    status: int,
    reason: str | None = None,
    *,
    to_tag: str | None = None,
    headers: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
) -> Response:
    """Build a response to ``req`` as a UAS does (RFC 3261 §8.2.6.2).

    Copies every Via value in order, From, To, Call-ID and CSeq verbatim (raw values, so
    this also works on the ``partial`` request of a :class:`SipParseError`), adds
    ``to_tag`` to To when To has no tag yet, copies Timestamp into a 100 (§8.2.6.1),
    then appends ``headers``. Record-Route copying for dialog-creating responses (§12.1.1)
    belongs to the dialog layer. ``reason`` defaults to :data:`REASONS`.
    """
    if not 100 <= status <= 699:
        raise ValueError(f"status {status} out of range")
    src = req.headers
    items: list[tuple[str, str]] = [("Via", v) for v in src.get_raw("Via")]
    for name in ("From", "To", "Call-ID", "CSeq"):
        value = src.get(name)
        if value is None:
            continue
        if name == "To" and to_tag is not None:
            value = _add_to_tag(value, to_tag)
        items.append((name, value))
    if status == 100:
        ts = src.get("Timestamp")
        if ts is not None:
            items.append(("Timestamp", ts))
    extra = Headers(headers)
    items.extend(extra.items())
    return Response(status, reason or _reason_for(status), Headers(items), body)


def _add_to_tag(value: str, tag: str) -> str:
    try:
        to = parse_name_addr(value)
    except SipParseError:
        return value  # a malformed To is echoed untouched (answering a 400)
    if to.tag is not None:
        return value
    return str(to.with_tag(tag))


def reason_phrase(status: int) -> str:
    """Default reason phrase for ``status``."""
    return _reason_for(status)


def option_tags(value: str) -> list[str]:
    """Comma-separated option tags / methods of one header field value."""
    return [t for t in split_list(value) if t]
