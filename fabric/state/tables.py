"""Control-plane tables (SQLAlchemy 2 Core).  [shell]

Shared schema `fabric`: tenants and apply history. One schema per tenant, `tenant_<id>`, with
its declared resources, secrets, runs and node runs. Tenant tables are defined once against the
placeholder schema `tenant` and bound to a real schema with `schema_translate_map`.

Every declared-resource table has the same shape: the spec as JSONB (what the YAML said,
secrets as references), encrypted secret values, the fingerprint apply wrote, a hash of the
row's content taken by PostgreSQL at write time (`content_md5`; a hand edit makes it disagree
with the content, which is how drift is seen without decoding specs), `protect`, and
`created_at` / `updated_at` / `deleted_at` (soft delete).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

from fabric.addresses import Kind

SHARED_SCHEMA = "fabric"
TENANT_PLACEHOLDER = "tenant"

shared = MetaData(schema=SHARED_SCHEMA)
tenant = MetaData(schema=TENANT_PLACEHOLDER)


def _timestamps() -> list[Column]:
    return [
        Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        Column("deleted_at", DateTime(timezone=True)),
    ]


def _resource_columns() -> list[Column]:
    return [
        Column("id", BigInteger, Identity(always=False), primary_key=True),
        Column("spec", JSONB, nullable=False),
        Column("secrets", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
        Column("fingerprint", Text, nullable=False),
        Column("content_md5", Text, nullable=False),
        Column("protect", Boolean, nullable=False, server_default=text("false")),
        *_timestamps(),
        Column("written", JSONB),
        # the resource as its YAML wrote it (defaults, shorthands), for `fabric export` only:
        # not part of the fingerprint or content_md5 (plans never look at it)
    ]


tenants = Table(
    "tenants",
    shared,
    *_resource_columns(),
    Column("slug", Text, nullable=False),
    Column("schema_name", Text),
    Column("schema_version", Text),
    Index(
        "tenants_live_slug",
        "slug",
        unique=True,
        postgresql_where=text("deleted_at IS NULL"),
    ),
)

applies = Table(
    "applies",
    shared,
    Column("id", BigInteger, Identity(always=False), primary_key=True),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True)),
    Column("outcome", Text, nullable=False),
    Column("git_commit", Text),
    Column("author", Text),
    Column("plan_hash", Text, nullable=False),
    Column("source_hash", Text, nullable=False),
    Column("tenants", ARRAY(Text), nullable=False),
    Column("creates", Integer, nullable=False, server_default=text("0")),
    Column("updates", Integer, nullable=False, server_default=text("0")),
    Column("deletes", Integer, nullable=False, server_default=text("0")),
    Column("error", Text),
    Column("client", Text),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("project", JSONB),
)

apply_changes = Table(
    "apply_changes",
    shared,
    Column("id", BigInteger, Identity(always=False), primary_key=True),
    Column(
        "apply_id", BigInteger, ForeignKey("fabric.applies.id", ondelete="CASCADE"), nullable=False
    ),
    Column("tenant", Text, nullable=False),
    Column("address", Text, nullable=False),
    Column("action", Text, nullable=False),
    Column("fields", JSONB, nullable=False),
    Index("apply_changes_address", "address", "apply_id"),
    Index("apply_changes_tenant", "tenant", "apply_id"),
)
"""The audit log: each change an apply made, with its fields (secret ones without values)."""


pending_secrets = Table(
    "pending_secrets",
    shared,
    Column("tenant_slug", Text, primary_key=True),
    Column("name", Text, primary_key=True),
    Column("ciphertext", Text, nullable=False),
    Column("fingerprint", Text, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)
"""`fabric secrets set` of a tenant not applied yet; its first apply moves the rows into the
tenant's own `secrets` table (same binding, so the ciphertext moves as it is)."""


