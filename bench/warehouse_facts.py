"""How long `plan` spends reading a managed warehouse: read_facts (one query) over 100 tenant
roles, 300 schemas and 300 tables, on the PostgreSQL named by FABRIC_BENCH_PG (libpq conninfo;
default: the system server at 127.0.0.1:5432, user postgres, trust auth). Creates and drops its
own database and roles.

    uv run python bench/warehouse_facts.py
"""

from __future__ import annotations

import os
import secrets
import time

import psycopg

from fabric.config.specs import WarehouseSpec
from fabric.state.warehouse import read_facts

SERVER = os.environ.get("FABRIC_BENCH_PG", "host=127.0.0.1 port=5432 user=postgres")
TENANTS = 100
READS = 20


def main() -> None:
    db = f"grants_bench_{secrets.token_hex(3)}"
    prefix = f"gb{secrets.token_hex(2)}_"
    with psycopg.connect(f"{SERVER} dbname=postgres", autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{db}"')
    try:
        with psycopg.connect(f"{SERVER} dbname={db}", autocommit=True) as c:
            for i in range(TENANTS):
                role = f"{prefix}t{i}_loader"
                c.execute(f'CREATE ROLE "{role}" LOGIN')
                c.execute(f"COMMENT ON ROLE \"{role}\" IS 'fabric:{db}:t{i}'")
                for s in ("raw", "raw_staging", "marts"):
                    c.execute(f'CREATE SCHEMA "t{i}_{s}" AUTHORIZATION "{role}"')
                    c.execute(f'CREATE TABLE "t{i}_{s}".x (id int)')
            spec = WarehouseSpec.model_validate(
                {
                    "host": "127.0.0.1",
                    "database": db,
                    "admin": {"username": "postgres", "password": "${env:X}"},
                    "manage_roles": True,
                    "role_prefix": prefix,
                }
            )
            read_facts(c, spec, [])
            started = time.perf_counter()
            for _ in range(READS):
                facts = read_facts(c, spec, [])
            ms = (time.perf_counter() - started) / READS * 1000
            print(
                f"read_facts: {len(facts.roles)} roles, {len(facts.schemas)} schemas: "
                f"{ms:.1f} ms per read (one query)"
            )
    finally:
        with psycopg.connect(f"{SERVER} dbname=postgres", autocommit=True) as c:
            c.execute(f'DROP DATABASE "{db}"')
            for (role,) in c.execute(
                "SELECT rolname FROM pg_roles WHERE starts_with(rolname, %s)", (prefix,)
            ).fetchall():
                c.execute(f'DROP ROLE "{role}"')


if __name__ == "__main__":
    main()
