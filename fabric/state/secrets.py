"""Encrypted secrets: keys, the per-tenant secret store, and key rotation.  [shell]

The only module (with the runner's workers) that sees plaintext secrets. Values are encrypted
with Fernet keys from FABRIC_SECRET_KEYS (comma-separated, newest first; MultiFernet): the
newest key encrypts, every configured key decrypts, and `rotate_all` moves every stored value
to the newest key.

Invariants:
- A stored value is bound to where it lives. The Fernet token holds `{"b": binding, "v": value}`
  and decrypting checks the binding, so a value copied from another tenant's or another
  resource's row fails with SecretDecryptError instead of being used. Bindings:
  `acme.secret.dwh_password` (the tenant's secrets table) and `acme.connection.dwh#password`
  (a resource's secret field; a tenant row's address is its slug alone: `acme#token`).
- A changed secret is detected by a keyed fingerprint (`<key id>:<HMAC-SHA256>`). The HMAC key
  is derived from a Fernet key with HKDF, so no key is used for two purposes, and a stored
  fingerprint names the key that made it: while that key is configured, the same value gives
  the same fingerprint, whatever the newest key is. Rotation remakes fingerprints with the
  newest key, so they survive removing the old one.
- No message, repr or log line holds a plaintext, a token or a key.
- Rotation works in small batches, each in its own transaction, and rewrites only values that
  are not yet under the newest key (token or fingerprint): every row is valid under some
  configured key at every moment, so a killed rotation is finished by running it again.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import secrets as _random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import Connection, Engine, Row, func, select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert

from fabric.addresses import Address, Kind
from fabric.config.references import REFERENCE
from fabric.errors import (
    SecretDecryptError,
    SecretError,
    SecretKeyError,
    SecretNotFoundError,
    TenantNotAppliedError,
)
from fabric.plan.fingerprint import key_id, record_fingerprint, secret_fingerprint
from fabric.settings import Settings
from fabric.state import tables

__all__ = [
    "ENV_SOURCE",
    "KEY_FILE",
    "RotateResult",
    "SecretBox",
    "bind_pending_secrets",
    "field_binding",
    "fingerprint_key_id",
    "generate_key",
    "list_pending_secrets",
    "list_secrets",
    "load_secret_box",
    "pending_fingerprints",
    "read_pending_entry",
    "read_secret",
    "read_secret_entry",
    "rotate_all",
    "secret_binding",
    "secret_fingerprints",
    "set_pending_secret",
    "set_secret",
    "tenant_schema",
]

ENV_SOURCE = "FABRIC_SECRET_KEYS"
KEY_FILE = "secret.key"
"""The embedded default's generated key, in the fabric home (only when no keys are set)."""
_FINGERPRINT_INFO = b"fabric secret fingerprint v1"
_PLAN_SIGNATURE_INFO = b"fabric plan signature v1"
_GITIGNORE = "# Created by fabric: local state (embedded PostgreSQL). Never commit it.\n*\n"
_KEYGEN_HINT = (
    "Generate a key with `fabric secrets keygen` and set FABRIC_SECRET_KEYS to it "
    "(comma-separated, newest first, when rotating)."
)
BATCH_SIZE = 100
"""Rows per rotation transaction: small, so a rotation holds row locks only briefly."""


def generate_key() -> str:
    """A new random Fernet key (url-safe base64 text), for FABRIC_SECRET_KEYS."""
    return Fernet.generate_key().decode()


def secret_binding(tenant: str, name: str) -> str:
    """Binding of a value in a tenant's secrets table: `acme.secret.dwh_password`."""
    return f"{tenant}.secret.{name}"


def field_binding(address: Address | str, path: str) -> str:
    """Binding of a resource's secret field: `acme.connection.dwh#password`."""
    return f"{address}#{path}"


