"""initech's billing and support APIs, served on this machine for `fabric demo`.  [shell]

Endpoints (JSON; every one needs its credentials, else 401):

- billing, `Authorization: Bearer <tokens["billing"]>`, page-number pagination
  (`page` from 1, `per_page` up to 500; items under `data`, `meta.total_pages`):
  `GET /api/billing/customers`, `/api/billing/subscriptions` (`status=all`, or one status;
  without it canceled subscriptions are left out), `/api/billing/invoices` (`status`,
  `customer_id`), `/api/billing/plans` (one page).
- support, `X-API-Key: <tokens["support"]>`, offset pagination (`offset`, `limit` up to 500;
  items under `items`, the count in `total`): `GET /api/support/tickets` (closed tickets only
  with `include_closed=true`), `/api/support/ratings`.

Every list endpoint also takes `updated_since` (ISO timestamp). This is exactly what
example-repo's `billing_api` and `support_api` connections ask for. The data is generated once
per server from a seed, an anchor time and the times of later demo runs (`growth`): each of
those adds a few customers, trials, tickets and ratings and changes a few subscriptions and
tickets, dated then, so the same arguments always serve the same data.
"""

from __future__ import annotations

import hmac
import json
import random
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from fabric.demo.sources import SEED

__all__ = ["ApiData", "DemoApiServer", "initech_api_data", "serve_demo_api"]

MAX_PAGE_SIZE = 500
CRM_ACCOUNTS = range(10001, 10401)
"""initech's CRM account ids (the crm_db source, not served here); billing customers and
tickets point at them."""
PLANS = (
    # plan_id, name, billing_interval, amount_cents per seat
    ("starter_month", "Starter", "month", 2900),
    ("starter_year", "Starter", "year", 29000),
    ("team_month", "Team", "month", 9900),
    ("team_year", "Team", "year", 99000),
    ("business_month", "Business", "month", 29900),
    ("business_year", "Business", "year", 299000),
    ("enterprise_year", "Enterprise", "year", 1200000),
)
TIERS = {
    "starter": (35, 1, 3),
    "team": (35, 2, 25),
    "business": (22, 5, 60),
    "enterprise": (8, 3, 12),
}
"""Plan family -> (share of customers in %, min seats, max seats)."""
PRIORITIES = {"low": 25, "normal": 50, "high": 18, "urgent": 7}
FIRST_RESPONSE_HOURS = {"low": 20.0, "normal": 8.0, "high": 3.0, "urgent": 1.0}
SUBJECTS = (
    "Cannot log in after password reset",
    "Invoice shows the wrong number of seats",
    "Export to CSV times out",
    "How do I add a user?",
    "SSO configuration with Okta",
    "API rate limit questions",
    "Dashboard loads slowly",
    "Change billing address",
    "Webhook deliveries failing",
    "Feature request: dark mode",
    "Data import stuck at 99%",
    "Cancel my subscription",
)
TAGS = ("billing", "login", "performance", "integration", "how-to", "bug", "feature-request")
AGENTS = ("samir", "michael", "joanna", "lawrence", "dom", "anne")
COMPANIES = (
    "Penetrode",
    "Chotchkie",
    "Vandelay",
    "Bluth",
    "Dunder",
    "Prestige",
    "Soylent",
    "Wonka",
    "Cyberdyne",
    "Gringotts",
    "Monarch",
    "Oscorp",
    "Sterling",
    "Hooli",
    "Pied",
    "Massive",
    "Globo",
    "Stark",
    "Wayne",
    "Nakatomi",
    "Tyrell",
    "Virtucon",
)


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse(value: str) -> datetime:
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _ident(rng: random.Random, prefix: str, taken: set[str]) -> str:
    alphabet = "abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"
    while True:
        value = prefix + "".join(rng.choices(alphabet, k=14))
        if value not in taken:
            taken.add(value)
            return value


