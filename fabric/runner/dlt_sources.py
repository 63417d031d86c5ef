"""Build the dlt resources of one pipeline from its spec and its decrypted source connection.

[shell] Runs inside a worker process, called by `dlt_node.py` only; dlt, SQLAlchemy, pyarrow and
fsspec are imported lazily inside the functions, so importing this module costs nothing.

Every mode yields a list of dlt resources (never a `DltSource`), so all tables of a pipeline
land in one dlt schema named after the pipeline (`acme__orders`): two pipelines that write into
one dataset never overwrite each other's stored schema.

Backend choice for SQL sources (`backend: auto`), measured on this project's 2-core machine
with a 1,000,000-row, 9-column PostgreSQL table into the PostgreSQL warehouse on the same server
(`COPY ... TO STDOUT | COPY ... FROM STDIN` moves it in 1.4-1.7 s; bench/load_throughput.py):

- connectorx, streamed as Arrow batches of `batch_size` rows (100,000 by default), one
  uncompressed parquet file per batch, loaded through ADBC (`adbc-driver-postgresql`) by 4
  parallel jobs: 2.3-2.9 s (about 400,000 rows/s). The fastest by far, but it has gaps, found
  by comparing every value with the source: `interval` and `money` make it panic, arrays fail
  in the ADBC COPY, numerics come back as decimal128(38, 10) (wrong beyond 18 integer digits
  or 10 decimals, so unconstrained `numeric` is out), integers come back in a width the ADBC
  COPY refuses for dlt's column type (cast here), MySQL's TIME is a duration and BIT is bytes.
  So it is used per table, only when every column has a type known to survive the trip
  (`connectorx_handles`), on PostgreSQL and MySQL/MariaDB (MariaDB: 200,000 rows read in
  0.12 s against 1.6 s with pyarrow).
- pyarrow (SQLAlchemy rows -> Arrow) into the same parquet/ADBC path: 13 s (76,000 rows/s),
  exact for every PostgreSQL type tried (numeric(38, 10), NaN, empty bytea, JSON scalars,
  arrays), so it is the per-table fallback and the choice for SQL Server and SQLite.
- sqlalchemy (dicts, dlt's default, insert_values): 47 s (21,000 rows/s), and it turned JSON
  string scalars, NaN and empty bytea into NULL. Used only when a pipeline asks for it.

Known type effects of the parquet/ADBC path: `json`/`jsonb` land as `json` (ADBC cannot COPY
into jsonb) with compact text, arrays land as JSON, `uuid` as text, and an unconstrained
`numeric` as numeric(38, 9) (dlt's default precision).
"""

from __future__ import annotations

import importlib.util
import operator
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from fabric.config.specs import Filter, PipelineSpec
from fabric.domain.runs import SessionLimits
from fabric.runner.credentials import ResolvedConnection, sqlalchemy_url, url_text
from fabric.runner.local_files import source_folder, tenant_root
from fabric.runner.sessions import with_session_options

if TYPE_CHECKING:
    from sqlalchemy import URL, Table

DEFAULT_CHUNK_SIZE = 100_000
"""Rows per batch for SQL sources (dlt's own default is 50,000); measured in the bench."""
DEFAULT_FILE_CHUNK = 10_000
REFLECTION_LEVEL = "full_with_precision"
"""Keeps numeric(p, s), varchar(n), smallint/integer and timestamp precision in the warehouse."""
FILES_CURSOR = "modification_date"
"""An incremental cursor with this name in `files` mode selects files, not rows."""

# connectorx returns decimals as decimal128(38, 10) through a 96-bit decimal: 28 significant
# digits at scale 10 leave 18 digits before the point.
_CX_MAX_SCALE = 10
_CX_MAX_INTEGER_DIGITS = 18