class SecretBox:
    """Encrypts, decrypts, rotates and fingerprints secret values with a set of Fernet keys.

    Keys are given newest first: the first encrypts, all decrypt. The keys never appear in the
    repr, in messages or in fingerprints.
    """

    __slots__ = ("_fernets", "_fp_keys", "_multi", "_sign_keys", "source")

    def __init__(self, keys: Sequence[str | bytes], *, source: str = ENV_SOURCE) -> None:
        """Keys newest first; `source` names where they came from, for messages.

        Raises:
            SecretKeyError: no keys, or a key that is not a Fernet key (named by position).
        """
        self.source = source
        """Where the keys came from: "FABRIC_SECRET_KEYS" or the key file's path."""
        if not keys:
            raise SecretKeyError(f"No secret keys are configured. {_KEYGEN_HINT}", source=source)
        fernets: list[Fernet] = []
        fp_keys: list[bytes] = []
        sign_keys: list[bytes] = []
        for position, key in enumerate(keys, start=1):
            raw = key.encode() if isinstance(key, str) else key
            try:
                fernets.append(Fernet(raw))
                decoded = base64.urlsafe_b64decode(raw)
            except (ValueError, TypeError, binascii.Error):
                # NOTE: the key itself is never repeated, not even a prefix of it.
                where = (
                    f"Key {position} of {len(keys)} in FABRIC_SECRET_KEYS"
                    if source == ENV_SOURCE
                    else f"The key in {source}"
                )
                raise SecretKeyError(
                    f"{where} is not a Fernet key (32 url-safe base64-encoded bytes). "
                    f"{_KEYGEN_HINT}",
                    position=position if source == ENV_SOURCE else None,
                    source=source,
                ) from None
            fp_keys.append(_fingerprint_key(decoded))
            sign_keys.append(_derive(decoded, _PLAN_SIGNATURE_INFO))
        self._sign_keys = tuple(sign_keys)
        self._fernets = tuple(fernets)
        self._fp_keys = tuple(fp_keys)
        self._multi = MultiFernet(fernets)

    def __repr__(self) -> str:
        return f"SecretBox(<{len(self._fernets)} keys from {self.source}>)"

    @property
    def key_count(self) -> int:
        return len(self._fernets)

    @property
    def newest_key_id(self) -> str:
        """Key id that fingerprints made with the newest key start with."""
        return key_id(self._fp_keys[0])

    def encrypt(self, binding: str, plaintext: str) -> str:
        """A Fernet token (under the newest key) of `plaintext`, bound to `binding`."""
        payload = json.dumps({"b": binding, "v": plaintext}, separators=(",", ":"))
        return self._fernets[0].encrypt(payload.encode()).decode()

    def decrypt(self, binding: str, token: str) -> str:
        """The plaintext of a token made by `encrypt(binding, ...)` with any configured key.

        Raises:
            SecretDecryptError: no configured key decrypts the token, or it was made for
                another binding (copied from another row).
        """
        try:
            payload = self._multi.decrypt(token.encode())
        except InvalidToken:
            raise self._error(binding) from None
        try:
            data = json.loads(payload)
            found, value = data["b"], data["v"]
        except (ValueError, TypeError, KeyError):
            raise self._error(binding, unbound=True) from None
        if not isinstance(value, str):
            raise self._error(binding, unbound=True)
        if found != binding:
            raise self._error(binding, copied=True)
        return value

    def rotate(self, binding: str, token: str) -> str:
        """The same value and binding, encrypted under the newest key.

        Raises:
            SecretDecryptError: as `decrypt`; a copied value is not laundered by rotation.
        """
        self.decrypt(binding, token)
        return self._multi.rotate(token.encode()).decode()

    def is_current(self, token: str) -> bool:
        """Whether the token was made with the newest key (checks its MAC; does not decrypt)."""
        try:
            self._fernets[0].extract_timestamp(token.encode())
        except InvalidToken:
            return False
        return True

    def fingerprint(self, plaintext: str, prefer_key_id: str | None = None) -> str:
        """Keyed fingerprint `<key id>:<hmac>` of a value, safe to store and compare.

        Made with the key whose id is `prefer_key_id` (the key id of a stored fingerprint) when
        that key is still configured, so an unchanged value keeps its fingerprint across a
        rotation; with the newest key otherwise.
        """
        chosen = self._fp_keys[0]
        if prefer_key_id is not None:
            chosen = next((k for k in self._fp_keys if key_id(k) == prefer_key_id), chosen)
        return secret_fingerprint(chosen, plaintext)

    def sign(self, payload: bytes) -> str:
        """`<key id>:<HMAC-SHA256>` of `payload` with a key derived from the newest key.

        Signs saved plan files: whoever can read a plan file holds no secret key, so cannot
        make a valid signature for an edited one (the old check was an unkeyed hash).
        """
        return _signature(self._sign_keys[0], payload)

    def verify(self, payload: bytes, signature: str) -> bool:
        """Whether `signature` was made by `sign(payload)` with any configured key."""
        wanted = signature.partition(":")[0]
        for key in self._sign_keys:
            if key_id(key) == wanted:
                return hmac.compare_digest(_signature(key, payload), signature)
        return False

    def _error(
        self, binding: str, *, copied: bool = False, unbound: bool = False
    ) -> SecretDecryptError:
        # NOTE: the binding found in the token is never passed on: it may name another
        # tenant's resource, which the tenant reading this error must not learn about.
        return SecretDecryptError(
            binding,
            copied=copied,
            unbound=unbound,
            key_count=len(self._fernets),
            source=self.source,
        )


