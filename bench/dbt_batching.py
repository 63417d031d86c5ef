"""dbt batching: N trivial view models run as fabric nodes vs one plain in-process dbt run.

Both projects hold the same macros (a tenant macro file and a shared one, called by every
model) and a seed that one model refs; both build it (`dbt build`), so macros and seeds are
part of the comparison.

Times (warm, median of --repeat):
  - plain dbt: `dbtRunner().invoke(["build", ...])` of a hand-written project with the same N
    models, in this process (dbt's own floor: ~0.17 s fixed plus a few tens of ms per model),
    with dbt's default debug-level log file, and with `--log-level-file info` as fabric runs
    dbt: the latter is the baseline the ratios use;
  - fabric, in process: `fabric.runner.dbt_node.run_transformation_nodes` with all N nodes in
    one batch, as the executor dispatches them when they become ready together (project
    generation and comparison, credentials into the environment, `dbt build`, result mapping);
  - fabric, LocalExecutor: the same N nodes as a DAG through fabric's local executor (warm
    worker processes, batching by tenant), i.e. the path `fabric run` takes, minus run records;
  - with --unbatched, the executor again but one dbt invocation per node (what batching saves).
Target: fabric within 1.2x of plain dbt.

    uv run python bench/dbt_batching.py [--models 100] [--repeat 3] [--workers 2] [--unbatched]

Uses FABRIC_DATABASE_URL's server when set, else an embedded one under bench/.out/pg; a
database is created for the run and dropped after.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from cryptography.fernet import Fernet
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_server import server_url  # noqa: E402

from fabric.addresses import Address, Kind  # noqa: E402
from fabric.domain.runs import NodeSpec, StoredConnection  # noqa: E402
from fabric.graph.dag import Dag  # noqa: E402
from fabric.runner import dbt_project as dp  # noqa: E402
from fabric.runner.credentials import resolve_connection  # noqa: E402
from fabric.state.engine import create_database, drop_database  # noqa: E402
from fabric.state.secrets import SecretBox  # noqa: E402


def timed(fn: Callable[[], object], repeat: int) -> float:
    fn()  # warm: imports, first parse, connections
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def fabric_nodes(
    url: str, models: int, workdir: Path, key: str
) -> tuple[list[NodeSpec], SecretBox]:
    parsed = make_url(url)
    box = SecretBox([key])
    address = Address("bench", Kind.CONNECTION, "dwh")
    spec = {
        "type": "postgres",
        "direction": "destination",
        "host": parsed.host,
        "port": parsed.port,
        "database": parsed.database,
        "username": parsed.username,
        "password": "${secret:dwh_password}",
    }
    secrets = {
        "password": {
            "ref": "${secret:dwh_password}",
            "ct": box.encrypt(f"{address}#password", parsed.password or ""),
            "fp": None,
        }
    }
    dwh = StoredConnection(address=address, spec=spec, secrets=secrets)
    resolved = resolve_connection(dwh, box, {})
    transformations = {
        f"m{i:03d}": {
            "sql": model_sql(i),
            "schema": "bench_fabric",
            "materialized": "view",
            "warehouse": "dwh",
            "tests": {},
        }
        for i in range(models)
    }
    seeds = {"countries": {"csv": SEED, "schema": "bench_fabric", "warehouse": "dwh", "tests": {}}}
    project = {
        "tenant": "bench",
        "transformations": transformations,
        "pipelines": {},
        "connections": {"dwh": dwh},
        "macros": {
            "bench_macros": {"file": "tenants/bench/macros/bench_macros.sql", "sql": MACRO},
            "project__shared": {"file": "macros/shared.sql", "sql": SHARED, "shared": True},
        },
        "seeds": seeds,
    }
    nodes = [
        NodeSpec(
            address=Address("bench", kind, name),
            kind=kind.value,
            spec=spec_,
            connections={"dwh": resolved},
            workdir=str(workdir / "bench"),
            project=project,
        )
        for kind, items in ((Kind.SEED, seeds), (Kind.TRANSFORMATION, transformations))
        for name, spec_ in items.items()
    ]
    return nodes, box


MACRO = "{% macro plus_one(x) %}({{ x }} + 1){% endmacro %}\n"
SHARED = "{% macro times_two(x) %}({{ x }} * 2){% endmacro %}\n"
SEED = "code,population\nde,83\nfr,68\n"


def model_sql(i: int) -> str:
    if i == 0:
        return "select count(*) as id from {{ ref('countries') }}"
    return f"select {{{{ times_two(plus_one({i})) }}}} as id"


def plain_project(url: str, models: int, folder: Path) -> list[str]:
    """A hand-written dbt project with the same models; returns the dbt arguments to run it."""
    parsed = make_url(url)
    (folder / "models").mkdir(parents=True)
    (folder / "macros").mkdir()
    (folder / "seeds").mkdir()
    (folder / "macros" / "bench_macros.sql").write_text(MACRO)
    (folder / "macros" / "shared.sql").write_text(SHARED)
    (folder / "seeds" / "countries.csv").write_text(SEED)
    (folder / "dbt_project.yml").write_text(
        "name: plain\nversion: '1.0'\nconfig-version: 2\nprofile: plain\n"
        "flags: {send_anonymous_usage_stats: false}\n"
        "models:\n  plain:\n    +materialized: view\n    +schema: bench_plain\n"
        "seeds:\n  plain:\n    +schema: bench_plain\n"
    )
    (folder / "profiles.yml").write_text(
        "plain:\n  target: dwh\n  outputs:\n    dwh:\n      type: postgres\n"
        f"      host: {parsed.host}\n      port: {parsed.port}\n"
        f"      user: {parsed.username}\n      dbname: {parsed.database}\n"
        "      password: \"{{ env_var('DBT_ENV_SECRET_PLAIN_PASSWORD') }}\"\n"
        f"      schema: bench_plain\n      threads: {dp.THREADS}\n"
    )
    os.environ["DBT_ENV_SECRET_PLAIN_PASSWORD"] = parsed.password or ""
    for i in range(models):
        (folder / "models" / f"m{i:03d}.sql").write_text(model_sql(i))
    return ["build", "--project-dir", str(folder), "--profiles-dir", str(folder)]


def bench(url: str, args: argparse.Namespace) -> None:
    from dbt.cli.main import dbtRunner

    from fabric.runner.dbt_node import run_transformation_nodes
    from fabric.runner.driver import dbt_batch
    from fabric.runner.local import LocalExecutor

    with tempfile.TemporaryDirectory() as tmp:
        key = Fernet.generate_key().decode()
        nodes, _box = fabric_nodes(url, args.models, Path(tmp) / "work", key)
        plain_args = plain_project(url, args.models, Path(tmp) / "plain")

        def plain(*extra: str) -> None:
            result = dbtRunner().invoke([*plain_args, "--log-level", "none", *extra])
            assert result.success, result.exception

        def in_process() -> None:
            results = run_transformation_nodes(nodes)
            assert all(r.status.value == "success" for r in results), results[0].error

        seed, first = nodes[0].address, nodes[1].address
        dag = Dag.build([n.address for n in nodes], [(seed, first)])
        specs = {n.address: n for n in nodes}
        os.environ["FABRIC_SECRET_KEYS"] = key  # the workers load their box from it

        def executor_run(executor: LocalExecutor, batch: bool) -> None:
            key = dbt_batch if batch else (lambda spec: None)
            outcome = executor.run(dag, specs, {}, lambda event: None, batch_key=key)
            bad = [a for a, s in outcome.status.items() if s.value != "success"]
            assert not bad, outcome.results[bad[0]].error

        t_plain_default = timed(plain, args.repeat)
        t_plain = timed(lambda: plain("--log-level-file", "info"), args.repeat)
        t_fabric = timed(in_process, args.repeat)
        with LocalExecutor(args.workers) as executor:
            t_executor = timed(lambda: executor_run(executor, True), args.repeat)
            t_unbatched = (
                timed(lambda: executor_run(executor, False), 1) if args.unbatched else None
            )

    n = args.models
    print(
        f"{n} view models, 2 macro files, 1 seed, warm, median of {args.repeat} "
        f"(threads {dp.THREADS}):"
    )
    print(f"  plain dbt (dbtRunner build, in process)      {t_plain_default:6.2f} s")
    print(f"  plain dbt, --log-level-file info (as fabric) {t_plain:6.2f} s   <- the baseline")
    print(
        f"  fabric run_transformation_nodes (one batch)  {t_fabric:6.2f} s   "
        f"{t_fabric / t_plain:.2f}x plain"
    )
    print(
        f"  fabric LocalExecutor ({args.workers} warm workers)       {t_executor:6.2f} s   "
        f"{t_executor / t_plain:.2f}x plain"
    )
    if t_unbatched is not None:
        print(
            f"  LocalExecutor, one dbt invocation per node   {t_unbatched:6.2f} s   "
            f"{t_unbatched / t_plain:.2f}x plain"
        )
    verdict = "ok" if t_fabric / t_plain <= 1.2 else "SLOWER than the 1.2x target"
    print(f"fabric/plain ratio (in process): {t_fabric / t_plain:.2f} -> {verdict}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--unbatched", action="store_true")
    args = parser.parse_args()
    base = server_url()
    name = f"fabric_dbt_bench_{os.getpid()}"
    url = create_database(base, name)
    try:
        bench(url, args)
    finally:
        drop_database(base, name)


if __name__ == "__main__":
    main()
