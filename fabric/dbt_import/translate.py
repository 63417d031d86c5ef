"""A dbt project -> the files of a fabric tenant, and what could not be carried over.  [pure]

`translate(files, tenant)` takes the project's files ({project-relative path: text}, as
`fabric.dbt_import.reader` reads them) and returns a `Translation`: the tenant folder's files
(YAML in the format of fabric/config/specs.py plus the SQL, macro, seed and package files) and
every `Untranslated` thing with its reason. Names follow dbt where fabric allows:

- a model keeps its name, SQL file (under `models/`) and configs; the keys fabric owns in YAML
  (materialized, schema, unique_key, tags) move out of `{{ config() }}` into the YAML, the other
  keys stay in the SQL; folder-level configs of dbt_project.yml are resolved per model;
- a schema is named as dbt's default `generate_schema_name` would with the tenant's slug as the
  target schema: no custom schema -> `<slug>`, `+schema: marts` -> `<slug>_marts`;
- each dbt source becomes a pipeline (the source's name) loading its tables from a `postgres`
  source connection whose credentials are `${env:<SLUG>_SOURCE_*}` placeholders, into the
  dataset `<slug>_<source>`; `source()` calls are rewritten where a name changes;
- the warehouse is a `postgres` destination connection read from `${env:<SLUG>_WAREHOUSE_*}`.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from fabric.config.specs import NAME_PATTERN, SCHEMA_IDENT, SQL_IDENT, TAG_PATTERN
from fabric.dbt_import.data_tests import translate_test
from fabric.dbt_import.jinja import (
    blocks,
    config_calls,
    config_expression,
    env_var_names,
    rename_sources,
    substitute_vars,
    without_spans,
)
from fabric.dbt_import.project import (
    DbtProject,
    Untranslated,
    config_key,
    merge_config,
    read_project,
)
from fabric.runner.dbt_project import dlt_table_name

SLUG_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
_NAME = re.compile(NAME_PATTERN)
_SCHEMA = re.compile(SCHEMA_IDENT)
_SQL_IDENT = re.compile(SQL_IDENT)
_TAG = re.compile(TAG_PATTERN)
_DOC = re.compile(r"""\{\{\s*doc\(\s*['"]([^'"]+)['"]\s*\)\s*\}\}""")
_NOT_NAME = re.compile(r"[^a-z0-9_]+")

YAML_OWNED = ("materialized", "schema", "unique_key", "tags")
"""Model configs that are fields of a fabric transformation (refused inside the SQL)."""
MANAGED = {
    "alias": "fabric names the relation after the transformation",
    "database": "the warehouse connection sets the database",
    "pre_hook": "fabric runs no hooks; put that SQL into the model or a macro it calls",
    "post_hook": "fabric runs no hooks; put that SQL into the model or a macro it calls",
    "grants": "fabric manages grants per schema (managed warehouses), not per model",
    "full_refresh": "use `fabric run --full-refresh`",
    "sql_header": "it runs SQL outside the model; put that SQL into the model itself",
    "access": "fabric has no model access levels",
    "group": "fabric has no model groups",
    "contract": "model contracts are not carried (the columns' data_type is kept as docs)",
    "enabled": "",
}
"""Model configs fabric manages itself or does not support: dropped, with the reason."""
MATERIALIZATIONS = ("view", "table", "incremental")
NAMING_MACROS = ("generate_schema_name", "generate_alias_name", "generate_database_name")
SNAPSHOT_KEYS = ("unique_key", "strategy", "updated_at", "check_cols", "tags")
IGNORED_CONFIG = frozenset({"docs", "persist_docs", "meta", "quoting", "column_types"})
SKIPPED_DIRS = ("dbt_packages", "target", "logs")


@dataclass(frozen=True, slots=True)
class EnvVar:
    """An environment variable the imported tenant reads, and what to set it to."""

    name: str
    meaning: str


@dataclass(frozen=True)
class Translation:
    """The tenant folder's files, what was changed on the way, and what was not carried."""

    tenant: str
    project: str
    files: Mapping[str, str]
    """Tenant-folder-relative POSIX path -> text."""
    repo_files: Mapping[str, str]
    """Repository-relative POSIX path -> text: the project's local packages, under
    `packages/<slug>/` (see package_folder)."""
    untranslated: tuple[Untranslated, ...]
    rewrites: tuple[str, ...]
    """Changes made to the user's SQL besides removing config keys (renamed sources, vars)."""
    env: tuple[EnvVar, ...]
    """Variables to set for `fabric apply` and runs (connection credentials)."""
    packages: tuple[Mapping[str, Any], ...] = ()
    """The tenant's dbt packages (`fabric deps` installs them)."""


