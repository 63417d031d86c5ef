"""The sample sources `fabric demo` loads: what example-repo's pipelines read, on this machine.
[shell]

- acme: the web shop, a PostgreSQL database (`fabric_demo_shop`: customers, products, orders,
  order_items in schema public) read by the login role `acme_reader`; plus the shared warehouse
  database (`fabric_demo_dwh`) with one loader role per tenant (`acme_loader`, ...).
- globex: the ERP export, a SQLite file (customers, suppliers, products, invoices,
  invoice_lines), and the partner / plant file drops: `orders/*.csv` (purchase orders),
  `events/*.jsonl` (machine state changes), `sensors/*.parquet` (monthly archives) and
  `sensors/current/*.parquet` (recent hourly aggregates).
- initech: its billing and support REST APIs are served by `fabric.demo.api_server`.

The data is generated from a seeded random generator and an anchor time (`now`, default: the
current time, so the models' "last 90 days" windows always have data): the same seed and anchor
give the same rows. The first call creates a source; later calls leave it as it is, or add a few
rows (`add_rows`, `add_files`) whose cursors (`updated_at`, ids, file modification times) are
newer than everything already there, so an incremental load picks up only those.

Role passwords are derived from a secret (by default the password of the admin URL, i.e. of the
server's superuser) with HMAC, so they are stable for one installation, unknown to anyone who
cannot already log in as the superuser, and never printed; the server only ever receives their
SCRAM verifiers. SQLAlchemy and pyarrow are imported inside the functions.
"""

from __future__ import annotations

import base64
import bisect
import csv
import hashlib
import hmac
import io
import itertools
import json
import os
import random
import re
import sqlite3
import string
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

__all__ = [
    "DROPS_FOLDER",
    "ERP_FILE",
    "SEED",
    "SHOP_DATABASE",
    "SHOP_READER",
    "WAREHOUSE_DATABASE",
    "WAREHOUSE_LOADERS",
    "SourceInfo",
    "acme_shop_rows",
    "create_file_drops",
    "create_postgres_source",
    "create_sqlite_source",
    "create_warehouse",
    "demo_secret",
    "drop_roles",
    "globex_erp_rows",
    "iter_jsonl",
]

SEED = "fabric-demo-v1"
"""Seed of every generator; a batch of added rows is seeded with it and the source's state."""
SHOP_DATABASE = "fabric_demo_shop"
WAREHOUSE_DATABASE = "fabric_demo_dwh"
SHOP_READER = "acme_reader"
WAREHOUSE_LOADERS = ("acme_loader", "globex_loader", "initech_loader")
ERP_FILE = "data/globex/erp.sqlite"
"""Relative to the repository root, as globex's `erp` connection names it."""
DROPS_FOLDER = "data/globex/drops"
"""The `bucket_url` of globex's filesystem source connections."""

_ROLE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


@dataclass(frozen=True, slots=True)
class SourceInfo:
    """What a `create_*` call left behind."""

    name: str
    """The database name, or the file / folder path."""
    created: bool
    """True when this call created the source (or rebuilt an incomplete one)."""
    rows: Mapping[str, int]
    """Table -> rows in the source after the call."""
    added: Mapping[str, int] = field(default_factory=dict)
    """Table -> rows this call inserted or updated (empty on creation and without add_*)."""
    passwords: Mapping[str, str] = field(default_factory=dict, repr=False)
    """Login role -> its password (PostgreSQL sources and the warehouse only)."""
    server: str | None = None
    """`postgresql+psycopg://host:port` of the server, without credentials (PostgreSQL only)."""
    files: tuple[str, ...] = ()
    """Files this call wrote, relative to the source folder (file drops only)."""

    def url(self, role: str) -> str:
        """SQLAlchemy URL of this database for one of its roles, password included."""
        from sqlalchemy import make_url

        if self.server is None:
            raise ValueError(f"{self.name} is not a PostgreSQL database")
        url = make_url(self.server).set(
            username=role, password=self.passwords[role], database=self.name
        )
        return url.render_as_string(hide_password=False)


def demo_secret(secret: str, name: str) -> str:
    """A demo credential (role password, API token) derived from `secret` and its name."""
    digest = hmac.new(secret.encode(), f"fabric-demo:{name}".encode(), hashlib.sha256)
    return digest.hexdigest()[:32]


def _rng(seed: str, *parts: object) -> random.Random:
    # NOTE: str seeds are hashed with SHA-512 by random.seed (version 2): stable across runs and
    # independent of PYTHONHASHSEED.
    return random.Random(":".join([seed, *map(str, parts)]))


def _now(now: datetime | None) -> datetime:
    moment = now or datetime.now(UTC)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).replace(microsecond=0)


def _money(value: float | Decimal) -> Decimal:
    return Decimal(str(value)).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


def _spread(lo: datetime, hi: datetime, count: int) -> list[datetime]:
    """`count` strictly increasing instants in (lo, hi]."""
    hi = max(hi, lo + timedelta(milliseconds=count))
    step = (hi - lo) / max(count, 1)
    return [lo + step * (i + 1) for i in range(count)]


FIRST_NAMES = _words(
    "Anna Ben Clara David Elena Felix Greta Hugo Ida Jonas Karla Lukas Mia Noah "
    "Olivia Paul Quentin Rosa Samuel Tara Uwe Vera Wim Xenia Yusuf Zoe Aylin Bruno "
    "Chiara Dario Emil Fatima Gustav Hanna Ivan Julia Kai Lena Marco Nina Omar Pia"
)
LAST_NAMES = _words(
    "Schmidt Dubois Rossi Garcia Jansen Novak Nielsen Kowalski Lindqvist Moreau "
    "Bauer Costa Fischer Martin Bianchi Lopez de-Vries Horvat Berg Wagner Lambert "
    "Romano Navarro Peeters Svensson Keller Fontaine Conti Ortega Maes Hansen Weber "
    "Girard Greco Silva Dijkstra Meyer Laurent Ricci Santos"
)


# =============================================================================================
# acme: the web shop (PostgreSQL)

