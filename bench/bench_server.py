"""The PostgreSQL a bench runs against, stopped again when the bench started it.

FABRIC_DATABASE_URL when set; otherwise fabric's embedded server in bench/.out/pg, started for
this bench and stopped when it exits (an already running one is reused and left running).
"""

from __future__ import annotations

import atexit
import os
from pathlib import Path

from fabric.state.embedded import ensure_server, stop_server

HOME = Path(__file__).resolve().parent / ".out" / "pg"


def server_url() -> str:
    if url := os.environ.get("FABRIC_DATABASE_URL"):
        return url
    server = ensure_server(HOME)
    if server.started:
        atexit.register(stop_server, server.home)
    return server.tcp_url()