def _fingerprint_key(fernet_key: bytes) -> bytes:
    return _derive(fernet_key, _FINGERPRINT_INFO)


def _derive(fernet_key: bytes, info: bytes) -> bytes:
    """A key for one purpose (`info`), so no key is used for two."""
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info)
    return hkdf.derive(fernet_key)


def _signature(key: bytes, payload: bytes) -> str:
    return f"{key_id(key)}:{hmac.new(key, payload, hashlib.sha256).hexdigest()}"


def fingerprint_key_id(fingerprint: str | None) -> str | None:
    """The key id a stored fingerprint was made with (`abcd1234` of `abcd1234:...`)."""
    if not fingerprint or ":" not in fingerprint:
        return None
    return fingerprint.partition(":")[0]


# -- keys ------------------------------------------------------------------------------------


def load_secret_box(settings: Settings, home: Path | None) -> SecretBox:
    """The keys to use: FABRIC_SECRET_KEYS, else the embedded default's key file.

    `home` is the embedded server's folder, given only when fabric uses the embedded default
    (FABRIC_DATABASE_URL unset): then `<home>/secret.key` is generated once (mode 0600) and
    reused, so the zero-setup demo works. With a real database the keys must be configured.

    Raises:
        SecretKeyError: a malformed key (named by position, never shown), or no keys at all.
    """
    if settings.secret_keys:
        return SecretBox(settings.secret_keys, source=ENV_SOURCE)
    if home is None:
        raise SecretKeyError(
            "FABRIC_SECRET_KEYS is not set; fabric needs it to encrypt and decrypt secrets "
            f"when FABRIC_DATABASE_URL is set. {_KEYGEN_HINT}",
            source=ENV_SOURCE,
        )
    path = home / KEY_FILE
    return SecretBox((_read_or_create_key_file(path),), source=str(path))


def _read_or_create_key_file(path: Path) -> str:
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise SecretKeyError(
            f"The key file {path} cannot be read ({exc.strerror}). {_KEYGEN_HINT}",
            source=str(path),
        ) from None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # NOTE: the home sits inside the repository; make sure git ignores it before a key
        # lands there (the embedded server writes the same file when it starts).
        _create_exclusive(path.parent / ".gitignore", _GITIGNORE)
        _create_key_file(path, generate_key())
        return path.read_text().strip()
    except OSError as exc:
        raise SecretKeyError(
            f"The key file {path} cannot be created ({exc.strerror}). {_KEYGEN_HINT}",
            source=str(path),
        ) from None


