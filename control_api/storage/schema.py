"""Tables (SQLAlchemy Core). Times are integer epoch milliseconds: portable between SQLite and
PostgreSQL, no time-zone ambiguity, millisecond resolution for CDRs."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

schema_version = Table(
    "schema_version", metadata,
    Column("version", Integer, primary_key=True),
    Column("applied_at", BigInteger, nullable=False),
)

accounts = Table(
    "accounts", metadata,
    Column("id", String(64), primary_key=True),
    Column("name", String(128), nullable=False, default=""),
    Column("state", String(16), nullable=False, default="active"),   # active | inactive
    Column("created_at", BigInteger, nullable=False),
)

apps = Table(
    "apps", metadata,
    Column("app_key", String(128), primary_key=True),
    Column("account_id", String(64), nullable=False, index=True),
    Column("app_secret", String(256), nullable=False),
    Column("name", String(128), nullable=False, default=""),
    Column("status_url", String(1024), nullable=False, default=""),
    Column("fee_url", String(1024), nullable=False, default=""),
    Column("record", Boolean, nullable=False, default=False),
    Column("max_concurrent_calls", Integer, nullable=False, default=10),
    Column("state", String(16), nullable=False, default="active"),   # active | suspended
    Column("push_sign_newlines", Boolean, nullable=False, default=True),
    Column("created_at", BigInteger, nullable=False),
)

numbers = Table(
    "numbers", metadata,
    Column("number", String(32), primary_key=True),
    Column("account_id", String(64), nullable=False, index=True),
    Column("kind", String(16), nullable=False),                       # display | bind
    Column("app_key", String(128), nullable=True),
    Column("state", String(16), nullable=False, default="active"),   # active | paused | released
    Column("issued_at", BigInteger, nullable=False),
    Column("released_at", BigInteger, nullable=True),
)

play_files = Table(
    "play_files", metadata,
    Column("account_id", String(64), primary_key=True),
    Column("name", String(128), primary_key=True),
    Column("path", String(1024), nullable=False),
    Column("state", String(16), nullable=False, default="pending"),  # pending|approved|rejected
    Column("reason", String(256), nullable=False, default=""),
    Column("size", Integer, nullable=False, default=0),
    Column("created_at", BigInteger, nullable=False),
)

templates = Table(
    "templates", metadata,
    Column("account_id", String(64), primary_key=True),
    Column("id", String(64), primary_key=True),
    Column("text", Text, nullable=False),
    Column("state", String(16), nullable=False, default="pending"),
    Column("reason", String(256), nullable=False, default=""),
    Column("created_at", BigInteger, nullable=False),
)

# APP-2: one row per app; admission is "UPDATE .. SET in_use = in_use + 1 WHERE in_use < limit",
# atomic on both engines, shared by every node on the same database.
concurrency = Table(
    "app_concurrency", metadata,
    Column("app_key", String(128), primary_key=True),
    Column("in_use", Integer, nullable=False, default=0),
)

calls = Table(
    "calls", metadata,
    Column("session_id", String(256), primary_key=True),
    Column("node", String(64), nullable=False),
    Column("app_key", String(128), nullable=False),
    Column("account_id", String(64), nullable=False),
    Column("service_type", String(8), nullable=False),                # 002 | 001
    Column("display_nbr", String(32), nullable=False),
    Column("caller", String(32), nullable=False),                     # callback A / display
    Column("callee", String(32), nullable=False),                     # B / notify callee
    Column("display_callee_nbr", String(32), nullable=False, default=""),
    Column("bind_nbr", String(32), nullable=False, default=""),
    Column("user_data", String(256), nullable=False, default=""),
    Column("status_url", String(1024), nullable=False, default=""),
    Column("fee_url", String(1024), nullable=False, default=""),
    Column("record_flag", Boolean, nullable=False, default=False),
    Column("party_type_required", Boolean, nullable=False, default=False),
    Column("created_at", BigInteger, nullable=False),
    Column("ended_at", BigInteger, nullable=True),
    Column("state_code", Integer, nullable=True),
    Column("ul_fail_reason", Integer, nullable=True),
    Column("record_object_name", String(128), nullable=True),
    Column("minutes", Integer, nullable=True),
    Column("charge_milli", BigInteger, nullable=True),                # charge × 1000
    Index("ix_calls_app_created", "app_key", "created_at"),
    Index("ix_calls_callee_created", "callee", "created_at"),
    Index("ix_calls_node_open", "node", "ended_at"),
)

cdr_outbox = Table(
    "cdr_outbox", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("session_id", String(256), nullable=False),
    Column("app_key", String(128), nullable=False),
    Column("fee_url", String(1024), nullable=False),
    Column("call_end_time", String(32), nullable=False),              # batching key (EV-3)
    Column("payload", Text, nullable=False),                          # FeeInfo JSON
    Column("state", String(16), nullable=False, default="pending"),  # pending|delivered|parked
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", BigInteger, nullable=False),
    Column("lease_owner", String(64), nullable=True),
    Column("lease_until", BigInteger, nullable=True),
    Column("last_error", String(512), nullable=False, default=""),
    Column("created_at", BigInteger, nullable=False),
    Column("delivered_at", BigInteger, nullable=True),
    UniqueConstraint("session_id", name="uq_cdr_outbox_session"),
    Index("ix_cdr_outbox_due", "state", "next_attempt_at"),
)

# Cluster membership (migration 2): each node's internal API address and heartbeat, so a node
# can hand a request about a call (callStop, its SIP trace) to the node that runs it.
nodes = Table(
    "nodes", metadata,
    Column("name", String(64), primary_key=True),                     # [node] name
    Column("api_url", String(1024), nullable=False),                  # reachable by the peers
    Column("started_at", BigInteger, nullable=False),
    Column("heartbeat_at", BigInteger, nullable=False),               # 0 = stopped cleanly
)
