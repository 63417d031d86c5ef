"""Build the dlt destination of one pipeline from its decrypted destination connection.  [shell]

Runs inside a worker process, called by `dlt_node.py` only; dlt is imported lazily.

- postgres: dlt's postgres destination. A connection without a password (trust or peer
  authentication) is given an empty one: dlt's `PostgresCredentials` requires the field, libpq
  does not. Every session of the load is pinned (fabric.runner.sessions): search_path
  `pg_catalog,<dataset>` and the settings' timeouts, through the credentials' libpq `options`
  (which dlt's ADBC parquet copy also connects with) and a sql client that puts the pinned
  search_path last (dlt's own appends `<dataset>,public` after the credentials' options).
- filesystem: dlt's filesystem destination writing the connection's `format` (parquet, jsonl
  or csv) into a folder of the tenant's data area, or to a cloud bucket through fsspec.

Invariant: a tenant never writes outside `<repository>/data/<slug>/` on this machine. The rule
of `fabric.config.destinations` is applied again here (the stored spec could predate it, and
`${env:...}` is only known now), then symlinks are followed: the tenant's folder must not be a
symlink itself, and the destination folder, its dataset folder and the table folders in it
must resolve inside it. dlt receives the resolved path, so a link swapped in later is not
followed at the top; a link planted in the tree during a load is not re-checked (the data area
is written by fabric's workers only).
"""

from __future__ import annotations

import functools
import importlib.util
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fabric.config.destinations import DATA_FOLDER, FILE_FORMATS, filesystem_target
from fabric.domain.runs import ResolvedConnection, SessionLimits
from fabric.errors import FabricError
from fabric.runner.credentials import sqlalchemy_url, url_text
from fabric.runner.sessions import with_session_options

FSSPEC_PACKAGES: Mapping[str, str] = {
    "s3": "s3fs",
    "gs": "gcsfs",
    "gcs": "gcsfs",
    "az": "adlfs",
    "abfss": "adlfs",
}
"""The package fsspec needs for each cloud protocol."""


class DestinationError(FabricError):
    """The destination connection cannot be written by this tenant, or not from here."""


@dataclass(frozen=True, slots=True, kw_only=True)
class DestinationBuild:
    """What a pipeline loads into, ready for `dlt.pipeline(destination=...)`."""

    name: str
    """The connection's name."""
    kind: str
    """`postgres` or `filesystem`."""
    factory: Callable[[], Any] = field(repr=False)
    """Makes the dlt destination (imports dlt; nothing is contacted until the load)."""
    loader_file_format: str | None = None
    """The file format the destination must receive; None: the source's choice."""
    sql_url: Any = field(default=None, repr=False)
    """postgres: the SQLAlchemy URL (for the dataset lock); None for files."""
    location: str = ""
    """Where rows land, for the log: host/database, a folder or a bucket URL."""
    config: Mapping[str, Any] = field(default_factory=dict, repr=False)
    """The arguments the dlt destination is made with (secrets included: never log it)."""


def build_destination(
    conn: ResolvedConnection,
    *,
    tenant: str,
    repo_root: str | Path,
    dataset: str,
    session: SessionLimits | None = None,
) -> DestinationBuild:
    """The dlt destination for `conn`, or DestinationError saying what to change.

    A local folder is created (with the checks above), nothing else is touched or contacted.
    `session`: the timeouts of the warehouse's sessions (defaults: SessionLimits()).
    """
    match conn.type:
        case "postgres":
            return _postgres(conn, dataset, session or SessionLimits())
        case "filesystem":
            return _filesystem(conn, tenant, Path(repo_root), dataset)
        case other:
            raise DestinationError(
                f"destination {conn.name!r} is {other}; pipelines load into postgres or "
                "filesystem destinations only"
            )


# -- postgres -------------------------------------------------------------------------------------


def postgres_credentials(url: Any) -> Any:
    """dlt `PostgresCredentials` for a SQLAlchemy URL, the password optional.

    NOTE: dlt declares the password required and fails a passwordless URL with "missing field
    password" before connecting; an empty password is what libpq sends for trust, peer or
    .pgpass authentication anyway.
    """
    from dlt.destinations.impl.postgres.configuration import PostgresCredentials

    credentials = PostgresCredentials()
    libpq = url.set(drivername="postgresql")
    credentials.parse_native_representation(libpq.render_as_string(hide_password=False))
    if not credentials.password:
        credentials.password = ""
    return credentials


def _postgres(conn: ResolvedConnection, dataset: str, session: SessionLimits) -> DestinationBuild:
    url = sqlalchemy_url(conn).set(drivername="postgresql")

    def factory() -> Any:
        return pinned_postgres(session)(credentials=postgres_credentials(url))

    return DestinationBuild(
        name=conn.name,
        kind="postgres",
        factory=factory,
        sql_url=url,
        location=f"{url.host}:{url.port}/{url.database}",
    )


