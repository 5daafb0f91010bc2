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

import hashlib
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
from mlprep.stream.columns import T
from mlprep.stream.engine import Aggregator, BatchResult, load_state, save_state
from mlprep.stream.events import Parsed, parse_block, parse_frame
from mlprep.stream.sources import Block, Source, open_source
from mlprep.stream.spec import FeatureSpec, load_spec
from mlprep.stream.stores import OfflineStore, OnlineStore

log = logging.getLogger("mlprep.stream")
SIDE = ("dead_letters", "late", "metrics")
METRICS = {"block": pl.Int64, "events": pl.Int64, "watermark": pl.Int64, "max_event_time": pl.Int64,
           "seconds": pl.Float64, "open_windows": pl.Int64, "dead_letters": pl.Int64, "late": pl.Int64}


class _Sinks:
    """The stores plus the side outputs, buffered until the next commit; the offline store's
    rows are also written as they reach ``flush_rows`` (memory bounded by that, not by the
    interval between commits), in files tagged with the commit to come."""

    def __init__(self, out: Path, spec: FeatureSpec, flush_rows: int):
        self.out, self.flush_rows = out, flush_rows
        self.offline = OfflineStore(out / "offline", spec)
        self.online = OnlineStore(out / "online.sqlite", spec)
        self.side: dict[str, list[pl.DataFrame]] = {k: [] for k in SIDE}
        self.spills = 0  # offline flushes since the last commit

    def spill(self, tag: int) -> None:
        """Write the offline rows once there are ``flush_rows`` of them; a run that dies before
        commit ``tag`` has them deleted on restart, as every file of that commit."""
        if self.offline.buffered >= self.flush_rows:
            self.spills += 1
            self.offline.flush(f"{tag:06d}-{self.spills:03d}")

    def add(self, r: BatchResult, dead: pl.DataFrame, counts: dict[str, int]) -> None:
        if r.windows:
            self.offline.add(r.windows)
            self.online.put(r.windows)
            counts["emitted"] += r.rows
        if not r.late.is_empty():
            self.side["late"].append(r.late)
            counts["late"] += len(r.late)
        if not dead.is_empty():
            self.side["dead_letters"].append(dead)

    def flush(self, tag: int) -> None:
        self.offline.flush(f"{tag:06d}")
        self.spills = 0
        self.online.write()
        for name, parts in self.side.items():
            if parts:
                (self.out / name).mkdir(exist_ok=True)
                tmp = self.out / name / f".part-{tag:06d}.tmp"
                pl.concat(parts, how="diagonal_relaxed").write_parquet(tmp)
                tmp.replace(self.out / name / f"part-{tag:06d}.parquet")
            parts.clear()


def _check_checkpoint(meta: dict, source: str, spec: str, checkpoint: str | Path | None) -> None:
    """A checkpoint continues the run it was made by: over the same source, with the same spec
    (``spec``: its fingerprint)."""
    if meta.get("source") not in (None, source):
        raise SourceError(f"--checkpoint {checkpoint}: made by a run over {meta['source']}, not {source}"
                          " (use another --checkpoint folder)")
    if meta.get("spec") not in (None, spec):
        raise SourceError(f"--checkpoint {checkpoint}: made by a run of another version of feature spec"
                          " (its windows or aggregations differ); use another --checkpoint folder")
    if meta.get("finished"):
        log.warning(f"--checkpoint {checkpoint}: that run finished; nothing is read (a new --checkpoint"
                    " folder reads the source again)")