def _create_key_file(path: Path, key: str) -> None:
    """Write `key` to `path` unless it exists; never leaves a partial file; first writer wins.

    The key is written to a private temporary file and hard-linked into place: link() fails
    when the name exists, so two processes racing here agree on one key, and a reader never
    sees a half-written file.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{_random.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as out:
            out.write(key + "\n")
            out.flush()
            os.fsync(out.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # another process won the race: use its key
        except OSError:
            # NOTE: some filesystems have no hard links; O_EXCL still makes one writer win.
            _create_exclusive(path, key + "\n")
    finally:
        tmp.unlink(missing_ok=True)


def _create_exclusive(path: Path, content: str) -> None:
    """Write `content` to a new file `path` (mode 0600); leave an existing file alone."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    with os.fdopen(fd, "w") as out:
        out.write(content)


# -- the per-tenant secret store ----------------------------------------------------------------


def _in_schema(schema: str) -> dict[str, Any]:
    return {"schema_translate_map": {tables.TENANT_PLACEHOLDER: schema}}


def tenant_schema(conn: Connection, slug: str) -> str:
    """The schema of a live tenant.

    Raises:
        TenantNotAppliedError: no live tenant row with that slug, or no schema yet.
    """
    exists = conn.execute(
        text("SELECT to_regclass(:t) IS NOT NULL"), {"t": f"{tables.SHARED_SCHEMA}.tenants"}
    ).scalar_one()
    if not exists:
        raise TenantNotAppliedError(slug)
    t = tables.tenants
    schema = conn.execute(
        select(t.c.schema_name).where(t.c.slug == slug, t.c.deleted_at.is_(None))
    ).scalar_one_or_none()
    if schema is None:
        raise TenantNotAppliedError(slug)
    return str(schema)


def _check_name(name: str) -> None:
    if not REFERENCE.fullmatch(f"${{secret:{name}}}"):
        raise SecretError(
            f"{name!r} is not a secret name: use letters, digits and underscores, starting with "
            "a letter or underscore (at most 128), as in ${secret:dwh_password}."
        )


def set_secret(
    conn: Connection, box: SecretBox, tenant_slug: str, schema: str, name: str, value: str
) -> bool:
    """Store (insert or replace) a tenant's secret; True when the value changed.

    An unchanged value is not rewritten, so its `updated_at` keeps meaning "last changed".
    """
    _check_name(name)
    if not value:
        raise SecretError(f"The value of secret {name!r} is empty; nothing was stored.")
    s = tables.secrets
    opts = _in_schema(schema)
    stored = conn.execute(
        select(s.c.fingerprint).where(s.c.name == name).with_for_update(), execution_options=opts
    ).scalar_one_or_none()
    fp = box.fingerprint(value, prefer_key_id=fingerprint_key_id(stored))
    if stored == fp:
        return False
    ciphertext = box.encrypt(secret_binding(tenant_slug, name), value)
    stmt = pg_insert(s).values(name=name, ciphertext=ciphertext, fingerprint=fp)
    stmt = stmt.on_conflict_do_update(
        index_elements=[s.c.name],
        set_={"ciphertext": ciphertext, "fingerprint": fp, "updated_at": func.now()},
    )
    conn.execute(stmt, execution_options=opts)
    return True


# -- secrets of tenants not applied yet ---------------------------------------------------------
# NOTE: a pending value is bound exactly as it will be in the tenant's own store
# (`secret_binding`), so the tenant's first apply moves ciphertext and fingerprint unchanged.


