"""Read and change roles and grants in a managed warehouse, through its admin connection.  [shell]

- `read_facts`: one query (one round trip) over pg_roles, pg_namespace (aclexplode),
  pg_default_acl and pg_database, turned into WarehouseFacts for the pure diff.
- `apply_warehouse`: the plan's role, schema and grant changes in one warehouse transaction,
  roles first, then ownership, then grants; revokes before drops. Every statement is written
  to hold whatever the warehouse looks like now (it is re-read first), so an apply that failed
  halfway, or a warehouse changed by hand since the plan, converges on the next apply.

Passwords: a role's password is sent as a SCRAM verifier computed here by libpq
(PQencryptPasswordConn), so the plaintext never reaches the server, its logs or an error; the
admin password stays in this process. Errors name the statement's purpose, never its text.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping

import psycopg
from psycopg import sql

from fabric.addresses import Kind
from fabric.config.specs import WarehouseSpec
from fabric.errors import FabricError
from fabric.plan.diff import Action, Change
from fabric.plan.records import KIND_ORDER
from fabric.plan.warehouse import (
    DATABASE_PRIVILEGES,
    RoleFacts,
    SchemaFacts,
    WarehouseFacts,
    change_spec,
    role_comment,
    role_name,
)


class WarehouseError(FabricError):
    """A managed warehouse could not be read or changed."""


def _grantee(expr: str) -> str:
    return f"CASE WHEN {expr} = 0 THEN 'PUBLIC' ELSE pg_get_userbyid({expr}) END"


FACTS_SQL = f"""
SELECT json_build_object(
  'roles', (SELECT coalesce(json_agg(json_build_object(
        'name', r.rolname, 'comment', d.description, 'login', r.rolcanlogin,
        'superuser', r.rolsuper, 'createdb', r.rolcreatedb, 'createrole', r.rolcreaterole,
        'replication', r.rolreplication, 'bypassrls', r.rolbypassrls,
        'member_of', ARRAY(SELECT DISTINCT m.rolname FROM pg_auth_members am
                           JOIN pg_roles m ON m.oid = am.roleid WHERE am.member = r.oid))), '[]')
      FROM pg_roles r
      LEFT JOIN pg_shdescription d
        ON d.objoid = r.oid AND d.classoid = 'pg_authid'::regclass
      WHERE d.description LIKE %(comment)s OR r.rolname = ANY(%(names)s)),
  'schemas', (SELECT coalesce(json_agg(json_build_object(
        'name', n.nspname, 'owner', pg_get_userbyid(n.nspowner),
        'acl', ARRAY(SELECT json_build_array({_grantee("a.grantee")}, a.privilege_type)
                     FROM aclexplode(n.nspacl) a WHERE a.grantee <> n.nspowner),
        'foreign', coalesce(f.n, 0))), '[]')
      FROM pg_namespace n
      LEFT JOIN (SELECT c.relnamespace, count(*) AS n FROM pg_class c
                 JOIN pg_namespace o ON o.oid = c.relnamespace
                 WHERE c.relowner <> o.nspowner AND c.relkind IN ('r','p','v','m','S','f')
                 GROUP BY c.relnamespace) f ON f.relnamespace = n.oid
      WHERE n.nspname NOT LIKE 'pg\\_%%' AND n.nspname <> 'information_schema'),
  'database', (SELECT coalesce(json_agg(json_build_array(
                   {_grantee("a.grantee")}, a.privilege_type)), '[]')
      FROM pg_database d, aclexplode(coalesce(d.datacl, acldefault('d', d.datdba))) a
      WHERE d.datname = current_database() AND a.grantee <> d.datdba),
  'defaults', (SELECT coalesce(json_agg(json_build_array(pg_get_userbyid(d.defaclrole),
                   n.nspname, {_grantee("a.grantee")}, a.privilege_type)), '[]')
      FROM pg_default_acl d LEFT JOIN pg_namespace n ON n.oid = d.defaclnamespace,
           aclexplode(d.defaclacl) a
      WHERE d.defaclobjtype = 'r' AND a.grantee <> d.defaclrole)
)
"""


def connect_admin(spec: WarehouseSpec, environ: Mapping[str, str], name: str) -> psycopg.Connection:
    """The admin connection; its password is read from `environ` and goes nowhere else."""
    ref = spec.admin.password.removeprefix("${env:").removesuffix("}")
    password = environ.get(ref)
    if not password:
        raise WarehouseError(
            f"fabric.yaml: warehouses.{name}.admin.password is ${{env:{ref}}}, which is not set "
            "here. fabric reads and changes the warehouse's roles with it: set it where you run "
            "`fabric plan` and `fabric apply`."
        )
    port = spec.port
    if isinstance(port, str):
        var = port.removeprefix("${env:").removesuffix("}")
        if var not in environ:
            raise WarehouseError(
                f"fabric.yaml: warehouses.{name}.port is ${{env:{var}}}, which is not set here."
            )
        port = environ[var]
    try:
        return psycopg.connect(
            host=spec.host,
            port=int(port),
            dbname=spec.database,
            user=spec.admin.username,
            password=password,
            connect_timeout=10,
            application_name="fabric-warehouse",
        )
    except psycopg.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        first = first.replace(password, "***")
        raise WarehouseError(
            f"Cannot connect to warehouse {name} ({spec.host}/{spec.database}) as "
            f"{spec.admin.username}: {first}"
        ) from None


def read_facts(
    conn: psycopg.Connection, spec: WarehouseSpec, role_names: Iterable[str]
) -> WarehouseFacts:
    """The warehouse's roles (fabric's and `role_names`), schemas, ACLs, in one query."""
    row = conn.execute(
        FACTS_SQL,
        {"comment": f"fabric:{spec.database}:%", "names": sorted(set(role_names))},
    ).fetchone()
    data = row[0] if row else {}
    if isinstance(data, str):
        data = json.loads(data)
    roles = {
        r["name"]: RoleFacts(
            name=r["name"],
            comment=r["comment"],
            login=r["login"],
            superuser=r["superuser"],
            createdb=r["createdb"],
            createrole=r["createrole"],
            replication=r["replication"],
            bypassrls=r["bypassrls"],
            member_of=tuple(r["member_of"] or ()),
        )
        for r in data["roles"]
    }
    schemas = {
        s["name"]: SchemaFacts(
            name=s["name"],
            owner=s["owner"],
            acl=tuple((g, p) for g, p in (s["acl"] or ())),
            foreign_objects=int(s["foreign"]),
        )
        for s in data["schemas"]
    }
    return WarehouseFacts(
        roles=roles,
        schemas=schemas,
        database_acl=tuple((g, p) for g, p in data["database"]),
        default_acl=tuple((o, s, g, p) for o, s, g, p in data["defaults"]),
    )


def _who(grantee: str) -> sql.Composable:
    return sql.SQL("PUBLIC") if grantee == "PUBLIC" else sql.Identifier(grantee)


RELKIND = {
    "r": "TABLE",
    "p": "TABLE",
    "f": "FOREIGN TABLE",
    "v": "VIEW",
    "m": "MATERIALIZED VIEW",
    "S": "SEQUENCE",
}


def apply_warehouse(
    conn: psycopg.Connection,
    spec: WarehouseSpec,
    changes: Iterable[Change],
    *,
    passwords: Mapping[str, str],
    drop_data: bool = False,
) -> None:
    """Make the warehouse match `changes`, in one transaction of `conn` (committed here).

    `passwords` maps a tenant to its role's password (created or updated roles only).
    """
    changes = list(changes)
    upserts = sorted(
        (c for c in changes if c.action is not Action.DELETE),
        key=lambda c: (KIND_ORDER[c.address.kind], c.address),
    )
    deletes = sorted(
        (c for c in changes if c.action is Action.DELETE),
        key=lambda c: (-KIND_ORDER[c.address.kind], c.address),
    )
    run = _runner(conn)
    try:
        with conn.transaction():
            facts = read_facts(conn, spec, [str(change_spec(c).get("role")) for c in upserts])
            _baseline(run, spec, facts)
            for change in (*upserts, *deletes):
                body = change_spec(change)
                if not _is_own(spec, change, body, facts):
                    continue
                match change.address.kind, change.action:
                    case Kind.ROLE, Action.DELETE:
                        _drop_role(run, conn, str(body["role"]))
                    case Kind.ROLE, _:
                        _upsert_role(run, conn, spec, change, facts, passwords)
                    case Kind.SCHEMA, Action.DELETE:
                        _release_schema(run, conn, str(body["schema"]), drop_data=drop_data)
                    case Kind.SCHEMA, _:
                        _own_schema(run, conn, str(body["schema"]), str(body["owner"]))
                    case Kind.GRANT, Action.DELETE:
                        _share(run, conn, str(body["schema"]), [])
                    case Kind.GRANT, _:
                        _share(run, conn, str(body["schema"]), [str(r) for r in body["usage"]])
                    case _:
                        raise AssertionError(f"not a warehouse change: {change.address}")
    except psycopg.Error as exc:
        diag = getattr(exc, "diag", None)
        message = (diag.message_primary if diag is not None else None) or type(exc).__name__
        raise WarehouseError(
            f"Changing warehouse {spec.database} failed and was rolled back there "
            f"({getattr(exc, 'sqlstate', None) or 'error'}: {message}). The control plane was "
            "not changed either; fix the cause and apply again."
        ) from None


Run = Callable[[sql.Composable], None]


def _is_own(
    spec: WarehouseSpec, change: Change, body: Mapping[str, object], facts: WarehouseFacts
) -> bool:
    """A change touches only its own tenant's role and schemas (defence in depth: a plan is
    signed, but a plan that names another tenant's role is refused, and a schema that is not
    the tenant's is never released or dropped).

    Raises:
        WarehouseError: the change names a role other than its tenant's.
    """
    own = role_name(spec, change.address.tenant)
    readers = [str(r) for r in body.get("usage") or ()]  # type: ignore[union-attr]
    named = [str(body.get("role") or body.get("owner") or own)]
    if any(n != own for n in named) or any(
        not (r.startswith(spec.role_prefix) and r.endswith("_loader")) for r in readers
    ):
        raise WarehouseError(
            f"{change.address} names a role that is not its tenant's ({own}); the plan was "
            "not made by this fabric. Make the plan again."
        )
    if change.address.kind in (Kind.SCHEMA, Kind.GRANT) and change.action is Action.DELETE:
        current = facts.schemas.get(str(body.get("schema")))
        return current is not None and current.owner == own
    return True


def _runner(conn: psycopg.Connection) -> Run:
    def run(statement: sql.Composable) -> None:
        conn.execute(statement)

    return run


def _baseline(run: Run, spec: WarehouseSpec, facts: WarehouseFacts) -> None:
    """PUBLIC may do nothing in a managed warehouse: no CONNECT or TEMPORARY on the database,
    no USAGE or CREATE in any schema (PostgreSQL grants both by default in `public` before 15,
    and CONNECT/TEMPORARY on every database still)."""
    if any(g == "PUBLIC" for g, _ in facts.database_acl):
        run(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(sql.Identifier(spec.database)))
    for schema in facts.schemas.values():
        if any(g == "PUBLIC" for g, _ in schema.acl):
            run(sql.SQL("REVOKE ALL ON SCHEMA {} FROM PUBLIC").format(sql.Identifier(schema.name)))


def _exists(conn: psycopg.Connection, query: str, name: str) -> bool:
    return conn.execute(query, (name,)).fetchone() is not None


def _upsert_role(
    run: Run,
    conn: psycopg.Connection,
    spec: WarehouseSpec,
    change: Change,
    facts: WarehouseFacts,
    passwords: Mapping[str, str],
) -> None:
    body = change_spec(change)
    name = str(body["role"])
    role = sql.Identifier(name)
    tenant = change.address.tenant
    if not _exists(conn, "SELECT 1 FROM pg_roles WHERE rolname = %s", name):
        run(sql.SQL("CREATE ROLE {}").format(role))
    verifier = conn.pgconn.encrypt_password(
        passwords[tenant].encode(), name.encode(), b"scram-sha-256"
    ).decode()
    run(
        sql.SQL(
            "ALTER ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS "
            "INHERIT PASSWORD {}"
        ).format(role, sql.Literal(verifier))
    )
    run(sql.SQL("COMMENT ON ROLE {} IS {}").format(role, sql.Literal(role_comment(spec, tenant))))
    member_of = conn.execute(
        "SELECT DISTINCT m.rolname FROM pg_auth_members am JOIN pg_roles m ON m.oid = am.roleid "
        "JOIN pg_roles r ON r.oid = am.member WHERE r.rolname = %s",
        (name,),
    ).fetchall()
    for (group,) in member_of:
        run(sql.SQL("REVOKE {} FROM {}").format(sql.Identifier(group), role))
    run(sql.SQL("REVOKE ALL ON DATABASE {} FROM {}").format(sql.Identifier(spec.database), role))
    run(
        sql.SQL("GRANT {} ON DATABASE {} TO {}").format(
            sql.SQL(", ").join(sql.SQL(p) for p in DATABASE_PRIVILEGES),
            sql.Identifier(spec.database),
            role,
        )
    )
    reads = {str(s) for s in body.get("reads") or ()}
    for schema in facts.schemas.values():
        if schema.owner == name or not any(g == name for g, _ in schema.acl):
            continue
        if schema.name not in reads:  # kept ones are rewritten by their owner's grant
            _revoke_schema(run, schema.name, name, owner=schema.owner)
    for owner, schema_name, grantee, _ in facts.default_acl:
        if owner == name and schema_name is None:
            run(
                sql.SQL("ALTER DEFAULT PRIVILEGES FOR ROLE {} REVOKE ALL ON TABLES FROM {}").format(
                    role, _who(grantee)
                )
            )


def _revoke_schema(run: Run, schema: str, grantee: str, *, owner: str) -> None:
    s, g = sql.Identifier(schema), _who(grantee)
    run(sql.SQL("REVOKE ALL ON SCHEMA {} FROM {}").format(s, g))
    run(sql.SQL("REVOKE ALL ON ALL TABLES IN SCHEMA {} FROM {}").format(s, g))
    run(
        sql.SQL(
            "ALTER DEFAULT PRIVILEGES FOR ROLE {} IN SCHEMA {} REVOKE ALL ON TABLES FROM {}"
        ).format(sql.Identifier(owner), s, g)
    )


def _own_schema(run: Run, conn: psycopg.Connection, schema: str, owner: str) -> None:
    s, o = sql.Identifier(schema), sql.Identifier(owner)
    run(sql.SQL("CREATE SCHEMA IF NOT EXISTS {} AUTHORIZATION {}").format(s, o))
    run(sql.SQL("ALTER SCHEMA {} OWNER TO {}").format(s, o))
    _reown(run, conn, schema, owner, sql.Identifier(owner))


def _reown(
    run: Run, conn: psycopg.Connection, schema: str, owner: str | None, to: sql.Composable
) -> None:
    """Every table, view and sequence in `schema` not owned by `owner` (None: all) goes to `to`."""
    rows = conn.execute(
        "SELECT c.relname, c.relkind, pg_get_userbyid(c.relowner) FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s "
        "AND c.relkind IN ('r','p','v','m','S','f') "
        "AND NOT (c.relkind = 'S' AND EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = c.oid "
        "AND d.deptype IN ('a', 'i')))",  # owned sequences follow their table
        (schema,),
    ).fetchall()
    for relname, relkind, rel_owner in rows:
        if owner is None or rel_owner != owner:
            run(
                sql.SQL("ALTER {} {} OWNER TO {}").format(
                    sql.SQL(RELKIND[relkind]), sql.Identifier(schema, relname), to
                )
            )


def _share(run: Run, conn: psycopg.Connection, schema: str, readers: list[str]) -> None:
    """Only `readers` (and the owner) may use `schema`: USAGE, SELECT now and on new tables."""
    row = conn.execute(
        "SELECT pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = %s", (schema,)
    ).fetchone()
    if row is None:
        return
    owner = str(row[0])
    grantees = conn.execute(
        f"SELECT DISTINCT {_grantee('a.grantee')} FROM pg_namespace n, aclexplode(n.nspacl) a "
        "WHERE n.nspname = %(s)s AND a.grantee <> n.nspowner "
        f"UNION SELECT DISTINCT {_grantee('a.grantee')} FROM pg_default_acl d "
        "JOIN pg_namespace n ON n.oid = d.defaclnamespace, aclexplode(d.defaclacl) a "
        "WHERE n.nspname = %(s)s AND a.grantee <> d.defaclrole",
        {"s": schema},
    ).fetchall()
    for (grantee,) in grantees:
        _revoke_schema(run, schema, str(grantee), owner=owner)
    s, o = sql.Identifier(schema), sql.Identifier(owner)
    for reader in readers:
        r = sql.Identifier(reader)
        run(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(s, r))
        run(sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA {} TO {}").format(s, r))
        run(
            sql.SQL(
                "ALTER DEFAULT PRIVILEGES FOR ROLE {} IN SCHEMA {} GRANT SELECT ON TABLES TO {}"
            ).format(o, s, r)
        )


def _release_schema(run: Run, conn: psycopg.Connection, schema: str, *, drop_data: bool) -> None:
    """A schema fabric no longer gives a tenant: dropped with its data only when asked;
    otherwise kept, owned by the admin (the tenant's role loses every right in it)."""
    s = sql.Identifier(schema)
    if drop_data:
        run(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(s))
        return
    if not _exists(conn, "SELECT 1 FROM pg_namespace WHERE nspname = %s", schema):
        return
    run(sql.SQL("ALTER SCHEMA {} OWNER TO CURRENT_USER").format(s))
    _reown(run, conn, schema, None, sql.SQL("CURRENT_USER"))


def _drop_role(run: Run, conn: psycopg.Connection, name: str) -> None:
    """Revoke everything the role holds, hand what it still owns to the admin, then drop it."""
    if not _exists(conn, "SELECT 1 FROM pg_roles WHERE rolname = %s", name):
        return
    role = sql.Identifier(name)
    run(sql.SQL("ALTER ROLE {} NOLOGIN").format(role))
    run(sql.SQL("REASSIGN OWNED BY {} TO CURRENT_USER").format(role))
    run(sql.SQL("DROP OWNED BY {}").format(role))
    run(sql.SQL("DROP ROLE {}").format(role))
