"""Engine set-up and the schema migration runner.

Why a small versioned runner instead of alembic: the schema is owned by this one package, must
be applied automatically by every node at start (several nodes may start at once against one
PostgreSQL) and must work identically on SQLite. The runner keeps an ordered list of
``(version, step)``; each pending step runs in its own transaction together with the
``schema_version`` row, under a PostgreSQL advisory lock, so concurrent starters apply each
step exactly once (on SQLite a colliding starter retries and finds the schema current).
Alembic's env.py/ini/script directory machinery would add packaging and configuration without
buying anything here.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import structlog
from sqlalchemy import Connection, Engine, create_engine, event, insert, inspect, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from control_api.storage import schema

log = structlog.get_logger("voicecall.storage")

_ADVISORY_LOCK_KEY = 0x766F6963  # "voic"
T = TypeVar("T")


def _v1(conn: Connection) -> None:
    schema.metadata.create_all(conn, checkfirst=True)


def _v2(conn: Connection) -> None:
    # A fresh database got ``nodes`` from v1's create_all already; one at v1 gets it here.
    schema.nodes.create(conn, checkfirst=True)


MIGRATIONS: tuple[tuple[int, Callable[[Connection], None]], ...] = ((1, _v1), (2, _v2))


def _now_ms() -> int:
    return int(time.time() * 1000)


class Database:
    """One engine per process. ``dialect`` is ``"sqlite"`` or ``"postgresql"``."""

    def __init__(self, url: str) -> None:
        u = make_url(url)
        if u.get_backend_name() == "sqlite" and u.database and u.database != ":memory:":
            Path(u.database).parent.mkdir(parents=True, exist_ok=True)
        self.url = url
        self.dialect = u.get_backend_name()
        kwargs: dict[str, object] = {}
        if self.dialect == "postgresql":
            kwargs.update(pool_size=10, max_overflow=20, pool_pre_ping=True)
        else:
            # pysqlite opens no transaction for a SELECT, so the rollback-on-return of every
            # pooled read would only cost a thread hop; writes always commit or roll back.
            kwargs.update(pool_reset_on_return=None)
        self.engine: AsyncEngine = create_async_engine(url, **kwargs)
        self._sync_engine: Engine | None = None
        self._writer: ThreadPoolExecutor | None = None
        self._readers: ThreadPoolExecutor | None = None
        if self.dialect == "sqlite":
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
            # Request-path statements on SQLite run on plain sqlite3 connections in worker
            # threads, one thread hop per *transaction* (aiosqlite costs hops per statement,
            # cursor and fetch, and under load the GIL hand-offs dominate). One writer thread
            # also serialises this process's writers, so they never spin in SQLite's busy
            # handler; readers are not blocked (WAL).
            self._sync_engine = create_engine(u.set(drivername="sqlite"), pool_size=8,
                                              max_overflow=4)
            event.listen(self._sync_engine, "connect", _sqlite_pragmas)
            self._writer = ThreadPoolExecutor(1, thread_name_prefix="sqlite-writer")
            self._readers = ThreadPoolExecutor(4, thread_name_prefix="sqlite-reader")

    async def run_write(self, fn: Callable[[Connection], T]) -> T:
        """``fn(conn)`` inside one transaction, committed if it returns, rolled back if it
        raises. PostgreSQL: asyncpg through ``run_sync``; SQLite: the writer thread."""
        if self._sync_engine is None:
            async with self.engine.begin() as conn:
                return await conn.run_sync(fn)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._writer, self._sync_write, fn)

    async def run_autocommit(self, fn: Callable[[Connection], T]) -> T:
        """``fn(conn)`` whose single statement commits by itself (PostgreSQL: no transaction
        round trips, row locks released as the statement ends). SQLite: :meth:`run_write`."""
        if self._sync_engine is not None:
            return await self.run_write(fn)
        async with self.engine.connect() as conn:
            auto = await conn.execution_options(isolation_level="AUTOCOMMIT")
            return await auto.run_sync(fn)

    async def run_read(self, fn: Callable[[Connection], T]) -> T:
        if self._sync_engine is None:
            async with self.engine.connect() as conn:
                return await conn.run_sync(fn)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._readers, self._sync_read, fn)

    def _sync_write(self, fn: Callable[[Connection], T]) -> T:
        assert self._sync_engine is not None
        with self._sync_engine.begin() as conn:
            return fn(conn)

    def _sync_read(self, fn: Callable[[Connection], T]) -> T:
        assert self._sync_engine is not None
        with self._sync_engine.connect() as conn:
            return fn(conn)

    async def migrate(self) -> int:
        """Apply pending migrations; returns the resulting schema version.

        SQLite has no advisory lock and pysqlite starts its transaction lazily, so two
        processes migrating one file at the same instant can collide on CREATE TABLE; the
        loser simply retries and then finds the schema current."""
        for attempt in range(5):
            try:
                return await self._migrate_once()
            except (OperationalError, IntegrityError):
                if self.dialect != "sqlite" or attempt == 4:
                    raise
                await asyncio.sleep(0.1 * (attempt + 1))
        raise AssertionError("unreachable")

    async def _migrate_once(self) -> int:
        async with self.engine.begin() as conn:
            if self.dialect == "postgresql":
                await conn.execute(text(f"SELECT pg_advisory_xact_lock({_ADVISORY_LOCK_KEY})"))
            has = await conn.run_sync(lambda c: inspect(c).has_table("schema_version"))
            current = 0
            if has:
                row = (await conn.execute(
                    select(schema.schema_version.c.version)
                    .order_by(schema.schema_version.c.version.desc()).limit(1)
                )).first()
                current = int(row[0]) if row else 0
            for version, step in MIGRATIONS:
                if version <= current:
                    continue
                await conn.run_sync(step)
                await conn.execute(insert(schema.schema_version).values(
                    version=version, applied_at=_now_ms()))
                log.info("migrated", version=version)
                current = version
        return current

    async def close(self) -> None:
        await self.engine.dispose()
        for ex in (self._writer, self._readers):
            if ex is not None:
                await asyncio.get_running_loop().run_in_executor(None, ex.shutdown)
        if self._sync_engine is not None:
            self._sync_engine.dispose()


def _sqlite_pragmas(dbapi_conn: object, _record: object) -> None:
    cur = dbapi_conn.cursor()  # type: ignore[attr-defined]
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()
