"""Authentication of SP → platform requests, pure (no HTTP, no clock, no storage).

Two schemes (spec §1.1, §1.2, "Our decisions"):

* ``X-AKSK``: ``PasswordDigest = Base64(HMAC-SHA256(key=APP_Secret, msg=Nonce + Created))``.
* ``X-WSSE`` (legacy): ``Base64(SHA256(Nonce + Created + APP_Secret))`` where the hash is either
  the raw 32 bytes (documented) or its lower-case hex text (Huawei's Java/Python demos) — both
  are accepted.

``Created`` must lie within ``max_skew_s`` of the server clock read as UTC, or as UTC+8 when
``accept_beijing_time`` is on. A nonce seen before within the replay window is rejected. After
``fail_limit`` failures from one IP within ``fail_window_s`` that IP gets ``1020176`` for
``block_s``. The caller passes ``now`` (epoch seconds) into every method.
"""

from __future__ import annotations

import base64
import calendar
import enum
import hashlib
import hmac
import re
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass

from control_api.codes import ApiError, Code

AKSK_AUTHORIZATION = 'AKSK realm="SDP",profile="UsernameToken",type="Appkey"'
WSSE_AUTHORIZATION = 'WSSE realm="SDP",profile="UsernameToken",type="Appkey"'
BEIJING_OFFSET_S = 8 * 3600

_ATTR_RE = re.compile(r'([A-Za-z]+)\s*=\s*"([^"]*)"')
_CREATED_RE = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.\d{1,9})?Z?$"
)
_NONCE_RE = re.compile(r"^[A-Za-z0-9_\-]{1,128}$")


class Scheme(enum.StrEnum):
    AKSK = "X-AKSK"
    WSSE = "X-WSSE"


@dataclass(frozen=True, slots=True)
class UsernameToken:
    scheme: Scheme
    username: str
    digest: str
    nonce: str
    created: str


@dataclass(frozen=True, slots=True)
class AuthSettings:
    accept_beijing_time: bool = True
    max_skew_s: int = 300
    fail_limit: int = 10
    fail_window_s: int = 300
    block_s: int = 1800
    max_tracked: int = 200_000    # bound on remembered nonces / IPs (memory safety)


# -- digests -----------------------------------------------------------------------------------


def aksk_digest(app_secret: str, nonce: str, created: str) -> str:
    mac = hmac.new(app_secret.encode(), (nonce + created).encode(), hashlib.sha256).digest()
    return base64.b64encode(mac).decode()


def wsse_digests(app_secret: str, nonce: str, created: str) -> tuple[str, str]:
    """(hex-then-Base64 form of the demos, raw-then-Base64 form of the documentation)."""
    h = hashlib.sha256((nonce + created + app_secret).encode())
    return base64.b64encode(h.hexdigest().encode()).decode(), base64.b64encode(h.digest()).decode()


def push_digest(app_secret: str, url: str, nonce: str, created: str, newlines: bool = True) -> str:
    """§1.3: signature of our own status/CDR pushes."""
    msg = f"{url}\n{nonce}\n{created}" if newlines else f"{url}{nonce}{created}"
    mac = hmac.new(app_secret.encode(), msg.encode(), hashlib.sha256).digest()
    return base64.b64encode(mac).decode()


def digest_matches(token: UsernameToken, app_secret: str) -> bool:
    given = token.digest.encode()
    if token.scheme is Scheme.AKSK:
        expected = aksk_digest(app_secret, token.nonce, token.created)
        return hmac.compare_digest(given, expected.encode())
    hex_form, raw_form = wsse_digests(app_secret, token.nonce, token.created)
    # evaluate both comparisons so timing does not reveal which form was close
    a = hmac.compare_digest(given, hex_form.encode())
    b = hmac.compare_digest(given, raw_form.encode())
    return a or b


# -- parsing -----------------------------------------------------------------------------------


def _header(headers: Mapping[str, str], name: str) -> str | None:
    for k, v in headers.items():
        if k.lower() == name.lower():
            return v
    return None


def parse_username_token(value: str, scheme: Scheme) -> UsernameToken:
    """Parse ``UsernameToken Username="..", PasswordDigest="..", Nonce="..", Created=".."``
    in any attribute order with optional whitespace. Missing pieces raise 1023034..1023037."""
    attrs = {k.lower(): v for k, v in _ATTR_RE.findall(value)}
    username = attrs.get("username", "")
    nonce = attrs.get("nonce", "")
    created = attrs.get("created", "")
    digest = attrs.get("passworddigest", "")
    if not username:
        raise ApiError(Code.USERNAME_MISSING)
    if not nonce:
        raise ApiError(Code.NONCE_MISSING)
    if not created:
        raise ApiError(Code.CREATED_MISSING)
    if not digest:
        raise ApiError(Code.DIGEST_MISSING)
    if len(username) > 128:
        raise ApiError(Code.INVALID_APP_KEY)
    if not _NONCE_RE.match(nonce):
        raise ApiError(Code.INVALID_APP_KEY, "Invalid Nonce: 1-128 letters and digits.")
    if len(digest) > 256:
        raise ApiError(Code.INVALID_APP_KEY, "Invalid PasswordDigest.")
    return UsernameToken(scheme, username, digest, nonce, created)


def extract_token(headers: Mapping[str, str]) -> UsernameToken:
    """Find the X-AKSK (preferred) or X-WSSE header. No header at all → 1023033."""
    aksk = _header(headers, "X-AKSK")
    if aksk is not None:
        return parse_username_token(aksk, Scheme.AKSK)
    wsse = _header(headers, "X-WSSE")
    if wsse is not None:
        return parse_username_token(wsse, Scheme.WSSE)
    raise ApiError(Code.AKSK_MISSING)


