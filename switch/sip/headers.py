"""Header fields of a SIP message (RFC 3261 §7.3): an immutable ordered multi-map.

Names are canonicalised once, when a field enters a :class:`Headers`: compact forms
(RFC 3261 §7.3.3 and later RFCs, e.g. ``i`` → ``Call-ID``, ``v`` → ``Via``, ``o`` →
``Event``) become the long form and well-known names get their conventional spelling
(``call-id`` → ``Call-ID``, ``cseq`` → ``CSeq``). Unknown names keep the spelling they
arrived with. Lookup is case-insensitive. Values are stored raw (folding already
replaced by a single SP, leading/trailing LWS removed): typed views live on the message.

For list-valued fields (:data:`LIST_HEADERS`) ``get_all`` splits comma-separated values
(respecting quoted strings and ``< >``), so ``Via: a, b`` and two ``Via`` lines read the same.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from switch.sip.uri import is_token, split_list

__all__ = ["COMPACT_FORMS", "LIST_HEADERS", "Headers", "canonical_name"]

# RFC 3261 §7.3.3 and the IANA "Header Fields" registry's compact forms.
COMPACT_FORMS: dict[str, str] = {
    "a": "Accept-Contact",
    "b": "Referred-By",
    "c": "Content-Type",
    "d": "Request-Disposition",
    "e": "Content-Encoding",
    "f": "From",
    "i": "Call-ID",
    "j": "Reject-Contact",
    "k": "Supported",
    "l": "Content-Length",
    "m": "Contact",
    "n": "Identity-Info",
    "o": "Event",
    "r": "Refer-To",
    "s": "Subject",
    "t": "To",
    "u": "Allow-Events",
    "v": "Via",
    "x": "Session-Expires",
    "y": "Identity",
}

_WELL_KNOWN = [
    "Accept",
    "Accept-Contact",
    "Accept-Encoding",
    "Accept-Language",
    "Alert-Info",
    "Allow",
    "Allow-Events",
    "Authentication-Info",
    "Authorization",
    "Call-ID",
    "Call-Info",
    "Contact",
    "Content-Disposition",
    "Content-Encoding",
    "Content-Language",
    "Content-Length",
    "Content-Type",
    "CSeq",
    "Date",
    "Error-Info",
    "Event",
    "Expires",
    "From",
    "History-Info",
    "Identity",
    "Identity-Info",
    "In-Reply-To",
    "Max-Forwards",
    "MIME-Version",
    "Min-Expires",
    "Min-SE",
    "Organization",
    "P-Asserted-Identity",
    "P-Preferred-Identity",
    "P-Charging-Vector",
    "P-Access-Network-Info",
    "P-Called-Party-ID",
    "Path",
    "Priority",
    "Privacy",
    "Proxy-Authenticate",
    "Proxy-Authorization",
    "Proxy-Require",
    "RAck",
    "Reason",
    "Record-Route",
    "Refer-To",
    "Referred-By",
    "Reject-Contact",
    "Replaces",
    "Reply-To",
    "Request-Disposition",
    "Require",
    "Retry-After",
    "Route",
    "RSeq",
    "Security-Client",
    "Security-Server",
    "Security-Verify",
    "Server",
    "Service-Route",
    "Session-Expires",
    "SIP-ETag",
    "SIP-If-Match",
    "Subject",
    "Subscription-State",
    "Supported",
    "Timestamp",
    "To",
    "Unsupported",
    "User-Agent",
    "Via",
    "Warning",
    "WWW-Authenticate",
    "Diversion",
    "Remote-Party-ID",
    "X-Call-ID",
]

_CANONICAL: dict[str, str] = {n.lower(): n for n in _WELL_KNOWN}
_CANONICAL.update(COMPACT_FORMS)
# lower-case name → (canonical name, lookup key): one dict hit per parsed header line
_CANON_KEYS: dict[str, tuple[str, str]] = {k: (v, v.lower()) for k, v in _CANONICAL.items()}

# Header fields whose grammar is a comma-separated list (RFC 3261 §7.3.1); Contact "*"
# and the name-addr forms are split respecting quotes and <>.
LIST_HEADERS = frozenset(
    n.lower()
    for n in [
        "Accept",
        "Accept-Contact",
        "Accept-Encoding",
        "Accept-Language",
        "Alert-Info",
        "Allow",
        "Allow-Events",
        "Call-Info",
        "Contact",
        "Content-Encoding",
        "Content-Language",
        "Error-Info",
        "History-Info",
        "In-Reply-To",
        "P-Asserted-Identity",
        "P-Preferred-Identity",
        "Path",
        "Proxy-Require",
        "Reason",
        "Record-Route",
        "Reject-Contact",
        "Request-Disposition",
        "Require",
        "Route",
        "Security-Client",
        "Security-Server",
        "Security-Verify",
        "Service-Route",
        "Supported",
        "Unsupported",
        "Via",
        "Warning",
        "Diversion",
    ]
)


def canonical_name(name: str) -> str:
    """Long, conventionally spelled form of ``name`` (unknown names are returned as is).
    Raises ``ValueError`` for a name that is not a ``token`` (it could not be sent)."""
    c = _CANONICAL.get(name.lower())
    if c is not None:
        return c
    if not is_token(name):
        raise ValueError(f"invalid SIP header name {name!r}")
    return name


# Lookup key of every known name as code spells it (canonical or compact), so the
# common case needs no str.lower(): _key runs for every header read.
_FAST_KEYS: dict[str, str] = {
    **{v: v.lower() for v in _CANONICAL.values()},
    **{k: v[1] for k, v in _CANON_KEYS.items()},
}


def _key(name: str) -> str:
    k = _FAST_KEYS.get(name)
    if k is not None:
        return k
    low = name.lower()
    ck = _CANON_KEYS.get(low)
    return low if ck is None else ck[1]


class Headers:
    """Immutable ordered multi-map of ``(canonical_name, raw_value)``.

    Mutators return a new object. Equality is order-sensitive (field order matters for
    Via/Route) and compares names case-insensitively.
    """

    __slots__ = ("_hash", "_items", "_keys")

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        pairs = tuple((canonical_name(n), v) for n, v in items)
        self._items: tuple[tuple[str, str], ...] = pairs
        self._keys: tuple[str, ...] = tuple(n.lower() for n, _ in pairs)
        self._hash: int | None = None

    @classmethod
    def _trusted(cls, items: tuple[tuple[str, str], ...], keys: tuple[str, ...]) -> Headers:
        # Fast path for the parser: names are already canonical, keys lower-cased.
        h = cls.__new__(cls)
        h._items = items
        h._keys = keys
        h._hash = None
        return h

    # -- reading -----------------------------------------------------------------------
    def get(self, name: str, default: str | None = None) -> str | None:
        """Raw value of the first field called ``name`` (compact forms accepted)."""
        try:
            return self._items[self._keys.index(_key(name))][1]
        except ValueError:
            return default

    def get_all(self, name: str) -> list[str]:
        """Every value of ``name``; list-valued fields are split on commas."""
        key = _key(name)
        values = [self._items[i][1] for i in range(len(self._keys)) if self._keys[i] == key]
        if key in LIST_HEADERS:
            out: list[str] = []
            for v in values:
                out.extend(split_list(v))
            return out
        return values

    def get_raw(self, name: str) -> list[str]:
        """Every field line's value for ``name`` without comma splitting."""
        key = _key(name)
        return [self._items[i][1] for i in range(len(self._keys)) if self._keys[i] == key]

    def count(self, name: str) -> int:
        """Number of field lines called ``name`` (not comma-split)."""
        key = _key(name)
        return self._keys.count(key)

    def items(self) -> tuple[tuple[str, str], ...]:
        return self._items

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and _key(name) in self._keys

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Headers):
            return NotImplemented
        return self._keys == other._keys and all(
            a[1] == b[1] for a, b in zip(self._items, other._items, strict=True)
        )

    def __hash__(self) -> int:
        if self._hash is None:
            self._hash = hash((self._keys, tuple(v for _, v in self._items)))
        return self._hash

    def __repr__(self) -> str:
        return f"Headers({list(self._items)!r})"

    # -- changing (returns new Headers) ------------------------------------------------
    def add(self, name: str, value: str) -> Headers:
        """Append a field after all others."""
        n = canonical_name(name)
        return Headers._trusted((*self._items, (n, value)), (*self._keys, n.lower()))

    def prepend(self, name: str, value: str) -> Headers:
        """Insert a field before all others (a proxy's new top Via goes first overall, and
        in any case before the existing fields of the same name)."""
        n = canonical_name(name)
        return Headers._trusted(((n, value), *self._items), (n.lower(), *self._keys))

    def set(self, name: str, value: str) -> Headers:
        """Replace every field called ``name`` by one field, at the first one's position
        (appended when absent)."""
        n = canonical_name(name)
        key = n.lower()
        if key not in self._keys:
            return self.add(n, value)
        items: list[tuple[str, str]] = []
        done = False
        for k, item in zip(self._keys, self._items, strict=True):
            if k == key:
                if not done:
                    items.append((n, value))
                    done = True
            else:
                items.append(item)
        return Headers._trusted(tuple(items), tuple(i[0].lower() for i in items))

    def remove(self, name: str) -> Headers:
        """Drop every field called ``name``."""
        key = _key(name)
        if key not in self._keys:
            return self
        pairs = [(k, it) for k, it in zip(self._keys, self._items, strict=True) if k != key]
        return Headers._trusted(tuple(p[1] for p in pairs), tuple(p[0] for p in pairs))

    def remove_first(self, name: str) -> Headers:
        """Drop the first field line called ``name`` (a whole line, even if it carries
        several comma-separated values)."""
        key = _key(name)
        if key not in self._keys:
            return self
        i = self._keys.index(key)
        return Headers._trusted(self._items[:i] + self._items[i + 1 :], self._keys[:i] + self._keys[i + 1 :])

    def extend(self, items: Iterable[tuple[str, str]]) -> Headers:
        extra = Headers(items)
        return Headers._trusted(self._items + extra._items, self._keys + extra._keys)
