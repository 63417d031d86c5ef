"""Pydantic v2 models that mirror YAML format v1 one to one.  [pure]

They are the contract of the YAML files: frozen, `extra="forbid"`, tuples instead of lists and
read-only mappings instead of dicts, so a loaded desired state cannot be changed by accident.
Only shape and type are checked here; rules that look at several fields or resources at once
live in `checks.py`, where they can point at the exact line.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    WithJsonSchema,
    model_serializer,
    model_validator,
)
from pydantic_core import PydanticCustomError

from fabric.config.references import REFERENCE_PATTERN, parse_reference

SCHEMA_IDENT = r"^[a-z_][a-z0-9_]{0,62}$"
SQL_IDENT = r"^[A-Za-z_][A-Za-z0-9_]{0,62}$"
NAME_PATTERN = r"^[a-z][a-z0-9_]{0,62}$"
TAG_PATTERN = r"^[a-z][a-z0-9_\-]{0,62}$"


class Spec(BaseModel):
    """Base of every spec: immutable, unknown fields rejected."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


def _frozen_mapping(value: Mapping[Any, Any]) -> Mapping[Any, Any]:
    return MappingProxyType(dict(value))


def FrozenMap(key: Any, value: Any) -> Any:
    """A dict in YAML and JSON, a read-only mapping in memory."""
    return Annotated[
        dict[key, value],
        AfterValidator(_frozen_mapping),
        PlainSerializer(dict, return_type=dict[key, value]),
    ]


def _pattern(regex: str, code: str, what: str) -> Any:
    compiled = re.compile(regex)

    def check(value: str) -> str:
        if not compiled.match(value):
            raise PydanticCustomError(code, f"{value!r} is not a valid {what}")
        return value

    return Annotated[str, AfterValidator(check), Field(json_schema_extra={"pattern": regex})]


def _require_reference(value: str) -> str:
    if parse_reference(value) is None:
        raise PydanticCustomError(
            "literal_secret",
            "a secret field must hold a ${env:NAME} or ${secret:NAME} reference, never a value",
        )
    return value.strip()


