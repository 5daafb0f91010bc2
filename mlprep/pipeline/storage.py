"""Where a local execution keeps ``s3://`` objects: a folder (``<root>/<bucket>/<key>``) or a
real S3 API (``endpoint``, e.g. moto's server or AWS itself). ``file://`` URIs are accepted for
inputs as a local convenience.

Prefix semantics follow SageMaker's ``S3Prefix``: ``s3://b/k`` names the object ``k`` if it
exists, else every object under ``k/``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse


class StorageError(OSError):
    """A storage call that failed (retryable as a service fault)."""


def split(uri: str) -> tuple[str, str]:
    u = urlparse(uri)
    if u.scheme != "s3" or not u.netloc:
        raise StorageError(f"not an s3:// URI: {uri!r}")
    return u.netloc, u.path.lstrip("/")


@dataclass
class Entry:
    uri: str
    rel: str  # path below the prefix ('' names the prefix object itself: its file name is used)
    size: int
    version: str  # mtime or ETag: changes when the content does


class Storage:
    def __init__(self, root: str | Path | None = None, endpoint: str | None = None) -> None:
        if (root is None) == (endpoint is None):
            raise ValueError("give one of root or endpoint")
        self.root = Path(root).resolve() if root is not None else None
        self.endpoint = endpoint
        self._client = None

    def describe(self) -> str:
        return f"s3 root {self.root}" if self.root else f"S3 API at {self.endpoint}"

    # --- S3 API
    @property
    def client(self):
        if self._client is None:
            import boto3

            self._client = boto3.client("s3", endpoint_url=self.endpoint)
        return self._client

    def _path(self, uri: str) -> Path:
        bucket, key = split(uri)
        p = (self.root / bucket / key).resolve()
        if self.root not in p.parents and p != self.root:
            raise StorageError(f"{uri!r} escapes the s3 root")
        return p

    def put_bytes(self, uri: str, data: bytes) -> None:
        if self.root:
            p = self._path(uri)
            p.parent.mkdir(parents=True, exist_ok=True)
            tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
            tmp.write_bytes(data)
            tmp.replace(p)
            return
        bucket, key = split(uri)
        try:
            self.client.put_object(Bucket=bucket, Key=key, Body=data)
        except Exception as e:  # botocore raises many kinds; all are a failed service call here
            raise StorageError(f"put {uri}: {e}") from e

    def put_if_changed(self, uri: str, data: bytes) -> bool:
        """Write unless the object already holds ``data`` (keeps its version, so caches hold)."""
        try:
            if self.get_bytes(uri) == data:
                return False
        except (FileNotFoundError, StorageError):
            pass
        self.put_bytes(uri, data)
        return True

    def get_bytes(self, uri: str) -> bytes:
        if uri.startswith("file://") or uri.startswith("/"):
            return Path(uri.removeprefix("file://")).read_bytes()
        if self.root:
            p = self._path(uri)
            if not p.is_file():
                raise FileNotFoundError(f"no object at {uri} ({self.describe()})")
            return p.read_bytes()
        bucket, key = split(uri)
        try:
            return self.client.get_object(Bucket=bucket, Key=key)["Body"].read()
        except self.client.exceptions.NoSuchKey:
            raise FileNotFoundError(f"no object at {uri} ({self.describe()})") from None
        except Exception as e:
            raise StorageError(f"get {uri}: {e}") from e

    def list(self, uri: str) -> list[Entry]:
        """The object ``uri`` if it exists, else the objects under ``uri/``, sorted."""
        if uri.startswith("file://") or uri.startswith("/"):
            return _list_dir(Path(uri.removeprefix("file://")), uri)
        if self.root:
            p = self._path(uri)
            return _list_dir(p, uri)
        bucket, key = split(uri)
        out: list[Entry] = []
        try:
            head = None
            if key and not key.endswith("/"):
                try:
                    head = self.client.head_object(Bucket=bucket, Key=key)
                except Exception:
                    head = None
            if head is not None:
                return [Entry(uri, "", head["ContentLength"], head["ETag"])]
            prefix = key if key.endswith("/") or not key else key + "/"
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
                for o in page.get("Contents", []):
                    out.append(Entry(f"s3://{bucket}/{o['Key']}", o["Key"][len(prefix):], o["Size"], o["ETag"]))
        except Exception as e:
            raise StorageError(f"list {uri}: {e}") from e
        return sorted(out, key=lambda e: e.rel)

    def download(self, uri: str, dest: Path) -> int:
        """Copy the object(s) at ``uri`` into folder ``dest``; returns the number of files."""
        entries = self.list(uri)
        if not entries:
            raise FileNotFoundError(f"nothing at {uri} ({self.describe()})")
        dest.mkdir(parents=True, exist_ok=True)
        for e in entries:
            target = dest / (e.rel or e.uri.rstrip("/").rsplit("/", 1)[-1])
            target.parent.mkdir(parents=True, exist_ok=True)
            local = self._local(e.uri)
            if local is not None:
                shutil.copyfile(local, target)
            else:
                target.write_bytes(self.get_bytes(e.uri))
        return len(entries)

    def upload(self, src: Path, uri: str) -> int:
        """Copy the files under folder ``src`` to ``uri/<relative path>``."""
        files = sorted(p for p in src.rglob("*") if p.is_file())
        base = uri.rstrip("/")
        for p in files:
            target = f"{base}/{p.relative_to(src).as_posix()}"
            if self.root:
                t = self._path(target)
                t.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(p, t)
            else:
                self.put_bytes(target, p.read_bytes())
        return len(files)

    def fingerprint(self, uri: str) -> str:
        """Changes when any object under ``uri`` is added, removed or rewritten."""
        h = hashlib.sha256()
        for e in self.list(uri):
            h.update(f"{e.rel}\0{e.size}\0{e.version}\n".encode())
        return h.hexdigest()

    def _local(self, uri: str) -> Path | None:
        if uri.startswith("file://") or uri.startswith("/"):
            return Path(uri.removeprefix("file://"))
        return self._path(uri) if self.root else None


def _list_dir(p: Path, uri: str) -> list[Entry]:
    if p.is_file():
        st = p.stat()
        return [Entry(uri, "", st.st_size, str(st.st_mtime_ns))]
    if not p.is_dir():
        return []
    base = uri.rstrip("/")
    out = []
    for f in sorted(p.rglob("*")):
        if f.is_file() and not f.name.startswith("."):  # dot files: partial writes
            st = f.stat()
            rel = f.relative_to(p).as_posix()
            out.append(Entry(f"{base}/{rel}", rel, st.st_size, str(st.st_mtime_ns)))
    return out
