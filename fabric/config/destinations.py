"""Where a filesystem destination may write, decided from its `bucket_url` alone.  [pure]

A tenant writes files only inside its own folder of the repository's data area,
`<repository>/data/<tenant slug>/`, or to a cloud bucket (whose access its own credentials
decide). Validation (`checks.py`) and the run (`runner/dlt_destinations.py`) apply this same
rule; the run then also follows symlinks, which only the machine that writes can see.

Accepted `bucket_url` forms:
- a path relative to the repository root (`data/globex/lake`), like every local path in fabric;
- an absolute path or `file://` URL naming the same place (`file:///srv/repo/data/globex/lake`);
- `s3://`, `gs://`, `gcs://`, `az://`, `abfss://` URLs with a bucket, passed through to fsspec.

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
    own = tenant_folder(slug)
    url = bucket_url.strip()
    if not url:
        return None, "bucket_url is empty"
    if "::" in url:
        return None, "chained fsspec URLs (`a::b`) are not supported for destinations"
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme and len(scheme) > 1:
        if scheme in CLOUD_SCHEMES:
            if not parts.netloc:
                return None, f"{scheme}:// needs a bucket name ({scheme}://bucket/folder)"
            return FolderTarget(kind="cloud", path=url), None
        if scheme != "file":
            allowed = ", ".join(f"{s}://" for s in sorted(CLOUD_SCHEMES))
            return None, (
                f"scheme {scheme}:// cannot be a destination; use a folder under {own}/, "
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
    if path.startswith("~"):
        return None, "`~` is not expanded; use a path relative to the repository root"
    if ".." in PurePosixPath(path).parts:
        return None, "the path contains `..`"
    if path.startswith("/"):
        root = posixpath.normpath(repo_root) if repo_root.startswith("/") else ""
        if not root or not PurePosixPath(posixpath.normpath(path)).is_relative_to(root):
            return None, (
                f"{path} is outside the repository; write to a folder under {own}/ "
                "(relative to the repository root)"
            )
        rel = PurePosixPath(posixpath.normpath(path)).relative_to(root)
    else:
        rel = PurePosixPath(posixpath.normpath(path))
    if rel.parts[:2] != (DATA_FOLDER, slug):
        return None, (
            f"{rel.as_posix()} is outside tenant {slug}'s folder {own}/; each tenant writes files "
            f"only under data/<its slug>/"
        )
    return FolderTarget(kind="local", path=rel.as_posix()), None
