"""File systems chosen by URL scheme: local paths and ``s3://`` (fsspec/s3fs).

S3 endpoints come from ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL`` (as boto3 reads them),
so the same job runs against AWS, or against moto's server on 127.0.0.1 in tests.
"""

from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass
from typing import Any

import fsspec

from mlprep.errors import SourceError


def is_remote(url: str) -> bool:
    return "://" in url and not url.startswith("file://")


def storage_options(url: str) -> dict[str, Any]:
    if url.startswith(("s3://", "s3a://")):
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        return {"client_kwargs": {"endpoint_url": endpoint}} if endpoint else {}
    return {}


def filesystem(url: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """The fsspec file system for ``url`` and the path within it."""
    if url.startswith("s3a://"):
        url = "s3://" + url[6:]
    fs, path = fsspec.core.url_to_fs(url, **storage_options(url))
    return fs, path


def join(base: str, *parts: str) -> str:
    if is_remote(base):
        return posixpath.join(base, *parts)
    return os.path.join(base, *parts)


@dataclass(frozen=True)
class FileInfo:
    """One input file: its URL and what identifies this version of it (for bookmarks)."""

    url: str
    size: int
    version: str  # mtime (local) or ETag (S3)


def list_files(url: str, suffixes: tuple[str, ...] = ()) -> list[FileInfo]:
    """Files named by ``url``: a file, a directory (recursively) or a glob; sorted by URL.

    Hidden files and files starting with ``_`` are skipped in directories, as Spark and Glue do.
    Raises SourceError when nothing matches.
    """
    fs, path = filesystem(url)
    scheme = url.split("://", 1)[0] + "://" if is_remote(url) else ""
    if any(ch in path for ch in "*?["):
        found = fs.glob(path, detail=True)
    elif fs.isdir(path):
        found = fs.find(path, detail=True)
        found = {
            p: d
            for p, d in found.items()
            if not any(seg.startswith((".", "_")) for seg in p[len(path) :].split("/") if seg)
        }
    elif fs.exists(path):
        found = {path: fs.info(path)}
    else:
        raise SourceError(f"no such file or directory: {url}")
    out = []
    for p, d in sorted(found.items()):
        if d.get("type") == "directory":
            continue
        if suffixes and not p.endswith(suffixes):
            continue
        version = d.get("ETag") or d.get("etag") or str(d.get("mtime") or d.get("LastModified"))
        out.append(FileInfo(scheme + p if scheme else p, int(d.get("size") or 0), str(version)))
    if not out:
        raise SourceError(f"no input files match {url}")
    return out