@dataclass(frozen=True, slots=True)
class ApiData:
    """What the server serves: one tuple of JSON objects per resource, in id order."""

    customers: tuple[dict[str, Any], ...]
    subscriptions: tuple[dict[str, Any], ...]
    invoices: tuple[dict[str, Any], ...]
    plans: tuple[dict[str, Any], ...]
    tickets: tuple[dict[str, Any], ...]
    ratings: tuple[dict[str, Any], ...]


@dataclass
class _Builder:
    rng: random.Random
    anchor: datetime
    taken: set[str] = field(default_factory=set)
    customers: list[dict[str, Any]] = field(default_factory=list)
    subscriptions: list[dict[str, Any]] = field(default_factory=list)
    invoices: list[dict[str, Any]] = field(default_factory=list)
    tickets: list[dict[str, Any]] = field(default_factory=list)
    ratings: list[dict[str, Any]] = field(default_factory=list)

    # -- billing ------------------------------------------------------------------------------

    def customer(self, account_id: int, created: datetime) -> dict[str, Any]:
        rng = self.rng
        company = f"{rng.choice(COMPANIES)} {rng.choice(('Inc', 'LLC', 'Corp', 'Ltd', 'GmbH'))}"
        country = rng.choices(("US", "CA", "GB", "DE", "AU"), weights=(60, 10, 12, 10, 8))[0]
        row = {
            "customer_id": _ident(rng, "cus_", self.taken),
            "crm_account_id": account_id,
            "name": company,
            "email": f"billing+{account_id}@{company.split()[0].lower()}.example",
            "currency": "usd",
            "delinquent": False,
            "address": {
                "line1": f"{rng.randint(1, 999)} {rng.choice(('Main', 'Oak', 'Elm'))} St",
                "city": rng.choice(("Austin", "Toronto", "London", "Berlin", "Sydney")),
                "postal_code": f"{rng.randint(10000, 99999)}",
                "country": country,
            },
            "created_at": _iso(created),
            "updated_at": _iso(created),
        }
        self.customers.append(row)
        return row

    def subscription(
        self, customer: dict[str, Any], started: datetime, *, status: str | None = None
    ) -> dict[str, Any]:
        rng = self.rng
        family = rng.choices(list(TIERS), weights=[t[0] for t in TIERS.values()])[0]
        interval = "year" if family == "enterprise" else rng.choices(("month", "year"), (65, 35))[0]
        plan = next(p for p in PLANS if p[0] == f"{family}_{interval}")
        seats = rng.randint(TIERS[family][1], TIERS[family][2])
        age = self.anchor - started
        canceled = None
        if status is None:
            if age < timedelta(days=14):
                status = "trialing"
            else:
                status = rng.choices(("active", "past_due", "canceled"), weights=(72, 5, 23))[0]
                if status == "canceled":
                    canceled = started + timedelta(days=rng.uniform(20, age.days))
        row = {
            "subscription_id": _ident(rng, "sub_", self.taken),
            "customer_id": customer["customer_id"],
            "plan_id": plan[0],
            "status": status,
            "billing_interval": interval,
            "quantity": seats,
            "amount_cents": plan[3] * seats,
            "currency": "usd",
            "started_at": _iso(started),
            "trial_end": _iso(started + timedelta(days=14)),
            "canceled_at": _iso(canceled),
            "updated_at": _iso(canceled or started),
        }
        self.subscriptions.append(row)
        return row

    def bill(self, sub: dict[str, Any], since: datetime) -> None:
        """One invoice per billing period of `sub`, for periods starting after `since`."""
        rng = self.rng
        start = _parse(sub["started_at"]) + timedelta(days=14)  # after the trial
        end = _parse(sub["canceled_at"]) if sub["canceled_at"] else self.anchor
        step = timedelta(days=30 if sub["billing_interval"] == "month" else 365)
        period = start
        while period < end:
            if period >= since:
                recent = self.anchor - period < timedelta(days=7)
                last = period + step >= end
                if sub["status"] == "past_due" and last:
                    status = "uncollectible" if rng.random() < 0.3 else "open"
                elif recent:
                    status = rng.choice(("open", "paid"))
                else:
                    status = "void" if rng.random() < 0.01 else "paid"
                paid = period + timedelta(hours=rng.uniform(0, 96)) if status == "paid" else None
                paid = min(paid, self.anchor) if paid else None
                self.invoices.append(
                    {
                        "invoice_id": _ident(rng, "in_", self.taken),
                        "customer_id": sub["customer_id"],
                        "subscription_id": sub["subscription_id"],
                        "status": status,
                        "amount_due_cents": sub["amount_cents"],
                        "amount_paid_cents": sub["amount_cents"] if paid else 0,
                        "currency": "usd",
                        "period_start": _iso(period),
                        "period_end": _iso(period + step),
                        "created_at": _iso(period),
                        "paid_at": _iso(paid),
                        "updated_at": _iso(paid or period),
                    }
                )
            period += step

    # -- support ------------------------------------------------------------------------------

    def ticket(self, ticket_id: int, account_id: int, created: datetime) -> dict[str, Any]:
        rng = self.rng
        priority = rng.choices(list(PRIORITIES), weights=list(PRIORITIES.values()))[0]
        age = self.anchor - created
        first = created + timedelta(hours=rng.expovariate(1 / FIRST_RESPONSE_HOURS[priority]))
        solved = first + timedelta(hours=rng.expovariate(1 / 30))
        if rng.random() < 0.12:  # waiting on the customer, or on engineering
            solved += timedelta(days=rng.uniform(2, 25))
        if first > self.anchor or (age < timedelta(hours=4) and rng.random() < 0.5):
            status, first, solved = "new", None, None
        elif solved > self.anchor:
            status, solved = rng.choice(("open", "pending")), None
        else:
            status = "closed" if self.anchor - solved > timedelta(days=4) else "solved"
        row = {
            "ticket_id": ticket_id,
            "account_id": account_id,
            "requester_email": f"user{rng.randint(1, 60)}@acct{account_id}.example",
            "subject": rng.choice(SUBJECTS),
            "priority": priority,
            "status": status,
            "channel": rng.choices(("email", "web", "chat", "phone"), weights=(40, 30, 20, 10))[0],
            "assignee": rng.choice(AGENTS) if first else None,
            "tags": sorted(rng.sample(TAGS, rng.randint(0, 3))),
            "created_at": _iso(created),
            "first_response_at": _iso(first),
            "solved_at": _iso(solved),
            "updated_at": _iso(solved or first or created),
        }
        self.tickets.append(row)
        return row

    def rate(self, ticket: dict[str, Any]) -> None:
        rng = self.rng
        score = rng.choices((5, 4, 3, 2, 1), weights=(45, 30, 12, 7, 6))[0]
        comment = None
        if rng.random() < 0.4:
            comment = {
                5: "Great help, thanks!",
                4: "Solved, took a while.",
                3: "OK.",
                2: "Slow answer.",
                1: "Still not fixed.",
            }[score]
        self.ratings.append(
            {
                "rating_id": len(self.ratings) + 1,
                "ticket_id": ticket["ticket_id"],
                "score": score,
                "comment": comment,
                "created_at": _iso(
                    _parse(ticket["solved_at"]) + timedelta(hours=rng.uniform(1, 20))
                ),
            }
        )


