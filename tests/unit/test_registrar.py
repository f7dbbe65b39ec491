"""Registrar core, RFC 3261 §10.3, driven with parsed REGISTER parts and virtual time."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from switch.config import Address, SipConfig, Transport, UserConfig
from switch.registrar import (
    Binding,
    Bindings,
    Challenge,
    ContactSpec,
    RegisterRequest,
    Registrar,
    Rejected,
    contact_key,
)
from switch.sip.digest import Algorithm, DigestClient, DigestServer, parse_challenges
from tests.paths import CONFORMANCE

REALM = "example.com"
T0 = 1_800_000_000.0
ALICE = UserConfig(username="1001", password="secret1001", number="+8613800000001")
BOB = UserConfig(username="1002", password="secret1002", number="+8613800000002")
WATSON = UserConfig(username="watson", password="elementary", number="+19725550000")
USER = UserConfig(username="user", password="pw", number="+19725550001")
JUSER = UserConfig(username="j.user", password="pw", number="+19725550002")
SRC = Address(Transport.UDP, "192.0.2.10", 40000)


def make_registrar(**kw: int) -> Registrar:
    digest = DigestServer(REALM, key=b"0" * 32, nonce_lifetime_s=300)
    return Registrar([ALICE, BOB, WATSON, USER, JUSER], REALM, digest, **kw)


class Phone:
    """A softphone: sends REGISTERs, answers challenges, counts CSeq on one Call-ID."""

    def __init__(self, reg: Registrar, user: UserConfig, *, password: str | None = None,
                 call_id: str = "reg-1@phone", source: Address = SRC) -> None:
        self.reg = reg
        self.aor = user.username
        self.client = DigestClient(user.username, password or user.password)
        self.call_id = call_id
        self.cseq = 0
        self.source = source
        self.last_challenge: Challenge | None = None

    def send(self, contacts: list[ContactSpec], now: float, *, expires: int | str | None = None,
             aor: str | None = None, auth: list[str] | None = None,
             cseq: int | None = None) -> Bindings | Challenge | Rejected:
        self.cseq = cseq if cseq is not None else self.cseq + 1
        if auth is None:
            value = self.client.authorization("REGISTER", f"sip:{REALM}")
            auth = [value] if value is not None else []
        return self.reg.register(
            RegisterRequest(aor_user=aor or self.aor, contacts=contacts, call_id=self.call_id,
                            cseq=self.cseq, source=self.source, expires=expires,
                            authorization=auth),
            now,
        )

    def register(self, contacts: list[ContactSpec], now: float,
                 **kw: object) -> Bindings | Challenge | Rejected:
        """Send; on a 401, answer the challenge once and send again (RFC 3261 §22.2)."""
        result = self.send(contacts, now, **kw)  # type: ignore[arg-type]
        if isinstance(result, Challenge):
            self.last_challenge = result
            value = self.client.respond(result.www_authenticate, "REGISTER", f"sip:{REALM}")
            assert value is not None
            kw.pop("auth", None)
            result = self.send(contacts, now, auth=[value], **kw)  # type: ignore[arg-type]
        return result


def c(uri: str, **kw: object) -> ContactSpec:
    return ContactSpec(uri, **kw)  # type: ignore[arg-type]


def ok(result: object) -> Bindings:
    assert isinstance(result, Bindings), result
    return result


# --- authentication ------------------------------------------------------------------------

def test_register_is_challenged_then_accepted() -> None:
    """Given a REGISTER without credentials, the registrar answers 401 with a SHA-256 and an
    MD5 challenge; when the phone answers, it gets 200 listing its binding with expires."""
    reg = make_registrar()
    phone = Phone(reg, ALICE)
    first = phone.send([c("sip:1001@192.0.2.10:40000")], T0)
    assert isinstance(first, Challenge) and first.status == 401 and not first.stale
    assert [ch.algorithm for ch in parse_challenges(first.www_authenticate)] == [
        Algorithm.SHA_256, Algorithm.MD5]
    answer = phone.client.respond(first.www_authenticate, "REGISTER", f"sip:{REALM}")
    assert answer is not None and answer.startswith("Digest ") and "SHA-256" in answer
    result = ok(phone.send([c("sip:1001@192.0.2.10:40000")], T0, expires=600, auth=[answer]))
    assert result.contact_values == ["<sip:1001@192.0.2.10:40000>;expires=600"]
    (b,) = reg.contacts_for_number("+8613800000001", T0)
    assert b.contact == "sip:1001@192.0.2.10:40000" and b.source == SRC
    assert (b.username, b.number, b.call_id, b.cseq) == ("1001", "+8613800000001",
                                                          "reg-1@phone", 2)


def test_refresh_reuses_the_nonce_with_a_higher_nonce_count() -> None:
    reg = make_registrar()
    phone = Phone(reg, ALICE)
    ok(phone.register([c("sip:1001@h")], T0))
    # the refresh carries credentials straight away (nc=2): no new challenge needed
    result = phone.send([c("sip:1001@h")], T0 + 100)
    assert isinstance(result, Bindings)


def test_refresh_after_the_nonce_expired_gets_stale_challenge() -> None:
    reg = make_registrar()
    phone = Phone(reg, ALICE)
    ok(phone.register([c("sip:1001@h")], T0))
    result = phone.send([c("sip:1001@h")], T0 + 301)
    assert isinstance(result, Challenge) and result.stale
    assert all("stale=true" in v for v in result.www_authenticate)
    ok(phone.register([c("sip:1001@h")], T0 + 302))


def test_replayed_register_is_rechallenged() -> None:
    reg = make_registrar()
    phone = Phone(reg, ALICE)
    ok(phone.register([c("sip:1001@h")], T0))
    replay_auth = phone.client.authorization("REGISTER", f"sip:{REALM}")
    assert replay_auth is not None
    ok(phone.send([c("sip:1001@h")], T0 + 1, auth=[replay_auth]))
    again = phone.send([c("sip:evil@h")], T0 + 2, auth=[replay_auth])
    assert isinstance(again, Challenge)
    assert [b.contact for b in reg.contacts_for_user("1001", T0 + 2)] == ["sip:1001@h"]


def test_wrong_password_is_403_after_the_challenge() -> None:
    """Choice: a wrong response to a nonce we issued is final (403), not a new 401 loop."""
    reg = make_registrar()
    phone = Phone(reg, ALICE, password="guess")
    result = phone.register([c("sip:1001@h")], T0)
    assert isinstance(result, Rejected) and result.status == 403
    assert phone.last_challenge is not None
    assert reg.contacts_for_user("1001", T0) == []


def test_unknown_auth_scheme_rfc4475_regaut01() -> None:
    """RFC 4475 §3.3.7: credentials in an unknown scheme are ignored; the answer is a 401."""
    reg = make_registrar()
    phone = Phone(reg, JUSER)
    result = phone.send([], T0, auth=["NoOneKnowsThisScheme opaque-data=here"], cseq=9338)
    assert isinstance(result, Challenge) and result.status == 401


def test_malformed_authorization_is_400() -> None:
    reg = make_registrar()
    result = Phone(reg, ALICE).send([c("sip:1001@h")], T0, auth=['Digest realm="open'])
    assert isinstance(result, Rejected) and result.status == 400


def test_unknown_user_is_challenged_then_403() -> None:
    """Choice: without credentials everybody is challenged (no user enumeration); a digest
    username that is not configured then gets 403."""
    reg = make_registrar()
    stranger = Phone(reg, UserConfig(username="9999", password="x", number="+99999999"))
    first = stranger.send([c("sip:9999@h")], T0)
    assert isinstance(first, Challenge)
    result = stranger.register([c("sip:9999@h")], T0)
    assert isinstance(result, Rejected) and result.status == 403


def test_aor_of_nobody_is_404_and_of_another_user_403() -> None:
    reg = make_registrar()
    phone = Phone(reg, ALICE)
    nobody = phone.register([c("sip:1001@h")], T0, aor="7777")
    assert isinstance(nobody, Rejected) and nobody.status == 404
    bobs = phone.register([c("sip:1001@h")], T0, aor="+8613800000002")
    assert isinstance(bobs, Rejected) and bobs.status == 403
    assert reg.contacts_for_user("1002", T0) == []


@pytest.mark.parametrize("aor", ["1001", "+8613800000001", "8613800000001", "%2B8613800000001"])
def test_to_may_name_the_username_or_the_number(aor: str) -> None:
    reg = make_registrar()
    ok(Phone(reg, ALICE).register([c("sip:1001@h")], T0, aor=aor))
    assert [b.contact for b in reg.contacts_for_number("+8613800000001", T0)] == ["sip:1001@h"]


# --- bindings --------------------------------------------------------------------------------

def test_multiple_contacts_ordered_by_q_then_most_recent() -> None:
    reg = make_registrar()
    phone = Phone(reg, ALICE)
    ok(phone.register([c("sip:desk@h", q="0.5"), c("sip:mobile@h", q=0.9)], T0))
    ok(phone.register([c("sip:laptop@h")], T0 + 10))  # no q: counts as 1.0
    ok(phone.register([c("sip:tablet@h", q="0.5")], T0 + 20))
    got = [b.contact for b in reg.contacts_for_number("+8613800000001", T0 + 30)]
    assert got == ["sip:laptop@h", "sip:mobile@h", "sip:tablet@h", "sip:desk@h"]
    assert len(ok(phone.send([], T0 + 31)).bindings) == 4  # a query lists them all


def test_unregister_one_contact_with_expires_zero() -> None:
    reg = make_registrar()
    phone = Phone(reg, ALICE)
    ok(phone.register([c("sip:a@h"), c("sip:b@h")], T0))
    result = ok(phone.send([c("sip:a@h", expires=0)], T0 + 5))
    assert [b.contact for b in result.bindings] == ["sip:b@h"]
    # the Expires header applies when the contact has no expires param
    result = ok(phone.send([c("sip:b@h")], T0 + 6, expires=0))
    assert result.bindings == () and len(reg) == 0


def test_wildcard_with_expires_zero_removes_all() -> None:
    reg = make_registrar()
    phone = Phone(reg, ALICE)
    ok(phone.register([c("sip:a@h"), c("sip:b@h")], T0))
    result = ok(phone.send([c("*")], T0 + 1, expires="0"))
    assert result.bindings == () and reg.contacts_for_user("1001", T0 + 1) == []


@pytest.mark.parametrize(
    ("contacts", "expires"),
    [
        ([c("*")], None),  # no Expires header
        ([c("*")], 3600),  # Expires not zero
        ([c("*"), c("sip:a@h")], 0),  # not alone
        ([c("*", expires=30)], 0),
    ],
)
def test_invalid_wildcard_is_400(contacts: list[ContactSpec], expires: int | None) -> None:
    reg = make_registrar()
    phone = Phone(reg, ALICE)
    ok(phone.register([c("sip:a@h")], T0))
    result = phone.send(contacts, T0 + 1, expires=expires)
    assert isinstance(result, Rejected) and result.status == 400
    assert len(reg.contacts_for_user("1001", T0 + 1)) == 1  # nothing changed


def test_interval_too_brief_is_423_with_min_expires() -> None:
    reg = make_registrar()
    phone = Phone(reg, ALICE)
    result = phone.register([c("sip:a@h", expires=30)], T0)
    assert isinstance(result, Rejected)
    assert (result.status, result.reason, result.min_expires) == (423, "Interval Too Brief", 60)
    assert isinstance(phone.send([c("sip:a@h")], T0, expires="59"), Rejected)
    ok(phone.send([c("sip:a@h")], T0, expires="60"))


def test_expires_is_capped_and_defaulted() -> None:
    reg = make_registrar()
    phone = Phone(reg, ALICE)
    r = ok(phone.register([c("sip:a@h", expires="99999999999")], T0))
    assert r.contact_values == ["<sip:a@h>;expires=3600"]
    r = ok(phone.send([c("sip:b@h")], T0, expires="banana"))  # §20.19: malformed -> 3600
    assert {b.contact: b.remaining(T0) for b in r.bindings} == {"sip:a@h": 3600,
                                                                  "sip:b@h": 3600}
    r = ok(phone.send([c("sip:b@h", expires=120)], T0, expires=600))  # param beats header
    assert {b.contact: b.remaining(T0) for b in r.bindings}["sip:b@h"] == 120


def test_bindings_expire_on_virtual_time() -> None:
    reg = make_registrar()
    phone = Phone(reg, ALICE)
    ok(phone.register([c("sip:short@h", expires=60), c("sip:long@h", expires=600)], T0))
    assert len(reg.contacts_for_number("+8613800000001", T0 + 59.5)) == 2
    assert [b.contact for b in reg.contacts_for_number("+8613800000001", T0 + 60)] == [
        "sip:long@h"]
    assert len(reg) == 2  # lookups do not mutate; the sweep does
    gone = reg.expire(T0 + 60)
    assert [b.contact for b in gone] == ["sip:short@h"] and len(reg) == 1
    assert reg.expire(T0 + 60) == []
    assert [b.contact for b in reg.expire(T0 + 600)] == ["sip:long@h"] and len(reg) == 0


def test_refresh_extends_a_binding() -> None:
    reg = make_registrar()
    phone = Phone(reg, ALICE)
    ok(phone.register([c("sip:a@h", expires=120)], T0))
    ok(phone.send([c("sip:a@h", expires=120)], T0 + 100))
    (b,) = reg.contacts_for_user("1001", T0 + 200)
    assert b.remaining(T0 + 200) == 20 and b.cseq == 3


def test_same_call_id_with_old_cseq_is_500_out_of_order() -> None:
    """§10.3 step 7: same Call-ID and a CSeq not higher than stored: abort, change nothing."""
    reg = make_registrar()
    phone = Phone(reg, ALICE)
    ok(phone.register([c("sip:a@h", expires=600)], T0))  # stored CSeq 2
    stale = phone.send([c("sip:a@h", expires=0), c("sip:new@h")], T0 + 1, cseq=2)
    assert isinstance(stale, Rejected) and stale.status == 500
    assert [b.contact for b in reg.contacts_for_user("1001", T0 + 1)] == ["sip:a@h"]
    wild = phone.send([c("*")], T0 + 2, expires=0, cseq=1)
    assert isinstance(wild, Rejected) and wild.status == 500


def test_another_call_id_may_update_regardless_of_cseq() -> None:
    reg = make_registrar()
    ok(Phone(reg, ALICE).register([c("sip:a@h")], T0, cseq=50))
    other = Phone(reg, ALICE, call_id="reboot@phone")
    result = ok(other.register([c("sip:a@h", expires=0)], T0 + 1, cseq=1))
    assert result.bindings == ()


def test_contact_uri_comparison_ignores_scheme_and_host_case() -> None:
    reg = make_registrar()
    phone = Phone(reg, ALICE)
    ok(phone.register([c("sip:Alice@PC.Example.COM;transport=tcp")], T0))
    r = ok(phone.send([c("SIP:Alice@pc.example.com;transport=tcp", expires=0)], T0 + 1))
    assert r.bindings == ()


def test_flow_with_instance_and_reg_id_replaces_old_contact() -> None:
    """RFC 5626 §6: a new contact for the same +sip.instance and reg-id replaces the flow."""
    reg = make_registrar()
    inst = '"<urn:uuid:00000000-0000-1000-8000-000A95A0E128>"'
    phone = Phone(reg, ALICE)
    ok(phone.register([c("sip:1001@192.0.2.10:40000", instance=inst, reg_id=1)], T0))
    moved = Phone(reg, ALICE, call_id="after-reboot", source=Address(Transport.UDP,
                                                                       "192.0.2.10", 40123))
    r = ok(moved.register([c("sip:1001@192.0.2.10:40123", instance=inst, reg_id=1)], T0 + 5))
    (b,) = r.bindings
    assert b.contact == "sip:1001@192.0.2.10:40123" and b.source.port == 40123
    assert f";+sip.instance={inst};reg-id=1" in r.contact_values[0]


def test_too_many_contacts_evicts_the_least_recently_refreshed() -> None:
    reg = make_registrar(max_contacts=2)
    phone = Phone(reg, ALICE)
    for i in range(3):
        ok(phone.register([c(f"sip:p{i}@h")], T0 + i))
    assert [b.contact for b in reg.contacts_for_user("1001", T0 + 3)] == ["sip:p2@h", "sip:p1@h"]


@pytest.mark.parametrize(
    ("contact", "reason"),
    [(c("sip:a@h", q="1.5"), "Invalid q Value"), (c("sip:a@h", q="x"), "Invalid q Value"),
     (c("<sip:a@h>"), "Invalid Contact"), (c(""), "Invalid Contact")],
)
def test_bad_contacts_are_400(contact: ContactSpec, reason: str) -> None:
    result = Phone(make_registrar(), ALICE).register([contact], T0)
    assert isinstance(result, Rejected) and (result.status, result.reason) == (400, reason)


def test_bad_cseq_or_call_id_is_400() -> None:
    reg = make_registrar()
    assert isinstance(Phone(reg, ALICE, call_id=" ").send([], T0), Rejected)
    assert isinstance(Phone(reg, ALICE).send([], T0, cseq=2**31), Rejected)


def test_lookups_for_unknown_or_unregistered() -> None:
    reg = make_registrar()
    assert reg.contacts_for_number("+8613800000002", T0) == []
    assert reg.contacts_for_number("+0000", T0) == []
    assert reg.contacts_for_user("nobody", T0) == []


# --- RFC 4475 registration torture tests, fed from the published bytes ----------------------
# The SIP message layer is someone else's module; to stay independent these tests pull the few
# header values they need out of the .dat files with the RFC 3261 §7.3.1 basics (unfolding,
# compact names) and §20.10 (an addr-spec Contact's ';params' are header parameters).

_COMPACT = {"m": "contact", "t": "to", "i": "call-id", "l": "content-length", "f": "from"}


def _torture(name: str) -> dict[str, list[str]]:
    raw = (CONFORMANCE / f"{name}.dat").read_bytes().decode("utf-8")
    head = raw.split("\r\n\r\n", 1)[0]
    head = re.sub(r"\r\n[ \t]+", " ", head)  # unfold
    out: dict[str, list[str]] = {}
    for line in head.split("\r\n")[1:]:
        hname, _, value = line.partition(":")
        key = hname.strip().lower()
        out.setdefault(_COMPACT.get(key, key), []).append(value.strip())
    return out


def _register_from(name: str, user: UserConfig, reg: Registrar) -> Bindings | Challenge | Rejected:
    """Feed a torture REGISTER the way the message layer would, then answer a 401 once."""
    h = _torture(name)
    to_user = re.search(r"sip:([^@]+)@", h["to"][0])
    assert to_user is not None
    contacts = []
    for value in h.get("contact", []):
        if value.startswith("<"):
            contacts.append(ContactSpec(value[1:value.index(">")]))
        else:
            contacts.append(ContactSpec(value.split(";", 1)[0]))
    phone = Phone(reg, user, call_id=h["call-id"][0])
    cseq = int(h["cseq"][0].split()[0])
    result = phone.send(contacts, T0, aor=to_user.group(1), auth=h.get("authorization", []),
                        cseq=cseq)
    if isinstance(result, Challenge):
        phone.last_challenge = result
        value = phone.client.respond(result.www_authenticate, "REGISTER", "sip:example.com")
        assert value is not None
        result = phone.send(contacts, T0, aor=to_user.group(1), auth=[value], cseq=cseq + 1)
    return result


def test_rfc4475_regaut01_unknown_authorization_scheme_is_challenged() -> None:
    """§3.3.7: ``Authorization: NoOneKnowsThisScheme opaque-data=here`` -> 401 challenge."""
    reg = make_registrar()
    h = _torture("regaut01")
    assert h["authorization"] == ["NoOneKnowsThisScheme opaque-data=here"]
    first = Phone(reg, JUSER, call_id=h["call-id"][0]).send(
        [], T0, aor="j.user", auth=h["authorization"], cseq=9338)
    assert isinstance(first, Challenge) and first.status == 401
    # and the UA can then authenticate normally
    assert isinstance(_register_from("regaut01", JUSER, reg), Bindings)


def test_rfc4475_cparam01_contact_parameter_is_accepted() -> None:
    """§3.3.12: ``Contact: sip:+19725552222@gw1.example.net;unknownparam`` without <>:
    ``unknownparam`` is a contact (header) parameter, so the bound URI has no parameter."""
    reg = make_registrar()
    r = ok(_register_from("cparam01", WATSON, reg))
    assert [b.contact for b in r.bindings] == ["sip:+19725552222@gw1.example.net"]
    assert r.bindings[0].call_id == "cparam01.70710@saturn.example.com"


def test_rfc4475_cparam02_uri_parameter_is_kept_in_the_binding() -> None:
    """§3.3.13: ``<sip:+19725552222@gw1.example.net;unknownparam>``: a URI parameter."""
    reg = make_registrar()
    r = ok(_register_from("cparam02", WATSON, reg))
    assert r.contact_values == ["<sip:+19725552222@gw1.example.net;unknownparam>;expires=3600"]


def test_rfc4475_regescrt_escaped_header_in_contact_is_stored_not_routed() -> None:
    """§3.3.14: accepted; the binding keeps the escaped header, but a request sent to it
    uses the URI without the header part (headers are not allowed in a Request-URI)."""
    reg = make_registrar()
    r = ok(_register_from("regescrt", USER, reg))
    uri = "sip:user@example.com?Route=%3Csip:sip.example.com%3E"
    (b,) = r.bindings
    assert b.contact == uri and r.contact_values == [f"<{uri}>;expires=3600"]
    assert b.request_uri == "sip:user@example.com"
    assert b.cseq == 14398235  # the authenticated retry of CSeq 14398234


def test_binding_is_frozen_data() -> None:
    b = Binding(username="u", number="+1", contact="sip:x", source=SRC, expires_at=T0 + 10,
                updated_at=T0, call_id="c", cseq=1)
    with pytest.raises(AttributeError):
        b.contact = "sip:y"  # type: ignore[misc]
    assert b.remaining(T0 + 9.2) == 1 and b.remaining(T0 + 11) == 0


# --- configuration, comparison and robustness ----------------------------------------------

def test_from_config_uses_sip_realm_or_advertise_and_a_shared_key() -> None:
    a = Registrar.from_config([ALICE], SipConfig(advertise="10.0.0.5"), key=b"k" * 32)
    b = Registrar.from_config([ALICE], SipConfig(realm="vc.example", advertise="10.0.0.5"),
                              key=b"k" * 32)
    assert (a.realm, b.realm) == ("10.0.0.5", "vc.example")
    legacy = Registrar.from_config([ALICE], SipConfig(), algorithms=[Algorithm.MD5])
    chal = Phone(legacy, ALICE).send([c("sip:1001@h")], T0)
    assert isinstance(chal, Challenge)
    assert [ch.algorithm for ch in parse_challenges(chal.www_authenticate)] == [Algorithm.MD5]
    # two nodes with the same key: a challenge from one is answered to the other
    other = Registrar.from_config([ALICE], SipConfig(advertise="10.0.0.5"), key=b"k" * 32)
    first = Phone(a, ALICE).send([c("sip:1001@h")], T0)
    assert isinstance(first, Challenge)
    phone = Phone(other, ALICE)
    value = phone.client.respond(first.www_authenticate, "REGISTER", f"sip:{REALM}")
    assert value is not None
    ok(phone.send([c("sip:1001@h")], T0 + 1, auth=[value]))


@pytest.mark.parametrize(
    ("uri", "key"),
    [
        ("SIP:Alice@PC.Example.COM:5060;Transport=TCP",
         "sip:Alice@pc.example.com:5060;Transport=TCP"),
        ("sip:host.COM", "sip:host.com"),
        ("sip:user;par=u%40example.net@Example.COM", "sip:user;par=u%40example.net@example.com"),
        ("sip:a@B?x=@C", "sip:a@b?x=@C"),
        ("*", "*"),
    ],
)
def test_contact_key_lowercases_scheme_and_host_only(uri: str, key: str) -> None:
    assert contact_key(uri) == key


def test_a_canonical_contact_key_can_be_plugged_in() -> None:
    def strict(uri: str) -> str:
        if not uri.startswith("sip:"):
            raise ValueError("not a sip URI")
        return uri.replace(":5060", "")  # e.g. default port folded away

    digest = DigestServer(REALM, key=b"0" * 32)
    reg = Registrar([ALICE], REALM, digest, contact_key=strict)
    phone = Phone(reg, ALICE)
    ok(phone.register([c("sip:a@h:5060")], T0))
    assert ok(phone.send([c("sip:a@h", expires=0)], T0 + 1)).bindings == ()
    bad = phone.send([c("mailto:a@h")], T0 + 2)
    assert isinstance(bad, Rejected) and bad.status == 400


_text = st.text(max_size=40)
_contact = st.builds(
    ContactSpec,
    uri=st.one_of(st.just("*"), st.just("sip:a@h"), _text),
    expires=st.one_of(st.none(), st.integers(-5, 2**40), _text),
    q=st.one_of(st.none(), st.floats(allow_nan=True), _text),
    instance=st.one_of(st.none(), _text),
    reg_id=st.one_of(st.none(), st.integers(0, 3)),
)


@settings(max_examples=300, deadline=None)
@given(contacts=st.lists(_contact, max_size=4), expires=st.one_of(st.none(), _text,
                                                                     st.integers(-1, 10**12)),
       cseq=st.integers(-1, 2**32), aor=st.one_of(st.just("1001"), _text))
def test_any_parsed_register_gets_an_answer_never_an_exception(
        contacts: list[ContactSpec], expires: int | str | None, cseq: int, aor: str) -> None:
    reg = make_registrar()
    phone = Phone(reg, ALICE)
    result = phone.register(contacts, T0, expires=expires, aor=aor, cseq=cseq)
    assert isinstance(result, Bindings | Rejected | Challenge)
    if isinstance(result, Bindings):
        assert all(b.remaining(T0) <= 3600 for b in result.bindings)
        assert all(b.username == "1001" for b in result.bindings)
    assert len(reg.contacts_for_user("1001", T0)) <= reg.max_contacts
