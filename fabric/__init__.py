"""fabric: GitOps for multi-tenant ETL.

The command-line interface is `fabric` (fabric.cli); `fabric.api` has one function per command
for programs and tests. Importing this package is cheap: nothing heavy is imported here, and
`__version__` is read from the installed metadata only when asked for (importlib.metadata costs
every command tens of milliseconds).
"""

from __future__ import annotations

__all__ = ["__version__"]


def __getattr__(name: str) -> str:
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("etl-fabric")
        except PackageNotFoundError:  # pragma: no cover - a source tree without install
            return "0.0.0"
    raise AttributeError(f"module 'fabric' has no attribute {name!r}")
