"""The node configuration: one typed object loaded from TOML plus ``VOICECALL_<SECTION>_<KEY>``
environment overrides (spec/config.md). Unknown keys and bad values raise ``ConfigError``
naming the key; keys of features that have not landed yet are accepted with a warning."""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from media.config import MediaConfig
from switch.config import (
    GatewayConfig,
    NodeConfig,
    RouteConfig,
    SipConfig,
    UserConfig,
    check_switch_references,
)


class ConfigError(Exception):
    """A configuration problem, worded for an operator: names the key and the reason."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ApiConfig(_Section):
    listen: str = "127.0.0.1:8080"
    admin_token: str = "change-me"
    public_url: str = "http://127.0.0.1:8080"
    max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024, le=64 * 1024 * 1024)
    # Added keys (control_api, documented in deploy/voicecall.example.toml):
    callee_limit: str = "warn"          # APP-4 soft limit: "off", "warn" (log) or "enforce"
    callee_limit_per_day: int = Field(default=3, ge=1, le=100_000)
    callee_limit_per_30d: int = Field(default=10, ge=1, le=1_000_000)
    forbidden_prefixes: tuple[str, ...] = ()  # NUM-7 extra prefixes (e.g. mobile HLR segments)
    url_signing_key: str = ""           # HMAC key of recording URLs; "" = derived from admin_token
    record_url_ttl_s: int = Field(default=7 * 86_400, ge=60, le=30 * 86_400)
    record_domain: str = ""             # recordDomain in CDRs; "" = host:port of public_url
    max_apps_per_account: int = Field(default=5, ge=1, le=100_000)  # NUM-4 quota
    max_inflight_requests: int = Field(default=256, ge=0, le=100_000)  # more → 1010010, 0 = off
    # POST /demo/webhooks/{status,fee} logs and accepts pushes: a receiver for the demo.
    demo_webhooks: bool = False
    # How the other nodes of a cluster reach this API (callStop / sip-trace forwarding);
    # "" = the address the listener bound (a wildcard bind: the host name's address).
    internal_url: str = ""

    @field_validator("callee_limit")
    @classmethod
    def _callee_limit(cls, v: str) -> str:
        if v not in ("off", "warn", "enforce"):
            raise ValueError("callee_limit must be 'off', 'warn' or 'enforce'")
        return v

    @field_validator("internal_url")
    @classmethod
    def _internal_url(cls, v: str) -> str:
        if v and not re.fullmatch(r"https?://[^/\s]+/?", v):
            raise ValueError("expected http(s)://HOST:PORT (no path), e.g. http://10.0.0.11:8080")
        return v

    @field_validator("listen")
    @classmethod
    def _listen(cls, v: str) -> str:
        host, sep, port = v.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
            raise ValueError("expected HOST:PORT (port 0: any free port), e.g. 127.0.0.1:8080")
        return v


class StorageConfig(_Section):
    url: str = "sqlite+aiosqlite:///./data/voicecall.db"
    recordings_retention_days: int = Field(default=7, ge=1, le=3650)
    # Added key (control_api): apps/numbers/files/templates are cached this long per node
    cache_ttl_s: float = Field(default=2.0, ge=0, le=300)


class WebhooksConfig(_Section):
    timeout_s: float = Field(default=10, gt=0, le=300)
    cdr_retry_interval_s: float = Field(default=3600, gt=0, le=7 * 86_400)
    cdr_max_retries: int = Field(default=6, ge=0, le=100)
    # Added keys (control_api):
    cdr_batch_delay_s: float = Field(default=1.0, ge=0, le=60)  # wait for same-second CDRs (EV-3)
    outbox_poll_s: float = Field(default=1.0, gt=0, le=60)
    cdr_lease_s: float = Field(default=120, ge=1, le=86_400)  # a claimed batch expires after
    push_created_beijing_time: bool = True              # §1.3: Created is Beijing time + "Z"


class AuthConfig(_Section):
    accept_beijing_time: bool = True
    max_skew_s: int = Field(default=300, ge=1, le=86_400)
    fail_limit: int = Field(default=10, ge=1, le=10_000)
    fail_window_s: int = Field(default=300, ge=1, le=86_400)
    block_s: int = Field(default=1800, ge=1, le=86_400)


class BillingConfig(_Section):
    rate_per_minute: float = Field(default=0.18, ge=0)
    number_rent_per_month: float = Field(default=30, ge=0)


class LogConfig(_Section):
    level: str = "info"
    format: str = "console"    # "console" (human) or "json" (one object per line)

    @field_validator("level")
    @classmethod
    def _level(cls, v: str) -> str:
        if v.lower() not in ("debug", "info", "warning", "error"):
            raise ValueError("level must be debug, info, warning or error")
        return v.lower()

    @field_validator("format")
    @classmethod
    def _format(cls, v: str) -> str:
        if v not in ("console", "json"):
            raise ValueError("format must be 'console' or 'json'")
        return v


class AccountConfig(_Section):
    id: str
    name: str = ""


class AppConfig(_Section):
    account: str
    app_key: str
    app_secret: str
    status_url: str = ""
    fee_url: str = ""
    record: bool = True
    max_concurrent_calls: int = Field(default=10, ge=1, le=100_000)
    push_sign_newlines: bool = True     # §1.3 push signature: url\nnonce\ncreated (else no \n)


class NumberConfig(_Section):
    account: str
    number: str
    kind: str = "display"
    app_key: str = ""
    state: str = "active"

    @field_validator("kind")
    @classmethod
    def _kind(cls, v: str) -> str:
        if v not in ("display", "bind"):
            raise ValueError("kind must be 'display' or 'bind'")
        return v

    @field_validator("state")
    @classmethod
    def _state(cls, v: str) -> str:
        if v not in ("active", "paused", "released"):
            raise ValueError("state must be 'active', 'paused' or 'released'")
        return v

    @model_validator(mode="after")
    def _bind(self) -> NumberConfig:
        if self.kind == "bind" and not self.app_key:
            raise ValueError("a bind number needs app_key")
        return self


class PlayFileConfig(_Section):
    account: str
    name: str
    path: str


class TemplateConfig(_Section):
    account: str
    id: str
    text: str


class Config(_Section):
    node: NodeConfig = NodeConfig()
    sip: SipConfig = SipConfig()
    media: MediaConfig = MediaConfig()
    api: ApiConfig = ApiConfig()
    storage: StorageConfig = StorageConfig()
    webhooks: WebhooksConfig = WebhooksConfig()
    auth: AuthConfig = AuthConfig()
    billing: BillingConfig = BillingConfig()
    log: LogConfig = LogConfig()
    gateways: tuple[GatewayConfig, ...] = ()
    routes: tuple[RouteConfig, ...] = ()
    users: tuple[UserConfig, ...] = ()
    accounts: tuple[AccountConfig, ...] = ()
    apps: tuple[AppConfig, ...] = ()
    numbers: tuple[NumberConfig, ...] = ()
    play_files: tuple[PlayFileConfig, ...] = ()
    templates: tuple[TemplateConfig, ...] = ()

    @model_validator(mode="after")
    def _references(self) -> Config:
        check_switch_references(self.gateways, self.routes, self.users)
        accounts = {a.id for a in self.accounts}
        app_keys = {a.app_key for a in self.apps}
        for i, app in enumerate(self.apps):
            if app.account not in accounts:
                raise ValueError(f"apps[{i}].account: unknown account {app.account!r}")
        for i, n in enumerate(self.numbers):
            if n.account not in accounts:
                raise ValueError(f"numbers[{i}].account: unknown account {n.account!r}")
            if n.app_key and n.app_key not in app_keys:
                raise ValueError(f"numbers[{i}].app_key: unknown app {n.app_key!r}")
        return self


_TABLES = ("node", "sip", "media", "api", "storage", "webhooks", "auth", "billing", "log")
_ARRAYS = ("gateways", "routes", "users", "accounts", "apps", "numbers", "play_files", "templates")

# Keys ("section" or "section.key") of features that have not landed yet: parsed and
# validated, then ignored with a warning. Every key of spec/config.md is implemented now.
NOT_LANDED: frozenset[str] = frozenset()

DEFAULT_TOML = """
[node]
name = "vc1"
data_dir = "./data"

