"""Small runs: a jaffle-shop-like tenant through `fabric run` vs plain `dbt seed` + `dbt build`.

Builds, in a temporary folder, from generated CSV files of about `--rows` rows each (default
100): a fabric repository with one tenant (3 `files` loads: raw_customers, raw_orders,
raw_payments; 5 models: stg_customers, stg_orders, stg_payments, customers, orders; 20 column
tests: not_null, unique, accepted_values, relationships), and the equivalent plain dbt project
(the same CSV files as seeds, the same 5 models and 20 tests). Then times, as fresh processes
end to end, the median of `--repeat` runs each (default 3), after one untimed first run of
each side (so both have their tables, dbt's partial-parse state and dlt's pipeline folders, as
a run started by a person or cron the second time does):

  - plain dbt : `dbt seed` then `dbt build` (the venv's `dbt` executable), and dbt's own
                "Finished running ... in N s" figure of each (execution without start-up and
                parsing);
  - fabric run: `fabric run --tenant jaffle` of the applied repository (a fresh process: imports,
                workers, loads, one dbt invocation per ready batch, run records);
  - read-only : `fabric runs`, `fabric status --tenant jaffle`, `fabric plan` (no changes),
                warm (after one untimed call).

Targets: fabric run at most 0.6x of dbt seed + dbt build (stretch 0.4x); each read-only command
under 0.7 s.

With `--executor queue`, two `fabric worker` processes are started first (and stopped at the
end) and the timed command is `fabric run --executor queue --wait`: the workers stay warm
between runs (dlt and dbt imported, dbt's partial parse kept). Target: the run within 2x of the
time dbt itself reports for executing the models and tests (seed + build, dbt's own figures).

    uv run python bench/small_run.py [--rows 100] [--repeat 3] [--workers N] [--keep]
                                      [--no-bytecode-cache] [--executor local|queue]

Uses FABRIC_DATABASE_URL's server when set, else the PostgreSQL at 127.0.0.1:5432 (user
postgres, trust authentication). It creates uniquely named databases there (control plane,
fabric's warehouse, plain dbt's warehouse) and drops them at the end, with the temporary folder;
--keep leaves both and prints the environment to repeat a command by hand (for profiling). The
machine should be quiet: the figures are wall-clock times.

Every process runs with Python's bytecode cache, as on a user's machine (Python writes it on the
first import): when PYTHONDONTWRITEBYTECODE is set, the processes get it unset and
PYTHONPYCACHEPREFIX=bench/.out/pycache instead, so the source tree stays clean. Without the cache
every start compiles every module again (read-only commands about 2.5x slower, `import dbt` 2x);
--no-bytecode-cache measures that (an empty cache folder, nothing written).
"""

from __future__ import annotations

import argparse
import os
import random
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from cryptography.fernet import Fernet
from sqlalchemy import make_url

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fabric.state.engine import create_database, drop_database  # noqa: E402

DEFAULT_SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
BIN = Path(sys.executable).parent
TENANT = "jaffle"
RAW = ("raw_customers", "raw_orders", "raw_payments")
ORDER_STATUSES = ("placed", "shipped", "completed", "return_pending", "returned")
PAYMENT_METHODS = ("credit_card", "coupon", "bank_transfer", "gift_card")
TARGET_RUN, STRETCH_RUN, TARGET_READ = 0.6, 0.4, 0.7

# -- the data and the models (the same SQL on both sides; `{raw:NAME}` is where a seed or a
# -- loaded table is read) -------------------------------------------------------------------------

