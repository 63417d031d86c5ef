"""The demo's sample sources, against a real PostgreSQL and against example-repo itself.

The most important check is `test_models_build_and_pass_their_tests_on_the_sample_data`: every
source is loaded into a scratch warehouse the way dlt would (the pipelines' tables, filters and
column types), then every example-repo model the demo runs is built from its SQL, in DAG order,
and its declared tests (not_null, unique, accepted_values, relationships) are run. A column a
model reads that a source lacks, or has with the wrong type, fails there with PostgreSQL's
own message.
"""

from __future__ import annotations

import json
import re
import secrets
import socket
import sqlite3
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from sqlalchemy import create_engine, make_url, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

import fabric
from fabric.addresses import Address, Kind
from fabric.config.loader import load_repository
from fabric.demo import DEMO_EXCLUDE, SECRET_NAMES, prepare_sources
from fabric.demo import sources as src
from fabric.demo.api_server import initech_api_data, serve_demo_api
from fabric.domain.state import DesiredState, TenantState
from fabric.graph.dag import Dag
from fabric.state.engine import drop_database

EXAMPLE = Path(fabric.__file__).resolve().parents[1] / "example-repo"
NOW = datetime(2026, 3, 16, 9, 30, tzinfo=UTC)
TOKENS = {"billing": "test-billing-token", "support": "test-support-key"}
SECRET_VALUES = {
    "INITECH_BILLING_TOKEN": TOKENS["billing"],
    "INITECH_SUPPORT_API_KEY": TOKENS["support"],
}
UNAVAILABLE = {"mysql", "mssql"}
"""Source connection types the demo cannot provide on a machine with only Python and uv."""


# -- fixtures and helpers -----------------------------------------------------------------------


@dataclass(frozen=True)
class Pg:
    admin: str
    shop: str
    dwh: str
    prefix: str

    def url(self, database: str) -> str:
        return make_url(self.admin).set(database=database).render_as_string(hide_password=False)

    @property
    def roles(self) -> list[str]:
        return [self.prefix + r for r in (src.SHOP_READER, *src.WAREHOUSE_LOADERS)]


@pytest.fixture
def pg(pg_server_url: str) -> Iterator[Pg]:
    """Unique database and role names on the test server; all dropped afterwards."""
    token = secrets.token_hex(4)
    names = Pg(pg_server_url, f"demo_shop_{token}", f"demo_dwh_{token}", f"t{token}_")
    yield names
    src.drop_roles(pg_server_url, names.roles, [names.shop, names.dwh])
    for database in (names.shop, names.dwh):
        drop_database(pg_server_url, database)


@pytest.fixture(scope="module")
def example() -> DesiredState:
    result = load_repository(EXAMPLE)
    assert result.ok, [str(d) for d in result.diagnostics]
    assert result.desired is not None
    return result.desired


def sql(url: str, statement: str, **params: Any) -> list[Any]:
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.begin() as conn:
            result = conn.execute(text(statement), params)
            return list(result) if result.returns_rows else []
    finally:
        engine.dispose()


def get(url: str, headers: Mapping[str, str] | None = None) -> tuple[int, Any, Mapping[str, str]]:
    request = urllib.request.Request(url, headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.load(response), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc), dict(exc.headers)


def tenant_dag(tenant: TenantState) -> Dag:
    nodes = {
        a.address: a.spec for a in (*tenant.pipelines.values(), *tenant.transformations.values())
    }
    edges = [(d.upstream, d.downstream) for d in tenant.dependencies]
    return Dag.build(nodes, edges, {a: spec.tags for a, spec in nodes.items()})


def excluded(tenant: TenantState) -> frozenset[Address]:
    return tenant_dag(tenant).select(DEMO_EXCLUDE, strict=False)


# -- acme: the PostgreSQL shop and the warehouse ------------------------------------------------