ACME_TABLES = ("customers", "products", "orders", "order_items")
ACME_DDL = """
CREATE TABLE public.customers (
    customer_id      bigint PRIMARY KEY,
    email            text NOT NULL UNIQUE,
    email_domain     text GENERATED ALWAYS AS (lower(split_part(email, '@', 2))) STORED,
    first_name       text NOT NULL,
    last_name        text NOT NULL,
    country_code     char(2) NOT NULL,
    phone            text,
    marketing_opt_in boolean NOT NULL DEFAULT false,
    is_deleted       boolean NOT NULL DEFAULT false,
    created_at       timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL
);
CREATE INDEX customers_updated_at ON public.customers (updated_at);

CREATE TABLE public.products (
    product_id  integer PRIMARY KEY,
    sku         varchar(32) NOT NULL UNIQUE,
    name        text NOT NULL,
    category    text NOT NULL,
    unit_price  numeric(10, 2) NOT NULL,
    is_active   boolean NOT NULL,
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL
);

CREATE TABLE public.orders (
    order_id         bigint PRIMARY KEY,
    customer_id      bigint NOT NULL REFERENCES public.customers,
    channel          varchar(16) NOT NULL,
    status           varchar(16) NOT NULL,
    ordered_at       timestamptz NOT NULL,
    total_amount     numeric(12, 2) NOT NULL,
    currency         char(3) NOT NULL DEFAULT 'EUR',
    shipping_country char(2) NOT NULL,
    created_at       timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL
);
CREATE INDEX orders_updated_at ON public.orders (updated_at);
CREATE INDEX orders_customer_id ON public.orders (customer_id);

CREATE TABLE public.order_items (
    order_item_id bigint PRIMARY KEY,
    order_id      bigint NOT NULL REFERENCES public.orders,
    product_id    integer NOT NULL REFERENCES public.products,
    quantity      integer NOT NULL,
    unit_price    numeric(10, 2) NOT NULL,
    created_at    timestamptz NOT NULL
);
CREATE INDEX order_items_order_id ON public.order_items (order_id);
"""
ACME_COLUMNS: Mapping[str, Sequence[str]] = {
    # email_domain is generated by the database
    "customers": _words(
        "customer_id first_name last_name email country_code phone marketing_opt_in "
        "is_deleted created_at updated_at"
    ),
    "products": _words("product_id sku name category unit_price is_active created_at updated_at"),
    "orders": _words(
        "order_id customer_id channel status ordered_at total_amount currency "
        "shipping_country created_at updated_at"
    ),
    "order_items": _words("order_item_id order_id product_id quantity unit_price created_at"),
}
ACME_SIZES = {"customers": 1200, "products": 150, "orders": 3600}
ACME_ORDER_DAYS = 540
ACME_CHANNELS = {"web": 55, "store": 28, "app": 15, "marketplace": 2}
"""`marketplace` orders are left out by the orders pipeline's `channel in [...]` filter."""
ACME_COUNTRIES = {"DE": 30, "FR": 18, "NL": 10, "AT": 8, "BE": 7, "IT": 9, "ES": 9, "PL": 5}
ACME_DOMAINS = {
    "mail.example": 30,
    "inbox.example": 22,
    "post.example": 18,
    "web.example": 14,
    "example.com": 14,
    "acme.example": 1,  # staff accounts: left out by the customers pipeline's filter
    "test.acme.example": 1,
}
ACME_CATEGORIES: Mapping[str, tuple[tuple[float, float], tuple[str, ...], tuple[str, ...]]] = {
    "Apparel": ((15, 90), ("Linen", "Merino", "Classic", "Organic"), ("Shirt", "Hoodie", "Scarf")),
    "Footwear": ((40, 180), ("Trail", "City", "Leather", "Canvas"), ("Sneaker", "Boot", "Loafer")),
    "Home": ((10, 150), ("Nordic", "Rustic", "Velvet", "Bamboo"), ("Cushion", "Lamp", "Throw")),
    "Kitchen": ((8, 250), ("Cast-Iron", "Ceramic", "Steel", "Oak"), ("Pan", "Knife", "Board")),
    "Electronics": ((20, 900), ("Smart", "Wireless", "Pro", "Mini"), ("Speaker", "Headset")),
    "Outdoor": ((25, 400), ("Alpine", "Coastal", "Ultralight"), ("Tent", "Backpack", "Jacket")),
    "Beauty": ((5, 60), ("Rose", "Argan", "Citrus", "Mineral"), ("Serum", "Soap", "Balm")),
    "Toys": ((8, 120), ("Wooden", "Magnetic", "Rainbow"), ("Puzzle", "Train", "Blocks")),
}


@dataclass(slots=True)
class _Order:
    order_id: int
    customer_id: int
    channel: str
    status: str
    ordered_at: datetime
    total: Decimal
    country: str
    updated_at: datetime


def acme_shop_rows(*, seed: str = SEED, now: datetime | None = None) -> dict[str, list[tuple]]:
    """The shop's initial rows, per table, in ACME_COLUMNS order. Pure and deterministic."""
    anchor = _now(now)
    rng = _rng(seed, "acme")
    products = _acme_products(rng, anchor)
    customers = _acme_customers(rng, anchor)
    cumulative = list(itertools.accumulate(min(rng.paretovariate(1.3), 40.0) for _ in customers))
    popularity = [min(rng.paretovariate(1.1), 20.0) for _ in products]
    created = [c[8] for c in customers]
    drafts = []
    for _ in range(ACME_SIZES["orders"]):
        # linear growth: twice as many orders a day now as 270 days ago, none 540 days ago
        age = timedelta(days=ACME_ORDER_DAYS * (1 - rng.random() ** 0.5), minutes=30)
        ordered_at = (anchor - age).replace(microsecond=0)
        eligible = max(1, bisect.bisect_left(created, ordered_at))
        i = bisect.bisect_left(cumulative, rng.random() * cumulative[eligible - 1])
        c = customers[min(i, eligible - 1)]
        drafts.append((max(ordered_at, c[8] + timedelta(hours=1)), c))
    drafts.sort(key=lambda d: d[0])
    orders: list[tuple] = []
    items: list[tuple] = []
    for n, (ordered_at, c) in enumerate(drafts):
        order = _acme_order(rng, 100_001 + n, c[0], c[4], ordered_at, anchor)
        lines = _acme_lines(rng, order, products, popularity, first_id=len(items) + 1)
        items.extend(lines)
        order.total = _order_total(order.channel, lines)
        orders.append(_order_row(order))
    return {
        "customers": customers,
        "products": products,
        "orders": orders,
        "order_items": items,
    }


def _acme_products(rng: random.Random, anchor: datetime) -> list[tuple]:
    rows = []
    names: set[str] = set()
    categories = list(ACME_CATEGORIES)
    for i in range(ACME_SIZES["products"]):
        category = categories[i % len(categories)]
        (low, high), adjectives, nouns = ACME_CATEGORIES[category]
        name = f"{rng.choice(adjectives)} {rng.choice(nouns)}"
        while name in names:
            name = f"{name} {rng.choice(string.ascii_uppercase)}{rng.randint(2, 9)}"
        names.add(name)
        created = anchor - timedelta(days=rng.uniform(400, 900))
        price = _money(round(low + (high - low) * rng.random() ** 2, 0) - 0.01)
        rows.append(
            (
                i + 1,
                f"ACM-{category[:3].upper()}-{1000 + i}",
                name,
                category,
                price,
                rng.random() > 0.08,
                created,
                created + timedelta(days=rng.uniform(0, 380)),
            )
        )
    return rows


def _acme_customers(
    rng: random.Random, anchor: datetime, *, count: int | None = None, first_id: int = 1001
) -> list[tuple]:
    drafts = []
    for _ in range(count or ACME_SIZES["customers"]):
        age = timedelta(days=730 * rng.random() ** 1.6 + 1)
        drafts.append((anchor - age).replace(microsecond=0))
    drafts.sort()
    return [_acme_customer(rng, first_id + n, created, anchor) for n, created in enumerate(drafts)]


def _acme_customer(
    rng: random.Random, customer_id: int, created: datetime, anchor: datetime
) -> tuple:
    first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
    domain = rng.choices(list(ACME_DOMAINS), weights=list(ACME_DOMAINS.values()))[0]
    email = f"{first}.{last}.{customer_id}@{domain}".lower()
    country = rng.choices(list(ACME_COUNTRIES), weights=list(ACME_COUNTRIES.values()))[0]
    phone = f"+{rng.randint(30, 49)} {rng.randint(100, 999)} {rng.randint(100000, 9999999)}"
    updated = min(created + timedelta(days=rng.expovariate(1 / 60)), anchor)
    return (
        customer_id,
        first,
        last.replace("-", " ").title() if "-" in last else last,
        email,
        country,
        phone if rng.random() < 0.7 else None,
        rng.random() < 0.4,
        rng.random() < 0.025,
        created,
        max(updated, created),
    )