def parse_created(created: str) -> float:
    """``yyyy-MM-ddTHH:mm:ssZ`` read as UTC → epoch seconds. Bad format → 1010013."""
    m = _CREATED_RE.match(created)
    if m is None:
        raise ApiError(Code.TIME_OUT_LIMIT, "Time out limit. Created must be yyyy-MM-ddTHH:mm:ssZ.")
    y, mo, d, h, mi, s = (int(g) for g in m.groups())
    if not (1 <= mo <= 12 and 1 <= d <= 31 and h < 24 and mi < 60 and s < 61):
        raise ApiError(Code.TIME_OUT_LIMIT, "Time out limit. Created is not a valid time.")
    return float(calendar.timegm((y, mo, d, h, mi, min(s, 59), 0, 0, 0)))


def created_in_window(created_utc: float, now: float, settings: AuthSettings) -> bool:
    if abs(created_utc - now) <= settings.max_skew_s:
        return True
    # Beijing time written with a trailing "Z": the true instant is 8 h earlier.
    return settings.accept_beijing_time and (
        abs(created_utc - BEIJING_OFFSET_S - now) <= settings.max_skew_s
    )


# -- state: nonces and per-IP failures ---------------------------------------------------------


class NonceCache:
    """Nonces accepted within the replay window (per app key). A nonce is remembered for
    ``2 * max_skew_s`` — longer than any Created value could stay acceptable."""

    def __init__(self, ttl_s: float, max_entries: int) -> None:
        self._ttl = ttl_s
        self._max = max_entries
        self._seen: dict[tuple[str, str], float] = {}
        self._order: deque[tuple[float, tuple[str, str]]] = deque()

    def _purge(self, now: float) -> None:
        while self._order and (self._order[0][0] <= now or len(self._order) > self._max):
            exp, key = self._order.popleft()
            if self._seen.get(key) == exp:
                del self._seen[key]

    def check_and_add(self, app_key: str, nonce: str, now: float) -> bool:
        """True if new (and now remembered); False if a replay."""
        self._purge(now)
        key = (app_key, nonce)
        if key in self._seen:
            return False
        exp = now + self._ttl
        self._seen[key] = exp
        self._order.append((exp, key))
        return True


class FailureThrottle:
    """API-ERR: too many authentication failures from one IP → blocked for ``block_s``."""

    def __init__(self, settings: AuthSettings) -> None:
        self._s = settings
        self._failures: dict[str, deque[float]] = {}
        self._blocked: dict[str, float] = {}

    def blocked(self, ip: str, now: float) -> bool:
        until = self._blocked.get(ip)
        if until is None:
            return False
        if now >= until:
            del self._blocked[ip]
            return False
        return True

    def record_failure(self, ip: str, now: float) -> None:
        q = self._failures.setdefault(ip, deque())
        q.append(now)
        while q and q[0] <= now - self._s.fail_window_s:
            q.popleft()
        if len(q) >= self._s.fail_limit:
            self._blocked[ip] = now + self._s.block_s
            del self._failures[ip]
        if len(self._failures) > self._s.max_tracked:
            # forget the oldest tracked IP; blocking state is kept separately
            self._failures.pop(next(iter(self._failures)))
        if len(self._blocked) > self._s.max_tracked:
            for k in [k for k, v in self._blocked.items() if v <= now]:
                del self._blocked[k]

    def reset(self, ip: str) -> None:
        self._failures.pop(ip, None)


class Authenticator:
    """Ties the steps together. Usage by the HTTP layer::

        auth.check_not_blocked(ip, now)
        token = auth.token(headers, ip, now)          # syntax + Created window
        secret = lookup(token.username)               # storage; None if unknown
        auth.verify(token, secret, ip, now)           # digest + nonce replay
    """

    def __init__(self, settings: AuthSettings) -> None:
        self.settings = settings
        self.nonces = NonceCache(2 * settings.max_skew_s, settings.max_tracked)
        self.throttle = FailureThrottle(settings)

    def check_not_blocked(self, ip: str, now: float) -> None:
        if self.throttle.blocked(ip, now):
            raise ApiError(Code.AUTH_BLOCKED)

    def fail(self, ip: str, now: float, err: ApiError) -> ApiError:
        self.throttle.record_failure(ip, now)
        return err

    def token(self, headers: Mapping[str, str], ip: str, now: float) -> UsernameToken:
        try:
            token = extract_token(headers)
            if not created_in_window(parse_created(token.created), now, self.settings):
                raise ApiError(Code.TIME_OUT_LIMIT)
        except ApiError as e:
            raise self.fail(ip, now, e) from None
        return token

    def verify(self, token: UsernameToken, app_secret: str | None, ip: str, now: float) -> None:
        if app_secret is None:
            raise self.fail(ip, now, ApiError(Code.INVALID_APP_KEY))
        if not digest_matches(token, app_secret):
            raise self.fail(ip, now, ApiError(Code.INVALID_APP_KEY,
                                              "Invalid app_key or PasswordDigest."))
        if not self.nonces.check_and_add(token.username, token.nonce, now):
            raise self.fail(ip, now, ApiError(Code.TIME_OUT_LIMIT,
                                              "Nonce already used (replay)."))
        self.throttle.reset(ip)


def settings_from_config(cfg: object) -> AuthSettings:
    """Build from ``[auth]`` (an ``AuthConfig``)."""
    return AuthSettings(
        accept_beijing_time=bool(getattr(cfg, "accept_beijing_time", True)),
        max_skew_s=int(getattr(cfg, "max_skew_s", 300)),
        fail_limit=int(getattr(cfg, "fail_limit", 10)),
        fail_window_s=int(getattr(cfg, "fail_window_s", 300)),
        block_s=int(getattr(cfg, "block_s", 1800)),
    )
