"""The plan's reads grow with tenants, never with resources (no N+1)."""

import textwrap

from cryptography.fernet import Fernet
from sqlalchemy import event

from fabric import api
from fabric.apply import ApplyOptions
from fabric.state.engine import make_engine


def write_repo(root, tenants: int, pipelines: int):
    root.mkdir(parents=True)
    (root / "fabric.yaml").write_text("format_version: 1\nownership: {enforce: false}\n")
    for t in range(tenants):
        folder = root / "tenants" / f"t{t}"
        folder.mkdir(parents=True)
        body = textwrap.dedent(
            f"""
            tenant: {{display_name: T{t}, warehouse: dwh}}
            connections:
              dwh: {{type: postgres, direction: destination, host: h, database: d{t}}}
              src: {{type: postgres, direction: source, host: h, database: s{t}}}
            pipelines:
            """
        )
        for p in range(pipelines):
            body += f"  p{p}: {{source: src, dataset: t{t}_raw, mode: single_table, table: x{p}}}\n"
        (folder / "tenant.yaml").write_text(body)


def statements_of_a_noop_plan(root, env) -> int:
    engine = make_engine(env["FABRIC_DATABASE_URL"])
    plan = api.plan(root, environ=env, engine=engine).plan
    api.apply(plan, repo=root, environ=env, options=ApplyOptions(), engine=engine)
    count = 0

    def count_one(*_args, **_kwargs):
        nonlocal count
        count += 1

    event.listen(engine, "before_cursor_execute", count_one)
    assert not api.plan(root, environ=env, engine=engine).plan.changes
    engine.dispose()
    return count


def test_noop_plan_statements_do_not_grow_with_resources(make_database, tmp_path):
    key = Fernet.generate_key().decode()
    counts = []
    for pipelines in (2, 40):
        root = tmp_path / f"r{pipelines}"
        write_repo(root, tenants=3, pipelines=pipelines)
        env = {"FABRIC_DATABASE_URL": make_database(), "FABRIC_SECRET_KEYS": key}
        counts.append(statements_of_a_noop_plan(root, env))
    assert counts[0] == counts[1]