[api]
demo_webhooks = true

[sip]
listen = ["udp:127.0.0.1:5060", "tcp:127.0.0.1:5060"]
advertise = "127.0.0.1"

[[gateways]]
name = "carrier1"
address = "udp:127.0.0.1:5070"
ping_interval_s = 30

[[routes]]
prefix = "+86"
gateways = ["carrier1"]

[[users]]
username = "1001"
password = "secret1001"
number = "+8613800000001"

[[users]]
username = "1002"
password = "secret1002"
number = "+8613800000002"

[[accounts]]
id = "sp1"
name = "Demo SP"

[[apps]]
account = "sp1"
app_key = "demo-app-key"
app_secret = "demo-app-secret"
status_url = "http://127.0.0.1:8080/demo/webhooks/status"
fee_url = "http://127.0.0.1:8080/demo/webhooks/fee"
record = true
max_concurrent_calls = 10

[[numbers]]
account = "sp1"
number = "+8675500000001"
kind = "display"
state = "active"
"""


@dataclass(frozen=True, slots=True)
class LoadedConfig:
    config: Config
    warnings: tuple[str, ...]
    source: str


def _format_loc(loc: Iterable[Any]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _env_overrides(data: dict[str, Any], environ: Mapping[str, str]) -> None:
    for name, raw in environ.items():
        if not name.startswith("VOICECALL_") or name in ("VOICECALL_CONFIG",):
            continue
        rest = name[len("VOICECALL_"):].lower()
        section = next((s for s in _TABLES if rest.startswith(s + "_")), None)
        if section is None:
            raise ConfigError(f"{name}: no such configuration section (known: {', '.join(_TABLES)})")
        key = rest[len(section) + 1:]
        try:
            value: Any = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw
        fields = _SECTION_MODELS[section].model_fields
        if key not in fields:
            raise ConfigError(f"{name}: unknown key {section}.{key}")
        data.setdefault(section, {})[key] = value


_SECTION_MODELS: dict[str, type[BaseModel]] = {
    name: Config.model_fields[name].annotation  # type: ignore[misc]
    for name in _TABLES
}


def parse_config(text: str, source: str = "<string>",
                 environ: Mapping[str, str] | None = None, *,
                 not_landed: frozenset[str] = NOT_LANDED) -> LoadedConfig:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{source}: not valid TOML: {e}") from None
    for key, value in data.items():
        if key in _TABLES:
            if not isinstance(value, dict):
                raise ConfigError(f"{key}: must be a table [{key}]")
        elif key in _ARRAYS:
            if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
                raise ConfigError(f"{key}: must be an array of tables [[{key}]]")
        else:
            raise ConfigError(f"{key}: unknown key (known: {', '.join(_TABLES + _ARRAYS)})")
    _env_overrides(data, environ if environ is not None else os.environ)
    try:
        config = Config.model_validate(data)
    except ValidationError as e:
        problems = []
        for err in e.errors():
            loc = _format_loc(err["loc"])
            msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
            msg = msg.removeprefix("Value error, ")
            problems.append(f"{loc}: {msg}" if loc else msg)
        raise ConfigError(f"{source}: " + "; ".join(problems)) from None
    warnings = tuple(
        f"{key}: accepted but not implemented yet; ignored"
        for key in _present_keys(data)
        if key in not_landed
    )
    return LoadedConfig(config=config, warnings=warnings, source=source)


def _present_keys(data: dict[str, Any]) -> list[str]:
    keys = []
    for section, value in data.items():
        keys.append(section)
        items = value if isinstance(value, list) else [value]
        for item in items:
            if isinstance(item, dict):
                keys.extend(f"{section}.{k}" for k in item)
    return list(dict.fromkeys(keys))


def load_config(path: str | Path | None, environ: Mapping[str, str] | None = None) -> LoadedConfig:
    if path is None:
        return parse_config(DEFAULT_TOML, "<embedded defaults>", environ)
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror}") from None
    return parse_config(text, str(p), environ)