def _acme_order(
    rng: random.Random,
    order_id: int,
    customer_id: int,
    country: str,
    ordered_at: datetime,
    anchor: datetime,
) -> _Order:
    channel = rng.choices(list(ACME_CHANNELS), weights=list(ACME_CHANNELS.values()))[0]
    age = anchor - ordered_at
    if rng.random() < 0.005:
        status, lag = "test", timedelta(minutes=5)
    elif age < timedelta(days=1):
        status, lag = rng.choice(("placed", "paid")), timedelta(minutes=rng.uniform(1, 90))
    elif age < timedelta(days=3):
        status = rng.choices(("paid", "shipped"), weights=(4, 6))[0]
        lag = timedelta(hours=rng.uniform(2, 30))
    elif age < timedelta(days=7):
        status = rng.choice(("shipped", "delivered"))
        lag = timedelta(days=rng.uniform(1, 4))
    else:
        status = rng.choices(("delivered", "cancelled", "refunded"), weights=(87, 7, 6))[0]
        lag = {
            "delivered": timedelta(days=rng.uniform(2, 7)),
            "cancelled": timedelta(hours=rng.uniform(1, 24)),
            "refunded": timedelta(days=rng.uniform(10, 40)),
        }[status]
    updated = min(ordered_at + lag, anchor - timedelta(seconds=rng.randint(1, 60)))
    return _Order(
        order_id,
        customer_id,
        channel,
        status,
        ordered_at,
        Decimal(0),
        country,
        max(updated, ordered_at),
    )


def _acme_lines(
    rng: random.Random,
    order: _Order,
    products: Sequence[tuple],
    popularity: Sequence[float],
    *,
    first_id: int,
) -> list[tuple]:
    count = rng.choices((1, 2, 3, 4, 5), weights=(45, 28, 15, 8, 4))[0]
    lines = []
    for k in range(count):
        product = rng.choices(products, weights=popularity)[0]
        quantity = rng.choices((1, 2, 3, 4), weights=(70, 20, 7, 3))[0]
        if rng.random() < 0.007:
            quantity = 0  # a line removed at checkout: left out by the pipeline's filter
        price = product[4]
        if rng.random() < 0.1:
            price = _money(price * Decimal("0.8"))
        lines.append((first_id + k, order.order_id, product[0], quantity, price, order.ordered_at))
    return lines


def _order_total(channel: str, lines: Sequence[tuple]) -> Decimal:
    subtotal = sum((line[3] * line[4] for line in lines), Decimal(0))
    shipping = Decimal("4.95") if channel in ("web", "app") and subtotal < 50 else Decimal(0)
    return _money(subtotal + shipping)


def _order_row(o: _Order) -> tuple:
    return (
        o.order_id,
        o.customer_id,
        o.channel,
        o.status,
        o.ordered_at,
        o.total,
        "EUR",
        o.country,
        o.ordered_at,
        o.updated_at,
    )


_NEXT_STATUS = {"placed": "paid", "paid": "shipped", "shipped": "delivered"}


