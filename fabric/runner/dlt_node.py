"""Run one fabric pipeline with dlt, inside a worker process.  [shell]

`run_pipeline_node(node)` turns a NodeSpec into a dlt pipeline run and returns a NodeResult;
no dlt object or exception crosses that boundary.

Invariants:
- Credentials arrive resolved in the NodeSpec (the runner decrypts them), are passed to dlt as
  arguments, and are never logged: every error message and every log line is redacted with
  the values of the node's secrets (and the control plane's password) before it leaves this module.
- Nothing here touches `os.environ` or the working directory. dlt's own settings (no
  telemetry, no compression, log level) are set with `dlt.config.values(...)`, which restores
  the previous values on exit.
- One run of a pipeline at a time: while it runs the node holds a session advisory lock keyed by
  (tenant, pipeline) on the control plane, on its own connection named `fabric run <run id>
  <address>`. A second run waits up to `lock_wait` seconds and then fails naming the holder. A
  killed worker's connection dies with it, and so does its lock.
- The destination is the source of truth for incremental state: dlt stores the state with each
  load and counts it only once the load is complete (`_dlt_loads`), and every run starts by
  syncing from the destination. A run killed mid-way leaves its package in the local pipelines
  dir; the next run on this machine finishes that package first (dlt loads each file once), so
  the result equals an uninterrupted run. A run that fails for good (bad config, schema
  contract) aborts its packages, which also rolls the local state back.
- Completed load packages are deleted after success (dlt keeps them forever by default).
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
import zlib
from collections import Counter, deque
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fabric.clock import utcnow
from fabric.domain.runs import FailureKind, NodeResult, NodeSpec, ResolvedConnection
from fabric.errors import FabricError
from fabric.runner.failures import classify, redact
from fabric.state.locks import LockNamespace

if TYPE_CHECKING:
    from fabric.config.specs import PipelineSpec

LOCK_WAIT_SECONDS = 60.0
"""How long a run waits for another run of the same pipeline before it fails."""
LOG_TAIL_LINES = 30
LOAD_WORKERS = 4
"""Parallel load jobs (one ADBC COPY or INSERT each); more does not help on two cores."""
DLT_SETTINGS: Mapping[str, Any] = {
    "runtime.dlthub_telemetry": False,
    "runtime.log_level": "INFO",
    # NOTE: compressing load files costs CPU and saves nothing worth having on a local disk
    # whose packages are deleted after the load: 7% of the end-to-end time of 1M rows on the
    # parquet path; dlt gzips its text formats (jsonl, insert_values, csv) by default too.
    "data_writer.disable_compression": True,
    "extract.data_writer.disable_compression": True,
    "normalize.data_writer.disable_compression": True,
}


class PipelineBusyError(FabricError):
    """Another run of the same pipeline held its lock for longer than this run would wait."""

    def __init__(self, address: str, holder: str | None, waited: float) -> None:
        self.address = address
        self.holder = holder
        by = holder or "another session (gone by now)"
        super().__init__(
            f"{address} is already running: {by} holds its run lock; waited {waited:g} s. "
            "dlt cannot run one pipeline twice at once; run it again when that run has finished."
        )


class NodeConfigError(FabricError):
    """The node cannot run as configured (missing connection, unsupported destination)."""


def run_pipeline_node(node: NodeSpec, *, lock_wait: float = LOCK_WAIT_SECONDS) -> NodeResult:
    """Extract and load one pipeline with dlt; never raises, never returns a secret."""
    started_at = utcnow()
    tail = LogTail()
    secrets: list[str] = list(node.secret_values)
    try:
        spec = _pipeline_spec(node)
        source = _connection(node, spec.source)
        if not spec.destination:
            raise NodeConfigError("the pipeline has no destination (and the tenant no warehouse)")
        destination = _connection(node, spec.destination)
        lock_url = _control_plane(node.control_plane_url, secrets)
        with contextlib.ExitStack() as stack:
            if lock_url:
                stack.enter_context(
                    pipeline_lock(
                        lock_url,
                        str(node.address),
                        application_name=f"fabric run {node.run_id} {node.address}",
                        wait=lock_wait,
                    )
                )
            stack.enter_context(_capture_dlt_logs(tail))
            rows = _run(node, spec, source, destination, tail)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # connectorx panics are BaseExceptions
        failure = classify(exc)
        tail.note(f"failed: {failure.message}")
        return NodeResult.failed(
            node.address,
            redact(failure.message, secrets),
            failure.kind,
            log_tail=tail.text(secrets),
            started_at=started_at,
            finished_at=utcnow(),
        )
    total = sum(rows.values())
    tail.note(f"loaded {total} rows into {len(rows)} tables of dataset {spec.dataset}")
    return NodeResult.succeeded(
        node.address,
        rows_loaded=dict(sorted(rows.items())),
        log_tail=tail.text(secrets),
        started_at=started_at,
        finished_at=utcnow(),
    )


def _pipeline_spec(node: NodeSpec) -> PipelineSpec:
    from pydantic import ValidationError

    from fabric.config.specs import PipelineSpec

    try:
        return PipelineSpec.model_validate(dict(node.spec))
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'spec'}: {e['msg']}" for e in exc.errors()[:5]
        )
        raise NodeConfigError(f"the stored pipeline spec is invalid: {problems}") from None


def _connection(node: NodeSpec, name: str) -> ResolvedConnection:
    resolved = node.connections.get(name)
    if resolved is None:
        raise NodeConfigError(f"connection {name!r} was not passed to the node")
    return resolved


def _control_plane(url: str, secrets: list[str]) -> str:
    """The control plane's URL for libpq (psycopg), its password added to the redaction list."""
    if not url:
        return ""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.password:
        secrets.append(str(parsed.password))
    return parsed.set(drivername="postgresql").render_as_string(hide_password=False)