def set_pending_secret(
    conn: Connection, box: SecretBox, tenant_slug: str, name: str, value: str
) -> bool:
    """Store a secret of a tenant that has no schema yet; True when the value changed."""
    _check_name(name)
    if not value:
        raise SecretError(f"The value of secret {name!r} is empty; nothing was stored.")
    p = tables.pending_secrets
    stored = conn.execute(
        select(p.c.fingerprint)
        .where(p.c.tenant_slug == tenant_slug, p.c.name == name)
        .with_for_update()
    ).scalar_one_or_none()
    fp = box.fingerprint(value, prefer_key_id=fingerprint_key_id(stored))
    if stored == fp:
        return False
    ciphertext = box.encrypt(secret_binding(tenant_slug, name), value)
    stmt = pg_insert(p).values(
        tenant_slug=tenant_slug, name=name, ciphertext=ciphertext, fingerprint=fp
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=[p.c.tenant_slug, p.c.name],
        set_={"ciphertext": ciphertext, "fingerprint": fp, "updated_at": func.now()},
    )
    conn.execute(stmt)
    return True


def _has_pending_table(conn: Connection) -> bool:
    return bool(
        conn.execute(
            text("SELECT to_regclass(:t) IS NOT NULL"),
            {"t": f"{tables.SHARED_SCHEMA}.pending_secrets"},
        ).scalar_one()
    )


def pending_fingerprints(conn: Connection, slugs: Sequence[str]) -> dict[str, dict[str, str]]:
    """Slug -> name -> fingerprint of the pending secrets of these (unapplied) tenants."""
    if not slugs or not _has_pending_table(conn):
        return {}
    p = tables.pending_secrets
    out: dict[str, dict[str, str]] = {}
    rows = conn.execute(
        select(p.c.tenant_slug, p.c.name, p.c.fingerprint).where(p.c.tenant_slug.in_(list(slugs)))
    )
    for slug, name, fp in rows:
        out.setdefault(slug, {})[name] = fp
    return out


def read_pending_entry(
    conn: Connection, box: SecretBox, tenant: str, name: str
) -> tuple[str, str] | None:
    """(plaintext, fingerprint) of a pending secret, or None when none was stored."""
    if not _has_pending_table(conn):
        return None
    p = tables.pending_secrets
    row = conn.execute(
        select(p.c.ciphertext, p.c.fingerprint).where(p.c.tenant_slug == tenant, p.c.name == name)
    ).one_or_none()
    if row is None:
        return None
    return box.decrypt(secret_binding(tenant, name), row.ciphertext), row.fingerprint


def list_pending_secrets(conn: Connection, tenant: str) -> list[tuple[str, datetime]]:
    """(name, updated_at) of a tenant's pending secrets, by name; never values."""
    if not _has_pending_table(conn):
        return []
    p = tables.pending_secrets
    rows = conn.execute(
        select(p.c.name, p.c.updated_at).where(p.c.tenant_slug == tenant).order_by(p.c.name)
    )
    return [(name, updated_at) for name, updated_at in rows]


def bind_pending_secrets(conn: Connection, schemas: Mapping[str, str]) -> int:
    """Move the pending secrets of newly created tenants (slug -> schema) into their stores.

    Runs in the apply's transaction, right after the tenants' schemas are created; returns how
    many values moved.
    """
    if not schemas:
        return 0
    p = tables.pending_secrets
    rows = conn.execute(  # one statement for every new tenant: a first apply may create 1,000
        p.delete()
        .where(p.c.tenant_slug.in_(sorted(schemas)))
        .returning(p.c.tenant_slug, p.c.name, p.c.ciphertext, p.c.fingerprint)
    ).all()
    by_tenant: dict[str, list[Any]] = {}
    for r in rows:
        by_tenant.setdefault(r.tenant_slug, []).append(r)
    for slug, values in sorted(by_tenant.items()):
        conn.execute(
            pg_insert(tables.secrets).values(
                [
                    {"name": r.name, "ciphertext": r.ciphertext, "fingerprint": r.fingerprint}
                    for r in values
                ]
            ),
            execution_options=_in_schema(schemas[slug]),
        )
    moved = len(rows)
    return moved