@dataclass(frozen=True, slots=True, kw_only=True)
class SqlSourceConfig:
    """How a SQL source is read, before anything connects to it."""

    url: URL
    dialect: str
    schema: str | None
    tables: tuple[str, ...]
    """The tables to load; empty means every table of the schema (full_database)."""
    chunk_size: int
    backend: str
    """The requested backend: auto, sqlalchemy, pyarrow, connectorx or pandas."""

    def backend_for(self, table: Table | None) -> tuple[str, str]:
        """(backend, reason) for one table; `auto` looks at the table's column types."""
        if self.backend != "auto":
            return self.backend, "set in the pipeline"
        if self.dialect not in CONNECTORX_DIALECTS or table is None:
            return "pyarrow", f"auto: exact for every {self.dialect} type"
        unsafe = [c.name for c in table.columns if not connectorx_handles(c.type, self.dialect)]
        if unsafe:
            return "pyarrow", f"auto: connectorx cannot read {', '.join(unsafe[:5])} exactly"
        return "connectorx", "auto: every column type is exact through connectorx"


CONNECTORX_DIALECTS = frozenset({"postgresql", "mysql"})
"""Sources where connectorx was checked type by type (SQL Server and SQLite were not)."""


@dataclass(slots=True)
class SourceBuild:
    """What `build_resources` made: the resources and how they should be written."""

    resources: list[Any]
    loader_file_format: str | None = None
    """`parquet` when every resource yields Arrow and ADBC can load it; None: dlt's default."""
    file_max_items: int | None = None
    """Rows per load file: one file per batch lets the loader copy files in parallel."""
    notes: list[str] = field(default_factory=list)
    """Decisions worth a line in the node's log (backend per table, file format)."""


def sql_source_config(
    spec: PipelineSpec,
    conn: ResolvedConnection,
    repo_root: str | Path,
    tenant: str,
    session: SessionLimits | None = None,
) -> SqlSourceConfig:
    """The URL, tables and batch size of a SQL source (postgres, mysql, mssql, sqlite).

    A sqlite file must lie in the tenant's own data folder (fabric.runner.local_files). A
    PostgreSQL source's sessions (reflection and reads) are pinned (fabric.runner.sessions):
    search_path `pg_catalog,<source schema>` (public when none is named) and `session`'s
    timeouts.
    """
    url = sqlalchemy_url(conn, repo_root, tenant=tenant)
    if url.get_backend_name() == "postgresql":
        schema = spec.source_schema or "public"
        options = with_session_options(url.query.get("options"), schema, session or SessionLimits())
        url = url.update_query_dict({"options": options})
    tables = (spec.table,) if spec.mode == "single_table" and spec.table else spec.table_names
    return SqlSourceConfig(
        url=url,
        dialect=url.get_backend_name(),
        schema=spec.source_schema,
        tables=tuple(tables),
        chunk_size=spec.batch_size or DEFAULT_CHUNK_SIZE,
        backend=spec.backend,
    )


def connectorx_handles(sa_type: Any, dialect: str = "postgresql") -> bool:
    """Whether connectorx + parquet/ADBC carries a column type without loss.

    Checked value by value against the source (NULLs, NaN, extremes) for PostgreSQL and
    MariaDB; anything not listed here goes through pyarrow.
    """
    from sqlalchemy import types as sat
    from sqlalchemy.dialects import mysql
    from sqlalchemy.dialects import postgresql as pg

    if isinstance(sa_type, sat.ARRAY | pg.INTERVAL | pg.MONEY | mysql.BIT):
        return False
    if isinstance(sa_type, sat.Float):  # before Numeric: Float is a Numeric
        return True
    if isinstance(sa_type, sat.Numeric) and not isinstance(sa_type, sat.Integer):
        p, s = sa_type.precision, sa_type.scale
        if p is None or s is None:
            return False  # unconstrained numeric: any size, any scale
        return s <= _CX_MAX_SCALE and p - s <= _CX_MAX_INTEGER_DIGITS
    if isinstance(sa_type, sat.Time):
        # MySQL's TIME is a duration (up to 838:59:59); PostgreSQL's timetz has an offset
        return dialect == "postgresql" and not getattr(sa_type, "timezone", False)
    safe = (
        sat.Integer,
        sat.String,  # text, varchar, char, enum
        sat.Boolean,
        sat.Date,
        sat.DateTime,
        sat.JSON,
        sat.Uuid,
        sat.LargeBinary,
        pg.INET,
    )
    return isinstance(sa_type, safe)


def has_adbc_postgres() -> bool:
    """Whether dlt can load parquet into PostgreSQL through ADBC (its fastest path)."""
    return importlib.util.find_spec("adbc_driver_postgresql") is not None