MODELS: dict[str, tuple[str, str]] = {
    "stg_customers": (
        "view",
        """
select id as customer_id, first_name, last_name
from {raw:raw_customers}
""",
    ),
    "stg_orders": (
        "view",
        """
select id as order_id, user_id as customer_id, order_date, status
from {raw:raw_orders}
""",
    ),
    "stg_payments": (
        "view",
        """
select id as payment_id, order_id, payment_method, amount / 100.0 as amount
from {raw:raw_payments}
""",
    ),
    "customers": (
        "table",
        """
with customer_orders as (
    select customer_id, min(order_date) as first_order, max(order_date) as most_recent_order,
           count(order_id) as number_of_orders
    from {{ ref('stg_orders') }}
    group by customer_id
),
customer_payments as (
    select o.customer_id, sum(p.amount) as total_amount
    from {{ ref('stg_payments') }} p
    left join {{ ref('stg_orders') }} o on p.order_id = o.order_id
    group by o.customer_id
)
select c.customer_id, c.first_name, c.last_name,
       co.first_order, co.most_recent_order, co.number_of_orders,
       cp.total_amount as customer_lifetime_value
from {{ ref('stg_customers') }} c
left join customer_orders co on c.customer_id = co.customer_id
left join customer_payments cp on c.customer_id = cp.customer_id
""",
    ),
    "orders": (
        "table",
        """
with order_payments as (
    select order_id,
           sum(case when payment_method = 'credit_card' then amount else 0 end)
               as credit_card_amount,
           sum(case when payment_method = 'coupon' then amount else 0 end) as coupon_amount,
           sum(case when payment_method = 'bank_transfer' then amount else 0 end)
               as bank_transfer_amount,
           sum(case when payment_method = 'gift_card' then amount else 0 end)
               as gift_card_amount,
           sum(amount) as total_amount
    from {{ ref('stg_payments') }}
    group by order_id
)
select o.order_id, o.customer_id, o.order_date, o.status,
       coalesce(op.credit_card_amount, 0) as credit_card_amount,
       coalesce(op.coupon_amount, 0) as coupon_amount,
       coalesce(op.bank_transfer_amount, 0) as bank_transfer_amount,
       coalesce(op.gift_card_amount, 0) as gift_card_amount,
       coalesce(op.total_amount, 0) as amount
from {{ ref('stg_orders') }} o
left join order_payments op on o.order_id = op.order_id
""",
    ),
}

# model -> column -> tests, each test a name or {name: argument} as fabric's YAML takes it
TESTS: dict[str, dict[str, list]] = {
    "stg_customers": {"customer_id": ["unique", "not_null"]},
    "stg_orders": {
        "order_id": ["unique", "not_null"],
        "status": [{"accepted_values": list(ORDER_STATUSES)}],
    },
    "stg_payments": {
        "payment_id": ["unique", "not_null"],
        "payment_method": [{"accepted_values": list(PAYMENT_METHODS)}],
    },
    "customers": {"customer_id": ["unique", "not_null"]},
    "orders": {
        "order_id": ["unique", "not_null"],
        "customer_id": [
            "not_null",
            {"relationships": {"to": "ref('customers')", "field": "customer_id"}},
        ],
        "status": [{"accepted_values": list(ORDER_STATUSES)}],
        "amount": ["not_null"],
        "credit_card_amount": ["not_null"],
        "coupon_amount": ["not_null"],
        "bank_transfer_amount": ["not_null"],
        "gift_card_amount": ["not_null"],
    },
}


def test_count() -> int:
    return sum(len(tests) for columns in TESTS.values() for tests in columns.values())


def write_csvs(folder: Path, rows: int) -> None:
    """raw_customers, raw_orders, raw_payments with about `rows` rows each (seeded, stable)."""
    rng = random.Random(42)
    folder.mkdir(parents=True)
    names = ["Ann", "Bob", "Cat", "Dan", "Eve", "Fay", "Gus", "Hal", "Ivy", "Jo"]
    lines = ["id,first_name,last_name"]
    lines += [f"{i},{rng.choice(names)},{rng.choice('ABCDEFGHIJ')}." for i in range(1, rows + 1)]
    (folder / "raw_customers.csv").write_text("\n".join(lines) + "\n")
    lines = ["id,user_id,order_date,status"]
    lines += [
        f"{i},{rng.randint(1, rows)},2018-{1 + i * 12 // (rows + 1):02d}-{rng.randint(1, 28):02d},"
        f"{rng.choice(ORDER_STATUSES)}"
        for i in range(1, rows + 1)
    ]
    (folder / "raw_orders.csv").write_text("\n".join(lines) + "\n")
    lines = ["id,order_id,payment_method,amount"]
    lines += [
        f"{i},{rng.randint(1, rows)},{rng.choice(PAYMENT_METHODS)},{rng.randint(0, 3000)}"
        for i in range(1, rows + 1)
    ]
    (folder / "raw_payments.csv").write_text("\n".join(lines) + "\n")


def _yaml_tests(columns: Mapping[str, list], indent: str) -> str:
    """Column tests as YAML flow values (valid for fabric's `tests:` and dbt's `data_tests:`)."""
    import json

    out = []
    for column, tests in columns.items():
        out.append(f"{indent}{column}: {json.dumps(tests)}")
    return "\n".join(out)