def test_postgres_source_is_created_once_then_grows_with_newer_cursors(pg: Pg) -> None:
    reader = pg.prefix + "acme_reader"
    info = src.create_postgres_source(pg.admin, pg.shop, role_prefix=pg.prefix)
    assert info.created
    assert set(info.passwords) == {reader}
    assert info.passwords[reader] not in repr(info)
    assert "@" not in (info.server or "")  # no credentials in the server address
    assert info.rows["orders"] >= 3000 and info.rows["customers"] >= 1000
    assert info.rows["order_items"] > info.rows["orders"] and info.rows["products"] >= 100

    shop = pg.url(pg.shop)
    (max_order, max_customer, max_item), = sql(
        shop,
        "SELECT (SELECT max(updated_at) FROM orders), (SELECT max(updated_at) FROM customers), "
        "(SELECT max(order_item_id) FROM order_items)",
    )  # fmt: skip
    again = src.create_postgres_source(pg.admin, pg.shop, role_prefix=pg.prefix)
    assert not again.created and again.rows == info.rows and not again.added
    assert again.passwords == info.passwords

    grown = src.create_postgres_source(pg.admin, pg.shop, add_rows=20, role_prefix=pg.prefix)
    assert grown.rows["orders"] == info.rows["orders"] + 20
    assert grown.rows["customers"] == info.rows["customers"] + 2
    (orders, customers, items, orphans), = sql(
        shop,
        "SELECT (SELECT count(*) FROM orders WHERE updated_at > :o), "
        "(SELECT count(*) FROM customers WHERE updated_at > :c), "
        "(SELECT count(*) FROM order_items WHERE order_item_id > :i), "
        "(SELECT count(*) FROM orders o WHERE NOT EXISTS "
        " (SELECT 1 FROM order_items i WHERE i.order_id = o.order_id))",
        o=max_order, c=max_customer, i=max_item,
    )  # fmt: skip
    # exactly the changed rows are past the old cursors, so an incremental load takes only them
    assert orders == grown.added["orders"] > 20  # new orders, and open ones that moved on
    assert customers == grown.added["customers"]
    assert (
        items == grown.added["order_items"] == grown.rows["order_items"] - info.rows["order_items"]
    )
    assert orphans == 0

    # the reader may read the four tables (the generated email_domain too), and nothing more
    reader_url = grown.url(reader)
    [(count, domains)] = sql(
        reader_url, "SELECT count(*), count(DISTINCT email_domain) FROM customers"
    )
    assert count == grown.rows["customers"] and domains > 3
    with pytest.raises(DBAPIError, match="permission denied"):
        sql(reader_url, "DELETE FROM orders")


def test_warehouse_loaders_can_create_schemas_that_others_cannot_read(pg: Pg) -> None:
    dwh = src.create_warehouse(pg.admin, pg.dwh, role_prefix=pg.prefix)
    acme, globex = pg.prefix + "acme_loader", pg.prefix + "globex_loader"
    assert set(dwh.passwords) == {pg.prefix + r for r in src.WAREHOUSE_LOADERS}
    again = src.create_warehouse(pg.admin, pg.dwh, role_prefix=pg.prefix)
    assert again.passwords == dwh.passwords  # stable: a re-run changes no secret
    sql(dwh.url(acme), "CREATE SCHEMA acme_raw; CREATE TABLE acme_raw.t AS SELECT 1 AS x")
    sql(dwh.url(globex), "CREATE SCHEMA globex_raw")
    with pytest.raises(DBAPIError, match="permission denied"):
        sql(dwh.url(globex), "SELECT * FROM acme_raw.t")
    other = src.create_warehouse(pg.admin, pg.dwh, role_prefix=pg.prefix, secret="another")
    assert other.passwords != dwh.passwords  # derived from the secret, not fixed in the code


# -- globex: the SQLite ERP export and the file drops ------------------------------------------


def test_sqlite_source_is_created_once_then_grows(tmp_path: Path) -> None:
    path = tmp_path / "data" / "erp.sqlite"
    info = src.create_sqlite_source(path, now=NOW)
    assert info.created and set(info.rows) == set(src.ERP_TABLES)
    assert info.rows["invoices"] >= 1500 and info.rows["invoice_lines"] > info.rows["invoices"]
    assert [p.name for p in path.parent.iterdir()] == ["erp.sqlite"]  # no temporary file left
    db = sqlite3.connect(path)
    for table in src.ERP_TABLES:
        columns = [r[1] for r in db.execute(f"PRAGMA table_info({table})")]
        assert columns == list(src.ERP_COLUMNS[table])
    [(last_id, last_change)] = db.execute("SELECT max(invoice_id), max(updated_at) FROM invoices")
    db.close()

    again = src.create_sqlite_source(path, now=NOW)
    assert not again.created and again.rows == info.rows and not again.added
    grown = src.create_sqlite_source(path, add_rows=10, now=NOW + timedelta(hours=2))
    assert grown.rows["invoices"] == info.rows["invoices"] + 10
    db = sqlite3.connect(path)
    [(new, changed, statuses)] = db.execute(
        "SELECT sum(invoice_id > ?), sum(updated_at > ?), group_concat(DISTINCT status) "
        "FROM invoices WHERE invoice_id > ?",
        (last_id, last_change, last_id),
    )
    [(paid_now,)] = db.execute(
        "SELECT count(*) FROM invoices WHERE invoice_id <= ? AND updated_at > ?",
        (last_id, last_change),
    )
    db.close()
    assert new == changed == 10 and statuses == "issued"
    assert grown.added["invoices"] == 10 + paid_now and paid_now > 0


