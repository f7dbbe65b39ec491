"""Bytes → :class:`Request` / :class:`Response` (RFC 3261 §7, §18.3, §25) and stream framing.

Limits (all configurable per call; chosen so a legitimate message is never refused and a
hostile one costs bounded work):

* ``max_size`` — 65535 octets for a whole message (the largest UDP datagram; a TCP/TLS
  message above it closes the connection). Content-Length must be ≤ ``max_size``.
* ``MAX_HEADERS`` — 256 header lines (after unfolding).
* ``MAX_LINE`` — 16384 characters per (unfolded) header line or start line.
* ``MAX_VIAS`` — 70 Via values (one per hop; Max-Forwards defaults to 70).

Datagram rules (RFC 3261 §18.3): Content-Length may be absent (the body is the rest of the
datagram); octets beyond Content-Length are ignored (RFC 4475 §3.1.1.8 "dblreq"); a
Content-Length larger than the data is an error (§3.1.2.2 "clerr"). On streams
(:class:`StreamFramer`) Content-Length is mandatory.

Leniency: CRLFs before the start line are skipped (§7.5); runs of SP/HTAB between the three
start-line elements and after them are tolerated (RFC 4475 §3.1.2.9 "lwsstart", §3.1.2.10
"trws" allow this) — serialisation always writes single SPs; bare LF line ends are
accepted. Header text is decoded as UTF-8, falling back to Latin-1 for legacy equipment.

What ``parse_message`` validates eagerly: start line, every header line's syntax, one
Content-Length, and the syntax of Via (all values), From, To, Call-ID, CSeq and
Max-Forwards when present. Presence / multiplicity of mandatory fields and the rest of
RFC 3261 §8.2 are :func:`switch.sip.validate.check_request`'s job.
"""

from __future__ import annotations

from switch.sip.headers import _CANON_KEYS, Headers
from switch.sip.message import Request, Response
from switch.sip.uri import (
    TOKEN_CHARS,
    SipParseError,
    SipUri,
    is_token,
    parse_uri,
)

__all__ = [
    "MAX_HEADERS",
    "MAX_LINE",
    "MAX_SIZE",
    "MAX_VIAS",
    "PING",
    "PONG",
    "SipFramingError",
    "SipParseError",
    "StreamFramer",
    "error_response",
    "is_keepalive",
    "parse_message",
]

MAX_SIZE = 65535
MAX_HEADERS = 256
MAX_LINE = 16384
MAX_VIAS = 70

_HEADER_END = b"\r\n\r\n"
PING = b""
"""What :meth:`StreamFramer.feed` returns for a CRLFCRLF keep-alive ping."""
PONG = b"\r\n"


class SipFramingError(SipParseError):
    """The byte stream cannot be split into messages any more: close the connection.

    ``framed`` holds the complete messages that preceded the unframeable bytes in the same
    :meth:`StreamFramer.feed`: deliver them, then close (whether they shared a TCP segment
    with the bad bytes must not decide whether they are answered)."""

    framed: tuple[bytes, ...] = ()