# -- the run --------------------------------------------------------------------------------------


def _run(
    node: NodeSpec,
    spec: PipelineSpec,
    source: ResolvedConnection,
    destination: ResolvedConnection,
    tail: LogTail,
) -> Counter[str]:
    import dlt

    from fabric.runner.dlt_destinations import build_destination
    from fabric.runner.dlt_sources import build_resources

    target = build_destination(
        destination,
        tenant=node.address.tenant,
        repo_root=node.repo_root or ".",
        dataset=spec.dataset,
        session=node.session,
    )

    timer = _PhaseTimer()
    with timer("build"):
        build = build_resources(
            spec,
            source,
            repo_root=node.repo_root or ".",
            name=node.state_name or node.address.name,
            tenant=node.address.tenant,
            session=node.session,
        )
    for note in build.notes:
        tail.note(note)
    tail.note(f"destination {target.name}: {target.kind} at {target.location}")
    workdir = Path(node.workdir) if node.workdir else Path(".fabric") / "work" / node.address.tenant
    pipelines_dir = workdir / "dlt"
    pipelines_dir.mkdir(parents=True, exist_ok=True)
    contract = _schema_contract(spec)
    rows: Counter[str] = Counter()
    settings = dict(DLT_SETTINGS)
    if build.file_max_items:
        settings["data_writer.file_max_items"] = build.file_max_items
    with dlt.config.values(settings):
        pipeline = dlt.pipeline(
            pipeline_name=f"{node.address.tenant}__{node.state_name or node.address.name}",
            pipelines_dir=str(pipelines_dir),
            destination=target.factory(),
            dataset_name=spec.dataset,
        )
        logging.getLogger("dlt").setLevel(logging.INFO)  # dlt resets it when it starts up
        try:
            with timer("sync"):
                pipeline.sync_destination()
            if pipeline.has_pending_data:
                with timer("resume"), _dataset_lock(target.sql_url, spec.dataset):
                    rows += _finish_pending(pipeline, tail)
            with timer("extract"):
                pipeline.extract(
                    build.resources,
                    loader_file_format=target.loader_file_format or build.loader_file_format,
                    schema_contract=contract,
                    refresh="drop_sources" if node.full_refresh else None,
                )
            naming = pipeline.default_schema.naming
            for resource in build.resources:  # a table with no new rows reports 0
                rows[naming.normalize_table_identifier(_table_name(resource))] += 0
            with timer("normalize"):
                counts = _normalized_counts(pipeline.normalize())
            with timer("load"), _dataset_lock(target.sql_url, spec.dataset):
                info = pipeline.load(workers=LOAD_WORKERS)
            for load_id in info.loads_ids if info else ():
                rows.update(counts.get(load_id, {}))
        except BaseException as exc:
            # NOTE: only a dlt step that failed for good aborts; a transient failure keeps its
            # package for the retry to finish, and a bug in fabric must not destroy data.
            if (
                type(exc).__name__ == "PipelineStepFailed"
                and classify(exc).kind is not FailureKind.TRANSIENT
            ):
                _abort_packages(pipeline, tail)
            raise
        finally:
            # NOTE: dlt pickles each run's trace, exception texts and SQL included, next to the
            # state; fabric records runs itself, and nothing a secret could be in stays on disk.
            (Path(pipeline.working_dir) / "trace.pickle").unlink(missing_ok=True)
            tail.note(timer.summary())
        _delete_loaded_packages(pipeline)
    return rows