def test_file_drops_match_the_connections_and_later_drops_only_add_files(
    tmp_path: Path, example: DesiredState
) -> None:
    import pyarrow.parquet as pq

    root = tmp_path / "drops"
    info = src.create_file_drops(root, now=NOW)
    assert info.created and info.rows["partner_orders"] >= 200
    assert info.rows["machine_events"] >= 2000 and info.rows["sensor_readings"] >= 2000
    globex = example.tenants["globex"]
    for name in ("partner_csv", "machine_events_feed", "sensor_exports"):
        assert list(root.glob(globex.connections[name].spec.file_glob)), name
    assert list(root.glob(globex.pipelines["sensor_readings"].spec.file_glob))

    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in root.rglob("*") if p.is_file()}
    again = src.create_file_drops(root, now=NOW)
    assert not again.created and not again.files and again.rows == info.rows
    time.sleep(0.01)  # a new file's modification date must be later than every old one
    grown = src.create_file_drops(root, add_files=1, now=NOW + timedelta(hours=1))
    assert sorted(Path(f).parent.as_posix() for f in grown.files) == [
        "events",
        "orders",
        "sensors/current",
    ]
    for path, (mtime, data) in before.items():
        assert (path.stat().st_mtime_ns, path.read_bytes()) == (mtime, data), path
    newest_old = max(mtime for mtime, _ in before.values())
    for name in grown.files:
        assert (root / name).stat().st_mtime_ns > newest_old
    for table, added in grown.added.items():
        assert grown.rows[table] == info.rows[table] + added > info.rows[table]

    events = [e for p in sorted((root / "events").glob("*.jsonl")) for e in src.iter_jsonl(p)]
    ids = [e["event_id"] for e in events]
    assert ids == sorted(set(ids))  # unique and growing across files
    new_sensor = root / next(f for f in grown.files if f.endswith(".parquet"))
    old_sensor = next(p for p in before if p.suffix == ".parquet" and "current" in p.parts)
    assert pq.read_schema(new_sensor) == pq.read_schema(old_sensor)  # `freeze` holds


def test_generators_are_deterministic(tmp_path: Path) -> None:
    assert src.acme_shop_rows(now=NOW) == src.acme_shop_rows(now=NOW)
    assert src.acme_shop_rows(now=NOW) != src.acme_shop_rows(now=NOW, seed="other")
    assert src.globex_erp_rows(now=NOW) == src.globex_erp_rows(now=NOW)
    grow = [NOW + timedelta(minutes=5), NOW + timedelta(minutes=9)]
    assert initech_api_data(anchor=NOW, growth=grow) == initech_api_data(anchor=NOW, growth=grow)
    first, second = tmp_path / "a", tmp_path / "b"
    for folder in (first, second):
        src.create_file_drops(folder, now=NOW)
        src.create_file_drops(folder, add_files=2, now=NOW + timedelta(hours=1))
    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(second) for p in second.rglob("*") if p.is_file())
    for name in files:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name


# -- initech: the APIs --------------------------------------------------------------------------