def read_secret(conn: Connection, box: SecretBox, tenant: str, schema: str, name: str) -> str:
    """The plaintext of a tenant's secret.

    Raises:
        SecretNotFoundError: it was never set.
        SecretDecryptError: it cannot be decrypted here (see SecretBox.decrypt).
    """
    entry = read_secret_entry(conn, box, tenant, schema, name)
    if entry is None:
        raise SecretNotFoundError(tenant, name)
    return entry[0]


def read_secret_entry(
    conn: Connection, box: SecretBox, tenant: str, schema: str, name: str
) -> tuple[str, str] | None:
    """(plaintext, stored fingerprint) of a tenant's secret, or None when it was never set.

    Raises:
        SecretDecryptError: it cannot be decrypted here (see SecretBox.decrypt).
    """
    s = tables.secrets
    row = conn.execute(
        select(s.c.ciphertext, s.c.fingerprint).where(s.c.name == name),
        execution_options=_in_schema(schema),
    ).one_or_none()
    if row is None:
        return None
    return box.decrypt(secret_binding(tenant, name), row.ciphertext), row.fingerprint


def secret_fingerprints(conn: Connection, schema: str) -> dict[str, str]:
    """Name -> stored keyed fingerprint of every secret of a tenant, in one query."""
    s = tables.secrets
    rows = conn.execute(
        select(s.c.name, s.c.fingerprint).order_by(s.c.name), execution_options=_in_schema(schema)
    )
    return {name: fp for name, fp in rows}


def list_secrets(conn: Connection, schema: str) -> list[tuple[str, datetime]]:
    """(name, updated_at) of every secret of a tenant, by name; never values."""
    s = tables.secrets
    rows = conn.execute(
        select(s.c.name, s.c.updated_at).order_by(s.c.name), execution_options=_in_schema(schema)
    )
    return [(name, updated_at) for name, updated_at in rows]


# -- rotation ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class RotateResult:
    """What `rotate_all` did; holds bindings and counts, never values."""

    rotated: int
    """Values re-encrypted under the newest key."""
    current: int
    """Values that were already under the newest key (left untouched)."""
    failed: tuple[SecretDecryptError, ...] = ()
    """Values that could not be decrypted for their row; left as they were."""
    per_table: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    """Values re-encrypted per table (`fabric.tenants`, `tenant_1.connections`, ...)."""

    @property
    def counts(self) -> dict[str, int]:
        return {"rotated": self.rotated, "current": self.current, "failed": len(self.failed)}

    @property
    def ok(self) -> bool:
        return not self.failed


@dataclass(slots=True)
class _Tally:
    rotated: int = 0
    current: int = 0
    failed: list[SecretDecryptError] = field(default_factory=list)
    per_table: dict[str, int] = field(default_factory=dict)


# Resource tables in a tenant schema, with the kind their rows are addressed as.
_RESOURCE_KINDS: tuple[tuple[str, Kind], ...] = (
    ("connections", Kind.CONNECTION),
    ("pipelines", Kind.PIPELINE),
    ("transformations", Kind.TRANSFORMATION),
    ("dependencies", Kind.DEPENDENCY),
    ("schedules", Kind.SCHEDULE),
    ("macros", Kind.MACRO),
    ("seeds", Kind.SEED),
    ("tests", Kind.TEST),
)