class _PhaseTimer:
    """Seconds per phase of a run, for one line of the log."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - start

    def summary(self) -> str:
        return "seconds: " + ", ".join(f"{k} {v:.3f}" for k, v in self.seconds.items())


def _schema_contract(spec: PipelineSpec) -> Any:
    contract = spec.schema_contract
    if contract is None or isinstance(contract, str):
        return contract
    return {k: v for k, v in contract.model_dump().items() if v is not None} or None


def _table_name(resource: Any) -> str:
    name = resource.table_name
    return name if isinstance(name, str) else resource.name


def _finish_pending(pipeline: Any, tail: LogTail) -> Counter[str]:
    """Load the packages an interrupted run left behind (before anything new is extracted)."""
    rows: Counter[str] = Counter()
    counts: dict[str, dict[str, int]] = {}
    if pipeline.list_extracted_load_packages():
        counts.update(_normalized_counts(pipeline.normalize()))
    pending = list(pipeline.list_normalized_load_packages())
    if not pending:
        return rows
    tail.note(f"finishing {len(pending)} load package(s) left by an interrupted run")
    for load_id in pending:
        if load_id not in counts:
            counts[load_id] = _package_file_counts(pipeline, load_id)
    info = pipeline.load(workers=LOAD_WORKERS)
    for load_id in info.loads_ids if info else ():
        rows.update(counts.get(load_id, {}))
    return rows


def _normalized_counts(info: Any) -> dict[str, dict[str, int]]:
    """load id -> {table: rows} from dlt's normalize info, without dlt's own tables."""
    out: dict[str, dict[str, int]] = {}
    if info is None:
        return out
    for load_id, metrics in info.metrics.items():
        tables: dict[str, int] = {}
        for m in metrics:
            for table, tm in m["table_metrics"].items():
                if not table.startswith("_dlt"):
                    tables[table] = tables.get(table, 0) + tm.items_count
        out[load_id] = tables
    return out


def _package_file_counts(pipeline: Any, load_id: str) -> dict[str, int]:
    """Rows per table in a package normalized by an earlier process (read from its files)."""
    out: dict[str, int] = {}
    package = pipeline.get_load_package_info(load_id)
    for jobs in package.jobs.values():
        for job in jobs:
            parsed = job.job_file_info
            if parsed.table_name.startswith("_dlt"):
                continue
            rows = _file_rows(Path(job.file_path), parsed.file_format)
            out[parsed.table_name] = out.get(parsed.table_name, 0) + rows
    return out


def _file_rows(path: Path, file_format: str) -> int:
    if file_format == "parquet":
        import pyarrow.parquet as pq

        return int(pq.ParquetFile(path).metadata.num_rows)
    import gzip

    opener: Any = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        lines = sum(1 for _ in f)
    if file_format == "csv":
        return max(lines - 1, 0)
    if file_format == "insert_values":
        return max(lines - 2, 0)  # the INSERT and VALUES lines
    return lines


def _abort_packages(pipeline: Any, tail: LogTail) -> None:
    """Drop what a failed run left pending and roll the local state back, so a fixed config
    starts from the destination's state instead of retrying a package that cannot load."""
    if not pipeline.has_pending_data:
        return
    try:
        pipeline.abort_packages()
        tail.note("aborted the pending load package(s) of this failed run")
    except Exception as exc:  # the failure being reported matters more
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        tail.note(f"could not abort the pending load packages: {first}")


def _delete_loaded_packages(pipeline: Any) -> None:
    # NOTE: dlt archives every completed package under load/loaded/ and never deletes it
    # (a benchmark here piled up 11 GB). The package info was already read for the result.
    storage = pipeline._get_load_storage()
    for load_id in pipeline.list_completed_load_packages():
        storage.delete_loaded_package(load_id)


# -- the run lock ---------------------------------------------------------------------------------


def _dataset_lock(sql_url: Any, dataset: str) -> contextlib.AbstractContextManager[None]:
    """The dataset lock of a warehouse; files need none (each load writes its own files)."""
    return dataset_lock(sql_url, dataset) if sql_url is not None else contextlib.nullcontext()


DATASET_LOCK_OPTIONS = "-c search_path=pg_catalog -c statement_timeout=0 -c lock_timeout=0"


