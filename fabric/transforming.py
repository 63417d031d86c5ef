"""Library functions behind `fabric compile` and `fabric test`.  [shell]

Both read what has been applied (never the YAML on disk): the compiled SQL and the tests are
those of the transformations the runner would run. dbt is imported only inside the functions
that need it (through fabric.runner.dbt_node), so importing this module is cheap.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fabric.addresses import Address, Kind
from fabric.errors import FabricError

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from fabric.running import RunResult

__all__ = ["compile_transformation", "run_tests"]


def compile_transformation(
    repo: Path,
    address: str | Address,
    environ: Mapping[str, str] | None = None,
    *,
    engine: Engine | None = None,
) -> str:
    """The SQL dbt compiles an applied transformation to, refs and sources resolved.

    `address` is `tenant.transformation.name`. dbt connects to the transformation's warehouse
    (an incremental model's `is_incremental()` looks at the existing table), with the
    credentials decrypted in this process and handed to dbt through the environment only.
    """
    from fabric import api
    from fabric.runner.dbt_node import compile_node
    from fabric.running import RunOptions, node_spec
    from fabric.state.applied import read_applied
    from fabric.state.embedded import fabric_home

    target = _transformation_address(address)
    ws = api.workspace(repo, environ)
    engine = engine or ws.engine("compile")
    with engine.connect() as conn:
        applied = read_applied(conn, target.tenant)
    if target not in applied.nodes:
        known = sorted(a.name for a in applied.nodes if a.kind is Kind.TRANSFORMATION)
        hint = f" Applied transformations: {', '.join(known)}." if known else ""
        raise FabricError(f"{target} is not an applied transformation.{hint}")
    home = fabric_home(ws.root, ws.settings)
    options = RunOptions(
        workdir=home / "work",
        repo_root=ws.root,
        secret_home=None if ws.settings.database_url else home,
    )
    node = node_spec(applied, target, options)
    warehouse = node.project.get("connections", {}).get(node.spec.get("warehouse"))
    box = ws.secret_box() if warehouse is not None and warehouse.secrets else None
    return compile_node(node, box, environ=ws.environ)


def run_tests(
    repo: Path,
    *,
    tenants: Sequence[str] = (),
    all_tenants: bool = False,
    selectors: Sequence[str] = (),
    workers: int | None = None,
    environ: Mapping[str, str] | None = None,
    engine: Engine | None = None,
    on_event: Any = None,
) -> RunResult:
    """Run only the tests of the selected transformations (`fabric test`), recorded as a run.

    The normal runner path with `tests_only`: the selection keeps transformations only, and
    each node runs `dbt test` on its own model's tests.
    """
    from fabric import api

    return api.run(
        repo,
        tenants=tenants,
        all_tenants=all_tenants,
        selectors=selectors,
        workers=workers,
        tests_only=True,
        environ=environ,
        engine=engine,
        on_event=on_event,
    )


def _transformation_address(address: str | Address) -> Address:
    if isinstance(address, Address):
        target = address
    else:
        try:
            target = Address.parse(address)
        except ValueError:
            target = None
    if target is None or target.kind is not Kind.TRANSFORMATION:
        raise FabricError(
            f"{str(address)!r} is not a transformation's address; expected "
            "TENANT.transformation.NAME, e.g. acme.transformation.customer_totals"
        )
    return target
