"""Digest authentication (RFC 2617, RFC 7616, RFC 8760): grammar, vectors, server, client."""

from __future__ import annotations

import hashlib
import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from switch.sip.digest import (
    Algorithm,
    AuthResult,
    DigestChallenge,
    DigestClient,
    DigestCredentials,
    DigestParseError,
    DigestServer,
    OtherScheme,
    Verdict,
    answer_challenge,
    compute_response,
    parse_auth_header,
    parse_challenges,
    parse_credentials,
)

REALM = "voicecall.test"
KEY = b"k" * 32
T0 = 1_700_000_000.0


def _server(**kw: object) -> DigestServer:
    return DigestServer(REALM, key=KEY, **kw)  # type: ignore[arg-type]


def _check(server: DigestServer, value: str, now: float, method: str = "REGISTER",
           password: str = "secret", body: bytes = b"") -> AuthResult:
    return server.check([value], method=method, now=now,
                        password_for={"alice": password}.get, body=body)


# --- an independent implementation, hashlib by hand (RFC 2617 §3.2.2.1, RFC 7616 §3.4.1) ----

def _by_hand(alg: str, user: str, realm: str, pw: str, method: str, uri: str, nonce: str,
             qop: str | None, cnonce: str, nc: str, body: bytes = b"") -> str:
    def h(s: bytes) -> str:
        if alg.upper().startswith("SHA-256"):
            return hashlib.sha256(s).hexdigest()
        return hashlib.md5(s).hexdigest()

    a1 = h(b"%s:%s:%s" % (user.encode(), realm.encode(), pw.encode()))
    if alg.lower().endswith("-sess"):
        a1 = h(b"%s:%s:%s" % (a1.encode(), nonce.encode(), cnonce.encode()))
    if qop == "auth-int":
        a2 = h(b"%s:%s:%s" % (method.encode(), uri.encode(), h(body).encode()))
    else:
        a2 = h(b"%s:%s" % (method.encode(), uri.encode()))
    if qop is None:
        return h(b"%s:%s:%s" % (a1.encode(), nonce.encode(), a2.encode()))
    return h(":".join([a1, nonce, nc, cnonce, qop, a2]).encode())


# --- published vectors ------------------------------------------------------------------

RFC2617_AUTHORIZATION = (
    'Digest username="Mufasa",\r\n'
    '        realm="testrealm@host.com",\r\n'
    '        nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093",\r\n'
    '        uri="/dir/index.html",\r\n'
    "        qop=auth,\r\n"
    "        nc=00000001,\r\n"
    '        cnonce="0a4f113b",\r\n'
    '        response="6629fae49393a05397450978507c4ef1",\r\n'
    '        opaque="5ccc069c403ebaf9f0171e9517f40e41"'
)


def test_rfc2617_section_3_5_example() -> None:
    """The Mufasa example (the response matches the password "Circle Of Life", errata 1649)."""
    cred = parse_credentials(RFC2617_AUTHORIZATION)
    assert isinstance(cred, DigestCredentials)
    assert (cred.username, cred.realm, cred.uri, cred.qop, cred.nc, cred.cnonce) == (
        "Mufasa", "testrealm@host.com", "/dir/index.html", "auth", 1, "0a4f113b")
    assert cred.algorithm is Algorithm.MD5  # absent means MD5
    assert cred.opaque == "5ccc069c403ebaf9f0171e9517f40e41"
    got = compute_response(algorithm=cred.algorithm, username="Mufasa", realm=cred.realm,
                           password="Circle Of Life", method="GET", uri=cred.uri,
                           nonce=cred.nonce, qop=cred.qop, cnonce=cred.cnonce, nc=cred.nc)
    assert got == cred.response == "6629fae49393a05397450978507c4ef1"


RFC7616_CHALLENGES = [
    'Digest\r\n realm="http-auth@example.org",\r\n qop="auth, auth-int",\r\n'
    ' algorithm=SHA-256,\r\n nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",\r\n'
    ' opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"',
    'Digest\r\n realm="http-auth@example.org",\r\n qop="auth, auth-int",\r\n'
    ' algorithm=MD5,\r\n nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",\r\n'
    ' opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"',
]
RFC7616_CNONCE = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"