def build_resources(
    spec: PipelineSpec,
    conn: ResolvedConnection,
    *,
    repo_root: str | Path,
    name: str,
    tenant: str,
    session: SessionLimits | None = None,
) -> SourceBuild:
    """The dlt resources for the pipeline's mode, with its hints and filters applied.

    `name` is the pipeline's name: the destination table of `files` mode by default. Local
    files (a folder, a sqlite file) are read only inside `tenant`'s data folder.
    """
    match spec.mode:
        case "single_table" | "full_database":
            build = _sql_resources(spec, conn, repo_root, tenant, session)
        case "rest_api":
            build = _rest_api_resources(spec, conn)
        case "files":
            build = _file_resources(spec, conn, repo_root, name, tenant)
        case _:  # pragma: no cover - the spec's Literal rules it out
            raise ValueError(f"unknown pipeline mode {spec.mode!r}")
    return build


# -- SQL ----------------------------------------------------------------------------------------


def _sql_resources(
    spec: PipelineSpec,
    conn: ResolvedConnection,
    repo_root: str | Path,
    tenant: str,
    session: SessionLimits | None,
) -> SourceBuild:
    import dlt
    from dlt.sources.sql_database import sql_table
    from sqlalchemy import create_engine

    if conn.type not in ("postgres", "mysql", "mssql", "sqlite"):
        raise ConfigurationError(
            f"mode {spec.mode} needs a SQL source connection, but {conn.name!r} is {conn.type}"
        )
    if spec.mode == "single_table" and not spec.table:
        raise ConfigurationError("mode single_table needs `table`")
    config = sql_source_config(spec, conn, repo_root, tenant, session)
    engine = create_engine(config.url)
    try:
        metadata = reflect_tables(engine, config.schema, config.tables)
    finally:
        engine.dispose()
    tables = [t for t in metadata.tables.values() if not config.tables or t.name in config.tables]
    missing = sorted(set(config.tables) - {t.name for t in tables})
    if missing:
        where = f" in schema {config.schema!r}" if config.schema else ""
        raise ConfigurationError(f"source table {', '.join(missing)} not found{where}")
    build = SourceBuild(resources=[])
    arrow_only = True
    for table in sorted(tables, key=lambda t: t.name):
        backend, reason = config.backend_for(table)
        build.notes.append(f"table {table.name}: backend {backend} ({reason})")
        arrow_only &= backend in ("pyarrow", "connectorx", "pandas")
        incremental = None
        if spec.incremental is not None:
            if spec.incremental.cursor not in table.c:
                raise ConfigurationError(
                    f"incremental cursor {spec.incremental.cursor!r} is not a column of "
                    f"{table.name}"
                )
            column_type = table.c[spec.incremental.cursor].type
            incremental = dlt.sources.incremental(
                spec.incremental.cursor,
                initial_value=coerce_to_column(spec.incremental.initial_value, column_type),
                end_value=coerce_to_column(spec.incremental.end_value, column_type),
            )
        backend_kwargs: dict[str, Any] = {}
        if backend == "connectorx":
            # NOTE: streaming keeps memory bounded and yields one file per batch, which the
            # loader then copies in parallel; connectorx's default reads the whole table.
            backend_kwargs = {"return_type": "arrow_stream", "batch_size": config.chunk_size}
            # dlt's own URL for connectorx writes the pinned options' spaces as `+`
            plain = config.url.set(drivername=config.url.get_backend_name())
            backend_kwargs["conn"] = url_text(plain)
        resource = sql_table(
            credentials=url_text(config.url),
            table=table.name,
            schema=config.schema,
            metadata=metadata,
            incremental=incremental,
            chunk_size=config.chunk_size,
            backend=backend,
            backend_kwargs=backend_kwargs,
            reflection_level=REFLECTION_LEVEL,
            query_adapter_callback=_sql_filters(spec.filters, table.name) if spec.filters else None,
            write_disposition=spec.write_disposition,
            primary_key=list(spec.primary_key) or None,
        )
        if backend == "connectorx":
            # NOTE: an empty table streams one empty batch, which dlt writes as a parquet file
            # without row groups that the ADBC loader then rejects; drop it.
            resource.add_filter(_has_rows)
            if (cast := _cast_to_destination(table)) is not None:
                resource.add_map(cast)
        build.resources.append(resource)
    if arrow_only and has_adbc_postgres():
        build.loader_file_format = "parquet"
        build.file_max_items = config.chunk_size
        build.notes.append("load files: parquet through ADBC, uncompressed")
    return build