def rotate_all(engine: Engine, box: SecretBox, *, batch_size: int = BATCH_SIZE) -> RotateResult:
    """Re-encrypt every stored secret value under the newest key; safe to re-run after a kill.

    Walks `fabric.tenants`, then each tenant schema's `secrets` table and resource tables, by
    id in batches of `batch_size` rows, one transaction per batch. Rows are locked (FOR UPDATE)
    only for their batch. A resource row's `content_md5` is recomputed in the same UPDATE with
    tables.CONTENT_MD5_SQL, so a rotated row never looks hand-edited; keyed fingerprints are
    remade with the newest key (and a resource's record fingerprint with them), so removing
    the old key afterwards changes nothing in the next plan.
    """
    tally = _Tally()
    _rotate_resources(
        engine, box, tally, f"{tables.SHARED_SCHEMA}.tenants", "slug", lambda slug: slug, batch_size
    )
    with engine.connect() as conn:
        t = tables.tenants
        rows = conn.execute(
            select(t.c.slug, t.c.schema_name).where(t.c.schema_name.is_not(None)).order_by(t.c.id)
        ).all()
    # NOTE: soft-deleted tenants are rotated too: once the old key is dropped, a value left
    # under it could never be read again, e.g. if the tenant came back.
    for slug, schema in rows:
        if _table_exists(engine, schema, "secrets"):
            _rotate_store(engine, box, tally, slug, schema, batch_size)
        for table, kind in _RESOURCE_KINDS:
            if _table_exists(engine, schema, table):
                address = _addresser(slug, kind)
                _rotate_resources(
                    engine, box, tally, f'"{schema}".{table}', "name", address, batch_size
                )
    if _table_exists(engine, tables.SHARED_SCHEMA, "pending_secrets"):
        _rotate_pending(engine, box, tally)
    return RotateResult(
        rotated=tally.rotated,
        current=tally.current,
        failed=tuple(tally.failed),
        per_table=MappingProxyType(dict(tally.per_table)),
    )


def _addresser(slug: str, kind: Kind) -> Callable[[str], str]:
    return lambda name: str(Address(slug, kind, name))


def _table_exists(engine: Engine, schema: str, table: str) -> bool:
    with engine.connect() as conn:
        return bool(
            conn.execute(
                text("SELECT to_regclass(:t) IS NOT NULL"), {"t": f'"{schema}".{table}'}
            ).scalar_one()
        )


def _in_batches(
    engine: Engine, query: str, batch_size: int, rewrite: Callable[[Connection, Row[Any]], None]
) -> None:
    """Call `rewrite` on every row of `query` (which pages by `id > :last`), one transaction
    per batch, so what is done stays done when the process is killed."""
    last = 0
    while True:
        with engine.begin() as conn:
            rows = conn.execute(text(query), {"last": last, "n": batch_size}).all()
            for row in rows:
                rewrite(conn, row)
        if len(rows) < batch_size:
            return
        last = rows[-1].id


def _rotate_store(
    engine: Engine, box: SecretBox, tally: _Tally, slug: str, schema: str, batch_size: int
) -> None:
    label = f"{schema}.secrets"
    query = (
        f'SELECT id, name, ciphertext, fingerprint FROM "{schema}".secrets WHERE id > :last '
        "ORDER BY id LIMIT :n FOR UPDATE"
    )
    update = text(
        f'UPDATE "{schema}".secrets SET ciphertext = :ct, fingerprint = :fp WHERE id = :id'
    )

    def rewrite(conn: Connection, row: Row[Any]) -> None:
        binding = secret_binding(slug, row.name)
        new = _rotated(box, tally, binding, row.ciphertext, row.fingerprint)
        if new is not None:
            conn.execute(update, {"ct": new[0], "fp": new[1] or row.fingerprint, "id": row.id})
            _count(tally, label)

    _in_batches(engine, query, batch_size, rewrite)


