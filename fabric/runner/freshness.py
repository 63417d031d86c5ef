"""`fabric freshness`: read the newest load time of every table a tenant's pipelines load.  [shell]

A direct query per table, through the tenant's *own* warehouse login (its managed role, or the
credentials its warehouse connection declares), never the control plane's: the login can read
only the tenant's schemas (and what is shared with it), so a tampered dataset name can show
nothing of another tenant. One short query per table, against the table itself:

- `loaded_at_field`: `max(<field>)`;
- default, dlt's load time: the `inserted_at` of the pipeline's newest completed load in the
  dataset's `_dlt_loads` (dlt's schema of a fabric pipeline is its name, `<tenant>__<pipeline>`,
  normalised: `acme_orders`). Not the
  table's own `_dlt_load_id`: tables loaded through arrow (the SQL sources' default backend)
  have no such column.

This is faster than `dbt source freshness` (no dbt start, no project parse) and reads the same
thing. Sessions pin search_path to pg_catalog (names are schema-qualified) and UTC, with the
warehouse session timeouts.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fabric.addresses import Kind
from fabric.domain.freshness import TableFreshness, judge
from fabric.domain.runs import ResolvedConnection, SessionLimits
from fabric.runner import dbt_project as dp
from fabric.runner.credentials import managed_connection, redact, resolve_connection
from fabric.runner.sessions import session_options

if TYPE_CHECKING:
    from fabric.runner.driver import ManagedLogin
    from fabric.state.applied import AppliedTenant
    from fabric.state.secrets import SecretBox


@dataclass(frozen=True, slots=True, kw_only=True)
class LoadedTable:
    """A table one of the tenant's pipelines loads, and how to read its load time."""

    pipeline: str
    destination: str
    dataset: str
    table: str
    freshness: Mapping[str, Any] | None
    dlt_schema: str
    """dlt's schema of the pipeline: its loads' `schema_name` in `_dlt_loads`."""

    @property
    def relation(self) -> str:
        return f"{self.dataset}.{self.table}"


def loaded_tables(applied: AppliedTenant) -> list[LoadedTable]:
    """Every warehouse table the tenant's applied pipelines load (dlt's names), by pipeline."""
    project = {"connections": {n: c.spec for n, c in applied.connections.items()}}
    out = []
    for address, spec in sorted(applied.nodes.items()):
        if address.kind is not Kind.PIPELINE:
            continue
        destination = str(spec.get("destination") or "")
        stored = applied.connections.get(destination)
        if stored is None or stored.spec.get("type") != "postgres":
            continue  # files: no tables to ask
        for table in dp._loaded_tables(address.name, spec, project):
            out.append(
                LoadedTable(
                    pipeline=address.name,
                    destination=destination,
                    dataset=str(spec["dataset"]),
                    table=dp.dlt_table_name(table),
                    freshness=spec.get("freshness"),
                    dlt_schema=dp.dlt_table_name(f"{address.tenant}__{address.name}"),
                )
            )
    return out


def resolve_destination(
    applied: AppliedTenant,
    name: str,
    environ: Mapping[str, str],
    box: Callable[[], SecretBox | None],
    login: ManagedLogin | None,
) -> ResolvedConnection:
    """The tenant's own login to its warehouse connection `name` (as the runner resolves it)."""
    from fabric.errors import SecretNotFoundError
    from fabric.runner.driver import PASSWORD_SECRET

    stored = applied.connections[name]
    managed = stored.spec.get("warehouse")
    if managed:
        if login is None or managed not in login.warehouses:
            raise SecretNotFoundError(applied.tenant.slug, PASSWORD_SECRET)
        role = f"{login.role_prefix[managed]}{applied.tenant.slug}_loader"
        return managed_connection(stored, login.warehouses[managed], role, login.password, environ)
    needs_box = any(e.get("ct") is not None for e in stored.secrets.values())
    return resolve_connection(stored, box() if needs_box else None, environ)


def check_tables(
    tables: Sequence[LoadedTable],
    connection: ResolvedConnection | Exception,
    *,
    now: dt.datetime,
    limits: SessionLimits,
) -> list[TableFreshness]:
    """Judge each table of one destination; a table whose time cannot be read carries why."""
    import psycopg

    times: dict[str, tuple[dt.datetime | None, str | None]] = {}
    secrets: tuple[str, ...] = ()
    if isinstance(connection, Exception):
        times = {t.relation: (None, f"cannot connect: {connection}") for t in tables}
    else:
        secrets = connection.secret_values
        try:
            fields = dp.connection_fields(connection.spec)
            options = session_options(None, limits) + " -c TimeZone=UTC"
            with psycopg.connect(
                host=fields["host"],
                port=fields["port"],
                user=fields["user"],
                password=fields["password"],
                dbname=fields["dbname"],
                sslmode=fields["sslmode"] or None,
                options=options,
                application_name="fabric-freshness",
                connect_timeout=10,
                autocommit=True,
            ) as conn:
                for t in tables:
                    times[t.relation] = _load_time(conn, t, secrets)
        except (psycopg.Error, ValueError) as exc:
            why = redact(_first_line(exc), secrets)
            times = {t.relation: (None, f"cannot connect: {why}") for t in tables}
    return [
        judge(
            pipeline=t.pipeline,
            table=t.table,
            relation=t.relation,
            freshness=t.freshness,
            loaded_at=times[t.relation][0],
            error=times[t.relation][1],
            now=now,
        )
        for t in tables
    ]


def _load_time(
    conn: Any, t: LoadedTable, secrets: Sequence[str]
) -> tuple[dt.datetime | None, str | None]:
    import psycopg
    from psycopg import sql

    table = sql.Identifier(t.dataset, t.table)
    field = (t.freshness or {}).get("loaded_at_field")
    params: tuple[Any, ...] = ()
    if field:
        query = sql.SQL("SELECT max({})::timestamptz FROM {}").format(sql.Identifier(field), table)
    else:
        # The table itself is read too, so a table dropped since (or not readable) says so.
        query = sql.SQL(
            "SELECT max(inserted_at) FROM {} WHERE status = 0 AND schema_name = %s "
            "AND EXISTS (SELECT FROM {} LIMIT 1)"
        ).format(sql.Identifier(t.dataset, "_dlt_loads"), table)
        params = (t.dlt_schema,)
    try:
        row = conn.execute(query, params).fetchone()
    except psycopg.Error as exc:
        return None, redact(_first_line(exc), secrets)
    value = row[0] if row else None
    if value is not None and value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value, None


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
