"""Sans-I/O HTTP Digest authentication for SIP (RFC 3261 §22, RFC 2617, RFC 7616, RFC 8760).

Works on header *values* (the text after ``WWW-Authenticate:`` / ``Authorization:`` …) and
plain data, so it does not depend on the SIP message layer.

* Grammar: :func:`parse_auth_header` splits a header value into ``AuthItem`` s (scheme plus
  parameters, or a token68), tolerating LWS, any parameter order, quoted-pairs and several
  challenges in one value.
* Server: :class:`DigestServer` issues challenges (SHA-256 first, then MD5, RFC 8760 §2.4)
  with stateless HMAC nonces that any worker holding the key can verify, answers ``stale``,
  tracks nonce-counts against replay and verifies responses in constant time.
* Client: :class:`DigestClient` answers a 401/407 with the strongest challenge it supports
  and re-uses the nonce with an increasing nonce-count (REGISTER refreshes).

Algorithms: MD5, MD5-sess, SHA-256, SHA-256-sess; qop ``auth``, ``auth-int`` and absent
(RFC 2069 legacy). ``userhash`` (RFC 7616 §3.4.4) is not supported and never offered.

Interop (checked by hand against real peers): the server accepts SIPp 3.6.1, baresip 1.0.0
and httpx digests; the client registers with Kamailio 5.6 (MD5 and SHA-256, qop=auth, nonce
re-use with nc=2). SIPp 3.6.1 and baresip 1.0.0 fail when the *first* challenge is SHA-256
instead of skipping it (RFC 8760 §2.4 expects them to skip it), so offer
``algorithms=(Algorithm.MD5,)`` to such UAs.
"""

from __future__ import annotations

import base64
import binascii
import collections
import enum
import hashlib
import hmac
import re
import secrets
import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

__all__ = [
    "Algorithm",
    "AuthItem",
    "AuthResult",
    "DigestChallenge",
    "DigestClient",
    "DigestCredentials",
    "DigestParseError",
    "DigestServer",
    "OtherScheme",
    "Verdict",
    "answer_challenge",
    "compute_response",
    "parse_auth_header",
    "parse_challenges",
    "parse_credentials",
]


class DigestParseError(ValueError):
    """A header value that does not follow the auth-header grammar, or Digest parameters
    that are missing or invalid. Servers answer 400 (RFC 2617 §3.2.2)."""


class Algorithm(enum.Enum):
    """The ``algorithm`` directive (RFC 7616 §3.3, registry of RFC 8760)."""

    MD5 = "MD5"
    MD5_SESS = "MD5-sess"
    SHA_256 = "SHA-256"
    SHA_256_SESS = "SHA-256-sess"

    @classmethod
    def parse(cls, text: str | None) -> Algorithm | None:
        """Case-insensitive lookup; an absent directive means MD5 (RFC 2617 §3.2.1)."""
        if text is None:
            return cls.MD5
        low = text.strip().lower()
        for alg in cls:
            if alg.value.lower() == low:
                return alg
        return None

    @property
    def is_session(self) -> bool:
        return self in (Algorithm.MD5_SESS, Algorithm.SHA_256_SESS)

    @property
    def strength(self) -> int:
        """Preference when a UAC chooses among challenges (higher is better)."""
        return {
            Algorithm.SHA_256: 4,
            Algorithm.SHA_256_SESS: 3,
            Algorithm.MD5: 2,
            Algorithm.MD5_SESS: 1,
        }[self]

    def hash(self, data: str | bytes) -> str:
        # surrogatepass: hostile input with lone surrogates must hash, not raise
        raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
        if self in (Algorithm.SHA_256, Algorithm.SHA_256_SESS):
            return hashlib.sha256(raw).hexdigest()
        return hashlib.md5(raw, usedforsecurity=False).hexdigest()


# ---------------------------------------------------------------------------------------------
# Grammar (RFC 7235 §2.1 / RFC 3261 §25.1: challenge, credentials, auth-param, quoted-string)

