"""Checkpoints: source position, aggregator state and sink commits, taken together.

A checkpoint ``n`` is a folder ``chk-<n>`` (state files + ``meta.json``) made visible by one
atomic rename of the ``_latest`` pointer. Sink files written for the interval that checkpoint
``n`` closes carry the tag ``n`` in their names and are written before the pointer moves; on
restart, files tagged after the latest checkpoint (written by a run that died before committing)
are deleted, the state is loaded and the source resumes at the stored offset. So a SIGKILL at
any moment, then a restart, gives the same output as a run that never stopped.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from pathlib import Path
from typing import Any

from mlprep.faults import fault

_TAG = re.compile(r"part-(\d{6})(?:-\d{3,})?\.parquet$")  # part-<commit>[-<flush within it>]


class Checkpointer:
    def __init__(self, folder: str | Path, keep: int = 2):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.keep = keep

    def latest(self) -> tuple[int, Path, dict[str, Any]] | None:
        ptr = self.folder / "_latest"
        if not ptr.exists():
            return None
        name = ptr.read_text().strip()
        d = self.folder / name
        return int(name.split("-")[1]), d, json.loads((d / "meta.json").read_text())

    def commit(self, n: int, meta: dict[str, Any], write_state) -> None:
        tmp = self.folder / f".chk-{n:06d}-{uuid.uuid4().hex[:6]}"
        tmp.mkdir()
        meta = {**meta, **write_state(tmp)}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2, default=str) + "\n")
        final = self.folder / f"chk-{n:06d}"
        if final.exists():
            shutil.rmtree(final)
        os.rename(tmp, final)
        fault(f"stream:commit={n}")
        ptr_tmp = self.folder / f"._latest.{uuid.uuid4().hex[:6]}"
        ptr_tmp.write_text(final.name)
        os.replace(ptr_tmp, self.folder / "_latest")  # the commit point
        for old in sorted(self.folder.glob("chk-*"))[: -self.keep]:
            shutil.rmtree(old, ignore_errors=True)
        for stale in self.folder.glob(".chk-*"):
            shutil.rmtree(stale, ignore_errors=True)


def drop_uncommitted(root: Path, committed: int) -> int:
    """Delete sink files tagged after checkpoint ``committed``; returns how many."""
    n = 0
    for p in root.rglob("part-*.parquet"):
        m = _TAG.search(p.name)
        if m and int(m.group(1)) > committed:
            p.unlink()
            n += 1
    return n