def write_fabric_repo(repo: Path, data: Path, warehouse: str) -> None:
    """The tenant as fabric YAML: a filesystem source, 3 loads, a warehouse, 5 transformations."""
    wh = make_url(warehouse)
    tenant = repo / "tenants" / TENANT
    tenant.mkdir(parents=True, exist_ok=True)
    (repo / "fabric.yaml").write_text(
        "format_version: 1\nname: small-run-bench\ndefaults: {timezone: UTC, retries: 0}\n"
        "ownership: {enforce: false}\n"
    )
    (tenant / "tenant.yaml").write_text(
        f"tenant:\n  display_name: Jaffle Shop\n  warehouse: warehouse\n"
        f"connections:\n"
        f"  seeds:\n    type: filesystem\n    direction: source\n"
        f"    bucket_url: {data.relative_to(repo)}\n    format: csv\n"
        f"  warehouse:\n    type: postgres\n    direction: destination\n"
        f"    host: {wh.host}\n    port: {wh.port or 5432}\n    database: {wh.database}\n"
        f"    username: {wh.username}\n    password: ${{env:JAFFLE_DWH_PASSWORD}}\n"
    )
    pipelines = ["pipelines:"]
    for raw in RAW:
        pipelines.append(
            f"  {raw}:\n    source: seeds\n    dataset: jaffle_raw\n    mode: files\n"
            f"    file_glob: {raw}.csv\n    table_name: {raw}\n    write_disposition: replace"
        )
    (tenant / "pipelines.yaml").write_text("\n".join(pipelines) + "\n")
    transformations = ["transformations:"]
    for name, (materialized, sql) in MODELS.items():
        body = re.sub(r"\{raw:(\w+)\}", r"{{ source('\1', '\1') }}", sql).strip()
        body = "\n".join("      " + line for line in body.splitlines())
        transformations.append(
            f"  {name}:\n    schema: jaffle\n    materialized: {materialized}\n"
            f"    sql: |\n{body}\n    tests:\n{_yaml_tests(TESTS[name], '      ')}"
        )
    (tenant / "transformations.yaml").write_text("\n".join(transformations) + "\n")


def write_dbt_project(folder: Path, data: Path, warehouse: str) -> None:
    """The same models and tests as a plain dbt project with the CSV files as seeds."""
    wh = make_url(warehouse)
    (folder / "models").mkdir(parents=True)
    shutil.copytree(data, folder / "seeds")
    (folder / "dbt_project.yml").write_text(
        "name: jaffle_plain\nversion: '1.0'\nconfig-version: 2\nprofile: jaffle_plain\n"
        "flags: {send_anonymous_usage_stats: false}\n"
    )
    (folder / "profiles.yml").write_text(
        "jaffle_plain:\n  target: dwh\n  outputs:\n    dwh:\n      type: postgres\n"
        f"      host: {wh.host}\n      port: {wh.port or 5432}\n"
        f"      user: {wh.username}\n      dbname: {wh.database}\n"
        "      password: \"{{ env_var('DBT_ENV_SECRET_BENCH_PASSWORD') }}\"\n"
        "      schema: jaffle\n      threads: 4\n"
    )
    schema = ["version: 2", "models:"]
    for name, (materialized, sql) in MODELS.items():
        body = re.sub(r"\{raw:(\w+)\}", r"{{ ref('\1') }}", sql).strip()
        (folder / "models" / f"{name}.sql").write_text(
            f"{{{{ config(materialized='{materialized}') }}}}\n{body}\n"
        )
        schema.append(f"  - name: {name}\n    columns:")
        for column, tests in TESTS[name].items():
            schema.append(f"      - name: {column}\n        data_tests:")
            for test in tests:
                schema.append(f"          - {_dbt_test(test)}")
    (folder / "models" / "schema.yml").write_text("\n".join(schema) + "\n")


def _dbt_test(test: str | dict) -> str:
    import json

    if isinstance(test, str):
        return test
    ((name, arg),) = test.items()
    if name == "accepted_values":
        arg = {"values": arg}
    return json.dumps({name: arg})


# -- timing ---------------------------------------------------------------------------------------


class Failed(Exception):
    pass


