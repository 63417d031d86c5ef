"""Runner overhead per node: a 200-node DAG of no-op nodes in 8 parallel branches.

Times, in this process (median of 3):
  - executor only: fabric.runner.local.LocalExecutor on the DAG (warm pool), no database;
  - full run: `fabric run` of the same DAG applied to a real control plane (run and node-run
    records written as it goes), through fabric.api.run.
  - queue: `fabric run --executor queue --wait` of the same DAG with two `fabric worker`
    processes (no-op nodes, `--branches / 2` concurrency each), warm (after one untimed run);
    printed with its ratio against the local full run.
Reports wall time / nodes, i.e. what each node costs beyond its own work. Targets: < 50 ms
(local), < 100 ms (queue, two workers).

Nodes are no-ops (bench/noop_nodes.py), handed to the executor as tests hand theirs.

    uv run python bench/dag_overhead.py [--nodes 200] [--branches 8] [--executor local|queue|both]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_server import server_url  # noqa: E402
from noop_nodes import noop, noop_batch  # noqa: E402
from queue_setup import applied_noop_repo, noop_workers  # noqa: E402

from fabric import api  # noqa: E402
from fabric.addresses import Address  # noqa: E402
from fabric.domain.runs import NodeSpec  # noqa: E402
from fabric.graph.dag import Dag  # noqa: E402
from fabric.runner.local import LocalExecutor  # noqa: E402


def chains(nodes: int, branches: int) -> list[tuple[str, str | None]]:
    """(name, upstream name) for `branches` chains sharing `nodes` nodes."""
    out = []
    for i in range(nodes):
        b, k = i % branches, i // branches
        out.append((f"b{b}_n{k}", f"b{b}_n{k - 1}" if k else None))
    return out


def bench_executor(nodes: int, branches: int, workers: int) -> float:
    graph = chains(nodes, branches)
    addr = {n: Address.parse(f"bench.pipeline.{n}") for n, _ in graph}
    dag = Dag.build(addr.values(), [(addr[u], addr[n]) for n, u in graph if u])
    specs = {a: NodeSpec(address=a, kind="noop", spec={"noop": {}}) for a in addr.values()}
    with LocalExecutor(workers, execute=noop, execute_batch=noop_batch) as executor:
        executor.run(Dag.build([next(iter(addr.values()))], []), specs, {}, lambda e: None)
        times = []
        for _ in range(3):
            start = time.perf_counter()
            outcome = executor.run(dag, specs, {}, lambda e: None)
            times.append(time.perf_counter() - start)
            assert all(s.value == "success" for s in outcome.status.values())
    return statistics.median(times)


def bench_full_run(nodes: int, branches: int, workers: int, executor: str = "local") -> float:
    with applied_noop_repo(server_url(), chains(nodes, branches), label="dag") as (
        root,
        env,
        engine,
    ):
        if executor == "queue":
            return _queue_runs(root, env, engine, workers)
        times = []
        for _ in range(3):
            start = time.perf_counter()
            result = api.run(
                root, tenants=["bench"], workers=workers, environ=env, engine=engine, execute=noop
            )
            times.append(time.perf_counter() - start)
            assert result.ok
        return statistics.median(times)


def _queue_runs(root: Path, env: dict[str, str], engine, concurrency: int) -> float:
    """Median of 3 queue runs on two warm no-op workers (after one untimed run)."""
    with noop_workers(root, env, concurrency=concurrency):
        times = []
        for i in range(4):
            start = time.perf_counter()
            result = api.run(
                root, tenants=["bench"], environ=env, engine=engine, executor="queue", wait=True
            )
            if i:
                times.append(time.perf_counter() - start)
            assert result.ok, result.errors
        return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=200)
    parser.add_argument("--branches", type=int, default=8)
    parser.add_argument("--executor", choices=["local", "queue", "both"], default="both")
    args = parser.parse_args()
    n = args.nodes
    print(f"DAG: {n} no-op nodes in {args.branches} parallel chains")
    local = None
    if args.executor in ("local", "both"):
        for workers in (1, args.branches):
            t = bench_executor(n, args.branches, workers)
            print(f"executor only, {workers} worker(s): {t:6.2f} s  -> {1000 * t / n:5.1f} ms/node")
        for workers in (1, args.branches):
            local = bench_full_run(n, args.branches, workers)
            print(
                f"full run with records, {workers} worker(s): {local:6.2f} s  -> "
                f"{1000 * local / n:5.1f} ms/node (target < 50)"
            )
    if args.executor in ("queue", "both"):
        per_worker = max(1, args.branches // 2)
        t = bench_full_run(n, args.branches, per_worker, executor="queue")
        ratio = f", {t / local:.2f}x the local full run" if local else ""
        print(
            f"queue executor, 2 workers x {per_worker}: {t:6.2f} s  -> "
            f"{1000 * t / n:5.1f} ms/node (target < 100){ratio}"
        )


if __name__ == "__main__":
    main()