def run_stream(spec: str | Path | dict | FeatureSpec, source: str, out: str | Path, *,
               block_bytes: int = 4 << 20, speedup: float | None = None, progress: bool = False,
               checkpoint: str | Path | None = None, checkpoint_every: int = 25,
               flush_rows: int = 1_000_000) -> dict[str, Any]:
    """Aggregate every event of ``source`` (a JSON-lines path) and return the run summary.

    ``speedup``: replay paced by event time, this many times faster than real time (None: as
    fast as possible). Sink files are written every ``checkpoint_every`` blocks, and offline
    store files whenever ``flush_rows`` feature rows wait (memory stays bounded by these, not by
    the run); ``checkpoint``: folder of checkpoints, committed every ``checkpoint_every`` blocks
    and at the end.
    """
    if flush_rows < 1 or checkpoint_every < 1:
        raise ValueError("flush_rows and checkpoint_every must be at least 1")
    spec = spec if isinstance(spec, FeatureSpec) else load_spec(spec)
    run = _Run(spec, source, Path(out), checkpoint)
    finished = run.resume()
    if finished is not None:  # done before: its summary is kept in the checkpoint too
        return finished
    src = run.open(block_bytes, flush_rows)
    bar = tqdm(unit="ev", unit_scale=True, desc=f"stream {spec.name}", disable=not progress, leave=False)
    for block in src.blocks():
        received = time.perf_counter()
        parsed = run.parse(block)
        run.pace(parsed.events, speedup)
        run.aggregate(parsed, received)
        bar.update(len(parsed.events))
        run.block_done(checkpoint_every)
    run.flush()
    bar.close()
    summary = run.finish()
    if summary["events"] == 0:
        log.warning("no events in %s", source)
    log.info("stream done", extra={k: v for k, v in summary.items() if isinstance(v, int | float)})
    return summary


