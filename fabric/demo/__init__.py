"""The sample sources of `fabric demo`, for example-repo's three tenants.  [shell]

`prepare_sources()` makes (or grows) every source the demo can provide on a machine with only
Python and uv, starts initech's APIs, and returns the secret values example-repo's connections
reference (by name: `ACME_SHOP_PASSWORD`, ...) plus where things are. The pieces are in
`fabric.demo.sources` (PostgreSQL shop and warehouse, SQLite ERP, file drops) and
`fabric.demo.api_server` (billing and support APIs).

MySQL (globex `inventory_db`) and SQL Server (initech `crm_db`) cannot be provided that way:
`DEMO_EXCLUDE` leaves out the pipelines reading them and everything downstream.

Importing this package is cheap: SQLAlchemy and pyarrow are imported when used.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from fabric.demo.api_server import DemoApiServer, serve_demo_api
from fabric.demo.sources import (
    DROPS_FOLDER,
    ERP_FILE,
    SEED,
    SHOP_DATABASE,
    SHOP_READER,
    WAREHOUSE_DATABASE,
    WAREHOUSE_LOADERS,
    SourceInfo,
    create_file_drops,
    create_postgres_source,
    create_sqlite_source,
    create_warehouse,
    demo_secret,
)

__all__ = [
    "API_PORT",
    "DEMO_EXCLUDE",
    "SECRET_NAMES",
    "DemoApiServer",
    "DemoSources",
    "SourceInfo",
    "create_file_drops",
    "create_postgres_source",
    "create_sqlite_source",
    "create_warehouse",
    "prepare_sources",
    "serve_demo_api",
]

DEMO_EXCLUDE = ("pipeline:inventory+", "pipeline:stock_movements+", "pipeline:crm_accounts+")
"""`fabric run --exclude` selectors for what reads MySQL or SQL Server, and its downstream:
globex inventory, stock_movements, stg_warehouses, inventory_health, partner_order_backlog;
initech crm_accounts, account_health."""
API_PORT = 8765
"""The port example-repo's `billing_api` and `support_api` connections name."""
ADD_ROWS = 25
"""Orders / invoices a later demo run adds (the file drops get one new file per feed)."""
STATE_FILE = "data/demo-state.json"
SECRET_NAMES: Mapping[str, str] = {
    "ACME_SHOP_PASSWORD": "acme shop_db: password of acme_reader",
    "ACME_DWH_PASSWORD": "acme dwh: password of acme_loader",
    "GLOBEX_DWH_PASSWORD": "globex warehouse: password of globex_loader",
    "GLOBEX_INVENTORY_PASSWORD": "globex inventory_db (MySQL, not provided: a placeholder)",
    "INITECH_DWH_PASSWORD": "initech dwh: password of initech_loader",
    "INITECH_BILLING_TOKEN": "initech billing_api: bearer token",
    "INITECH_SUPPORT_API_KEY": "initech support_api: X-API-Key",
    "INITECH_CRM_PASSWORD": "initech crm_db (SQL Server, not provided: a placeholder)",
}
"""Every `${secret:NAME}` / `${env:NAME}` example-repo references, and what it is."""