def initech_api_data(
    *, seed: str = SEED, anchor: datetime | None = None, growth: Sequence[datetime] = ()
) -> ApiData:
    """The APIs' data: a base generated at `anchor` (default: now), then one batch of changes
    per instant in `growth` (each must be later than the anchor). Pure and deterministic."""
    now = (anchor or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0)
    b = _Builder(random.Random(f"{seed}:initech"), now)
    accounts = list(CRM_ACCOUNTS)
    billed = b.rng.sample(accounts, 360)
    created = sorted(now - timedelta(days=b.rng.uniform(1, 1100)) for _ in billed)
    for account_id, when in zip(billed, created, strict=True):
        customer = b.customer(account_id, when.replace(microsecond=0))
        started = _parse(customer["created_at"]) + timedelta(hours=b.rng.uniform(0, 72))
        if b.rng.random() < 0.2 and now - started > timedelta(days=200):
            # an earlier subscription, canceled when the customer changed plans
            first = b.subscription(customer, started, status="canceled")
            started = started + timedelta(days=b.rng.uniform(60, (now - started).days - 30))
            first["canceled_at"] = first["updated_at"] = _iso(started)
        b.subscription(customer, min(started, now - timedelta(hours=1)))
    since = now - timedelta(days=455)
    for sub in b.subscriptions:
        if sub["status"] != "trialing":
            b.bill(sub, since)
    seats = {c["crm_account_id"]: 1 for c in b.customers}
    for sub in b.subscriptions:
        if sub["status"] != "canceled":
            account = next(c for c in b.customers if c["customer_id"] == sub["customer_id"])
            seats[account["crm_account_id"]] += sub["quantity"]
    weights = [seats.get(a, 1) ** 0.5 for a in accounts]
    opened = sorted(now - timedelta(days=180 * (1 - b.rng.random() ** 0.5)) for _ in range(1400))
    for n, when in enumerate(opened):
        account = b.rng.choices(accounts, weights=weights)[0]
        ticket = b.ticket(50001 + n, account, when.replace(microsecond=0))
        if ticket["solved_at"] and b.rng.random() < 0.55:
            b.rate(ticket)
    previous = now
    for batch, moment in enumerate(sorted(growth), start=1):
        _grow(b, random.Random(f"{seed}:initech-growth:{batch}"), previous, moment, accounts)
        previous = moment
    b.invoices.sort(key=lambda i: (i["created_at"], i["invoice_id"]))
    for n, invoice in enumerate(b.invoices, start=1):
        invoice["number"] = f"INI-{n:06d}"
    return ApiData(
        customers=tuple(b.customers),
        subscriptions=tuple(b.subscriptions),
        invoices=tuple(b.invoices),
        plans=tuple(
            {
                "plan_id": plan_id,
                "name": name,
                "billing_interval": interval,
                "amount_cents": cents,
                "currency": "usd",
                "per_seat": True,
                "trial_days": 14,
                "is_public": plan_id != "enterprise_year",
                "created_at": "2021-01-04T09:00:00Z",
            }
            for plan_id, name, interval, cents in PLANS
        ),
        tickets=tuple(b.tickets),
        ratings=tuple(b.ratings),
    )