def reflect_tables(engine: Any, schema: str | None, names: Sequence[str]) -> Any:
    """MetaData with the named tables (every table of the schema when none are named).

    Reads columns and primary keys only, in two catalog queries for all tables: half the time
    of `MetaData.reflect`, which also reads indexes, foreign keys, constraints and comments.
    The result is handed to dlt's sql_table, so dlt does not reflect again.
    """
    from sqlalchemy import Column, MetaData, Table, inspect
    from sqlalchemy.engine.reflection import ObjectKind

    metadata = MetaData(schema=schema)
    with engine.connect() as conn:
        inspector = inspect(conn)
        wanted = list(names) or inspector.get_table_names(schema=schema)
        if not wanted:
            return metadata
        kind = ObjectKind.ANY if names else ObjectKind.TABLE
        columns = inspector.get_multi_columns(schema=schema, filter_names=wanted, kind=kind)
        keys = inspector.get_multi_pk_constraint(schema=schema, filter_names=wanted, kind=kind)
    for (_, table), cols in sorted(columns.items(), key=lambda item: item[0][1]):
        primary = set((keys.get((schema, table)) or {}).get("constrained_columns") or ())
        Table(
            table,
            metadata,
            *(
                Column(
                    c["name"], c["type"], nullable=c["nullable"], primary_key=c["name"] in primary
                )
                for c in cols
            ),
        )
    return metadata


def _sql_filters(filters: Sequence[Filter], table_name: str) -> Callable[..., Any]:
    from sqlalchemy import and_, not_

    def adapter(query: Any, table: Any, incremental: Any = None, engine: Any = None) -> Any:
        conditions = []
        for f in filters:
            if f.column not in table.c:
                raise ConfigurationError(
                    f"filter column {f.column!r} is not a column of {table_name}"
                )
            column = table.c[f.column]
            value = _coerce_filter_value(f.value, column.type)
            match f.op:
                case "in":
                    conditions.append(column.in_(list(value)))
                case "not_in":
                    conditions.append(not_(column.in_(list(value))))
                case _:
                    conditions.append(_OPERATORS[f.op](column, value))
        return query.where(and_(*conditions))

    return adapter


def _coerce_filter_value(value: Any, column_type: Any) -> Any:
    if isinstance(value, tuple | list):
        return tuple(coerce_to_column(v, column_type) for v in value)
    return coerce_to_column(value, column_type)


def coerce_to_column(value: Any, column_type: Any) -> Any:
    """A YAML scalar (dates arrive as ISO text) as the Python value of a SQL column type."""
    from sqlalchemy import types as sat

    if value is None or not isinstance(value, str | int | float):
        return value
    try:
        if isinstance(column_type, sat.DateTime) and isinstance(value, str):
            parsed = datetime.fromisoformat(value)
            if column_type.timezone:
                return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
            return parsed.astimezone(UTC).replace(tzinfo=None) if parsed.tzinfo else parsed
        if isinstance(column_type, sat.Date) and isinstance(value, str):
            return date.fromisoformat(value[:10])
        if isinstance(column_type, sat.Integer) and not isinstance(value, bool):
            return int(value)
        if isinstance(column_type, sat.Float):
            return float(value)
        if isinstance(column_type, sat.Numeric):
            return Decimal(str(value))
    except ValueError as exc:
        raise ConfigurationError(f"{value!r} is not a valid {column_type} value: {exc}") from None
    return value


def _has_rows(item: Any) -> bool:
    return getattr(item, "num_rows", 1) > 0


