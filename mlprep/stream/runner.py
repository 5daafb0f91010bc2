"""Run a feature spec over a source: parse, aggregate, write the stores and the side outputs.

    summary = run_stream("conf/features/transactions.yaml", "data/events.jsonl", "out/stream")

Writes ``<out>/offline/<group>/year=.../*.parquet`` (+ ``feature_group.json``),
``<out>/online.sqlite``, ``<out>/dead_letters/*.parquet`` (bad events, with reason and line),
``<out>/late/*.parquet`` (events too late for every window) and ``<out>/summary.json``.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from tqdm.auto import tqdm

from mlprep.stream.engine import Aggregator
from mlprep.stream.events import parse_block
from mlprep.stream.sources import JsonlReplay
from mlprep.stream.spec import FeatureSpec, load_spec
from mlprep.stream.stores import OfflineStore, OnlineStore

log = logging.getLogger("mlprep.stream")


def run_stream(spec: str | Path | dict | FeatureSpec, source: str, out: str | Path, *,
               block_bytes: int = 4 << 20, speedup: float | None = None,
               progress: bool = False) -> dict[str, Any]:
    """Aggregate every event of ``source`` (a JSON-lines path) and return the run summary.

    ``speedup``: replay paced by event time, this many times faster than real time (None: as
    fast as possible).
    """
    spec = spec if isinstance(spec, FeatureSpec) else load_spec(spec)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    src = JsonlReplay(source, block_bytes)
    agg = Aggregator(spec)
    offline = OfflineStore(out / "offline", spec)
    online = OnlineStore(out / "online.sqlite", spec)
    counts = {"events": 0, "dead_letters": 0, "filtered": 0, "late": 0, "emitted": 0}
    dead, late, lags = [], [], []
    seq = 0
    t0 = time.perf_counter()
    first_event = None
    bar = tqdm(unit="ev", unit_scale=True, desc=f"stream {spec.name}", disable=not progress, leave=False)
    for block in src.blocks():
        received = time.perf_counter()
        p = parse_block(block.data, block.first_line, seq, spec, src.name)
        seq += len(p.events)
        counts["events"] += len(p.events) + len(p.dead) + p.filtered
        counts["dead_letters"] += len(p.dead)
        counts["filtered"] += p.filtered
        if speedup and not p.events.is_empty():
            t_max = int(p.events["_t"].max())
            first_event = first_event if first_event is not None else int(p.events["_t"].min())
            wait = (t_max - first_event) / 1000 / speedup - (time.perf_counter() - t0)
            if wait > 0:
                time.sleep(wait)
        r = agg.process(p.events)
        _sink(r, offline, online, counts, late)
        if not r.emitted.is_empty():
            lags.append((time.perf_counter() - received) * 1000)  # from arrival to emission
        if not p.dead.is_empty():
            dead.append(p.dead)
        bar.update(len(p.events))
    r = agg.flush()
    _sink(r, offline, online, counts, late)
    offline.flush()
    online.close()
    bar.close()
    seconds = time.perf_counter() - t0
    for name, parts in (("dead_letters", dead), ("late", late)):
        if parts:
            (out / name).mkdir(exist_ok=True)
            pl.concat(parts, how="diagonal_relaxed").write_parquet(out / name / "part-0.parquet")
    summary = {"spec": spec.name, "source": source, **counts, "seconds": round(seconds, 3),
               "events_per_s": round(counts["events"] / seconds) if seconds else None,
               "emit_lag_ms_p99": round(float(np.percentile(lags, 99)), 2) if lags else None,
               "feature_groups": sorted(p.name for p in (out / "offline").iterdir() if p.is_dir())
               if (out / "offline").exists() else [],
               "offline_rows": offline.rows}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    log.info("stream done", extra={k: v for k, v in summary.items() if isinstance(v, int | float)})
    return summary


def _sink(r, offline: OfflineStore, online: OnlineStore, counts: dict[str, int], late: list) -> None:
    if not r.emitted.is_empty():
        offline.add(r.emitted)
        online.put(r.emitted)
        counts["emitted"] += len(r.emitted)
    if not r.late.is_empty():
        late.append(r.late)
        counts["late"] += len(r.late)