def test_api_server_paginates_and_checks_credentials() -> None:
    with serve_demo_api(tokens=TOKENS, anchor=NOW) as api:
        data = api.data
        billing = {"Authorization": f"Bearer {TOKENS['billing']}"}
        support = {"X-API-Key": TOKENS["support"]}

        rows, page = [], 1
        while True:
            status, body, _ = get(
                f"{api.base_url}/billing/customers?per_page=100&page={page}", billing
            )
            assert status == 200
            rows += body["data"]
            if page >= body["meta"]["total_pages"]:
                break
            page += 1
        assert rows == list(data.customers) and page == -(-len(rows) // 100) > 1
        _, beyond, _ = get(
            f"{api.base_url}/billing/customers?per_page=100&page={page + 1}", billing
        )
        assert beyond["data"] == []

        _, default, _ = get(f"{api.base_url}/billing/subscriptions?per_page=500", billing)
        _, every, _ = get(f"{api.base_url}/billing/subscriptions?per_page=500&status=all", billing)
        assert every["meta"]["total"] == len(data.subscriptions) > default["meta"]["total"]
        assert {s["status"] for s in default["data"]} == {"trialing", "active", "past_due"}

        items, offset = [], 0
        while True:
            url = f"{api.base_url}/support/tickets?include_closed=true&offset={offset}&limit=100"
            status, body, _ = get(url, support)
            assert status == 200 and body["total"] == len(data.tickets)
            items += body["items"]
            offset += 100
            if offset >= body["total"]:
                break
        assert items == list(data.tickets)
        _, open_only, _ = get(f"{api.base_url}/support/tickets?limit=10", support)
        assert open_only["total"] == sum(t["status"] != "closed" for t in data.tickets)

        status, body, headers = get(f"{api.base_url}/billing/plans")
        assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer")
        assert get(f"{api.base_url}/billing/plans", {"Authorization": "Bearer nope"})[0] == 401
        assert get(f"{api.base_url}/billing/plans", support)[0] == 401
        assert get(f"{api.base_url}/support/ratings", {"X-API-Key": "nope"})[0] == 401
        assert get(f"{api.base_url}/support/ratings", billing)[0] == 401
        assert get(f"{api.base_url}/support/ratings", support)[0] == 200
        assert get(f"{api.base_url}/billing/refunds", billing)[0] == 404
        assert get(f"{api.base_url}/billing/invoices?per_page=0", billing)[0] == 400
        assert not any(TOKENS["billing"] in p or TOKENS["support"] in p for _, p, _ in api.requests)


def test_dlt_reads_the_apis_the_way_the_connections_configure_them(example: DesiredState) -> None:
    """dlt's own rest_api source, configured from example-repo's connections, pages through
    every resource (its paginators stop on `meta.total_pages` and `total`)."""
    from dlt.sources.rest_api import rest_api_resources

    initech = example.tenants["initech"]
    with serve_demo_api(tokens=TOKENS, anchor=NOW) as api:
        expected = {
            "customers": api.data.customers,
            "subscriptions": api.data.subscriptions,
            "invoices": api.data.invoices,
            "plans": api.data.plans,
            "tickets": api.data.tickets,
            "satisfaction_ratings": api.data.ratings,
        }
        for name in ("billing_api", "support_api"):
            spec = connection_dict(initech, name, api.url)
            config = {
                "client": {
                    "base_url": spec["base_url"],
                    "headers": spec.get("headers") or {},
                    "paginator": spec["paginator"],
                    "auth": {k: v for k, v in spec["auth"].items()},
                },
                "resources": [
                    {
                        "name": r["name"],
                        "endpoint": {
                            k: v
                            for k, v in {
                                "path": r["path"],
                                "params": r["params"],
                                "data_selector": r["data_selector"],
                                "paginator": r["paginator"],
                            }.items()
                            if v
                        },
                        "primary_key": r["primary_key"] or None,
                    }
                    for r in spec["resources"]
                ],
            }
            for resource in rest_api_resources(config):  # type: ignore[arg-type]
                rows = list(resource)
                want = expected[resource.name]
                assert len(rows) == len(want), resource.name
                key = next(iter(want[0]))
                assert sorted(r[key] for r in rows) == sorted(r[key] for r in want)


def connection_dict(tenant: TenantState, name: str, server: str) -> dict[str, Any]:
    """A rest_api connection's spec with the demo server's address and the test's secrets."""
    spec = tenant.connections[name].spec.model_dump(mode="json", by_alias=True)
    # example-repo writes `${env:DEMO_API_URL}[/support]`: what the worker resolves.
    spec["base_url"] = spec["base_url"].replace("${env:DEMO_API_URL}", server + "/api")
    for key in ("token", "api_key"):
        if key in spec["auth"]:
            ref = re.fullmatch(r"\$\{(?:secret|env):(\w+)\}", spec["auth"][key])
            assert ref, spec["auth"][key]
            spec["auth"][key] = SECRET_VALUES[ref.group(1)]
    return spec


# -- example-repo: what the demo loads and builds ----------------------------------------------


def test_models_build_and_pass_their_tests_on_the_sample_data(
    pg: Pg, tmp_path: Path, example: DesiredState, make_database: Callable[[], str]
) -> None:
    src.create_postgres_source(pg.admin, pg.shop, role_prefix=pg.prefix)
    src.create_sqlite_source(tmp_path / src.ERP_FILE)
    src.create_file_drops(tmp_path / src.DROPS_FOLDER)
    warehouse = make_database()
    failures: list[str] = []
    built: dict[str, int] = {}
    with serve_demo_api(tokens=TOKENS) as api:
        reader = Sources(shop=pg.url(pg.shop), root=tmp_path, api=api.url)
        for slug, tenant in sorted(example.tenants.items()):
            skip = excluded(tenant)
            for name, declared in sorted(tenant.pipelines.items()):
                if declared.address in skip:
                    continue
                destination = tenant.connections[declared.spec.destination].spec
                if destination.type != "postgres":
                    continue  # erp_archive writes parquet files, not warehouse tables
                for table, (types, rows) in reader.tables(tenant, name).items():
                    assert rows, f"{slug}.{name}: the source of {table} is empty"
                    load(warehouse, declared.spec.dataset, table, types, rows)
            failures += build_models(warehouse, tenant, skip, built)
    assert not failures, "\n".join(failures)
    assert all(built.values()), f"models without rows: {[m for m, n in built.items() if not n]}"
    assert {m.split(".")[0] for m in built} == {"acme", "globex", "initech"}


@dataclass
class Sources:
    """Reads what each pipeline would extract, as (column types, rows) per destination table."""

    shop: str
    root: Path
    api: str

    def tables(self, tenant: TenantState, name: str) -> dict[str, tuple[dict[str, str], list]]:
        spec = tenant.pipelines[name].spec
        conn = tenant.connections[spec.source].spec
        match conn.type:
            case "postgres":
                assert conn.database == src.SHOP_DATABASE and conn.username == src.SHOP_READER
                tables = self._postgres(spec.source_schema or "public", self._names(spec))
            case "sqlite":
                assert conn.path == src.ERP_FILE
                tables = self._sqlite(self.root / conn.path, self._names(spec))
            case "filesystem":
                glob = spec.file_glob or conn.file_glob
                files = sorted((self.root / conn.bucket_url).glob(glob))
                assert files, f"{tenant.slug}.{name}: nothing matches {conn.bucket_url}/{glob}"
                tables = {spec.table_name or name: self._files(files, conn.format)}
            case "rest_api":
                tables = self._rest(tenant, spec, conn)
            case other:
                raise AssertionError(f"{tenant.slug}.{name} reads {other}, which the demo lacks")
        for table, (types, rows) in tables.items():
            if spec.filters:
                rows[:] = [r for r in rows if all(matches(r, f) for f in spec.filters)]
            if spec.mode != "files" and spec.incremental and spec.incremental.initial_value:
                start = like(rows[0][spec.incremental.cursor], spec.incremental.initial_value)
                late = [r for r in rows if r[spec.incremental.cursor] < start]
                assert not late, f"{table}: rows before the initial value would never load"
            assert set(types) >= {c for r in rows[:1] for c in r if r[c] is not None}
        return tables

    @staticmethod
    def _names(spec: Any) -> list[str]:
        return [spec.table] if spec.mode == "single_table" else list(spec.table_names)

    def _postgres(self, schema: str, tables: Sequence[str]) -> dict[str, Any]:
        out = {}
        engine = create_engine(self.shop, poolclass=NullPool)
        with engine.connect() as conn:
            for table in tables:
                types = dict(
                    conn.execute(
                        text(
                            "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
                            "WHERE attrelid = to_regclass(:t) AND attnum > 0 "
                            "AND NOT attisdropped ORDER BY attnum"
                        ),
                        {"t": f"{schema}.{table}"},
                    ).all()
                )
                assert types, f"no table {schema}.{table} in the shop"
                rows = [
                    dict(r._mapping) for r in conn.execute(text(f"SELECT * FROM {schema}.{table}"))
                ]
                out[table] = (types, rows)
        engine.dispose()
        return out

    @staticmethod
    def _sqlite(path: Path, tables: Sequence[str]) -> dict[str, Any]:
        out = {}
        db = sqlite3.connect(path)
        db.row_factory = sqlite3.Row
        for table in tables:
            declared = {r[1]: r[2].upper() for r in db.execute(f"PRAGMA table_info({table})")}
            assert declared, f"no table {table} in {path.name}"
            types = {c: sqlite_type(d) for c, d in declared.items()}
            rows = [
                {c: sqlite_value(r[c], declared[c]) for c in declared}
                for r in db.execute(f"SELECT * FROM {table}")
            ]
            out[table] = (types, rows)
        db.close()
        return out

    @staticmethod
    def _files(files: Sequence[Path], fmt: str) -> tuple[dict[str, str], list]:
        if fmt == "jsonl":
            return json_table([e for f in files for e in src.iter_jsonl(f)])
        import pyarrow as pa
        import pyarrow.csv as pcsv
        import pyarrow.parquet as pq

        read = pcsv.read_csv if fmt == "csv" else pq.read_table
        tables = [read(f) for f in files]
        assert all(t.schema == tables[0].schema for t in tables), "files disagree on columns"
        table = pa.concat_tables(tables)
        return {f.name: arrow_type(f.type) for f in table.schema}, table.to_pylist()

    def _rest(self, tenant: TenantState, spec: Any, conn: Any) -> dict[str, Any]:
        c = connection_dict(tenant, spec.source, self.api)
        auth = c["auth"]
        headers = dict(c.get("headers") or {})
        if auth["type"] == "bearer":
            headers["Authorization"] = f"Bearer {auth['token']}"
        else:
            assert auth["location"] == "header"
            headers[auth["name"]] = auth["api_key"]
        wanted = list(spec.resources) or [r["name"] for r in c["resources"]]
        out = {}
        for r in c["resources"]:
            if r["name"] in wanted:
                rows = fetch_all(c["base_url"], r, r["paginator"] or c["paginator"], headers)
                out[r["name"]] = json_table(rows)
        return out


def fetch_all(base: str, resource: Mapping[str, Any], paginator: Any, headers: Mapping) -> list:
    """Every item of a resource, paging as dlt's page_number / offset paginators do."""
    url = f"{base.rstrip('/')}/{resource['path']}"
    params = dict(resource["params"])

    def call(extra: Mapping[str, Any]) -> Any:
        status, body, _ = get(f"{url}?{urlencode({**params, **extra})}", headers)
        assert status == 200, (url, status, body)
        return body

    def pick(body: Any, path: str) -> Any:
        for part in path.split("."):
            body = body[part]
        return body

    selector = resource["data_selector"]
    if paginator == "single_page" or paginator is None:
        return pick(call({}), selector)
    rows: list = []
    if paginator["type"] == "page_number":
        page = paginator.get("base_page", 1)
        while True:
            body = call({paginator["page_param"]: page})
            rows += pick(body, selector)
            page += 1
            if page >= pick(body, paginator["total_path"]) + paginator.get("base_page", 1):
                return rows
    assert paginator["type"] == "offset"
    offset, limit = 0, paginator["limit"]
    while True:
        body = call({paginator["offset_param"]: offset, paginator["limit_param"]: limit})
        rows += pick(body, selector)
        offset += limit
        if offset >= pick(body, paginator["total_path"]):
            return rows


ISO_TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?$")


def json_table(items: Sequence[Mapping[str, Any]]) -> tuple[dict[str, str], list]:
    """Columns as dlt makes them from JSON: nested objects flattened with `__`, lists left to
    child tables, ISO timestamps detected, columns that are always null not created."""
    rows = [flatten(item) for item in items]
    types: dict[str, str] = {}
    for row in rows:
        for column, value in row.items():
            if value is None:
                continue
            kind = json_type(value)
            # dlt would make a variant column, and `data_type: freeze` would stop the load
            assert types.setdefault(column, kind) == kind, f"{column}: {types[column]} and {kind}"
    return types, rows


def flatten(item: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in item.items():
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{prefix}{key}__"))
        elif not isinstance(value, list):
            out[prefix + key] = value
    return out


def json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "bigint"
    if isinstance(value, float):
        return "double precision"
    return "timestamptz" if ISO_TIMESTAMP.match(value) else "text"


def arrow_type(t: Any) -> str:
    import pyarrow as pa

    for test, name in (
        (pa.types.is_boolean, "boolean"),
        (pa.types.is_integer, "bigint"),
        (pa.types.is_floating, "double precision"),
        (pa.types.is_timestamp, "timestamptz"),
        (pa.types.is_date, "date"),
        (pa.types.is_string, "text"),
    ):
        if test(t):
            return name
    if pa.types.is_decimal(t):
        return f"numeric({t.precision}, {t.scale})"
    raise AssertionError(f"unexpected arrow type {t}")


def sqlite_type(declared: str) -> str:
    if declared.startswith("NUMERIC"):
        return declared.lower()
    return {
        "INTEGER": "bigint",
        "TEXT": "text",
        "DATE": "date",
        "TIMESTAMP": "timestamptz",
        "BOOLEAN": "boolean",
    }[declared]


def sqlite_value(value: Any, declared: str) -> Any:
    if value is None:
        return None
    if declared == "TIMESTAMP":
        return datetime.strptime(value, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
    if declared == "DATE":
        return date.fromisoformat(value)
    if declared == "BOOLEAN":
        return bool(value)
    if declared.startswith("NUMERIC"):
        return Decimal(str(value))
    return value


def like(sample: Any, value: Any) -> Any:
    """A YAML value in the type of a row's value."""
    if isinstance(sample, datetime) and isinstance(value, str):
        parsed = datetime.fromisoformat(value)
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    if isinstance(sample, Decimal) and not isinstance(value, Decimal):
        return Decimal(str(value))
    return value


def matches(row: Mapping[str, Any], f: Any) -> bool:
    actual = row.get(f.column)
    if actual is None:
        return False
    if f.op in ("in", "not_in"):
        found = actual in [like(actual, v) for v in f.value]
        return found if f.op == "in" else not found
    value = like(actual, f.value)
    return {
        "eq": actual == value,
        "ne": actual != value,
        "gt": actual > value,
        "gte": actual >= value,
        "lt": actual < value,
        "lte": actual <= value,
    }[f.op]


def load(url: str, schema: str, table: str, types: Mapping[str, str], rows: Sequence) -> None:
    engine = create_engine(url, poolclass=NullPool)
    columns = list(types)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
            defs = ", ".join(f'"{c}" {t}' for c, t in types.items())
            conn.exec_driver_sql(f'CREATE TABLE "{schema}"."{table}" ({defs})')
            raw = conn.connection.driver_connection
            quoted = ", ".join(f'"{c}"' for c in columns)
            with (
                raw.cursor() as cur,
                cur.copy(f'COPY "{schema}"."{table}" ({quoted}) FROM STDIN') as copy,
            ):
                for row in rows:
                    copy.write_row([row.get(c) for c in columns])
    finally:
        engine.dispose()


def build_models(url: str, tenant: TenantState, skip: frozenset[Address], built: dict) -> list:
    """Build the tenant's models (dbt-like: views, tables; incremental ones as tables, then
    their incremental branch is planned with EXPLAIN) and run their tests."""
    import jinja2

    specs = tenant.transformations
    failures: list[str] = []

    def relation(model: str) -> str:
        return f'"{specs[model].spec.schema_}"."{model}"'

    def render(model: str, incremental: bool) -> str:
        env = jinja2.Environment(undefined=jinja2.StrictUndefined)
        return env.from_string(tenant.sql[model]).render(
            source=lambda p, t: f'"{tenant.pipelines[p].spec.dataset}"."{t}"',
            ref=relation,
            this=relation(model),
            is_incremental=lambda: incremental,
        )

    engine = create_engine(url, poolclass=NullPool)
    order = [a for a in tenant_dag(tenant).order() if a.kind is Kind.TRANSFORMATION]
    try:
        for address in order:
            if address in skip:
                continue
            model, spec = address.name, specs[address.name].spec
            kind = "VIEW" if spec.materialized == "view" else "TABLE"
            try:
                with engine.begin() as conn:
                    conn.exec_driver_sql(f'CREATE SCHEMA IF NOT EXISTS "{spec.schema_}"')
                    conn.exec_driver_sql(
                        f"CREATE {kind} {relation(model)} AS {render(model, False)}"
                    )
                    if spec.materialized == "incremental":
                        conn.exec_driver_sql(f"EXPLAIN {render(model, True)}")
                    built[str(address)] = conn.execute(
                        text(f"SELECT count(*) FROM {relation(model)}")
                    ).scalar()
            except DBAPIError as exc:
                failures.append(f"{address}: {str(exc.orig).splitlines()[0]}")
                continue
            with engine.connect() as conn:
                for column, tests in spec.tests.items():
                    for test in tests:
                        bad = conn.execute(
                            text(check_query(relation(model), column, test, relation))
                        )
                        found = bad.scalar()
                        if found:
                            failures.append(f"{address}: {test.test} on {column}: {found} rows")
    finally:
        engine.dispose()
    return failures


def check_query(rel: str, column: str, test: Any, relation: Callable[[str], str]) -> str:
    col = f'"{column}"'
    match test.test:
        case "not_null":
            return f"SELECT count(*) FROM {rel} WHERE {col} IS NULL"
        case "unique":
            return (
                f"SELECT count(*) FROM (SELECT {col} FROM {rel} WHERE {col} IS NOT NULL "
                f"GROUP BY {col} HAVING count(*) > 1) AS d"
            )
        case "accepted_values":
            values = ", ".join("'" + str(v).replace("'", "''") + "'" for v in test.values)
            return f"SELECT count(*) FROM {rel} WHERE {col}::text NOT IN ({values})"
        case "relationships":
            ref = re.fullmatch(r"""ref\(\s*['"](\w+)['"]\s*\)""", test.to)
            parent = relation(ref.group(1) if ref else test.to)
            field = f'p."{test.field}"'
            return (
                f"SELECT count(*) FROM {rel} AS c LEFT JOIN {parent} AS p ON c.{col} = {field} "
                f"WHERE c.{col} IS NOT NULL AND {field} IS NULL"
            )
    raise AssertionError(f"unknown test {test.test}")


def test_demo_exclude_leaves_out_exactly_what_reads_mysql_or_sql_server(
    example: DesiredState,
) -> None:
    left_out: dict[str, set[str]] = {}
    for slug, tenant in example.tenants.items():
        dag = tenant_dag(tenant)
        unavailable = {
            d.address
            for d in tenant.pipelines.values()
            if tenant.connections[d.spec.source].spec.type in UNAVAILABLE
        }
        expected = unavailable | dag.descendants(unavailable)
        assert excluded(tenant) == expected, slug
        left_out[slug] = {a.name for a in expected}
    assert left_out == {
        "acme": set(),
        "globex": {
            "inventory",
            "stock_movements",
            "stg_warehouses",
            "inventory_health",
            "partner_order_backlog",
        },
        "initech": {"crm_accounts", "account_health"},
    }


def test_sources_match_example_repos_connections(example: DesiredState) -> None:
    acme, globex, initech = (example.tenants[t] for t in ("acme", "globex", "initech"))
    shop = acme.connections["shop_db"].spec
    assert (shop.database, shop.username) == (src.SHOP_DATABASE, src.SHOP_READER)
    loaders = set()
    for tenant in (acme, globex, initech):
        warehouse = tenant.connections[tenant.spec.warehouse].spec
        assert warehouse.database == src.WAREHOUSE_DATABASE
        loaders.add(warehouse.username)
    assert loaders == set(src.WAREHOUSE_LOADERS)
    assert globex.connections["erp"].spec.path == src.ERP_FILE
    for name in ("partner_csv", "machine_events_feed", "sensor_exports"):
        assert globex.connections[name].spec.bucket_url == src.DROPS_FOLDER
    assert set(acme.pipelines) == set(src.ACME_TABLES)
    assert set(globex.pipelines["erp"].spec.table_names) <= set(src.ERP_TABLES)
    for name in ("billing_api", "support_api"):
        assert initech.connections[name].spec.base_url.startswith("${env:DEMO_API_URL}")
    referenced = set()
    for tenant in example.tenants.values():
        for declared in tenant.connections.values():
            dumped = json.dumps(declared.spec.model_dump(mode="json"))
            referenced |= set(re.findall(r"\$\{(?:secret|env):(\w+)\}", dumped))
    # Secrets, plus the locations the demo exports (where its sources listen).
    assert referenced == set(SECRET_NAMES) | {"DEMO_PG_PORT", "DEMO_API_URL"}


def test_prepare_sources_twice(pg: Pg, tmp_path: Path) -> None:
    """The demo's first and second run: created, then grown; stable secrets; a taken API port
    falls back to a free one."""
    names = {"shop_database": pg.shop, "warehouse_database": pg.dwh, "role_prefix": pg.prefix}
    with prepare_sources(tmp_path, pg.admin, api_port=None, **names) as first:
        assert first.run == 1 and first.shop.created and first.erp.created and first.files.created
        assert set(first.secrets) == set(SECRET_NAMES)
        assert not any(v in repr(first) for v in first.secrets.values())
        token = first.secrets["INITECH_BILLING_TOKEN"]
        status, _, _ = get(
            f"{first.api.base_url}/billing/plans", {"Authorization": f"Bearer {token}"}
        )
        assert status == 200
    assert (tmp_path / "data" / ".gitignore").read_text().endswith("*\n")

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with prepare_sources(tmp_path, pg.admin, api_port=port, **names) as second:
            assert second.run == 2 and second.api.port != port
            assert second.locations["DEMO_API_URL"] == second.api.base_url
            assert second.secrets == first.secrets
            assert second.shop.added["orders"] > 0 and second.erp.added["invoices"] > 0
            assert len(second.files.files) == 3
            assert len(second.api.data.tickets) > len(first.api.data.tickets)
            assert second.environ().keys() >= set(SECRET_NAMES) | {"DEMO_PG_PORT"}
