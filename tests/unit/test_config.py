"""spec/config.md: every contract key is accepted; unknown keys and bad values name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from control_api.config import ConfigError, load_config, parse_config
from tests.paths import SHARED

SPEC = SHARED / "spec" / "config.md"

EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "voicecall.example.toml"


def _spec_toml() -> str:
    text = SPEC.read_text(encoding="utf-8")
    return text.split("```toml", 1)[1].split("```", 1)[0]


def test_embedded_defaults_load() -> None:
    loaded = load_config(None, environ={})
    assert loaded.config.sip.listen[0] == "udp:127.0.0.1:5060"
    assert loaded.config.users, "the demo needs softphone credentials"
    assert loaded.warnings == ()


def test_every_contract_key_is_accepted() -> None:
    loaded = parse_config(_spec_toml(), "spec", environ={})
    c = loaded.config
    assert c.node.name == "vc1"
    assert c.gateways[0].register_ is False
    assert c.routes[0].gateways == ("carrier1",)
    assert c.webhooks.cdr_max_retries == 6


def test_example_config_is_valid() -> None:
    loaded = load_config(EXAMPLE, environ={})
    assert loaded.config.node.name


@pytest.mark.parametrize(
    ("toml", "needle"),
    [
        ("[sip]\nlisen = []\n", "sip.lisen: unknown key"),
        ("[sipp]\n", "sipp: unknown key"),
        ('[[gateways]]\nname = "a"\naddress = "nowhere"\n', "gateways[0].address"),
        ('[media]\nptime = 25\n', "media.ptime"),
        ('[media]\nrtp_ports = "30000"\n', "media.rtp_ports"),
        ('[[routes]]\nprefix = "+86"\ngateways = ["ghost"]\n', "routes[0].gateways"),
        ('[[users]]\nusername = "a"\npassword = "b"\nnumber = "123"\n', "users[0].number"),
        ('[sip]\nlisten = ["tls:127.0.0.1:5061"]\n', "tls_cert"),
        ("[node\n", "not valid TOML"),
    ],
)
def test_bad_config_names_the_key(toml: str, needle: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_config(toml, "t.toml", environ={})
    assert needle in str(e.value)


def test_environment_overrides_the_file() -> None:
    loaded = parse_config('[sip]\nadvertise = "127.0.0.1"\n', "t", {"VOICECALL_SIP_ADVERTISE": "192.0.2.7"})
    assert loaded.config.sip.advertise == "192.0.2.7"
    loaded = parse_config("", "t", {"VOICECALL_SIP_T1_MS": "250"})
    assert loaded.config.sip.t1_ms == 250


def test_unknown_environment_key_is_an_error() -> None:
    with pytest.raises(ConfigError, match="VOICECALL_SIP_NOPE"):
        parse_config("", "t", {"VOICECALL_SIP_NOPE": "1"})


def test_keys_of_features_not_landed_are_accepted_with_a_warning() -> None:
    loaded = parse_config("[billing]\nrate_per_minute = 0.2\n", "t", environ={},
                          not_landed=frozenset({"billing.rate_per_minute"}))
    assert loaded.config.billing.rate_per_minute == 0.2
    assert loaded.warnings == ("billing.rate_per_minute: accepted but not implemented yet; ignored",)


def test_every_contract_key_has_landed() -> None:
    assert parse_config(_spec_toml(), "spec", environ={}).warnings == ()


def test_embedded_demo_pushes_to_its_own_demo_receiver() -> None:
    c = load_config(None, environ={}).config
    assert c.api.demo_webhooks
    app = c.apps[0]
    assert app.status_url == f"http://{c.api.listen}/demo/webhooks/status"
    assert app.fee_url == f"http://{c.api.listen}/demo/webhooks/fee"