@contextlib.contextmanager
def dataset_lock(dest_url: Any, dataset: str) -> Iterator[None]:
    """Serialise loads into one dataset of one warehouse, held on the warehouse itself.

    Two pipelines loading into the same dataset at once both create dlt's tables
    (`_dlt_loads`, ...) and their own, and PostgreSQL's catalog refuses the second CREATE
    ("duplicate key ... pg_type_typname_nsp_index"). Extract and normalize still run in
    parallel; only the load steps of one dataset take turns.
    """
    import psycopg

    url = dest_url.set(drivername="postgresql").render_as_string(hide_password=False)
    # search_path pinned, no timeout: waiting for the dataset's turn is what this session does
    conn = psycopg.connect(
        url, autocommit=True, application_name="fabric dataset lock", options=DATASET_LOCK_OPTIONS
    )
    try:
        key = pipeline_lock_key(f"dataset:{dataset}")
        conn.execute("SELECT pg_advisory_lock(%s, %s)", (LockNamespace.DATASET, key))
        yield
    finally:
        conn.close()  # a session lock ends with its session


def pipeline_lock_key(address: str) -> int:
    """A stable signed 32-bit key per pipeline address."""
    value = zlib.crc32(address.encode())
    return value - (1 << 32) if value >= (1 << 31) else value


@contextlib.contextmanager
def pipeline_lock(url: str, address: str, *, application_name: str, wait: float) -> Iterator[None]:
    """Hold the run lock of `address` on the control plane for the duration of the block.

    Raises:
        PipelineBusyError: another session held it for `wait` seconds.
    """
    import psycopg

    conn = psycopg.connect(
        url, autocommit=True, application_name=application_name[:63], connect_timeout=10
    )
    try:
        key = pipeline_lock_key(address)
        conn.execute(f"SET lock_timeout = '{max(1, int(wait * 1000))}ms'")
        try:
            conn.execute("SELECT pg_advisory_lock(%s, %s)", (LockNamespace.PIPELINE, key))
        except psycopg.errors.LockNotAvailable:
            raise PipelineBusyError(address, _lock_holder(conn, key), wait) from None
        conn.execute("RESET lock_timeout")
        yield
    finally:
        conn.close()  # a session lock ends with its session


def _lock_holder(conn: Any, key: int) -> str | None:
    row = conn.execute(
        """
        SELECT a.pid, coalesce(a.application_name, ''), coalesce(host(a.client_addr), 'local'),
               a.backend_start
        FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
        WHERE l.locktype = 'advisory' AND l.granted AND l.classid = %s AND l.objid = %s
          AND l.objsubid = 2
          AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
        """,
        (LockNamespace.PIPELINE, key & 0xFFFFFFFF),
    ).fetchone()
    if row is None:
        return None
    pid, name, client, since = row
    return (
        f"{name or '(no application_name)'} (pid {pid}, {client}, "
        f"since {since.isoformat(timespec='seconds')})"
    )


# -- log tail -------------------------------------------------------------------------------------


class LogTail(logging.Handler):
    """Keeps the last lines of dlt's log and of fabric's notes; redacted when read."""

    def __init__(self, keep: int = 200) -> None:
        super().__init__(level=logging.INFO)
        self.lines: deque[str] = deque(maxlen=keep)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string in a library's log call
            message = str(record.msg)
        if record.levelno < logging.WARNING and not _WORTH_KEEPING.match(message):
            return
        for line in _useful_lines(message):
            self.lines.append(f"{record.levelname.lower()}: {line}")

    def note(self, text: str) -> None:
        self.lines.append(f"fabric: {text}")

    def text(self, secrets: Iterable[str], lines: int = LOG_TAIL_LINES) -> str:
        return redact("\n".join(list(self.lines)[-lines:]), secrets)


_WORTH_KEEPING = re.compile(
    r"(Executing query|The state was restored|Bind incremental|Aborting package|"
    r"Package .* aborted|Schema .* (updated|created)|Dropping|Truncating)"
)
"""dlt's INFO lines that say something about this run (the rest is pool bookkeeping)."""


def _useful_lines(message: str, keep: int = 3) -> list[str]:
    """The first lines of a message, without traceback frames; each capped."""
    lines = [
        ln.strip()
        for ln in message.splitlines()
        if ln.strip()
        and not ln.startswith((" ", "\t"))
        and not ln.startswith(("Traceback", "The above exception"))
    ]
    return [ln[:500] for ln in lines[:keep]]


@contextlib.contextmanager
def _capture_dlt_logs(tail: LogTail) -> Iterator[None]:
    """Route the `dlt` logger into the tail (only) for the duration of the run."""
    logger = logging.getLogger("dlt")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    for handler in saved[0]:
        logger.removeHandler(handler)
    # NOTE: dlt (re)creates its logger at pipeline creation and reuses the first handler it
    # finds, so with ours the only one, nothing of a run reaches stderr unredacted.
    logger.addHandler(tail)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield
    finally:
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
        for handler in saved[0]:
            logger.addHandler(handler)
        logger.setLevel(saved[1])
        logger.propagate = saved[2]
