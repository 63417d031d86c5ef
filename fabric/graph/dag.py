"""The DAG of pipelines and transformations, built on graphlib.  [pure]"""

from __future__ import annotations

import graphlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from fabric.addresses import Address
from fabric.graph.selectors import Selector, parse_selector


@dataclass(frozen=True, slots=True)
class Dag:
    """Nodes and their direct upstreams; acyclic by construction (validate rejects cycles)."""

    upstream: Mapping[Address, frozenset[Address]]
    tags: Mapping[Address, frozenset[str]]

    @classmethod
    def build(
        cls,
        nodes: Iterable[Address],
        edges: Iterable[tuple[Address, Address]],
        tags: Mapping[Address, Iterable[str]] | None = None,
    ) -> Dag:
        ups: dict[Address, set[Address]] = {n: set() for n in nodes}
        for up, down in edges:
            if up in ups and down in ups:
                ups[down].add(up)
        tag_map = {n: frozenset((tags or {}).get(n, ())) for n in ups}
        dag = cls(
            MappingProxyType({n: frozenset(u) for n, u in ups.items()}), MappingProxyType(tag_map)
        )
        dag.order()  # raises graphlib.CycleError naming the cycle
        return dag

    @property
    def nodes(self) -> frozenset[Address]:
        return frozenset(self.upstream)

    def downstream(self) -> dict[Address, frozenset[Address]]:
        downs: dict[Address, set[Address]] = {n: set() for n in self.upstream}
        for node, ups in self.upstream.items():
            for up in ups:
                downs[up].add(node)
        return {n: frozenset(d) for n, d in downs.items()}

    def order(self) -> tuple[Address, ...]:
        """A topological order; ties broken by address so it is stable."""
        sorter = graphlib.TopologicalSorter(self.upstream)
        sorter.prepare()
        out: list[Address] = []
        while sorter.is_active():
            ready = sorted(sorter.get_ready())
            out.extend(ready)
            sorter.done(*ready)
        return tuple(out)

    def ancestors(self, nodes: Iterable[Address]) -> frozenset[Address]:
        return _closure(nodes, self.upstream)

    def descendants(self, nodes: Iterable[Address]) -> frozenset[Address]:
        return _closure(nodes, self.downstream())

    def subgraph(self, keep: Iterable[Address]) -> Dag:
        """Only `keep`; edges from dropped nodes vanish (their upstream counts as satisfied)."""
        kept = frozenset(keep) & self.nodes
        return Dag(
            MappingProxyType({n: self.upstream[n] & kept for n in kept}),
            MappingProxyType({n: self.tags[n] for n in kept}),
        )

    def select(
        self, selectors: Iterable[str | Selector], *, strict: bool = True
    ) -> frozenset[Address]:
        """dbt-style selection; no selectors means every node. Raises ValueError if bad, or
        (when `strict`) if a selector matches nothing."""
        parsed = [s if isinstance(s, Selector) else parse_selector(s) for s in selectors]
        if not parsed:
            return self.nodes
        chosen: set[Address] = set()
        for sel in parsed:
            base = self._matching(sel)
            if not base and strict:
                raise ValueError(f"selector {str(sel)!r} matches no node")
            chosen |= base
            if sel.with_upstream:
                chosen |= self.ancestors(base)
            if sel.with_downstream:
                chosen |= self.descendants(base)
        return frozenset(chosen)

    def _matching(self, sel: Selector) -> frozenset[Address]:
        match sel.method:
            case "all":
                return self.nodes
            case "tag":
                return frozenset(n for n, t in self.tags.items() if sel.value in t)
            case "name":
                return frozenset(n for n in self.upstream if n.name == sel.value)
            case kind:
                return frozenset(
                    n for n in self.upstream if n.kind.value == kind and n.name == sel.value
                )


def _closure(
    start: Iterable[Address], step: Mapping[Address, frozenset[Address]]
) -> frozenset[Address]:
    seen: set[Address] = set()
    todo = list(start)
    while todo:
        for nxt in step.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return frozenset(seen)