pr_locks = Table(
    "pr_locks",
    shared,
    Column("tenant", Text, primary_key=True),
    Column("pr", Text, nullable=False),
    Column("author", Text),
    Column("plan_hash", Text),
    Column("since", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("pr_locks_pr", "pr"),
)
"""Which pull request holds which tenant (`fabric plan --lock-for PR`), until its apply."""

moves = Table(
    "moves",
    shared,
    Column("id", BigInteger, Identity(always=False), primary_key=True),
    Column(
        "tenant_id",
        BigInteger,
        ForeignKey(f"{SHARED_SCHEMA}.tenants.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("kind", Text, nullable=False),
    Column("resource_id", BigInteger, nullable=False),
    Column("from_name", Text, nullable=False),
    Column("to_name", Text, nullable=False),
    Column("moved_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("moves_tenant_kind", "tenant_id", "kind"),
)
"""Every rename apply made, by row id: the runner keeps a renamed pipeline's dlt name."""


def _resource_table(name: str) -> Table:
    return Table(
        name,
        tenant,
        *_resource_columns(),
        Column("name", Text, nullable=False),
        Index(
            f"{name}_live_name", "name", unique=True, postgresql_where=text("deleted_at IS NULL")
        ),
    )


connections = _resource_table("connections")
pipelines = _resource_table("pipelines")
transformations = _resource_table("transformations")
dependencies = _resource_table("dependencies")
schedules = _resource_table("schedules")
snapshots = _resource_table("snapshots")
macros = _resource_table("macros")
seeds = _resource_table("seeds")
tests = _resource_table("tests")

RESOURCE_TABLES: dict[Kind, Table] = {
    Kind.CONNECTION: connections,
    Kind.PIPELINE: pipelines,
    Kind.TRANSFORMATION: transformations,
    Kind.DEPENDENCY: dependencies,
    Kind.SCHEDULE: schedules,
    Kind.SNAPSHOT: snapshots,
    Kind.MACRO: macros,
    Kind.SEED: seeds,
    Kind.TEST: tests,
}

secrets = Table(
    "secrets",
    tenant,
    Column("id", BigInteger, Identity(always=False), primary_key=True),
    Column("name", Text, nullable=False, unique=True),
    Column("ciphertext", Text, nullable=False),
    Column("fingerprint", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

runs = Table(
    "runs",
    tenant,
    Column("id", BigInteger, Identity(always=False), primary_key=True),
    Column("trigger", Text, nullable=False),
    Column("selection", JSONB, nullable=False, server_default=text("'[]'::jsonb")),
    Column("status", Text, nullable=False),
    Column("who", Text),
    Column("schedule_name", Text),
    Column("fire_at", DateTime(timezone=True)),
    Column("started_at", DateTime(timezone=True)),
    Column("finished_at", DateTime(timezone=True)),
    Column("heartbeat_at", DateTime(timezone=True)),
    Column("error", Text),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("executor", Text),
    Column("plan", JSONB),
    UniqueConstraint("schedule_name", "fire_at", name="runs_schedule_fire_at"),
)

node_runs = Table(
    "node_runs",
    tenant,
    Column("id", BigInteger, Identity(always=False), primary_key=True),
    Column("run_id", BigInteger, ForeignKey(f"{TENANT_PLACEHOLDER}.runs.id"), nullable=False),
    Column("node", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("started_at", DateTime(timezone=True)),
    Column("finished_at", DateTime(timezone=True)),
    Column("rows_loaded", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("error", Text),
    Column("log_tail", Text),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("queued_at", DateTime(timezone=True)),
    Column("failure", Text),
    Column("token", BigInteger),
    Column("job_id", BigInteger),
    Column("worker", Text),
    UniqueConstraint("run_id", "node", name="node_runs_run_node"),
)


schedule_clock = Table(
    "schedule_clock",
    shared,
    Column(
        "tenant_id",
        BigInteger,
        ForeignKey(f"{SHARED_SCHEMA}.tenants.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("name", Text, nullable=False),
    Column("spec", JSONB, nullable=False),
    Column("active", Boolean, nullable=False),
    Column("next_fire_at", DateTime(timezone=True)),
    Column("last_fire_at", DateTime(timezone=True)),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("tenant_id", "name"),
    Index("schedule_clock_due", "next_fire_at", postgresql_where=text("active")),
)
"""Every live schedule of every tenant with its next fire time: what a scheduler tick claims.

Apply writes it in the same transaction as the tenant's schedules table; a tick locks the rows
it fires (`FOR UPDATE SKIP LOCKED`), so an apply changing or deleting a schedule and a tick
firing it are serialised by the row lock."""

schedule_fires = Table(
    "schedule_fires",
    tenant,
    Column("id", BigInteger, Identity(always=False), primary_key=True),
    Column("schedule_name", Text, nullable=False),
    Column("fire_at", DateTime(timezone=True), nullable=False),
    Column("outcome", Text, nullable=False),
    Column("run_id", BigInteger, ForeignKey(f"{TENANT_PLACEHOLDER}.runs.id")),
    Column("reason", Text),
    Column("recorded_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    UniqueConstraint("schedule_name", "fire_at", name="schedule_fires_schedule_fire_at"),
)
"""One row per (schedule, fire time) a tick settled: fired (with its run), missed or skipped,
with the reason."""

source_freshness = Table(
    "source_freshness",
    tenant,
    Column("pipeline", Text, nullable=False),
    Column("table_name", Text, nullable=False),
    Column("relation", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("loaded_at", DateTime(timezone=True)),
    Column("checked_at", DateTime(timezone=True), nullable=False),
    Column("error", Text),
    PrimaryKeyConstraint("pipeline", "table_name"),
)
"""The last `fabric freshness` of each loaded table: what `fabric status` shows as stale."""


def tenant_schema_name(tenant_id: int) -> str:
    return f"tenant_{tenant_id}"


CONTENT_MD5_SQL = "md5(({spec})::text || ({secrets})::text || ({protect})::text)"
"""How PostgreSQL hashes a row's content; the same expression at write and at read time."""