@dataclass
class _Properties:
    """Properties-file entries by resource name: (file, entry)."""

    models: dict[str, tuple[str, Mapping[str, Any]]] = field(default_factory=dict)
    seeds: dict[str, tuple[str, Mapping[str, Any]]] = field(default_factory=dict)
    snapshots: dict[str, tuple[str, Mapping[str, Any]]] = field(default_factory=dict)
    sources: list[tuple[str, Mapping[str, Any]]] = field(default_factory=list)


_OTHER_SECTIONS = {
    "exposures": "fabric has no exposures",
    "metrics": "fabric has no metrics (the semantic layer is not part of fabric)",
    "semantic_models": "fabric has no semantic models",
    "saved_queries": "fabric has no saved queries",
    "unit_tests": "fabric runs no dbt unit tests",
    "groups": "fabric has no model groups",
    "analyses": "fabric does not compile analyses",
    "macros": "macro properties (descriptions, arguments) are not carried",
    "data_tests": "properties of singular tests are not carried",
}
_SINGULAR = {
    "exposures": "exposure",
    "metrics": "metric",
    "semantic_models": "semantic model",
    "saved_queries": "saved query",
    "unit_tests": "unit test",
    "groups": "group",
    "analyses": "analysis",
    "macros": "macro",
    "data_tests": "singular test",
}


def is_safe_relative(path: str) -> bool:
    """A relative POSIX path that stays where it is put (no `..`, not absolute, no `\\`)."""
    if not path or "\\" in path or "\x00" in path or posixpath.isabs(path):
        return False
    return posixpath.normpath(path) == path and not path.startswith("../") and path != ".."


