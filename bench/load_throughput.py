"""Load throughput: one PostgreSQL table into the PostgreSQL warehouse, three ways.

Times, in one process, the median of `--repeat` runs each (default 3), of a table of `--rows`
rows (default 1,000,000) with realistic column types (bigint key, int, text, numeric(12,2),
smallint, timestamptz, date, boolean, uuid, text with NULLs, jsonb):

  - COPY   : `COPY orders TO STDOUT (FORMAT binary)` piped into `COPY ... FROM STDIN` on a
             second connection: the physical limit of moving the bytes;
  - dlt    : a bare dlt pipeline with the backend and settings fabric picks for this table
             (connectorx streamed in batches, uncompressed parquet, ADBC loader, 4 load jobs);
  - fabric : `run_pipeline_node` of the same pipeline, in this process (a worker process adds
             only its start-up, which the local executor pays once per worker, not per load);
             it includes everything a real run does: the run lock on a control-plane database,
             decrypting credentials, reflection, state sync, row counts, package clean-up.

and the fixed cost of one load, measured on a 1-row table (median of 5 after a warm-up).
Targets: fabric within 1.15x of bare dlt; fabric at least 0.33x of COPY's speed (0.4x aimed
for); fixed cost at most 0.15 s.

    uv run python bench/load_throughput.py [--rows 1000000] [--repeat 3]

Uses FABRIC_DATABASE_URL's server when set, else an embedded PostgreSQL under bench/.out/; it
creates its own databases there and drops them at the end.
"""

from __future__ import annotations

import argparse
import dataclasses
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
from cryptography.fernet import Fernet
from sqlalchemy import make_url

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_server import server_url  # noqa: E402

from fabric.addresses import Address  # noqa: E402
from fabric.domain.runs import NodeSpec, StoredConnection  # noqa: E402
from fabric.runner import dlt_destinations, dlt_node, dlt_sources  # noqa: E402
from fabric.runner.credentials import resolve_connection  # noqa: E402
from fabric.state.engine import create_database, drop_database  # noqa: E402
from fabric.state.secrets import SecretBox  # noqa: E402

DDL = """
CREATE TABLE {name} (
    id bigint PRIMARY KEY,
    customer_id integer NOT NULL,
    status text NOT NULL,
    amount numeric(12, 2) NOT NULL,
    quantity smallint NOT NULL,
    created_at timestamptz NOT NULL,
    shipped_on date,
    is_paid boolean NOT NULL,
    external_id uuid NOT NULL,
    note text,
    attrs jsonb
)
"""
SEED = """
INSERT INTO {name}
SELECT g, mod(g, 50000), (ARRAY['new', 'paid', 'shipped', 'cancelled'])[1 + mod(g, 4)],
       mod(g, 100000) / 100.0, mod(g, 20)::smallint,
       timestamptz '2024-01-01 00:00:00+00' + g * interval '1 second',
       CASE WHEN mod(g, 5) = 0 THEN NULL ELSE date '2024-01-01' + mod(g, 365) END,
       mod(g, 2) = 0, md5(g::text)::uuid,
       CASE WHEN mod(g, 3) = 0 THEN NULL ELSE 'note for order ' || g END,
       CASE WHEN mod(g, 10) = 0 THEN jsonb_build_object('gift', true, 'n', g) END
FROM generate_series(1, {rows}) g
"""


