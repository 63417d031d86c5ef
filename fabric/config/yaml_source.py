"""YAML text -> plain data plus the node tree its positions come from.  [pure]

The text is parsed once, by libyaml (PyYAML's C composer), into a node tree. Plain Python
data is built from that tree by a small constructor that also catches what PyYAML lets
through: duplicate mapping keys (PyYAML silently keeps the last one), alias expansion bombs,
documents nested too deeply, and tags fabric does not understand. Positions are not indexed up
front: the tree is kept and `locate` walks it only when a diagnostic needs a line, which keeps
the happy path as fast as a bare `yaml.load`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from fabric.diagnostics import Diagnostic, SourceSpan, error

try:  # libyaml is part of PyYAML's wheels; the pure-Python loader is a slow but correct fallback
    from yaml import CSafeLoader as _BaseLoader
except ImportError:  # pragma: no cover
    from yaml import SafeLoader as _BaseLoader  # type: ignore[assignment]

_RESOLVED: dict[tuple[Any, Any, Any], str] = {}
_RESOLVED_MAX = 200_000


class _Loader(_BaseLoader):  # type: ignore[misc, valid-type]
    """libyaml's parser with a memo on tag resolution.

    PyYAML resolves the tag of every plain scalar in Python, with regular expressions, even
    under the C loader; config files repeat the same few keys and values thousands of times, so
    a memo turns most of that work into one dict lookup. Resolution depends only on
    (kind, value, implicit) because fabric registers no path resolvers.
    """

    def resolve(self, kind: Any, value: Any, implicit: Any) -> str:
        key = (kind, value, implicit)
        tag = _RESOLVED.get(key)
        if tag is None:
            tag = super().resolve(kind, value, implicit)
            if len(_RESOLVED) >= _RESOLVED_MAX:
                _RESOLVED.clear()
            _RESOLVED[key] = tag
        return tag


MAX_FILE_BYTES = 2 * 1024 * 1024
MAX_DEPTH = 64
STR_TAG = "tag:yaml.org,2002:str"
MAP_TAG = "tag:yaml.org,2002:map"
SEQ_TAG = "tag:yaml.org,2002:seq"
MERGE_TAG = "tag:yaml.org,2002:merge"

_SCALARS = yaml.SafeLoader.yaml_constructors
_CONSTRUCTOR = yaml.SafeLoader("")  # only its stateless scalar constructors are used

Loc = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class ParsedYaml:
    """One parsed file: its data (None when it could not be parsed) and its node tree."""

    path: str
    data: Any
    root: yaml.Node | None
    diagnostics: tuple[Diagnostic, ...]
    _entries: dict[int, dict[str, tuple[yaml.Node, yaml.Node]]] = field(
        default_factory=dict, compare=False, repr=False
    )
    """Per mapping node, its entries by key: filled lazily, so each mapping is scanned once."""

    def locate(self, loc: Loc, *, key: bool = False) -> SourceSpan:
        return locate(self.root, loc, self.path, key=key, entries=self._entries)


def _mapping_entries(
    node: yaml.MappingNode, cache: dict[int, dict[str, tuple[yaml.Node, yaml.Node]]]
) -> dict[str, tuple[yaml.Node, yaml.Node]]:
    """Key -> (key node, value node); explicit keys win over `<<` merges, the first merge first."""
    table: dict[str, tuple[yaml.Node, yaml.Node]] = {}
    merges: list[yaml.Node] = []
    for key_node, value_node in node.value:
        if key_node.tag == MERGE_TAG:
            merges.append(value_node)
        elif isinstance(key_node, yaml.ScalarNode):
            table.setdefault(key_node.value, (key_node, value_node))
    for merge in merges:
        for source in merge.value if isinstance(merge, yaml.SequenceNode) else [merge]:
            if isinstance(source, yaml.MappingNode):
                inner = cache.get(id(source))
                if inner is None:
                    inner = cache[id(source)] = _mapping_entries(source, cache)
                for k, v in inner.items():
                    table.setdefault(k, v)
    return table


class _Reject(Exception):
    def __init__(self, diagnostic: Diagnostic) -> None:
        self.diagnostic = diagnostic


def span_of(node: yaml.Node, path: str) -> SourceSpan:
    return SourceSpan(path, node.start_mark.line + 1, node.start_mark.column + 1)


def parse_yaml(text: str, path: str, *, max_bytes: int = MAX_FILE_BYTES) -> ParsedYaml:
    """Parse one YAML document. Problems come back as diagnostics, never as exceptions."""
    if len(text) > max_bytes or len(text.encode("utf-8", "surrogatepass")) > max_bytes:
        diag = error(
            "file-too-large",
            "File too large",
            f"{path} is larger than {max_bytes // 1024} KiB.",
            hint="Split the tenant's resources over several YAML files.",
            span=SourceSpan(path, 1, 1),
        )
        return ParsedYaml(path, None, None, (diag,))
    try:
        root = yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        if exc.context_mark and _is_at_end(text, mark):
            # Found at the end of the file: point at what was left open (a quote, a bracket).
            mark = exc.context_mark
        span = SourceSpan(path, mark.line + 1, mark.column + 1) if mark else SourceSpan(path, 1, 1)
        problem = " ".join(p for p in (exc.context, exc.problem) if p)
        code, summary = "yaml-syntax", "YAML syntax error"
        hint = "Fix the YAML syntax at this position."
        if "nesting depth" in problem:
            code, summary = "yaml-too-deep", "Document too deeply nested"
            hint = f"Keep nesting under {MAX_DEPTH} levels."
        diag = error(code, summary, f"{path}: {problem}.", hint=hint, span=span)
        return ParsedYaml(path, None, None, (diag,))
    except yaml.reader.ReaderError as exc:  # control characters, invalid code points
        # libyaml counts bytes, not characters: find the (first) offending character instead.
        char = exc.character if isinstance(exc.character, int) else None
        index = max(text.find(chr(char)), 0) if char is not None else 0
        line = text.count("\n", 0, index) + 1
        column = index - (text.rfind("\n", 0, index) + 1) + 1
        what = f"character #x{char:04X}" if char is not None else "a character"
        diag = error(
            "yaml-syntax",
            "YAML syntax error",
            f"{path}: {what}: {exc.reason}.",
            hint="Remove the character, or write it as an escape in a double-quoted string.",
            span=SourceSpan(path, line, column),
        )
        return ParsedYaml(path, None, None, (diag,))
    except yaml.YAMLError as exc:
        diag = error(
            "yaml-syntax",
            "YAML syntax error",
            f"{path}: {exc}",
            hint="Fix the YAML syntax.",
            span=SourceSpan(path, 1, 1),
        )
        return ParsedYaml(path, None, None, (diag,))
    if root is None:
        return ParsedYaml(path, None, None, ())
    builder = _Builder(path, budget=2 * len(text) + 10_000)
    try:
        data = builder.build(root, 0)
    except _Reject as exc:
        return ParsedYaml(path, None, root, (*builder.diagnostics, exc.diagnostic))
    return ParsedYaml(path, data, root, tuple(builder.diagnostics))


def _is_at_end(text: str, mark: yaml.Mark) -> bool:
    """Whether only whitespace follows `mark` (libyaml's index counts bytes, so use lines)."""
    rest = text.split("\n")[mark.line :]
    return not rest or not (rest[0][mark.column :] + "".join(rest[1:])).strip()


class _Builder:
    """Builds plain data from a node tree, counting every node it expands."""

    __slots__ = ("budget", "diagnostics", "path")

    def __init__(self, path: str, budget: int) -> None:
        self.path = path
        self.budget = budget
        self.diagnostics: list[Diagnostic] = []

    def build(self, node: yaml.Node, depth: int) -> Any:
        self.budget -= 1
        if self.budget < 0:
            raise self._reject(
                node,
                "yaml-alias-bomb",
                "Alias expansion too large",
                "YAML aliases expand to far more data than the file holds.",
                "Remove the nested anchors/aliases; write the values out.",
            )
        if depth > MAX_DEPTH:
            raise self._reject(
                node,
                "yaml-too-deep",
                "Document too deeply nested",
                f"nesting goes deeper than {MAX_DEPTH} levels.",
                "Flatten the document; fabric's format needs only a few levels.",
            )
        cls = type(node)
        if cls is yaml.ScalarNode:
            if node.tag == STR_TAG:
                return node.value
            constructor = _SCALARS.get(node.tag)
            if constructor is None or node.tag.startswith(("tag:yaml.org,2002:binary", "!")):
                raise _Reject(self._bad_tag(node))
            try:
                return constructor(_CONSTRUCTOR, node)
            except (ValueError, KeyError, AttributeError, TypeError):  # e.g. `!!int abc`
                raise self._reject(
                    node,
                    "yaml-tag",
                    "Invalid tagged value",
                    f"the value does not fit its tag {node.tag!r}.",
                    "Remove the tag, or write a value of that type.",
                ) from None
        if cls is yaml.MappingNode:
            if node.tag != MAP_TAG:
                raise _Reject(self._bad_tag(node))
            return self._mapping(node, depth)
        if node.tag != SEQ_TAG:
            raise _Reject(self._bad_tag(node))
        return [self.build(item, depth + 1) for item in node.value]

    def _mapping(self, node: yaml.MappingNode, depth: int) -> dict[Any, Any]:
        result: dict[Any, Any] = {}
        first_keys: dict[Any, yaml.Node] = {}
        merged: list[dict[Any, Any]] = []
        for key_node, value_node in node.value:
            if key_node.tag == MERGE_TAG:
                merged.extend(self._merge_sources(value_node, depth))
                continue
            if type(key_node) is not yaml.ScalarNode:
                raise _Reject(
                    error(
                        "yaml-complex-key",
                        "Unsupported mapping key",
                        f"{self.path}: a mapping key must be a plain scalar.",
                        hint="Use a plain name as the key.",
                        span=span_of(key_node, self.path),
                    )
                )
            key = key_node.value if key_node.tag == STR_TAG else self.build(key_node, depth + 1)
            if key in result:
                first = first_keys[key]
                self.diagnostics.append(
                    error(
                        "duplicate-key",
                        "Duplicate key",
                        f"Key {key!r} appears twice in the same mapping (first at line "
                        f"{first.start_mark.line + 1}); YAML would silently keep only the last.",
                        hint="Remove or rename one of them.",
                        span=span_of(key_node, self.path),
                    )
                )
            first_keys.setdefault(key, key_node)
            result[key] = self.build(value_node, depth + 1)
        for source in reversed(merged):  # explicit keys win, then the earlier merge sources
            for key, value in source.items():
                result.setdefault(key, value)
        return result

    def _merge_sources(self, node: yaml.Node, depth: int) -> list[dict[Any, Any]]:
        nodes = node.value if type(node) is yaml.SequenceNode else [node]
        sources = []
        for item in reversed(nodes):
            value = self.build(item, depth + 1)
            if not isinstance(value, dict):
                raise _Reject(
                    error(
                        "yaml-bad-merge",
                        "Invalid merge key",
                        f"{self.path}: `<<` must merge a mapping or a list of mappings.",
                        span=span_of(item, self.path),
                    )
                )
            sources.append(value)
        return sources

    def _reject(self, node: yaml.Node, code: str, summary: str, detail: str, hint: str) -> _Reject:
        """A problem that stops building this file, at `node`'s position."""
        span = span_of(node, self.path)
        return _Reject(error(code, summary, f"{self.path}: {detail}", hint=hint, span=span))

    def _bad_tag(self, node: yaml.Node) -> Diagnostic:
        return error(
            "yaml-tag",
            "Unsupported YAML tag",
            f"{self.path}: tag {node.tag!r} is not supported.",
            hint="Remove the tag; fabric reads plain strings, numbers, lists and mappings.",
            span=span_of(node, self.path),
        )


def locate(
    root: yaml.Node | None,
    loc: Sequence[str | int],
    path: str,
    *,
    key: bool = False,
    entries: dict[int, dict[str, tuple[yaml.Node, yaml.Node]]] | None = None,
) -> SourceSpan:
    """Span of the node at `loc`, or of its nearest existing ancestor.

    With `key=True` and a mapping entry at the end of `loc`, the span is the key's (where an
    unknown or misspelt field is written), not its value's.
    """
    if root is None:
        return SourceSpan(path, 1, 1)
    node = root
    cache = {} if entries is None else entries
    for i, part in enumerate(loc):
        found = _child(node, part, cache)
        if found is None:
            break
        key_node, child = found
        if key and i == len(loc) - 1 and key_node is not None:
            return span_of(key_node, path)
        node = child
    return span_of(node, path)


def _child(
    node: yaml.Node, part: str | int, cache: dict[int, dict[str, tuple[yaml.Node, yaml.Node]]]
) -> tuple[yaml.Node | None, yaml.Node] | None:
    if isinstance(node, yaml.MappingNode):
        table = cache.get(id(node))
        if table is None:
            table = cache[id(node)] = _mapping_entries(node, cache)
        return table.get(str(part))
    if (
        isinstance(node, yaml.SequenceNode)
        and isinstance(part, int)
        and 0 <= part < len(node.value)
    ):
        return None, node.value[part]
    return None
