"""Provisional tenant schemas: their lock cost, batch sizes, and which orphans are dropped."""

from __future__ import annotations

import secrets

import pytest
from sqlalchemy import text

from fabric.errors import ApplyTooLargeError
from fabric.state import migrate, provision
from fabric.state.engine import make_engine
from fabric.state.locks import LockNamespace

HELD = """
SELECT count(DISTINCT (locktype, database, relation, classid, objid, objsubid,
                       transactionid::text, virtualxid))
FROM pg_locks WHERE pid = pg_backend_pid()
"""


def held(conn) -> int:
    return conn.execute(text(HELD)).scalar_one()


def fill(conn, schemas):
    """One row in every table of each schema, as an apply's first writes would."""
    for s in schemas:
        for table in ("connections", "pipelines", "transformations", "dependencies", "schedules"):
            conn.execute(
                text(
                    f'INSERT INTO "{s}".{table} (name, spec, fingerprint, content_md5) '
                    "VALUES ('n', '{}', 'f', 'c')"
                )
            )
        conn.execute(
            text(
                f'INSERT INTO "{s}".secrets (name, ciphertext, fingerprint) '
                "VALUES ('n', 'c', 'f')"
            )
        )


def test_a_new_tenant_schema_takes_no_more_locks_than_the_batch_size_assumes(stock_database):
    engine = make_engine(stock_database)
    with engine.begin() as conn:
        migrate.upgrade_shared(conn)
    with engine.begin() as conn:
        base = held(conn)
        provision.create_schemas(conn, ["tenant_1", "tenant_2"], token=7)
        fill(conn, ["tenant_1", "tenant_2"])
        two = held(conn) - base
        provision.create_schemas(conn, ["tenant_3"], token=7)
        fill(conn, ["tenant_3"])
        per_tenant = held(conn) - base - two  # measured: 85
    engine.dispose()
    assert 20 < per_tenant <= provision.LOCKS_PER_TENANT, per_tenant
    assert two <= 2 * provision.LOCKS_PER_TENANT


def test_a_batch_uses_a_quarter_of_a_stock_lock_table_at_most():
    stock = provision.LockBudget(64, 100, 0)
    assert stock.batch_tenants * provision.LOCKS_PER_TENANT <= stock.capacity // 4
    assert stock.batch_tenants >= 8  # 8 with the dbt-file and snapshot tables
    assert provision.LockBudget(8, 5, 0).batch_tenants == 1  # a tiny server still progresses
    assert provision.LockBudget(1024, 100, 0).batch_tenants == provision.MAX_BATCH


def test_the_budget_is_read_from_the_server(stock_database):
    engine = make_engine(stock_database)
    with engine.connect() as conn:
        budget = provision.lock_budget(conn)
    engine.dispose()
    assert budget.max_locks_per_transaction == 64  # the stock server is really stock
    assert budget.capacity >= 64 * budget.max_connections


def test_orphans_of_a_live_apply_are_kept_and_those_of_a_dead_one_dropped(stock_database):
    engine = make_engine(stock_database)
    with engine.begin() as conn:
        migrate.upgrade_shared(conn)
        ids = provision.reserve_ids(conn, 3)
        schemas = [f"tenant_{i}" for i in ids]
        provision.create_schemas(conn, schemas, token=41)
        # Registered: a tenant row names it, so it is never an orphan, whatever its comment.
        conn.execute(
            text(
                "INSERT INTO fabric.tenants (id, slug, spec, fingerprint, content_md5, schema_name)"
                " VALUES (:id, 'kept', '{}', 'x', 'x', :s)"
            ),
            {"id": ids[0], "s": schemas[0]},
        )
        # Not fabric's: no provisioning comment, so never dropped either.
        conn.execute(text("CREATE SCHEMA tenant_999999"))
    live = engine.connect()
    live.begin()
    provision.hold_token(live, 41)  # the apply that made them is still running
    with engine.connect() as conn:
        assert provision.unregistered_schemas(conn) == {schemas[1]: 41, schemas[2]: 41}
        assert provision.drop_orphans(conn, batch=1) == []
    live.rollback()  # ... and now it is gone
    live.close()
    with engine.connect() as conn:
        assert provision.drop_orphans(conn, batch=1) == schemas[1:]
        left = conn.execute(
            text("SELECT nspname FROM pg_namespace WHERE nspname LIKE 'tenant%' ORDER BY 1")
        ).scalars()
        assert sorted(left) == sorted([schemas[0], "tenant_999999"])
        free = conn.execute(
            text("SELECT pg_try_advisory_xact_lock(:ns, 41)"), {"ns": LockNamespace.PROVISION}
        ).scalar_one()
        assert free  # drop_orphans released the token it took
    engine.dispose()


