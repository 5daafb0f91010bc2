"""Feature stores for the stream's output.

Offline: Parquet in the SageMaker Feature Store offline layout, one feature group per window
definition (``<spec>_<window>``), partitioned by event time ``year=/month=/day=/hour=``, with
``event_time`` (the window end: when the value becomes known), ``write_time``,
``api_invocation_time`` and ``is_deleted``; ``_feature_group.json`` (a CreateFeatureGroup-shaped
definition) beside the data. Corrections of a window (late events) are appended as new rows; the
latest ``write_time`` per (keys, event_time) wins.

Online: the latest feature vector per key and feature group, in SQLite (one table per group).
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import sqlite3
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from mlprep.stream.columns import END, START
from mlprep.stream.spec import FeatureSpec, Window

_FS_TYPES = {pl.String: "String", pl.Int64: "Integral", pl.Float64: "Fractional", pl.UInt32: "Integral"}

DEFINITION = "_feature_group.json"  # "_": Parquet readers of the folder skip it


def group_name(spec: FeatureSpec, window: Window) -> str:
    return f"{spec.name}_{window.name}".replace(".", "_")


def feature_group_definition(spec: FeatureSpec, window: Window, schema: dict[str, Any]) -> dict[str, Any]:
    """A SageMaker CreateFeatureGroup request body for one window definition."""
    return {
        "FeatureGroupName": group_name(spec, window),
        "RecordIdentifierFeatureName": spec.entity[0] if len(spec.entity) == 1 else "record_id",
        "EventTimeFeatureName": "event_time",
        "FeatureDefinitions": [{"FeatureName": c, "FeatureType": _FS_TYPES.get(t, "String")}
                               for c, t in schema.items() if c not in ("write_time", "api_invocation_time", "is_deleted")],
        "OfflineStoreConfig": {"S3StorageConfig": {"S3Uri": "file://offline"}, "TableFormat": "Glue"},
        "Description": spec.description,
        "Tags": [{"Key": "mlprep:window", "Value": json.dumps(window.model_dump(exclude_none=True))}],
    }


class OfflineStore:
    """Appends emitted feature rows; ``flush`` writes what is buffered as Parquet files."""

    def __init__(self, root: str | Path, spec: FeatureSpec):
        self.root, self.spec = Path(root), spec
        self.windows = {w.name: w for w in spec.windows}
        self.buffer: dict[str, list[pl.DataFrame]] = {}
        self.rows = 0  # written
        self.buffered = 0

    def add(self, emitted: dict[str, pl.DataFrame]) -> None:
        """Buffer each window's emitted rows (window name -> rows)."""
        for name, part in emitted.items():
            if part.is_empty():
                continue
            # by hour of window end, for the hourly partitions; stable: a window's final row
            # stays before its update (equal write_time: the later row is the correction)
            self.buffer.setdefault(name, []).append(part.select(
                [*self.spec.entity, START, END, *self.spec.feature_names(self.windows[name]), "kind"]
            ).sort(pl.col(END) // 3_600_000, maintain_order=True))
            self.buffered += len(part)

    def flush(self, tag: str | None = None) -> list[Path]:
        """Write buffered rows; ``tag`` names the files (a checkpoint id makes rewrites idempotent)."""
        now = pl.lit(dt.datetime.now(dt.UTC).replace(tzinfo=None)).dt.cast_time_unit("ms")
        written = []
        name = f"part-{tag or uuid.uuid4().hex[:12]}.parquet"
        for w in self.spec.windows:
            parts = self.buffer.pop(w.name, [])
            if not parts:
                continue
            columns = [pl.from_epoch(pl.col(END), time_unit="ms").alias("event_time"), now.alias("write_time"),
                       now.alias("api_invocation_time"), pl.lit(False).alias("is_deleted")]
            gdir = self.root / group_name(self.spec, w)
            gdir.mkdir(parents=True, exist_ok=True)
            for hour, rows in _by_hour(parts).items():
                pdir = gdir / hour.strftime("year=%Y/month=%m/day=%d/hour=%H")
                pdir.mkdir(parents=True, exist_ok=True)
                tmp = pdir / f".{name}.tmp"
                rows = rows.with_columns(columns)
                rows.write_parquet(tmp)
                tmp.replace(pdir / name)
                written.append(pdir / name)
                self.rows += len(rows)
            definition = gdir / DEFINITION
            if not definition.exists():
                definition.write_text(json.dumps(feature_group_definition(self.spec, w, dict(rows.schema)), indent=2) + "\n")
        self.buffered = 0
        return written


def _by_hour(parts: list[pl.DataFrame]) -> dict[dt.datetime, pl.DataFrame]:
    """The rows of each event-time hour (the offline store's partitions): slices of ``parts``
    (each sorted by hour), in part order, concatenated without a copy."""
    runs: dict[int, list[pl.DataFrame]] = {}
    for part in parts:
        h = (part[END] // 3_600_000).to_numpy()
        cuts = np.concatenate(([0], np.flatnonzero(np.diff(h)) + 1, [len(h)])).tolist()
        for a, b in itertools.pairwise(cuts):
            runs.setdefault(int(h[a]), []).append(part.slice(a, b - a))
    return {dt.datetime(1970, 1, 1) + dt.timedelta(hours=h): pl.concat(r, rechunk=False)
            for h, r in sorted(runs.items())}


class OnlineStore:
    """Latest feature vector per key, per feature group (SQLite)."""

    def __init__(self, path: str | Path, spec: FeatureSpec):
        self.path, self.spec = Path(path), spec
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.con = sqlite3.connect(self.path)
        # a serving cache, rebuildable from the offline store: WAL without a sync per commit
        self.con.execute("PRAGMA journal_mode=WAL")
        self.con.execute("PRAGMA synchronous=NORMAL")
        for w in spec.windows:
            cols = ", ".join(f'"{c}"' for c in [*spec.entity, "event_time", *spec.feature_names(w)])
            self.con.execute(f'CREATE TABLE IF NOT EXISTS "{group_name(spec, w)}" ({cols},'
                             f' PRIMARY KEY ({", ".join(chr(34) + k + chr(34) for k in spec.entity)})) WITHOUT ROWID')
        self.con.commit()
        self.pending: dict[str, list[pl.DataFrame]] = {}  # window -> each block's newest row per key
        self.windows = {w.name: w for w in spec.windows}

    def put(self, emitted: dict[str, pl.DataFrame]) -> None:
        """Keep each block's newest window per key (``write`` upserts the newest of them): a key
        that fires every block is written once per commit, not once per block."""
        for name, part in emitted.items():
            if not part.is_empty():
                cols = [*self.spec.entity, END, *self.spec.feature_names(self.windows[name])]
                self.pending.setdefault(name, []).append(self._newest(part.select(cols)))

    def _newest(self, rows: pl.DataFrame) -> pl.DataFrame:
        """The newest row per key; of two with the same end, the later emitted (a correction)."""
        rows = rows.filter(pl.col(END) == pl.col(END).max().over(self.spec.entity))
        return rows.unique(self.spec.entity, keep="last", maintain_order=True)

    def write(self) -> None:
        """Upsert what ``put`` kept, unless the store already has a newer window for the key."""
        if not self.pending:
            return
        for w in self.spec.windows:
            parts = self.pending.pop(w.name, None)
            if not parts:
                continue
            latest = self._newest(pl.concat(parts)).sort(self.spec.entity)  # in key order: B-tree locality
            names = [*self.spec.entity, "event_time", *self.spec.feature_names(w)]
            qn = ", ".join(f'"{c}"' for c in names)
            upd = ", ".join(f'"{c}" = excluded."{c}"' for c in names[len(self.spec.entity):])
            self.con.executemany(
                f'INSERT INTO "{group_name(self.spec, w)}" ({qn}) VALUES ({", ".join("?" * len(names))})'
                f' ON CONFLICT DO UPDATE SET {upd} WHERE excluded.event_time >= event_time',
                latest.iter_rows())
        self.con.commit()

    def get(self, group: str, key: str | tuple) -> dict[str, Any] | None:
        """The latest feature vector of ``key`` in feature group ``group`` (None if unknown)."""
        keys = key if isinstance(key, tuple) else (key,)
        cur = self.con.execute(f'SELECT * FROM "{group}" WHERE ' + " AND ".join(
            f'"{k}" = ?' for k in self.spec.entity), keys)
        row = cur.fetchone()
        return dict(zip([d[0] for d in cur.description], row, strict=True)) if row else None

    def close(self) -> None:
        self.write()
        self.con.close()