class _Importer:
    def __init__(
        self,
        project: DbtProject,
        slug: str,
        shared_env: frozenset[str],
        managed_warehouse: str | None,
    ) -> None:
        self.p = project
        self.slug = slug
        self.shared_env = shared_env
        self.managed_warehouse = managed_warehouse
        self.out: dict[str, str] = {}
        self.repo_files: dict[str, str] = {}
        self.transformations: dict[str, dict[str, Any]] = {}
        self.seeds: dict[str, dict[str, Any]] = {}
        self.snapshots: dict[str, dict[str, Any]] = {}
        self.connections: dict[str, dict[str, Any]] = {}
        self.pipelines: dict[str, dict[str, Any]] = {}
        self.packages: list[dict[str, Any]] = []
        self.env: dict[str, str] = {}
        self.env_reads: dict[str, tuple[str, int]] = {}
        self.renames: dict[tuple[str, str], tuple[str, str]] = {}
        self.rewrites: list[str] = []
        self.props = _Properties()
        self.docs: dict[str, str] = {}

    # -- helpers --------------------------------------------------------------------------

    def skip(self, path: str, line: int | None, what: str, why: str) -> None:
        self.p.skip(path, line, what, why)

    def line(self, path: str, *keys: str) -> int | None:
        return self.p.line(path, *keys)

    def write(self, rel: str, text: str, origin: str) -> bool:
        if not is_safe_relative(rel):
            self.skip(origin, None, f"file {rel!r}", "its path would leave the tenant folder")
            return False
        self.out[rel] = text
        return True

    def schema(self, custom: Any, path: str, what: str) -> str:
        """dbt's default schema naming with the tenant's slug as the target schema."""
        if custom is None or custom == "":
            return self.slug
        custom = str(custom).strip().lower()
        # a schema already named after the tenant stays as it is (no `shop_shop_marts`)
        own = custom == self.slug or custom.startswith(f"{self.slug}_")
        name = custom if own else f"{self.slug}_{custom}"
        if not _SCHEMA.match(name):
            self.skip(
                path,
                None,
                f"{what} schema {custom!r}",
                f"not a plain schema name; written as {self.slug}",
            )
            return self.slug
        return name

    def sql(self, text: str, path: str) -> str:
        """`text` with project vars substituted and sources renamed; env_var() reads noted."""
        text, missing = substitute_vars(text, self.p.var)
        for use in missing:
            self.skip(
                path,
                use.line,
                f"var({use.name!r})",
                "no value in dbt_project.yml `vars:` "
                "and no default; left as written (fabric passes no --vars)",
            )
        renamed = rename_sources(text, self.renames)
        if renamed != text:
            self.rewrites.append(f"{path}: source() calls renamed to the pipelines' names")
        for name, line in env_var_names(renamed):
            self.env_reads.setdefault(name, (path, line))
        return renamed

    def describe(self, text: Any) -> str | None:
        if not isinstance(text, str) or not text.strip():
            return None
        return _DOC.sub(lambda m: self.docs.get(m.group(1), m.group(0)), text).strip()

    def tags(self, values: Any, path: str, what: str) -> list[str]:
        out = []
        for tag in [values] if isinstance(values, str) else list(values or ()):
            t = str(tag).lower()
            if _TAG.match(t):
                out.append(t)
            else:
                self.skip(path, None, f"{what} tag {tag!r}", "not a fabric tag (a-z, 0-9, _, -)")
        return list(dict.fromkeys(out))

    def columns(
        self, entry: Mapping[str, Any], path: str, what: str, keys: tuple[str, ...]
    ) -> tuple[dict[str, Any], dict[str, list[Any]]]:
        """(columns: descriptions, tests: per column) of a properties entry."""
        columns: dict[str, Any] = {}
        tests: dict[str, list[Any]] = {}
        for column in entry.get("columns") or ():
            if not isinstance(column, Mapping) or not column.get("name"):
                continue
            name = str(column["name"])
            if not _SQL_IDENT.match(name):
                self.skip(
                    path,
                    self.line(path, *keys, "columns", name),
                    f"{what} column {name!r}",
                    "not a plain SQL identifier",
                )
                continue
            doc: dict[str, Any] = {}
            if description := self.describe(column.get("description")):
                doc["description"] = description
            if column.get("data_type"):
                doc["data_type"] = str(column["data_type"])
            if doc:
                columns[name] = doc
            if column.get("constraints"):
                self.skip(
                    path,
                    None,
                    f"{what} column {name} constraints",
                    "fabric does not carry column constraints",
                )
            line = self.line(path, *keys, "columns", name)
            for test in [*(column.get("data_tests") or ()), *(column.get("tests") or ())]:
                translated = translate_test(
                    test,
                    lambda w, why, n=name, at=line: self.skip(
                        path, at, f"{what} column {n} {w}", why
                    ),
                )
                if isinstance(translated, dict) and "relationships" in translated:
                    to = translated["relationships"]["to"]
                    translated["relationships"]["to"] = rename_sources(to, self.renames)
                if translated is not None:
                    tests.setdefault(name, []).append(translated)
        return columns, tests

    # -- the steps ------------------------------------------------------------------------

    def run(self) -> None:
        self.read_docs()
        self.read_properties()
        self.read_sources()
        self.read_models()
        self.read_seeds()
        self.read_snapshots()
        self.read_macros_and_tests()
        self.read_analyses()
        self.read_packages()
        self.warehouse()
        self.check_env()

    def read_docs(self) -> None:
        for path in sorted(self.p.files):
            if path.endswith(".md") and not path.startswith(SKIPPED_DIRS):
                for block in blocks(self.p.files[path], "docs"):
                    self.docs[block.name] = block.body.strip()

    def read_properties(self) -> None:
        for path, data in self.p.properties:
            for key, value in data.items():
                if key in ("version",):
                    continue
                if key in ("models", "seeds", "snapshots"):
                    index = getattr(self.props, key)
                    for entry in value or ():
                        if isinstance(entry, Mapping) and entry.get("name"):
                            index[str(entry["name"])] = (path, entry)
                elif key == "sources":
                    self.props.sources.extend(
                        (path, e) for e in value or () if isinstance(e, Mapping)
                    )
                elif key in _OTHER_SECTIONS:
                    for entry in value or ():
                        name = entry.get("name") if isinstance(entry, Mapping) else None
                        line = self.line(path, key, str(name)) if name else None
                        self.skip(path, line, f"{_SINGULAR[key]} {name}", _OTHER_SECTIONS[key])
                else:
                    self.skip(path, None, f"`{key}:`", "not a dbt properties section fabric knows")

    def read_sources(self) -> None:
        for path, source in self.props.sources:
            name = str(source.get("name") or "")
            line = self.line(path, "sources", name)
            if source.get("overrides"):
                self.skip(
                    path,
                    line,
                    f"source {name}",
                    "it overrides a package's source; packages' sources are not loaded by fabric",
                )
                continue
            pipeline = _name_of(name)
            if pipeline in self.pipelines or not _NAME.match(pipeline):
                self.skip(path, line, f"source {name}", "its name gives no unique pipeline name")
                continue
            connection = self.source_connection(source.get("database"))
            loaded: list[str] = []
            freshness = _freshness(source)
            for table in source.get("tables") or ():
                if not isinstance(table, Mapping) or not table.get("name"):
                    continue
                table_name = str(table["name"])
                ident = str(table.get("identifier") or table_name)
                if not _SQL_IDENT.match(ident):
                    self.skip(
                        path,
                        self.line(path, "sources", name, "tables", table_name),
                        f"source table {name}.{table_name}",
                        "its identifier is not a plain SQL identifier",
                    )
                    continue
                loaded.append(ident)
                target = (pipeline, dlt_table_name(ident))
                if target != (name, table_name):
                    self.renames[(name, table_name)] = target
                    self.rewrites.append(
                        f"source('{name}', '{table_name}') -> source('{target[0]}', '{target[1]}')"
                    )
                if (
                    any(
                        c.get("tests") or c.get("data_tests")
                        for c in table.get("columns") or ()
                        if isinstance(c, Mapping)
                    )
                    or table.get("tests")
                    or table.get("data_tests")
                ):
                    self.skip(
                        path,
                        self.line(path, "sources", name, "tables", table_name),
                        f"tests of source table {name}.{table_name}",
                        "fabric tests transformations, seeds and "
                        "snapshots; test the source in the first model that reads it",
                    )
                own = _freshness(table, inherit=freshness)
                if own != freshness:
                    self.skip(
                        path,
                        self.line(path, "sources", name, "tables", table_name),
                        f"freshness of source table {name}.{table_name}",
                        "fabric checks freshness per pipeline; the source's own freshness is used",
                    )
            if not loaded:
                self.skip(path, line, f"source {name}", "it has no tables")
                continue
            spec: dict[str, Any] = {"source": connection}
            if description := self.describe(source.get("description")):
                spec["description"] = description
            spec["dataset"] = f"{self.slug}_{pipeline}"[:63]
            if len(loaded) == 1:
                spec.update(mode="single_table", table=loaded[0])
            else:
                spec.update(mode="full_database", table_names=loaded)
            spec["source_schema"] = str(source.get("schema") or name)
            spec["write_disposition"] = "replace"
            if freshness:
                spec["freshness"] = freshness
            self.pipelines[pipeline] = spec

    def source_connection(self, database: Any) -> str:
        name = "source" if not database else f"source_{_name_of(str(database))}"
        if name not in self.connections:
            self.connections[name] = self.postgres(name, "source", database=database)
        return name

    def postgres(self, name: str, direction: str, *, database: Any = None) -> dict[str, Any]:
        prefix = f"{self.slug.upper()}_{name.upper()}"
        what = "the warehouse" if direction == "destination" else f"connection {name}"

        def env(key: str, meaning: str) -> str:
            self.env[f"{prefix}_{key}"] = f"{meaning} of {what}"
            return f"${{env:{prefix}_{key}}}"

        return {
            "type": "postgres",
            "direction": direction,
            "host": env("HOST", "host"),
            "port": env("PORT", "port"),
            "database": str(database) if database else env("DATABASE", "database"),
            "username": env("USER", "login"),
            "password": env("PASSWORD", "password"),
        }

    def warehouse(self) -> None:
        if self.managed_warehouse is not None:  # host and the tenant's login from fabric.yaml
            self.connections["warehouse"] = {
                "type": "postgres",
                "direction": "destination",
                "warehouse": self.managed_warehouse,
            }
        else:
            self.connections["warehouse"] = self.postgres("warehouse", "destination")
        schemas = {s.get("schema") for s in self.transformations.values()}
        for spec in self.pipelines.values():
            if spec["dataset"] in schemas:
                spec["dataset"] = f"{spec['dataset']}_raw"[:63]

    def read_models(self) -> None:
        seen: set[str] = set()
        for path, rel in self.p.under("model"):
            if rel.endswith(".py"):
                self.skip(
                    path,
                    None,
                    f"python model {posixpath.basename(rel)[:-3]}",
                    "fabric runs SQL models only",
                )
                continue
            if not rel.endswith(".sql"):
                continue
            name = posixpath.basename(rel)[:-4]
            if not _NAME.match(name):
                self.skip(
                    path,
                    None,
                    f"model {name}",
                    "its name is not a fabric resource name (lowercase letters, digits, _)",
                )
                continue
            seen.add(name)
            self.model(path, rel, name)
        for name, (path, _) in sorted(self.props.models.items()):
            if name not in seen:
                self.skip(
                    path,
                    self.line(path, "models", name),
                    f"properties of model {name}",
                    "no SQL model of that name in the project's model folders",
                )

    def model(self, path: str, rel: str, name: str) -> None:
        parts = [*rel.split("/")[:-1], name]
        config = self.p.folder_config("models", parts)
        entry_path, entry = self.props.models.get(name, (path, {}))
        for key, value in (entry.get("config") or {}).items():
            merge_config(config, config_key(str(key)), value)
        config = self.p.rendered(config, entry_path, f"model {name}")
        text = self.sql(self.p.files[path], path)
        calls = config_calls(text)
        raw: dict[str, str] = {}
        for call in calls:
            for key, value in call.values.items():
                merge_config(config, config_key(key), value)
            for key, source in call.raw.items():
                if config_key(key) in YAML_OWNED or config_key(key) in MANAGED:
                    self.skip(
                        path,
                        call.line,
                        f"config({key}={source})",
                        "its value is not a literal, so it cannot move to the YAML",
                    )
                else:
                    raw[key] = source
            for argument in call.unreadable:
                self.skip(
                    path, call.line, f"config({argument})", "config() arguments must be key=value"
                )
        if config.get("enabled") is False:
            self.skip(path, None, f"model {name}", "it is disabled (enabled: false)")
            return
        spec: dict[str, Any] = {"sql_file": f"models/{rel}"}
        if description := self.describe(entry.get("description")):
            spec["description"] = description
        spec["schema"] = self.schema(config.pop("schema", None), path, f"model {name}")
        materialized = str(config.pop("materialized", None) or "view")
        if materialized not in MATERIALIZATIONS:
            self.skip(
                path,
                None,
                f"model {name} materialized={materialized}",
                "fabric builds views, tables and incremental models; written as a view",
            )
            materialized = "view"
        spec["materialized"] = materialized
        if config.get("unique_key") is not None:
            spec["unique_key"] = config.pop("unique_key")
        config.pop("unique_key", None)
        if tags := self.tags(config.pop("tags", None), path, f"model {name}"):
            spec["tags"] = tags
        for key in list(config):
            if key in MANAGED:
                value = config.pop(key)
                if MANAGED[key] and value not in (None, [], {}, ""):
                    self.skip(path, None, f"model {name} config {key}", MANAGED[key])
        columns, tests = self.columns(entry, entry_path, f"model {name}", ("models", name))
        if columns:
            spec["columns"] = columns
        if tests:
            spec["tests"] = tests
        for key in ("data_tests", "tests"):
            for test in entry.get(key) or ():
                label = next(iter(test)) if isinstance(test, Mapping) and test else test
                self.skip(
                    entry_path,
                    self.line(entry_path, "models", name),
                    f"model-level test {label} of {name}",
                    "fabric's tests are per column; attach it to a column or write a "
                    "singular test under tests/",
                )
        if entry.get("versions"):
            self.skip(entry_path, None, f"versions of model {name}", "fabric has no model versions")
        kept = {k: v for k, v in config.items() if k not in ("enabled",)}
        sql = without_spans(text, [(c.start, c.end) for c in calls], keep_lines=True)
        if kept or raw:  # at the end, so every line keeps its number
            sql = sql.rstrip("\n") + "\n" + config_expression(kept, raw) + "\n"
        if self.write(spec["sql_file"], sql, path):
            self.transformations[name] = spec

    def read_seeds(self) -> None:
        for path, rel in self.p.under("seed", ".csv"):
            name = posixpath.basename(rel)[:-4]
            if not _NAME.match(name):
                self.skip(path, None, f"seed {name}", "its name is not a fabric resource name")
                continue
            config = self.p.folder_config("seeds", [*rel.split("/")[:-1], name])
            entry_path, entry = self.props.seeds.get(name, (path, {}))
            for key, value in (entry.get("config") or {}).items():
                merge_config(config, config_key(str(key)), value)
            config = self.p.rendered(config, entry_path, f"seed {name}")
            if config.get("enabled") is False:
                self.skip(path, None, f"seed {name}", "it is disabled (enabled: false)")
                continue
            spec: dict[str, Any] = {
                "schema": self.schema(config.pop("schema", None), path, f"seed {name}")
            }
            if config.get("column_types"):
                spec["column_types"] = {
                    str(k): str(v) for k, v in config.pop("column_types").items()
                }
            if description := self.describe(entry.get("description")):
                spec["description"] = description
            columns, tests = self.columns(entry, entry_path, f"seed {name}", ("seeds", name))
            if columns:
                spec["columns"] = columns
            if tests:
                spec["tests"] = tests
            for key, value in config.items():
                if key not in IGNORED_CONFIG and key != "enabled" and value not in (None, [], {}):
                    self.skip(
                        path,
                        None,
                        f"seed {name} config {key}",
                        "fabric's seeds take schema, column_types, description, columns and tests",
                    )
            if self.write(f"seeds/{rel}", self.p.files[path], path):
                self.seeds[name] = spec

    def read_snapshots(self) -> None:
        done: set[str] = set()
        for path, rel in self.p.under("snapshot", ".sql"):
            text = self.sql(self.p.files[path], path)
            folders = rel.split("/")[:-1]
            for block in blocks(text, "snapshot"):
                name = block.name
                if not _NAME.match(name):
                    self.skip(path, block.line, f"snapshot {name}", "not a fabric resource name")
                    continue
                config = self.p.folder_config("snapshots", [*folders, name])
                _, entry = self.props.snapshots.get(name, (path, {}))
                for key, value in (entry.get("config") or {}).items():
                    merge_config(config, config_key(str(key)), value)
                config = self.p.rendered(config, path, f"snapshot {name}")
                calls = config_calls(block.body)
                for call in calls:
                    for key, value in call.values.items():
                        merge_config(config, config_key(key), value)
                    for key, source in call.raw.items():
                        self.skip(
                            path,
                            block.line + call.line - 1,
                            f"config({key}={source})",
                            "its value is not a literal",
                        )
                body = without_spans(block.body, [(c.start, c.end) for c in calls]).strip("\n")
                sql_file = posixpath.join("snapshots", *folders, f"{name}.sql")
                spec = self.snapshot(name, config, entry, path, {"sql_file": sql_file})
                if spec is not None and self.write(sql_file, body + "\n", path):
                    self.snapshots[name] = spec
                    done.add(name)
        for name, (path, entry) in self.props.snapshots.items():
            if name in done:
                continue
            relation = entry.get("relation")
            if not isinstance(relation, str):
                self.skip(
                    path,
                    self.line(path, "snapshots", name),
                    f"snapshot {name}",
                    "no `{% snapshot %}` block and no `relation:` to select from",
                )
                continue
            if not _NAME.match(name):
                self.skip(path, None, f"snapshot {name}", "not a fabric resource name")
                continue
            config = self.p.folder_config("snapshots", [name])
            for key, value in (entry.get("config") or {}).items():
                merge_config(config, config_key(str(key)), value)
            config = self.p.rendered(config, path, f"snapshot {name}")
            relation = self.sql("{{ " + relation.strip().strip("{} ") + " }}", path)
            spec = self.snapshot(name, config, entry, path, {"sql": f"select * from {relation}"})
            if spec is not None:
                self.snapshots[name] = spec

    def snapshot(
        self,
        name: str,
        config: dict[str, Any],
        entry: Mapping[str, Any],
        path: str,
        sql: dict[str, Any],
    ) -> dict[str, Any] | None:
        if config.pop("enabled", True) is False:
            self.skip(path, None, f"snapshot {name}", "it is disabled (enabled: false)")
            return None
        spec = dict(sql)
        if description := self.describe(entry.get("description")):
            spec["description"] = description
        schema = config.pop("target_schema", None) or config.pop("schema", None)
        config.pop("schema", None)
        spec["schema"] = self.schema(schema, path, f"snapshot {name}")
        for key in SNAPSHOT_KEYS:
            value = config.pop(key, None)
            if value is None or value == []:
                continue
            if key == "tags":
                value = self.tags(value, path, f"snapshot {name}")
            spec[key] = value
        hard = config.pop("hard_deletes", None)
        if config.pop("invalidate_hard_deletes", None) is True and hard is None:
            hard = "invalidate"
        if hard is not None:
            spec["hard_deletes"] = hard
        for key, value in config.items():
            if key not in IGNORED_CONFIG and value not in (None, [], {}):
                self.skip(
                    path,
                    None,
                    f"snapshot {name} config {key}",
                    MANAGED.get(key) or "fabric's snapshots do not take it",
                )
        return spec

    def read_macros_and_tests(self) -> None:
        for path, rel in self.p.under("macro", ".sql"):
            text = self.sql(self.p.files[path], path)
            drop: list[tuple[int, int]] = []
            for block in blocks(text, "macro"):
                if block.name in NAMING_MACROS:
                    drop.append((block.start, block.end))
                    self.skip(
                        path,
                        block.line,
                        f"macro {block.name}",
                        "fabric names schemas "
                        "itself (the schema written in the YAML is used as is)",
                    )
            for block in blocks(text, "materialization"):
                drop.append((block.start, block.end))
                self.skip(
                    path,
                    block.line,
                    f"materialization {block.name}",
                    "fabric builds views, tables and incremental models only",
                )
            text = without_spans(text, drop)
            if text.strip():
                self.write(f"macros/{rel}", text, path)
        for path, rel in self.p.under("test", ".sql"):
            text = self.sql(self.p.files[path], path)
            if blocks(text, "test"):
                target = f"macros/{rel}"
                if target in self.out:
                    target = f"macros/tests/{rel}"
                self.write(target, text, path)
                continue
            name = posixpath.basename(rel)[:-4]
            if not _NAME.match(name):
                self.skip(path, None, f"singular test {name}", "not a fabric resource name")
                continue
            self.write(f"tests/{rel}", text, path)

    def read_analyses(self) -> None:
        for path, _ in self.p.under("analysis", ".sql"):
            self.skip(path, None, "analysis", "fabric does not compile analyses")

    def read_packages(self) -> None:
        for file in ("packages.yml", "dependencies.yml"):
            if file not in self.p.files:
                continue
            try:
                data = yaml.safe_load(self.p.files[file]) or {}
            except yaml.YAMLError as exc:
                self.skip(file, None, file, f"not valid YAML ({exc})")
                continue
            if not isinstance(data, Mapping):
                continue
            if data.get("projects"):
                self.skip(file, None, "`projects:`", "fabric has no cross-project refs (dbt Mesh)")
            for entry in data.get("packages") or ():
                if isinstance(entry, Mapping):
                    self.package(file, entry)

    def package(self, file: str, entry: Mapping[str, Any]) -> None:
        if "local" in entry:
            local = posixpath.normpath(str(entry["local"]).replace("\\", "/"))
            if not is_safe_relative(local) or local == ".":
                self.skip(
                    file,
                    None,
                    f"local package {entry['local']!r}",
                    "it lies outside the project folder; copy it into the project to import it",
                )
                return
            name = _name_of(posixpath.basename(local))
            copied = 0
            for path in sorted(self.p.files):
                if not path.startswith(local + "/"):
                    continue
                rel = path[len(local) + 1 :]
                if rel.startswith(SKIPPED_DIRS):
                    continue
                folder = package_folder(self.slug, name)
                if is_safe_relative(rel):
                    self.repo_files[f"{folder}/{rel}"] = self.p.files[path]
                    copied += 1
            if copied:
                self.packages.append({"local": package_folder(self.slug, name)})
            else:
                self.skip(file, None, f"local package {entry['local']!r}", "no files found there")
        elif "git" in entry:
            keep = ("git", "revision", "subdirectory")
            self.packages.append({k: str(entry[k]) for k in keep if entry.get(k) is not None})
        elif "package" in entry:
            version = entry.get("version")
            out: dict[str, Any] = {"package": str(entry["package"])}
            if isinstance(version, list):
                out["version"] = [str(v) for v in version]
            elif version is not None:
                out["version"] = str(version)  # YAML reads `version: 1.0` as a number
            self.packages.append(out)
        else:
            self.skip(
                file,
                None,
                f"package {dict(entry)!r}",
                "fabric installs local, git and hub packages only",
            )

    def check_env(self) -> None:
        own = f"{self.slug.upper()}_"
        for name, (path, line) in sorted(self.env_reads.items()):
            if name.startswith(own) or name in self.shared_env:
                continue
            self.skip(
                path,
                line,
                f"env_var('{name}')",
                f"tenant {self.slug} may read only its "
                f"own {own}* variables and those fabric.yaml shares; `fabric validate` "
                f"reports it until it is renamed (e.g. {own}{name})",
            )

    # -- the files ------------------------------------------------------------------------

    def tenant_env(self) -> list[str]:
        own = f"{self.slug.upper()}_"
        return sorted(
            n
            for n in self.env_reads
            if (n.startswith(own) or n in self.shared_env) and not n.startswith("DBT_ENV_SECRET")
        )

    def render(self) -> dict[str, str]:
        tenant: dict[str, Any] = {
            "display_name": self.p.name,
            "description": f"Imported from the dbt project {self.p.name!r} by fabric import dbt.",
            "warehouse": "warehouse",
        }
        if env := self.tenant_env():
            tenant["env"] = env
        if self.packages:
            tenant["packages"] = self.packages
        files = {"tenant.yaml": _document({"tenant": tenant})}
        files["connections.yaml"] = _document({"connections": self.connections})
        if self.pipelines:
            files["pipelines.yaml"] = _document({"pipelines": self.pipelines})
        dbt: dict[str, Any] = {}
        for section in ("transformations", "seeds", "snapshots"):
            if getattr(self, section):
                dbt[section] = dict(sorted(getattr(self, section).items()))
        if dbt:
            files["transformations.yaml"] = _document(dbt)
        return {**files, **self.out}


