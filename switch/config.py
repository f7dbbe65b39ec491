"""Typed configuration of the signalling plane: ``[node]``, ``[sip]``, ``[[gateways]]``,
``[[routes]]`` and ``[[users]]`` (see spec/config.md)."""

from __future__ import annotations

import enum
import ipaddress
import re
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class Transport(enum.StrEnum):
    UDP = "udp"
    TCP = "tcp"
    TLS = "tls"


@dataclass(frozen=True, slots=True)
class Address:
    """``transport:host:port`` as written in the config (IPv6 hosts in brackets)."""

    transport: Transport
    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.transport.value}:{host}:{self.port}"


_ADDR_RE = re.compile(r"^(udp|tcp|tls):(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.\-]+):(\d{1,5})$")


def parse_address(text: str, default_port: int | None = None) -> Address:
    m = _ADDR_RE.match(text.strip())
    if m is None:
        if default_port is not None and re.match(r"^(udp|tcp|tls):[^:]+$", text.strip()):
            t, h = text.strip().split(":")
            return Address(Transport(t), h, default_port)
        raise ValueError(f"expected 'udp|tcp|tls:HOST:PORT', got {text!r}")
    host = m.group(2).strip("[]")
    port = int(m.group(3))
    if not 1 <= port <= 65535:
        raise ValueError(f"port out of range in {text!r}")
    return Address(Transport(m.group(1)), host, port)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NodeConfig(_Section):
    name: str = "vc1"
    data_dir: str = "./data"

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9.\-]{0,62}", v):
            raise ValueError("node name: letters, digits, '.', '-' (max 63), starting alphanumeric")
        return v


class SipConfig(_Section):
    listen: tuple[str, ...] = ("udp:127.0.0.1:5060", "tcp:127.0.0.1:5060")
    advertise: str = "127.0.0.1"
    user_agent: str = "voicecall"
    # Added keys (documented in README and deploy/voicecall.example.toml):
    tls_cert: str = ""                 # PEM certificate for tls: listeners
    tls_key: str = ""                  # PEM private key for tls: listeners
    t1_ms: int = Field(500, ge=50, le=10_000)     # RFC 3261 T1, RTT estimate
    t2_ms: int = Field(4000, ge=500, le=60_000)   # RFC 3261 T2, max non-INVITE retransmit interval
    t4_ms: int = Field(5000, ge=500, le=60_000)   # RFC 3261 T4, max time a message stays in the network
    max_message_bytes: int = Field(65_535, ge=1500, le=1_048_576)
    stream_message_timeout_s: float = Field(20.0, gt=0, le=3600)  # TCP/TLS: a message must complete
    realm: str = ""                    # digest realm; empty = advertise address
    session_expires_s: int = Field(1800, ge=90, le=86_400)  # RFC 4028 interval we ask for
    min_se_s: int = Field(90, ge=90, le=86_400)
    trace_calls: int = Field(200, ge=0, le=100_000)  # per-call SIP traces kept in memory
    no_answer_timeout_s: int = Field(60, ge=1, le=600)  # ringing time before CANCEL (Timer C-like)
    # Digest algorithms challenged, in header order. Only MD5 by default: SIPp 3.6 and
    # baresip 1.0 fail outright when a SHA-256 challenge is present at all (baresip reports
    # "Function not implemented" even with MD5 first). ["SHA-256", "MD5"] offers both to
    # RFC 8760 clients.
    digest_algorithms: tuple[str, ...] = ("MD5",)

    @field_validator("listen")
    @classmethod
    def _listen(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if not v:
            raise ValueError("at least one listen address is required")
        for a in v:
            parse_address(a)
        return v

    @field_validator("advertise")
    @classmethod
    def _advertise(cls, v: str) -> str:
        if not v or not re.fullmatch(r"[A-Za-z0-9.\-:\[\]]+", v):
            raise ValueError("advertise must be an IP address or host name")
        return v

    @field_validator("digest_algorithms")
    @classmethod
    def _algs(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if not v or any(a not in ("MD5", "SHA-256") for a in v) or len(set(v)) != len(v):
            raise ValueError("digest_algorithms: a non-empty list of 'MD5' and/or 'SHA-256'")
        return v

    @model_validator(mode="after")
    def _tls(self) -> SipConfig:
        if any(a.startswith("tls:") for a in self.listen) and not (self.tls_cert and self.tls_key):
            raise ValueError("a tls: listener needs sip.tls_cert and sip.tls_key")
        if self.t2_ms < self.t1_ms:
            raise ValueError("sip.t2_ms must be >= sip.t1_ms")
        return self

    @property
    def listen_addresses(self) -> tuple[Address, ...]:
        return tuple(parse_address(a) for a in self.listen)


class GatewayConfig(_Section):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    name: str
    address: str
    username: str = ""
    password: str = ""
    register_: bool = Field(False, alias="register")  # "register" would shadow BaseModel's
    ping_interval_s: int = Field(30, ge=0, le=3600)
    # Added keys:
    register_expires_s: int = Field(3600, ge=60, le=86_400)
    domain: str = ""                   # host for Request-URI/To; empty = address host

    @field_validator("address")
    @classmethod
    def _addr(cls, v: str) -> str:
        parse_address(v, default_port=5060)
        return v

    @property
    def parsed_address(self) -> Address:
        return parse_address(self.address, default_port=5060)


class RouteConfig(_Section):
    prefix: str
    gateways: tuple[str, ...]

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        if not re.fullmatch(r"\+?[0-9*#]*", v):
            raise ValueError("prefix: optional '+' then digits")
        return v

    @field_validator("gateways")
    @classmethod
    def _gws(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if not v:
            raise ValueError("a route needs at least one gateway")
        return v


class UserConfig(_Section):
    username: str
    password: str
    number: str

    @field_validator("username")
    @classmethod
    def _user(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9._\-+]{1,64}", v):
            raise ValueError("username: 1-64 of letters, digits, '.', '_', '-', '+'")
        return v

    @field_validator("number")
    @classmethod
    def _number(cls, v: str) -> str:
        if not re.fullmatch(r"\+[0-9]{4,30}", v):
            raise ValueError("number must be E.164 with '+', e.g. +8613800000001")
        return v


def check_switch_references(
    gateways: tuple[GatewayConfig, ...],
    routes: tuple[RouteConfig, ...],
    users: tuple[UserConfig, ...],
) -> None:
    """Cross-section checks; raises ValueError naming the offending key."""
    names = [g.name for g in gateways]
    for i, name in enumerate(names):
        if names.index(name) != i:
            raise ValueError(f"gateways[{i}].name: duplicate gateway {name!r}")
    for i, r in enumerate(routes):
        for g in r.gateways:
            if g not in names:
                raise ValueError(f"routes[{i}].gateways: unknown gateway {g!r}")
    seen_user: set[str] = set()
    seen_num: set[str] = set()
    for i, u in enumerate(users):
        if u.username in seen_user:
            raise ValueError(f"users[{i}].username: duplicate {u.username!r}")
        if u.number in seen_num:
            raise ValueError(f"users[{i}].number: duplicate {u.number!r}")
        seen_user.add(u.username)
        seen_num.add(u.number)


def is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
