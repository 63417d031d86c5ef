"""fabric: GitOps for multi-tenant ETL.

The command-line interface is `fabric` (fabric.cli); `fabric.api` has one function per command
for programs and tests. Importing this package is cheap: nothing heavy is imported here.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("etl-fabric")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0"

__all__ = ["__version__"]