class _Run:
    """One run of a spec over a source: the aggregator, the sinks, and the progress a
    checkpoint keeps (checkpoint number, arrival index, blocks, counts, emit lags)."""

    sinks: _Sinks  # from open(), once the run is not resumed finished
    src: Source

    def __init__(self, spec: FeatureSpec, source: str, out: Path, checkpoint: str | Path | None):
        self.spec, self.source, self.out, self.checkpoint = spec, source, out, checkpoint
        self.fingerprint = hashlib.sha256(spec.model_dump_json().encode()).hexdigest()[:16]
        self.agg = Aggregator(spec)
        self.ckpt = Checkpointer(checkpoint) if checkpoint else None
        self.counts = {"events": 0, "dead_letters": 0, "filtered": 0, "late": 0, "emitted": 0}
        self.n, self.seq, self.blocks, self.since = 0, 0, 0, 0  # since: blocks since the last commit
        self.position: dict[str, Any] | None = None
        self.lags: list[float] = []
        self.metrics: list[tuple] = []  # progress since the last commit, one row per block
        self.first_event: int | None = None  # pacing starts from it
        self.t0 = time.perf_counter()

    def resume(self) -> dict[str, Any] | None:
        """Continue from the last checkpoint (the summary, if that run finished); without one,
        start afresh: this run's output only."""
        latest = self.ckpt.latest() if self.ckpt else None
        if latest is None:
            _clear_output(self.out)
            return None
        self.n, folder, meta = latest
        _check_checkpoint(meta, self.source, self.fingerprint, self.checkpoint)
        if meta.get("finished"):
            _write_summary(self.out, meta["summary"])
            return meta["summary"]
        self.position, self.seq, self.blocks = meta["position"], meta["seq"], meta["blocks"]
        self.counts, self.lags = meta["counts"], meta["lags"]
        load_state(self.agg, folder, meta)
        dropped = drop_uncommitted(self.out, self.n)
        log.info("resumed", extra={"checkpoint": self.n, "dropped_files": dropped})
        return None

    def open(self, block_bytes: int, flush_rows: int) -> Source:
        """The sinks, and the source at the run's position; the clock starts."""
        self.out.mkdir(parents=True, exist_ok=True)
        self.sinks = _Sinks(self.out, self.spec, flush_rows)
        self.src = open_source(self.source, self.position, block_bytes)
        self.agg.declare_partitions(self.src.partitions)
        self.t0 = time.perf_counter()
        return self.src

    def parse(self, block: Block) -> Parsed:
        """The block's typed events (numbered on in arrival order), dead letters, filtered count."""
        p = (parse_frame(block.frame, block.first_line, self.seq, self.spec, block.source) if block.frame is not None
             else parse_block(block.data, block.first_line, self.seq, self.spec, block.source))
        if block.part is not None:
            p.events = p.events.with_columns(pl.lit(block.part).alias("_part"))
        self.seq += len(p.events)
        self.counts["events"] += len(p.events) + len(p.dead) + p.filtered
        self.counts["dead_letters"] += len(p.dead)
        self.counts["filtered"] += p.filtered
        return p

    def pace(self, events: pl.DataFrame, speedup: float | None) -> None:
        """With ``speedup``: wait until the wall clock, run that much faster, reaches the events."""
        if not speedup or events.is_empty():
            return
        t_max = int(events[T].max())
        if self.first_event is None:
            self.first_event = int(events[T].min())
        wait = (t_max - self.first_event) / 1000 / speedup - (time.perf_counter() - self.t0)
        if wait > 0:
            time.sleep(wait)

    def aggregate(self, parsed: Parsed, received: float) -> None:
        r = self.agg.process(parsed.events)
        self.sinks.add(r, parsed.dead, self.counts)
        self.sinks.spill(self.n + 1)
        if r.windows:
            self.lags.append((time.perf_counter() - received) * 1000)  # from arrival to emission

    def block_done(self, checkpoint_every: int) -> None:
        """Its metrics row; every ``checkpoint_every`` blocks the sinks are flushed (and, with a
        checkpoint, committed) as the run goes."""
        agg, counts = self.agg, self.counts
        self.metrics.append((self.blocks + 1, counts["events"], agg.watermark, agg.max_ts,
                             time.perf_counter() - self.t0, agg.open_windows(), counts["dead_letters"],
                             counts["late"]))
        self.blocks += 1
        self.since += 1
        fault(f"stream:block={self.blocks}")
        if self.since >= checkpoint_every:
            self.commit()
            self.since = 0

    def flush(self) -> None:
        """End of the input: every open window fires."""
        self.sinks.add(self.agg.flush(), pl.DataFrame(), self.counts)
        self.sinks.online.close()

    def finish(self) -> dict[str, Any]:
        summary = {"spec": self.spec.name, "source": self.source, **self.counts,
                   "emit_lag_ms_p99": round(float(np.percentile(self.lags, 99)), 2) if self.lags else None,
                   "open_windows_at_end": self.agg.open_windows(),
                   "feature_groups": [f"{self.spec.name}_{w.name}" for w in self.spec.windows]}
        self.commit(summary)
        return summary

    def commit(self, summary: dict[str, Any] | None = None) -> None:
        """Write the sink files (tagged with the next checkpoint number), then commit the
        checkpoint; with ``summary``, the end: the summary is written before the last commit."""
        self.n += 1
        if self.metrics:  # progress of this interval: watermark, open windows, side outputs
            self.sinks.side["metrics"].append(pl.DataFrame(self.metrics, orient="row", schema=METRICS))
            self.metrics.clear()
        self.sinks.flush(self.n)
        if summary is not None:  # timed after the last write, kept before the commit
            fault("stream:finishing")
            summary.update(_timing(self.counts, time.perf_counter() - self.t0), offline_rows=self.sinks.offline.rows)
            _write_summary(self.out, summary)
        if self.ckpt:
            meta = {"position": self.src.position(), "seq": self.seq, "blocks": self.blocks, "counts": self.counts,
                    "lags": self.lags[-10_000:], "finished": summary is not None, "source": self.source,
                    "spec": self.fingerprint, "summary": summary}
            self.ckpt.commit(self.n, meta, lambda d: save_state(self.agg, d))


def _clear_output(out: Path) -> None:
    """A fresh run: the stores and side outputs of an earlier run in ``out`` go."""
    for d in ("offline", *SIDE):
        shutil.rmtree(out / d, ignore_errors=True)
    for suffix in ("", "-wal", "-shm"):  # the database and its write-ahead log
        (out / f"online.sqlite{suffix}").unlink(missing_ok=True)


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
