"""Atomic publish of a partitioned Parquet table, with its bookmark committed in the same step.

A table is a series of immutable versions; publishing makes a new version visible in one atomic
operation, so a crash at any moment leaves the previous version readable and unchanged.

Local layout (readers use ``<table>/dt=.../*.parquet`` as usual; the name is a symlink)::

    curated/transactions -> .transactions.versions/v000003     (swapped with os.replace)
    curated/.transactions.versions/v000003/dt=2026-11-01/part-<hash>-0.parquet
    curated/.transactions.versions/v000003/_mlprep/{manifest,bookmark}.json

A new version hard-links the files of the previous one (append) or starts empty (overwrite),
then adds the run's files. S3 has no atomic rename, so there the version lives under
``<table>/_v/000003/`` and the object ``<table>/_LATEST`` (one PUT, atomic) names it;
:func:`table_location` resolves either form.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mlprep.faults import fault
from mlprep.io.fs import filesystem, is_remote

META = "_mlprep"
_VERSION = re.compile(r"^v(\d{6})$")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            fd = os.open(os.path.join(dirpath, f), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(dirpath))


def write_json_atomic(path: str | Path, obj: Any) -> None:
    """Write JSON so that readers see the old or the new file, never a partial one."""
    text = json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n"
    url = str(path)
    if is_remote(url):
        fs, p = filesystem(url)
        with fs.open(p, "w") as f:  # a single PUT: atomic on S3
            f.write(text)
        return
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.{uuid.uuid4().hex[:8]}.tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, p)


class LocalTable:
    """A versioned table folder on the local file system."""

    def __init__(self, path: str):
        self.path = Path(path)
        self.versions = self.path.parent / f".{self.path.name}.versions"

    def current(self) -> Path | None:
        if self.path.is_symlink():
            return self.path.parent / os.readlink(self.path)
        if self.path.exists():
            raise FileExistsError(
                f"{self.path} exists and is not an mlprep table (expected a symlink to a version);"
                " move it away or choose another output.path"
            )
        return None

    def read_meta(self, name: str) -> dict[str, Any] | None:
        cur = self.current()
        p = cur / META / name if cur else None
        return json.loads(p.read_text()) if p and p.exists() else None

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        self.versions.mkdir(parents=True, exist_ok=True)
        with open(self.versions / ".lock", "w") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def staging(self, run_id: str) -> Path:
        p = self.versions / f".staging-{run_id}"
        if p.exists():
            shutil.rmtree(p)
        p.mkdir(parents=True)
        return p

    def publish(self, staged: Path, append: bool, meta: dict[str, dict[str, Any]], keep: int) -> str:
        """Make ``staged`` (new data files in partition folders) the current version: with
        ``append``, on top of the current version's files. Returns the version name."""
        with self.lock():
            cur = self.current()
            nums = [int(m.group(1)) for d in self.versions.iterdir() if (m := _VERSION.match(d.name))]
            name = f"v{max(nums, default=0) + 1:06d}"
            build = self.versions / f".build-{name}-{uuid.uuid4().hex[:6]}"
            build.mkdir()
            if append and cur is not None:
                for src in cur.rglob("*.parquet"):
                    rel = src.relative_to(cur)
                    (build / rel).parent.mkdir(parents=True, exist_ok=True)
                    os.link(src, build / rel)
            for src in staged.rglob("*.parquet"):
                rel = src.relative_to(staged)
                dst = build / rel
                dst.parent.mkdir(parents=True, exist_ok=True)
                os.replace(src, dst)  # same name from a rerun of the same input: replaced
            (build / META).mkdir()
            for fname, obj in meta.items():
                (build / META / fname).write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
            _fsync_tree(build)
            fault("publish:built")
            final = self.versions / name
            os.rename(build, final)
            _fsync_dir(self.versions)
            fault("publish:renamed")
            # the commit point: one atomic rename of a symlink over the table name
            tmp_link = self.path.parent / f".{self.path.name}.{uuid.uuid4().hex[:8]}.lnk"
            os.symlink(os.path.relpath(final, self.path.parent), tmp_link)
            os.replace(tmp_link, self.path)
            _fsync_dir(self.path.parent)
            fault("publish:swapped")
            shutil.rmtree(staged, ignore_errors=True)
            self._gc(keep)
            return name

    def _gc(self, keep: int) -> None:
        """Drop old versions beyond ``keep``, and leftovers of crashed runs (>1 h old)."""
        cur = self.current()
        versions = sorted(d for d in self.versions.iterdir() if _VERSION.match(d.name))
        keepers = set(versions[-keep:]) | ({cur.resolve()} if cur else set())
        for d in versions:
            if d.resolve() not in {k.resolve() for k in keepers}:
                shutil.rmtree(d, ignore_errors=True)
        for d in self.versions.iterdir():
            if d.name.startswith((".build-", ".staging-")) and time.time() - d.stat().st_mtime > 3600:
                shutil.rmtree(d, ignore_errors=True)


