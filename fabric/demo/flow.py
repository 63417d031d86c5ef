"""`fabric demo`: sample sources, apply example-repo, run every tenant, show the results.  [shell]

Everything happens on the embedded PostgreSQL (or FABRIC_DATABASE_URL's server): the demo
creates a shop database and a warehouse there, a SQLite ERP file and file drops under
example-repo/data/, and serves initech's APIs from this process while the DAG runs. A second
demo run adds a few source rows: the apply shows no changes and incremental loads pick up only
the new rows.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import text

from fabric import api
from fabric.apply import ApplyOptions
from fabric.demo import DEMO_EXCLUDE, prepare_sources
from fabric.plan.plan import to_document
from fabric.render.plan_text import NO_CHANGES, render_plan_text, summary_line
from fabric.render.runs import rows_total, short, table

EXAMPLE_REPO = Path(__file__).resolve().parents[2] / "example-repo"
EXCLUDE = DEMO_EXCLUDE
DEMO_AUTHOR = "platform-team@fabric.example"
"""Who the demo applies as: example-repo's project admin (its fabric.yaml `admins:`), since
`fabric apply` checks the author's role and a demo has no commit of its own."""
ARCHIVE = ("globex", "data/globex/lake", "globex_archive")
"""globex's erp_archive: (tenant, its `lake` folder, dataset), shown after the run."""
SHOWCASE = {
    "acme": ("acme_marts", "customer_totals"),
    "globex": ("globex_marts", "customer_revenue"),
    "initech": ("initech_marts", "mrr_monthly"),
}

Echo = Callable[[str], None]


KINDS = ("tenant", "connection", "pipeline", "transformation", "dependency", "schedule")


def run_demo(
    echo: Echo, *, repo: Path = EXAMPLE_REPO, workers: int | None = None, full_plan: bool = False
) -> int:
    """Returns the exit code: 0 when every tenant's run succeeded.

    The plan is shown as a per-tenant summary (a first apply creates about 85 resources);
    `full_plan` prints every change instead.
    """
    started = time.monotonic()
    ws = api.workspace(repo)
    admin_url = _admin_url(ws)
    shown = _shown(repo)
    echo(f"fabric demo: repository {repo}")
    echo("1. Creating the sample sources (PostgreSQL shop, SQLite ERP, files, a local API) ...")
    with prepare_sources(repo, admin_url, api_port=None) as sources:
        # Connections read the sources' host, port and API URL from ${env:...} at run time.
        environ = {**ws.environ, **sources.locations}
        echo(f"   demo run #{sources.run}; API at {sources.locations.get('DEMO_API_URL')}")

        echo(f"\n2. fabric plan {shown}, then fabric apply --author {DEMO_AUTHOR}")
        result = api.plan(repo, environ=environ)
        as_admin = ApplyOptions(author=DEMO_AUTHOR)
        doc = to_document(result.plan)
        if full_plan:
            echo(_indent(render_plan_text(doc)))
        elif doc["changes"]:
            echo(_indent(plan_summary(doc)))
            echo(f"   {summary_line(doc)} (every change: fabric demo --full-plan)")
        else:
            echo(f"   {NO_CHANGES}")
        if result.plan.has_changes:
            outcome = api.apply(result.plan, repo=repo, environ=environ, options=as_admin)
            c = outcome.counts
            echo(
                f"   Apply complete! Resources: {c['create']} added, {c['update']} changed, "
                f"{c['delete']} destroyed."
            )
        if _store_secrets(ws, environ, sources.secrets):
            echo("   stored the demo's secrets (`fabric secrets set`); applying them:")
            again = api.plan(repo, environ=environ).plan
            api.apply(again, repo=repo, environ=environ, options=as_admin)
            changed = sum(1 for c in again.changes)
            echo(f"   {changed} connection(s) now carry their encrypted credentials")

        echo("\n3. fabric run --all-tenants " + " ".join(f"--exclude {e}" for e in EXCLUDE))
        run = api.run(repo, all_tenants=True, exclude=EXCLUDE, workers=workers, environ=environ)
        rows = [
            (
                str(node),
                status.value,
                f"{run.seconds(node):.1f}s",
                f"{rows_total(run.rows.get(node)):,}",
                short(run.errors.get(node), 50),
            )
            for node, status in sorted(run.nodes.items(), key=lambda i: str(i[0]))
        ]
        echo(_indent(table(("NODE", "STATUS", "TIME", "ROWS", "ERROR"), rows)))
        loaded = sum(rows_total(r) for a, r in run.rows.items() if a.kind.value == "pipeline")
        echo(f"   rows loaded this run: {loaded:,}")
        echo(_archive_summary(repo))

    echo("\n4. A few rows of the final models")
    for line in _showcase(ws, sources.warehouse.name):
        echo(line)
    took = time.monotonic() - started
    ok = run.ok
    echo(f"\nDemo {'finished' if ok else 'finished with failures'} in {took:.0f} s.")
    echo("\nTry next:")
    for command, why in try_next(shown):
        echo(f"  {command:<62} # {why}")
    return 0 if ok else 1