def libpq(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def median_of(repeat: int, fn: Callable[[int], Any]) -> tuple[float, list[float]]:
    times = [timed(lambda i=i: fn(i))[0] for i in range(repeat)]
    return statistics.median(times), times


def seed(source: str, rows: int, name: str = "orders") -> None:
    with psycopg.connect(libpq(source), autocommit=True) as conn:
        conn.execute(DDL.format(name=name))
        conn.execute(SEED.format(name=name, rows=rows))
        conn.execute(f"ANALYZE {name}")


def copy_once(source: str, warehouse: str, i: int) -> None:
    table = f"copy_{i}.orders"
    with psycopg.connect(libpq(source)) as src, psycopg.connect(libpq(warehouse)) as dst:
        dst.execute(f"CREATE SCHEMA copy_{i}")
        dst.execute(DDL.format(name=table))
        with (
            src.cursor().copy("COPY orders TO STDOUT (FORMAT binary)") as out,
            dst.cursor().copy(f"COPY {table} FROM STDIN (FORMAT binary)") as into,
        ):
            for chunk in out:
                into.write(chunk)
        dst.commit()


def bare_dlt_once(source: str, warehouse: str, table: str, dataset: str, workdir: Path) -> int:
    """The same extract/load as fabric picks, written as a dlt user would."""
    import dlt
    from dlt.sources.sql_database import sql_table
    from sqlalchemy import MetaData, create_engine

    engine = create_engine(source)
    metadata = MetaData()
    metadata.reflect(bind=engine, only=[table])
    engine.dispose()
    chunk = dlt_sources.DEFAULT_CHUNK_SIZE
    resource = sql_table(
        credentials=source,
        table=table,
        metadata=metadata,
        backend="connectorx",
        chunk_size=chunk,
        backend_kwargs={"return_type": "arrow_stream", "batch_size": chunk},
        reflection_level=dlt_sources.REFLECTION_LEVEL,
    )
    resource.add_filter(dlt_sources._has_rows)
    resource.add_map(dlt_sources._cast_to_destination(metadata.tables[table]))
    settings = {
        **dlt_node.DLT_SETTINGS,
        "data_writer.file_max_items": chunk,
        "runtime.log_level": "ERROR",  # fabric sends dlt's log to the node's tail, not stderr
    }
    with dlt.config.values(settings):
        pipeline = dlt.pipeline(
            pipeline_name=f"bare_{dataset}",
            pipelines_dir=str(workdir),
            # a URL without a password (trust authentication) needs dlt credentials with an
            # empty one: dlt's PostgresCredentials requires the field
            destination=dlt.destinations.postgres(
                credentials=dlt_destinations.postgres_credentials(make_url(warehouse))
            ),
            dataset_name=dataset,
        )
        pipeline.extract(resource, loader_file_format="parquet")
        normalized = pipeline.normalize()
        pipeline.load(workers=dlt_node.LOAD_WORKERS)
    return sum(v for k, v in normalized.row_counts.items() if not k.startswith("_dlt"))


def fabric_node(
    box: SecretBox,
    source: str,
    warehouse: str,
    control: str,
    table: str,
    dataset: str,
    workdir: Path,
) -> NodeSpec:
    def stored(name: str, url: str, direction: str) -> StoredConnection:
        u = make_url(url)
        address = Address.parse(f"bench.connection.{name}")
        spec = {
            "type": "postgres",
            "direction": direction,
            "host": u.host,
            "port": u.port,
            "database": u.database,
            "username": u.username,
        }
        if u.password is None:  # trust or peer authentication: no password at all
            return StoredConnection(address=address, spec=spec, secrets={})
        ct = box.encrypt(f"{address}#password", str(u.password))
        return StoredConnection(
            address=address,
            spec={**spec, "password": "${secret:pw}"},
            secrets={"password": {"ref": "${secret:pw}", "ct": ct}},
        )

    return NodeSpec(
        address=Address.parse(f"bench.pipeline.{table}"),
        kind="pipeline",
        spec={
            "source": "shop",
            "destination": "dwh",
            "dataset": dataset,
            "mode": "single_table",
            "table": table,
            "write_disposition": "append",
        },
        connections={
            "shop": stored("shop", source, "source"),
            "dwh": stored("dwh", warehouse, "destination"),
        },
        control_plane_url=control,
        workdir=str(workdir),
        run_id=1,
    )


def resolved(box: SecretBox, node: NodeSpec) -> NodeSpec:
    """The node as the runner hands it to a worker: connections decrypted (outside the timing
    of a load in a real run too: the runner resolves them once per run)."""
    connections = {n: resolve_connection(c, box, {}) for n, c in node.connections.items()}
    return dataclasses.replace(node, connections=connections)


def fabric_once(box: SecretBox, node: NodeSpec) -> int:
    result = dlt_node.run_pipeline_node(resolved(box, node))
    if result.error:
        raise SystemExit(f"fabric run failed: {result.error}\n{result.log_tail}")
    return sum(result.rows_loaded.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    rows, repeat = args.rows, args.repeat

    server = server_url()
    tag = secrets.token_hex(3)
    names = {k: f"bench_load_{k}_{tag}" for k in ("src", "dwh", "cp")}
    urls = {k: create_database(server, name) for k, name in names.items()}
    work = Path(tempfile.mkdtemp(prefix="fabric-load-bench-"))
    box = SecretBox([Fernet.generate_key()])
    try:
        t_seed, _ = timed(lambda: seed(urls["src"], rows))
        seed(urls["src"], 1, name="one_row")
        print(f"seeded {rows:,} rows in {t_seed:.1f} s; server {make_url(server).host}")
        from sqlalchemy import MetaData, create_engine

        engine = create_engine(urls["src"])
        metadata = MetaData()
        metadata.reflect(bind=engine, only=["orders"])
        engine.dispose()
        config = dlt_sources.SqlSourceConfig(
            url=make_url(urls["src"]),
            dialect="postgresql",
            schema=None,
            tables=("orders",),
            chunk_size=dlt_sources.DEFAULT_CHUNK_SIZE,
            backend="auto",
        )
        backend, reason = config.backend_for(metadata.tables["orders"])
        print(
            f"fabric picks: backend {backend} ({reason}); batch {config.chunk_size:,} rows; "
            f"parquet via ADBC: {dlt_sources.has_adbc_postgres()}; compression off; "
            f"{dlt_node.LOAD_WORKERS} load jobs"
        )

        def dlt_run(i: int) -> None:
            loaded = bare_dlt_once(urls["src"], urls["dwh"], "orders", f"dlt_{i}", work / f"d{i}")
            assert loaded == rows, loaded

        def fabric_run(i: int) -> None:
            node = fabric_node(
                box, urls["src"], urls["dwh"], urls["cp"], "orders", f"fabric_{i}", work / f"f{i}"
            )
            assert fabric_once(box, node) == rows

        # warm-up: imports and first connections, so no method pays them
        bare_dlt_once(urls["src"], urls["dwh"], "one_row", "warm_dlt", work / "warm_dlt")
        fabric_once(
            box,
            fabric_node(
                box, urls["src"], urls["dwh"], urls["cp"], "one_row", "warm", work / "warm"
            ),
        )

        t_copy, copies = median_of(repeat, lambda i: copy_once(urls["src"], urls["dwh"], i))
        t_dlt, dlts = median_of(repeat, dlt_run)
        t_fabric, fabrics = median_of(repeat, fabric_run)

        one = fabric_node(box, urls["src"], urls["dwh"], urls["cp"], "one_row", "one", work / "one")
        fixed = [timed(lambda: fabric_once(box, one))[0] for _ in range(5)]
        bare_fixed = [
            timed(
                lambda i=i: bare_dlt_once(
                    urls["src"], urls["dwh"], "one_row", f"one_dlt_{i}", work / f"o{i}"
                )
            )[0]
            for i in range(5)
        ]

        def line(label: str, seconds: float, all_times: list[float]) -> str:
            shown = ", ".join(f"{t:.2f}" for t in all_times)
            return f"  {label:<8}{seconds:7.2f} s {rows / seconds:>12,.0f} rows/s   ({shown})"

        print(f"\n{rows:,} rows, median of {repeat}:")
        print(line("COPY", t_copy, copies))
        print(line("dlt", t_dlt, dlts))
        print(line("fabric", t_fabric, fabrics))
        print(
            f"\nfabric / bare dlt time : {t_fabric / t_dlt:.2f}x   (target <= 1.15x)\n"
            f"fabric speed / COPY    : {t_copy / t_fabric:.2f}x   (target >= 0.33x, aim 0.4x)\n"
            f"fixed cost per load    : {statistics.median(fixed):.3f} s fabric, "
            f"{statistics.median(bare_fixed):.3f} s bare dlt (1-row table, median of 5; "
            "target <= 0.15 s)"
        )
    finally:
        for name in names.values():
            drop_database(server, name)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