def test_reserved_ids_are_never_handed_out_again(stock_database):
    engine = make_engine(stock_database)
    with engine.begin() as conn:
        migrate.upgrade_shared(conn)
    with engine.connect() as conn:
        first = provision.reserve_ids(conn, 2)
        conn.rollback()
        second = provision.reserve_ids(conn, 2)
        conn.commit()
    engine.dispose()
    assert not set(first) & set(second)


def test_a_write_into_an_existing_tenant_table_takes_no_more_locks_than_assumed(stock_database):
    engine = make_engine(stock_database)
    schemas = ["tenant_1", "tenant_2", "tenant_3"]
    with engine.begin() as conn:
        migrate.upgrade_shared(conn)
        provision.create_schemas(conn, schemas, token=7)
        fill(conn, schemas)
    big = secrets.token_hex(10_000)  # a spec large enough to be TOASTed, out of line
    with engine.begin() as conn:
        base = held(conn)
        for s in schemas:
            conn.execute(
                text(
                    f'UPDATE "{s}".pipelines t SET spec = '
                    "jsonb_build_object('big', CAST(:big AS text)), "
                    "updated_at = now() WHERE t.name = 'n' AND t.deleted_at IS NULL"
                ),
                {"big": big},
            )
            conn.execute(
                text(
                    f'INSERT INTO "{s}".schedules (name, spec, fingerprint, content_md5) '
                    "VALUES ('m', jsonb_build_object('big', CAST(:big AS text)), 'f', 'c')"
                ),
                {"big": big},
            )
        per_table = (held(conn) - base) / (2 * len(schemas))  # measured: 4.7
    engine.dispose()
    assert 2 <= per_table <= provision.LOCKS_PER_TABLE_WRITE, per_table


def test_a_switch_too_large_for_the_lock_table_is_refused_naming_how_many_tenants_fit():
    stock = provision.LockBudget(64, 100, 0)
    provision.check_switch(1000, 0, 0, stock)  # 1,000 new tenants: one apply lock each
    provision.check_switch(400, 400, 400, stock)  # one table in each of 400 existing tenants
    with pytest.raises(ApplyTooLargeError) as err:
        provision.check_switch(1000, 1000, 1000, stock)
    e = err.value
    assert (e.tenants, e.tables) == (1000, 1000)
    assert 400 <= e.fits < 1000
    assert f"about {e.fits} tenants" in str(e) and "--tenant" in str(e)
    assert "max_locks_per_transaction=64" in str(e) and "Nothing was changed" in str(e)
    # Two tables a tenant halve what fits.
    with pytest.raises(ApplyTooLargeError) as two:
        provision.check_switch(1000, 1000, 2000, stock)
    assert two.value.fits < e.fits


def test_every_batch_runs_once_and_the_first_failure_is_raised(stock_database):
    engine = make_engine(stock_database)
    seen: list[tuple[int, tuple[str, ...]]] = []

    def one_batch(conn, batch):
        seen.append((conn.execute(text("SELECT pg_backend_pid()")).scalar_one(), tuple(batch)))

    work = provision.batches([f"t{i}" for i in range(40)], 4)
    provision.run_batches(engine, work, one_batch, parallel=2)
    assert sorted(b for _, b in seen) == sorted(tuple(b) for b in work)

    def failing(conn, batch):
        if batch[0] == "t8":
            raise RuntimeError("batch t8 failed")

    with pytest.raises(RuntimeError, match="batch t8 failed"):
        provision.run_batches(engine, work, failing, parallel=2)
    engine.dispose()
