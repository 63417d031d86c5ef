"""The PostgreSQL a bench runs against, stopped again when the bench started it.

FABRIC_DATABASE_URL when set; otherwise fabric's embedded server in bench/.out/pg, started for
this bench and stopped when it exits (an already running one is reused and left running).
`stock=True` uses a second embedded server, bench/.out/pg-stock, started with PostgreSQL's
default settings (max_locks_per_transaction 64), as a managed server has them.
"""

from __future__ import annotations

import atexit
import os
from pathlib import Path

from fabric.state.embedded import ensure_server, stop_server

HOME = Path(__file__).resolve().parent / ".out" / "pg"


def server_url(*, stock: bool = False) -> str:
    if url := os.environ.get("FABRIC_DATABASE_URL"):
        return url
    if stock:
        server = ensure_server(HOME.with_name("pg-stock"), max_locks_per_transaction=None)
    else:
        server = ensure_server(HOME)
    if server.started:
        atexit.register(stop_server, server.home)
    return server.tcp_url()
