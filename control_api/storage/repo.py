"""Data access for the control plane. Every method is one short transaction; nothing here
knows about HTTP. Rows come back as plain dicts (``RowMapping`` copies)."""

from __future__ import annotations

import copy
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import (
    Connection,
    and_,
    case,
    delete,
    func,
    insert,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from control_api.storage import schema as t
from control_api.storage.db import Database

Row = dict[str, Any]
T = TypeVar("T")


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True, slots=True)
class OutboxClaim:
    token: str
    rows: tuple[Row, ...]


@dataclass(frozen=True, slots=True)
class AppUsage:
    app_key: str
    in_use: int
    limit: int


@dataclass(frozen=True, slots=True)
class GaugeSample:
    """What the metrics sampler reads from the shared database (cluster-wide values)."""

    cdr_pending: int
    cdr_parked: int
    oldest_pending_ms: int | None     # created_at of the oldest pending CDR, epoch ms
    apps: tuple[AppUsage, ...]


class _Refused(Exception):
    """Rolls back an admission that found the app at its limit."""


def _escape_like(s: str) -> str:
    return s.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


class Store:
    def __init__(self, db: Database, cache_ttl_s: float = 0.0) -> None:
        self.db = db
        self.engine = db.engine
        # Reference data (apps, accounts, numbers, files, templates) is read on every API call
        # and changes rarely: a short-lived cache saves most round trips. Writes through this
        # Store clear it at once; other nodes see changes within ``cache_ttl_s``.
        self.cache_ttl_s = cache_ttl_s
        self._ref: dict[tuple[Any, ...], tuple[float, Any]] = {}

    async def _write(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn`` in one write transaction (see :meth:`Database.run_write`)."""
        return await self.db.run_write(fn)

    async def _read(self, fn: Callable[[Connection], T]) -> T:
        return await self.db.run_read(fn)

    async def _cached(self, key: tuple[Any, ...], load: Callable[[], Awaitable[Any]]) -> Any:
        if self.cache_ttl_s <= 0:
            return await load()
        now = time.monotonic()
        hit = self._ref.get(key)
        if hit is not None and hit[0] > now:
            return copy.deepcopy(hit[1])
        value = await load()
        if len(self._ref) > 10_000:
            self._ref.clear()
        self._ref[key] = (now + self.cache_ttl_s, value)
        return copy.deepcopy(value)

    # -- generic helpers -----------------------------------------------------------------------

    async def _one(self, stmt: Any) -> Row | None:
        def _op(conn: Connection) -> Any:
            r = (conn.execute(stmt)).mappings().first()
            return dict(r) if r is not None else None
        return await self._read(_op)

    async def _all(self, stmt: Any) -> list[Row]:
        def _op(conn: Connection) -> Any:
            return [dict(r) for r in (conn.execute(stmt)).mappings().all()]
        return await self._read(_op)

    @staticmethod
    def _upsert(conn: Connection, table: Any, keys: dict[str, Any],
                      values: dict[str, Any], insert_only: dict[str, Any] | None = None) -> bool:
        """Update the row with ``keys`` or insert it. Returns True when inserted."""
        cond = and_(*(table.c[k] == v for k, v in keys.items()))
        res = conn.execute(update(table).where(cond).values(**values))
        if res.rowcount:
            return False
        conn.execute(insert(table).values(**keys, **values, **(insert_only or {})))
        return True

    # -- accounts ------------------------------------------------------------------------------

    async def upsert_account(self, account_id: str, name: str) -> None:
        self._ref.clear()
        def _op(conn: Connection) -> Any:
            self._upsert(conn, t.accounts, {"id": account_id}, {"name": name},
                               {"state": "active", "created_at": now_ms()})
        return await self._write(_op)

    async def get_account(self, account_id: str) -> Row | None:
        query = select(t.accounts).where(t.accounts.c.id == account_id)
        return await self._cached(("account", account_id), lambda: self._one(query))

    async def list_accounts(self) -> list[Row]:
        return await self._all(select(t.accounts).order_by(t.accounts.c.id))

    async def set_account_state(self, account_id: str, state: str) -> bool:
        self._ref.clear()
        def _op(conn: Connection) -> Any:
            r = conn.execute(update(t.accounts).where(t.accounts.c.id == account_id)
                                   .values(state=state))
            return bool(r.rowcount)
        return await self._write(_op)

    # -- apps ----------------------------------------------------------------------------------

    async def upsert_app(self, app_key: str, values: dict[str, Any]) -> bool:
        self._ref.clear()
        def _op(conn: Connection) -> Any:
            inserted = self._upsert(conn, t.apps, {"app_key": app_key}, values,
                                          {"created_at": now_ms()})
            exists = (conn.execute(select(t.concurrency.c.app_key)
                                         .where(t.concurrency.c.app_key == app_key))).first()
            if exists is None:
                conn.execute(insert(t.concurrency).values(app_key=app_key, in_use=0))
            return inserted
        return await self._write(_op)

    async def create_app(self, values: dict[str, Any]) -> None:
        self._ref.clear()
        def _op(conn: Connection) -> Any:
            conn.execute(insert(t.apps).values(**values, created_at=now_ms()))
            conn.execute(insert(t.concurrency).values(app_key=values["app_key"], in_use=0))
        return await self._write(_op)

    async def get_app(self, app_key: str) -> Row | None:
        query = select(t.apps).where(t.apps.c.app_key == app_key)
        return await self._cached(("app", app_key), lambda: self._one(query))

    async def list_apps(self, account_id: str | None = None) -> list[Row]:
        q = select(t.apps).order_by(t.apps.c.app_key)
        if account_id:
            q = q.where(t.apps.c.account_id == account_id)
        return await self._all(q)

    async def count_apps(self, account_id: str) -> int:
        def _op(conn: Connection) -> Any:
            return int((conn.execute(select(func.count()).select_from(t.apps)
                                           .where(t.apps.c.account_id == account_id))).scalar_one())
        return await self._read(_op)

    async def update_app(self, app_key: str, values: dict[str, Any]) -> bool:
        self._ref.clear()
        if not values:
            return await self.get_app(app_key) is not None
        def _op(conn: Connection) -> Any:
            r = conn.execute(update(t.apps).where(t.apps.c.app_key == app_key)
                                   .values(**values))
            return bool(r.rowcount)
        return await self._write(_op)

    async def in_use(self, app_key: str) -> int:
        def _op(conn: Connection) -> Any:
            v = (conn.execute(select(t.concurrency.c.in_use)
                                    .where(t.concurrency.c.app_key == app_key))).scalar()
            return int(v or 0)
        return await self._read(_op)

    # -- numbers -------------------------------------------------------------------------------

    async def upsert_number(self, number: str, values: dict[str, Any]) -> None:
        self._ref.clear()
        def _op(conn: Connection) -> Any:
            cur = (conn.execute(select(t.numbers.c.state)
                                      .where(t.numbers.c.number == number))).first()
            if cur is not None and cur[0] == "released":
                return  # NUM-8: release is irreversible, even for the config file
            extra = {"released_at": now_ms()} if values.get("state") == "released" else {}
            self._upsert(conn, t.numbers, {"number": number}, {**values, **extra},
                               {"issued_at": now_ms()})
        return await self._write(_op)

    async def get_number(self, number: str) -> Row | None:
        query = select(t.numbers).where(t.numbers.c.number == number)
        return await self._cached(("number", number), lambda: self._one(query))

    async def list_numbers(self, account_id: str | None = None, app_key: str | None = None,
                           state: str | None = None, kind: str | None = None) -> list[Row]:
        q = select(t.numbers).order_by(t.numbers.c.number)
        if account_id:
            q = q.where(t.numbers.c.account_id == account_id)
        if app_key:
            q = q.where(t.numbers.c.app_key == app_key)
        if state:
            q = q.where(t.numbers.c.state == state)
        if kind:
            q = q.where(t.numbers.c.kind == kind)
        return await self._all(q)

    async def insert_number(self, values: dict[str, Any]) -> bool:
        self._ref.clear()
        try:
            def _op(conn: Connection) -> Any:
                conn.execute(insert(t.numbers).values(**values, issued_at=now_ms()))
                return True
            return await self._write(_op)
        except IntegrityError:
            return False

    async def set_number_state(self, number: str, state: str) -> str:
        """Returns "ok", "missing" or "released" (NUM-8: a released number stays released)."""
        self._ref.clear()
        def _op(conn: Connection) -> Any:
            cur = (conn.execute(select(t.numbers.c.state)
                                      .where(t.numbers.c.number == number))).first()
            if cur is None:
                return "missing"
            if cur[0] == "released":
                return "released"
            values: dict[str, Any] = {"state": state}
            if state == "released":
                values["released_at"] = now_ms()
            conn.execute(update(t.numbers).where(t.numbers.c.number == number)
                               .values(**values))
            return "ok"
        return await self._write(_op)

    # -- play files and templates ---------------------------------------------------------------

    async def upsert_play_file(self, account_id: str, name: str, values: dict[str, Any]) -> None:
        self._ref.clear()
        def _op(conn: Connection) -> Any:
            self._upsert(conn, t.play_files, {"account_id": account_id, "name": name},
                               values, {"created_at": now_ms()})
        return await self._write(_op)

    async def get_play_file(self, account_id: str, name: str) -> Row | None:
        return await self._cached(("file", account_id, name), lambda: self._one(
            select(t.play_files).where(t.play_files.c.account_id == account_id,
                                       t.play_files.c.name == name)))

    async def list_play_files(self, account_id: str | None = None) -> list[Row]:
        q = select(t.play_files).order_by(t.play_files.c.account_id, t.play_files.c.name)
        if account_id:
            q = q.where(t.play_files.c.account_id == account_id)
        return await self._all(q)

    async def set_play_file_state(self, account_id: str, name: str, state: str,
                                  reason: str = "") -> bool:
        self._ref.clear()
        def _op(conn: Connection) -> Any:
            r = conn.execute(update(t.play_files).where(
                t.play_files.c.account_id == account_id, t.play_files.c.name == name)
                .values(state=state, reason=reason))
            return bool(r.rowcount)
        return await self._write(_op)

    async def upsert_template(self, account_id: str, tpl_id: str, values: dict[str, Any]) -> None:
        self._ref.clear()
        def _op(conn: Connection) -> Any:
            self._upsert(conn, t.templates, {"account_id": account_id, "id": tpl_id},
                               values, {"created_at": now_ms()})
        return await self._write(_op)

    async def get_template(self, account_id: str, tpl_id: str) -> Row | None:
        return await self._cached(("tpl", account_id, tpl_id), lambda: self._one(
            select(t.templates).where(t.templates.c.account_id == account_id,
                                      t.templates.c.id == tpl_id)))

    async def list_templates(self, account_id: str | None = None) -> list[Row]:
        q = select(t.templates).order_by(t.templates.c.account_id, t.templates.c.id)
        if account_id:
            q = q.where(t.templates.c.account_id == account_id)
        return await self._all(q)

    async def set_template_state(self, account_id: str, tpl_id: str, state: str,
                                 reason: str = "") -> bool:
        self._ref.clear()
        def _op(conn: Connection) -> Any:
            r = conn.execute(update(t.templates).where(
                t.templates.c.account_id == account_id, t.templates.c.id == tpl_id)
                .values(state=state, reason=reason))
            return bool(r.rowcount)
        return await self._write(_op)

    # -- calls ---------------------------------------------------------------------------------

    async def admit_call(self, call: dict[str, Any], limit: int) -> bool:
        """APP-2: reserve one port of the app and store the call row, atomically. False if the
        app already has ``limit`` calls in progress (on any node sharing this database)."""
        # The app's counter row is the one hot row every call of the app touches. PostgreSQL:
        # one self-committing statement (UPDATE ... RETURNING as a CTE feeding the INSERT), so
        # the row lock lasts one statement, not several client round trips.
        if self.db.dialect == "postgresql":
            slot = (update(t.concurrency)
                    .where(t.concurrency.c.app_key == call["app_key"],
                           t.concurrency.c.in_use < limit)
                    .values(in_use=t.concurrency.c.in_use + 1)
                    .returning(t.concurrency.c.app_key).cte("slot"))
            cols = list(call)
            stmt = insert(t.calls).from_select(cols, select(
                *(literal(call[c], type_=t.calls.c[c].type).label(c) for c in cols)
            ).select_from(slot))

            def _one_statement(conn: Connection) -> bool:
                return bool(conn.execute(stmt).rowcount == 1)
            return await self.db.run_autocommit(_one_statement)

        # SQLite: a single writer thread, no lock waits; update the hot row last anyway.
        def _op(conn: Connection) -> bool:
            conn.execute(insert(t.calls).values(**call))
            r = conn.execute(
                update(t.concurrency)
                .where(t.concurrency.c.app_key == call["app_key"], t.concurrency.c.in_use < limit)
                .values(in_use=t.concurrency.c.in_use + 1))
            if not r.rowcount:
                raise _Refused
            return True
        try:
            return await self._write(_op)
        except _Refused:
            return False

    async def abort_call(self, session_id: str, app_key: str) -> None:
        """The switch refused the call: forget it and give the port back."""
        def _op(conn: Connection) -> Any:
            r = conn.execute(delete(t.calls).where(t.calls.c.session_id == session_id,
                                                         t.calls.c.ended_at.is_(None)))
            if r.rowcount:
                self._release(conn, app_key)
        return await self._write(_op)

    @staticmethod
    def _release(conn: Connection, app_key: str) -> None:
        conn.execute(update(t.concurrency)
                           .where(t.concurrency.c.app_key == app_key, t.concurrency.c.in_use > 0)
                           .values(in_use=t.concurrency.c.in_use - 1))

    async def get_call(self, session_id: str) -> Row | None:
        return await self._one(select(t.calls).where(t.calls.c.session_id == session_id))

    async def end_call(self, session_id: str, values: dict[str, Any],
                       cdr: dict[str, Any] | None) -> bool:
        """Close the call, release its port and enqueue its CDR in ONE transaction (EV-4: the
        CDR cannot be lost once the call is recorded as ended). Idempotent: False if the call
        was already closed or is unknown."""
        def _op(conn: Connection) -> bool:
            row = conn.execute(
                update(t.calls)
                .where(t.calls.c.session_id == session_id, t.calls.c.ended_at.is_(None))
                .values(**values).returning(t.calls.c.app_key)).first()
            if row is None:
                return False
            if cdr is not None:
                conn.execute(insert(t.cdr_outbox).values(**cdr))
            self._release(conn, row[0])      # the hot row last (see admit_call)
            return True
        return await self._write(_op)

    async def open_calls(self, node: str) -> list[Row]:
        return await self._all(select(t.calls).where(t.calls.c.node == node,
                                                      t.calls.c.ended_at.is_(None)))

    async def count_callee_calls_2(self, callee: str, since_long_ms: int,
                                   since_short_ms: int) -> tuple[int, int]:
        """(calls since ``since_short_ms``, calls since ``since_long_ms``) in one query."""
        c = t.calls.c
        def _op(conn: Connection) -> Any:
            row = (conn.execute(
                select(func.coalesce(func.sum(case((c.created_at >= since_short_ms, 1),
                                                   else_=0)), 0), func.count())
                .where(c.callee == callee, c.created_at >= since_long_ms))).one()
            return int(row[0]), int(row[1])
        return await self._read(_op)

    async def search_calls(self, *, since_ms: int, until_ms: int | None = None,
                           service_type: str | None = None, app_key: str | None = None,
                           account_id: str | None = None, session_id: str | None = None,
                           caller: str | None = None, callee: str | None = None,
                           limit: int = 100, offset: int = 0) -> list[Row]:
        """EV-7: fuzzy (substring) match on sessionId / caller / callee; LIKE wildcards in the
        input are escaped, so ``%`` or ``_`` match themselves."""
        q = select(t.calls).where(t.calls.c.created_at >= since_ms)
        if until_ms is not None:
            q = q.where(t.calls.c.created_at <= until_ms)
        if service_type:
            q = q.where(t.calls.c.service_type == service_type)
        if app_key:
            q = q.where(t.calls.c.app_key == app_key)
        if account_id:
            q = q.where(t.calls.c.account_id == account_id)
        for col, val in ((t.calls.c.session_id, session_id), (t.calls.c.caller, caller),
                         (t.calls.c.callee, callee)):
            if val:
                q = q.where(col.like(f"%{_escape_like(val)}%", escape="\\"))
        q = q.order_by(t.calls.c.created_at.desc()).limit(limit).offset(offset)
        return await self._all(q)

    async def find_recording(self, object_name: str) -> Row | None:
        return await self._one(select(t.calls).where(t.calls.c.record_object_name == object_name))

    async def expire_recordings(self, before_ms: int) -> list[str]:
        """REC-4: forget recordings of calls that ended before ``before_ms``; returns names."""
        def _op(conn: Connection) -> Any:
            rows = (conn.execute(select(t.calls.c.session_id, t.calls.c.record_object_name)
                                       .where(t.calls.c.record_object_name.is_not(None),
                                              t.calls.c.ended_at < before_ms))).all()
            if rows:
                conn.execute(update(t.calls).where(
                    t.calls.c.session_id.in_([r[0] for r in rows])).values(
                    record_object_name=None))
            return [str(r[1]) for r in rows]
        return await self._write(_op)

    # -- CDR outbox ----------------------------------------------------------------------------

    async def claim_cdrs(self, token: str, now: int, lease_ms: int, settle_before: int,
                         limit: int = 200) -> OutboxClaim:
        """Lease due CDRs to ``token``. One UPDATE ... WHERE id IN (subquery): atomic on SQLite;
        on PostgreSQL the subquery takes ``FOR UPDATE SKIP LOCKED`` so nodes claiming at the
        same moment take disjoint rows without waiting. A crashed holder's lease expires and the
        rows are claimed again (at-least-once)."""
        o = t.cdr_outbox
        o2 = t.cdr_outbox.alias("o2")
        # EV-3 batching: a group (app, callEndTime) becomes due as a whole once its OLDEST row
        # has settled for the batch delay, so CDRs of one second written a little apart still
        # go out in one push.
        settled_group = (select(o2.c.id)
                         .where(o2.c.app_key == o.c.app_key,
                                o2.c.call_end_time == o.c.call_end_time,
                                o2.c.state == "pending", o2.c.created_at <= settle_before)
                         .exists())
        sub = (select(o.c.id)
               .where(o.c.state == "pending", o.c.next_attempt_at <= now, settled_group,
                      or_(o.c.lease_until.is_(None), o.c.lease_until < now))
               .order_by(o.c.app_key, o.c.call_end_time, o.c.id).limit(limit))
        if self.db.dialect == "postgresql":
            sub = sub.with_for_update(skip_locked=True)
        def _op(conn: Connection) -> OutboxClaim:
            conn.execute(update(o).where(o.c.id.in_(sub.scalar_subquery()))
                         .values(lease_owner=token, lease_until=now + lease_ms))
            rows = conn.execute(select(o).where(o.c.lease_owner == token)
                                .order_by(o.c.id)).mappings().all()
            return OutboxClaim(token, tuple(dict(r) for r in rows))
        return await self._write(_op)

    async def cdr_delivered(self, ids: Sequence[int], token: str) -> None:
        o = t.cdr_outbox
        def _op(conn: Connection) -> Any:
            conn.execute(update(o).where(o.c.id.in_(ids), o.c.lease_owner == token)
                               .values(state="delivered", delivered_at=now_ms(),
                                       lease_owner=None, lease_until=None, last_error=""))
        return await self._write(_op)

    async def cdr_failed(self, ids: Sequence[int], token: str, error: str, next_at: int,
                         max_retries: int) -> None:
        """One more failed attempt; after ``1 + max_retries`` attempts the CDR is parked for a
        manual re-push (EV-4)."""
        o = t.cdr_outbox
        def _op(conn: Connection) -> Any:
            cond = and_(o.c.id.in_(ids), o.c.lease_owner == token)
            conn.execute(update(o).where(cond).values(
                attempts=o.c.attempts + 1, next_attempt_at=next_at, lease_owner=None,
                lease_until=None, last_error=error[:500]))
            conn.execute(update(o).where(o.c.id.in_(ids), o.c.attempts > max_retries,
                                               o.c.state == "pending")
                               .values(state="parked"))
        return await self._write(_op)

    async def cdr_release(self, token: str) -> None:
        """Give back a lease without counting an attempt (clean shutdown)."""
        o = t.cdr_outbox
        def _op(conn: Connection) -> Any:
            conn.execute(update(o).where(o.c.lease_owner == token)
                               .values(lease_owner=None, lease_until=None))
        return await self._write(_op)

    async def repush_cdrs(self, ids: Iterable[int] | None = None, *, state: str | None = None,
                          app_key: str | None = None) -> int:
        """Manual re-push: back to pending with a fresh retry budget."""
        o = t.cdr_outbox
        q = update(o).where(o.c.state != "pending")
        if ids is not None:
            q = q.where(o.c.id.in_(list(ids)))
        if state:
            q = q.where(o.c.state == state)
        if app_key:
            q = q.where(o.c.app_key == app_key)
        def _op(conn: Connection) -> Any:
            r = conn.execute(q.values(state="pending", attempts=0, next_attempt_at=0,
                                            lease_owner=None, lease_until=None))
            return int(r.rowcount)
        return await self._write(_op)

    async def sample_gauges(self) -> GaugeSample:
        """Outbox depth by state, the oldest pending CDR, and every app's ports in use against
        its limit. Cheap: the outbox part reads the (state, next_attempt_at) index range of the
        undelivered rows only; one row per app for the rest."""
        o, c, a = t.cdr_outbox, t.concurrency, t.apps
        outbox_q = (select(o.c.state, func.count(), func.min(o.c.created_at))
                    .where(o.c.state.in_(("pending", "parked"))).group_by(o.c.state))
        apps_q = (select(c.c.app_key, c.c.in_use, a.c.max_concurrent_calls)
                  .join_from(c, a, a.c.app_key == c.c.app_key).order_by(c.c.app_key))
        def _op(conn: Connection) -> GaugeSample:
            by_state = {str(r[0]): (int(r[1]), r[2]) for r in conn.execute(outbox_q).all()}
            apps = tuple(AppUsage(str(r[0]), int(r[1]), int(r[2]))
                         for r in conn.execute(apps_q).all())
            pending, oldest = by_state.get("pending", (0, None))
            return GaugeSample(pending, by_state.get("parked", (0, None))[0],
                               int(oldest) if oldest is not None else None, apps)
        return await self._read(_op)

    async def list_cdrs(self, *, state: str | None = None, app_key: str | None = None,
                        session_id: str | None = None, limit: int = 100,
                        offset: int = 0) -> list[Row]:
        o = t.cdr_outbox
        q = select(o).order_by(o.c.id.desc()).limit(limit).offset(offset)
        if state:
            q = q.where(o.c.state == state)
        if app_key:
            q = q.where(o.c.app_key == app_key)
        if session_id:
            q = q.where(o.c.session_id == session_id)
        return await self._all(q)

    # -- billing -------------------------------------------------------------------------------

    async def usage(self, since_ms: int, until_ms: int, account_id: str | None = None,
                    app_key: str | None = None) -> list[Row]:
        """BILL-3: ended calls grouped per app and service type."""
        c = t.calls
        q = (select(c.c.account_id, c.c.app_key, c.c.service_type,
                    func.count().label("calls"),
                    func.coalesce(func.sum(c.c.minutes), 0).label("minutes"),
                    func.coalesce(func.sum(c.c.charge_milli), 0).label("charge_milli"))
             .where(c.c.ended_at.is_not(None), c.c.ended_at >= since_ms, c.c.ended_at < until_ms)
             .group_by(c.c.account_id, c.c.app_key, c.c.service_type)
             .order_by(c.c.account_id, c.c.app_key, c.c.service_type))
        if account_id:
            q = q.where(c.c.account_id == account_id)
        if app_key:
            q = q.where(c.c.app_key == app_key)
        return await self._all(q)

    # -- cluster nodes -------------------------------------------------------------------------

    async def node_alive(self, name: str, api_url: str, started_at_ms: int,
                         now: int | None = None) -> None:
        """Register this node (at start) or refresh its heartbeat: one upsert."""
        beat = now if now is not None else now_ms()
        def _op(conn: Connection) -> Any:
            self._upsert(conn, t.nodes, {"name": name},
                         {"api_url": api_url, "started_at": started_at_ms, "heartbeat_at": beat})
        await self.db.run_autocommit(_op)

    async def node_stopped(self, name: str) -> None:
        """A clean stop: heartbeat 0, so peers answer for its calls at once instead of
        waiting for the heartbeat to go stale."""
        def _op(conn: Connection) -> Any:
            conn.execute(update(t.nodes).where(t.nodes.c.name == name).values(heartbeat_at=0))
        await self.db.run_autocommit(_op)

    async def get_node(self, name: str) -> Row | None:
        return await self._one(select(t.nodes).where(t.nodes.c.name == name))

    async def list_nodes(self) -> list[Row]:
        return await self._all(select(t.nodes).order_by(t.nodes.c.name))
