"""Typed addresses of declared resources: `tenant.kind.name`, e.g. `acme.pipeline.orders`.

One parser, one formatter and a total order, so plans, diagnostics and run records name things
the same way everywhere.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

TENANT_SLUG = re.compile(r"[a-z][a-z0-9_]{0,39}")
NAME = re.compile(r"[a-z][a-z0-9_]{0,62}")
_NODE_KINDS = "(pipeline|transformation|snapshot|seed)"
EDGE = re.compile(rf"{_NODE_KINDS}\.[a-z][a-z0-9_]{{0,62}}->{_NODE_KINDS}\.[a-z][a-z0-9_]{{0,62}}")


class Kind(StrEnum):
    """Kinds of declared resources; the values are what users see in addresses."""

    TENANT = "tenant"
    CONNECTION = "connection"
    PIPELINE = "pipeline"
    TRANSFORMATION = "transformation"
    SCHEDULE = "schedule"
    DEPENDENCY = "dependency"
    ROLE = "role"
    """A tenant's login role in a managed warehouse (lives in the warehouse, not the control
    plane); the kinds below too."""
    SCHEMA = "schema"
    """The ownership of a schema the tenant writes in a managed warehouse."""
    GRANT = "grant"
    """Who besides its owner may use one of the tenant's schemas (its declared shares)."""
    SNAPSHOT = "snapshot"
    """A dbt snapshot (type-2 history of a query): a DAG node like a transformation."""
    MACRO = "macro"
    """A dbt macro file: the tenant's `macros/**/*.sql`, or one of fabric.yaml's `dbt.macros`
    folder (named `project__<stem>`), part of the tenant's generated dbt project."""
    SEED = "seed"
    """A CSV file of the tenant's `seeds/` folder, loaded by `dbt seed`."""
    TEST = "test"
    """A singular dbt test: a `.sql` file of the tenant's `tests/` folder."""


DBT_KINDS = frozenset({Kind.TRANSFORMATION, Kind.SNAPSHOT, Kind.SEED})
"""Kinds whose nodes run in the tenant's dbt invocation (batched together)."""
KINDS = frozenset(k.value for k in Kind)  # `"x" in Kind` raises TypeError on Python 3.11
SECTIONS: dict[str, Kind] = {
    "connections": Kind.CONNECTION,
    "pipelines": Kind.PIPELINE,
    "transformations": Kind.TRANSFORMATION,
    "schedules": Kind.SCHEDULE,
    "snapshots": Kind.SNAPSHOT,
    "seeds": Kind.SEED,
}
DBT_NODE_KINDS = DBT_KINDS
"""DAG nodes a tenant's dbt invocation runs (batched together: one invocation per tenant)."""


@dataclass(frozen=True, slots=True, order=True)
class Address:
    """A resource's identity across the repository, the control plane and run records.

    A tenant itself is addressed as `acme.tenant.acme`, so every declared object has an address.
    """

    tenant: str
    kind: Kind
    name: str

    @classmethod
    def parse(cls, text: str) -> Address:
        tenant, _, rest = text.partition(".")
        kind, _, name = rest.partition(".")
        pattern = EDGE if kind == Kind.DEPENDENCY else NAME
        if not rest:  # a tenant is addressed by its slug alone
            kind, name = Kind.TENANT.value, tenant
        if not (TENANT_SLUG.fullmatch(tenant) and kind in KINDS and pattern.fullmatch(name)):
            raise ValueError(
                f"{text!r} is not an address; expected tenant.kind.name, e.g. acme.pipeline.orders"
            )
        return cls(tenant, Kind(kind), name)

    @classmethod
    def of_tenant(cls, slug: str) -> Address:
        return cls(slug, Kind.TENANT, slug)

    @classmethod
    def of_edge(cls, upstream: Address, downstream: Address) -> Address:
        """A dependency's address: `acme.dependency.pipeline.orders->transformation.totals`."""
        name = f"{upstream.kind}.{upstream.name}->{downstream.kind}.{downstream.name}"
        return cls(upstream.tenant, Kind.DEPENDENCY, name)

    def edge(self) -> tuple[Address, Address]:
        """The (upstream, downstream) of a dependency's address."""
        up, _, down = self.name.partition("->")
        (uk, _, un), (dk, _, dn) = up.partition("."), down.partition(".")
        return Address(self.tenant, Kind(uk), un), Address(self.tenant, Kind(dk), dn)

    def __str__(self) -> str:
        if self.kind is Kind.TENANT:
            return self.tenant
        return f"{self.tenant}.{self.kind}.{self.name}"
