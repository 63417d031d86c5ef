"""Warm workers: the forkserver imports dlt and dbt once, while the runner starts up.  [shell]

The local executor forks its workers from multiprocessing's forkserver. Left to itself, every
worker imports dlt and dbt on its first node (1-3 s each, on every worker), after the runner
has finished its own start-up. `start_worker_server()` starts the forkserver at the beginning of
a run with the modules nodes need preloaded: it imports them once, on another core, while the
runner imports its own modules and reads the control plane, and every worker forked from it
starts with them imported. Measured on a small tenant (bench/small_run.py) this is most of a
cold `fabric run`'s time.

Preloading only imports modules: no connection, thread or file stays open in the forkserver
(importing dlt and dbt starts no thread), so forking from it is as safe as forking the bare
interpreter. The forkserver imports `fabric.runner.warm_imports`, which imports `PRELOAD` one by
one and skips any that fails (dbt not installed, a broken plugin): the node that needs it then
reports the error as before, and the forkserver itself never dies of it. Calling this when the
forkserver already runs does nothing (the executor's own `set_forkserver_preload` then changes
nothing either).
"""

from __future__ import annotations

import multiprocessing
import threading
from collections.abc import Mapping
from typing import Any

__all__ = ["PRELOAD", "start_worker_server"]

PRELOAD: tuple[str, ...] = (
    # fabric's worker side (pydantic specs, secrets, the node modules)
    "fabric.runner.worker",
    "fabric.runner.dlt_node",
    "fabric.runner.dlt_sources",
    "fabric.runner.dbt_node",
    "fabric.config.specs",
    "fabric.state.secrets",
    # dlt: the pipeline, the postgres destination, the sources fabric builds, arrow and ADBC
    "dlt",
    "dlt.pipeline.pipeline",
    "dlt.extract.extract",
    "dlt.normalize.normalize",
    "dlt.load.load",
    "dlt.destinations.impl.postgres.postgres",
    "dlt.sources.filesystem",
    "dlt.sources.sql_database",
    "dlt.sources.rest_api",
    "pyarrow.csv",
    "pyarrow.parquet",
    "adbc_driver_postgresql.dbapi",
    "psycopg",
    # dbt: the programmatic runner, the parser, build/test tasks and the postgres adapter
    "dbt.cli.main",
    "dbt.parser.manifest",
    "dbt.task.build",
    "dbt.task.test",
    "dbt.adapters.postgres.impl",
)
"""Modules every worker starts with (leaves: each pulls in its package); the import order."""


_STARTED: list[int] = []
"""The pid of the forkserver this process started (clean environment, preloaded)."""


def start_worker_server(environ: Mapping[str, str] | None = None) -> None:
    """Start the forkserver now, importing `PRELOAD` in the background; returns at once.

    Workers fork from the forkserver and inherit its environment (and its
    `/proc/<pid>/environ`), so it starts with nothing of `environ` (the caller's environment,
    the process's by default) but its harmless part (fabric.settings.base_environment). A
    forkserver started otherwise (by code outside fabric) is stopped and started again. The
    first worker the executor starts waits for the preload to finish (the forkserver forks
    only then), so call this as early as possible in a command that will run nodes; calling it
    again is cheap.
    """
    from multiprocessing import forkserver

    from fabric import settings

    preload = ["fabric.runner.worker", "fabric.runner.warm_imports"]
    if threading.current_thread() is threading.main_thread():
        # the forkserver dies with this process (a parent-death signal fires when the thread
        # that started the child ends, so only the main thread can promise to live as long)
        preload.insert(0, "fabric.runner.lifeline")
    multiprocessing.get_context("forkserver").set_forkserver_preload(preload)
    server: Any = forkserver._forkserver  # type: ignore[attr-defined]
    pid = getattr(server, "_forkserver_pid", None)
    if pid is not None and pid not in _STARTED:
        server._stop()
    base = settings.base_environment(settings.process_environ() if environ is None else environ)
    clean = {k: v for k, v in base.items() if k not in ("HOME", "TMPDIR")}
    with settings.only_environment(clean):  # a no-op when ours runs; a clean restart if it died
        forkserver.ensure_running()
    _STARTED[:] = [server._forkserver_pid]