@pytest.mark.parametrize(
    ("allowed", "response"),
    [
        ((Algorithm.SHA_256, Algorithm.MD5),
         "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
        ((Algorithm.MD5,), "8ca523f5e9506fed4657c9700eebdbec"),
    ],
)
def test_rfc7616_section_3_9_1_example(allowed: tuple[Algorithm, ...], response: str) -> None:
    """Given both challenges of RFC 7616 §3.9.1, a client picks SHA-256 when it can
    (RFC 8760 §2.4) and produces the published response; an MD5-only client the MD5 one."""
    client = DigestClient("Mufasa", "Circle of Life", cnonce_factory=lambda: RFC7616_CNONCE,
                          algorithms=allowed)
    value = client.respond(RFC7616_CHALLENGES, "GET", "/dir/index.html")
    assert value is not None
    cred = parse_credentials(value)
    assert isinstance(cred, DigestCredentials)
    assert cred.response == response
    assert cred.algorithm is allowed[0]
    assert (cred.qop, cred.nc, cred.cnonce) == ("auth", 1, RFC7616_CNONCE)
    assert cred.opaque == "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"


@pytest.mark.parametrize(
    ("alg", "qop"),
    list(itertools.product(["MD5", "MD5-sess", "SHA-256", "SHA-256-sess"],
                           ["auth", "auth-int", None])),
)
def test_interop_with_hand_written_digest(alg: str, qop: str | None) -> None:
    algorithm = Algorithm.parse(alg)
    assert algorithm is not None
    body = b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\n"
    ours = compute_response(algorithm=algorithm, username="bob", realm="biloxi.com",
                            password="zanzibar", method="INVITE", uri="sip:bob@biloxi.com",
                            nonce="abc123", qop=qop, cnonce="0a4f113b",
                            nc=1 if qop else None, body=body)
    theirs = _by_hand(alg, "bob", "biloxi.com", "zanzibar", "INVITE", "sip:bob@biloxi.com",
                      "abc123", qop, "0a4f113b", "00000001", body)
    assert ours == theirs


def test_server_accepts_credentials_made_by_hand() -> None:
    """A UAC we did not write (the by-hand implementation) is accepted."""
    server = _server()
    ch = parse_challenges(server.challenge_headers(T0))[0]
    resp = _by_hand("SHA-256", "alice", REALM, "secret", "REGISTER", "sip:voicecall.test",
                    ch.nonce, "auth", "xyz", "00000001")
    value = (f'Digest username="alice", realm="{REALM}", nonce="{ch.nonce}", '
             f'uri="sip:voicecall.test", response="{resp}", algorithm=SHA-256, '
             f'cnonce="xyz", qop=auth, nc=00000001')
    assert _check(server, value, T0 + 1).verdict is Verdict.OK


# --- grammar ---------------------------------------------------------------------------

def test_grammar_any_order_lws_escapes_and_case() -> None:
    value = ('digest  NONCE = "n\\"1" ,REALM="a\\\\b",\r\n\tqop="auth",ALGORITHM="sha-256",'
             "stale=TRUE")
    (ch,) = parse_challenges(value)
    assert ch == DigestChallenge(realm="a\\b", nonce='n"1', algorithm=Algorithm.SHA_256,
                                 qop=("auth",), stale=True)


def test_several_challenges_in_one_value_and_other_schemes() -> None:
    value = ('Basic realm="x", Digest realm="r", nonce="1", algorithm=MD5, '
             'Digest realm="r", nonce="1", algorithm=SHA-256, qop="auth", '
             'Newauth token68value==, Digest realm="r", nonce="2", algorithm=SHA-512-256')
    items = parse_auth_header(value)
    assert [i.scheme for i in items] == ["Basic", "Digest", "Digest", "Newauth", "Digest"]
    assert items[3].token68 == "token68value=="
    # the SHA-512-256 one is skipped: unknown to us (RFC 7616 §3.7)
    assert [c.algorithm for c in parse_challenges(value)] == [Algorithm.MD5, Algorithm.SHA_256]


def test_challenge_round_trips_through_its_header_value() -> None:
    ch = DigestChallenge(realm='we"ird\\', nonce="n", algorithm=Algorithm.SHA_256_SESS,
                         qop=("auth", "auth-int"), opaque="o", stale=True, domain="sip:a")
    assert parse_challenges(ch.to_header_value()) == [ch]


def test_unknown_scheme_rfc4475_regaut01() -> None:
    assert parse_credentials("NoOneKnowsThisScheme opaque-data=here") == OtherScheme(
        "NoOneKnowsThisScheme")
    result = _server().check(["NoOneKnowsThisScheme opaque-data=here"], method="REGISTER",
                             now=T0, password_for={"alice": "secret"}.get)
    assert result.verdict is Verdict.MISSING and result.wants_challenge


@pytest.mark.parametrize(
    "value",
    [
        "",
        'Digest realm="unterminated',
        'Digest username="a", realm="r", nonce="n", uri="u"',  # no response
        'Digest username="a", realm="r", nonce="n", uri="u", response="x", qop=auth',  # no nc
        'Digest username="a", realm="r", nonce="n", uri="u", response="x", qop=auth, '
        'nc=1, cnonce="c"',  # nc is 8 hex digits
        'Digest username="a", realm="r", nonce="n", uri="u", response="x", qop=auth-conf, '
        'nc=00000001, cnonce="c"',
        'Digest username="a", username="b", realm="r", nonce="n", uri="u", response="x"',
        'Digest username="a", realm="r", nonce="n", uri="u", response="x", algorithm=MD5-sess',
        'Digest username="a", realm="r", nonce="n", uri="u", response="x", algorithm=SHA3',
        'Digest username="a", realm="r", nonce="n", uri="u", response="x", userhash=true',
        'realm="r", Digest nonce="n"',
        'Digest realm=, nonce="n"',
        'Digest realm="r" "stray"',
        "Digest abc==, Digest realm=r",
        'Digest realm="bad\\\r\n"',
    ],
)
def test_malformed_credentials_raise_and_are_a_400(value: str) -> None:
    with pytest.raises(DigestParseError):
        parse_credentials(value)
    assert _check(_server(), value, T0).verdict is Verdict.MALFORMED


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=200))
def test_arbitrary_text_never_crashes(text: str) -> None:
    try:
        parse_auth_header(text)
        parse_credentials(text)
    except DigestParseError:
        pass
    parse_challenges_safe(text)
    result = _check(_server(), text, T0)
    assert result.verdict in (Verdict.MALFORMED, Verdict.MISSING, Verdict.INVALID_NONCE,
                              Verdict.UNKNOWN_USER, Verdict.WRONG_RESPONSE)


