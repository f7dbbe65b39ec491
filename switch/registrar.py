"""Sans-I/O registrar core (RFC 3261 §10.3) for the softphones of ``[[users]]``.

Fed the already-parsed parts of a REGISTER (a :class:`RegisterRequest`) and the current time,
it answers with a typed result — :class:`Challenge` (401), :class:`Rejected` (400/403/404/
423/500) or :class:`Bindings` (200) — and keeps the location service in memory. The B2BUA
asks it where a number's softphones are (:meth:`Registrar.contacts_for_number`).

Choices where RFC 3261 leaves room (documented in the report and tests):

* A REGISTER without credentials is always challenged, whoever it claims to be, so the
  registrar does not reveal which users exist. A wrong password on a nonce we issued gets
  403 (not a new 401): the UA should not loop on a password that is wrong (§22.2). An
  unknown digest username is also 403.
* After authentication, a To user that is neither a username nor a number of ``[[users]]``
  gets 404 (§10.3 step 5); another user's AOR gets 403 (step 4).
* The AOR is the user: To may name the username or the number; both reach one binding set.
* Bindings are keyed by the contact URI compared as a string with scheme and host part
  lower-cased; full §19.1.4 URI equivalence (parameter order, escapes, default ports) is
  not applied. A contact with ``+sip.instance`` and ``reg-id`` (RFC 5626 §6) replaces the
  binding with the same instance and reg-id.
* More than ``max_contacts`` bindings per AOR evicts the least recently refreshed one.
"""

from __future__ import annotations

import math
import re
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import structlog

from switch.config import Address, SipConfig, UserConfig
from switch.sip.digest import Algorithm, DigestServer, Verdict

__all__ = [
    "Binding",
    "Bindings",
    "Challenge",
    "ContactSpec",
    "RegisterRequest",
    "RegisterResult",
    "Registrar",
    "Rejected",
    "contact_key",
]

log = structlog.get_logger(__name__)

MAX_DELTA_SECONDS = 2**32 - 1  # RFC 3261 §25.1 delta-seconds saturate here
_DIGITS = re.compile(r"[0-9]+")
_QVALUE = re.compile(r"(0(\.[0-9]{0,3})?|1(\.0{0,3})?)")


@dataclass(frozen=True, slots=True)
class ContactSpec:
    """One Contact header entry of a REGISTER, already parsed by the message layer.

    ``uri`` is the URI alone (inside ``<>`` if the header used them), or ``"*"``. Contact
    *header* parameters other than the ones below (RFC 4475 cparam01 ``;unknownparam``) are
    not needed here; URI parameters stay in ``uri`` (cparam02). ``expires`` and ``q`` may be
    given as received text; they are validated here.
    """

    uri: str
    expires: int | str | None = None
    q: float | str | None = None
    instance: str | None = None  # +sip.instance (RFC 5626), quotes and <> as received
    reg_id: int | None = None  # reg-id (RFC 5626)

    @property
    def is_wildcard(self) -> bool:
        return self.uri.strip() == "*"


@dataclass(frozen=True, slots=True)
class RegisterRequest:
    """The parts of a REGISTER the registrar needs (RFC 3261 §10.3)."""

    aor_user: str  # user part of the To URI (a username or an E.164 number)
    contacts: Sequence[ContactSpec]
    call_id: str
    cseq: int
    source: Address  # where the request came from (received / rport), for NAT traversal
    expires: int | str | None = None  # the Expires header value, if any
    authorization: Sequence[str] = ()  # Authorization header values
    method: str = "REGISTER"
    body: bytes = b""


@dataclass(frozen=True, slots=True)
class Binding:
    """A contact of a user's AOR in the location service."""

    username: str
    number: str
    contact: str  # the contact URI as registered
    source: Address  # send here to reach a softphone behind NAT
    expires_at: float
    updated_at: float  # when the binding was last created or refreshed
    call_id: str
    cseq: int
    q: float | None = None
    instance: str | None = None
    reg_id: int | None = None

    def remaining(self, now: float) -> int:
        """Whole seconds left (rounded up), 0 once expired."""
        return max(0, math.ceil(self.expires_at - now))

    @property
    def request_uri(self) -> str:
        """The contact without its ``?headers`` part: headers are not allowed in a
        Request-URI (RFC 3261 §19.1.1; RFC 4475 regescrt/escruri)."""
        return self.contact.split("?", 1)[0]

    def contact_value(self, now: float) -> str:
        """The Contact header value listed in the 200 OK (§10.3 step 8)."""
        text = f"<{self.contact}>;expires={self.remaining(now)}"
        if self.q is not None:
            text += f";q={self.q:g}"
        if self.instance is not None:
            text += f";+sip.instance={self.instance}"
        if self.reg_id is not None:
            text += f";reg-id={self.reg_id}"
        return text


