"""A `fabric worker` whose nodes are no-ops (bench/noop_nodes.py), for the queue benches.

python bench/noop_worker.py REPO NAME CONCURRENCY   (settings from the environment)
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from noop_nodes import noop, noop_batch

from fabric import api

if __name__ == "__main__":
    repo, name, concurrency = sys.argv[1], sys.argv[2], int(sys.argv[3])
    api.worker(
        Path(repo),
        name=name,
        concurrency=concurrency,
        heartbeat=2.0,
        execute=noop,
        execute_batch=noop_batch,
    )
