"""A dbt project's files as values: `dbt_project.yml`, its folders and folder-level configs,
and every properties file, read without running dbt.  [pure]

Input is {project-relative POSIX path: text}; a fault is an `Untranslated` entry (what, where,
why), never an exception, so one run reports everything the importer could not carry over.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from fabric.dbt_import.jinja import NotLiteral, literal, substitute_vars

PROJECT_FILE = "dbt_project.yml"
FOLDERS = {
    "model": ("model-paths", "source-paths", "models"),
    "seed": ("seed-paths", "data-paths", "seeds"),
    "snapshot": ("snapshot-paths", None, "snapshots"),
    "macro": ("macro-paths", None, "macros"),
    "test": ("test-paths", None, "tests"),
    "analysis": ("analysis-paths", None, "analyses"),
    "docs": ("docs-paths", None, None),
}
"""Folder kind -> (dbt_project.yml key, its older name, dbt's default folder)."""

IGNORED_KEYS = frozenset(
    {
        "name",
        "version",
        "config-version",
        "profile",
        "target-path",
        "log-path",
        "clean-targets",
        "packages-install-path",
        "require-dbt-version",
        "vars",
        "models",
        "seeds",
        "snapshots",
        *(key for key, _, _ in FOLDERS.values()),
        *(old for _, old, _ in FOLDERS.values() if old),
    }
)
"""dbt_project.yml keys that say nothing fabric needs to carry over (or that are read here)."""

WHY_KEY = {
    "on-run-start": "fabric runs no SQL around a run; put it into a model or a macro it calls",
    "on-run-end": "fabric runs no SQL around a run; put it into a model or a macro it calls",
    "dispatch": "fabric's generated project sets no macro dispatch order",
    "quoting": "fabric's generated project uses dbt's default quoting",
    "query-comment": "fabric's generated project uses dbt's default query comment",
    "flags": "fabric sets dbt's flags for its runs",
    "tests": "project-wide test configs are not carried; set config on each test",
    "data_tests": "project-wide test configs are not carried; set config on each test",
    "sources": "project-wide source configs are not carried",
    "exposures": "fabric has no exposures",
    "metrics": "fabric has no metrics (the semantic layer is not part of fabric)",
    "semantic-models": "fabric has no semantic models",
    "saved-queries": "fabric has no saved queries",
    "unit_tests": "fabric runs no dbt unit tests",
}

ADDITIVE = frozenset({"tags"})
"""Configs dbt adds up along the folder path instead of overriding."""
MERGED = frozenset({"meta", "column_types", "docs", "persist_docs", "grants"})
"""Dict configs dbt merges key by key."""
DICT_CONFIGS = MERGED | {"contract", "quoting"}
_WHOLE_EXPRESSION = re.compile(r"^\s*\{\{(.*)\}\}\s*$", re.DOTALL)


@dataclass(frozen=True, slots=True)
class Untranslated:
    """Something of the dbt project fabric does not carry over, and why."""

    path: str
    """Project-relative file."""
    line: int | None
    what: str
    why: str

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else self.path
        return f"{where}: {self.what}: {self.why}"


@dataclass
class DbtProject:
    """dbt_project.yml, the project's folders, and the data of its properties files."""

    files: Mapping[str, str]
    name: str
    config: Mapping[str, Any]
    folders: dict[str, tuple[str, ...]]
    properties: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    """(path, parsed data) of every properties (`.yml`) file under a model/seed/snapshot/macro/
    test/analysis folder."""
    untranslated: list[Untranslated] = field(default_factory=list)
    _lines: dict[str, dict[tuple[str, ...], int]] = field(default_factory=dict, repr=False)

    def skip(self, path: str, line: int | None, what: str, why: str) -> None:
        self.untranslated.append(Untranslated(path, line, what, why))

    def line(self, path: str, *keys: str) -> int | None:
        """The line of a named entry of properties file `path` (see property_lines)."""
        if path not in self._lines:
            text = self.files.get(path, "")
            self._lines[path] = property_lines(text) if path.endswith((".yml", ".yaml")) else {}
        return self._lines[path].get(keys)

    def under(self, kind: str, *suffixes: str) -> list[tuple[str, str]]:
        """(path, path relative to its folder) of the files under `kind`'s folders."""
        out = []
        for folder in self.folders.get(kind, ()):
            prefix = "" if folder == "." else folder + "/"
            for path in sorted(self.files):
                if path.startswith(prefix) and (not suffixes or path.endswith(suffixes)):
                    rel = path[len(prefix) :]
                    if rel.split("/", 1)[0] in ("dbt_packages", "target", "logs"):
                        continue
                    out.append((path, rel))
        return out

    def var(self, name: str) -> tuple[bool, Any]:
        """(known, value) of a project variable (scoped to the project, then global)."""
        variables = self.config.get("vars") or {}
        if not isinstance(variables, Mapping):
            return False, None
        scoped = variables.get(self.name)
        if isinstance(scoped, Mapping) and name in scoped:
            return True, scoped[name]
        if name in variables and name != self.name:
            return True, variables[name]
        return False, None

    def rendered(self, config: dict[str, Any], path: str, what: str) -> dict[str, Any]:
        """`config` with values written as Jinja (`"{{ var('x', false) }}"`) replaced by what
        they render to; a value that is not one literal after var() substitution is dropped and
        reported (fabric would not run the Jinja the same way)."""
        out: dict[str, Any] = {}
        for key, value in config.items():
            if not isinstance(value, str) or "{{" not in value:
                out[key] = value
                continue
            whole = _WHOLE_EXPRESSION.match(value)
            try:
                if whole is None:
                    raise NotLiteral(value)
                text, missing = substitute_vars("{{" + whole.group(1) + "}}", self.var)
                if missing:
                    raise NotLiteral(value)
                out[key] = literal(text[2:-2])
            except NotLiteral:
                self.skip(
                    path,
                    None,
                    f"{what} config {key}: {value}",
                    "Jinja in a config value is read only when it is one var() or literal",
                )
        return out

    def folder_config(self, section: str, parts: list[str]) -> dict[str, Any]:
        """The configs `dbt_project.yml`'s `section` (models, seeds, snapshots) gives the
        resource at `parts` (its folders, then its name): root, then the project's own key, then
        each folder down, nearer winning (tags add up, dict configs merge)."""
        tree = self.config.get(section)
        result: dict[str, Any] = {}
        if not isinstance(tree, Mapping):
            return result
        _apply(result, tree)
        node = tree.get(self.name)
        for part in [None, *parts]:
            if part is not None:
                node = node.get(part) if isinstance(node, Mapping) else None
            if not isinstance(node, Mapping):
                break
            _apply(result, node)
        return result


def config_key(key: str) -> str:
    """A config's name as dbt normalises it (`+pre-hook` -> `pre_hook`)."""
    return key.lstrip("+").replace("-", "_")


def _apply(result: dict[str, Any], node: Mapping[str, Any]) -> None:
    for key, value in node.items():
        if not isinstance(key, str):
            continue
        if key.startswith("+") or not isinstance(value, Mapping) or key in DICT_CONFIGS:
            merge_config(result, config_key(key), value)


def merge_config(result: dict[str, Any], key: str, value: Any) -> None:
    """Set `key` as dbt layers configs: tags add up, dict configs merge, the rest override."""
    if key in ADDITIVE:
        values = [value] if isinstance(value, str) else list(value or ())
        result[key] = list(dict.fromkeys([*result.get(key, []), *values]))
    elif key in MERGED and isinstance(value, Mapping) and isinstance(result.get(key), Mapping):
        result[key] = {**result[key], **value}
    else:
        result[key] = value


def _folder(project: DbtProject, kind: str, value: Any) -> tuple[str, ...]:
    key = FOLDERS[kind][0]
    values = [value] if isinstance(value, str) else list(value or ())
    out = []
    for raw in values:
        norm = posixpath.normpath(str(raw).replace("\\", "/"))
        if posixpath.isabs(norm) or norm == ".." or norm.startswith("../"):
            project.skip(
                PROJECT_FILE,
                None,
                f"{key} entry {raw!r}",
                "it lies outside the project folder; only the project's own files are imported",
            )
            continue
        out.append(norm)
    return tuple(out)


def read_project(files: Mapping[str, str]) -> DbtProject | Untranslated:
    """The project in `files`, or why there is none to import."""
    text = files.get(PROJECT_FILE)
    if text is None:
        return Untranslated(PROJECT_FILE, None, "dbt_project.yml", "not found: not a dbt project")
    try:
        config = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        return Untranslated(PROJECT_FILE, line, "dbt_project.yml", f"not valid YAML ({exc})")
    if not isinstance(config, Mapping) or not isinstance(config.get("name"), str):
        return Untranslated(PROJECT_FILE, None, "dbt_project.yml", "it has no `name:`")
    project = DbtProject(files, config["name"], config, {})
    for kind, (key, old, default) in FOLDERS.items():
        value = config.get(key, config.get(old) if old else None)
        if value is None:
            value = [default] if default else []
        project.folders[kind] = _folder(project, kind, value)
    for key in config:
        if key not in IGNORED_KEYS:
            why = WHY_KEY.get(str(key), "fabric does not use this dbt_project.yml setting")
            project.skip(PROJECT_FILE, _key_line(text, str(key)), f"`{key}:`", why)
    seen: set[str] = set()
    for kind in ("model", "seed", "snapshot", "macro", "test", "analysis"):
        for path, _ in project.under(kind, ".yml", ".yaml"):
            if path in seen:
                continue
            seen.add(path)
            try:
                data = yaml.safe_load(files[path])
            except yaml.YAMLError as exc:
                project.skip(path, None, "properties file", f"not valid YAML ({exc})")
                continue
            if isinstance(data, Mapping):
                project.properties.append((path, dict(data)))
    return project


def _key_line(text: str, key: str) -> int | None:
    for number, line in enumerate(text.splitlines(), start=1):
        if line.startswith(f"{key}:") or line.startswith(f"'{key}':"):
            return number
    return None


def property_lines(text: str) -> dict[tuple[str, ...], int]:
    """Line of every named entry of a properties file, by its path of section keys and names:
    ("models", "orders") -> 3, ("models", "orders", "columns", "id") -> 7."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return {}
    out: dict[tuple[str, ...], int] = {}

    def walk(node: yaml.Node | None, path: tuple[str, ...]) -> None:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode):
                    walk(value, (*path, str(key.value)))
        elif isinstance(node, yaml.SequenceNode):
            for item in node.value:
                name = None
                if isinstance(item, yaml.MappingNode):
                    for key, value in item.value:
                        if getattr(key, "value", None) == "name" and isinstance(
                            value, yaml.ScalarNode
                        ):
                            name = str(value.value)
                if name is None:
                    walk(item, path)
                    continue
                out.setdefault((*path, name), item.start_mark.line + 1)
                walk(item, (*path, name))

    walk(root, ())
    return out
