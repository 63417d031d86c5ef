"""How fast is `fabric validate` on a big repository, against a bare YAML parse of it?

Generates 1,000 tenants x 50 resources (about 12 MB of YAML) and times, in this process,
medians of 3:
  - baseline: `yaml.load(text, Loader=CSafeLoader)` of every file (texts already in memory);
  - validate: `fabric.config.loader.load_repository(root)` (reads files, parses, validates,
    resolves, checks: everything `fabric validate` does but printing).
Target: validate within 1.5x of the baseline.

    uv run python bench/validate_scale.py [--tenants 1000] [--out DIR]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fabric.config.loader import load_repository  # noqa: E402

CONNECTIONS, PIPELINES, TRANSFORMATIONS, SCHEDULES = 4, 22, 20, 4  # 50 resources per tenant


def tenant_files(slug: str) -> dict[str, str]:
    files: dict[str, str] = {}
    files["tenant.yaml"] = (
        f"tenant:\n  display_name: Tenant {slug}\n  warehouse: dwh\n"
        f"  members:\n    - {{who: owner@{slug}.example, role: owner}}\n"
        f"  labels: {{cost_center: cc_{slug}, tier: gold}}\n"
    )
    conns = ["connections:"]
    conns.append(
        "  dwh:\n    type: postgres\n    direction: destination\n    host: dwh.internal\n"
        f"    port: 5432\n    database: {slug}_dwh\n    username: {slug}_loader\n"
        "    password: ${secret:dwh_password}"
    )
    for i in range(1, CONNECTIONS):
        conns.append(
            f"  src_{i}:\n    type: postgres\n    direction: source\n"
            f"    host: db{i}.{slug}.internal\n"
            f"    port: 5432\n    database: app_{i}\n    username: reader\n"
            f"    password: ${{env:{slug.upper()}_SRC_{i}_PASSWORD}}"
        )
    files["connections.yaml"] = "\n".join(conns) + "\n"
    pipes = ["pipelines:"]
    for i in range(PIPELINES):
        pipes.append(
            f"  table_{i}:\n    source: src_{1 + i % (CONNECTIONS - 1)}\n    dataset: {slug}_raw\n"
            f"    mode: single_table\n    table: table_{i}\n"
            "    incremental: {cursor: updated_at, initial_value: '2024-01-01'}\n"
            "    write_disposition: merge\n    primary_key: [id]\n"
            "    schema_contract: {columns: evolve, data_type: freeze}\n"
            "    filters: [{column: status, op: ne, value: test}]\n"
            f"    batch_size: 50000\n    tags: [nightly, group_{i % 4}]\n    retries: 2"
        )
    files["pipelines.yaml"] = "\n".join(pipes) + "\n"
    models = ["transformations:"]
    for i in range(TRANSFORMATIONS):
        upstream = f"{{{{ ref('model_{i - 1}') }}}}" if i else "{{ source('table_0', 'table_0') }}"
        models.append(
            f"  model_{i}:\n    schema: {slug}_marts\n    materialized: table\n    sql: |\n"
            f"      select id, count(*) as n, sum(amount) as total\n"
            f"      from {upstream}\n      join {{{{ source('table_{i + 1}', 'table_{i + 1}') }}}} "
            f"using (id)\n      group by id\n"
            "    tests:\n      id: [not_null, unique]\n"
            "      tier: [{accepted_values: [gold, silver, bronze]}]"
        )
    files["transformations.yaml"] = "\n".join(models) + "\n"
    schedules = ["schedules:"]
    for i in range(SCHEDULES):
        schedules.append(
            f"  every_{i}:\n    cron: '{i * 5} {i} * * *'\n    timezone: Europe/Berlin\n"
            f"    targets: ['tag:group_{i}+', '+model_{i}']\n    max_instances: 1"
        )
    files["schedules.yaml"] = "\n".join(schedules) + "\n"
    return files


def generate(root: Path, tenants: int) -> int:
    (root / "fabric.yaml").write_text(
        "format_version: 1\nname: scale\nownership: {enforce: false}\n"
    )
    total = 0
    for n in range(tenants):
        slug = f"t{n:04d}"
        folder = root / "tenants" / slug
        folder.mkdir(parents=True)
        for name, text in tenant_files(slug).items():
            (folder / name).write_text(text)
            total += len(text.encode())
    return total


def median_time(fn: Callable[[], object], runs: int = 3) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tenants", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=None, help="keep the generated repo here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = args.out or Path(tmp) / "repo"
        root.mkdir(parents=True, exist_ok=True)
        size = generate(root, args.tenants)
        texts = [p.read_text() for p in sorted(root.rglob("*.yaml"))]
        print(
            f"repository: {args.tenants} tenants x 50 resources, {len(texts)} files, "
            f"{size / 1e6:.1f} MB of YAML"
        )

        def bare() -> None:
            for text in texts:
                yaml.load(text, Loader=yaml.CSafeLoader)

        result = load_repository(root)
        assert result.ok, result.diagnostics[:5]
        baseline = median_time(bare)
        validate = median_time(lambda: load_repository(root))
        print(f"bare CSafeLoader parse : {baseline:7.2f} s (median of 3)")
        print(f"fabric validate        : {validate:7.2f} s (median of 3)")
        print(f"ratio validate/parse   : {validate / baseline:7.2f}x   (target <= 1.5x)")


if __name__ == "__main__":
    main()
