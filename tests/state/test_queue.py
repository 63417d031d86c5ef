"""Queue runs on a real control plane, without workers: the transactions that advance them.

Each test plays a worker's part by calling what a worker calls (claim, record, lose_job), so
the rules are pinned where they are decided: tokens fence late writes, a lost node is retried
only when its policy allows, ready transformations go as one dbt batch at a time, and a tenant
with many ready nodes does not push another tenant's first node behind them.
"""

from __future__ import annotations

import pytest
from sqlalchemy import text

from fabric.addresses import Address
from fabric.domain.runs import FailureKind, NodeResult
from fabric.state import queue, runs
from fabric.state.engine import make_engine
from fabric.state.locks import LockNamespace
from fabric.state.migrate import upgrade_all
from fabric.state.snapshot import TenantRow


def a(name: str, kind: str = "pipeline", tenant: str = "acme") -> Address:
    return Address.parse(f"{tenant}.{kind}.{name}")


@pytest.fixture
def db(make_database):
    engine = make_engine(make_database())
    with engine.begin() as conn:
        upgrade_all(conn)
        tenants = {}
        for i, slug in enumerate(["acme", "globex"], start=1):
            schema = f"tenant_{i}"
            from fabric.state.migrate import create_tenant_schemas

            create_tenant_schemas(conn, [schema])
            conn.execute(
                text(
                    "INSERT INTO fabric.tenants (id, slug, schema_name, spec, fingerprint, "
                    "content_md5) "
                    "VALUES (:id, :slug, :schema, '{}', '', '')"
                ),
                {"id": i, "slug": slug, "schema": schema},
            )
            tenants[slug] = TenantRow(id=i, slug=slug, schema_name=schema)
    yield engine, tenants
    engine.dispose()


def dispatch(engine, tenant, plan, if_active="refuse", queue_name=queue.QUEUE):
    with engine.connect() as conn:
        opened = runs.open_run(
            conn,
            tenant,
            runs.QueueStart(plan, queue_name),
            trigger="manual",
            selection=["*"],
            who="test",
            if_active=if_active,
        )
        conn.commit()
    return opened.id, opened.status


def jobs(engine):
    with engine.connect() as conn:
        return conn.execute(
            text(
                "SELECT id, args, priority, lock, status FROM procrastinate_jobs "
                "ORDER BY priority DESC, id"  # procrastinate's claim order
            )
        ).all()


def take(engine):
    """The next job, claimed as a procrastinate worker claims it (its own SQL functions)."""
    with engine.begin() as conn:
        worker = conn.execute(text("SELECT * FROM procrastinate_register_worker_v1()")).scalar()
        return conn.execute(
            text("SELECT id, args, lock FROM procrastinate_fetch_job_v2(NULL, :w)"), {"w": worker}
        ).one()


def finish(engine, job) -> None:
    """Mark the job done, as its worker does when the task returns."""
    with engine.begin() as conn:
        conn.execute(
            text("SELECT procrastinate_finish_job_v1(:id, 'succeeded', false)"), {"id": job.id}
        )


def state(engine, tenant, run_id):
    with engine.connect() as conn:
        return queue.run_state(conn, tenant, run_id)


def node(engine, tenant, run_id, address):
    with engine.connect() as conn:
        return conn.execute(
            text(f"SELECT * FROM {tenant.schema_name}.node_runs WHERE run_id = :r AND node = :n"),
            {"r": run_id, "n": str(address)},
        ).one()


def test_a_stale_token_changes_nothing(db):
    engine, tenants = db
    acme = tenants["acme"]
    run_id, _ = dispatch(engine, acme, {a("x"): queue.NodePlan(retries=1)})
    job = take(engine)
    with engine.connect() as conn:
        (first,) = queue.claim(conn, acme, run_id, [str(a("x"))], job.id, "w1")
        assert queue.lose_job(conn, acme, run_id, job.id) == [str(a("x"))]
    retry = take(engine)
    assert retry.id != job.id
    with engine.connect() as conn:
        (second,) = queue.claim(conn, acme, run_id, [str(a("x"))], retry.id, "w2")
        late = NodeResult.succeeded(a("x"), log_tail="late")
        assert queue.record(conn, acme, run_id, late, first.token) is False
        assert queue.record(conn, acme, run_id, NodeResult.succeeded(a("x")), second.token)
        assert queue.record(conn, acme, run_id, late, second.token) is False  # used up
    row = node(engine, acme, run_id, a("x"))
    assert (row.status, row.attempts, row.worker, row.log_tail) == ("success", 2, "w2", "")
    assert state(engine, acme, run_id) == "success"


def test_a_lost_node_without_retries_fails_and_skips_its_downstream(db):
    engine, tenants = db
    acme = tenants["acme"]
    plan = {a("x"): queue.NodePlan(), a("y"): queue.NodePlan(upstream=(str(a("x")),))}
    run_id, _ = dispatch(engine, acme, plan)
    job = take(engine)
    with engine.connect() as conn:
        queue.claim(conn, acme, run_id, [str(a("x"))], job.id, "w1")
        queue.lose_job(conn, acme, run_id, job.id)
    x, y = node(engine, acme, run_id, a("x")), node(engine, acme, run_id, a("y"))
    assert (x.status, x.failure) == ("failed", FailureKind.WORKER_LOST.value)
    assert (y.status, y.failure) == ("skipped", FailureKind.UPSTREAM_FAILED.value)
    assert [j.status for j in jobs(engine)] == ["failed"]