def package_folder(slug: str, name: str) -> str:
    """Where a local package of the project goes, relative to the repository root: outside the
    tenant's folder (fabric reads every .yml there as the tenant's YAML), under a folder named
    after the tenant."""
    return f"packages/{slug}/{name}"


def _name_of(text: str) -> str:
    name = _NOT_NAME.sub("_", text.lower()).strip("_")
    return name if name[:1].isalpha() else f"s_{name}"


def _freshness(node: Mapping[str, Any], inherit: dict[str, Any] | None = None) -> dict[str, Any]:
    """fabric's `freshness:` of a dbt source or table (a table inherits its source's)."""
    config = node.get("config") if isinstance(node.get("config"), Mapping) else {}
    raw = node.get("freshness", config.get("freshness", ...))
    field_ = node.get("loaded_at_field", config.get("loaded_at_field"))
    if raw is ... and inherit is not None:
        out = dict(inherit)
        if field_:
            out["loaded_at_field"] = field_
        return out
    if not isinstance(raw, Mapping):
        return {}
    out = {
        k: dict(raw[k]) for k in ("warn_after", "error_after") if isinstance(raw.get(k), Mapping)
    }
    if out and field_:
        out["loaded_at_field"] = field_
    elif out and inherit and inherit.get("loaded_at_field"):
        out["loaded_at_field"] = inherit["loaded_at_field"]
    return out


