"""Fixtures: a throwaway database (SQLite file or a fresh PostgreSQL database dropped after the
test), a real webhook receiver, and a running control plane with the fake switch backend."""

from __future__ import annotations

import asyncio
import concurrent.futures
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from control_api.config import parse_config
from control_api.fake_backend import FakeBackend, FakeScript
from control_api.plane import ControlPlane, build_control_plane
from switch.events import CallEventBus
from tests.integration.control_api.helpers import Receiver, alaw_wav, free_port, node_toml

PG_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"


def _pg_admin(sql: str) -> None:
    """Run one statement on the maintenance database, from a thread with its own loop (the
    fixture may be set up while the test's loop is running)."""

    async def go() -> None:
        conn = await asyncpg.connect(PG_ADMIN_DSN)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    with concurrent.futures.ThreadPoolExecutor(1) as ex:
        ex.submit(asyncio.run, go()).result(timeout=60)


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database for one test, dropped afterwards."""
    name = f"vc_test_{uuid.uuid4().hex[:12]}"
    _pg_admin(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"
    finally:
        _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path}/vc.db"
    url: str = request.getfixturevalue("pg_url")
    return url


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = await Receiver().start()
    yield r
    await r.stop()


@dataclass
class Node:
    plane: ControlPlane
    backend: FakeBackend
    bus: CallEventBus
    http: httpx.AsyncClient
    data_dir: Path

    @property
    def url(self) -> str:
        return self.plane.base_url


NodeFactory = Callable[..., Awaitable[Node]]


def write_prompts(data_dir: Path) -> None:
    (data_dir / "prompts").mkdir(parents=True, exist_ok=True)
    (data_dir / "prompts" / "wait_voice1.wav").write_bytes(alaw_wav(0.2))
    (data_dir / "prompts" / "pre.wav").write_bytes(alaw_wav(0.1))


@pytest.fixture
async def make_node(tmp_path: Path, db_url: str) -> AsyncIterator[NodeFactory]:
    nodes: list[Node] = []

    async def factory(script: Callable[[Any], FakeScript] | None = None,
                      **toml_kw: Any) -> Node:
        data_dir = tmp_path / f"node{len(nodes)}"
        write_prompts(data_dir)
        port = free_port()
        text = node_toml(data_dir=str(data_dir), db_url=db_url, port=port, **toml_kw)
        loaded = parse_config(text, "test", environ={})
        bus = CallEventBus()
        backend = FakeBackend(bus, script_for=script) if script else FakeBackend(bus)
        plane = await build_control_plane(loaded, backend, bus)
        await plane.start()
        http = httpx.AsyncClient(base_url=plane.base_url, timeout=10)
        node = Node(plane, backend, bus, http, data_dir)
        nodes.append(node)
        return node

    yield factory
    for n in nodes:
        await n.backend.hang_up_all()
        await n.http.aclose()
        await n.plane.stop()


@pytest.fixture
async def node(make_node: NodeFactory) -> Node:
    return await make_node()