def test_a_transient_failure_is_deferred_again_after_its_backoff(db):
    engine, tenants = db
    acme = tenants["acme"]
    run_id, _ = dispatch(engine, acme, {a("x"): queue.NodePlan(retries=1, backoff_seconds=60)})
    (job,) = jobs(engine)
    with engine.connect() as conn:
        (claim,) = queue.claim(conn, acme, run_id, [str(a("x"))], job.id, "w1")
        hiccup = NodeResult.failed(a("x"), "connection reset", FailureKind.TRANSIENT)
        assert queue.record(conn, acme, run_id, hiccup, claim.token)
        later = conn.execute(
            text(
                "SELECT scheduled_at - now() > interval '50 seconds' FROM procrastinate_jobs "
                "WHERE id <> :id"
            ),
            {"id": job.id},
        ).scalar_one()
    assert later
    row = node(engine, acme, run_id, a("x"))
    assert (row.status, row.attempts, row.error) == ("pending", 1, "connection reset")


def test_ready_transformations_go_as_one_dbt_batch_at_a_time(db):
    engine, tenants = db
    acme = tenants["acme"]
    t = [a(n, "transformation") for n in ("m1", "m2", "m3")]
    plan = {
        t[0]: queue.NodePlan(),
        t[1]: queue.NodePlan(),
        t[2]: queue.NodePlan(upstream=(str(t[0]),)),
    }
    run_id, _ = dispatch(engine, acme, plan)
    job = take(engine)
    assert job.args["nodes"] == [str(t[0]), str(t[1])]
    assert job.lock == f"dbt:{acme.schema_name}"
    with engine.connect() as conn:
        m1, m2 = queue.claim(conn, acme, run_id, job.args["nodes"], job.id, "w1")
        queue.record(conn, acme, run_id, NodeResult.succeeded(m1.node), m1.token)
        # m3 is ready, but m2's dbt invocation is still going: m3 waits for the next batch
        assert [j.status for j in jobs(engine)] == ["doing"]
        queue.record(conn, acme, run_id, NodeResult.succeeded(m2.node), m2.token)
    finish(engine, job)
    assert take(engine).args["nodes"] == [str(t[2])]


def test_a_tenant_with_many_ready_nodes_does_not_push_another_tenants_node_behind(db):
    engine, tenants = db
    dispatch(engine, tenants["acme"], {a(f"p{i}"): queue.NodePlan() for i in range(5)})
    dispatch(engine, tenants["globex"], {a("g", tenant="globex"): queue.NodePlan()})
    assert [take(engine).args["tenant"] for _ in range(3)] == ["acme", "globex", "acme"]


def test_a_run_sharing_a_node_with_an_active_run_is_refused_or_queued(db):
    engine, tenants = db
    acme = tenants["acme"]
    first, _ = dispatch(engine, acme, {a("x"): queue.NodePlan(), a("y"): queue.NodePlan()})
    with pytest.raises(queue.RunConflictError, match=f"Run {first} of acme is active"):
        dispatch(engine, acme, {a("y"): queue.NodePlan()})
    _, status = dispatch(engine, acme, {a("z"): queue.NodePlan()})
    assert status == "running"
    waiting, status = dispatch(engine, acme, {a("y"): queue.NodePlan()}, if_active="wait")
    assert status == "queued"
    assert len(jobs(engine)) == 3  # x, y, z: nothing deferred for the queued run
    with engine.connect() as conn:
        queue.cancel_run(conn, acme, first)
    assert state(engine, acme, waiting) == "running"
    todo = sorted((j.args["run_id"], j.args["nodes"]) for j in jobs(engine) if j.status == "todo")
    assert todo == [(2, [str(a("z"))]), (waiting, [str(a("y"))])]  # run 1's jobs: cancelled


def test_a_local_run_blocks_a_queue_run_while_its_runner_lives_and_not_after(db):
    engine, tenants = db
    acme = tenants["acme"]
    runner = engine.connect()  # a local runner: its session holds the run's lock
    local = runs.create_run(
        runner, acme, trigger="manual", selection=["x"], who="local", nodes=[a("x")]
    )
    with pytest.raises(queue.RunConflictError, match=f"Run {local} of acme is active"):
        dispatch(engine, acme, {a("x"): queue.NodePlan()})
    runner.close()  # the runner dies: its lock goes with its session
    engine.dispose()  # (the pool would keep the session open)
    run_id, status = dispatch(engine, acme, {a("x"): queue.NodePlan()})
    assert status == "running" and run_id != local
    assert state(engine, acme, local) == "failed"


def test_the_same_run_lock_held_in_another_control_plane_keeps_no_run_alive(db, make_database):
    """Advisory locks are per database: a second control plane on the server (same schema
    names, same run ids) holding its run 1's lock says nothing about this one's run 1."""
    engine, tenants = db
    acme = tenants["acme"]
    runner = engine.connect()
    local = runs.create_run(
        runner, acme, trigger="manual", selection=["x"], who="local", nodes=[a("x")]
    )
    runner.close()  # this runner died
    engine.dispose()
    other = make_engine(make_database())
    with other.connect() as conn:  # another control plane's live runner, same key
        key = runs.run_lock_key(acme.schema_name, local)
        conn.execute(
            text("SELECT pg_advisory_lock(:ns, :key)"), {"ns": LockNamespace.RUN, "key": key}
        )
        run_id, status = dispatch(engine, acme, {a("x"): queue.NodePlan()})
        assert status == "running" and run_id != local
        assert state(engine, acme, local) == "failed"
    other.dispose()