def _cast_to_destination(table: Table) -> Callable[[Any], Any] | None:
    """A map that casts connectorx's integers to the width dlt gives their columns.

    dlt creates a `smallint` source column as `integer` and every other integer as `bigint`,
    while connectorx yields int8/int16/int32/int64 depending on the source and the mode; ADBC's
    binary COPY refuses data of another width ("incorrect binary data format"), so integer
    columns are cast to int32 or int64 (the values always fit).
    """
    from sqlalchemy import types as sat

    widths = {
        c.name: 32 if isinstance(c.type, sat.SmallInteger) else 64
        for c in table.columns
        if isinstance(c.type, sat.Integer) and not isinstance(c.type, sat.Boolean)
    }
    if not widths:
        return None

    def cast(item: Any) -> Any:
        import pyarrow as pa

        if not isinstance(item, pa.Table):
            return item
        for name, bits in widths.items():
            target = pa.int32() if bits == 32 else pa.int64()
            i = item.schema.get_field_index(name)
            if i >= 0 and item.schema.field(i).type != target:
                item = item.set_column(i, pa.field(name, target), item.column(i).cast(target))
        return item

    return cast


# -- REST API -------------------------------------------------------------------------------------


def rest_api_config(spec: PipelineSpec, conn: ResolvedConnection) -> dict[str, Any]:
    """dlt's rest_api source config (RESTAPIConfig) for the pipeline's resources."""
    c = conn.spec
    if conn.type != "rest_api":
        raise ConfigurationError(
            f"mode rest_api needs a rest_api connection, but {conn.name!r} is {conn.type}"
        )
    client: dict[str, Any] = {"base_url": c["base_url"]}
    if c.get("headers"):
        client["headers"] = dict(c["headers"])
    if c.get("paginator"):
        client["paginator"] = _plain(c["paginator"])
    if auth := c.get("auth"):
        client["auth"] = _rest_auth(auth)
    declared = {r["name"]: r for r in c.get("resources", ())}
    wanted = list(spec.resources) or list(declared)
    unknown = [name for name in wanted if name not in declared]
    if unknown:
        raise ConfigurationError(
            f"rest_api resource {', '.join(unknown)} is not declared by connection {conn.name!r} "
            f"(it declares {', '.join(declared) or 'none'})"
        )
    resources = []
    for name in wanted:
        r = declared[name]
        endpoint: dict[str, Any] = {"path": r["path"], "method": r.get("method", "GET")}
        if r.get("params"):
            endpoint["params"] = dict(r["params"])
        if r.get("data_selector"):
            endpoint["data_selector"] = r["data_selector"]
        if r.get("paginator"):
            endpoint["paginator"] = _plain(r["paginator"])
        if spec.incremental is not None:
            # NOTE: the spec names no request parameter for the cursor, so it filters rows
            # client-side: every page is read, only rows past the stored cursor are kept.
            inc = spec.incremental
            endpoint["incremental"] = {
                k: v
                for k, v in {
                    "cursor_path": inc.cursor,
                    "initial_value": inc.initial_value,
                    "end_value": inc.end_value,
                }.items()
                if v is not None
            }
        resource: dict[str, Any] = {
            "name": name,
            "endpoint": endpoint,
            "write_disposition": spec.write_disposition,
        }
        if primary_key := list(spec.primary_key) or list(r.get("primary_key") or ()):
            resource["primary_key"] = primary_key
        resources.append(resource)
    return {"client": client, "resources": resources}


def _rest_auth(auth: Mapping[str, Any]) -> dict[str, Any]:
    match auth["type"]:
        case "bearer":
            return {"type": "bearer", "token": auth["token"]}
        case "api_key":
            return {
                "type": "api_key",
                "name": auth.get("name", "Authorization"),
                "api_key": auth["api_key"],
                "location": auth.get("location", "header"),
            }
        case "http_basic":
            return {
                "type": "http_basic",
                "username": auth["username"],
                "password": auth["password"],
            }
        case other:
            raise ConfigurationError(f"unknown rest_api auth type {other!r}")


def _plain(value: Any) -> Any:
    return dict(value) if isinstance(value, Mapping) else value


def _rest_api_resources(spec: PipelineSpec, conn: ResolvedConnection) -> SourceBuild:
    from dlt.sources.rest_api import rest_api_resources

    resources = rest_api_resources(rest_api_config(spec, conn))  # type: ignore[arg-type]
    if spec.filters:
        for resource in resources:
            resource.add_filter(row_predicate(spec.filters))
    return SourceBuild(resources=list(resources), notes=[f"rest_api: {len(resources)} resources"])


# -- files ----------------------------------------------------------------------------------------


