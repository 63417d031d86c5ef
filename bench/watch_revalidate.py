"""How fast does `fabric watch` re-validate a big repository after a one-file edit?

Generates the repository of bench/validate_scale.py (1,000 tenants x 50 resources, about 12 MB
of YAML) and times, in this process, medians of `--repeat` (default 5):
  - full validate : `load_repository(root)` with no cache (what `fabric validate` does);
  - re-validate   : `load_repository(root, cache=..., changed={slug})` right after editing one
                    tenant file (a different tenant and a changed value each time), with the
                    cache a watcher keeps warm (what `fabric watch` does after a save).
Target: re-validate under 1 s. Prints both times and their ratio. Run it on a quiet machine:
the figures are wall-clock times.

    uv run python bench/watch_revalidate.py [--tenants 1000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from validate_scale import generate  # noqa: E402

from fabric.config.loader import LoadCache, load_repository  # noqa: E402

TARGET = 1.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tenants", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "repo"
        root.mkdir()
        size = generate(root, args.tenants)
        print(f"repository: {args.tenants} tenants x 50 resources, {size / 1e6:.1f} MB of YAML")

        full = []
        for _ in range(args.repeat):
            start = time.perf_counter()
            result = load_repository(root)
            full.append(time.perf_counter() - start)
        assert result.ok, result.diagnostics[:5]

        cache = LoadCache()
        load_repository(root, cache=cache)  # the watcher's first report fills the cache
        again = []
        for n in range(args.repeat):
            slug = f"t{(n * 37) % args.tenants:04d}"
            path = root / "tenants" / slug / "pipelines.yaml"
            text = path.read_text()  # a changed value: one pipeline's initial cursor value
            path.write_text(text.replace("'2024-01-01'", f"'2024-02-{n + 10:02d}'", 1))
            start = time.perf_counter()
            edited = load_repository(root, cache=cache, changed={slug})  # as `fabric watch` does
            again.append(time.perf_counter() - start)
            assert edited.ok, edited.diagnostics[:5]
            assert edited.desired == load_repository(root).desired  # the same as a fresh load

        full_s, again_s = statistics.median(full), statistics.median(again)
        print(f"full validate (no cache)   : {full_s:6.2f} s (median of {args.repeat})")
        print(f"re-validate after one edit : {again_s:6.2f} s (median of {args.repeat})")
        ratio = again_s / full_s
        print(f"ratio re-validate/full     : {ratio:6.3f}x   (target: under {TARGET:.0f} s)")


if __name__ == "__main__":
    main()