def parse_challenges_safe(text: str) -> None:
    try:
        parse_challenges(text)
    except DigestParseError:
        pass


_names = st.sampled_from(["username", "realm", "nonce", "uri", "response", "qop", "nc",
                          "cnonce", "algorithm", "opaque", "x-y"])
_values = st.one_of(
    st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=30)
    .map(lambda s: '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'),
    st.from_regex(r"[A-Za-z0-9\-]{1,12}", fullmatch=True),
)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(_names, _values), max_size=12), st.sampled_from([",", ", ", " ,\r\n "]))
def test_structured_fuzz_never_crashes(params: list[tuple[str, str]], sep: str) -> None:
    value = "Digest " + sep.join(f"{k}={v}" for k, v in params)
    server = _server()
    result = _check(server, value, T0)
    assert isinstance(result.verdict, Verdict)
    assert not result.ok  # nobody guesses a response for a nonce we never issued


# --- server ------------------------------------------------------------------------------

def test_challenges_offer_sha256_first_then_md5_with_one_nonce() -> None:
    values = _server().challenge_headers(T0)
    chs = parse_challenges(values)
    assert [c.algorithm for c in chs] == [Algorithm.SHA_256, Algorithm.MD5]
    assert all(c.realm == REALM and c.qop == ("auth",) and not c.stale for c in chs)
    assert chs[0].nonce == chs[1].nonce
    assert values[0].startswith("Digest realm=")


def test_nonces_are_unique_and_verifiable_by_another_worker_with_the_key() -> None:
    a, b = _server(), _server()
    n1, n2 = a.make_nonce(T0), a.make_nonce(T0)
    assert n1 != n2  # salted: two challenges in the same millisecond differ
    assert b.nonce_age(n1, T0 + 2) == pytest.approx(2.0)
    assert DigestServer(REALM, key=b"other" * 8).nonce_age(n1, T0) is None
    assert DigestServer("other.realm", key=KEY).nonce_age(n1, T0) is None
    assert a.nonce_age("garbage!!", T0) is None
    assert a.nonce_age(n1, T0 - 60) is None  # issued in the future


@pytest.mark.parametrize("alg", list(Algorithm))
@pytest.mark.parametrize("qop", ["auth", "auth-int"])
def test_client_and_server_agree(alg: Algorithm, qop: str) -> None:
    server = _server(algorithms=[alg], qop=[qop])
    client = DigestClient("alice", "secret")
    body = b"hello"
    value = client.respond(server.challenge_headers(T0), "INVITE", "sip:bob@x", body)
    assert value is not None
    assert _check(server, value, T0 + 1, method="INVITE", body=body).ok