SchemaName = _pattern(
    SCHEMA_IDENT, "unsafe_identifier", "schema name (lowercase letters, digits, _)"
)
SqlIdent = _pattern(SQL_IDENT, "unsafe_identifier", "SQL identifier (letters, digits, _)")
ResourceRef = _pattern(NAME_PATTERN, "bad_reference", "resource name")
Tag = _pattern(TAG_PATTERN, "bad_tag", "tag (lowercase letters, digits, _ or -)")
EnvName = _pattern(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$", "bad_env_name", "environment variable name")
EnvRef = _pattern(
    r"^\$\{env:[A-Za-z_][A-Za-z0-9_]{0,127}\}$", "bad_reference", "${env:NAME} reference"
)
Secret = Annotated[
    str,
    AfterValidator(_require_reference),
    Field(json_schema_extra={"pattern": REFERENCE_PATTERN}),
]
TenantRef = _pattern(r"^[a-z][a-z0-9_]{0,39}$", "bad_reference", "tenant slug")
RolePrefix = _pattern(r"^([a-z_][a-z0-9_]{0,20})?$", "bad_prefix", "role prefix")
Scalar = str | int | float | bool | None
Email = _pattern(r"^[^@\s<>]+@[^@\s<>]+$", "bad_email", "email address")
GroupName = _pattern(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}$", "bad_group", "group name")
Who = _pattern(
    r"^([^@\s<>]+@[^@\s<>]+|[A-Za-z0-9][A-Za-z0-9_.\-]{0,99})$",
    "bad_member",
    "member (an email address, or a group name declared under groups: in fabric.yaml)",
)
GithubTeam = _pattern(
    r"^@[A-Za-z0-9][A-Za-z0-9\-]*/[A-Za-z0-9][A-Za-z0-9_.\-]*$", "bad_team", "team (@org/team)"
)
Seconds = Annotated[float, Field(ge=0, le=7 * 24 * 3600)]


# ---------------------------------------------------------------------------------------------
# fabric.yaml


class TransformationDefaults(Spec):
    """Defaults of every transformation (project-wide, or a tenant's own); a transformation's
    own field wins, then the tenant's defaults, then the project's, then the built-in ones."""

    schema_: SchemaName | None = Field(None, alias="schema")
    materialized: Literal["view", "table", "incremental"] | None = None
    tags: tuple[Tag, ...] | None = None
    tests_severity: Literal["error", "warn"] | None = None


class Defaults(Spec):
    """Project-wide defaults a resource may override."""

    timezone: str = "UTC"
    retries: int = Field(0, ge=0, le=20)
    retry_backoff_seconds: Seconds = 30
    timeout_seconds: Seconds | None = None
    transformations: TransformationDefaults = TransformationDefaults()
    max_parallel_nodes: int | None = Field(None, ge=1, le=1000)
    """A tenant's `max_parallel_nodes` when it sets none (unset: no cap)."""


class DbtPackage(Spec):
    """One entry of dbt's packages.yml: a `local` folder of the repository, a `git` URL or a
    hub `package`, installed by `fabric deps`."""

    local: str | None = None
    """A folder relative to the repository root; it must stay inside the repository."""
    git: str | None = None
    revision: str | None = None
    subdirectory: str | None = None
    package: str | None = None
    """A dbt hub package, e.g. dbt-labs/dbt_utils."""
    version: str | tuple[str, ...] | None = None

    @model_validator(mode="after")
    def _one_source(self) -> DbtPackage:
        given = [n for n in ("local", "git", "package") if getattr(self, n) is not None]
        if len(given) != 1:
            raise PydanticCustomError(
                "package_source", "a package needs exactly one of local, git or package"
            )
        if self.package is not None and self.version is None:
            raise PydanticCustomError("package_source", "a hub package needs a version")
        return self


class DbtSettings(Spec):
    """`dbt:` in fabric.yaml: what every tenant's generated dbt project shares."""

    macros: str | None = None
    """A folder (relative to the repository root) of macros shared by every tenant."""
    packages: tuple[DbtPackage, ...] = ()
    """dbt packages every tenant's project installs (`fabric deps`)."""


class ApplySettings(Spec):
    """Deletion safety for `fabric apply`."""

    allow_delete: bool = False
    max_deletes: int = Field(10, ge=0)


class WarehouseAdmin(Spec):
    """The login fabric manages a warehouse's roles and grants with (plan reads, apply writes).

    It must be a superuser, or a role with CREATEROLE that may SET ROLE to the roles it makes
    (PostgreSQL 16: `createrole_self_grant = 'set, inherit'`) and owns the database."""

    username: str
    password: EnvRef
    """`${env:NAME}`: read by `plan` and `apply` only; never given to a run."""


class WarehouseSpec(Spec):
    """A PostgreSQL warehouse under fabric's management (`warehouses:` in fabric.yaml).

    A tenant's connection names it (`warehouse: dwh`) instead of holding host and credentials;
    with `manage_roles`, fabric plans one login role per tenant, the ownership of every schema
    the tenant writes there and the read-only shares between tenants."""

    type: Literal["postgres"] = "postgres"
    host: str
    port: Annotated[int, Field(ge=1, le=65535)] | EnvRef = 5432
    database: SchemaName
    admin: WarehouseAdmin
    manage_roles: bool = False
    role_prefix: RolePrefix = ""
    """Prepended to every role fabric makes here (`<prefix><tenant>_loader`): roles are
    cluster-wide, so two installations sharing a server keep apart."""


class Group(Spec):
    """A named set of people that `members` and `admins` may name instead of one email."""

    members: tuple[Email, ...] = ()
    """Email addresses of the group's people (matched without regard to case)."""
    team: GithubTeam | None = None
    """The git host's team for CODEOWNERS (`@org/team`); without it, the members' emails."""


class OwnershipSettings(Spec):
    """Whether `fabric apply` checks the author's role (see fabric/plan/authorize.py)."""

    enforce: bool | None = None
    """`true`: every change is judged (an apply with no author known is refused); `false`:
    none is, whoever makes it; unset: judged wherever ownership is declared: everywhere once
    `admins` is set, else in each tenant that lists `members`."""


class ProjectSpec(Spec):
    """`fabric.yaml`: the project. Never holds secrets. `env:` lists the environment variables
    readable by every tenant (besides each tenant's own `<SLUG>_*`)."""

    format_version: Literal[1] = 1
    name: str | None = None
    description: str | None = None
    defaults: Defaults = Defaults()
    apply: ApplySettings = ApplySettings()
    warehouses: FrozenMap(str, WarehouseSpec) = Field(default_factory=dict)
    env: tuple[EnvName, ...] = ()
    """Environment variables readable by every tenant (e.g. DEMO_PG_PORT): names a tenant may
    use in `${env:NAME}` and its `env:` list besides its own `<SLUG>_*` ones. FABRIC_* and
    DBT_ENV_SECRET_* may not be shared."""
    admins: tuple[Who, ...] = ()
    """Project admins (emails or group names): they may change anything, fabric.yaml too."""
    groups: FrozenMap(GroupName, Group) = Field(default_factory=dict)
    """Group name -> its people; `who:` and `admins:` entries without `@` name a group."""
    ownership: OwnershipSettings = OwnershipSettings()
    dbt: DbtSettings = DbtSettings()


# ---------------------------------------------------------------------------------------------
# tenant


class Member(Spec):
    who: Who
    """An email address (any case) or the name of a group declared in fabric.yaml."""
    role: Literal["owner", "admin", "editor", "viewer"] = "viewer"


class ShareSpec(Spec):
    """Schemas this tenant lets other tenants read (USAGE + SELECT on current and future
    tables), in a warehouse whose roles fabric manages."""

    with_: tuple[TenantRef, ...] = Field(alias="with", min_length=1)
    schemas: tuple[SchemaName, ...] = Field(min_length=1)


class TenantDefaults(Spec):
    """A tenant's own defaults; they win over fabric.yaml's `defaults`."""

    transformations: TransformationDefaults = TransformationDefaults()


class TenantSpec(Spec):
    """`tenant:` in any file of the tenant's folder; exactly once per tenant."""

    display_name: str
    description: str | None = None
    warehouse: ResourceRef | None = None
    members: tuple[Member, ...] = ()
    labels: FrozenMap(str, str) = Field(default_factory=dict)
    env: tuple[EnvName, ...] = ()
    """Environment variables the tenant's SQL may read with `env_var('NAME')`; their values are
    taken from the runner's environment at run time. Any other name is a validation error."""
    share: tuple[ShareSpec, ...] = ()
    """Read-only shares of this tenant's schemas with other tenants (managed warehouses)."""
    max_parallel_nodes: int | None = Field(None, ge=1, le=1000)
    """At most this many of the tenant's nodes run at once across all queue workers; the
    others wait, queued, and start as its running ones end, so one tenant's hundred ready
    nodes cannot keep the workers from another tenant's. Unset: fabric.yaml's
    `defaults.max_parallel_nodes`, else no cap."""
    packages: tuple[DbtPackage, ...] = ()
    """dbt packages of this tenant's project, besides fabric.yaml's `dbt.packages`."""
    defaults: TenantDefaults = TenantDefaults()


# ---------------------------------------------------------------------------------------------
# connections


class _Connection(Spec):
    description: str | None = None
    protect: bool = False
    renamed_from: ResourceRef | None = None
    """The name this connection had before: a rename keeps its row, history and secrets."""


class _SqlConnection(_Connection):
    direction: Literal["source", "destination"]
    host: str | None = None
    port: Annotated[int, Field(ge=1, le=65535)] | EnvRef | None = None
    """A number, or `${env:NAME}` read from the worker's environment at run time."""
    database: str | None = None
    username: str | None = None
    password: Secret | None = None
    url: Secret | None = None
    """A whole SQLAlchemy URL (it may embed a password, so it must be a reference)."""
    options: FrozenMap(str, Scalar) = Field(default_factory=dict)
    """Driver query parameters, e.g. `sslmode: require`."""


class PostgresConnection(_SqlConnection):
    type: Literal["postgres"]
    warehouse: ResourceRef | None = None
    """A warehouse of fabric.yaml whose roles fabric manages: host, database and the tenant's
    own login role come from there (no host, username or password here)."""


class MysqlConnection(_SqlConnection):
    type: Literal["mysql"]


class MssqlConnection(_SqlConnection):
    type: Literal["mssql"]
    driver: str = "ODBC Driver 18 for SQL Server"


class SqliteConnection(_Connection):
    type: Literal["sqlite"]
    direction: Literal["source", "destination"]
    path: str
    """Path of the database file; relative paths are relative to the repository root."""


class BearerAuth(Spec):
    type: Literal["bearer"]
    token: Secret


class ApiKeyAuth(Spec):
    type: Literal["api_key"]
    name: str = "Authorization"
    api_key: Secret
    location: Literal["header", "query", "cookie"] = "header"


class HttpBasicAuth(Spec):
    type: Literal["http_basic"]
    username: str
    password: Secret


RestAuth = Annotated[BearerAuth | ApiKeyAuth | HttpBasicAuth, Field(discriminator="type")]
Paginator = str | FrozenMap(str, Scalar)


class RestResource(Spec):
    """One endpoint of a REST API, in the shape of dlt's rest_api resource config."""

    name: SqlIdent
    path: str
    method: Literal["GET", "POST"] = "GET"
    params: FrozenMap(str, Scalar) = Field(default_factory=dict)
    data_selector: str | None = None
    paginator: Paginator | None = None
    primary_key: tuple[SqlIdent, ...] = ()


class RestApiConnection(_Connection):
    type: Literal["rest_api"]
    direction: Literal["source"] = "source"
    base_url: str
    auth: RestAuth | None = None
    headers: FrozenMap(str, str) = Field(default_factory=dict)
    paginator: Paginator | None = None
    resources: tuple[RestResource, ...] = Field(min_length=1)


class FilesystemConnection(_Connection):
    type: Literal["filesystem"]
    direction: Literal["source", "destination"] = "source"
    bucket_url: str
    """`file:///path`, a local path, or a cloud URL passed through to fsspec (s3://, gs://, az://)."""
    file_glob: str = "*"
    format: Literal["csv", "jsonl", "parquet"] = "csv"
    credentials: FrozenMap(str, Secret) = Field(default_factory=dict)


ConnectionSpec = Annotated[
    PostgresConnection
    | MysqlConnection
    | MssqlConnection
    | SqliteConnection
    | RestApiConnection
    | FilesystemConnection,
    Field(discriminator="type"),
]
SQL_SOURCE_TYPES = frozenset({"postgres", "mysql", "mssql", "sqlite"})
DESTINATION_TYPES = frozenset({"postgres", "filesystem"})
"""What a pipeline can load into (dlt's postgres and filesystem destinations); an sqlite or
mssql connection may be declared as a destination, but no run could load into it."""
WAREHOUSE_TYPES = frozenset({"postgres"})


# ---------------------------------------------------------------------------------------------
# pipelines


class Incremental(Spec):
    cursor: SqlIdent
    initial_value: str | int | float | None = None
    """Where the first run starts; YAML dates and timestamps are kept as ISO text."""
    end_value: str | int | float | None = None


ContractMode = Literal["evolve", "freeze", "discard_value", "discard_row"]


class SchemaContract(Spec):
    tables: ContractMode | None = None
    columns: ContractMode | None = None
    data_type: ContractMode | None = None


class Filter(Spec):
    column: SqlIdent
    op: Literal["eq", "ne", "gt", "gte", "lt", "lte", "in", "not_in"]
    value: Scalar | tuple[Scalar, ...]


class _Runnable(Spec):
    """Fields every DAG node has."""

    description: str | None = None
    depends_on: tuple[str, ...] = ()
    """Names of pipelines or transformations of the same tenant (`pipeline:x` when ambiguous)."""
    tags: tuple[Tag, ...] = ()
    retries: int | None = Field(None, ge=0, le=20)
    retry_backoff_seconds: Seconds | None = None
    timeout_seconds: Seconds | None = None
    protect: bool = False
    renamed_from: ResourceRef | None = None
    """The name this node had before: a rename keeps its row, run history and dlt state."""


def _iso(value: Any) -> Any:
    return value.isoformat() if hasattr(value, "isoformat") else value


class FreshnessAfter(Spec):
    """An age: `{count: 12, period: hour}`."""

    count: int = Field(ge=1, le=100_000)
    period: Literal["minute", "hour", "day"]


class FreshnessSpec(Spec):
    """How old the tables a pipeline loads may get before `fabric freshness` warns or fails."""

    warn_after: FreshnessAfter | None = None
    error_after: FreshnessAfter | None = None
    loaded_at_field: SqlIdent | None = None
    """A column of each loaded table holding when its row was loaded or changed; default:
    dlt's load time (the newest `_dlt_load_id` of the table, in the dataset's `_dlt_loads`)."""


class PipelineSpec(_Runnable):
    """A dlt extract+load from a source connection into a destination dataset."""

    source: ResourceRef
    destination: ResourceRef | None = None
    """Defaults to the tenant's warehouse."""
    dataset: SchemaName
    mode: Literal["single_table", "full_database", "rest_api", "files"]
    table: SqlIdent | None = None
    """single_table: the source table."""
    table_names: tuple[SqlIdent, ...] = ()
    """full_database: the tables to load (all tables when empty)."""
    resources: tuple[SqlIdent, ...] = ()
    """rest_api: the connection's resources to load (all when empty)."""
    table_name: SchemaName | None = None
    """files: the destination table (defaults to the pipeline's name)."""
    file_glob: str | None = None
    """files: overrides the connection's file_glob."""
    source_schema: SqlIdent | None = None
    write_disposition: Literal["append", "replace", "merge"] = "append"
    primary_key: tuple[SqlIdent, ...] = ()
    incremental: Annotated[Incremental | None, BeforeValidator(lambda v: _iso_fields(v))] = None
    schema_contract: SchemaContract | ContractMode | None = None
    filters: tuple[Filter, ...] = ()
    batch_size: int | None = Field(None, ge=1, le=10_000_000)
    backend: Literal["auto", "sqlalchemy", "pyarrow", "connectorx", "pandas"] = "auto"
    freshness: FreshnessSpec | None = None
    """Source freshness of the tables this pipeline loads (`fabric freshness`)."""


def _iso_fields(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _iso(v) for k, v in value.items()}
    return value


# ---------------------------------------------------------------------------------------------
# transformations


class TestConfig(Spec):
    """dbt's per-test config: how a failing test counts, and which rows it looks at."""

    severity: Literal["error", "warn"] | None = None
    """Overrides the transformation's tests_severity for this test."""
    where: str | None = None
    """A SQL condition: the test looks only at rows of the model that match it."""
    error_if: str | None = None
    """When failures make the test an error, e.g. ">10" (dbt's default: "!=0")."""
    warn_if: str | None = None
    """When failures make the test a warning, e.g. ">0"."""
    store_failures: bool | None = None
    """Keep the failing rows in a table of the warehouse's audit schema."""


_TEST_ARGUMENTS: dict[str, frozenset[str]] = {
    "not_null": frozenset(),
    "unique": frozenset(),
    "accepted_values": frozenset({"values"}),
    "relationships": frozenset({"to", "field"}),
}


BUILT_IN_TESTS = frozenset(_TEST_ARGUMENTS)
CUSTOM_TEST = r"^([a-z_][a-z0-9_]{0,62}\.)?[a-z_][a-z0-9_]{0,62}$"
"""A custom generic test (`{% test name %}` in macros/) or a package's (`dbt_utils.name`)."""
_CUSTOM_TEST = re.compile(CUSTOM_TEST)


class ColumnTest(Spec):
    """One dbt generic test on a column, normalised from its YAML shorthand."""

    test: str
    """not_null, unique, accepted_values, relationships, a custom generic test's name or a
    package's test (`dbt_utils.accepted_range`)."""
    values: tuple[Scalar, ...] | None = None
    to: str | None = None
    field: SqlIdent | None = None
    arguments: FrozenMap(str, Any) = Field(default_factory=dict)
    """A custom or package test's arguments (everything but `config`)."""
    config: TestConfig | None = None

    @model_validator(mode="after")
    def _arguments_of_this_test(self) -> ColumnTest:
        if self.test not in BUILT_IN_TESTS:
            return self
        if self.arguments:
            raise PydanticCustomError(
                "test_argument",
                "{test} takes no argument '{name}'",
                {"test": self.test, "name": sorted(self.arguments)[0]},
            )
        given = {n for n in ("values", "to", "field") if getattr(self, n) is not None}
        extra = sorted(given - _TEST_ARGUMENTS[self.test])
        if extra:
            raise PydanticCustomError(
                "test_argument",
                "{test} takes no argument '{name}'",
                {"test": self.test, "name": extra[0]},
            )
        return self

    @model_serializer
    def _as_written(self) -> Any:
        """Serialise back to the YAML shorthand, so stored specs and exports read as written."""
        config = (
            {"config": self.config.model_dump(exclude_none=True)} if self.config is not None else {}
        )
        if self.test == "accepted_values":
            if config:
                return {"accepted_values": {"values": list(self.values or ()), **config}}
            return {"accepted_values": list(self.values or ())}
        if self.test == "relationships":
            return {"relationships": {"to": self.to, "field": self.field, **config}}
        if self.arguments:
            return {self.test: {**dict(self.arguments), **config}}
        return {self.test: config} if config else self.test


def _column_test(value: Any) -> Any:
    if isinstance(value, str) and value not in _TEST_ARGUMENTS and _CUSTOM_TEST.match(value):
        return {"test": value}
    if isinstance(value, dict) and len(value) == 1:
        ((name, arg),) = value.items()
        if (
            isinstance(name, str)
            and name not in _TEST_ARGUMENTS
            and _CUSTOM_TEST.match(name)
            and (arg is None or isinstance(arg, dict))
        ):
            arg = dict(arg or {})
            config = arg.pop("config", None)
            return {"test": name, "arguments": arg, **({"config": config} if config else {})}
    if isinstance(value, str):
        if value in ("not_null", "unique"):
            return {"test": value}
        raise PydanticCustomError(
            "unknown_test",
            "unknown test '{name}'; use not_null, unique, accepted_values or relationships",
            {"name": value},
        )
    if isinstance(value, dict) and len(value) == 1:
        ((name, arg),) = value.items()
        if name == "accepted_values":
            if isinstance(arg, dict):
                return {"test": name, **arg}
            return {"test": name, "values": arg}
        if name in _TEST_ARGUMENTS and isinstance(arg, dict):
            return {"test": name, **arg}
        if name in ("not_null", "unique") and arg in (None, True):
            return {"test": name}
        raise PydanticCustomError(
            "unknown_test",
            "unknown test '{name}'; use not_null, unique, accepted_values: [...] or "
            "relationships: {to: model, field: column}",
            {"name": name},
        )
    if isinstance(value, ColumnTest | dict):
        return value
    raise PydanticCustomError("unknown_test", "a test is a name or a one-key mapping")


def _test_json_schema() -> dict[str, Any]:
    config = {k: v for k, v in TestConfig.model_json_schema().items() if k != "title"}

    def shape(name: str, properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
        body = {
            "type": "object",
            "properties": {**properties, "config": config},
            "additionalProperties": False,
        }
        if required:
            body["required"] = required
        return {
            "type": "object",
            "properties": {name: body},
            "required": [name],
            "additionalProperties": False,
        }

    custom = {
        "type": "object",
        "patternProperties": {
            CUSTOM_TEST: {
                "type": ["object", "null"],
                "properties": {"config": config},
                "description": "A custom generic test or a package's, with its arguments.",
            }
        },
        "minProperties": 1,
        "maxProperties": 1,
        "additionalProperties": False,
    }
    return {
        "anyOf": [
            {"enum": ["not_null", "unique"]},
            {"type": "string", "pattern": CUSTOM_TEST},
            custom,
            shape("not_null", {}, []),
            shape("unique", {}, []),
            {
                "type": "object",
                "properties": {"accepted_values": {"type": "array"}},
                "required": ["accepted_values"],
                "additionalProperties": False,
            },
            shape("accepted_values", {"values": {"type": "array"}}, ["values"]),
            shape(
                "relationships",
                {"to": {"type": "string"}, "field": {"type": "string"}},
                ["to", "field"],
            ),
        ]
    }


_TEST_JSON_SCHEMA = _test_json_schema()
ColumnTestSpec = Annotated[
    ColumnTest, BeforeValidator(_column_test), WithJsonSchema(_TEST_JSON_SCHEMA)
]


class ColumnDoc(Spec):
    """A column's documentation, carried into dbt's schema.yml (and so into dbt docs)."""

    description: str | None = None
    data_type: str | None = None


class TransformationSpec(_Runnable):
    """A dbt model (SQL inline or in a file under the tenant's folder) with column tests."""

    sql: str | None = None
    sql_file: str | None = None
    schema_: SchemaName | None = Field(None, alias="schema")
    """Required unless a `defaults.transformations.schema` (tenant or project) provides it."""
    materialized: Literal["view", "table", "incremental"] | None = None
    """Defaults to the tenant's, then the project's defaults, then `view`."""
    unique_key: SqlIdent | tuple[SqlIdent, ...] | None = None
    warehouse: ResourceRef | None = None
    """Defaults to the tenant's warehouse."""
    tests: FrozenMap(SqlIdent, tuple[ColumnTestSpec, ...]) = Field(default_factory=dict)
    """Column name -> its tests; the names become SQL identifiers in dbt's schema.yml."""
    columns: FrozenMap(SqlIdent, ColumnDoc) = Field(default_factory=dict)
    """Column name -> its description (and data_type), carried into dbt's docs."""
    tests_severity: Literal["error", "warn"] | None = None
    """Defaults to the tenant's, then the project's defaults, then `error`."""


# ---------------------------------------------------------------------------------------------
# dbt files a tenant brings (discovered in its folder, not declared in YAML)


class MacroSpec(Spec):
    """A macro file as stored: where it lives and its text."""

    file: str
    """Its repository-relative path (`tenants/acme/macros/money.sql`, `macros/x.sql`)."""
    sql: str
    shared: bool = False
    """A project-wide macro (fabric.yaml's `dbt.macros` folder), shared by every tenant."""


class SeedConfig(Spec):
    """`seeds:` in a tenant file: configuration of a discovered `seeds/<name>.csv` (a seed
    needs no entry to exist)."""

    schema_: SchemaName | None = Field(None, alias="schema")
    """Defaults to the tenant's, then the project's `defaults.transformations.schema`."""
    column_types: FrozenMap(SqlIdent, str) = Field(default_factory=dict)
    """Column -> SQL type (dbt seed's column_types); other columns' types are inferred."""
    description: str | None = None
    columns: FrozenMap(SqlIdent, ColumnDoc) = Field(default_factory=dict)
    tests: FrozenMap(SqlIdent, tuple[ColumnTestSpec, ...]) = Field(default_factory=dict)
    tests_severity: Literal["error", "warn"] | None = None
    tags: tuple[Tag, ...] = ()
    protect: bool = False


class SeedSpec(SeedConfig):
    """A seed as stored: its configuration (defaults resolved), its file and its CSV text."""

    file: str
    """Its repository path (`tenants/acme/seeds/country_codes.csv`)."""
    csv: str
    warehouse: ResourceRef | None = None
    """The tenant's warehouse connection."""


# ---------------------------------------------------------------------------------------------
# snapshots


class SnapshotSpec(_Runnable):
    """A dbt snapshot: type-2 history of a query's rows (`<slug>.snapshot.<name>`).

    Each run compares the query's rows with the history table by `unique_key`; a changed row
    closes its current version (`dbt_valid_to`) and opens a new one (`dbt_valid_from`)."""

    sql: str | None = None
    sql_file: str | None = None
    """A .sql file under the tenant's folder holding the select (e.g. snapshots/x.sql)."""
    schema_: SchemaName = Field(alias="schema")
    """Where the history table lands; a schema the tenant owns, like a transformation's."""
    warehouse: ResourceRef | None = None
    """Defaults to the tenant's warehouse."""
    unique_key: SqlIdent | tuple[SqlIdent, ...]
    strategy: Literal["timestamp", "check"]
    """timestamp: a row changed when its `updated_at` moved; check: when a `check_cols` value
    changed."""
    updated_at: SqlIdent | None = None
    """timestamp: the column holding the row's last change."""
    check_cols: tuple[SqlIdent, ...] | Literal["all"] | None = None
    """check: the columns compared (or `all`)."""
    hard_deletes: Literal["ignore", "invalidate", "new_record"] = "ignore"
    """A row gone from the query: kept open (ignore), closed (invalidate), or closed with a
    new version marked `dbt_is_deleted` (new_record)."""


# ---------------------------------------------------------------------------------------------
# schedules


class ScheduleSpec(Spec):
    """A cron schedule that fires a selection of the tenant's DAG."""

    cron: str
    timezone: str | None = None
    """Defaults to the project's default timezone."""
    targets: tuple[str, ...] = Field(min_length=1)
    active: bool = True
    catchup: bool = False
    max_instances: int = Field(1, ge=1, le=100)
    misfire_grace_seconds: Seconds = 300
    description: str | None = None
    protect: bool = False


# ---------------------------------------------------------------------------------------------
# files

ResourceName = _pattern(NAME_PATTERN, "bad_name", "resource name")


MOVABLE_KINDS = ("connection", "pipeline", "transformation")
ADDRESS_PATTERN = (
    r"^[a-z][a-z0-9_]{0,39}\.(connection|pipeline|transformation)\.[a-z][a-z0-9_]{0,62}$"
)
MovableAddress = _pattern(
    ADDRESS_PATTERN,
    "bad_address",
    "address (tenant.kind.name of a connection, pipeline or transformation)",
)


class MovedSpec(Spec):
    """One entry of a `moved:` section, as Terraform's `moved` block: the object stored at
    `from` is now declared at `to` (same tenant, same kind), so plan updates it in place."""

    from_: MovableAddress = Field(alias="from")
    to: MovableAddress


class TenantFileSpec(Spec):
    """Any `*.yaml` under `tenants/<slug>/`: every section is optional."""

    tenant: TenantSpec | None = None
    connections: FrozenMap(ResourceName, ConnectionSpec) = Field(default_factory=dict)
    pipelines: FrozenMap(ResourceName, PipelineSpec) = Field(default_factory=dict)
    transformations: FrozenMap(ResourceName, TransformationSpec) = Field(default_factory=dict)
    schedules: FrozenMap(ResourceName, ScheduleSpec) = Field(default_factory=dict)
    moved: tuple[MovedSpec, ...] = ()
    snapshots: FrozenMap(ResourceName, SnapshotSpec) = Field(default_factory=dict)
    seeds: FrozenMap(ResourceName, SeedConfig) = Field(default_factory=dict)


class SingularTestSpec(Spec):
    """A singular test as stored: a `tests/**/*.sql` query returning the failing rows."""

    file: str
    sql: str
    attached: tuple[ResourceRef, ...] = Field(min_length=1)
    """The transformations and seeds it refs: it runs with them (after them), in the tenant's
    dbt invocation, and `fabric test` reports it with each of them."""


FILE_SPECS: dict[Any, type[Spec]] = {
    "macro": MacroSpec,
    "seed": SeedSpec,
    "test": SingularTestSpec,
}
"""Kind (value) -> the stored spec of dbt files a tenant brings (discovered, not YAML)."""

SECTION_SPECS: dict[str, Any] = {
    "connections": ConnectionSpec,
    "pipelines": PipelineSpec,
    "transformations": TransformationSpec,
    "schedules": ScheduleSpec,
    "snapshots": SnapshotSpec,
    "seeds": SeedConfig,
}
