"""A DAG as text, Mermaid or Graphviz dot.  [pure]"""

from __future__ import annotations

from fabric.addresses import Address
from fabric.graph.dag import Dag


def _label(a: Address) -> str:
    return f"{a.kind.value}:{a.name}"


def _id(a: Address) -> str:
    return f"{a.kind.value[0]}_{a.name}"


def render_graph(dag: Dag, fmt: str = "text") -> str:
    order = dag.order()
    if fmt == "mermaid":
        lines = ["flowchart LR"]
        for n in order:
            shape = f'[("{_label(n)}")]' if n.kind.value == "pipeline" else f'["{_label(n)}"]'
            lines.append(f"    {_id(n)}{shape}")
        for n in order:
            for up in sorted(dag.upstream[n]):
                lines.append(f"    {_id(up)} --> {_id(n)}")
        return "\n".join(lines)
    if fmt == "dot":
        lines = ["digraph fabric {", "  rankdir=LR;"]
        for n in order:
            shape = "cylinder" if n.kind.value == "pipeline" else "box"
            lines.append(f'  "{_label(n)}" [shape={shape}];')
        for n in order:
            for up in sorted(dag.upstream[n]):
                lines.append(f'  "{_label(up)}" -> "{_label(n)}";')
        lines.append("}")
        return "\n".join(lines)
    lines = []
    for n in order:
        ups = ", ".join(_label(u) for u in sorted(dag.upstream[n]))
        tags = f"  [{', '.join(sorted(dag.tags[n]))}]" if dag.tags.get(n) else ""
        lines.append(f"{_label(n)}{tags}" + (f"  <- {ups}" if ups else ""))
    return "\n".join(lines) if lines else "(no pipelines or transformations)"