# HTTP tchar: wider than the SIP token set, so anything a SIP token allows is accepted too.
_TOKEN_RE = re.compile(r"[A-Za-z0-9!#$%&'*+\-.^_`|~]+")
# token68 followed by optional LWS and then a comma or the end (so "realm=" is not one).
_TOKEN68_RE = re.compile(r"[A-Za-z0-9\-._~+/]+=*(?=[ \t\r\n]*(?:,|$))")
# Unquoted values are read leniently (some UAs send uri=sip:a@b unquoted): up to LWS or ','.
_BARE_VALUE_RE = re.compile(r"[^\s,\"]+")
_LWS = " \t\r\n"


@dataclass(frozen=True, slots=True)
class AuthItem:
    """One challenge or credentials: the scheme and either named params or a token68.

    ``params`` keys are lower-cased (parameter names are case-insensitive); values are
    unquoted and unescaped.
    """

    scheme: str
    params: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    token68: str | None = None

    def is_scheme(self, name: str) -> bool:
        return self.scheme.lower() == name.lower()


def _skip_lws(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in _LWS:
        pos += 1
    return pos


def _read_quoted(text: str, pos: int) -> tuple[str, int]:
    """``text[pos]`` is the opening quote; returns the unescaped content and the position
    after the closing quote (RFC 3261 §25.1 quoted-pair excludes CR and LF)."""
    out: list[str] = []
    i = pos + 1
    while i < len(text):
        c = text[i]
        if c == '"':
            return "".join(out), i + 1
        if c == "\\":
            if i + 1 >= len(text) or text[i + 1] in "\r\n":
                raise DigestParseError("bad quoted-pair in quoted-string")
            out.append(text[i + 1])
            i += 2
            continue
        out.append(c)
        i += 1
    raise DigestParseError("unterminated quoted-string")


def parse_auth_header(value: str) -> list[AuthItem]:
    """Parse a WWW-Authenticate / Proxy-Authenticate / Authorization / Proxy-Authorization
    header value into its challenges or credentials.

    ``Digest realm="a", nonce="b", Digest realm="a", nonce="c", algorithm=SHA-256`` gives two
    items: a token not followed by ``=`` starts a new item (RFC 7235 §4.1). Raises
    :class:`DigestParseError` on anything that does not fit the grammar; never anything else.
    """
    items: list[AuthItem] = []
    scheme: str | None = None
    params: dict[str, str] = {}
    token68: str | None = None

    def flush() -> None:
        if scheme is not None:
            items.append(AuthItem(scheme, MappingProxyType(dict(params)), token68))

    pos = 0
    n = len(value)
    while True:
        pos = _skip_lws(value, pos)
        while pos < n and value[pos] == ",":  # empty list elements are allowed (#rule)
            pos = _skip_lws(value, pos + 1)
        if pos >= n:
            break
        m = _TOKEN_RE.match(value, pos)
        if m is None:
            raise DigestParseError(f"expected a token at offset {pos}")
        name = m.group(0)
        after = _skip_lws(value, m.end())
        if after < n and value[after] == "=" and scheme is not None and token68 is None:
            # auth-param of the current item
            vpos = _skip_lws(value, after + 1)
            if vpos < n and value[vpos] == '"':
                pval, pos = _read_quoted(value, vpos)
            else:
                vm = _BARE_VALUE_RE.match(value, vpos)
                if vm is None:
                    raise DigestParseError(f"missing value for parameter {name!r}")
                pval, pos = vm.group(0), vm.end()
            key = name.lower()
            if key in params:
                raise DigestParseError(f"duplicate parameter {name!r}")
            params[key] = pval
        elif after < n and value[after] == "=":
            raise DigestParseError(f"parameter {name!r} without an auth-scheme")
        else:
            # a new auth-scheme; its first parameter follows after LWS (no comma)
            if m.end() < n and value[m.end()] not in _LWS + ",":
                raise DigestParseError(f"unexpected character after scheme {name!r}")
            flush()
            scheme, params, token68 = name, {}, None
            pos = after
            t68 = _TOKEN68_RE.match(value, pos)
            if t68 is not None and pos > m.end():
                token68 = t68.group(0)
                pos = t68.end()
            continue
        # after a parameter: LWS then ',' or end, or (lenient) the next token
        pos = _skip_lws(value, pos)
        if pos < n and value[pos] != "," and _TOKEN_RE.match(value, pos) is None:
            raise DigestParseError(f"unexpected character {value[pos]!r} at offset {pos}")
    flush()
    return items


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


# ---------------------------------------------------------------------------------------------
# Typed challenge and credentials


@dataclass(frozen=True, slots=True)
class DigestChallenge:
    """A Digest challenge (WWW-Authenticate / Proxy-Authenticate), RFC 7616 §3.3."""

    realm: str
    nonce: str
    algorithm: Algorithm = Algorithm.MD5
    qop: tuple[str, ...] = ()  # offered qop options, lower-case; () = legacy RFC 2069
    opaque: str | None = None
    stale: bool = False
    domain: str | None = None

    def to_header_value(self) -> str:
        parts = [f"realm={_quote(self.realm)}"]
        if self.domain is not None:
            parts.append(f"domain={_quote(self.domain)}")
        parts.append(f"nonce={_quote(self.nonce)}")
        if self.opaque is not None:
            parts.append(f"opaque={_quote(self.opaque)}")
        if self.stale:
            parts.append("stale=true")
        parts.append(f"algorithm={self.algorithm.value}")
        if self.qop:
            parts.append(f"qop={_quote(','.join(self.qop))}")
        return "Digest " + ", ".join(parts)


@dataclass(frozen=True, slots=True)
class DigestCredentials:
    """Digest credentials (Authorization / Proxy-Authorization), RFC 7616 §3.4."""

    username: str
    realm: str
    nonce: str
    uri: str
    response: str
    algorithm: Algorithm = Algorithm.MD5
    qop: str | None = None  # "auth" / "auth-int" / None (legacy)
    cnonce: str | None = None
    nc: int | None = None  # nonce-count as an integer (8 hex digits on the wire)
    opaque: str | None = None

    def to_header_value(self) -> str:
        parts = [
            f"username={_quote(self.username)}",
            f"realm={_quote(self.realm)}",
            f"nonce={_quote(self.nonce)}",
            f"uri={_quote(self.uri)}",
            f"response={_quote(self.response)}",
            f"algorithm={self.algorithm.value}",
        ]
        if self.cnonce is not None:
            parts.append(f"cnonce={_quote(self.cnonce)}")
        if self.opaque is not None:
            parts.append(f"opaque={_quote(self.opaque)}")
        if self.qop is not None:
            parts.append(f"qop={self.qop}")
        if self.nc is not None:
            parts.append(f"nc={self.nc:08x}")
        return "Digest " + ", ".join(parts)


@dataclass(frozen=True, slots=True)
class OtherScheme:
    """Credentials in a scheme other than Digest (e.g. RFC 4475 §3.3.7
    ``NoOneKnowsThisScheme``): a registrar ignores them and challenges afresh."""

    scheme: str


_NC_RE = re.compile(r"[0-9A-Fa-f]{8}")


def _challenge_from_item(item: AuthItem) -> DigestChallenge | None:
    p = item.params
    realm, nonce = p.get("realm"), p.get("nonce")
    alg = Algorithm.parse(p.get("algorithm"))
    if realm is None or nonce is None or alg is None:
        return None  # unusable: RFC 7616 §3.7 tells a client to ignore unknown algorithms
    qop = tuple(q.strip().lower() for q in p["qop"].split(",") if q.strip()) if "qop" in p else ()
    return DigestChallenge(
        realm=realm,
        nonce=nonce,
        algorithm=alg,
        qop=qop,
        opaque=p.get("opaque"),
        stale=p.get("stale", "").strip().lower() == "true",
        domain=p.get("domain"),
    )


def parse_challenges(values: str | Iterable[str]) -> list[DigestChallenge]:
    """All usable Digest challenges in one or several header values, in order. Non-Digest
    challenges and Digest ones with an unknown algorithm or missing realm/nonce are skipped;
    a header value that breaks the grammar raises :class:`DigestParseError`."""
    if isinstance(values, str):
        values = [values]
    out: list[DigestChallenge] = []
    for value in values:
        for item in parse_auth_header(value):
            if item.is_scheme("Digest"):
                ch = _challenge_from_item(item)
                if ch is not None:
                    out.append(ch)
    return out


def parse_credentials(value: str) -> DigestCredentials | OtherScheme:
    """Parse one Authorization / Proxy-Authorization value.

    Returns :class:`OtherScheme` for a non-Digest scheme; raises :class:`DigestParseError`
    if the value breaks the grammar or Digest directives are missing/invalid (RFC 7616 §3.4).
    """
    items = parse_auth_header(value)
    if len(items) != 1:
        raise DigestParseError(f"expected one credentials, found {len(items)}")
    item = items[0]
    if not item.is_scheme("Digest"):
        return OtherScheme(item.scheme)
    p = item.params
    if item.token68 is not None:
        raise DigestParseError("Digest credentials need auth-params, not a token68")
    missing = [k for k in ("username", "realm", "nonce", "uri", "response") if k not in p]
    if missing:
        raise DigestParseError(f"Digest credentials lack {', '.join(missing)}")
    if "userhash" in p and p["userhash"].strip().lower() == "true":
        raise DigestParseError("userhash is not supported")
    alg = Algorithm.parse(p.get("algorithm"))
    if alg is None:
        raise DigestParseError(f"unsupported algorithm {p.get('algorithm')!r}")
    qop = p["qop"].strip().lower() if "qop" in p else None
    nc: int | None = None
    cnonce = p.get("cnonce")
    if qop is not None:
        if qop not in ("auth", "auth-int"):
            raise DigestParseError(f"unsupported qop {qop!r}")
        nc_text = p.get("nc", "").strip()
        if cnonce is None or _NC_RE.fullmatch(nc_text) is None:
            raise DigestParseError("qop requires cnonce and an 8-hex-digit nc")
        nc = int(nc_text, 16)
    if alg.is_session and cnonce is None:
        raise DigestParseError(f"{alg.value} requires cnonce")
    return DigestCredentials(
        username=p["username"],
        realm=p["realm"],
        nonce=p["nonce"],
        uri=p["uri"],
        response=p["response"].strip().lower(),
        algorithm=alg,
        qop=qop,
        cnonce=cnonce,
        nc=nc,
        opaque=p.get("opaque"),
    )


# ---------------------------------------------------------------------------------------------
# The computation (RFC 7616 §3.4.1-§3.4.3; RFC 2617 §3.2.2.1-§3.2.2.3)


def compute_response(
    *,
    algorithm: Algorithm,
    username: str,
    realm: str,
    password: str,
    method: str,
    uri: str,
    nonce: str,
    qop: str | None = None,
    cnonce: str | None = None,
    nc: int | None = None,
    body: bytes = b"",
) -> str:
    """The ``response`` directive, lower-case hex."""
    h = algorithm.hash
    ha1 = h(f"{username}:{realm}:{password}")
    if algorithm.is_session:
        ha1 = h(f"{ha1}:{nonce}:{cnonce or ''}")
    ha2 = h(f"{method}:{uri}:{h(body)}") if qop == "auth-int" else h(f"{method}:{uri}")
    if qop is None:
        return h(f"{ha1}:{nonce}:{ha2}")
    return h(f"{ha1}:{nonce}:{(nc or 0):08x}:{cnonce or ''}:{qop}:{ha2}")


# ---------------------------------------------------------------------------------------------
# Server


class Verdict(enum.Enum):
    """Outcome of checking a request's credentials, and what to answer."""

    OK = "ok"
    MISSING = "missing"  # no Digest credentials for our realm (or another scheme) -> 401
    INVALID_NONCE = "invalid-nonce"  # not a nonce we issued -> 401 (fresh challenge)
    STALE = "stale"  # right response, expired nonce -> 401 stale=true
    REPLAYED = "replayed"  # right response, nonce-count not increasing -> 401 stale=true
    MALFORMED = "malformed"  # bad grammar or directives -> 400
    UNKNOWN_USER = "unknown-user"  # -> 403
    WRONG_RESPONSE = "wrong-response"  # wrong password (or tampered request) -> 403


@dataclass(frozen=True, slots=True)
class AuthResult:
    verdict: Verdict
    username: str | None = None  # the credentials' username when there were credentials
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.verdict is Verdict.OK

    @property
    def wants_challenge(self) -> bool:
        return self.verdict in (
            Verdict.MISSING,
            Verdict.INVALID_NONCE,
            Verdict.STALE,
            Verdict.REPLAYED,
        )

    @property
    def stale(self) -> bool:
        return self.verdict in (Verdict.STALE, Verdict.REPLAYED)


# nonce = base64url( issued_ms:u64 | salt:8 | HMAC-SHA256(key, issued_ms|salt|realm)[:16] )
_NONCE_HEAD = struct.Struct(">Q8s")
_NONCE_MAC_LEN = 16
_NONCE_LEN = _NONCE_HEAD.size + _NONCE_MAC_LEN


class DigestServer:
    """Issues and verifies Digest challenges for one realm.

    Nonces are stateless: they carry their issue time and an HMAC under ``key``, so any
    worker with the same key verifies them. Only nonce-count replay tracking is local state
    (a bounded LRU per instance); across workers a replay within ``nonce_lifetime_s`` of a
    nonce seen by another worker is not detected.
    """

    def __init__(
        self,
        realm: str,
        *,
        key: bytes | None = None,
        nonce_lifetime_s: float = 300.0,
        algorithms: Sequence[Algorithm] = (Algorithm.SHA_256, Algorithm.MD5),
        qop: Sequence[str] = ("auth",),
        allow_legacy: bool = True,
        max_tracked_nonces: int = 65_536,
        clock_skew_s: float = 5.0,
        random_bytes: Callable[[int], bytes] = secrets.token_bytes,
    ) -> None:
        if not algorithms:
            raise ValueError("at least one algorithm")
        if any(q not in ("auth", "auth-int") for q in qop):
            raise ValueError("qop options: 'auth', 'auth-int'")
        self.realm = realm
        self._key = key if key is not None else secrets.token_bytes(32)
        self.nonce_lifetime_s = nonce_lifetime_s
        self.algorithms = tuple(algorithms)
        self.qop = tuple(qop)
        # RFC 2069 clients (no qop) cannot be protected against replay within the nonce
        # lifetime; accepted by default for interoperability, refuse with allow_legacy=False.
        self.allow_legacy = allow_legacy
        self._max_tracked = max_tracked_nonces
        self._skew = clock_skew_s
        self._random = random_bytes
        self._highest_nc: collections.OrderedDict[str, int] = collections.OrderedDict()

    # -- nonces --------------------------------------------------------------------------

    def make_nonce(self, now: float) -> str:
        head = _NONCE_HEAD.pack(max(0, int(now * 1000)), self._random(8))
        mac = hmac.new(self._key, head + self.realm.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(head + mac[:_NONCE_MAC_LEN]).decode("ascii")

    def nonce_age(self, nonce: str, now: float) -> float | None:
        """Seconds since ``nonce`` was issued, or None if we did not issue it (bad MAC,
        other realm, garbage)."""
        try:
            raw = base64.urlsafe_b64decode(nonce.encode("ascii"))
        except (binascii.Error, UnicodeEncodeError, ValueError):
            return None
        if len(raw) != _NONCE_LEN:
            return None
        head, mac = raw[: _NONCE_HEAD.size], raw[_NONCE_HEAD.size :]
        want = hmac.new(self._key, head + self.realm.encode(), hashlib.sha256).digest()
        if not hmac.compare_digest(mac, want[:_NONCE_MAC_LEN]):
            return None
        issued_ms: int = _NONCE_HEAD.unpack(head)[0]
        age = now - issued_ms / 1000.0
        if age < -self._skew:
            return None  # from the future: another worker's clock, or forged
        return max(0.0, age)

    # -- challenges ----------------------------------------------------------------------

    def challenges(self, now: float, *, stale: bool = False) -> list[DigestChallenge]:
        """One challenge per algorithm, strongest first (RFC 8760 §2.4), sharing a nonce."""
        nonce = self.make_nonce(now)
        return [
            DigestChallenge(realm=self.realm, nonce=nonce, algorithm=a, qop=self.qop, stale=stale)
            for a in self.algorithms
        ]

    def challenge_headers(self, now: float, *, stale: bool = False) -> list[str]:
        """Header values for WWW-Authenticate (401) or Proxy-Authenticate (407), one each."""
        return [c.to_header_value() for c in self.challenges(now, stale=stale)]

    # -- verification --------------------------------------------------------------------

    def verify(
        self,
        credentials: DigestCredentials,
        *,
        password: str,
        method: str,
        now: float,
        body: bytes = b"",
    ) -> Verdict:
        """Check one set of credentials against the user's password.

        Order matters: an unknown nonce is re-challenged; a wrong response is refused before
        staleness is considered, so ``stale=true`` only ever means "your password was right"
        (RFC 7616 §3.3); the nonce-count is recorded only for a correct response.
        """
        if credentials.realm != self.realm:
            return Verdict.MISSING
        if credentials.algorithm not in self.algorithms:
            return Verdict.INVALID_NONCE  # not offered: challenge again with what we offer
        if credentials.qop is None and not self.allow_legacy:
            return Verdict.INVALID_NONCE
        if credentials.qop is not None and credentials.qop not in self.qop:
            return Verdict.INVALID_NONCE
        age = self.nonce_age(credentials.nonce, now)
        if age is None:
            return Verdict.INVALID_NONCE
        want = compute_response(
            algorithm=credentials.algorithm,
            username=credentials.username,
            realm=credentials.realm,
            password=password,
            method=method,
            uri=credentials.uri,
            nonce=credentials.nonce,
            qop=credentials.qop,
            cnonce=credentials.cnonce,
            nc=credentials.nc,
            body=body,
        )
        got = credentials.response.encode("utf-8", "surrogatepass")
        if not hmac.compare_digest(want.encode(), got):
            return Verdict.WRONG_RESPONSE
        if age > self.nonce_lifetime_s:
            return Verdict.STALE
        if credentials.nc is not None and not self._advance_nc(credentials.nonce, credentials.nc):
            return Verdict.REPLAYED
        return Verdict.OK

    def _advance_nc(self, nonce: str, nc: int) -> bool:
        last = self._highest_nc.get(nonce)
        if last is not None and nc <= last:
            return False
        self._highest_nc[nonce] = nc
        self._highest_nc.move_to_end(nonce)
        while len(self._highest_nc) > self._max_tracked:
            self._highest_nc.popitem(last=False)
        return True

    def check(
        self,
        authorization: Sequence[str],
        *,
        method: str,
        now: float,
        password_for: Callable[[str], str | None],
        body: bytes = b"",
    ) -> AuthResult:
        """Check the Authorization (or Proxy-Authorization) header values of a request.

        Picks the Digest credentials for this realm (others, and other schemes, are
        ignored, RFC 3261 §22.3); ``password_for(username)`` returns the password or None
        for an unknown user.
        """
        malformed: str | None = None
        mine: DigestCredentials | None = None
        for value in authorization:
            try:
                cred = parse_credentials(value)
            except DigestParseError as exc:
                # credentials for another realm may be in a syntax we dislike; only a bad
                # value that could be ours (or that we cannot attribute) makes this a 400
                malformed = malformed or str(exc)
                continue
            if isinstance(cred, DigestCredentials) and cred.realm == self.realm:
                mine = cred
                break
        if mine is None:
            if malformed is not None:
                return AuthResult(Verdict.MALFORMED, detail=malformed)
            return AuthResult(Verdict.MISSING)
        password = password_for(mine.username)
        if password is None:
            return AuthResult(Verdict.UNKNOWN_USER, mine.username)
        verdict = self.verify(mine, password=password, method=method, now=now, body=body)
        return AuthResult(verdict, mine.username)


# ---------------------------------------------------------------------------------------------
# Client


class DigestClient:
    """Answers Digest challenges for one username/password (a UAC or a trunk registration).

    Send the value as ``Authorization`` after a 401 and as ``Proxy-Authorization`` after a
    407. The client does not decide whether to retry after a second rejection: the caller
    should stop when a fresh, non-stale challenge follows a request that carried
    credentials (RFC 3261 §22.2).
    """

    def __init__(
        self,
        username: str,
        password: str,
        *,
        cnonce_factory: Callable[[], str] = lambda: secrets.token_hex(16),
        algorithms: Sequence[Algorithm] = tuple(Algorithm),
    ) -> None:
        self.username = username
        self.password = password
        self._cnonce_factory = cnonce_factory
        self._algorithms = frozenset(algorithms)
        self._challenge: DigestChallenge | None = None
        self._nc = 0
        self._cnonce = ""

    @property
    def challenge(self) -> DigestChallenge | None:
        """The challenge currently answered (None before the first one)."""
        return self._challenge

    def choose(self, challenges: Sequence[DigestChallenge]) -> DigestChallenge | None:
        """The strongest usable challenge (RFC 8760 §2.4); ties keep header order."""
        usable = [
            c
            for c in challenges
            if c.algorithm in self._algorithms
            and (not c.qop or "auth" in c.qop or "auth-int" in c.qop)
        ]
        if not usable:
            return None
        return max(usable, key=lambda c: c.algorithm.strength)  # max keeps the first of ties

    def respond(
        self, challenge_values: str | Iterable[str], method: str, uri: str, body: bytes = b""
    ) -> str | None:
        """Answer a 401/407: the header value, or None if no challenge is usable.

        Also None when the server repeats, without ``stale=true``, the very nonce we already
        answered: our credentials were rejected, and re-sending them would loop (RFC 3261
        §22.2). Raises :class:`DigestParseError` if a challenge value breaks the grammar.
        """
        chosen = self.choose(parse_challenges(challenge_values))
        if chosen is None:
            return None
        previous = self._challenge
        if (
            previous is not None
            and self._nc > 0
            and not chosen.stale
            and (chosen.realm, chosen.nonce) == (previous.realm, previous.nonce)
        ):
            return None
        self._challenge = chosen
        self._nc = 0
        self._cnonce = self._cnonce_factory()
        return self.authorization(method, uri, body)

    def authorization(self, method: str, uri: str, body: bytes = b"") -> str | None:
        """Credentials for the next request re-using the current nonce (nc + 1), e.g. a
        REGISTER refresh; None before any challenge was answered."""
        ch = self._challenge
        if ch is None:
            return None
        qop: str | None = None
        if ch.qop:
            qop = "auth" if "auth" in ch.qop else "auth-int"
        self._nc += 1
        use_cnonce = qop is not None or ch.algorithm.is_session
        cnonce = self._cnonce if use_cnonce else None
        nc = self._nc if qop is not None else None
        response = compute_response(
            algorithm=ch.algorithm,
            username=self.username,
            realm=ch.realm,
            password=self.password,
            method=method,
            uri=uri,
            nonce=ch.nonce,
            qop=qop,
            cnonce=cnonce,
            nc=nc,
            body=body,
        )
        return DigestCredentials(
            username=self.username,
            realm=ch.realm,
            nonce=ch.nonce,
            uri=uri,
            response=response,
            algorithm=ch.algorithm,
            qop=qop,
            cnonce=cnonce,
            nc=nc,
            opaque=ch.opaque,
        ).to_header_value()


def answer_challenge(
    challenge_values: str | Iterable[str],
    *,
    username: str,
    password: str,
    method: str,
    uri: str,
    body: bytes = b"",
    cnonce: str | None = None,
) -> str | None:
    """One-shot answer to a 401/407 (nc=1): the Authorization / Proxy-Authorization value
    for the strongest usable challenge, or None. Use :class:`DigestClient` to re-use the
    nonce on later requests."""
    factory = (lambda: cnonce) if cnonce is not None else (lambda: secrets.token_hex(16))
    return DigestClient(username, password, cnonce_factory=factory).respond(
        challenge_values, method, uri, body
    )
