"""`${env:NAME}` / `${secret:NAME}` references; secrets are never literals.  [pure]"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

REFERENCE = re.compile(r"\$\{(env|secret):([A-Za-z_][A-Za-z0-9_]{0,127})\}")
REFERENCE_PATTERN = r"^\$\{(env|secret):[A-Za-z_][A-Za-z0-9_]{0,127}\}$"
SECRET_KEYS = frozenset(
    {
        "password",
        "passwd",
        "token",
        "api_key",
        "apikey",
        "secret",
        "private_key",
        "client_secret",
        "access_token",
        "refresh_token",
        "aws_secret_access_key",
        "aws_session_token",
        "secret_access_key",
        "session_token",
        "account_key",
        "sas_token",
        "authorization",
        "x-api-key",
        "url",
        "credentials_json",
    }
)


RESERVED_ENV_PREFIXES = ("FABRIC_", "DBT_ENV_SECRET_")
"""Variables a tenant may never declare in `env:`: fabric's settings (secret keys, the control
plane's URL) and the variables of the dbt profile fabric writes (a warehouse's password is
DBT_ENV_SECRET_FABRIC_DBT__...)."""


def is_reserved_env(name: str) -> bool:
    """Whether `name` is fabric's own (see RESERVED_ENV_PREFIXES), case-insensitively."""
    return name.upper().startswith(RESERVED_ENV_PREFIXES)


def env_prefix(slug: str) -> str:
    """The prefix of the variables tenant `slug` owns: acme -> ACME_, acme_eu -> ACME_EU_."""
    return slug.upper().replace("-", "_") + "_"


def env_owner(name: str, slugs: Iterable[str]) -> str | None:
    """The tenant whose prefix `name` begins with, the longest prefix winning (ACME_EU_X
    belongs to acme_eu when that tenant exists, else to acme); None when no tenant's does.

    Matching is case-sensitive, as variable names are: `acme_token` belongs to nobody.
    """
    owners = [s for s in slugs if name.startswith(env_prefix(s))]
    return max(owners, key=lambda s: (len(env_prefix(s)), s)) if owners else None


def env_name_problem(
    name: str, slug: str, slugs: Iterable[str], shared: Iterable[str]
) -> str | None:
    """Why tenant `slug` may not name variable `name` (in `env:` or a `${env:NAME}`), or None.

    A tenant names only its own variables (`<SLUG>_*`, see env_owner) and those fabric.yaml
    shares with every tenant in its `env:` list; fabric's own (FABRIC_*, DBT_ENV_SECRET_*)
    never. Whoever runs apply or the runner resolves the name from its environment, so a
    foreign name would hand another tenant's value to this one.
    """
    if is_reserved_env(name):
        return (
            "a variable of fabric's own (FABRIC_* and DBT_ENV_SECRET_* hold fabric's settings, "
            "keys and warehouse credentials), which no tenant may read"
        )
    if name in frozenset(shared):
        return None
    owner = env_owner(name, (*slugs, slug))
    if owner == slug:
        return None
    if owner is not None:
        return f"a variable of tenant {owner} (names beginning {env_prefix(owner)} are theirs)"
    return (
        f"neither tenant {slug}'s own (names beginning {env_prefix(slug)}) nor shared "
        "in fabric.yaml's env: list"
    )


@dataclass(frozen=True, slots=True, order=True)
class Reference:
    """A value to be resolved at apply or run time, never stored in git."""

    scheme: str  # "env" | "secret"
    name: str

    def __str__(self) -> str:
        return f"${{{self.scheme}:{self.name}}}"


def parse_reference(value: str) -> Reference | None:
    """The reference when `value` is exactly one `${env:X}` / `${secret:X}`, else None."""
    match = REFERENCE.fullmatch(value.strip())
    return Reference(match.group(1), match.group(2)) if match else None


def references_in(value: str) -> tuple[Reference, ...]:
    """Every reference inside a string (non-secret fields may interpolate, e.g. a host)."""
    return tuple(Reference(m.group(1), m.group(2)) for m in REFERENCE.finditer(value))


def is_secret_key(key: str) -> bool:
    """Whether a field of this name holds a credential (matched on the name, case-insensitive)."""
    lowered = key.lower()
    return lowered in SECRET_KEYS or lowered.endswith(
        ("_password", "_token", "_secret", "_api_key")
    )
