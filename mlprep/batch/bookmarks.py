"""Job bookmarks: what a job has already processed, so a rerun takes only what is new.

File sources remember each file's URL, size and version (mtime or ETag); a file that changes is
new again. SQL sources remember the greatest ``incremental_key`` read. The bookmark lives in the
published table version (``_mlprep/bookmark.json``), so it moves exactly when the output is
published, never before and never without it.
"""

from __future__ import annotations

import logging
from typing import Any

from mlprep.io.fs import FileInfo

log = logging.getLogger("mlprep.batch")


def empty() -> dict[str, Any]:
    return {"sources": {}}


def new_files(state: dict[str, Any], source: str, files: list[FileInfo]) -> list[FileInfo]:
    """Files not read before, or changed since (read again whole, as Glue's bookmarks do)."""
    seen = state.get("sources", {}).get(source, {}).get("files", {})
    todo = [f for f in files if seen.get(f.url) != {"size": f.size, "version": f.version}]
    changed = [f.url for f in todo if f.url in seen]
    if changed:
        log.warning(f"source {source}: {len(changed)} file(s) changed since the bookmark ({changed[0]}): read again"
                    " whole, so rows published from it before may now be in the table twice; for an append-only"
                    " log write new files, or `bookmark reset` to rebuild the table")
    return todo


def last_key(state: dict[str, Any], source: str) -> Any:
    return state.get("sources", {}).get(source, {}).get("key")


def advance(state: dict[str, Any], source: str, files: list[FileInfo] | None = None,
            key: Any = None) -> dict[str, Any]:
    """A new state with ``files`` marked processed or the key moved to ``key``."""
    out = {"sources": {k: {kk: (dict(vv) if isinstance(vv, dict) else vv) for kk, vv in v.items()}
                       for k, v in state.get("sources", {}).items()}}
    src = out["sources"].setdefault(source, {})
    if files:
        seen = src.setdefault("files", {})
        for f in files:
            seen[f.url] = {"size": f.size, "version": f.version}
    if key is not None:
        src["key"] = key
    return out