def test_tampering_is_rejected() -> None:
    server = _server()
    client = DigestClient("alice", "secret")
    value = client.respond(server.challenge_headers(T0), "REGISTER", "sip:voicecall.test")
    assert value is not None
    cred = parse_credentials(value)
    assert isinstance(cred, DigestCredentials)

    def variant(**changes: object) -> str:
        fields = {f: getattr(cred, f) for f in DigestCredentials.__slots__}
        fields.update(changes)
        return DigestCredentials(**fields).to_header_value()

    flipped = ("0" if cred.response[0] != "0" else "1") + cred.response[1:]
    assert _check(server, variant(response=flipped), T0).verdict is Verdict.WRONG_RESPONSE
    assert _check(server, variant(uri="sip:evil"), T0).verdict is Verdict.WRONG_RESPONSE
    assert _check(server, variant(cnonce="other"), T0).verdict is Verdict.WRONG_RESPONSE
    assert _check(server, value, T0, method="INVITE").verdict is Verdict.WRONG_RESPONSE
    assert _check(server, value, T0, password="guess").verdict is Verdict.WRONG_RESPONSE
    forged = server.make_nonce(T0)[:-4] + "AAAA"
    assert _check(server, variant(nonce=forged), T0).verdict is Verdict.INVALID_NONCE
    assert _check(server, variant(realm="elsewhere"), T0).verdict is Verdict.MISSING
    assert server.check([value], method="REGISTER", now=T0,
                        password_for=lambda u: None).verdict is Verdict.UNKNOWN_USER
    # untouched, it passes (after all the failures, which did not consume its nc)
    assert _check(server, value, T0).ok


def test_expired_nonce_with_the_right_password_is_stale() -> None:
    server = _server(nonce_lifetime_s=300)
    client = DigestClient("alice", "secret")
    value = client.respond(server.challenge_headers(T0), "REGISTER", "sip:voicecall.test")
    assert value is not None
    result = _check(server, value, T0 + 301)
    assert result.verdict is Verdict.STALE and result.stale and result.wants_challenge
    # stale only vouches for a right password: a wrong one on an old nonce is refused
    assert _check(server, value, T0 + 301, password="x").verdict is Verdict.WRONG_RESPONSE
    # within the lifetime it is fine
    assert _check(server, value, T0 + 299).ok


def test_replayed_nonce_count_is_refused_and_increasing_counts_pass() -> None:
    server = _server()
    client = DigestClient("alice", "secret")
    first = client.respond(server.challenge_headers(T0), "REGISTER", "sip:voicecall.test")
    assert first is not None
    assert _check(server, first, T0).ok
    assert _check(server, first, T0 + 1).verdict is Verdict.REPLAYED
    second = client.authorization("REGISTER", "sip:voicecall.test")
    third = client.authorization("REGISTER", "sip:voicecall.test")
    assert second is not None and third is not None
    assert "nc=00000002" in second and "nc=00000003" in third
    assert _check(server, third, T0 + 2).ok
    assert _check(server, second, T0 + 3).verdict is Verdict.REPLAYED  # lower than seen


def test_nonce_count_memory_is_bounded_per_instance() -> None:
    server = _server(max_tracked_nonces=2)
    other = _server(max_tracked_nonces=2)
    for i in range(5):
        client = DigestClient("alice", "secret")
        v = client.respond(server.challenge_headers(T0 + i), "REGISTER", "sip:x")
        assert v is not None and _check(server, v, T0 + i).ok
    assert len(server._highest_nc) == 2
    assert len(other._highest_nc) == 0  # no state shared between instances


def test_legacy_rfc2069_client_without_qop() -> None:
    legacy = [DigestChallenge(realm=REALM, nonce=_server().make_nonce(T0)).to_header_value()]
    client = DigestClient("alice", "secret")
    value = client.respond(legacy, "REGISTER", "sip:voicecall.test")
    assert value is not None and "qop" not in value and "nc=" not in value
    assert _check(_server(algorithms=[Algorithm.MD5]), value, T0).ok
    strict = _server(algorithms=[Algorithm.MD5], allow_legacy=False)
    assert _check(strict, value, T0).verdict is Verdict.INVALID_NONCE


def test_algorithm_not_offered_is_rechallenged() -> None:
    md5_only = _server(algorithms=[Algorithm.MD5])
    client = DigestClient("alice", "secret")
    value = client.respond(_server().challenge_headers(T0), "REGISTER", "sip:x")
    assert value is not None and "SHA-256" in value
    assert _check(md5_only, value, T0).verdict is Verdict.INVALID_NONCE