class S3Table:
    """A versioned table under an S3 prefix, with an atomic ``_LATEST`` pointer object."""

    def __init__(self, url: str):
        self.url = url.rstrip("/")
        self.fs, self.root = filesystem(self.url)

    def current(self) -> str | None:
        try:
            with self.fs.open(f"{self.root}/_LATEST", "r") as f:
                return f.read().strip()
        except FileNotFoundError:
            return None

    def read_meta(self, name: str) -> dict[str, Any] | None:
        cur = self.current()
        if not cur:
            return None
        try:
            with self.fs.open(f"{self.root}/_v/{cur}/{META}/{name}", "r") as f:
                return json.load(f)
        except FileNotFoundError:
            return None

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        yield  # S3 has no locks; one writer per table (as with Glue jobs)

    def staging(self, run_id: str) -> Path:
        import tempfile

        return Path(tempfile.mkdtemp(prefix=f"mlprep-{run_id}-"))

    def publish(self, staged: Path, append: bool, meta: dict[str, dict[str, Any]], keep: int) -> str:
        cur = self.current()
        listed = self.fs.ls(f"{self.root}/_v", detail=False) if self.fs.exists(f"{self.root}/_v") else []
        nums = [int(p.rsplit("/", 1)[-1]) for p in listed if p.rsplit("/", 1)[-1].isdigit()]
        name = f"{max(nums, default=0) + 1:06d}"
        dest = f"{self.root}/_v/{name}"
        if append and cur:
            src_root = f"{self.root}/_v/{cur}"
            for src in self.fs.find(src_root):
                if src.endswith(".parquet"):
                    self.fs.copy(src, dest + src[len(src_root):])
        for src in staged.rglob("*.parquet"):
            self.fs.put_file(str(src), f"{dest}/{src.relative_to(staged).as_posix()}")
        for fname, obj in meta.items():
            with self.fs.open(f"{dest}/{META}/{fname}", "w") as f:
                f.write(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
        fault("publish:built")
        with self.fs.open(f"{self.root}/_LATEST", "w") as f:  # the commit point
            f.write(name)
        fault("publish:swapped")
        shutil.rmtree(staged, ignore_errors=True)
        for n in sorted(nums)[: max(0, len(nums) + 1 - keep)]:
            if f"{n:06d}" != name:
                self.fs.rm(f"{self.root}/_v/{n:06d}", recursive=True)
        return name


def open_table(path: str) -> LocalTable | S3Table:
    return S3Table(path) if is_remote(path) else LocalTable(path)


def table_location(path: str) -> str:
    """Where the current version's files are: the local path itself, or S3's ``_v/<version>``."""
    if is_remote(path):
        cur = S3Table(path).current()
        if cur is None:
            raise FileNotFoundError(f"no published version at {path}")
        return f"{path.rstrip('/')}/_v/{cur}"
    return path