def try_next(repo: str) -> list[tuple[str, str]]:
    """Commands a newcomer can type after the demo (a test runs each of them)."""
    return [
        ("uv run fabric demo", "again: no changes to apply, only new rows load"),
        (f"uv run fabric runs {repo}", "the runs recorded so far"),
        (f"uv run fabric status --tenant acme --repo {repo}", "each node's last run, next fire"),
        (f"uv run fabric graph --tenant acme --repo {repo} --format mermaid", "acme's DAG"),
        (f"uv run fabric validate {repo}", "check the YAML after you edit it"),
        (f"uv run fabric plan {repo}", "what an apply would change now"),
        (f"uv run fabric server status --repo {repo}", "the embedded PostgreSQL"),
        (f"uv run fabric server stop --repo {repo}", "stop it (it keeps running until then)"),
    ]


def plan_summary(doc: dict) -> str:
    """One row per tenant and action: how many resources of each kind."""
    counts: dict[tuple[str, str], dict[str, int]] = {}
    for c in doc["changes"]:
        row = counts.setdefault((c["tenant"], c["action"]), dict.fromkeys(KINDS, 0))
        row[c["kind"]] += 1
    order = {"create": 0, "update": 1, "delete": 2}
    rows = [
        (tenant, action, *(row[k] or "" for k in KINDS), sum(row.values()))
        for (tenant, action), row in sorted(counts.items(), key=lambda i: (i[0][0], order[i[0][1]]))
    ]
    headers = ("TENANT", "ACTION", *(f"{k.upper()}S" for k in KINDS), "TOTAL")
    return table(headers, rows)


def _shown(repo: Path) -> str:
    """The repository as the user would type it: relative to the current folder if inside it."""
    repo = repo.resolve()
    cwd = Path.cwd().resolve()
    return repo.relative_to(cwd).as_posix() if repo.is_relative_to(cwd) else str(repo)


def _admin_url(ws: api.Workspace) -> str:
    """A superuser URL on the server that will hold the demo's databases."""
    if ws.settings.database_url:
        return ws.settings.database_url
    from fabric.state.embedded import ensure_server, fabric_home

    return ensure_server(fabric_home(ws.root, ws.settings)).tcp_url()


def _store_secrets(ws: api.Workspace, environ: dict[str, str], values: dict[str, str]) -> bool:
    """`fabric secrets set` for each demo secret whose value is not stored yet."""
    from fabric.state.secrets import set_secret, tenant_schema

    box = api.workspace(ws.root, environ).secret_box()
    changed = False
    with ws.engine("demo").begin() as conn:
        for name, value in sorted(values.items()):
            slug = name.split("_", 1)[0].lower()
            changed |= set_secret(conn, box, slug, tenant_schema(conn, slug), name, value)
    return changed


def _showcase(ws: api.Workspace, warehouse_db: str) -> list[str]:
    from sqlalchemy.engine import make_url

    from fabric.state.engine import make_engine

    url = make_url(_admin_url(ws)).set(database=warehouse_db)
    engine = make_engine(url, application_name="fabric demo")
    lines: list[str] = []
    try:
        with engine.connect() as conn:
            for tenant, (schema, model) in SHOWCASE.items():
                try:
                    result = conn.execute(text(f'SELECT * FROM "{schema}"."{model}" LIMIT 3'))
                    cols = list(result.keys())[:6]
                    data = [[r._mapping[c] for c in cols] for r in result]
                    count = conn.execute(
                        text(f'SELECT count(*) FROM "{schema}"."{model}"')
                    ).scalar_one()
                except Exception as exc:  # a model the run could not build
                    conn.rollback()
                    lines.append(
                        f"   {tenant}: {schema}.{model} unavailable ({short(str(exc), 60)})"
                    )
                    continue
                lines.append(f"   {tenant}: {schema}.{model} ({count:,} rows)")
                lines.append(_indent(table(cols, [[_cell(v) for v in row] for row in data]), 6))
    finally:
        engine.dispose()
    return lines


def _archive_summary(repo: Path) -> str:
    """What globex's erp_archive wrote to its filesystem destination: files and rows per table."""
    import pyarrow.parquet as pq

    tenant, folder, dataset = ARCHIVE
    root = repo / folder / dataset
    folders = sorted(p for p in root.glob("*") if p.is_dir() and not p.name.startswith("_dlt"))
    if not folders:
        return f"   {tenant} archive: no files under {folder}/{dataset}/"
    parts = []
    for folder_ in folders:
        files = sorted(folder_.glob("*.parquet"))
        rows = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
        size = sum(f.stat().st_size for f in files)
        parts.append(f"{folder_.name} {len(files)} file(s), {rows:,} rows, {size / 1024:,.0f} KiB")
    return f"   {tenant} archive in {folder}/{dataset}/ (parquet): " + "; ".join(parts)


def _cell(value: object) -> str:
    text_ = str(value)
    return text_ if len(text_) <= 24 else text_[:23] + "…"


def _indent(block: str, spaces: int = 3) -> str:
    return "\n".join(" " * spaces + line for line in block.splitlines())