def run(cmd: Sequence[str], env: Mapping[str, str], cwd: Path) -> tuple[float, str]:
    """Seconds end to end of one fresh process; its output. Fails loudly on a non-zero exit."""
    start = time.perf_counter()
    proc = subprocess.run(list(cmd), env=dict(env), cwd=cwd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    out = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise Failed(f"{' '.join(cmd)} exited {proc.returncode}:\n{out[-4000:]}")
    return seconds, out


FINISHED = re.compile(r"Finished running .*? in .*?\(([\d.]+)s\)")


def dbt_reported(output: str) -> float:
    """dbt's own "Finished running ... in ... (N s)" figure: execution, without start-up."""
    found = FINISHED.search(output)
    return float(found.group(1)) if found else float("nan")


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def bench(args: argparse.Namespace, urls: Mapping[str, str], tmp: Path) -> None:
    repo, plain = tmp / "repo", tmp / "plain"
    data = repo / "data" / TENANT  # a tenant reads local files only under data/<slug>/
    write_csvs(data, args.rows)
    write_fabric_repo(repo, data, urls["dwh"])
    write_dbt_project(plain, data, urls["plain"])
    password = make_url(urls["dwh"]).password or "unused-trust-auth"
    base_env = {k: v for k, v in os.environ.items() if not k.startswith(("FABRIC_", "DBT_"))}
    if args.no_bytecode_cache:  # an empty cache folder and no writing: nothing is ever cached
        base_env.update(PYTHONDONTWRITEBYTECODE="1", PYTHONPYCACHEPREFIX=str(tmp / "no-pycache"))
    elif base_env.pop("PYTHONDONTWRITEBYTECODE", None):
        base_env.setdefault("PYTHONPYCACHEPREFIX", str(ROOT / "bench" / ".out" / "pycache"))
    cache = "off" if args.no_bytecode_cache else "on"
    fabric_env = {
        **base_env,
        "FABRIC_DATABASE_URL": urls["cp"],
        "FABRIC_SECRET_KEYS": Fernet.generate_key().decode(),
        "JAFFLE_DWH_PASSWORD": password,
    }
    dbt_env = {
        **base_env,
        "DBT_ENV_SECRET_BENCH_PASSWORD": make_url(urls["plain"]).password or "unused",
        "DBT_PROFILES_DIR": str(plain),
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
    }
    fabric = str(BIN / "fabric")
    workers = ["--workers", str(args.workers)] if args.workers else []
    fabric_run = [fabric, "run", "--tenant", TENANT, "--repo", str(repo), *workers]
    if args.executor == "queue":
        fabric_run = [*fabric_run[:-2], "--executor", "queue", "--wait", *fabric_run[-2:]]
    reads = {
        "fabric runs": [fabric, "runs", "--repo", str(repo)],
        "fabric status": [fabric, "status", "--tenant", TENANT, "--repo", str(repo)],
        "fabric plan (no-op)": [fabric, "plan", str(repo), "--detailed-exitcode"],
    }

    print(
        f"tenant: {len(RAW)} CSV loads of {args.rows} rows, {len(MODELS)} models, "
        f"{test_count()} tests; server {make_url(urls['cp']).host}; bytecode cache {cache}; "
        f"median of {args.repeat} after one untimed first run"
    )
    run([fabric, "apply", str(repo), "--auto-approve"], fabric_env, tmp)
    if args.executor == "queue":
        queue_workers = [
            subprocess.Popen(
                [fabric, "worker", "--repo", str(repo), "--concurrency", "2", "--name", f"w{i}"],
                env=fabric_env,
                cwd=tmp,
                stdout=subprocess.DEVNULL,
                stderr=(tmp / f"worker{i}.log").open("w"),
            )
            for i in (1, 2)
        ]
        try:
            _timed(args, reads, fabric_run, fabric_env, dbt_env, plain, tmp, cache, urls)
        finally:
            for worker in queue_workers:
                worker.terminate()
            for worker in queue_workers:
                worker.wait()
        return
    _timed(args, reads, fabric_run, fabric_env, dbt_env, plain, tmp, cache, urls)


def _timed(args, reads, fabric_run, fabric_env, dbt_env, plain, tmp, cache, urls) -> None:
    """The first runs, then the timed ones (interleaved), then the read-only commands."""
    dbt = str(BIN / "dbt")
    if args.keep:
        keep = ("FABRIC_DATABASE_URL", "FABRIC_SECRET_KEYS", "JAFFLE_DWH_PASSWORD")
        print("to repeat by hand:\n  " + " ".join(f"{k}={fabric_env[k]}" for k in keep))
        print(f"  {' '.join(fabric_run)}")

    # first runs (untimed for the medians, shown): tables, partial-parse state, dlt folders
    first_seed, _ = run([dbt, "seed"], dbt_env, plain)
    first_build, _ = run([dbt, "build"], dbt_env, plain)
    first_fabric, _ = run(fabric_run, fabric_env, tmp)
    print(
        f"first runs: dbt seed + build {first_seed + first_build:.2f} s, "
        f"fabric run {first_fabric:.2f} s"
    )

    seeds, builds, seed_reported, build_reported, fabric_runs = [], [], [], [], []
    for _ in range(args.repeat):  # interleaved, so both sides see the same machine load
        seconds, out = run([dbt, "seed"], dbt_env, plain)
        seeds.append(seconds)
        seed_reported.append(dbt_reported(out))
        seconds, out = run([dbt, "build"], dbt_env, plain)
        builds.append(seconds)
        build_reported.append(dbt_reported(out))
        seconds, fabric_out = run(fabric_run, fabric_env, tmp)
        fabric_runs.append(seconds)
    read_times: dict[str, list[float]] = {}
    for label, cmd in reads.items():
        run(cmd, fabric_env, tmp)  # warm: the server's caches, the OS's file cache
        read_times[label] = [run(cmd, fabric_env, tmp)[0] for _ in range(args.repeat)]

    t_seed, t_build, t_fabric = median(seeds), median(builds), median(fabric_runs)
    totals = [s + b for s, b in zip(seeds, builds, strict=True)]
    t_dbt = median(totals)
    ratio = t_fabric / t_dbt

    def shown(values: Sequence[float]) -> str:
        return "(" + ", ".join(f"{v:.2f}" for v in values) + ")"

    print("\nplain dbt, fresh processes:")
    print(f"  dbt seed                {t_seed:6.2f} s   dbt reports {median(seed_reported):.2f} s")
    print(
        f"  dbt build               {t_build:6.2f} s   dbt reports {median(build_reported):.2f} s"
    )
    print(f"  dbt seed + dbt build    {t_dbt:6.2f} s   {shown(totals)}")
    print("fabric, fresh processes:")
    print(f"  fabric run              {t_fabric:6.2f} s   {shown(fabric_runs)}")
    verdict = (
        "stretch met"
        if ratio <= STRETCH_RUN
        else "ok"
        if ratio <= TARGET_RUN
        else "SLOWER than the target"
    )
    print(
        f"\nfabric run / (dbt seed + dbt build): {ratio:.2f}x   "
        f"(target <= {TARGET_RUN}x, stretch {STRETCH_RUN}x) -> {verdict}"
    )
    if args.executor == "queue":
        reported = median(seed_reported) + median(build_reported)
        versus = t_fabric / reported
        mark = "ok" if versus <= 2 else "SLOWER than the target"
        print(
            f"fabric run on warm queue workers / dbt's own reported execution time "
            f"({reported:.2f} s): {versus:.2f}x (target <= 2x) -> {mark}"
        )
    print(f"read-only commands, warm (target < {TARGET_READ} s each):")
    for label, values in read_times.items():
        t = median(values)
        mark = "ok" if t < TARGET_READ else "SLOWER than the target"
        print(f"  {label:<20} {t:6.2f} s   {shown(values)} -> {mark}")
    if args.verbose:
        print("\nlast fabric run's output:\n" + fabric_out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workers", type=int, help="fabric run --workers (default: its own)")
    parser.add_argument(
        "--no-bytecode-cache",
        action="store_true",
        help="no bytecode cache at all (every process compiles every module it imports)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the folder and databases")
    parser.add_argument(
        "--executor",
        choices=["local", "queue"],
        default="local",
        help="queue: two warm `fabric worker` processes run it (fabric run --executor queue)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="show a fabric run's output")
    args = parser.parse_args()
    server = os.environ.get("FABRIC_DATABASE_URL") or DEFAULT_SERVER
    tag = secrets.token_hex(3)
    names = {k: f"bench_small_{k}_{tag}" for k in ("cp", "dwh", "plain")}
    tmp = Path(tempfile.mkdtemp(prefix="fabric-small-run-"))
    urls = {}
    try:
        for key, name in names.items():
            urls[key] = create_database(server, name)
        bench(args, urls, tmp)
    except Failed as exc:
        raise SystemExit(str(exc)) from None
    finally:
        if args.keep:
            print(f"kept {tmp} and databases {', '.join(names.values())}")
        else:
            for name in names.values():
                drop_database(server, name)
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
