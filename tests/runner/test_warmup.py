"""Workers forked after `start_worker_server()` start with dlt and dbt already imported."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

SCRIPT = """
import multiprocessing
import sys

from fabric.runner.warmup import PRELOAD, start_worker_server


def report(conn):
    conn.send([name for name in PRELOAD if name not in sys.modules])


if __name__ == "__main__":
    start_worker_server()
    ctx = multiprocessing.get_context("forkserver")
    parent, child = ctx.Pipe()
    process = ctx.Process(target=report, args=(child,))
    process.start()
    print("missing:", parent.recv())
    process.join()
    start_worker_server()  # a second call reuses the running server
    print("exit:", process.exitcode)
"""


def test_a_worker_starts_with_every_preloaded_module_imported(tmp_path: Path):
    script = tmp_path / "warm.py"
    script.write_text(textwrap.dedent(SCRIPT))
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == ["missing: []", "exit: 0"], done.stdout + done.stderr