def _grow(
    b: _Builder, rng: random.Random, since: datetime, until: datetime, accounts: Sequence[int]
) -> None:
    """One demo run's worth of changes, dated in (since, until]."""
    b.rng, b.anchor = rng, until
    until = max(until, since + timedelta(seconds=30))

    def at() -> datetime:
        return (since + (until - since) * rng.uniform(0.05, 1)).replace(microsecond=0)

    billed = {c["crm_account_id"] for c in b.customers}
    for account_id in rng.sample([a for a in accounts if a not in billed], 2):
        customer = b.customer(account_id, at())
        b.subscription(customer, _parse(customer["created_at"]), status="trialing")
    moves = {"trialing": "active", "active": "past_due", "past_due": "active"}
    candidates = [s for s in b.subscriptions if s["status"] in moves]
    for sub in rng.sample(candidates, min(3, len(candidates))):
        sub["status"], sub["updated_at"] = moves[sub["status"]], _iso(at())
    next_id = b.tickets[-1]["ticket_id"] + 1
    for n, when in enumerate(sorted(at() for _ in range(10))):
        b.ticket(next_id + n, rng.choice(accounts), when)
    waiting = [t for t in b.tickets if t["status"] in ("open", "pending")]
    for ticket in rng.sample(waiting, min(3, len(waiting))):
        solved = max(at(), _parse(ticket["first_response_at"]) + timedelta(minutes=5))
        ticket.update(status="solved", solved_at=_iso(solved), updated_at=_iso(solved))
        b.rate(ticket)
    for invoice in [i for i in b.invoices if i["status"] == "open"][:3]:
        paid = max(at(), _parse(invoice["created_at"]))
        invoice.update(status="paid", paid_at=_iso(paid), updated_at=_iso(paid))
        invoice["amount_paid_cents"] = invoice["amount_due_cents"]