@functools.cache
def pinned_postgres(limits: SessionLimits) -> type:
    """dlt's postgres destination whose sessions are pinned (fabric.runner.sessions) to
    `pg_catalog,<dataset>` and `limits`: those of its sql client (DDL, INSERTs, state) and of
    its ADBC parquet copies.

    NOTE: dlt's Psycopg2SqlClient connects with `options=<credentials' options>
    -csearch_path=<dataset>,public`, and PostgreSQL applies the last `-c` of a name, so the
    pinned options come after dlt's; the ADBC copy connects with the credentials' URI, so it
    is given one with the options appended (url_text: libpq reads a `+` literally).
    Everything else (type, name, state) is dlt's postgres.
    """
    import psycopg2
    from dlt.common.destination.reference import DestinationReference
    from dlt.destinations import postgres
    from dlt.destinations.impl.postgres.postgres import PostgresClient, PostgresParquetCopyJob
    from dlt.destinations.impl.postgres.sql_client import Psycopg2SqlClient

    def options(own: str | None, dataset: str) -> str:
        return with_session_options(own, dataset, limits)

    class PinnedSqlClient(Psycopg2SqlClient):
        def open_connection(self) -> Any:
            own = self.credentials.get_query().get("options", "")
            dataset = self.fully_qualified_dataset_name(quote=False)
            self._conn = psycopg2.connect(
                dsn=self.credentials.to_native_representation(), options=options(own, dataset)
            )
            self._reset_connection()
            return self._conn

    class PinnedParquetCopyJob(PostgresParquetCopyJob):
        def _connect(self) -> Any:
            from adbc_driver_manager import dbapi
            from dlt.destinations.impl.postgres.factory import get_adbc_driver_location

            self._config = self._job_client.config
            credentials = self._config.credentials
            dataset = self._job_client.sql_client.fully_qualified_dataset_name(quote=False)
            own = credentials.get_query().get("options")
            url = credentials.to_url().update_query_dict({"options": options(own, dataset)})
            return dbapi.connect(
                driver=get_adbc_driver_location(), db_kwargs={"uri": url_text(url)}
            )

    class PinnedPostgresClient(PostgresClient):
        def __init__(self, schema: Any, config: Any, capabilities: Any) -> None:
            super().__init__(schema, config, capabilities)
            self.sql_client = PinnedSqlClient(
                self.sql_client.dataset_name,
                self.sql_client.staging_dataset_name,
                config.credentials,
                capabilities,
            )

        def create_load_job(self, table: Any, file_path: str, load_id: str, restore: bool = False):
            job = super().create_load_job(table, file_path, load_id, restore)
            if type(job) is PostgresParquetCopyJob:
                job = PinnedParquetCopyJob(file_path)
            return job

    postgres_type = DestinationReference.normalize_type(
        f"{postgres.__module__}.{postgres.__qualname__}"
    )

    class PinnedPostgres(postgres):  # type: ignore[misc, valid-type]
        @property
        def client_class(self) -> type:
            return PinnedPostgresClient

        @property
        def destination_type(self) -> str:
            return postgres_type  # dlt's own: the pipeline's state and config sections

    return PinnedPostgres


# -- filesystem -----------------------------------------------------------------------------------


def _filesystem(
    conn: ResolvedConnection, tenant: str, repo_root: Path, dataset: str
) -> DestinationBuild:
    spec = conn.spec
    fmt = spec.get("format") or "parquet"
    if fmt not in FILE_FORMATS:
        raise DestinationError(
            f"destination {conn.name!r} has format {fmt!r}; use one of {', '.join(FILE_FORMATS)}"
        )
    root = repo_root.resolve()
    target, problem = filesystem_target(str(spec.get("bucket_url") or ""), tenant, root.as_posix())
    if target is None:
        raise DestinationError(
            f"destination {conn.name!r}: tenant {tenant} may not write to "
            f"{spec.get('bucket_url')!r}: {problem}"
        )
    credentials = dict(spec.get("credentials") or {})
    if target.kind == "cloud":
        url = target.path
        protocol = url.split("://", 1)[0].lower()
        package = FSSPEC_PACKAGES[protocol]
        if importlib.util.find_spec(package) is None:
            raise DestinationError(
                f"destination {conn.name!r} writes to {protocol}://, which needs the "
                f"{package} package on the worker: `uv add {package}` (or pip install {package})"
            )
    else:
        folder = tenant_destination_folder(root, tenant, target.path)
        check_dataset_folder(folder, dataset, (root / DATA_FOLDER).resolve() / tenant)
        url = folder.as_uri()
    config: dict[str, Any] = {"bucket_url": url}
    if credentials:
        config["credentials"] = credentials

    def factory() -> Any:
        import dlt

        return dlt.destinations.filesystem(**config)

    return DestinationBuild(
        name=conn.name,
        kind="filesystem",
        factory=factory,
        loader_file_format=fmt,
        location=url,
        config=config,
    )


def tenant_destination_folder(repo_root: Path, tenant: str, relative: str) -> Path:
    """The real path of `relative` (a folder under data/<tenant>/), created; symlinks checked.

    Raises:
        DestinationError: the tenant's folder is a symlink, or the folder resolves outside it.
    """
    data = (repo_root / DATA_FOLDER).resolve()
    own = data / tenant
    if (repo_root / DATA_FOLDER / tenant).resolve() != own:
        raise DestinationError(
            f"{DATA_FOLDER}/{tenant} is a symlink; a tenant's data folder must be a real folder "
            "(remove the link)"
        )
    folder = _inside(own, repo_root / relative, relative)
    folder.mkdir(parents=True, exist_ok=True)
    return _inside(own, folder, relative)


def check_dataset_folder(folder: Path, dataset: str, tenant_root: Path) -> None:
    """The dataset folder and its table folders resolve inside the tenant's folder."""
    dataset_dir = folder / dataset
    _inside(tenant_root, dataset_dir, f"{dataset}/")
    if dataset_dir.is_dir():
        with os.scandir(dataset_dir) as entries:
            for entry in entries:
                if entry.is_symlink():
                    _inside(tenant_root, Path(entry.path), f"{dataset}/{entry.name}")


def _inside(own: Path, path: Path, shown: str) -> Path:
    real = Path(os.path.realpath(path))
    if not real.is_relative_to(own):
        raise DestinationError(
            f"{shown} resolves to {real}, outside the tenant's folder {own} (a symlink "
            "escape); remove the link"
        )
    return real