def parse_message(data: bytes, *, max_size: int = MAX_SIZE) -> Request | Response:
    """Parse one SIP message from a datagram (or one framed stream message).

    Raises :class:`SipParseError`; for requests whose header section could be read,
    ``exc.partial`` carries the raw fields so a 400 can be sent (see :func:`error_response`).
    """
    if len(data) > max_size:
        raise SipParseError("Message Too Large", status=513)
    if not isinstance(data, bytes):  # bytearray / memoryview from a transport buffer
        data = bytes(data)
    start = 0
    n = len(data)
    while data.startswith(b"\r\n", start):
        start += 2
    while start < n and data[start] == 0x0A:  # bare LF keep-alives
        start += 1
    # The header section ends at the first empty line: CRLF CRLF normally, LF LF from
    # equipment using bare LF (searched only before the first CRLF CRLF, so a blank line
    # inside the body never ends the headers early).
    end = data.find(_HEADER_END, start)
    lf_end = data.find(b"\n\n", start, n if end < 0 else end)
    if lf_end >= 0:
        head = data[start:lf_end]
        if head.endswith(b"\r"):  # CRLF then a bare LF as the empty line
            head = head[:-1]
        body_start = lf_end + 2
    elif end >= 0:
        head = data[start:end]
        body_start = end + 4
    elif data.endswith(b"\r\n") and start < n:
        # headers without the empty line: only a datagram that is all headers
        head = data[start : n - 2]
        body_start = n
    else:
        raise SipParseError("Incomplete message (no end of headers)")
    if not head:
        raise SipParseError("Empty message")
    text = _decode(head)
    ncrlf = text.count("\r\n")
    if ncrlf == text.count("\n") == text.count("\r"):
        lines = text.split("\r\n")
    else:
        # bare LF line ends (tolerated); a CR that does not end a line is never allowed
        lines = text.replace("\r\n", "\n").split("\n")
        if any("\r" in ln for ln in lines):
            raise SipParseError("Bare CR in header section", is_response=text[:4] == "SIP/")
    if len(lines) > 4 * MAX_HEADERS:  # cheap bound before any per-line work
        raise SipParseError("Too many header fields", is_response=text[:4] == "SIP/")
    start_line = lines[0]
    if len(start_line) > MAX_LINE:
        raise SipParseError("Start line too long")
    parts = start_line.split(None, 2)

    is_response = start_line[:4].upper() == "SIP/"
    # -- headers ---------------------------------------------------------------------
    items: list[tuple[str, str]] = []
    keys: list[str] = []
    error: str | None = None
    canon = _CANON_KEYS
    for line in lines[1:]:
        if line[:1] in (" ", "\t"):
            if not items:
                error = error or "Continuation line before first header"
                continue
            name, value = items[-1]
            cont = line.strip(" \t")
            folded = f"{value} {cont}" if value and cont else value or cont
            if len(folded) > MAX_LINE:
                raise SipParseError("Header line too long", is_response=is_response)
            items[-1] = (name, folded)
            continue
        name, colon, value = line.partition(":")
        if not colon:
            error = error or "Malformed header line"
            continue
        if len(line) > MAX_LINE:
            raise SipParseError("Header line too long", is_response=is_response)
        ck = canon.get(name.lower())  # fast path: a well-known name, no LWS before ":"
        if ck is None:
            name = name.rstrip(" \t")
            if not name or not TOKEN_CHARS.issuperset(name):
                error = error or "Malformed header line"
                continue
            low = name.lower()
            ck = canon.get(low) or (name, low)
        items.append((ck[0], value.strip(" \t")))
        keys.append(ck[1])
    if len(items) > MAX_HEADERS:
        raise SipParseError("Too many header fields", is_response=is_response)
    headers = Headers._trusted(tuple(items), tuple(keys))

    # -- body (Content-Length) -------------------------------------------------------
    body_err: str | None = None
    cl_values = [items[i][1] for i in range(len(keys)) if keys[i] == "content-length"]
    available = n - body_start
    body = b""
    if cl_values:
        if len(cl_values) > 1:
            body_err = "Multiple Content-Length values"
        else:
            cl = cl_values[0]
            if not cl.isdigit() or not cl.isascii() or len(cl) > 10:
                body_err = "Bad Content-Length"
            elif int(cl) > max_size:
                body_err = "Content-Length too large"
            elif int(cl) > available:
                body_err = "Content-Length larger than message"
            else:
                body = data[body_start : body_start + int(cl)]
    else:
        body = data[body_start:]

    # -- start line ------------------------------------------------------------------
    if is_response:
        return _build_response(parts, start_line, headers, body, error or body_err)
    return _build_request(parts, headers, body, error or body_err, keys)


def _decode(head: bytes) -> str:
    if head.isascii():
        return head.decode("ascii")
    try:
        return head.decode("utf-8")
    except UnicodeDecodeError:
        return head.decode("latin-1")


