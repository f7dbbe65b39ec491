"""X-AKSK / X-WSSE verification, fed header values and clock values (no HTTP).

Expected digests are computed here independently from the spec formulas (§1.1, §1.2)."""

from __future__ import annotations

import base64
import calendar
import hashlib
import hmac
import time

import pytest

from control_api.auth import (
    Authenticator,
    AuthSettings,
    extract_token,
    parse_created,
)
from control_api.codes import ApiError

SECRET = "s3cr3t-app-secret"
KEY = "app-key-0001"
NOW = float(calendar.timegm((2026, 3, 1, 12, 0, 0, 0, 0, 0)))


def created_at(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def aksk_header(nonce: str, created: str, secret: str = SECRET, key: str = KEY,
                spaced: bool = True) -> dict[str, str]:
    d = base64.b64encode(hmac.new(secret.encode(), (nonce + created).encode(),
                                  hashlib.sha256).digest()).decode()
    sep = ", " if spaced else ","
    return {"X-AKSK": sep.join([f'UsernameToken Username="{key}"', f'PasswordDigest="{d}"',
                                f'Nonce="{nonce}"', f'Created="{created}"'])}


def wsse_header(nonce: str, created: str, hex_form: bool) -> dict[str, str]:
    h = hashlib.sha256((nonce + created + SECRET).encode())
    raw = h.hexdigest().encode() if hex_form else h.digest()
    d = base64.b64encode(raw).decode()
    return {"X-WSSE": f'UsernameToken Username="{KEY}",PasswordDigest="{d}",'
                      f'Nonce="{nonce}",Created="{created}"'}


def run(auth: Authenticator, headers: dict[str, str], now: float = NOW, ip: str = "10.0.0.1",
        secret: str | None = SECRET) -> None:
    auth.check_not_blocked(ip, now)
    tok = auth.token(headers, ip, now)
    auth.verify(tok, secret, ip, now)


def code_of(fn: object, *args: object, **kw: object) -> str:
    with pytest.raises(ApiError) as e:
        fn(*args, **kw)  # type: ignore[operator]
    return e.value.code.value


def test_aksk_accepted_with_and_without_spaces_any_order() -> None:
    auth = Authenticator(AuthSettings())
    run(auth, aksk_header("n1", created_at(NOW)))
    run(auth, aksk_header("n2", created_at(NOW), spaced=False))
    hdr = aksk_header("n3", created_at(NOW))["X-AKSK"]
    parts = hdr.removeprefix("UsernameToken ").split(", ")
    run(auth, {"x-aksk": "UsernameToken " + ", ".join(reversed(parts))})


@pytest.mark.parametrize("hex_form", [True, False])
def test_wsse_both_digest_encodings(hex_form: bool) -> None:
    run(Authenticator(AuthSettings()), wsse_header("abc123", created_at(NOW), hex_form))


def test_wrong_secret_is_1010003() -> None:
    auth = Authenticator(AuthSettings())
    assert code_of(run, auth, aksk_header("n", created_at(NOW), secret="other")) == "1010003"


def test_unknown_app_is_1010003() -> None:
    auth = Authenticator(AuthSettings())
    assert code_of(run, auth, aksk_header("n", created_at(NOW)), secret=None) == "1010003"


@pytest.mark.parametrize(("drop", "code"), [
    ("Username", "1023034"), ("Nonce", "1023035"), ("Created", "1023036"),
    ("PasswordDigest", "1023037")])
def test_missing_pieces(drop: str, code: str) -> None:
    hdr = aksk_header("n", created_at(NOW))["X-AKSK"]
    kept = [p for p in hdr.removeprefix("UsernameToken ").split(", ")
            if not p.startswith(drop + "=")]
    assert code_of(extract_token, {"X-AKSK": "UsernameToken " + ", ".join(kept)}) == code


def test_missing_header_is_1023033() -> None:
    assert code_of(extract_token, {"Authorization": "AKSK realm=\"SDP\""}) == "1023033"


def test_skew_window_utc_and_beijing() -> None:
    auth = Authenticator(AuthSettings(max_skew_s=300))
    run(auth, aksk_header("a", created_at(NOW - 299)))
    run(auth, aksk_header("b", created_at(NOW + 299)))
    run(auth, aksk_header("c", created_at(NOW + 8 * 3600 + 100)))   # Beijing time with "Z"
    assert code_of(run, auth, aksk_header("d", created_at(NOW - 301))) == "1010013"
    assert code_of(run, auth, aksk_header("e", created_at(NOW + 4 * 3600))) == "1010013"
    strict = Authenticator(AuthSettings(accept_beijing_time=False))
    assert code_of(run, strict, aksk_header("f", created_at(NOW + 8 * 3600))) == "1010013"


def test_bad_created_format_is_1010013() -> None:
    auth = Authenticator(AuthSettings())
    assert code_of(run, auth, aksk_header("a", "2026/03/01 12:00:00")) == "1010013"
    assert code_of(parse_created, "2026-13-01T12:00:00Z") == "1010013"


def test_nonce_replay_rejected_and_forgotten_after_window() -> None:
    auth = Authenticator(AuthSettings(max_skew_s=300))
    h = aksk_header("same", created_at(NOW))
    run(auth, h)
    assert code_of(run, auth, h, now=NOW + 10) == "1010013"
    # the same nonce with a fresh Created after the window is fine again
    run(auth, aksk_header("same", created_at(NOW + 700)), now=NOW + 700)


def test_replay_of_bad_digest_does_not_burn_the_nonce() -> None:
    auth = Authenticator(AuthSettings())
    code_of(run, auth, aksk_header("n9", created_at(NOW), secret="wrong"))
    run(auth, aksk_header("n9", created_at(NOW)))


def test_ip_throttle_blocks_then_expires() -> None:
    s = AuthSettings(fail_limit=3, fail_window_s=60, block_s=120)
    auth = Authenticator(s)
    bad = aksk_header("x", created_at(NOW), secret="wrong")
    for i in range(3):
        assert code_of(run, auth, bad, now=NOW + i) == "1010003"
    good = aksk_header("ok", created_at(NOW))
    assert code_of(run, auth, good, now=NOW + 5) == "1020176"
    run(auth, good, ip="10.0.0.2", now=NOW + 5)        # other IPs unaffected
    run(auth, aksk_header("ok2", created_at(NOW + 130)), now=NOW + 130)


def test_failures_outside_window_do_not_accumulate() -> None:
    auth = Authenticator(AuthSettings(fail_limit=3, fail_window_s=10, block_s=100))
    bad = aksk_header("x", created_at(NOW), secret="wrong")
    for i in range(6):
        code_of(run, auth, bad, now=NOW + i * 20)
    run(auth, aksk_header("fine", created_at(NOW + 120)), now=NOW + 120)
