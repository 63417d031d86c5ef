"""One function per command: what the CLI and tests call.  [shell]"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fabric.addresses import Kind
from fabric.config.loader import LoadResult, load_repository


@dataclass(frozen=True, slots=True)
class ValidateResult:
    load: LoadResult

    @property
    def ok(self) -> bool:
        return self.load.ok

    def counts(self) -> dict[str, int]:
        desired = self.load.desired
        kinds = (Kind.CONNECTION, Kind.PIPELINE, Kind.TRANSFORMATION, Kind.SCHEDULE)
        counts = {f"{k.value}s": 0 for k in kinds}
        counts["dependencies"] = 0
        if desired is not None:
            for tenant in desired.tenants.values():
                for k in kinds:
                    counts[f"{k.value}s"] += tenant.count(k)
                counts["dependencies"] += len(tenant.dependencies)
        return counts


def validate(repo: Path) -> ValidateResult:
    """Load and check a repository; never raises for a bad repository."""
    return ValidateResult(load_repository(repo))