def files_bucket_url(
    bucket_url: str, repo_root: str | Path, tenant: str, file_glob: str = "*"
) -> tuple[str, Path | None]:
    """(URL to list, real local folder or None): a local folder, confined to the tenant's data
    folder with symlinks resolved, as a file:// URL; remote URLs pass through."""
    target, folder = source_folder(bucket_url, tenant, Path(repo_root), file_glob)
    return (folder.as_uri(), folder) if folder is not None else (target.path, None)


def confined_files(own: Path, tenant: str) -> Callable[[Any], Any]:
    """A map over listed file items that refuses any file resolving outside `own` (a link
    planted in the tenant's folder that points at fabric's key file or another tenant's)."""
    from fabric.runner.local_files import inside

    def check(item: Any) -> Any:
        for file_item in item if isinstance(item, list) else (item,):
            inside(own, Path(file_item.local_file_path), str(file_item["relative_path"]))
        return item

    return check


def _file_resources(
    spec: PipelineSpec, conn: ResolvedConnection, repo_root: str | Path, name: str, tenant: str
) -> SourceBuild:
    import dlt
    from dlt.sources.filesystem import filesystem, read_jsonl, read_parquet

    c = conn.spec
    if conn.type != "filesystem":
        raise ConfigurationError(
            f"mode files needs a filesystem connection, but {conn.name!r} is {conn.type}"
        )
    glob = spec.file_glob or c.get("file_glob") or "*"
    url, folder = files_bucket_url(c["bucket_url"], repo_root, tenant, glob)
    fmt = c.get("format", "csv")
    chunk = spec.batch_size or DEFAULT_FILE_CHUNK
    cursor = spec.incremental.cursor if spec.incremental else None
    listing_kwargs: dict[str, Any] = {}
    if c.get("credentials"):
        listing_kwargs["credentials"] = _fsspec(url, c["credentials"])
    listing = filesystem(
        bucket_url=url,
        file_glob=glob,
        **listing_kwargs,
        incremental=(
            dlt.sources.incremental(FILES_CURSOR, initial_value=_file_date(spec))
            if cursor == FILES_CURSOR
            else None
        ),
    )
    if folder is not None:
        listing.add_map(
            confined_files(tenant_root(Path(os.path.realpath(repo_root)), tenant), tenant)
        )
    match fmt:
        case "csv":
            reader = dlt.transformer(name="read_csv")(_read_csv_arrow)(chunk)
        case "jsonl":
            reader = read_jsonl(chunksize=chunk)
        case "parquet":
            reader = read_parquet(chunksize=chunk, use_pyarrow=True)
        case other:
            raise ConfigurationError(f"unknown file format {other!r}")
    resource = (listing | reader).with_name(spec.table_name or name)
    resource.apply_hints(
        write_disposition=spec.write_disposition,
        primary_key=list(spec.primary_key) or None,
        incremental=(
            dlt.sources.incremental(
                cursor,
                initial_value=spec.incremental.initial_value,
                end_value=spec.incremental.end_value,
            )
            if spec.incremental and cursor != FILES_CURSOR
            else None
        ),
    )
    arrow = fmt in ("csv", "parquet")
    if spec.filters:
        if arrow:
            resource.add_map(arrow_filter(spec.filters))
        else:
            resource.add_filter(row_predicate(spec.filters))
    build = SourceBuild(resources=[resource], notes=[f"files: {fmt} from {glob}"])
    if arrow and has_adbc_postgres():
        build.loader_file_format = "parquet"
    return build


def _read_csv_arrow(items: Iterable[Any], chunk: int) -> Iterator[Any]:
    """CSV files as Arrow tables of at most `chunk` rows, streamed with pyarrow's reader.

    dlt's own `read_csv` needs pandas and yields dicts; this is faster, and its Arrow output
    goes to the warehouse through the same parquet/ADBC path as the SQL sources.
    """
    import pyarrow as pa
    from pyarrow import csv

    for file_item in items:
        with file_item.open(mode="rb") as f:
            reader = csv.open_csv(f, read_options=csv.ReadOptions(block_size=8 << 20))
            for batch in reader:
                for piece in pa.Table.from_batches([batch]).to_batches(max_chunksize=chunk):
                    yield pa.Table.from_batches([piece])