def _build_response(
    parts: list[str], start_line: str, headers: Headers, body: bytes, error: str | None
) -> Response:
    if len(parts) < 2:
        raise SipParseError("Bad status line", is_response=True)
    version = parts[0].upper()
    code = parts[1]
    if not _is_version(version):
        raise SipParseError("Bad SIP version", is_response=True)
    if len(code) != 3 or not code.isdigit() or not code.isascii() or not "100" <= code <= "699":
        raise SipParseError("Bad status code", is_response=True)
    # Reason-Phrase may be empty (RFC 4475 §3.1.1.13) and may contain any UTF-8.
    reason = parts[2].strip(" \t") if len(parts) > 2 else ""
    if error:
        raise SipParseError(error, is_response=True)
    resp = Response(int(code), reason, headers, body, version)
    try:
        _validate_common(resp)
    except SipParseError as exc:
        raise SipParseError(exc.reason, is_response=True) from None
    return resp


def _build_request(
    parts: list[str], headers: Headers, body: bytes, error: str | None, keys: list[str]
) -> Request:
    if len(parts) != 3 or len(parts[2].split()) != 1:
        # lwsruri: "sip:user@example.com; lr" splits into too many elements
        raise SipParseError("Bad request line", partial=_partial_request(parts, headers, body))
    method, uri_text, version = parts[0], parts[1], parts[2].strip(" \t").upper()
    if not is_token(method):
        raise SipParseError("Bad request method")
    partial_uri: SipUri
    uri_error: str | None = None
    try:
        partial_uri = parse_uri(uri_text)
        if partial_uri.headers and partial_uri.is_sip:
            # RFC 4475 §3.1.2.11 "escruri": headers are not allowed in a Request-URI.
            uri_error = "Request-URI must not contain headers"
    except SipParseError as exc:
        uri_error = f"Bad Request-URI ({exc.reason})"
        partial_uri = SipUri(scheme="", opaque=uri_text)
    req = Request(method, partial_uri, headers, body, version)
    if not _is_version(version):
        raise SipParseError("Bad SIP version", partial=_partial_or_none(req, keys))
    if error or uri_error:
        raise SipParseError(error or uri_error or "", partial=_partial_or_none(req, keys))
    if version != "SIP/2.0":
        return req  # 505 from check_request; nothing else can be interpreted
    try:
        _validate_common(req)
    except SipParseError as exc:
        raise SipParseError(exc.reason, partial=_partial_or_none(req, keys)) from None
    return req


def _validate_common(msg: Request | Response) -> None:
    """Syntax of the fields every element needs; the error reason names the field. The
    parsed values stay in the message's cache, so the accessors cost nothing later."""
    keys = msg.headers._keys
    field = "Via"
    try:
        if "via" in keys and len(msg.vias) > MAX_VIAS:
            raise SipParseError("Too many Via header fields")
        field = "From"
        if "from" in keys:
            msg.from_  # noqa: B018 - parse now
        field = "To"
        if "to" in keys:
            msg.to  # noqa: B018
        field = "Call-ID"
        if "call-id" in keys:
            msg.call_id  # noqa: B018
        field = "CSeq"
        if "cseq" in keys:
            msg.cseq  # noqa: B018
        field = "Max-Forwards"
        if "max-forwards" in keys:
            msg.max_forwards  # noqa: B018
    except SipParseError as exc:
        reason = exc.reason
        if field not in reason:
            reason = f"{reason} in {field}"
        raise SipParseError(reason) from None


def _is_version(v: str) -> bool:
    if not v.startswith("SIP/"):
        return False
    major, dot, minor = v[4:].partition(".")
    return bool(dot) and major.isdigit() and minor.isdigit() and major.isascii() and minor.isascii()


def _partial_or_none(req: Request, keys: list[str]) -> Request | None:
    # Enough to answer: the response is routed by Via and identified by the other four.
    if all(k in keys for k in ("via", "from", "to", "call-id", "cseq")):
        return req
    return None


def _partial_request(parts: list[str], headers: Headers, body: bytes) -> Request | None:
    if not parts or not is_token(parts[0]):
        return None
    req = Request(parts[0], SipUri(scheme="", opaque=" ".join(parts[1:])), headers, body)
    return _partial_or_none(req, list(headers._keys))


