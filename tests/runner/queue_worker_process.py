"""A `fabric worker` process running the tests' scripted nodes (started by test_queue_worker).

argv: repo, name, concurrency; the environment carries FABRIC_DATABASE_URL and the keys.
"""

from __future__ import annotations

import sys
from pathlib import Path

from scripted_nodes import scripted, scripted_batch

from fabric import api

if __name__ == "__main__":
    repo, name, concurrency = sys.argv[1], sys.argv[2], int(sys.argv[3])
    api.worker(
        Path(repo),
        name=name,
        concurrency=concurrency,
        lost_after=2.0,
        heartbeat=0.5,
        reap_every=0.5,
        log_format="json",
        execute=scripted,
        execute_batch=scripted_batch,
    )