def _file_date(spec: PipelineSpec) -> Any:
    value = spec.incremental.initial_value if spec.incremental else None
    if isinstance(value, str):
        parsed = datetime.fromisoformat(value)
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return value


def _fsspec(url: str, credentials: Mapping[str, Any]) -> Any:
    """An fsspec filesystem for cloud URLs with credentials; None lets dlt pick (local files)."""
    if not credentials:
        return None
    import fsspec

    return fsspec.filesystem(urlparse(url).scheme, **dict(credentials))


# -- row filters for non-SQL sources ------------------------------------------------------------

_OPERATORS: dict[str, Callable[[Any, Any], Any]] = {
    "eq": operator.eq,
    "ne": operator.ne,
    "gt": operator.gt,
    "gte": operator.ge,
    "lt": operator.lt,
    "lte": operator.le,
}


def row_predicate(filters: Sequence[Filter]) -> Callable[[Any], bool]:
    """A predicate over dict rows with SQL's NULL rule: a missing or null value never matches."""

    def keep(row: Any) -> bool:
        for f in filters:
            actual = row.get(f.column) if isinstance(row, Mapping) else None
            if actual is None:
                return False
            if f.op in ("in", "not_in"):
                values = f.value if isinstance(f.value, tuple | list) else (f.value,)
                found = any(actual == _like(actual, v) for v in values)
                if found != (f.op == "in"):
                    return False
            elif not _OPERATORS[f.op](actual, _like(actual, f.value)):
                return False
        return True

    return keep


def _like(sample: Any, value: Any) -> Any:
    """`value` (from YAML) in the type of a row's `sample` value, where that is unambiguous."""
    try:
        if isinstance(sample, datetime) and isinstance(value, str):
            parsed = datetime.fromisoformat(value)
            if sample.tzinfo and not parsed.tzinfo:
                parsed = parsed.replace(tzinfo=UTC)
            return parsed
        if isinstance(sample, date) and isinstance(value, str):
            return date.fromisoformat(value)
        if isinstance(sample, bool) or isinstance(value, bool):
            return value
        if isinstance(sample, int | float | Decimal) and isinstance(value, str):
            return type(sample)(value)
        if isinstance(sample, str) and isinstance(value, int | float):
            return str(value)
    except (ValueError, ArithmeticError):
        return value
    return value


def arrow_filter(filters: Sequence[Filter]) -> Callable[[Any], Any]:
    """A map over Arrow tables/batches that keeps the rows matching every filter."""

    def apply(item: Any) -> Any:
        import pyarrow as pa
        import pyarrow.compute as pc

        if not isinstance(item, pa.Table | pa.RecordBatch):
            return item
        mask = None
        for f in filters:
            column = item.column(f.column)
            if f.op in ("in", "not_in"):
                values = f.value if isinstance(f.value, tuple | list) else (f.value,)
                values_array = pa.array(
                    [_arrow_value(v, column.type) for v in values], type=column.type
                )
                cond = pc.is_in(column, value_set=values_array)
                if f.op == "not_in":
                    cond = pc.invert(cond)
                cond = pc.and_(cond, pc.is_valid(column))
            else:
                scalar = pa.scalar(_arrow_value(f.value, column.type), type=column.type)
                cond = getattr(pc, _ARROW_OPS[f.op])(column, scalar)
            cond = pc.fill_null(cond, False)
            mask = cond if mask is None else pc.and_(mask, cond)
        return item if mask is None else item.filter(mask)

    return apply


_ARROW_OPS = {
    "eq": "equal",
    "ne": "not_equal",
    "gt": "greater",
    "gte": "greater_equal",
    "lt": "less",
    "lte": "less_equal",
}


def _arrow_value(value: Any, arrow_type: Any) -> Any:
    import pyarrow as pa

    if isinstance(value, str) and pa.types.is_timestamp(arrow_type):
        parsed = datetime.fromisoformat(value)
        return parsed.replace(tzinfo=UTC) if arrow_type.tz and not parsed.tzinfo else parsed
    if isinstance(value, str) and pa.types.is_date(arrow_type):
        return date.fromisoformat(value)
    return value


class ConfigurationError(ValueError):
    """The pipeline cannot be built as specified (a missing table, an unknown resource)."""
