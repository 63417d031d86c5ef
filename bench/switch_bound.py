"""Where changes to existing tenants stop fitting one atomic switch on a stock PostgreSQL.

Applies N small tenants, then changes one pipeline in every one of them and applies that with
fabric's up-front check (fabric/state/provision.py check_switch) switched off, to see whether
the server itself can lock that many tables in one transaction; then says what the check
would have allowed.

    uv run python bench/switch_bound.py [--tenants 600 1200 1800]

Runs against a stock embedded server (bench/.out/pg-stock: max_locks_per_transaction 64) unless
FABRIC_DATABASE_URL is set.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from cryptography.fernet import Fernet

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_server import server_url  # noqa: E402

from fabric import api  # noqa: E402
from fabric.apply import ApplyOptions  # noqa: E402
from fabric.errors import ApplyTooLargeError, StateError  # noqa: E402
from fabric.state import provision  # noqa: E402
from fabric.state.engine import create_database, drop_database, make_engine  # noqa: E402


def write_repo(root: Path, tenants: int, table: str) -> None:
    (root / "fabric.yaml").write_text("format_version: 1\nname: bound\n")
    for t in range(tenants):
        slug = f"t{t:04d}"
        folder = root / "tenants" / slug
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "tenant.yaml").write_text(
            "tenant: {display_name: T, warehouse: dwh}\n"
            "connections:\n"
            f"  dwh: {{type: postgres, direction: destination, host: h, database: d{t}}}\n"
            "  src: {type: postgres, direction: source, host: h, database: s}\n"
            "pipelines:\n"
            f"  p: {{source: src, dataset: {slug}_raw, mode: single_table, table: {table}}}\n"
        )


def trial(base: str, tenants: int) -> str:
    db = f"fabric_bound_{os.getpid()}_{tenants}"
    url = create_database(base, db)
    env = {"FABRIC_DATABASE_URL": url, "FABRIC_SECRET_KEYS": Fernet.generate_key().decode()}
    engine = make_engine(url)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            write_repo(root, tenants, "a")
            api.apply(
                api.plan(root, environ=env).plan,
                repo=root,
                environ=env,
                options=ApplyOptions(),
                engine=engine,
            )
            write_repo(root, tenants, "b")
            plan = api.plan(root, environ=env).plan
            with engine.connect() as conn:
                budget = provision.lock_budget(conn)
            try:
                provision.check_switch(tenants, tenants, tenants, budget)
                allowed = "allowed"
            except ApplyTooLargeError as exc:
                allowed = f"refused up front (fits about {exc.fits})"
            original = provision.check_switch
            provision.check_switch = lambda *a, **k: None  # what the server does without it
            start = time.perf_counter()
            try:
                api.apply(plan, repo=root, environ=env, options=ApplyOptions(), engine=engine)
                server = f"server: switch succeeded in {time.perf_counter() - start:.1f} s"
            except StateError as exc:
                server = f"server: {str(exc).split('Server said: ')[-1][:40]}"
            finally:
                provision.check_switch = original
            return f"{tenants:5d} existing tenants, one table each: check {allowed}; {server}"
    finally:
        engine.dispose()
        drop_database(base, db)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tenants", type=int, nargs="+", default=[600, 1200, 1800])
    args = parser.parse_args()
    base = server_url(stock=True)
    for n in args.tenants:
        print(trial(base, n), flush=True)


if __name__ == "__main__":
    main()