def _acme_add(conn: Any, rng: random.Random, count: int, now: datetime) -> dict[str, int]:
    """New customers, orders and lines, and status changes of open orders, all with cursors
    newer than every row already there. Runs inside the caller's transaction."""
    from sqlalchemy import text

    def scalar(sql: str) -> Any:
        return conn.execute(text(sql)).scalar()

    last_change = max(
        scalar("SELECT max(updated_at) FROM public.orders"),
        scalar("SELECT max(updated_at) FROM public.customers"),
    )
    next_customer = scalar("SELECT max(customer_id) FROM public.customers") + 1
    next_order = scalar("SELECT max(order_id) FROM public.orders") + 1
    next_item = scalar("SELECT max(order_item_id) FROM public.order_items") + 1
    products = [
        tuple(r)
        for r in conn.execute(
            text(f"SELECT {', '.join(ACME_COLUMNS['products'])} FROM public.products")
        )
    ]
    known = list(conn.execute(text("SELECT customer_id, country_code FROM public.customers")))
    open_orders = list(
        conn.execute(
            text(
                "SELECT order_id, status FROM public.orders WHERE status IN "
                "('placed', 'paid', 'shipped') ORDER BY updated_at, order_id LIMIT :n"
            ),
            {"n": max(1, count // 2)},
        )
    )
    new_customers = max(1, count // 10)
    opt_in_changes = max(1, count // 10)
    times = iter(
        _spread(last_change, now, new_customers + count + len(open_orders) + opt_in_changes)
    )
    customers = []
    for i in range(new_customers):
        at = next(times)
        customers.append(_acme_customer(rng, next_customer + i, at, at))
    known += [(c[0], c[4]) for c in customers]
    popularity = [1.0 + (p[0] % 7) for p in products]
    orders, items = [], []
    for i in range(count):
        at = next(times)
        customer_id, country = rng.choice(known)
        order = _acme_order(rng, next_order + i, customer_id, country, at, at)
        order.status, order.updated_at = rng.choice(("placed", "paid")), at
        lines = _acme_lines(rng, order, products, popularity, first_id=next_item + len(items))
        items.extend(lines)
        order.total = _order_total(order.channel, lines)
        orders.append(_order_row(order))
    updates = [
        {"id": order_id, "status": _NEXT_STATUS[status], "at": next(times)}
        for order_id, status in open_orders
    ]
    opt_ins = [
        {"id": customer_id, "at": next(times)}
        for customer_id, _ in rng.sample(known[: -len(customers)], opt_in_changes)
    ]
    _copy(conn, "public.customers", ACME_COLUMNS["customers"], customers)
    _copy(conn, "public.orders", ACME_COLUMNS["orders"], orders)
    _copy(conn, "public.order_items", ACME_COLUMNS["order_items"], items)
    if updates:
        conn.execute(
            text(
                "UPDATE public.orders SET status = :status, updated_at = :at WHERE order_id = :id"
            ),
            updates,
        )
    conn.execute(
        text(
            "UPDATE public.customers SET marketing_opt_in = NOT marketing_opt_in, "
            "updated_at = :at WHERE customer_id = :id"
        ),
        opt_ins,
    )
    return {
        "customers": len(customers) + len(opt_ins),
        "orders": len(orders) + len(updates),
        "order_items": len(items),
    }


def _copy(conn: Any, table: str, columns: Sequence[str], rows: Iterable[tuple]) -> None:
    """COPY rows into a table through the SQLAlchemy connection's psycopg connection."""
    raw = conn.connection.driver_connection
    with raw.cursor() as cur, cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)


def create_postgres_source(
    admin_url: str,
    database: str = SHOP_DATABASE,
    *,
    add_rows: int = 0,
    now: datetime | None = None,
    seed: str = SEED,
    secret: str | None = None,
    role_prefix: str = "",
) -> SourceInfo:
    """Create acme's shop database, its tables and rows, and the role `acme_reader`.

    `admin_url` is a superuser URL of the server (any database on it). The first call creates
    the database (if missing), the tables and a few thousand rows; later calls keep them and,
    with `add_rows=N`, add N orders (with their lines), N/10 customers, and move up to N/2 open
    orders to their next status and N/10 customers' opt-in, every change with an `updated_at`
    (and ids) newer than any before. `acme_reader` (`role_prefix` + it) may connect and SELECT
    the four tables; its password is in `passwords`, derived from `secret` (default: the admin
    URL's password). Incomplete table sets (a table dropped by hand) are rebuilt.
    """
    from sqlalchemy import create_engine, text
    from sqlalchemy.pool import NullPool

    from fabric.state.engine import create_database

    anchor = _now(now)
    reader = _role_name(role_prefix, SHOP_READER)
    passwords = {reader: demo_secret(_secret(admin_url, secret), SHOP_READER)}
    url = create_database(admin_url, database)
    engine = create_engine(url, poolclass=NullPool)
    added: dict[str, int] = {}
    try:
        _ensure_roles(engine, passwords)
        with engine.begin() as conn:
            conn.execute(text("SELECT pg_advisory_xact_lock(hashtext('fabric-demo-source'))"))
            present = [
                t
                for t in ACME_TABLES
                if conn.execute(text("SELECT to_regclass(:t)"), {"t": f"public.{t}"}).scalar()
            ]
            created = len(present) < len(ACME_TABLES)
            if created:
                for table in reversed(ACME_TABLES):
                    conn.execute(text(f"DROP TABLE IF EXISTS public.{table} CASCADE"))
                conn.exec_driver_sql(ACME_DDL)
                for table, rows in acme_shop_rows(seed=seed, now=anchor).items():
                    _copy(conn, f"public.{table}", ACME_COLUMNS[table], rows)
                conn.execute(text(f"ANALYZE {', '.join(f'public.{t}' for t in ACME_TABLES)}"))
            elif add_rows > 0:
                batch = conn.execute(text("SELECT max(order_id) FROM public.orders")).scalar()
                added = _acme_add(conn, _rng(seed, "acme-add", batch), add_rows, anchor)
            db = engine.dialect.identifier_preparer.quote_identifier(database)
            conn.exec_driver_sql(f"REVOKE ALL ON DATABASE {db} FROM PUBLIC")
            conn.exec_driver_sql(f'GRANT CONNECT ON DATABASE {db} TO "{reader}"')
            conn.exec_driver_sql(f'GRANT USAGE ON SCHEMA public TO "{reader}"')
            tables = ", ".join(f"public.{t}" for t in ACME_TABLES)
            conn.exec_driver_sql(f'GRANT SELECT ON {tables} TO "{reader}"')
            rows = _count(conn, ACME_TABLES, "public.")
    finally:
        engine.dispose()
    server = _server(url)
    return SourceInfo(
        name=database,
        created=created,
        rows=rows,
        added=added,
        passwords=passwords,
        server=server,
    )


def create_warehouse(
    admin_url: str,
    database: str = WAREHOUSE_DATABASE,
    roles: Sequence[str] = WAREHOUSE_LOADERS,
    *,
    secret: str | None = None,
    role_prefix: str = "",
) -> SourceInfo:
    """Create the warehouse database and one login role per tenant loader.

    Each role may connect and create schemas (and temporary tables) in the database: dlt and
    dbt then create and own the tenant's schemas, which the other tenants cannot read. Nobody
    else may connect (the superuser and the database's owner always can).
    """
    from sqlalchemy import create_engine
    from sqlalchemy.pool import NullPool

    from fabric.state.engine import create_database

    key = _secret(admin_url, secret)
    passwords = {_role_name(role_prefix, r): demo_secret(key, r) for r in roles}
    url = create_database(admin_url, database)
    engine = create_engine(url, poolclass=NullPool)
    try:
        _ensure_roles(engine, passwords)
        with engine.begin() as conn:
            db = engine.dialect.identifier_preparer.quote_identifier(database)
            conn.exec_driver_sql(f"REVOKE ALL ON DATABASE {db} FROM PUBLIC")
            for role in passwords:
                conn.exec_driver_sql(
                    f'GRANT CONNECT, CREATE, TEMPORARY ON DATABASE {db} TO "{role}"'
                )
    finally:
        engine.dispose()
    server = _server(url)
    return SourceInfo(
        name=database,
        created=False,
        rows={},
        passwords=passwords,
        server=server,
    )


def drop_roles(admin_url: str, roles: Iterable[str], databases: Iterable[str] = ()) -> None:
    """Drop login roles made here: first their privileges and objects in `databases` (those
    that exist), then the roles.

    Roles are cluster-wide; a role that still owns objects or holds privileges in a database
    not named here cannot be dropped (PostgreSQL says where).
    """
    from sqlalchemy import create_engine, make_url, text
    from sqlalchemy.pool import NullPool

    names = [r for r in roles if _ROLE.match(r)]
    base = make_url(admin_url)
    engine = create_engine(base, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            existing = set(conn.execute(text("SELECT datname FROM pg_database")).scalars())
    finally:
        engine.dispose()
    for database in (d for d in databases if d in existing):
        engine = create_engine(base.set(database=database), poolclass=NullPool)
        try:
            with engine.begin() as conn:
                for role in names:
                    exists = conn.execute(
                        text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": role}
                    ).scalar()
                    if exists:
                        conn.exec_driver_sql(f'DROP OWNED BY "{role}"')
        finally:
            engine.dispose()
    engine = create_engine(base, poolclass=NullPool)
    try:
        with engine.begin() as conn:
            for role in names:
                conn.exec_driver_sql(f'DROP ROLE IF EXISTS "{role}"')
    finally:
        engine.dispose()


def _server(url: str) -> str:
    """The URL without credentials and database: where the server is."""
    from sqlalchemy import URL, make_url

    u = make_url(url)
    return URL.create(u.drivername, host=u.host, port=u.port, query=u.query).render_as_string()


def _secret(admin_url: str, secret: str | None) -> str:
    if secret is not None:
        return secret
    from sqlalchemy import make_url

    return make_url(admin_url).password or SEED


def _role_name(prefix: str, role: str) -> str:
    name = f"{prefix}{role}"
    if not _ROLE.match(name):
        raise ValueError(f"{name!r} is not a usable role name (lowercase letters, digits, _)")
    return name


def _ensure_roles(engine: Any, passwords: Mapping[str, str]) -> None:
    """Create each login role if missing and (re)set its password; safe against a racing run."""
    with engine.begin() as conn:
        for role, password in passwords.items():
            conn.exec_driver_sql(
                f'DO $$ BEGIN CREATE ROLE "{role}" LOGIN; EXCEPTION WHEN duplicate_object '
                "OR unique_violation THEN NULL; END $$"
            )
            verifier = _scram_verifier(password)  # the password itself never reaches a log
            conn.exec_driver_sql(f"ALTER ROLE \"{role}\" WITH LOGIN PASSWORD '{verifier}'")


def _scram_verifier(password: str, iterations: int = 4096) -> str:
    """PostgreSQL's stored form of a SCRAM-SHA-256 password (RFC 5803), made client-side."""
    salt = os.urandom(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    stored = hashlib.sha256(hmac.new(salted, b"Client Key", hashlib.sha256).digest()).digest()
    server = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    b64 = [base64.b64encode(v).decode() for v in (salt, stored, server)]
    return f"SCRAM-SHA-256${iterations}:{b64[0]}${b64[1]}:{b64[2]}"


def _count(conn: Any, tables: Iterable[str], prefix: str = "") -> dict[str, int]:
    from sqlalchemy import text

    return {t: conn.execute(text(f"SELECT count(*) FROM {prefix}{t}")).scalar() for t in tables}


# =============================================================================================
# globex: the ERP export (SQLite)

ERP_TABLES = ("customers", "suppliers", "products", "invoices", "invoice_lines")
ERP_DDL = """
CREATE TABLE customers (
    customer_id   INTEGER PRIMARY KEY,
    name          TEXT NOT NULL,
    segment       TEXT NOT NULL CHECK (segment IN ('enterprise', 'mid_market', 'smb')),
    industry      TEXT NOT NULL,
    country_code  TEXT NOT NULL,
    credit_limit  NUMERIC(12, 2) NOT NULL,
    created_at    TIMESTAMP NOT NULL,
    updated_at    TIMESTAMP NOT NULL
);
CREATE TABLE suppliers (
    supplier_id    INTEGER PRIMARY KEY,
    name           TEXT NOT NULL,
    country_code   TEXT NOT NULL,
    lead_time_days INTEGER NOT NULL,
    is_preferred   BOOLEAN NOT NULL,
    created_at     TIMESTAMP NOT NULL
);
CREATE TABLE products (
    product_id   INTEGER PRIMARY KEY,
    sku          TEXT NOT NULL UNIQUE,
    name         TEXT NOT NULL,
    category     TEXT NOT NULL,
    supplier_id  INTEGER NOT NULL REFERENCES suppliers,
    unit_cost    NUMERIC(12, 2) NOT NULL,
    list_price   NUMERIC(12, 2) NOT NULL,
    is_active    BOOLEAN NOT NULL,
    created_at   TIMESTAMP NOT NULL
);
CREATE TABLE invoices (
    invoice_id     INTEGER PRIMARY KEY,
    invoice_number TEXT NOT NULL UNIQUE,
    customer_id    INTEGER NOT NULL REFERENCES customers,
    invoice_date   DATE NOT NULL,
    due_date       DATE NOT NULL,
    status         TEXT NOT NULL CHECK (status IN ('draft', 'issued', 'paid', 'overdue', 'void')),
    currency       TEXT NOT NULL,
    total_amount   NUMERIC(14, 2) NOT NULL,
    created_at     TIMESTAMP NOT NULL,
    updated_at     TIMESTAMP NOT NULL
);
CREATE INDEX invoices_customer ON invoices (customer_id);
CREATE TABLE invoice_lines (
    invoice_line_id INTEGER PRIMARY KEY,
    invoice_id      INTEGER NOT NULL REFERENCES invoices,
    line_number     INTEGER NOT NULL,
    product_id      INTEGER NOT NULL REFERENCES products,
    quantity        INTEGER NOT NULL,
    unit_price      NUMERIC(12, 2) NOT NULL,
    discount_pct    NUMERIC(5, 2)
);
CREATE INDEX invoice_lines_invoice ON invoice_lines (invoice_id);
"""
ERP_COLUMNS: Mapping[str, Sequence[str]] = {
    "customers": _words(
        "customer_id name segment industry country_code credit_limit created_at updated_at"
    ),
    "suppliers": _words("supplier_id name country_code lead_time_days is_preferred created_at"),
    "products": _words(
        "product_id sku name category supplier_id unit_cost list_price is_active created_at"
    ),
    "invoices": _words(
        "invoice_id invoice_number customer_id invoice_date due_date status currency "
        "total_amount created_at updated_at"
    ),
    "invoice_lines": _words(
        "invoice_line_id invoice_id line_number product_id quantity unit_price discount_pct"
    ),
}
ERP_SIZES = {"customers": 260, "suppliers": 40, "products": 200}
ERP_SEGMENTS = {"enterprise": (15, 1.0), "mid_market": (35, 0.5), "smb": (50, 0.2)}
"""Segment -> (share of customers in %, invoices per month)."""
ERP_CATEGORIES = {
    "Bearings": (4, 60),
    "Fasteners": (0.2, 4),
    "Hydraulics": (40, 900),
    "Motors": (120, 2400),
    "Sensors": (15, 350),
    "Valves": (20, 600),
    "Controllers": (200, 3500),
}
COMPANY_WORDS = _words(
    "Apex Borealis Cascade Delta Evergreen Foundry Granite Harbor Ironwood Juniper "
    "Keystone Lakeside Meridian Northwind Orion Pinnacle Quarry Redwood Summit "
    "Tundra Union Vantage Westfield Yellowstone Zenith Atlas Beacon Cobalt Dynamo "
    "Ember"
)
COMPANY_SUFFIXES = ("Industries", "Manufacturing", "Logistics", "Systems", "Works", "Group", "Co")
INDUSTRIES = ("automotive", "aerospace", "energy", "food", "construction", "pharma", "retail")
GLOBEX_COUNTRIES = {"US": 60, "CA": 12, "MX": 10, "DE": 6, "GB": 6, "JP": 6}


def _ts(moment: datetime) -> str:
    """SQLite's timestamp text (naive UTC), as SQLAlchemy's SQLite dialect reads it back."""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def _company(rng: random.Random, taken: set[str]) -> str:
    while True:
        name = f"{rng.choice(COMPANY_WORDS)} {rng.choice(COMPANY_SUFFIXES)}"
        if name in taken:
            name = f"{rng.choice(COMPANY_WORDS)} {name}"
        if name not in taken:
            taken.add(name)
            return name


def globex_erp_rows(*, seed: str = SEED, now: datetime | None = None) -> dict[str, list[tuple]]:
    """The ERP export's initial rows, per table, in ERP_COLUMNS order. Pure and deterministic."""
    anchor = _now(now)
    rng = _rng(seed, "globex-erp")
    taken: set[str] = set()
    suppliers = []
    for i in range(ERP_SIZES["suppliers"]):
        created = anchor - timedelta(days=rng.uniform(900, 2000))
        country = rng.choices(list(GLOBEX_COUNTRIES), weights=list(GLOBEX_COUNTRIES.values()))[0]
        suppliers.append(
            (
                i + 1,
                _company(rng, taken),
                country,
                rng.randint(3, 60),
                rng.random() < 0.3,
                _ts(created),
            )
        )
    products = []
    categories = list(ERP_CATEGORIES)
    for i in range(ERP_SIZES["products"]):
        category = categories[i % len(categories)]
        low, high = ERP_CATEGORIES[category]
        cost = _money(low + (high - low) * rng.random() ** 2)
        products.append(
            (
                i + 1,
                _erp_sku(i),
                f"{category[:-1]} {rng.choice(string.ascii_uppercase)}{rng.randint(100, 999)}",
                category,
                rng.randint(1, ERP_SIZES["suppliers"]),
                cost,
                _money(cost * Decimal(str(round(rng.uniform(1.25, 1.9), 2)))),
                rng.random() > 0.05,
                _ts(anchor - timedelta(days=rng.uniform(700, 1500))),
            )
        )
    customers = []
    segments = list(ERP_SEGMENTS)
    for i in range(ERP_SIZES["customers"]):
        segment = rng.choices(segments, weights=[ERP_SEGMENTS[s][0] for s in segments])[0]
        created = anchor - timedelta(days=rng.uniform(60, 1400))
        limit = {"enterprise": 500_000, "mid_market": 100_000, "smb": 20_000}[segment]
        customers.append(
            (
                i + 1,
                _company(rng, taken),
                segment,
                rng.choice(INDUSTRIES),
                rng.choices(list(GLOBEX_COUNTRIES), weights=list(GLOBEX_COUNTRIES.values()))[0],
                _money(limit * rng.choice((0.5, 1, 1, 2))),
                _ts(created),
                _ts(created + timedelta(days=rng.uniform(0, 50))),
            )
        )
    drafts: list[tuple[date, tuple]] = []
    start = (anchor - timedelta(days=730)).date()
    for c in customers:
        created = datetime.strptime(c[6], "%Y-%m-%d %H:%M:%S").date()
        per_month = ERP_SEGMENTS[c[2]][1]
        first = max(created, start)
        days = (anchor.date() - first).days
        for _ in range(max(1, round(per_month * days / 30 * rng.uniform(0.6, 1.4)))):
            drafts.append((first + timedelta(days=rng.randrange(max(days, 1))), c))
    drafts.sort(key=lambda d: (d[0], d[1][0]))
    invoices, lines = [], []
    for n, (day, c) in enumerate(drafts):
        invoice, items = _erp_invoice(rng, n + 1, c, day, anchor, products, len(lines) + 1)
        invoices.append(invoice)
        lines.extend(items)
    return {
        "customers": customers,
        "suppliers": suppliers,
        "products": products,
        "invoices": invoices,
        "invoice_lines": lines,
    }


def _erp_sku(i: int) -> str:
    return f"GX-{10001 + i}"


def _erp_invoice(
    rng: random.Random,
    invoice_id: int,
    customer: tuple,
    day: date,
    anchor: datetime,
    products: Sequence[tuple],
    first_line: int,
    *,
    status: str | None = None,
) -> tuple[tuple, list[tuple]]:
    segment = customer[2]
    count = rng.randint(1, {"enterprise": 8, "mid_market": 5, "smb": 3}[segment])
    lines, total = [], Decimal(0)
    for k, product in enumerate(rng.sample(products, count)):
        budget = {"enterprise": 9000, "mid_market": 3000, "smb": 700}[segment]
        quantity = max(1, round(budget * rng.lognormvariate(0, 0.6) / float(product[6])))
        discount = rng.choice(
            (None, None, None, Decimal("5.00"), Decimal("10.00"), Decimal("12.50"))
        )
        price = product[6]
        lines.append((first_line + k, invoice_id, k + 1, product[0], quantity, price, discount))
        total += quantity * price * (1 - (discount or 0) / Decimal(100))
    issued = datetime(day.year, day.month, day.day, 9, tzinfo=UTC) + timedelta(
        minutes=rng.randint(0, 480)
    )
    due = day + timedelta(days={"enterprise": 60, "mid_market": 45, "smb": 30}[segment])
    age = (anchor.date() - day).days
    if status is None:
        if rng.random() < 0.03:
            status = "void"
        elif age < 2 and rng.random() < 0.3:
            status = "draft"
        elif anchor.date() <= due:
            status = rng.choices(("issued", "paid"), weights=(6, 4))[0]
        else:
            status = rng.choices(("paid", "overdue"), weights=(95, 5))[0]
    changed = min(issued + timedelta(days=rng.uniform(0, min(max(age, 0), 70))), anchor)
    invoice = (
        invoice_id,
        f"INV-{day.year}-{invoice_id:06d}",
        customer[0],
        day.isoformat(),
        due.isoformat(),
        status,
        "USD",
        _money(total),
        _ts(issued),
        _ts(max(changed, issued)),
    )
    return invoice, lines


def create_sqlite_source(
    path: Path, *, add_rows: int = 0, now: datetime | None = None, seed: str = SEED
) -> SourceInfo:
    """Create globex's ERP export (a SQLite file), or add `add_rows` invoices to it.

    A missing or incomplete file is written whole to a temporary name and renamed into place,
    so a reader never sees half of it. Added invoices are dated today (with their lines); up to
    `add_rows // 2` issued invoices become paid, a new customer comes with every tenth invoice.
    """
    anchor = _now(now)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    created = not _has_tables(path, ERP_TABLES)
    added: dict[str, int] = {}
    if created:
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.unlink(missing_ok=True)
        with sqlite3.connect(tmp) as db:
            db.executescript(ERP_DDL)
            for table, rows in globex_erp_rows(seed=seed, now=anchor).items():
                _insert(db, table, ERP_COLUMNS[table], rows)
        db.close()
        os.replace(tmp, path)
    elif add_rows > 0:
        db = sqlite3.connect(path)
        try:
            with db:
                added = _erp_add(db, seed, add_rows, anchor)
        finally:
            db.close()
    db = sqlite3.connect(path)
    try:
        rows = {t: db.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ERP_TABLES}
    finally:
        db.close()
    return SourceInfo(name=str(path), created=created, rows=rows, added=added)


def _has_tables(path: Path, tables: Sequence[str]) -> bool:
    if not path.exists():
        return False
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            found = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        finally:
            db.close()
    except sqlite3.DatabaseError:
        return False
    return set(tables) <= found


def _insert(db: sqlite3.Connection, table: str, columns: Sequence[str], rows: Iterable[tuple]):
    marks = ", ".join("?" * len(columns))
    db.executemany(
        f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})",
        ([_sqlite_value(v) for v in row] for row in rows),
    )


def _sqlite_value(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)  # NUMERIC affinity stores it as a number, without float rounding
    if isinstance(value, datetime):
        return _ts(value)
    if isinstance(value, bool):
        return int(value)
    return value


def _erp_add(db: sqlite3.Connection, seed: str, count: int, anchor: datetime) -> dict[str, int]:
    last_invoice = db.execute("SELECT max(invoice_id) FROM invoices").fetchone()[0]
    rng = _rng(seed, "globex-erp-add", last_invoice)
    last_change = db.execute(
        "SELECT max(m) FROM (SELECT max(updated_at) AS m FROM invoices "
        "UNION ALL SELECT max(updated_at) FROM customers)"
    ).fetchone()[0]
    since = datetime.strptime(last_change, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
    products = [
        tuple(r) for r in db.execute(f"SELECT {', '.join(ERP_COLUMNS['products'])} FROM products")
    ]
    products = [(*p[:5], Decimal(str(p[5])), _money(p[6]), *p[7:]) for p in products]
    customers = [tuple(r) for r in db.execute("SELECT customer_id, name, segment FROM customers")]
    next_customer = max(c[0] for c in customers) + 1
    next_line = db.execute("SELECT max(invoice_line_id) FROM invoice_lines").fetchone()[0] + 1
    issued = [
        r[0]
        for r in db.execute(
            "SELECT invoice_id FROM invoices WHERE status = 'issued' "
            "ORDER BY invoice_date, invoice_id LIMIT ?",
            (max(1, count // 2),),
        )
    ]
    new_customers = max(1, count // 10)
    times = iter(_spread(since, anchor, new_customers + count + len(issued)))
    taken = {c[1] for c in customers}
    fresh = []
    segments = list(ERP_SEGMENTS)
    for i in range(new_customers):
        at = _ts(next(times))
        segment = rng.choices(segments, weights=[ERP_SEGMENTS[s][0] for s in segments])[0]
        fresh.append(
            (
                next_customer + i,
                _company(rng, taken),
                segment,
                rng.choice(INDUSTRIES),
                rng.choice(list(GLOBEX_COUNTRIES)),
                _money(20_000),
                at,
                at,
            )
        )
    customers += [(c[0], c[1], c[2]) for c in fresh]
    invoices, lines = [], []
    for i in range(count):
        at = next(times)
        customer = rng.choice(customers)
        invoice, items = _erp_invoice(
            rng,
            last_invoice + 1 + i,
            customer,
            at.date(),
            at,
            products,
            next_line + len(lines),
            status="issued",
        )
        invoices.append((*invoice[:8], _ts(at), _ts(at)))
        lines.extend(items)
    _insert(db, "customers", ERP_COLUMNS["customers"], fresh)
    _insert(db, "invoices", ERP_COLUMNS["invoices"], invoices)
    _insert(db, "invoice_lines", ERP_COLUMNS["invoice_lines"], lines)
    db.executemany(
        "UPDATE invoices SET status = 'paid', updated_at = ? WHERE invoice_id = ?",
        [(_ts(next(times)), invoice_id) for invoice_id in issued],
    )
    return {
        "customers": len(fresh),
        "invoices": len(invoices) + len(issued),
        "invoice_lines": len(lines),
    }


# =============================================================================================
# globex: partner and plant file drops (CSV, JSON Lines, parquet)

PARTNERS = ("P-ACME", "P-INITECH", "P-HOOLI", "P-UMBRELLA", "P-STARK", "P-WAYNE", "P-TYRELL")
PARTNER_COLUMNS = _words(
    "partner_id po_number sku quantity unit_price currency requested_date status submitted_at"
)
PO_STATUSES = ("open", "confirmed", "shipped", "cancelled")
MACHINES = tuple(f"M-{100 + i}" for i in range(1, 13))
MACHINE_STATES = {"running": (70, 40, 240), "idle": (22, 5, 40), "down": (8, 5, 45)}
"""State -> (weight, min minutes, max minutes)."""
STATE_REASONS = {
    "running": ("production",),
    "idle": ("changeover", "no_material", "break", "no_operator"),
    "down": ("jam", "maintenance", "electrical", "tooling"),
}
SENSOR_METRICS = {
    "temperature": ("degC", 60.0, 8.0),
    "vibration": ("mm_s", 3.0, 1.2),
    "pressure": ("bar", 6.0, 0.6),
}
EVENT_DAYS = 14
CURRENT_SENSOR_DAYS = 3


def create_file_drops(
    folder: Path, *, add_files: int = 0, now: datetime | None = None, seed: str = SEED
) -> SourceInfo:
    """Write globex's file drops under `folder` (example-repo's `data/globex/drops`).

    - `orders/po_NNNN_YYYYMMDD.csv`: partner purchase orders, one row per (partner_id,
      po_number); later drops also repeat some earlier orders with a new status (the pipeline
      merges them on that key).
    - `events/machine_events_NNNN.jsonl`: machine state changes (running, idle, down) of 12
      machines, one file per day for the last two weeks, then one per drop.
    - `sensors/sensor_readings_YYYY_MM.parquet`: daily aggregates of two past months (the
      connection's glob); `sensors/current/sensor_readings_NNNN.parquet`: hourly aggregates of
      the last three days, then one hour per drop (the sensor_readings pipeline's glob).

    A feed without files is written from scratch; otherwise `add_files=N` adds N drops to each
    feed. Every file is written under a temporary name and renamed, so a listing never sees a
    partial file, and existing files are never touched (their modification dates stay put).
    """
    anchor = _now(now)
    folder = Path(folder)
    written: list[Path] = []
    added: dict[str, int] = {}
    created = False
    feeds = (
        ("partner_orders", "orders", "*.csv", _initial_orders, _more_orders),
        ("machine_events", "events", "*.jsonl", _initial_events, _more_events),
        ("sensor_readings", "sensors/current", "*.parquet", _initial_sensors, _more_sensors),
    )
    for table, sub, glob, initial, more in feeds:
        where = folder / sub
        where.mkdir(parents=True, exist_ok=True)
        if not any(where.glob(glob)):
            created = True
            written += initial(where, _rng(seed, table), anchor)
        elif add_files > 0:
            before = len(written)
            for _ in range(add_files):
                batch = len(list(where.glob(glob)))
                written += more(where, _rng(seed, table, batch), anchor)
            added[table] = sum(_file_rows(p) for p in written[before:])
    archive = folder / "sensors"
    if not any(archive.glob("*.parquet")):
        written += _sensor_archive(archive, _rng(seed, "sensor-archive"), anchor)
    rows = {
        "partner_orders": sum(_file_rows(p) for p in sorted((folder / "orders").glob("*.csv"))),
        "machine_events": sum(_file_rows(p) for p in sorted((folder / "events").glob("*.jsonl"))),
        "sensor_readings": sum(
            _file_rows(p) for p in sorted((folder / "sensors/current").glob("*.parquet"))
        ),
    }
    return SourceInfo(
        name=str(folder),
        created=created,
        rows=rows,
        added=added,
        files=tuple(p.relative_to(folder).as_posix() for p in written),
    )


def _file_rows(path: Path) -> int:
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.ParquetFile(path).metadata.num_rows
    with path.open("rb") as f:
        lines = sum(1 for line in f if line.strip())
    return lines - 1 if path.suffix == ".csv" else lines


def _write_atomically(path: Path, data: bytes) -> Path:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return path


def _po_rows(
    rng: random.Random, count: int, first_po: int, submitted: datetime
) -> list[dict[str, Any]]:
    rows = []
    for i in range(count):
        sku = _erp_sku(rng.randrange(ERP_SIZES["products"]))
        rows.append(
            {
                "partner_id": rng.choice(PARTNERS),
                "po_number": f"PO-{first_po + i}",
                "sku": sku,
                "quantity": rng.choice((5, 10, 20, 25, 50, 100, 200)),
                "unit_price": f"{rng.uniform(2, 1800):.2f}",
                "currency": "USD",
                "requested_date": (submitted + timedelta(days=rng.randint(7, 45))).date(),
                "status": rng.choices(PO_STATUSES, weights=(60, 25, 10, 5))[0],
                "submitted_at": submitted + timedelta(minutes=i),
            }
        )
    return rows


def _csv_bytes(rows: Sequence[Mapping[str, Any]]) -> bytes:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=PARTNER_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _csv_value(v) for k, v in row.items()})
    return out.getvalue().encode()


def _csv_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if isinstance(value, date):
        return value.isoformat()
    return value


def _initial_orders(where: Path, rng: random.Random, anchor: datetime) -> list[Path]:
    written, po = [], 50001
    for n in range(6):
        submitted = (anchor - timedelta(days=6 * (6 - n) + 1)).replace(hour=7, minute=0, second=0)
        rows = _po_rows(rng, 40, po, submitted)
        po += len(rows)
        name = f"po_{n + 1:04d}_{submitted:%Y%m%d}.csv"
        written.append(_write_atomically(where / name, _csv_bytes(rows)))
    return written


def _more_orders(where: Path, rng: random.Random, anchor: datetime) -> list[Path]:
    files = sorted(where.glob("*.csv"))
    seen: dict[tuple[str, str], list[dict[str, str]]] = {}
    for path in files:
        with path.open(newline="") as f:
            for row in csv.DictReader(f):
                seen.setdefault((row["partner_id"], row["po_number"]), []).append(row)
    last_po = max(int(k[1].removeprefix("PO-")) for k in seen)
    rows = _po_rows(rng, 12, last_po + 1, anchor)
    once_open = [rs[0] for rs in seen.values() if len(rs) == 1 and rs[0]["status"] == "open"]
    for row in rng.sample(once_open, min(3, len(once_open))):
        rows.append({**row, "status": "confirmed", "submitted_at": anchor})
    name = f"po_{len(files) + 1:04d}_{anchor:%Y%m%d}.csv"
    return [_write_atomically(where / name, _csv_bytes(rows))]


def _machine_events(
    rng: random.Random,
    state: dict[str, tuple[str, datetime]],
    until: datetime,
    first_id: int,
) -> list[dict[str, Any]]:
    """Events of every machine from its last (state, time) up to `until`, in time order."""
    events = []
    states = list(MACHINE_STATES)
    for machine in MACHINES:
        current, at = state[machine]
        while True:
            _, low, high = MACHINE_STATES[current]
            at = at + timedelta(minutes=rng.uniform(low, high), seconds=rng.randint(0, 59))
            if at > until:
                break
            current = rng.choices(
                [s for s in states if s != current],
                weights=[MACHINE_STATES[s][0] for s in states if s != current],
            )[0]
            events.append((at.replace(microsecond=0), machine, current))
            state[machine] = (current, at)
    events.sort()
    return [
        {
            "event_id": first_id + i,
            "machine_id": machine,
            "plant": "CHI-1",
            "line": f"L{(int(machine[2:]) - 101) // 4 + 1}",
            "state": current,
            "reason": rng.choice(STATE_REASONS[current]),
            "event_at": at.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "temperature_c": round(rng.gauss(68 if current == "running" else 45, 4), 1),
        }
        for i, (at, machine, current) in enumerate(events)
    ]


def _jsonl(rows: Iterable[Mapping[str, Any]]) -> bytes:
    return "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in rows).encode()


def _initial_events(where: Path, rng: random.Random, anchor: datetime) -> list[Path]:
    start = (anchor - timedelta(days=EVENT_DAYS)).replace(hour=0, minute=0, second=0)
    state = {m: ("running", start + timedelta(minutes=rng.randint(0, 30))) for m in MACHINES}
    written, next_id = [], 1
    for n in range(EVENT_DAYS):
        until = min(start + timedelta(days=n + 1), anchor - timedelta(hours=6))
        events = _machine_events(rng, state, until, next_id)
        next_id += len(events)
        written.append(
            _write_atomically(where / f"machine_events_{n + 1:04d}.jsonl", _jsonl(events))
        )
    return written


def _more_events(where: Path, rng: random.Random, anchor: datetime) -> list[Path]:
    files = sorted(where.glob("*.jsonl"))
    state: dict[str, tuple[str, datetime]] = {}
    last_id = 0
    for path in reversed(files):
        for line in path.read_text().splitlines():
            if line.strip():
                e = json.loads(line)
                at = datetime.fromisoformat(e["event_at"].replace("Z", "+00:00"))
                last_id = max(last_id, e["event_id"])
                if e["machine_id"] not in state or state[e["machine_id"]][1] < at:
                    state[e["machine_id"]] = (e["state"], at)
        if len(state) == len(MACHINES):
            break
    latest = max(at for _, at in state.values())
    for machine in MACHINES:
        state.setdefault(machine, ("running", latest))
    # a few events per machine: up to 2 hours past the newest one, or up to now if later
    events = _machine_events(rng, state, max(latest + timedelta(hours=2), anchor), last_id + 1)
    name = f"machine_events_{len(files) + 1:04d}.jsonl"
    return [_write_atomically(where / name, _jsonl(events))]


def _sensor_table(rng: random.Random, hours: Sequence[datetime], granularity: str) -> Any:
    import pyarrow as pa

    columns: dict[str, list[Any]] = {
        k: []
        for k in _words(
            "sensor_id machine_id metric unit period_start granularity avg_value min_value "
            "max_value sample_count"
        )
    }
    for start in hours:
        for machine in MACHINES:
            for metric, (unit, mean, spread) in SENSOR_METRICS.items():
                avg = rng.gauss(mean, spread / 3)
                low, high = avg - rng.uniform(0, spread), avg + rng.uniform(0, spread)
                columns["sensor_id"].append(f"{machine}-{metric[:4].upper()}")
                columns["machine_id"].append(machine)
                columns["metric"].append(metric)
                columns["unit"].append(unit)
                columns["period_start"].append(start)
                columns["granularity"].append(granularity)
                columns["avg_value"].append(round(avg, 3))
                columns["min_value"].append(round(low, 3))
                columns["max_value"].append(round(high, 3))
                columns["sample_count"].append(3600 if granularity == "hour" else 86400)
    schema = pa.schema(
        [
            ("sensor_id", pa.string()),
            ("machine_id", pa.string()),
            ("metric", pa.string()),
            ("unit", pa.string()),
            ("period_start", pa.timestamp("us", tz="UTC")),
            ("granularity", pa.string()),
            ("avg_value", pa.float64()),
            ("min_value", pa.float64()),
            ("max_value", pa.float64()),
            ("sample_count", pa.int64()),
        ]
    )
    return pa.table(columns, schema=schema)


def _parquet_bytes(table: Any) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue().to_pybytes()


def _initial_sensors(where: Path, rng: random.Random, anchor: datetime) -> list[Path]:
    last_hour = anchor.replace(minute=0, second=0) - timedelta(hours=1)
    written = []
    for n in range(CURRENT_SENSOR_DAYS):
        end = last_hour - timedelta(days=CURRENT_SENSOR_DAYS - 1 - n)
        hours = [end - timedelta(hours=23 - h) for h in range(24)]
        data = _parquet_bytes(_sensor_table(rng, hours, "hour"))
        written.append(_write_atomically(where / f"sensor_readings_{n + 1:04d}.parquet", data))
    return written


def _more_sensors(where: Path, rng: random.Random, anchor: datetime) -> list[Path]:
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    files = sorted(where.glob("*.parquet"))
    last = pc.max(pq.read_table(files[-1], columns=["period_start"])["period_start"]).as_py()
    data = _parquet_bytes(_sensor_table(rng, [last + timedelta(hours=1)], "hour"))
    return [_write_atomically(where / f"sensor_readings_{len(files) + 1:04d}.parquet", data)]


def _sensor_archive(where: Path, rng: random.Random, anchor: datetime) -> list[Path]:
    first_of_month = anchor.replace(day=1, hour=0, minute=0, second=0)
    written = []
    for back in (2, 1):
        start = first_of_month
        for _ in range(back):
            start = (start - timedelta(days=1)).replace(day=1)
        days, day = [], start
        while day.month == start.month:
            days.append(day)
            day += timedelta(days=1)
        name = f"sensor_readings_{start:%Y_%m}.parquet"
        data = _parquet_bytes(_sensor_table(rng, days, "day"))
        written.append(_write_atomically(where / name, data))
    return written


def iter_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """The objects of a JSON Lines file (for tests and the demo's summary)."""
    with path.open() as f:
        for line in f:
            if line.strip():
                yield json.loads(line)
