"""The DAG between pipelines: pipeline B depends on pipeline A when B reads a table A writes (found by parsing the
SQL with sqlglot, plus extract and load stages). A change to a table flows downstream in topological order; a
cycle is an error. ``plan_changes`` answers "which pipelines and tables does this change affect?".
"""

from __future__ import annotations

import graphlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tarn.errors import ConfigError
from tarn.pipelines.analysis import analyze
from tarn.pipelines.project import load_pipelines
from tarn.pipelines.runner import spec_hash
from tarn.pipelines.spec import PipelineSpec


@dataclass(frozen=True)
class Node:
    name: str
    reads: tuple[str, ...]
    writes: tuple[str, ...]
    source: str | None


@dataclass
class Graph:
    nodes: dict[str, Node]
    upstream: dict[str, set[str]] = field(default_factory=dict)  # pipeline → pipelines it depends on

    @property
    def producers(self) -> dict[str, list[str]]:
        """table → pipelines that write it."""
        out: dict[str, list[str]] = {}
        for n in self.nodes.values():
            for t in n.writes:
                out.setdefault(t, []).append(n.name)
        return out

    def consumers(self, table: str) -> list[str]:
        """Pipelines that read ``table``, in DAG order."""
        return [p for p in self.order() if table in self.nodes[p].reads]

    def cycle(self) -> list[str] | None:
        try:
            tuple(graphlib.TopologicalSorter(self.upstream).static_order())
        except graphlib.CycleError as e:
            cyc: list[str] = list(e.args[1])
            return cyc
        return None

    def order(self) -> list[str]:
        """Every pipeline, upstream first (ties by name)."""
        ts = graphlib.TopologicalSorter({k: sorted(v) for k, v in sorted(self.upstream.items())})
        try:
            return list(ts.static_order())
        except graphlib.CycleError as e:
            raise ConfigError(
                "pipelines depend on each other in a cycle: " + " → ".join(e.args[1]),
                hint="a pipeline must not read (directly or through others) a table it writes",
            ) from None

    def downstream(self, names: Iterable[str]) -> list[str]:
        """``names`` and every pipeline that depends on them, in DAG order."""
        wanted = set(names)
        down: dict[str, set[str]] = {n: set() for n in self.nodes}
        for n, ups in self.upstream.items():
            for u in ups:
                down[u].add(n)
        stack = list(wanted)
        while stack:
            for d in down.get(stack.pop(), ()):
                if d not in wanted:
                    wanted.add(d)
                    stack.append(d)
        return [p for p in self.order() if p in wanted]


def node_of(spec: PipelineSpec, project_dir: Path) -> Node:
    io = analyze(spec, project_dir, lenient=True)
    return Node(spec.name, tuple(io.reads), tuple(io.writes), str(spec.source) if spec.source else None)


def build_graph(specs: Iterable[PipelineSpec], project_dir: Path) -> Graph:
    nodes = {s.name: node_of(s, project_dir) for s in specs}
    g = Graph(nodes)
    producers = g.producers
    for n in nodes.values():
        g.upstream[n.name] = {p for t in n.reads for p in producers.get(t, []) if p != n.name}
    return g


@dataclass
class Plan:
    """What a change affects."""

    changed: dict[str, str]  # pipeline → why (new, changed, named)
    pipelines: list[str]  # changed ones and everything downstream, in run order
    tables: list[str]  # tables those pipelines write

    def to_dict(self) -> dict[str, Any]:
        return {"changed": self.changed, "pipelines": self.pipelines, "tables": self.tables}


def plan_changes(
    project_dir: Path,
    *,
    changed: list[str] | None = None,
    last_hash: Callable[[str], str | None] | None = None,
) -> Plan:
    """``changed``: pipeline names, pipeline / SQL files, or ``zone.table`` names. Without it, a pipeline has
    changed when its fingerprint differs from the one of its last successful run (or it never ran)."""
    specs = load_pipelines(project_dir)
    graph = build_graph(specs.values(), project_dir)
    graph.order()  # raises on a cycle
    why: dict[str, str] = {}
    if changed:
        for item in changed:
            why.update(_match(item, specs, graph, project_dir))
    elif last_hash is not None:
        for name, spec in specs.items():
            last = last_hash(name)
            if last is None:
                why[name] = "never ran"
            elif last != spec_hash(spec):
                why[name] = "changed since its last successful run"
    affected = graph.downstream(why)
    for p in affected:
        why.setdefault(p, "downstream")
    tables = sorted({t for p in affected for t in graph.nodes[p].writes})
    return Plan(why, affected, tables)


def _match(item: str, specs: dict[str, PipelineSpec], graph: Graph, project_dir: Path) -> dict[str, str]:
    if item in specs:
        return {item: "named"}
    path = Path(item)
    full = (path if path.is_absolute() else project_dir / path).resolve()
    hits = {n: f"file {item}" for n, s in specs.items() if s.source is not None and s.source.resolve() == full}
    if hits:
        return hits
    if full.suffix == ".sql":  # pipelines whose stages read this SQL file
        out = {}
        for n, s in specs.items():
            for st in s.stages:
                f = getattr(st, "sql_file", None)
                if f and (s.base_dir / f).resolve() == full:
                    out[n] = f"uses {item}"
        if out:
            return out
    readers = {p: f"reads {item}" for p in graph.consumers(item)}
    if readers or ("." in item and not full.suffix):
        return readers
    raise ConfigError(
        f"{item!r} is not a pipeline, a pipeline or SQL file, or a table read by a pipeline",
        hint="name pipelines, files under pipelines/, or zone.table names",
    )