def _rotate_pending(engine: Engine, box: SecretBox, tally: _Tally) -> None:
    """Secrets stored for tenants not applied yet: few, so one transaction."""
    label = f"{tables.SHARED_SCHEMA}.pending_secrets"
    p = tables.pending_secrets
    with engine.begin() as conn:
        rows = conn.execute(
            select(p.c.tenant_slug, p.c.name, p.c.ciphertext, p.c.fingerprint)
            .order_by(p.c.tenant_slug, p.c.name)
            .with_for_update()
        ).all()
        for row in rows:
            binding = secret_binding(row.tenant_slug, row.name)
            new = _rotated(box, tally, binding, row.ciphertext, row.fingerprint)
            if new is not None:
                conn.execute(
                    p.update()
                    .where(p.c.tenant_slug == row.tenant_slug, p.c.name == row.name)
                    .values(ciphertext=new[0], fingerprint=new[1] or row.fingerprint)
                )
                _count(tally, label)


def _rotate_resources(
    engine: Engine,
    box: SecretBox,
    tally: _Tally,
    table: str,
    name_column: str,
    address: Callable[[str], str],
    batch_size: int,
) -> None:
    label = table.replace('"', "")
    query = (
        f"SELECT id, {name_column} AS name, spec, secrets, protect, fingerprint FROM {table} "
        "WHERE id > :last AND secrets <> '{}'::jsonb ORDER BY id LIMIT :n FOR UPDATE"
    )
    new_secrets = "CAST(:secrets AS jsonb)"
    md5 = tables.CONTENT_MD5_SQL.format(spec="spec", secrets=new_secrets, protect="protect")
    update = text(
        f"UPDATE {table} SET secrets = {new_secrets}, fingerprint = :fp, content_md5 = {md5} "
        "WHERE id = :id"
    )

    def rewrite(conn: Connection, row: Row[Any]) -> None:
        fields = row.secrets
        if not isinstance(fields, dict):
            return
        changed = dict(fields)
        for path, entry in sorted(fields.items()):
            if not (isinstance(entry, dict) and isinstance(entry.get("ct"), str)):
                continue
            binding = field_binding(address(row.name), path)
            new = _rotated(box, tally, binding, entry["ct"], entry.get("fp"))
            if new is not None:
                changed[path] = {**entry, "ct": new[0], "fp": new[1] or entry.get("fp")}
                _count(tally, label)
        if changed != fields:
            # NOTE: content_md5 and the record's fingerprint (which covers the secrets' keyed
            # fingerprints) are recomputed in the same statement; otherwise the row would look
            # edited outside fabric (drift) or changed to the next plan. A row that had
            # drifted already keeps its fingerprint, so it still shows as drift.
            fingerprint = row.fingerprint
            if fingerprint == record_fingerprint(row.spec, _fps(fields), row.protect):
                fingerprint = record_fingerprint(row.spec, _fps(changed), row.protect)
            params = {"secrets": json.dumps(changed), "fp": fingerprint, "id": row.id}
            conn.execute(update, params)

    _in_batches(engine, query, batch_size, rewrite)


def _fps(fields: Mapping[str, Any]) -> dict[str, Any]:
    """A row's secret fingerprints as its record fingerprint covers them (see plan/diff.py)."""
    return {
        path: entry.get("fp") if isinstance(entry, dict) else None
        for path, entry in sorted(fields.items())
    }


def _rotated(
    box: SecretBox, tally: _Tally, binding: str, token: str, fingerprint: str | None
) -> tuple[str, str | None] | None:
    """(token under the newest key, fingerprint made with it), or None when the value needs
    no change or cannot be read.

    The fingerprint is remade too: once the old key is removed, a fingerprint made with it
    could not be reproduced, and every value would look changed to the next plan. None for
    a value that had no fingerprint.
    """
    if box.is_current(token) and fingerprint_key_id(fingerprint) in (None, box.newest_key_id):
        tally.current += 1
        return None
    try:
        plaintext = box.decrypt(binding, token)
    except SecretDecryptError as exc:
        tally.failed.append(exc)
        return None
    new_token = token if box.is_current(token) else box.rotate(binding, token)
    return new_token, box.fingerprint(plaintext) if fingerprint else None


def _count(tally: _Tally, label: str) -> None:
    tally.rotated += 1
    tally.per_table[label] = tally.per_table.get(label, 0) + 1
