"""SIP addressing values (RFC 3261 §19, §20.10, §20.42, §25.1): URIs, name-addr, Via, CSeq.

Everything here is a frozen, hashable value parsed from text and serialised back with
``str()``. Parsers are hand written (``str.find`` / ``partition`` and character-set checks):
no regular expression with nested quantifiers ever sees peer input, so hostile input costs
linear time. ``parse_uri``, ``parse_name_addr`` and ``parse_via`` memoise results in
bounded LRU caches (4096 entries each): values are immutable, so sharing is safe.

Leniency (documented choices, "liberal in what you accept" where it is unambiguous):

* user parts may carry visible ASCII that RFC 3261 wants escaped (``#`` from carriers, …);
  ``<``, ``>``, ``"``, whitespace and control characters are always refused;
* host names may contain ``_`` (seen in SRV-style names);
* LWS just inside ``< >`` of a name-addr is ignored (RFC 4475 §3.1.2.14 "badaspec");
* an unquoted display name may contain any printable character except ``<`` and ``"``
  (RFC 4475 §3.1.2.15 "baddn": ``Bell, Alexander <sip:…>`` is accepted for From/To).

Refused (RFC 3261 grammar): ``?`` / ``,`` inside an addr-spec that is not in ``< >``
(§20: such a URI MUST be in name-addr form; RFC 4475 §3.1.2.13 "regbadct"), empty
parameters (``;;``), unterminated quoted strings, ports above 65535, bad ``%`` escapes in
SIP URIs.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from switch.sip.message import Request

__all__ = [
    "CSeq",
    "NameAddr",
    "Params",
    "SipParseError",
    "SipUri",
    "Via",
    "is_token",
    "parse_cseq",
    "parse_name_addr",
    "parse_name_addrs",
    "parse_params",
    "parse_uri",
    "parse_via",
    "split_list",
    "uri_equal",
]

Params = tuple[tuple[str, str | None], ...]


class SipParseError(ValueError):
    """A SIP message or one of its parts does not follow the RFC 3261 grammar.

    ``reason`` is short text fit for a 400 reason phrase. ``partial`` (requests only) is a
    :class:`~switch.sip.message.Request` holding the raw header fields that were read, so a
    UAS can answer ``make_response(exc.partial, exc.status, exc.reason)`` — its typed
    accessors may themselves raise, but ``make_response`` copies raw values. ``status`` is
    the response code that fits (400, or 505 / 513). ``is_response`` tells the transport to
    drop the message silently (a bad response is never answered, RFC 4475 §3.1.2.5).
    """

    def __init__(
        self,
        reason: str,
        *,
        partial: Request | None = None,
        is_response: bool = False,
        status: int = 400,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.partial = partial
        self.is_response = is_response
        self.status = status


# ---------------------------------------------------------------------------------------
# character classes (RFC 3261 §25.1)

_ALNUM = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
_HEX = frozenset("0123456789abcdefABCDEF")
TOKEN_CHARS = _ALNUM | frozenset("-.!%*_+`'~")
_UNRESERVED = _ALNUM | frozenset("-_.!~*'()")
# Visible ASCII minus the characters that delimit a URI inside a header field.
_LENIENT_USER = frozenset(chr(c) for c in range(0x21, 0x7F)) - frozenset('<>"@:')
_PASSWORD_CHARS = _UNRESERVED | frozenset("%&=+$,")
_PARAM_CHARS = _UNRESERVED | frozenset("%[]/:&+$")
_HEADER_CHARS = _UNRESERVED | frozenset("%[]/?:+$")
_HOST_CHARS = _ALNUM | frozenset("-._")
_IPV6_CHARS = _HEX | frozenset(":.")
_SCHEME_CHARS = _ALNUM | frozenset("+-.")
_WS = " \t"
# RFC 3261 §19.1.2: ``reserved`` characters stay escaped when URIs are compared.
_RESERVED = frozenset(";/?:@&=+$,")
_TEL_VISUAL = str.maketrans("", "", "-.()")
# Parsed values are immutable, so identical text (the same From/To/Contact for a whole
# dialog, the same Via in every response of a transaction, the same gateway URIs) is
# parsed once. The caches are bounded and hold only successful results; hostile floods
# of unique text merely cost the normal parse.
_PARSE_CACHE = 4096
_ADDR_SPEC_END = re.compile(r"[; \t]")
_NOT_DISPLAY = re.compile(r'[\x00-\x08\x0a-\x1f"<>\x7f]')  # HTAB is LWS, allowed
_HOSTPORT_RE = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)(?::([0-9]+))?")
_TOKEN = r"[A-Za-z0-9.!%*_+`'~-]+"
# sent-protocol and sent-by of a Via (LWS allowed around "/" and ":", RFC 3261 §20.42)
_VIA_RE = re.compile(
    rf"[ \t]*({_TOKEN})[ \t]*/[ \t]*({_TOKEN})[ \t]*/[ \t]*({_TOKEN})[ \t]+"
    r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)(?:[ \t]*:[ \t]*([0-9]+))?[ \t]*"
)


def is_token(text: str) -> bool:
    """``token`` of RFC 3261 §25.1 (method names, header names, parameter names)."""
    return bool(text) and TOKEN_CHARS.issuperset(text)


def _check_escapes(text: str, what: str) -> None:
    i = text.find("%")
    while i >= 0:
        if text[i + 1 : i + 2] not in _HEX or text[i + 2 : i + 3] not in _HEX:
            raise SipParseError(f"Bad escape in {what}")
        i = text.find("%", i + 3)


def unescape(text: str) -> str:
    """Decode ``%HH`` escapes (as UTF-8); invalid escapes are kept verbatim."""
    if "%" not in text:
        return text
    out = bytearray()
    i = 0
    n = len(text)
    while i < n:
        c = text[i]
        if c == "%" and text[i + 1 : i + 2] in _HEX and text[i + 2 : i + 3] in _HEX:
            out.append(int(text[i + 1 : i + 3], 16))
            i += 3
        else:
            out += c.encode()
            i += 1
    return out.decode("utf-8", "replace")


def _normalise_escapes(text: str) -> str:
    """RFC 3261 §19.1.4: ``%HH`` of an unreserved character equals the character; escaped
    reserved characters stay escaped (with upper-case hex) so ``%3A`` never equals ``:``."""
    if "%" not in text:
        return text
    out: list[str] = []
    i = 0
    n = len(text)
    while i < n:
        c = text[i]
        if c == "%" and text[i + 1 : i + 2] in _HEX and text[i + 2 : i + 3] in _HEX:
            ch = chr(int(text[i + 1 : i + 3], 16))
            out.append(f"%{ord(ch):02X}" if ch in _RESERVED or ord(ch) < 0x21 else ch)
            i += 3
        else:
            out.append(c)
            i += 1
    return "".join(out)


# ---------------------------------------------------------------------------------------
# parameters


def parse_params(text: str, what: str = "parameter") -> Params:
    """``*( SEMI generic-param )`` where ``text`` starts just after the first ``;``.

    LWS around ``;`` and ``=`` is allowed (RFC 3261 §7.3.1); quoted-string values keep
    their quotes. Empty parameters (``;;``) are an error (RFC 4475 §3.1.2.1).
    """
    out: list[tuple[str, str | None]] = []
    for raw in _split_quoted(text, ";"):
        name, eq, value = raw.partition("=")
        name = name.strip(_WS)
        if not is_token(name):
            raise SipParseError(f"Bad {what} {name!r}" if name else f"Empty {what}")
        if eq:
            value = value.strip(_WS)
            if not value:
                raise SipParseError(f"Empty value for {what} {name}")
            if value[0] == '"':
                _check_quoted(value, what)
            elif any(c in value for c in ' \t"<>,'):
                raise SipParseError(f"Bad value for {what} {name}")
            out.append((name, value))
        else:
            out.append((name, None))
    return tuple(out)


def _check_quoted(value: str, what: str) -> None:
    end = _quoted_end(value, 0)
    if end != len(value):
        raise SipParseError(f"Bad quoted string in {what}")


def _quoted_end(text: str, start: int) -> int:
    """Index just past the quoted-string opening at ``text[start]`` (a ``"``)."""
    i = start + 1
    n = len(text)
    while i < n:
        c = text[i]
        if c == "\\":
            i += 2
            continue
        if c == '"':
            return i + 1
        i += 1
    raise SipParseError("Unterminated quoted string")


def _split_quoted(text: str, sep: str) -> list[str]:
    """Split on ``sep`` outside quoted strings (and, for commas, outside ``< >``)."""
    if '"' not in text and (sep != "," or "<" not in text):
        return text.split(sep)
    parts: list[str] = []
    start = 0
    i = 0
    n = len(text)
    angle = False
    while i < n:
        c = text[i]
        if c == '"' and not angle:
            # an unterminated quote swallows the rest; the element parser reports it
            try:
                i = _quoted_end(text, i)
            except SipParseError:
                break
            continue
        if c == "<" and sep == ",":
            angle = True
        elif c == ">":
            angle = False
        elif c == sep and not angle:
            parts.append(text[start:i])
            start = i + 1
        i += 1
    parts.append(text[start:])
    return parts


def split_list(value: str) -> list[str]:
    """Split a comma-separated header field value (RFC 3261 §7.3.1), respecting quoted
    strings and ``< >``; elements are stripped of LWS. Empty elements are kept (as ``""``)
    so callers can tell ``a,,b`` is malformed."""
    if "," not in value:
        return [value.strip(_WS)]
    return [p.strip(_WS) for p in _split_quoted(value, ",")]


def _param_lookup(params: Params, name: str) -> tuple[bool, str | None]:
    for k, v in params:
        if k == name or k.lower() == name:
            return True, v
    return False, None


def _with_param(params: Params, name: str, value: str | bool | None) -> Params:
    """Replace/insert/remove ``name``: a ``str`` sets a value, ``True`` sets a flag
    parameter (no value), ``None``/``False`` removes it."""
    low = name.lower()
    kept = [(k, v) for k, v in params if k.lower() != low]
    if value is None or value is False:
        return tuple(kept)
    new = (name, None if value is True else str(value))
    # keep the original position when replacing
    for idx, (k, _) in enumerate(params):
        if k.lower() == low:
            kept.insert(min(idx, len(kept)), new)
            return tuple(kept)
    kept.append(new)
    return tuple(kept)


def _params_str(params: Params) -> str:
    return "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params)


def _unquote_param(value: str | None) -> str | None:
    if value is not None and len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        return _unquote(value)
    return value


def _unquote(quoted: str) -> str:
    """Contents of a quoted-string with quoted-pairs decoded."""
    body = quoted[1:-1]
    if "\\" not in body:
        return body
    out: list[str] = []
    i = 0
    while i < len(body):
        c = body[i]
        if c == "\\" and i + 1 < len(body):
            out.append(body[i + 1])
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def _quote(text: str) -> str:
    """quoted-string for ``text``: ``\\`` and ``"`` and control characters become
    quoted-pairs; CR and LF cannot be quoted (RFC 3261 §25.1) and are dropped, so a display
    name can never inject a header line."""
    out = ['"']
    for c in text:
        if c in "\r\n":
            continue
        if c in '"\\' or c < " " or c == "\x7f":
            out.append("\\")
        out.append(c)
    out.append('"')
    return "".join(out)


# ---------------------------------------------------------------------------------------
# URIs


@dataclass(frozen=True, slots=True)
class SipUri:
    """A ``sip:`` / ``sips:`` URI, a ``tel:`` URI (number in ``user``) or any other absolute
    URI (``opaque`` holds everything after ``scheme:``; RFC 4475 §3.3.2 "unkscm").

    ``user`` keeps escapes as written; ``user_unescaped`` decodes them. ``host`` is stored
    as written, IPv6 without brackets; comparisons (``uri_equal``) lower-case it.
    """

    scheme: str
    user: str | None = None
    password: str | None = None
    host: str = ""
    port: int | None = None
    params: Params = ()
    headers: tuple[tuple[str, str], ...] = ()
    opaque: str | None = None

    # -- parameters -----------------------------------------------------------------
    def param(self, name: str) -> str | None:
        """Value of URI parameter ``name`` (case-insensitive name); ``None`` when absent
        or when present without a value (use :meth:`has_param`)."""
        return _param_lookup(self.params, name.lower())[1]

    def has_param(self, name: str) -> bool:
        return _param_lookup(self.params, name.lower())[0]

    def with_param(self, name: str, value: str | bool | None = True) -> SipUri:
        return dataclasses.replace(self, params=_with_param(self.params, name, value))

    def with_params(self, **params: str | bool | None) -> SipUri:
        """``uri.with_params(transport="tcp", lr=True, maddr=None)``: str sets, True sets a
        flag, None removes."""
        p = self.params
        for k, v in params.items():
            p = _with_param(p, k, v)
        return dataclasses.replace(self, params=p)

    def without_headers(self) -> SipUri:
        return dataclasses.replace(self, headers=())

    # -- derived values ---------------------------------------------------------------
    @property
    def is_sip(self) -> bool:
        return self.scheme in ("sip", "sips")

    @property
    def user_unescaped(self) -> str | None:
        return None if self.user is None else unescape(self.user)

    @property
    def transport(self) -> str:
        """Lower-case ``transport`` parameter; default ``udp`` for sip, ``tls`` for sips."""
        t = self.param("transport")
        if t:
            return t.lower()
        return "tls" if self.scheme == "sips" else "udp"

    @property
    def host_port(self) -> str:
        h = f"[{self.host}]" if ":" in self.host else self.host
        return h if self.port is None else f"{h}:{self.port}"

    @property
    def aor(self) -> str:
        """``scheme:user@host`` (no port/params): the address-of-record key used by the
        registrar (RFC 3261 §10.3 step 5, canonical form)."""
        if self.opaque is not None:
            return f"{self.scheme}:{self.opaque}"
        if self.scheme == "tel":
            return f"tel:{self.user}"
        u = f"{unescape(self.user)}@" if self.user else ""
        return f"{self.scheme}:{u}{self.host.lower()}"

    def __str__(self) -> str:
        if self.opaque is not None:
            return f"{self.scheme}:{self.opaque}"
        if self.scheme == "tel":
            return f"tel:{self.user or ''}{_params_str(self.params)}"
        parts = [self.scheme, ":"]
        if self.user is not None:
            parts.append(self.user)
            if self.password is not None:
                parts.append(":")
                parts.append(self.password)
            parts.append("@")
        parts.append(self.host_port)
        if self.params:
            parts.append(_params_str(self.params))
        if self.headers:
            parts.append("?")
            parts.append("&".join(f"{k}={v}" for k, v in self.headers))
        return "".join(parts)


@functools.lru_cache(maxsize=_PARSE_CACHE)
def parse_uri(text: str) -> SipUri:
    """Parse any absolute URI; ``sip``/``sips``/``tel`` are parsed into their parts, other
    schemes keep ``opaque``. Raises :class:`SipParseError`."""
    colon = text.find(":")
    if colon <= 0:
        raise SipParseError("Bad URI (no scheme)")
    scheme = text[:colon]
    if not (scheme[0].isascii() and scheme[0].isalpha() and _SCHEME_CHARS.issuperset(scheme)):
        raise SipParseError("Bad URI scheme")
    scheme = scheme.lower()
    rest = text[colon + 1 :]
    if scheme in ("sip", "sips"):
        return _parse_sip_uri(scheme, rest)
    if not rest or any(c in rest for c in ' \t\r\n<>"'):
        raise SipParseError("Bad URI")
    if scheme == "tel":
        number, semi, ptext = rest.partition(";")
        if not number:
            raise SipParseError("Bad tel URI")
        return SipUri(scheme="tel", user=number, params=parse_params(ptext) if semi else ())
    return SipUri(scheme=scheme, opaque=rest)


def _parse_sip_uri(scheme: str, rest: str) -> SipUri:
    at = rest.find("@")
    user: str | None = None
    password: str | None = None
    if at >= 0:
        userinfo = rest[:at]
        rest = rest[at + 1 :]
        user, colon, pw = userinfo.partition(":")
        if colon:
            if not _PASSWORD_CHARS.issuperset(pw):
                raise SipParseError("Bad URI password")
            _check_escapes(pw, "URI password")
            password = pw
        if not user or not _LENIENT_USER.issuperset(user):
            raise SipParseError("Bad URI user part")
        _check_escapes(user, "URI user part")
    # hostport (one linear regex: disjoint character classes, nothing to backtrack into)
    m = _HOSTPORT_RE.match(rest)
    if m is None:
        raise SipParseError("Bad URI host")
    host = m.group(1)
    if host[0] == "[":
        host = host[1:-1]
        if ":" not in host:
            raise SipParseError("Bad IPv6 reference")
    port_text = m.group(2)
    port = None if port_text is None else _parse_port(port_text)
    tail = rest[m.end() :]
    headers: tuple[tuple[str, str], ...] = ()
    ptext, q, htext = tail.partition("?")
    if q:
        headers = _parse_uri_headers(htext)
    params: Params = ()
    if ptext:
        if ptext[0] != ";":
            raise SipParseError("Bad URI (junk after host)")
        params = _parse_uri_params(ptext[1:])
    return SipUri(scheme, user, password, host, port, params, headers)


def _parse_port(digits: str) -> int:
    if not digits or len(digits) > 5 or not digits.isdigit() or not digits.isascii():
        raise SipParseError("Bad port")
    port = int(digits)
    if port > 65535:
        raise SipParseError("Bad port")
    return port


def _parse_uri_params(text: str) -> Params:
    out: list[tuple[str, str | None]] = []
    for raw in text.split(";"):
        name, eq, value = raw.partition("=")
        if not name or not _PARAM_CHARS.issuperset(name):
            raise SipParseError("Bad URI parameter")
        if eq:
            if not value or not _PARAM_CHARS.issuperset(value):
                raise SipParseError("Bad URI parameter value")
            _check_escapes(value, "URI parameter")
            out.append((name, value))
        else:
            out.append((name, None))
        _check_escapes(name, "URI parameter")
    return tuple(out)


def _parse_uri_headers(text: str) -> tuple[tuple[str, str], ...]:
    out: list[tuple[str, str]] = []
    for raw in text.split("&"):
        name, eq, value = raw.partition("=")
        if not name or not eq or not _HEADER_CHARS.issuperset(name):
            raise SipParseError("Bad URI header")
        if not _HEADER_CHARS.issuperset(value):
            raise SipParseError("Bad URI header value")
        _check_escapes(name + value, "URI header")
        out.append((name, value))
    return tuple(out)


_SPECIAL_URI_PARAMS = ("user", "ttl", "method", "maddr", "transport")


def uri_equal(a: SipUri, b: SipUri) -> bool:
    """URI equivalence of RFC 3261 §19.1.4.

    * schemes must match (a ``sip`` URI never equals a ``sips`` URI);
    * userinfo compares case-sensitively, host case-insensitively, escapes of unreserved
      characters equal the characters;
    * a port given on one side only makes them differ (5060 ≠ absent);
    * ``user``, ``ttl``, ``method``, ``maddr`` and ``transport`` must match when either side
      has them; other parameters only matter when both sides have them;
    * URI headers must match as a set.
    ``tel`` URIs compare the number without visual separators (RFC 3966 §4) and all
    parameters; other schemes compare the opaque text exactly.
    """
    if a.scheme != b.scheme:
        return False
    if a.opaque is not None or b.opaque is not None:
        return a.opaque == b.opaque
    if a.scheme == "tel":
        an = unescape(a.user or "").translate(_TEL_VISUAL).lower()
        bn = unescape(b.user or "").translate(_TEL_VISUAL).lower()
        return an == bn and _pset(a.params) == _pset(b.params)
    if (a.user is None) != (b.user is None) or (a.password is None) != (b.password is None):
        return False
    if a.user is not None and b.user is not None and _normalise_escapes(a.user) != _normalise_escapes(b.user):
        return False
    if (
        a.password is not None
        and b.password is not None
        and _normalise_escapes(a.password) != _normalise_escapes(b.password)
    ):
        return False
    if a.host.lower() != b.host.lower() or a.port != b.port:
        return False
    pa = _pdict(a.params)
    pb = _pdict(b.params)
    for name in _SPECIAL_URI_PARAMS:
        if pa.get(name, "\0absent") != pb.get(name, "\0absent"):
            return False
    for name, value in pa.items():
        if name in pb and pb[name] != value:
            return False
    ha = {(unescape(k).lower(), unescape(v)) for k, v in a.headers}
    hb = {(unescape(k).lower(), unescape(v)) for k, v in b.headers}
    return ha == hb


def _pdict(params: Params) -> dict[str, str | None]:
    return {unescape(k).lower(): (None if v is None else unescape(v).lower()) for k, v in params}


def _pset(params: Params) -> frozenset[tuple[str, str | None]]:
    return frozenset(_pdict(params).items())


# ---------------------------------------------------------------------------------------
# name-addr / addr-spec (From, To, Contact, Route, Record-Route, Refer-To, PAI, …)


@dataclass(frozen=True, slots=True)
class NameAddr:
    """``[display-name] <addr-spec> *(;param)``. ``display_name`` is unquoted (quoted-pairs
    decoded); ``params`` are header parameters (``tag``, ``expires``, ``q``, …) with values
    as written (quoted strings keep their quotes)."""

    display_name: str | None
    uri: SipUri
    params: Params = ()

    @property
    def tag(self) -> str | None:
        return self.param("tag")

    def param(self, name: str) -> str | None:
        return _param_lookup(self.params, name.lower())[1]

    def has_param(self, name: str) -> bool:
        return _param_lookup(self.params, name.lower())[0]

    def param_unquoted(self, name: str) -> str | None:
        return _unquote_param(self.param(name))

    def with_tag(self, tag: str) -> NameAddr:
        return self.with_param("tag", tag)

    def with_param(self, name: str, value: str | bool | None = True) -> NameAddr:
        return dataclasses.replace(self, params=_with_param(self.params, name, value))

    def with_params(self, **params: str | bool | None) -> NameAddr:
        p = self.params
        for k, v in params.items():
            p = _with_param(p, k, v)
        return dataclasses.replace(self, params=p)

    def __str__(self) -> str:
        dn = f"{_quote(self.display_name)} " if self.display_name else ""
        return f"{dn}<{self.uri}>{_params_str(self.params)}"


@functools.lru_cache(maxsize=_PARSE_CACHE)
def parse_name_addr(text: str) -> NameAddr:
    """Parse ``name-addr`` or ``addr-spec`` followed by header parameters.

    For an addr-spec (no ``< >``) every ``;param`` belongs to the header field, not to the
    URI (RFC 3261 §20.10), and ``?``/``,`` are not allowed (§20)."""
    s = text.strip(_WS)
    if not s:
        raise SipParseError("Empty address")
    display: str | None = None
    if s[0] == '"':
        end = _quoted_end(s, 0)
        display = _unquote(s[:end])
        s = s[end:].lstrip(_WS)
        if not s.startswith("<"):
            raise SipParseError("Quoted display name without <URI>")
    lt = s.find("<")
    if lt >= 0 and (display is not None or lt == 0 or _is_display_prefix(s[:lt])):
        if display is None and lt > 0:
            display = s[:lt].strip(_WS)
        gt = s.find(">", lt)
        if gt < 0:
            raise SipParseError("Missing > in address")
        uri = parse_uri(s[lt + 1 : gt].strip(_WS))
        rest = s[gt + 1 :].lstrip(_WS)
    else:
        # addr-spec: the URI ends at the first ';' or LWS
        m = _ADDR_SPEC_END.search(s)
        end = len(s) if m is None else m.start()
        spec = s[:end]
        if "?" in spec or "," in spec or "<" in spec or ">" in spec or '"' in spec:
            raise SipParseError("Address with ? or , must be enclosed in <>")
        uri = parse_uri(spec)
        rest = s[end:].lstrip(_WS)
    params: Params = ()
    if rest:
        if rest[0] != ";":
            raise SipParseError("Junk after address")
        params = parse_params(rest[1:], "header parameter")
    return NameAddr(display or None, uri, params)


def _is_display_prefix(text: str) -> bool:
    # An unquoted display name: printable text without '"', '<', '>', control characters.
    return _NOT_DISPLAY.search(text) is None


def parse_name_addrs(value: str) -> tuple[NameAddr, ...]:
    """All addresses of a comma-separated header field value (Contact, Route, …)."""
    out = []
    for part in split_list(value):
        if not part:
            raise SipParseError("Empty list element")
        out.append(parse_name_addr(part))
    return tuple(out)


# ---------------------------------------------------------------------------------------
# Via (RFC 3261 §20.42)


@dataclass(frozen=True, slots=True)
class Via:
    """One Via header field value. ``transport`` is upper-case; ``host`` is IPv6 without
    brackets. Parameters keep the order and spelling they were received with."""

    protocol: str = "SIP/2.0"
    transport: str = "UDP"
    host: str = ""
    port: int | None = None
    params: Params = ()

    def param(self, name: str) -> str | None:
        return _param_lookup(self.params, name.lower())[1]

    def has_param(self, name: str) -> bool:
        return _param_lookup(self.params, name.lower())[0]

    @property
    def branch(self) -> str | None:
        return self.param("branch")

    @property
    def received(self) -> str | None:
        return self.param("received")

    @property
    def rport(self) -> str | bool | None:
        """``None`` when absent, ``True`` when present without value (RFC 3581 request),
        the value string otherwise."""
        present, value = _param_lookup(self.params, "rport")
        if not present:
            return None
        return True if value is None else value

    @property
    def maddr(self) -> str | None:
        return self.param("maddr")

    @property
    def ttl(self) -> int | None:
        t = self.param("ttl")
        return int(t) if t is not None and t.isdigit() else None

    @property
    def sent_by(self) -> tuple[str, int | None]:
        return (self.host, self.port)

    @property
    def has_rfc3261_branch(self) -> bool:
        """Branch starts with the magic cookie ``z9hG4bK`` (RFC 3261 §8.1.1.7); otherwise
        the transaction layer must use RFC 2543 matching (RFC 4475 §3.2.1)."""
        b = self.branch
        return b is not None and b.startswith("z9hG4bK") and len(b) > 7

    def with_param(self, name: str, value: str | bool | None = True) -> Via:
        return dataclasses.replace(self, params=_with_param(self.params, name, value))

    def with_params(self, **params: str | bool | None) -> Via:
        """``via.with_params(received="192.0.2.1", rport="5060")``."""
        p = self.params
        for k, v in params.items():
            p = _with_param(p, k, v)
        return dataclasses.replace(self, params=p)

    def __str__(self) -> str:
        h = f"[{self.host}]" if ":" in self.host else self.host
        hp = h if self.port is None else f"{h}:{self.port}"
        return f"{self.protocol}/{self.transport} {hp}{_params_str(self.params)}"


@functools.lru_cache(maxsize=_PARSE_CACHE)
def parse_via(value: str) -> Via:
    """One via-parm: ``SIP / 2.0 / UDP host[:port] *(;param)`` with LWS allowed around the
    slashes (RFC 4475 §3.1.1.1) and an RFC 2543 comment ignored."""
    m = _VIA_RE.match(value)
    if m is None:
        raise SipParseError("Bad Via (sent-protocol or sent-by)")
    name, version, transport, host, port_text = m.groups()
    if host[0] == "[":
        host = host[1:-1]
    port = None if port_text is None else _parse_port(port_text)
    rest = value[m.end() :]
    if rest.startswith("("):  # RFC 2543 comment
        close = rest.find(")")
        rest = rest[close + 1 :].lstrip(_WS) if close >= 0 else ""
    params: Params = ()
    if rest:
        if rest[0] != ";":
            raise SipParseError("Bad Via (junk after sent-by)")
        params = parse_params(rest[1:], "Via parameter")
    return Via(f"{name.upper()}/{version}", transport.upper(), host, port, params)


def parse_vias(value: str) -> tuple[Via, ...]:
    out = []
    for part in split_list(value):
        if not part:
            raise SipParseError("Empty Via value")
        out.append(parse_via(part))
    return tuple(out)


# ---------------------------------------------------------------------------------------
# CSeq (RFC 3261 §20.16)

CSEQ_MAX = 2**32 - 1


@dataclass(frozen=True, slots=True)
class CSeq:
    seq: int
    method: str

    def __str__(self) -> str:
        return f"{self.seq} {self.method}"


def parse_cseq(value: str) -> CSeq:
    """``1*DIGIT LWS Method``; the number must fit 32 bits (RFC 3261 §8.1.1.5,
    RFC 4475 §3.1.2.4 "scalar02")."""
    parts = value.split()
    if len(parts) != 2:
        raise SipParseError("Bad CSeq")
    num, method = parts
    if not num.isdigit() or not num.isascii() or len(num) > 10 or int(num) > CSEQ_MAX:
        raise SipParseError("Bad CSeq number")
    if not is_token(method):
        raise SipParseError("Bad CSeq method")
    return CSeq(int(num), method)
