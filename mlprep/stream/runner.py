"""Run a feature spec over a source: parse, aggregate, write the stores and the side outputs.

    summary = run_stream("conf/features/transactions.yaml", "data/events.jsonl", "out/stream",
                         checkpoint="out/chk")

Writes ``<out>/offline/<group>/year=.../*.parquet`` (+ ``_feature_group.json``),
``<out>/online.sqlite``, ``<out>/dead_letters/*.parquet`` (bad events, with reason and line),
``<out>/late/*.parquet`` (events too late for every window) and ``<out>/summary.json``.
With ``checkpoint``, a killed run restarted with the same arguments resumes from the last
checkpoint and its output equals that of a run that never stopped (see ``checkpoint``).
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from tqdm.auto import tqdm

from mlprep.errors import SourceError
from mlprep.faults import fault
from mlprep.stream.checkpoint import Checkpointer, drop_uncommitted
from mlprep.stream.engine import Aggregator, BatchResult, load_state, save_state
from mlprep.stream.events import parse_block, parse_frame
from mlprep.stream.sources import open_source
from mlprep.stream.spec import FeatureSpec, load_spec
from mlprep.stream.stores import OfflineStore, OnlineStore

log = logging.getLogger("mlprep.stream")
SIDE = ("dead_letters", "late", "metrics")
METRICS = {"block": pl.Int64, "events": pl.Int64, "watermark": pl.Int64, "max_event_time": pl.Int64,
           "seconds": pl.Float64, "open_windows": pl.Int64, "dead_letters": pl.Int64, "late": pl.Int64}


class _Sinks:
    """The stores plus the side outputs, buffered until the next commit."""

    def __init__(self, out: Path, spec: FeatureSpec):
        self.out = out
        self.offline = OfflineStore(out / "offline", spec)
        self.online = OnlineStore(out / "online.sqlite", spec)
        self.side: dict[str, list[pl.DataFrame]] = {k: [] for k in SIDE}

    def add(self, r: BatchResult, dead: pl.DataFrame, counts: dict[str, int]) -> None:
        if not r.emitted.is_empty():
            self.offline.add(r.emitted)
            self.online.put(r.emitted)
            counts["emitted"] += len(r.emitted)
        if not r.late.is_empty():
            self.side["late"].append(r.late)
            counts["late"] += len(r.late)
        if not dead.is_empty():
            self.side["dead_letters"].append(dead)

    def flush(self, tag: int) -> None:
        self.offline.flush(f"{tag:06d}")
        for name, parts in self.side.items():
            if parts:
                (self.out / name).mkdir(exist_ok=True)
                tmp = self.out / name / f".part-{tag:06d}.tmp"
                pl.concat(parts, how="diagonal_relaxed").write_parquet(tmp)
                tmp.replace(self.out / name / f"part-{tag:06d}.parquet")
            parts.clear()


def _check_checkpoint(meta: dict, source: str, checkpoint: str | Path | None) -> None:
    """A checkpoint continues the run it was made by: over the same source."""
    if meta.get("source") not in (None, source):
        raise SourceError(f"--checkpoint {checkpoint}: made by a run over {meta['source']}, not {source}"
                          " (use another --checkpoint folder)")
    if meta.get("finished"):
        log.warning(f"--checkpoint {checkpoint}: that run finished; nothing is read (a new --checkpoint"
                    " folder reads the source again)")


def run_stream(spec: str | Path | dict | FeatureSpec, source: str, out: str | Path, *,
               block_bytes: int = 4 << 20, speedup: float | None = None, progress: bool = False,
               checkpoint: str | Path | None = None, checkpoint_every: int = 25) -> dict[str, Any]:
    """Aggregate every event of ``source`` (a JSON-lines path) and return the run summary.

    ``speedup``: replay paced by event time, this many times faster than real time (None: as
    fast as possible). Sink files are written every ``checkpoint_every`` blocks (memory stays
    bounded by that, not by the run); ``checkpoint``: folder of checkpoints, committed at the same
    points and at the end.
    """
    spec = spec if isinstance(spec, FeatureSpec) else load_spec(spec)
    out = Path(out)
    agg = Aggregator(spec)
    ckpt = Checkpointer(checkpoint) if checkpoint else None
    latest = ckpt.latest() if ckpt else None
    counts = {"events": 0, "dead_letters": 0, "filtered": 0, "late": 0, "emitted": 0}
    n, position, seq, blocks, lags = 0, None, 0, 0, []
    if latest is not None:
        n, folder, meta = latest
        _check_checkpoint(meta, source, checkpoint)
        if meta.get("finished"):  # done before: its summary is kept in the checkpoint too
            _write_summary(out, meta["summary"])
            return meta["summary"]
        position, seq, blocks = meta["position"], meta["seq"], meta["blocks"]
        counts, lags = meta["counts"], meta["lags"]
        load_state(agg, folder, meta)
        dropped = drop_uncommitted(out, n)
        log.info("resumed", extra={"checkpoint": n, "dropped_files": dropped})
    else:  # a fresh run: this run's output only
        for d in ("offline", *SIDE):
            shutil.rmtree(out / d, ignore_errors=True)
        for suffix in ("", "-wal", "-shm"):  # the database and its write-ahead log
            (out / f"online.sqlite{suffix}").unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    sinks = _Sinks(out, spec)
    src = open_source(source, position, block_bytes)
    agg.declare_partitions(src.partitions)

    def commit(summary: dict[str, Any] | None = None) -> None:
        nonlocal n
        n += 1
        if metrics:  # progress of this interval: watermark, open windows, side outputs
            sinks.side["metrics"].append(pl.DataFrame(metrics, orient="row", schema=METRICS))
            metrics.clear()
        sinks.flush(n)
        if summary is not None:  # the end: timed after the last write, kept before the commit
            fault("stream:finishing")
            summary.update(_timing(counts, time.perf_counter() - t0), offline_rows=sinks.offline.rows)
            _write_summary(out, summary)
        if ckpt:
            meta = {"position": src.position(), "seq": seq, "blocks": blocks, "counts": counts,
                    "lags": lags[-10_000:], "finished": summary is not None, "source": source, "summary": summary}
            ckpt.commit(n, meta, lambda d: save_state(agg, d))

    t0 = time.perf_counter()
    metrics: list[tuple] = []
    first_event = None
    since = 0
    bar = tqdm(unit="ev", unit_scale=True, desc=f"stream {spec.name}", disable=not progress, leave=False)
    for block in src.blocks():
        received = time.perf_counter()
        p = (parse_frame(block.frame, block.first_line, seq, spec, block.source) if block.frame is not None
             else parse_block(block.data, block.first_line, seq, spec, block.source))
        if block.part is not None:
            p.events = p.events.with_columns(pl.lit(block.part).alias("_part"))
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
        sinks.add(r, p.dead, counts)
        if not r.emitted.is_empty():
            lags.append((time.perf_counter() - received) * 1000)  # from arrival to emission
        bar.update(len(p.events))
        metrics.append((blocks + 1, counts["events"], agg.watermark, agg.max_ts, time.perf_counter() - t0,
                        agg.open_windows(), counts["dead_letters"], counts["late"]))
        blocks += 1
        since += 1
        fault(f"stream:block={blocks}")
        if since >= checkpoint_every:  # sinks flushed (and, with --checkpoint, committed) as it goes
            commit()
            since = 0
    sinks.add(agg.flush(), pl.DataFrame(), counts)
    sinks.online.close()
    bar.close()
    summary = {"spec": spec.name, "source": source, **counts,
               "emit_lag_ms_p99": round(float(np.percentile(lags, 99)), 2) if lags else None,
               "open_windows_at_end": agg.open_windows(),
               "feature_groups": [f"{spec.name}_{w.name}" for w in spec.windows]}
    commit(summary)
    if counts["events"] == 0:
        log.warning("no events in %s", source)
    log.info("stream done", extra={k: v for k, v in summary.items() if isinstance(v, int | float)})
    return summary


def _timing(counts: dict[str, int], seconds: float) -> dict[str, Any]:
    """Wall time from the first read to the end of the last write, and the rate it gives."""
    return {"seconds": round(seconds, 3), "events_per_s": round(counts["events"] / seconds) if seconds else None}


def _write_summary(out: Path, summary: dict[str, Any]) -> None:
    tmp = out / ".summary.json.tmp"
    tmp.write_text(json.dumps(summary, indent=2) + "\n")
    tmp.replace(out / "summary.json")


def backfill(spec: str | Path | dict | FeatureSpec, source: str, out: str | Path) -> dict[str, Any]:
    """The spec over a whole history in one pass (blocks of 1 GB; windows fire at the end).

    Events must be in arrival order (as recorded), so lateness is judged exactly as the stream
    judged it; the feature values then equal the stream's final values, window for window.
    """
    return run_stream(spec, source, out, block_bytes=1 << 30)