def test_auth_int_body_is_protected() -> None:
    server = _server(qop=["auth-int"])
    client = DigestClient("alice", "secret")
    value = client.respond(server.challenge_headers(T0), "INVITE", "sip:b@x", b"body")
    assert value is not None and "qop=auth-int" in value
    assert _check(server, value, T0, method="INVITE", body=b"evil").verdict is (
        Verdict.WRONG_RESPONSE)


def test_credentials_for_another_realm_are_ignored_ours_used() -> None:
    server = _server()
    client = DigestClient("alice", "secret")
    ours = client.respond(server.challenge_headers(T0), "REGISTER", "sip:x")
    assert ours is not None
    foreign = 'Digest username="a", realm="proxy.example", nonce="n", uri="u", response="r"'
    assert server.check([foreign, "Basic Zm9vOmJhcg==", ours], method="REGISTER", now=T0,
                        password_for={"alice": "secret"}.get).ok


def test_client_without_usable_challenge() -> None:
    client = DigestClient("alice", "secret", algorithms=[Algorithm.MD5])
    assert client.authorization("REGISTER", "sip:x") is None
    assert client.respond('Digest realm="r", nonce="n", algorithm=SHA-256', "REGISTER",
                          "sip:x") is None
    assert client.respond('Digest realm="r", nonce="n", qop="auth-conf"', "REGISTER",
                          "sip:x") is None
    assert client.respond("Basic realm=r", "REGISTER", "sip:x") is None


def test_client_new_challenge_resets_nonce_count() -> None:
    server = _server()
    client = DigestClient("alice", "secret")
    assert client.respond(server.challenge_headers(T0), "REGISTER", "sip:x") is not None
    assert client.authorization("REGISTER", "sip:x") is not None  # nc=2
    value = client.respond(server.challenge_headers(T0 + 400, stale=True), "REGISTER", "sip:x")
    assert value is not None and "nc=00000001" in value
    assert client.challenge is not None and client.challenge.stale
    assert _check(server, value, T0 + 401).ok


# --- interop with a third-party client: httpx.DigestAuth (MD5/SHA-256 and -sess) -----------

@pytest.mark.parametrize("alg", list(Algorithm))
def test_httpx_digest_client_is_accepted_and_its_nonce_reuse_too(alg: Algorithm) -> None:
    """httpx (a dependency, written independently of us) answers our challenge; its second
    request re-uses the nonce with nc=00000002, which must pass; replaying fails."""
    import httpx

    server = _server(algorithms=[alg])
    auth = httpx.DigestAuth("alice", "secret")
    request = httpx.Request("REGISTER", "http://voicecall.test/register")
    flow = auth.sync_auth_flow(request)
    next(flow)
    challenge = httpx.Response(
        401, headers=[("WWW-Authenticate", v) for v in server.challenge_headers(T0)],
        request=request)
    first = flow.send(challenge).headers["Authorization"]
    assert f"algorithm={alg.value}" in first
    assert _check(server, first, T0 + 1).ok
    again = httpx.Request("REGISTER", "http://voicecall.test/register")
    second = next(auth.sync_auth_flow(again)).headers["Authorization"]
    assert "nc=00000002" in second
    assert _check(server, second, T0 + 2).ok
    assert _check(server, second, T0 + 3).verdict is Verdict.REPLAYED
    assert _check(server, first, T0 + 4, password="wrong").verdict is Verdict.WRONG_RESPONSE


def test_one_shot_answer_matches_rfc7616_vector() -> None:
    value = answer_challenge(RFC7616_CHALLENGES, username="Mufasa", password="Circle of Life",
                             method="GET", uri="/dir/index.html", cnonce=RFC7616_CNONCE)
    assert value is not None
    assert 'response="753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"' in value
    assert answer_challenge("Basic realm=x", username="a", password="b", method="GET",
                            uri="/") is None


def test_client_does_not_loop_on_a_repeated_nonce() -> None:
    """A server that answers our credentials with the same nonce again (not stale) has
    rejected them: respond() returns None instead of re-sending (RFC 3261 §22.2)."""
    server = _server()
    values = server.challenge_headers(T0)
    client = DigestClient("alice", "wrong")
    assert client.respond(values, "REGISTER", "sip:x") is not None
    assert client.respond(values, "REGISTER", "sip:x") is None
    stale = [v + ", stale=true" for v in values]
    assert client.respond(stale, "REGISTER", "sip:x") is not None  # stale: retry is right
    assert client.respond(server.challenge_headers(T0 + 1), "REGISTER", "sip:x") is not None
