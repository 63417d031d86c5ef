"""Queue throughput on this machine: no-op claims per second across two worker processes.

Two figures, each from the database's own timestamps (first start to last finish):
  - queue claims: `--jobs` no-op jobs (default 5,000) deferred at once through procrastinate,
    taken by two procrastinate worker processes (`--concurrency` each) running a no-op task:
    what the queue itself sustains (the claim is procrastinate's SELECT ... FOR UPDATE SKIP
    LOCKED). Target: at least 1,000 claims/s on 2 cores.
  - fabric nodes: one queue run of `--nodes` independent no-op nodes (default 500) on two
    `fabric worker` processes: each node's claim (fencing token), its spec, the round trip to
    the tenant's process, the fenced write and the run's advance, each a transaction.

    uv run python bench/queue_throughput.py [--jobs 5000] [--nodes 500] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from sqlalchemy import text

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_server import server_url  # noqa: E402
from queue_setup import applied_noop_repo, noop_workers  # noqa: E402

from fabric import api  # noqa: E402
from fabric.state.engine import create_database, drop_database, make_engine  # noqa: E402
from fabric.state.migrate import upgrade_all  # noqa: E402

TASK = "bench.noop"


def _app(url: str):
    import procrastinate

    conninfo = make_engine(url).url.set(drivername="postgresql")
    app = procrastinate.App(
        connector=procrastinate.PsycopgConnector(
            conninfo=conninfo.render_as_string(hide_password=False)
        )
    )

    @app.task(name=TASK)
    async def noop(i: int) -> None:
        return None

    return app


def worker_main(url: str, concurrency: int) -> None:
    """A procrastinate worker that stops when the queue is empty."""
    app = _app(url)
    with app.open():
        app.run_worker(concurrency=concurrency, wait=False, install_signal_handlers=False)


def queue_claims(url: str, jobs: int, concurrency: int) -> float:
    engine = make_engine(url)
    with engine.begin() as conn:
        upgrade_all(conn)
    app = _app(url)
    with app.open():
        deferrer = app.configure_task(TASK)
        for start in range(0, jobs, 1000):
            deferrer.batch_defer(*({"i": i} for i in range(start, min(jobs, start + 1000))))
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "--worker", url, "--concurrency", str(concurrency)]
        )
        for _ in range(2)
    ]
    for proc in procs:
        proc.wait()
    with engine.connect() as conn:
        done, first, last = conn.execute(
            text(
                "SELECT count(*) FILTER (WHERE type = 'succeeded'), "
                "min(at) FILTER (WHERE type = 'started'), "
                "max(at) FILTER (WHERE type = 'succeeded') FROM procrastinate_events"
            )
        ).one()
    engine.dispose()
    assert done == jobs, f"{done} of {jobs} jobs succeeded"
    return jobs / (last - first).total_seconds()


def fabric_nodes(base: str, nodes: int, concurrency: int) -> float:
    pipelines = [(f"n{i}", None) for i in range(nodes)]
    with applied_noop_repo(base, pipelines, label="throughput") as (root, env, engine):
        with noop_workers(root, env, concurrency=concurrency):
            result = api.run(
                root, tenants=["bench"], environ=env, engine=engine, executor="queue", wait=True
            )
        assert result.ok, result.errors
        with engine.connect() as conn:
            schema = conn.execute(
                text("SELECT schema_name FROM fabric.tenants WHERE slug = 'bench'")
            ).scalar_one()
            first, last = conn.execute(
                text(f"SELECT min(started_at), max(updated_at) FROM {schema}.node_runs")
            ).one()
    return nodes / (last - first).total_seconds()


def _on_new_database(base: str, tag: str):
    def claims(_base: str, jobs: int, concurrency: int) -> float:
        db = f"fabric_queue_bench_{tag}_claims"
        url = create_database(base, db)
        try:
            return queue_claims(url, jobs, concurrency)
        finally:
            drop_database(base, db)

    return claims


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--nodes", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker_main(args.worker, args.concurrency)
        return
    base = server_url()
    tag = f"{os.getpid()}"
    for label, fn, n in (
        ("queue claims (procrastinate, no-op task)", _on_new_database(base, tag), args.jobs),
        ("fabric nodes (claim, run, fenced write, advance)", fabric_nodes, args.nodes),
    ):
        start = time.perf_counter()
        rate = fn(base, n, args.concurrency)
        took = time.perf_counter() - start
        verdict = (
            f" (target >= 1000/s: {'ok' if rate >= 1000 else 'SLOWER than the target'})"
            if fn is not fabric_nodes
            else ""
        )
        print(
            f"{label}: {n} on 2 workers x {args.concurrency}: {rate:,.0f}/s{verdict} "
            f"[{took:.1f} s with set-up]"
        )


if __name__ == "__main__":
    main()
