"""Test-side peers of the control API, written independently of the server code:
a request signer implementing the spec's digest formulas (§1.1, §1.2), a real asyncio HTTP
webhook receiver, and a verifier of push signatures (§1.3)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import io
import json
import re
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import soundfile

APP_KEY = "test-app-key-01"
APP_SECRET = "test-app-secret-01"
ADMIN_TOKEN = "admin-token-for-tests"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def created_now(offset_s: float = 0) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + offset_s))


def aksk_headers(key: str = APP_KEY, secret: str = APP_SECRET, *, nonce: str | None = None,
                 created: str | None = None) -> dict[str, str]:
    nonce = nonce or uuid.uuid4().hex
    created = created or created_now()
    digest = base64.b64encode(hmac.new(secret.encode(), (nonce + created).encode(),
                                       hashlib.sha256).digest()).decode()
    return {
        "Content-Type": "application/json;charset=UTF-8",
        "Authorization": 'AKSK realm="SDP",profile="UsernameToken",type="Appkey"',
        "X-AKSK": f'UsernameToken Username="{key}", PasswordDigest="{digest}", '
                  f'Nonce="{nonce}", Created="{created}"',
    }


def wsse_headers(key: str = APP_KEY, secret: str = APP_SECRET, *, hex_form: bool = True,
                 nonce: str | None = None, created: str | None = None) -> dict[str, str]:
    nonce = nonce or uuid.uuid4().hex.upper()
    created = created or created_now()
    h = hashlib.sha256((nonce + created + secret).encode())
    digest = base64.b64encode(h.hexdigest().encode() if hex_form else h.digest()).decode()
    return {
        "Content-Type": "application/json;charset=UTF-8",
        "Authorization": 'WSSE realm="SDP",profile="UsernameToken",type="Appkey"',
        "X-WSSE": f'UsernameToken Username="{key}",PasswordDigest="{digest}",'
                  f'Nonce="{nonce}",Created="{created}"',
    }


def b64(url: str) -> str:
    return base64.b64encode(url.encode()).decode()


def alaw_wav(seconds: float = 0.2, rate: int = 8000, subtype: str = "ALAW",
             channels: int = 1) -> bytes:
    buf = io.BytesIO()
    data = np.zeros((int(seconds * rate), channels) if channels > 1 else int(seconds * rate),
                    dtype=np.int16)
    soundfile.write(buf, data, rate, format="WAV", subtype=subtype)
    return buf.getvalue()


def verify_push_signature(headers: dict[str, str], url: str, key: str, secret: str,
                          newlines: bool = True) -> bool:
    if headers.get("authorization") != 'AKSK realm="SDP",profile="UsernameToken",type="Appkey"':
        return False
    attrs = dict(re.findall(r'(\w+)="([^"]*)"', headers.get("x-aksk", "")))
    if attrs.get("Username") != key:
        return False
    msg = (f"{url}\n{attrs['Nonce']}\n{attrs['Created']}" if newlines
           else f"{url}{attrs['Nonce']}{attrs['Created']}")
    want = base64.b64encode(hmac.new(secret.encode(), msg.encode(),
                                     hashlib.sha256).digest()).decode()
    return hmac.compare_digest(want, attrs.get("PasswordDigest", ""))


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: Any
    at: float


@dataclass
class Receiver:
    """A real HTTP/1.1 server on 127.0.0.1 (asyncio streams). ``modes[path]``: ``ok`` (200
    ``{"resultcode":"0"}``), ``fail`` (HTTP 500), ``rc1`` (200 with ``resultcode "1"``),
    ``hang`` (never answers). Every request is recorded, whatever the answer."""

    modes: dict[str, str] = field(default_factory=dict)
    requests: list[Received] = field(default_factory=list)
    port: int = 0
    _server: asyncio.Server | None = None
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)

    async def start(self) -> Receiver:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0, backlog=2048)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def stop(self) -> None:
        for w in list(self._writers):
            w.close()
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            line = await reader.readline()
            if not line:
                return
            _method, target, _ver = line.decode().split(" ", 2)
            headers: dict[str, str] = {}
            while True:
                h = await reader.readline()
                if h in (b"\r\n", b"\n", b""):
                    break
                k, _, v = h.decode().partition(":")
                headers[k.strip().lower()] = v.strip()
            body_raw = await reader.readexactly(int(headers.get("content-length", "0")))
            try:
                body = json.loads(body_raw)
            except ValueError:
                body = body_raw
            self.requests.append(Received(target, headers, body, time.time()))
            async with self._changed:
                self._changed.notify_all()
            mode = self.modes.get(target, "ok")
            if mode == "hang":
                await asyncio.sleep(3600)
                return
            status, payload = {"ok": (200, b'{"resultcode":"0","resultdesc":"Success"}'),
                               "fail": (500, b'{"resultcode":"1"}'),
                               "rc1": (200, b'{"resultcode":"1","resultdesc":"no"}')}[mode]
            writer.write(f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n"
                         f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n"
                         .encode() + payload)
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    def on(self, path: str) -> list[Received]:
        return [r for r in self.requests if r.path == path]

    async def wait_for(self, pred: Callable[[], bool], timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        async with self._changed:
            while not pred():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"receiver: condition not met in {timeout}s; "
                                         f"got {[(r.path, r.body) for r in self.requests]}")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), min(left, 0.2))


def node_toml(*, data_dir: str, db_url: str, port: int, extra: str = "",
              max_calls: int = 10, record: bool = True, status_url: str = "",
              fee_url: str = "", api_extra: str = "", batch_delay_s: float = 0.2,
              node_name: str = "vc1", lease_s: float = 2,
              webhook_timeout_s: float = 1) -> str:
    return f"""
[node]
name = "{node_name}"
data_dir = "{data_dir}"

[api]
listen = "127.0.0.1:{port}"
admin_token = "{ADMIN_TOKEN}"
public_url = "http://127.0.0.1:{port}"
{api_extra}

[storage]
url = "{db_url}"

[webhooks]
timeout_s = {webhook_timeout_s}
cdr_retry_interval_s = 0.5
cdr_max_retries = 2
cdr_batch_delay_s = {batch_delay_s}
outbox_poll_s = 0.1
cdr_lease_s = {lease_s}

[[accounts]]
id = "sp1"
name = "Test SP"

[[accounts]]
id = "sp2"
name = "Other SP"

[[apps]]
account = "sp1"
app_key = "{APP_KEY}"
app_secret = "{APP_SECRET}"
status_url = "{status_url}"
fee_url = "{fee_url}"
record = {str(record).lower()}
max_concurrent_calls = {max_calls}

[[apps]]
account = "sp2"
app_key = "other-app-key-02"
app_secret = "other-secret"

[[numbers]]
account = "sp1"
number = "+8675500000001"
kind = "display"

[[numbers]]
account = "sp1"
number = "+8675500000002"
kind = "display"

[[numbers]]
account = "sp1"
number = "+8675500000009"
kind = "bind"
app_key = "{APP_KEY}"

[[numbers]]
account = "sp2"
number = "+8675500000077"
kind = "display"

[[play_files]]
account = "sp1"
name = "wait_voice1.wav"
path = "prompts/wait_voice1.wav"

[[play_files]]
account = "sp1"
name = "pre.wav"
path = "prompts/pre.wav"

[[templates]]
account = "sp1"
id = "tpl_code"
text = "您的验证码为${{NUM_6}}，请在${{TXT_4}}分钟内输入。"
{extra}
"""