@dataclass(frozen=True, slots=True)
class Challenge:
    """Answer 401 with one WWW-Authenticate per value (SHA-256 first, RFC 8760)."""

    www_authenticate: tuple[str, ...]
    stale: bool = False
    status: int = 401
    reason: str = "Unauthorized"


@dataclass(frozen=True, slots=True)
class Rejected:
    """Answer ``status`` with ``reason``; ``min_expires`` goes in Min-Expires (423)."""

    status: int
    reason: str
    min_expires: int | None = None


@dataclass(frozen=True, slots=True)
class Bindings:
    """Answer 200 OK listing every current binding of the AOR (§10.3 step 8)."""

    username: str
    bindings: tuple[Binding, ...]
    now: float
    status: int = 200
    reason: str = "OK"

    @property
    def contact_values(self) -> list[str]:
        return [b.contact_value(self.now) for b in self.bindings]


RegisterResult = Challenge | Rejected | Bindings


@dataclass(slots=True)
class _Change:
    key: str
    binding: Binding | None  # None: remove


@dataclass(slots=True)
class _Aor:
    bindings: dict[str, Binding] = field(default_factory=dict)


def contact_key(uri: str) -> str:
    """Comparison key of a contact URI: scheme and host part lower-cased, the rest as is
    (user part and parameters are case-sensitive or order-sensitive here; §19.1.4 is not
    fully applied, a known simplification)."""
    text = uri.strip()
    scheme, sep, rest = text.partition(":")
    if not sep:
        return text
    # '@' cannot appear unescaped in URI parameters, but a user part may hold ';' (RFC 4475
    # semiuri), so the last '@' before any '?headers' ends the userinfo
    at_pos = rest.split("?", 1)[0].rfind("@")
    if at_pos >= 0:
        user, at, hostpart = rest[:at_pos], "@", rest[at_pos + 1 :]
    else:
        user, at, hostpart = "", "", rest
    cut = len(hostpart)
    for ch in ";?":
        i = hostpart.find(ch)
        if i != -1:
            cut = min(cut, i)
    return f"{scheme.lower()}:{user}{at}{hostpart[:cut].lower()}{hostpart[cut:]}"


def _delta_seconds(value: int | str | None) -> int | None:
    """delta-seconds, saturated at 2**32-1; None if absent; -1 if malformed."""
    if value is None:
        return None
    if isinstance(value, int):
        return min(value, MAX_DELTA_SECONDS) if value >= 0 else -1
    text = value.strip()
    if not _DIGITS.fullmatch(text):
        return -1
    return min(int(text), MAX_DELTA_SECONDS)


def _qvalue(value: float | str | None) -> float | None:
    """q (RFC 3261 §20.10): 0..1 with at most three decimals; raises ValueError otherwise."""
    if value is None:
        return None
    if isinstance(value, str):
        if not _QVALUE.fullmatch(value.strip()):
            raise ValueError(f"invalid q {value!r}")
        return float(value)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"invalid q {value!r}")
    return float(value)