@dataclass
class DemoSources:
    """The prepared sources; close it (or use `with`) to stop the API server."""

    shop: SourceInfo
    warehouse: SourceInfo
    erp: SourceInfo
    files: SourceInfo
    api: DemoApiServer
    run: int
    """1 on the first demo run of this repository, then 2, 3, ..."""
    secrets: Mapping[str, str] = field(repr=False)
    """SECRET_NAMES -> the value: for `${env:NAME}` (os.environ) or `fabric secrets set`."""
    locations: Mapping[str, str] = field(default_factory=dict)
    """DEMO_PG_HOST, DEMO_PG_PORT, DEMO_API_URL: where the sources are,
    for connections that interpolate `${env:...}` in host / base_url."""

    def environ(self) -> dict[str, str]:
        """Everything to put in the environment of apply and run (secrets included)."""
        return {**self.secrets, **self.locations}

    def close(self) -> None:
        self.api.close()

    def __enter__(self) -> DemoSources:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def prepare_sources(
    repo_root: Path,
    admin_url: str,
    *,
    api_host: str = "127.0.0.1",
    api_port: int | None = API_PORT,
    add_rows: int = ADD_ROWS,
    now: datetime | None = None,
    secret: str | None = None,
    shop_database: str = SHOP_DATABASE,
    warehouse_database: str = WAREHOUSE_DATABASE,
    role_prefix: str = "",
) -> DemoSources:
    """Create every source example-repo's demo reads, or grow them on a later run.

    `admin_url` is a superuser URL of the PostgreSQL server that holds the shop and warehouse
    databases (the embedded server's TCP URL). The first run (no `data/demo-state.json` under
    `repo_root`) creates everything; each later run adds `add_rows` orders and invoices, one file
    per feed and a batch of API changes, all newer than what is there. `api_port=None` picks a
    free port; a taken `api_port` falls back to a free one (then `locations` says where).
    Credentials are derived from `secret` (default: the admin URL's password), so they stay
    the same from run to run and the second apply finds no changed secret. The database and
    role names are example-repo's; tests change them (roles are cluster-wide).
    """
    from sqlalchemy import make_url

    repo_root = Path(repo_root)
    moment = (now or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0)
    key = secret if secret is not None else (make_url(admin_url).password or SEED)
    data = repo_root / "data"
    data.mkdir(parents=True, exist_ok=True)
    ignore = data / ".gitignore"
    if not ignore.exists():
        ignore.write_text(
            "# Written by `fabric demo`: generated sample data. Never commit it.\n*\n"
        )
    state = _read_state(repo_root / STATE_FILE)
    if state is None:
        state = {"format_version": 1, "anchor": moment.isoformat(), "runs": []}
    else:
        state["runs"].append(moment.isoformat())
    growth = [datetime.fromisoformat(t) for t in state["runs"]]
    later = bool(growth)
    shop = create_postgres_source(
        admin_url,
        shop_database,
        add_rows=add_rows if later else 0,
        now=moment,
        secret=key,
        role_prefix=role_prefix,
    )
    warehouse = create_warehouse(
        admin_url, warehouse_database, WAREHOUSE_LOADERS, secret=key, role_prefix=role_prefix
    )
    erp = create_sqlite_source(repo_root / ERP_FILE, add_rows=add_rows if later else 0, now=moment)
    files = create_file_drops(repo_root / DROPS_FOLDER, add_files=1 if later else 0, now=moment)
    tokens = {
        "billing": demo_secret(key, "INITECH_BILLING_TOKEN"),
        "support": demo_secret(key, "INITECH_SUPPORT_API_KEY"),
    }
    anchor = datetime.fromisoformat(state["anchor"])
    try:
        api = serve_demo_api(api_host, api_port or 0, tokens=tokens, anchor=anchor, growth=growth)
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE or not api_port:
            raise
        api = serve_demo_api(api_host, 0, tokens=tokens, anchor=anchor, growth=growth)
    _write_state(repo_root / STATE_FILE, state)
    secrets = {
        "ACME_SHOP_PASSWORD": shop.passwords[role_prefix + SHOP_READER],
        "ACME_DWH_PASSWORD": warehouse.passwords[role_prefix + "acme_loader"],
        "GLOBEX_DWH_PASSWORD": warehouse.passwords[role_prefix + "globex_loader"],
        "GLOBEX_INVENTORY_PASSWORD": demo_secret(key, "GLOBEX_INVENTORY_PASSWORD"),
        "INITECH_DWH_PASSWORD": warehouse.passwords[role_prefix + "initech_loader"],
        "INITECH_BILLING_TOKEN": tokens["billing"],
        "INITECH_SUPPORT_API_KEY": tokens["support"],
        "INITECH_CRM_PASSWORD": demo_secret(key, "INITECH_CRM_PASSWORD"),
    }
    server = make_url(admin_url)
    return DemoSources(
        shop=shop,
        warehouse=warehouse,
        erp=erp,
        files=files,
        api=api,
        run=len(growth) + 1,
        secrets=secrets,
        locations={
            "DEMO_PG_HOST": server.host or "127.0.0.1",
            "DEMO_PG_PORT": str(server.port or 5432),
            "DEMO_API_URL": api.base_url,
        },
    )


def _read_state(path: Path) -> dict | None:
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(state, dict) or state.get("format_version") != 1:
        return None
    return state


def _write_state(path: Path, state: Mapping) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(state, indent=2) + "\n")
    with contextlib.suppress(OSError):
        os.chmod(tmp, 0o644)
    os.replace(tmp, path)