class _Dumper(yaml.SafeDumper):
    """Multi-line text (descriptions) as `|` blocks; no anchors for repeated values."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


_Dumper.add_representer(
    str,
    lambda d, v: d.represent_scalar("tag:yaml.org,2002:str", v, style="|" if "\n" in v else None),
)


def _document(data: Mapping[str, Any]) -> str:
    header = (
        "# yaml-language-server: $schema=../../schemas/tenant.schema.json\n"
        "# Imported from a dbt project by `fabric import dbt`.\n"
    )
    return header + yaml.dump(dict(data), Dumper=_Dumper, sort_keys=False, width=100)


def translate(
    files: Mapping[str, str],
    tenant: str,
    *,
    refused: Sequence[Untranslated] = (),
    shared_env: Iterable[str] = (),
    warehouse: str | None = None,
) -> Translation:
    """The tenant `tenant` that the dbt project in `files` becomes (see the module docstring).

    `refused` are files the reader would not read (links leaving the project, binary files);
    `shared_env` the variables fabric.yaml shares with every tenant; `warehouse` a managed
    warehouse of fabric.yaml (`warehouses:`) to build in, instead of a connection whose
    credentials come from `${env:<SLUG>_WAREHOUSE_*}`."""
    if not SLUG_PATTERN.match(tenant):
        raise ValueError(f"{tenant!r} is not a tenant slug")
    project = read_project(files)
    if isinstance(project, Untranslated):
        return Translation(tenant, "", {}, {}, (*refused, project), (), ())
    project.untranslated[:0] = list(refused)
    importer = _Importer(project, tenant, frozenset(shared_env), warehouse)
    importer.run()
    rendered = importer.render()
    env = tuple(EnvVar(n, m) for n, m in sorted(importer.env.items()))
    return Translation(
        tenant,
        project.name,
        dict(sorted(rendered.items())),
        dict(sorted(importer.repo_files.items())),
        tuple(sorted(project.untranslated, key=lambda u: (u.path, u.line or 0))),
        tuple(dict.fromkeys(importer.rewrites)),
        env,
        tuple(importer.packages),
    )