class Registrar:
    """In-memory location service with RFC 3261 §10.3 REGISTER processing."""

    def __init__(
        self,
        users: Sequence[UserConfig],
        realm: str,
        digest: DigestServer,
        *,
        min_expires: int = 60,
        max_expires: int = 3600,
        default_expires: int = 3600,
        max_contacts: int = 10,
        contact_key: Callable[[str], str] = contact_key,
    ) -> None:
        if not 0 < min_expires <= default_expires <= max_expires:
            raise ValueError("need 0 < min_expires <= default_expires <= max_expires")
        if digest.realm != realm:
            raise ValueError(f"digest realm {digest.realm!r} differs from {realm!r}")
        self.realm = realm
        self.digest = digest
        self.min_expires = min_expires
        self.max_expires = max_expires
        self.default_expires = default_expires
        self.max_contacts = max_contacts
        # a canonical form per RFC 3261 §19.1.4 from the URI layer can be plugged in here
        self._contact_key = contact_key
        self._users: dict[str, UserConfig] = {u.username: u for u in users}
        self._by_number: dict[str, UserConfig] = {}
        for u in users:
            self._by_number[u.number] = u
            self._by_number[u.number.lstrip("+")] = u
        self._aors: dict[str, _Aor] = {}

    @classmethod
    def from_config(
        cls,
        users: Sequence[UserConfig],
        sip: SipConfig,
        *,
        key: bytes | None = None,
        nonce_lifetime_s: float = 300.0,
        algorithms: Sequence[Algorithm] = (Algorithm.SHA_256, Algorithm.MD5),
    ) -> Registrar:
        """A registrar for ``[[users]]`` in realm ``sip.realm`` (default: ``sip.advertise``).

        Give every node of a cluster the same ``key`` so any node verifies any nonce.
        ``algorithms`` are offered in order (RFC 8760 §2.4). Interop note, verified: SIPp
        3.6.1 and baresip 1.0.0 give up when the first challenge is SHA-256 instead of
        skipping it, so deployments with such UAs need ``algorithms=(Algorithm.MD5,)``.
        """
        realm = sip.realm or sip.advertise
        digest = DigestServer(
            realm, key=key, nonce_lifetime_s=nonce_lifetime_s, algorithms=algorithms
        )
        return cls(users, realm, digest)

    # -- lookups ------------------------------------------------------------------------

    def user_for(self, aor_user: str) -> UserConfig | None:
        """The user a To user part names: its username, or its number with or without '+'
        (percent-escapes such as ``%2B`` are decoded)."""
        name = urllib.parse.unquote(aor_user.strip())
        return self._users.get(name) or self._by_number.get(name)

    def contacts_for_user(self, username: str, now: float) -> list[Binding]:
        """Live bindings of a user: highest q first (absent q counts as 1.0), then the most
        recently refreshed first."""
        aor = self._aors.get(username)
        if aor is None:
            return []
        live = [b for b in aor.bindings.values() if b.expires_at > now]
        live.sort(key=lambda b: (-(b.q if b.q is not None else 1.0), -b.updated_at))
        return live

    def contacts_for_number(self, number: str, now: float) -> list[Binding]:
        """The registered softphones of a ``[[users]]`` number (empty if none or unknown)."""
        user = self._by_number.get(number.strip())
        return [] if user is None else self.contacts_for_user(user.username, now)

    def expire(self, now: float) -> list[Binding]:
        """Remove and return every binding that has expired (periodic sweep)."""
        gone: list[Binding] = []
        for username in list(self._aors):
            aor = self._aors[username]
            for key, b in list(aor.bindings.items()):
                if b.expires_at <= now:
                    del aor.bindings[key]
                    gone.append(b)
            if not aor.bindings:
                del self._aors[username]
        for b in gone:
            log.info("registrar.expired", user=b.username, contact=b.contact, call_id=b.call_id)
        return gone

    def __len__(self) -> int:
        """Number of stored bindings (including expired ones not yet swept)."""
        return sum(len(a.bindings) for a in self._aors.values())

    def live_count(self, now: float) -> int:
        """Bindings not expired at ``now`` (voicecall_registered_endpoints, read at scrape
        time: the sweep runs only every 10 s)."""
        return sum(1 for a in self._aors.values() for b in a.bindings.values()
                   if b.expires_at > now)

    # -- REGISTER -------------------------------------------------------------------------

    def register(self, req: RegisterRequest, now: float) -> RegisterResult:
        """Process one REGISTER (RFC 3261 §10.3 steps 3-8) at time ``now``."""
        blog = log.bind(call_id=req.call_id, aor=req.aor_user, source=str(req.source))
        result = self._register(req, now)
        if isinstance(result, Bindings):
            blog.info("registrar.ok", user=result.username, bindings=len(result.bindings))
        elif isinstance(result, Challenge):
            blog.info("registrar.challenge", stale=result.stale)
        else:
            blog.info("registrar.rejected", status=result.status, reason=result.reason)
        return result

    def _register(self, req: RegisterRequest, now: float) -> RegisterResult:
        if not req.call_id.strip() or not 0 <= req.cseq < 2**31:
            return Rejected(400, "Bad Call-ID or CSeq")

        # Step 3: authenticate (RFC 3261 §22).
        auth = self.digest.check(
            req.authorization,
            method=req.method,
            now=now,
            password_for=self._password_for,
            body=req.body,
        )
        if auth.wants_challenge:
            return Challenge(
                tuple(self.digest.challenge_headers(now, stale=auth.stale)), stale=auth.stale
            )
        if auth.verdict is Verdict.MALFORMED:
            return Rejected(400, "Malformed Authorization")
        if not auth.ok or auth.username is None:
            return Rejected(403, "Forbidden")
        authed = self.user_for_auth(auth.username)
        if authed is None:  # cannot happen: password_for found it; refuse rather than crash
            return Rejected(403, "Forbidden")

        # Steps 4-5: the AOR must exist and belong to the authenticated user.
        owner = self.user_for(req.aor_user)
        if owner is None:
            return Rejected(404, "Not Found")
        if owner.username != authed.username:
            return Rejected(403, "Forbidden")

        # Step 6: contacts, wildcard, expiry.
        header_expires = _delta_seconds(req.expires)
        if header_expires == -1:
            # §20.19: a malformed Expires value is treated as 3600 (our default)
            header_expires = None
        wild = [c for c in req.contacts if c.is_wildcard]
        aor = self._aors.get(owner.username) or _Aor()
        if wild:
            if len(req.contacts) != 1 or header_expires != 0:
                return Rejected(400, "Invalid Wildcard Contact")
            if _delta_seconds(wild[0].expires) not in (None, 0):
                return Rejected(400, "Invalid Wildcard Contact")
            # Step 7 for '*': same Call-ID with a CSeq not higher aborts (§10.3 step 6).
            if any(
                b.call_id == req.call_id and req.cseq <= b.cseq for b in aor.bindings.values()
            ):
                return Rejected(500, "Out Of Order")
            removed = list(aor.bindings.values())
            self._aors.pop(owner.username, None)
            for b in removed:
                log.info("registrar.removed", user=b.username, contact=b.contact, wildcard=True)
            return Bindings(owner.username, (), now)

        changes: list[_Change] = []
        seen: set[str] = set()
        for c in req.contacts:
            expires = _delta_seconds(c.expires)
            if expires == -1:
                expires = None  # malformed param: fall back like a malformed Expires header
            if expires is None:
                expires = header_expires if header_expires is not None else self.default_expires
            if 0 < expires < self.min_expires:
                return Rejected(423, "Interval Too Brief", min_expires=self.min_expires)
            expires = min(expires, self.max_expires)
            try:
                q = _qvalue(c.q)
            except ValueError:
                return Rejected(400, "Invalid q Value")
            uri = c.uri.strip()
            if not uri or any(ch in uri for ch in " \t\r\n<>"):
                return Rejected(400, "Invalid Contact")
            key = self._binding_key(uri, c.instance, c.reg_id)
            if key is None:
                return Rejected(400, "Invalid Contact")
            if key in seen:
                continue  # a contact listed twice in one request: first one wins
            seen.add(key)
            # Step 7: ordering against an existing binding.
            old = aor.bindings.get(key)
            if old is not None and old.call_id == req.call_id and req.cseq <= old.cseq:
                return Rejected(500, "Out Of Order")
            if expires == 0:
                changes.append(_Change(key, None))
                continue
            changes.append(
                _Change(
                    key,
                    Binding(
                        username=owner.username,
                        number=owner.number,
                        contact=uri,
                        source=req.source,
                        expires_at=now + expires,
                        updated_at=now,
                        call_id=req.call_id,
                        cseq=req.cseq,
                        q=q,
                        instance=c.instance,
                        reg_id=c.reg_id,
                    ),
                )
            )

        # Apply atomically: every check above passed.
        for ch in changes:
            if ch.binding is None:
                gone = aor.bindings.pop(ch.key, None)
                if gone is not None:
                    log.info("registrar.removed", user=gone.username, contact=gone.contact)
            else:
                aor.bindings[ch.key] = ch.binding
        self._evict(aor, now)
        if aor.bindings:
            self._aors[owner.username] = aor
        else:
            self._aors.pop(owner.username, None)
        return Bindings(owner.username, tuple(self.contacts_for_user(owner.username, now)), now)

    # -- helpers --------------------------------------------------------------------------

    def user_for_auth(self, username: str) -> UserConfig | None:
        """The user a digest username names (the username; its number is accepted too)."""
        return self._users.get(username) or self._by_number.get(username)

    def _password_for(self, username: str) -> str | None:
        user = self.user_for_auth(username)
        return None if user is None else user.password

    def _binding_key(self, uri: str, instance: str | None, reg_id: int | None) -> str | None:
        if instance is not None and reg_id is not None:
            # RFC 5626 §6: the flow (instance, reg-id) identifies the binding
            return f"flow:{instance}:{reg_id}"
        try:
            return "uri:" + self._contact_key(uri)
        except ValueError:  # a pluggable canonicaliser may refuse a URI it cannot parse
            return None

    def _evict(self, aor: _Aor, now: float) -> None:
        live = {k: b for k, b in aor.bindings.items() if b.expires_at > now}
        while len(live) > self.max_contacts:
            oldest = min(live, key=lambda k: live[k].updated_at)
            log.info("registrar.evicted", user=live[oldest].username, contact=live[oldest].contact)
            del live[oldest]
        aor.bindings = live