# -- the server ---------------------------------------------------------------------------------


class _HttpError(Exception):
    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.headers = dict(headers or {})


def _int(query: Mapping[str, list[str]], name: str, default: int, low: int, high: int) -> int:
    raw = query.get(name, [str(default)])[-1]
    try:
        value = int(raw)
    except ValueError:
        raise _HttpError(400, f"{name} must be an integer") from None
    if not low <= value <= high:
        raise _HttpError(400, f"{name} must be between {low} and {high}")
    return value


def _flag(query: Mapping[str, list[str]], name: str) -> bool:
    return query.get(name, ["false"])[-1].lower() in ("1", "true", "yes")


def _updated_since(
    rows: Sequence[dict[str, Any]], query: Mapping[str, list[str]]
) -> list[dict[str, Any]]:
    if "updated_since" not in query:
        return list(rows)
    try:
        since = _parse(query["updated_since"][-1])
    except ValueError:
        raise _HttpError(400, "updated_since must be an ISO 8601 timestamp") from None
    key = "updated_at"
    return [r for r in rows if _parse(r.get(key) or r["created_at"]) >= since]


def _where(rows: list[dict[str, Any]], query: Mapping[str, list[str]], *names: str) -> list:
    for name in names:
        if name in query:
            rows = [r for r in rows if str(r.get(name)) == query[name][-1]]
    return rows


class DemoApiServer:
    """The running server: `url` is its root (`http://127.0.0.1:PORT`), `base_url` the
    `.../api` prefix the connections use. Use it as a context manager or call `close()`."""

    def __init__(
        self, httpd: ThreadingHTTPServer, data: ApiData, requests: list[tuple[str, str, int]]
    ) -> None:
        self._httpd = httpd
        self.data = data
        self.host, self.port = httpd.server_address[:2]
        self.requests = requests
        """(method, path with query, status) of every request, in order; never headers."""
        self._thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": 0.05},  # close() waits for one poll at most
            name=f"fabric-demo-api:{self.port}",
            daemon=True,
        )
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.url}/api"

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> DemoApiServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"DemoApiServer({self.url!r})"


def serve_demo_api(
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    tokens: Mapping[str, str],
    seed: str = SEED,
    anchor: datetime | None = None,
    growth: Sequence[datetime] = (),
) -> DemoApiServer:
    """Start the billing and support APIs in a daemon thread; `port=0` picks a free port.

    `tokens["billing"]` is the bearer token of the billing API, `tokens["support"]` the
    `X-API-Key` of the support API. Raises OSError when the port is taken.
    """
    for name in ("billing", "support"):
        if not tokens.get(name):
            raise ValueError(f"tokens[{name!r}] is needed")
    data = initech_api_data(seed=seed, anchor=anchor, growth=growth)
    routes = _routes(data)
    billing_auth = f"Bearer {tokens['billing']}".encode()
    support_key = tokens["support"].encode()
    log: list[tuple[str, str, int]] = []

    class Handler(BaseHTTPRequestHandler):
        server_version = "initech-demo-api/1.0"
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            query = parse_qs(url.query, keep_blank_values=True)
            path = url.path.rstrip("/")
            try:
                route = routes.get(path)
                if route is None:
                    raise _HttpError(404, f"no such endpoint: {url.path}")
                if path.startswith("/api/billing/"):
                    given = (self.headers.get("Authorization") or "").encode()
                    if not hmac.compare_digest(given, billing_auth):
                        raise _HttpError(
                            401,
                            "missing or invalid bearer token",
                            {"WWW-Authenticate": 'Bearer realm="initech-billing"'},
                        )
                else:
                    given = (self.headers.get("X-API-Key") or "").encode()
                    if not hmac.compare_digest(given, support_key):
                        raise _HttpError(401, "missing or invalid X-API-Key header")
                self._send(200, route(query))
            except _HttpError as exc:
                self._send(
                    exc.status, {"error": {"status": exc.status, "message": str(exc)}}, exc.headers
                )

        def do_POST(self) -> None:
            self._send(
                405, {"error": {"status": 405, "message": "read-only API"}}, {"Allow": "GET"}
            )

        def _send(self, status: int, body: Any, headers: Mapping[str, str] | None = None) -> None:
            payload = json.dumps(body, separators=(",", ":")).encode()
            log.append((self.command, self.path, status))
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(payload)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # the demo prints its own summary; tokens never reach a log

    class Server(ThreadingHTTPServer):
        daemon_threads = True

    return DemoApiServer(Server((host, port), Handler), data, log)


