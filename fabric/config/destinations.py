"""Which local paths a tenant's connections may name, decided from the text alone.  [pure]

A tenant reads and writes files only inside its own folder of the repository's data area,
`<repository>/data/<tenant slug>/`, or in a cloud bucket (whose access its own credentials
decide). That holds for filesystem destinations (`filesystem_target`), filesystem sources
(`source_target`, with their `file_glob`: `glob_problem`) and sqlite files (`sqlite_target`),
so no tenant can load fabric's key file (`.fabric/secret.key`), another tenant's files or
`/etc/passwd` into its own warehouse. Validation (`checks.py`) and the run
(`runner/dlt_destinations.py`, `runner/dlt_sources.py`, `runner/probes.py`) apply this same
rule; the run then also follows symlinks, which only the machine that reads or writes can see.

Accepted `bucket_url` forms:
- a path relative to the repository root (`data/globex/lake`), like every local path in fabric;
- an absolute path or `file://` URL naming the same place (`file:///srv/repo/data/globex/lake`);
- `s3://`, `gs://`, `gcs://`, `az://`, `abfss://` URLs with a bucket, passed through to fsspec.

Sources also accept `http://` and `https://` URLs (read-only there). A sqlite `path` is a local
path only (no URL).

Refused: any `..` component, `~`, a path outside `data/<slug>/` (another tenant's folder, the
repository itself, `/etc`), `file://host/...`, chained fsspec URLs (`simplecache::...`) and any
other scheme (`memory://`, `http://`, `sftp://`, ...).
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Literal
from urllib.parse import unquote, urlsplit

DATA_FOLDER = "data"
"""The repository's data area: each tenant writes files under `data/<slug>/` only."""
CLOUD_SCHEMES = frozenset({"s3", "gs", "gcs", "az", "abfss"})
"""fsspec protocols a filesystem destination may name (the bucket's own access rules apply)."""
SOURCE_SCHEMES = CLOUD_SCHEMES | {"http", "https"}
"""Remote protocols a filesystem source may name; everything else must be a local path."""
FILE_FORMATS = ("parquet", "jsonl", "csv")
"""dlt `loader_file_format`s a filesystem destination writes (the connection's `format`)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class FolderTarget:
    """Where a filesystem destination writes: a folder of the repository, or a cloud URL."""

    kind: Literal["local", "cloud"]
    path: str
    """local: the folder relative to the repository root (`data/globex/lake`); cloud: the URL."""


def tenant_folder(slug: str) -> str:
    """The folder a tenant's filesystem destinations must lie in, relative to the repo root."""
    return f"{DATA_FOLDER}/{slug}"


def filesystem_target(
    bucket_url: str, slug: str, repo_root: str = ""
) -> tuple[FolderTarget | None, str | None]:
    """(target, None) when tenant `slug` may write to `bucket_url`, else (None, why not).

    `repo_root` is the repository's absolute POSIX path: absolute paths and `file://` URLs are
    allowed only inside `<repo_root>/data/<slug>/` (without it, they are refused).
    """
    return _target(bucket_url, slug, repo_root, CLOUD_SCHEMES, "write to", "destinations")


def source_target(
    bucket_url: str, slug: str, repo_root: str = ""
) -> tuple[FolderTarget | None, str | None]:
    """(target, None) when tenant `slug` may read files from `bucket_url`, else (None, why not).

    The same rule as `filesystem_target`, plus http(s) URLs: a local folder lies under
    `data/<slug>/`, never in fabric's home, another tenant's folder or elsewhere on the machine.
    """
    return _target(bucket_url, slug, repo_root, SOURCE_SCHEMES, "read from", "sources")


def sqlite_target(path: str, slug: str, repo_root: str = "") -> tuple[str | None, str | None]:
    """(path relative to the repository root, None) when tenant `slug` may open the sqlite
    file `path`, else (None, why not). Only local files under `data/<slug>/`."""
    text = path.strip()
    scheme = urlsplit(text).scheme
    if ("::" in text or (scheme and len(scheme) > 1)) and not text.startswith("/"):
        return None, "a sqlite path is a file path, not a URL"
    target, problem = _local(text, slug, repo_root, "open")
    return (target.path if target else None), problem


def glob_problem(glob: str) -> str | None:
    """Why a `file_glob` could leave the folder it is matched in (None: it cannot)."""
    text = glob.strip()
    if text.startswith(("/", "~", "\\")):
        return "a file_glob is matched inside bucket_url; it cannot be an absolute path"
    if ".." in PurePosixPath(text.replace("\\", "/")).parts:
        return "a file_glob cannot contain `..`"
    return None


def _target(
    bucket_url: str,
    slug: str,
    repo_root: str,
    remote: frozenset[str],
    verb: str,
    what: str,
) -> tuple[FolderTarget | None, str | None]:
    own = tenant_folder(slug)
    url = bucket_url.strip()
    if not url:
        return None, "bucket_url is empty"
    if "::" in url:
        return None, f"chained fsspec URLs (`a::b`) are not supported for {what}"
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme and len(scheme) > 1:
        if scheme in remote:
            if not parts.netloc:
                return None, f"{scheme}:// needs a bucket (or host) name ({scheme}://bucket/folder)"
            return FolderTarget(kind="cloud", path=url), None
        if scheme != "file":
            allowed = ", ".join(f"{s}://" for s in sorted(remote))
            return None, (
                f"{what} cannot use scheme {scheme}://; use a folder under {own}/, "
                f"a file:// URL there, or {allowed}"
            )
        if parts.netloc not in ("", "localhost"):
            return None, (
                f"file://{parts.netloc}/... names host {parts.netloc!r}; a file URL needs three "
                f"slashes and an absolute path (file:///...)"
            )
        path = unquote(parts.path)
        if not path.startswith("/"):
            return None, "a file:// URL needs an absolute path (file:///...)"
    else:
        path = url
    return _local(path, slug, repo_root, verb)


def _local(
    path: str, slug: str, repo_root: str, verb: str
) -> tuple[FolderTarget | None, str | None]:
    own = tenant_folder(slug)
    if not path:
        return None, "the path is empty"
    if path.startswith("~"):
        return None, "`~` is not expanded; use a path relative to the repository root"
    if ".." in PurePosixPath(path).parts:
        return None, "the path contains `..`"
    if path.startswith("/"):
        root = posixpath.normpath(repo_root) if repo_root.startswith("/") else ""
        if not root or not PurePosixPath(posixpath.normpath(path)).is_relative_to(root):
            return None, (
                f"{path} is outside the repository; {verb} a path under {own}/ "
                "(relative to the repository root)"
            )
        rel = PurePosixPath(posixpath.normpath(path)).relative_to(root)
    else:
        rel = PurePosixPath(posixpath.normpath(path))
    if rel.parts[:2] != (DATA_FOLDER, slug):
        return None, (
            f"{rel.as_posix()} is outside tenant {slug}'s folder {own}/; each tenant reads and "
            "writes local files only under data/<its slug>/"
        )
    return FolderTarget(kind="local", path=rel.as_posix()), None