def is_keepalive(data: bytes) -> bool:
    """A datagram that only keeps a NAT binding open: CRLF / CRLFCRLF (RFC 5626 §4.4.1),
    or blanks and NULs some phones send. Drop it without counting a parse error; a
    CRLFCRLF ping on a flow expecting STUN/CRLF keep-alives may be answered with CRLF."""
    return len(data) <= 16 and not data.strip(b"\r\n\t \x00")


def error_response(exc: SipParseError) -> Response | None:
    """The response to send for a parse error, or ``None`` when the message must be
    dropped silently (responses, ACK, or not enough of a request to answer)."""
    from switch.sip.message import make_response

    p = exc.partial
    if p is None or exc.is_response or p.method == "ACK":
        return None
    return make_response(p, exc.status, exc.reason if exc.status == 400 else None)


class StreamFramer:
    """Splits a TCP/TLS byte stream into SIP messages (RFC 3261 §18.3).

    ``feed(data)`` returns the complete messages (bytes, each ready for
    :func:`parse_message`) in arrival order and keeps any tail. CRLF keep-alives between
    messages (RFC 5626 §3.5.1): each ``CRLFCRLF`` ping appears in the returned list, in
    order, as an empty ``b""`` item — answer it with a single ``CRLF`` pong; a lone ``CRLF``
    (a pong to our own ping) is consumed and sets :attr:`pong_received`. Raises
    :class:`SipFramingError` (close the connection) on a missing/invalid Content-Length or a
    message larger than ``max_size``; the framer is unusable afterwards.
    """

    __slots__ = ("_buf", "_crlf_run", "_failed", "_scan", "max_size", "pong_received")

    def __init__(self, max_size: int = MAX_SIZE) -> None:
        self.max_size = max_size
        self._buf = bytearray()
        self._scan = 0  # where to resume searching for the end of headers
        self._crlf_run = 0  # CRLFs seen between messages
        self._failed = False
        self.pong_received = False

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[bytes]:
        out: list[bytes] = []
        try:
            self._feed(data, out)
        except SipFramingError as e:
            e.framed = tuple(out)
            raise
        return out

    def _feed(self, data: bytes, out: list[bytes]) -> None:
        if self._failed:
            raise SipFramingError("Stream already failed")
        buf = self._buf
        buf += data
        while buf:
            if not self._scan:
                # between messages: consume keep-alive CRLFs
                i = 0
                while buf.startswith(b"\r\n", i):
                    i += 2
                    self._crlf_run += 1
                    if self._crlf_run == 2:
                        out.append(PING)
                        self._crlf_run = 0
                if i:
                    del buf[:i]
                    if not buf or buf == b"\r":
                        if self._crlf_run == 1:
                            self.pong_received = True
                        break
                if buf == b"\r":
                    break
                if self._crlf_run == 1:
                    self.pong_received = True
                self._crlf_run = 0
            end = buf.find(_HEADER_END, max(0, self._scan - 3))
            if end < 0:
                if len(buf) > self.max_size:
                    self._failed = True
                    raise SipFramingError("Message Too Large", status=513)
                self._scan = max(len(buf), 1)
                break
            clen = self._content_length(bytes(buf[:end]))
            total = end + 4 + clen
            if total > self.max_size:
                self._failed = True
                raise SipFramingError("Message Too Large", status=513)
            if len(buf) < total:
                self._scan = end + 1  # header end known; wait for the body
                break
            out.append(bytes(buf[:total]))
            del buf[:total]
            self._scan = 0

    def _content_length(self, head: bytes) -> int:
        value: int | None = None
        for line in head.split(b"\r\n")[1:]:
            if line[:1] in (b" ", b"\t"):
                continue
            name, colon, v = line.partition(b":")
            if not colon:
                continue
            name = name.strip().lower()
            if name in (b"content-length", b"l"):
                v = v.strip()
                if not v.isdigit() or len(v) > 10:
                    self._failed = True
                    raise SipFramingError("Bad Content-Length")
                if value is not None and value != int(v):
                    self._failed = True
                    raise SipFramingError("Multiple Content-Length values")
                value = int(v)
        if value is None:
            self._failed = True
            raise SipFramingError("Missing Content-Length on a stream transport")
        return value