Route = Callable[[Mapping[str, list[str]]], dict[str, Any]]


def _routes(data: ApiData) -> dict[str, Route]:
    def pages(rows: list[dict[str, Any]], query: Mapping[str, list[str]]) -> dict[str, Any]:
        per_page = _int(query, "per_page", 25, 1, MAX_PAGE_SIZE)
        page = _int(query, "page", 1, 1, 1_000_000)
        total_pages = -(-len(rows) // per_page)
        chunk = rows[(page - 1) * per_page : page * per_page]
        return {
            "data": chunk,
            "meta": {
                "page": page,
                "per_page": per_page,
                "total": len(rows),
                "total_pages": total_pages,
            },
        }

    def window(rows: list[dict[str, Any]], query: Mapping[str, list[str]]) -> dict[str, Any]:
        limit = _int(query, "limit", 50, 1, MAX_PAGE_SIZE)
        offset = _int(query, "offset", 0, 0, 10_000_000)
        return {
            "items": rows[offset : offset + limit],
            "total": len(rows),
            "offset": offset,
            "limit": limit,
        }

    def customers(q: Mapping[str, list[str]]) -> dict[str, Any]:
        return pages(_where(_updated_since(data.customers, q), q, "crm_account_id"), q)

    def subscriptions(q: Mapping[str, list[str]]) -> dict[str, Any]:
        rows = _where(_updated_since(data.subscriptions, q), q, "customer_id")
        status = q.get("status", [""])[-1]
        if status == "":
            rows = [r for r in rows if r["status"] != "canceled"]
        elif status != "all":
            rows = [r for r in rows if r["status"] == status]
        return pages(rows, q)

    def invoices(q: Mapping[str, list[str]]) -> dict[str, Any]:
        rows = _updated_since(data.invoices, q)
        return pages(_where(rows, q, "status", "customer_id", "subscription_id"), q)

    def plans(q: Mapping[str, list[str]]) -> dict[str, Any]:
        rows = list(data.plans)
        return {
            "data": rows,
            "meta": {"page": 1, "per_page": len(rows), "total": len(rows), "total_pages": 1},
        }

    def tickets(q: Mapping[str, list[str]]) -> dict[str, Any]:
        rows = _where(_updated_since(data.tickets, q), q, "status", "account_id", "priority")
        if not _flag(q, "include_closed"):
            rows = [r for r in rows if r["status"] != "closed"]
        return window(rows, q)

    def ratings(q: Mapping[str, list[str]]) -> dict[str, Any]:
        return window(_where(_updated_since(data.ratings, q), q, "ticket_id"), q)

    return {
        "/api/billing/customers": customers,
        "/api/billing/subscriptions": subscriptions,
        "/api/billing/invoices": invoices,
        "/api/billing/plans": plans,
        "/api/support/tickets": tickets,
        "/api/support/ratings": ratings,
    }
