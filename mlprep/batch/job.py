"""Run a batch job: extract, transform, check quality, publish atomically, record everything.

``run_job`` is the recipe (``_steps``: extract → thresholds → transform → stage → account →
quality → publish) over a :class:`~mlprep.batch.engines.BatchEngine`, which holds the data;
the bookkeeping is here, in an embedded DuckDB (the ledger).

    result = run_job("conf/batch/transactions.yaml", {"data_dir": "data", "out_dir": "out"})
    result.summary["rows"]  # read = written + quarantined + deduplicated + filtered

Each run writes ``<output parent>/_runs/<table>/<run_id>/summary.json`` (and ``quality.json``),
succeeded or not; quarantined records go to ``<quarantine>/run_id=<run_id>/part-0.parquet``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
from tqdm.auto import tqdm

from mlprep import logs
from mlprep.batch import bookmarks, catalog, dqdl, quality
from mlprep.batch.config import JobConfig, Source, load_job
from mlprep.batch.engines import NULL_PARTITION, BatchEngine, RunContext, Tally
from mlprep.batch.engines.duckdb import DuckDBEngine
from mlprep.batch.publish import open_table, table_location, write_json_atomic
from mlprep.duck import Engine, ident, lit
from mlprep.errors import ConfigError, DataQualityError, ErrorThresholdExceeded, MlprepError
from mlprep.faults import fault
from mlprep.io import files as file_io
from mlprep.io import sql as sql_io
from mlprep.io.fs import FileInfo, filesystem, is_remote, join, list_files
from mlprep.masking import MASK, Masker

log = logging.getLogger("mlprep.batch")

SUFFIXES = {"jsonl": (".jsonl", ".json", ".ndjson", ".jsonl.gz"), "csv": (".csv", ".tsv", ".txt"),
            "parquet": (".parquet", ".pq")}
POSITION = {"jsonl": "line", "csv": "record", "parquet": "row", "sql": "row"}


@dataclass
class RunResult:
    run_id: str
    status: str  # succeeded | noop | failed
    summary_path: str
    summary: dict[str, Any]

    @property
    def rows(self) -> dict[str, int]:
        return self.summary["rows"]


def new_run_id() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


def runs_dir(job: JobConfig) -> str:
    base = job.output.path.rstrip("/")
    parent, name = base.rsplit("/", 1) if "/" in base else (".", base)
    return join(parent, "_runs", name)


def catalog_dir(job: JobConfig) -> str:
    if job.output.catalog:
        return job.output.catalog
    base = job.output.path.rstrip("/")
    return join(base.rsplit("/", 1)[0] if "/" in base else ".", "_catalog")


class _NothingNew(Exception):
    """The primary source has nothing the bookmark has not seen: nothing to do."""


class Run:
    """One run's bookkeeping, in the ledger (an embedded DuckDB): file ids, quarantine, staged
    output, bookmark, summary, timings. The data itself is the engine's."""

    def __init__(self, job: JobConfig, values: dict[str, Any], engine: BatchEngine, progress: bool,
                 now: dt.datetime | None, secrets: Iterable[str] = (), memory_limit: str | None = None):
        self.job, self.values, self.engine, self.progress, self.now = job, values, engine, progress, now
        self.run_id = new_run_id()
        self.t0 = time.time()
        self.timings: dict[str, float] = {}
        self.memory = memory_setting(memory_limit)
        self.tmp = tempfile.mkdtemp(prefix="mlprep-duckdb-")  # DuckDB spills here
        # past the limit DuckDB spills to tmp: peak memory stays flat as the input grows
        self.ledger = Engine(temp_dir=self.tmp, memory_limit=self.memory.duckdb)
        self.memory.applied = self.ledger.one("SELECT current_setting('memory_limit')")
        self.ledger.run(file_io.QUARANTINE_DDL)
        self.ledger.run("CREATE TABLE _files (id INTEGER, source VARCHAR, url VARCHAR, fmt VARCHAR)")
        self.tally = Tally()
        self.table = open_table(job.output.path)
        self.sources: dict[str, dict[str, Any]] = {}
        self.source_schemas: dict[str, dict[str, str]] = {}
        self.file_id = 0
        self.bookmark_in = self.table.read_meta("bookmark.json")
        self.bookmark_out = self.bookmark_in or bookmarks.empty()
        # --secret values, and values of names that look secret, are never written (in any form)
        hidden = set(secrets) & set(values) | {k for k in values if logs.SECRET.search(k)}
        self.masker = Masker([str(values[k]) for k in hidden if values[k] not in (None, "")])
        self.summary: dict[str, Any] = {
            "job": job.name, "run_id": self.run_id, "status": "running",
            "started_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "parameters": {k: MASK if k in hidden else (sql_io.redact(v) if isinstance(v, str) else v)
                           for k, v in values.items()},
            "memory_limit": self.memory.to_dict(),
        }
        try:
            engine.open(RunContext(job, self.ledger, self.tally, progress, self.memory.size))
        except BaseException:
            self.ledger.close()
            shutil.rmtree(self.tmp, ignore_errors=True)
            raise
        if (info := engine.describe()) is not None:
            self.summary["engine"] = info

    def tick(self, name: str, t: float) -> None:
        self.timings[name] = round(self.timings.get(name, 0) + time.time() - t, 3)

    def register_files(self, name: str, fmt: str, urls: list[str]) -> list[int]:
        ids = []
        for u in urls:
            self.file_id += 1
            self.ledger.run("INSERT INTO _files VALUES (?, ?, ?, ?)", [self.file_id, name, u, fmt])
            ids.append(self.file_id)
        return ids

    def source_counts(self, origin: str) -> dict[str, int]:
        return self.sources.get(origin) or {"read": self.tally.derived_reads[origin], "quarantined": 0}

    def appending(self) -> bool:
        return self.bookmark_in is not None and any(s.bookmark for s in self.job.sources.values())

    def inputs(self) -> list[Any]:
        return self.ledger.rows("SELECT source, url FROM _files ORDER BY id") + [
            [k, v.get("after_key"), v.get("max_key")] for k, v in self.sources.items() if v["format"] == "sql"]

    def close(self) -> None:
        self.engine.close()
        self.ledger.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


# -- extract ----------------------------------------------------------------------------------
def extract(run: Run) -> None:
    """Every source into a relation of its name; bookmarks choose what is new."""
    t = time.time()
    for name, src in run.job.sources.items():
        info = _extract_sql(run, name, src) if src.format == "sql" else _extract_files(run, name, src)
        run.sources[name] = info
        log.info("extracted", extra={"source": name, "read": info["read"], "quarantined": info["quarantined"]})
    run.tick("extract", t)


def _extract_files(run: Run, name: str, src: Source) -> dict[str, Any]:
    found = list_files(src.path, SUFFIXES[src.format])
    use_bm = src.bookmark and run.bookmark_in is not None
    todo = bookmarks.new_files(run.bookmark_in or {}, name, found) if use_bm else found
    ids = run.register_files(name, src.format, [f.url for f in todo])
    total = sum(f.size for f in todo)
    with tqdm(total=total, unit="B", unit_scale=True, desc=f"read {name}",
              disable=not run.progress or total == 0, leave=False) as bar:
        got = run.engine.read_files(name, src, list(zip(ids, todo, strict=True)), bar.update)
        bar.update(total - bar.n)
    run.source_schemas[name] = got.schema
    if src.bookmark:
        run.bookmark_out = bookmarks.advance(run.bookmark_out, name, files=todo)
    return {"format": src.format, "path": src.path, "files": len(todo), "skipped_by_bookmark": len(found) - len(todo),
            "read": got.read, "quarantined": got.quarantined, "empty_files": got.empty_files,
            "choice_columns": got.choice_columns}


def _extract_sql(run: Run, name: str, src: Source) -> dict[str, Any]:
    after = bookmarks.last_key(run.bookmark_in or {}, name) if (src.bookmark and src.incremental_key) else None
    res = sql_io.read_table(src.url, src.table, src.query, src.incremental_key, after)
    (fid,) = run.register_files(name, "sql", [sql_io.redact(src.url) + (f"#{src.table}" if src.table else "#query")])
    got = run.engine.read_table(name, fid, res.table)
    run.source_schemas[name] = got.schema
    if src.bookmark and src.incremental_key and res.max_key is not None:
        run.bookmark_out = bookmarks.advance(run.bookmark_out, name, key=res.max_key)
    return {"format": "sql", "url": sql_io.redact(src.url), "read": got.read, "quarantined": 0,
            "after_key": after, "max_key": res.max_key}


# -- thresholds and transform -----------------------------------------------------------------
def check_thresholds(run: Run, origin: str) -> None:
    """Fail when quarantined records pass the job's limits (in all, or in one stage)."""
    th = run.job.thresholds
    src, c = run.source_counts(origin), run.tally.of(origin)
    n = src["read"]
    stages = dict(run.ledger.rows("SELECT stage, count(*) FROM _quarantine WHERE _src IN "
                                  "(SELECT id FROM _files WHERE source = ?) GROUP BY 1", [origin]))
    checks = [("thresholds", "records quarantined", src["quarantined"] + c["quarantined"], th)]
    checks += [(f"thresholds.stage ({stage})", f"records quarantined in {stage}", q, th.stage)
               for stage, q in sorted(stages.items())]
    for where, what, q, limit in checks:
        if limit.max_errors is not None and q > limit.max_errors:
            raise ErrorThresholdExceeded(f"{where}.max_errors: {q} {what} > {limit.max_errors}")
        if limit.max_error_rate is not None and n and q / n > limit.max_error_rate:
            raise ErrorThresholdExceeded(
                f"{where}.max_error_rate: {q}/{n} = {q / n:.4%} {what} > {limit.max_error_rate:.4%}")


def transform(run: Run) -> str:
    """The job's steps in order; returns the output relation, its marked rows counted."""
    t = time.time()
    eng, names = run.engine, list(run.job.sources)
    consumed: set[object] = set()
    for i, (kind, step) in enumerate(run.job.parsed_steps()):
        stage, st = f"steps[{i}].{kind}", time.time()
        # a consumed relation's marked rows live on in its consumer's chain
        consumed.add(eng.identity(step.input))
        if kind == "join":
            consumed.add(eng.identity(step.right))
            if eng.pending(step.right):  # count the right side's rejects once, here
                eng.materialize(step.right)
        eng.apply(kind, step, stage)
        names.append(step.out)
        log.info("step", extra={"step": stage, "seconds": round(time.time() - st, 3)})
    final = run.job.output.input
    if eng.pending(final):  # its marked rows must be counted before the output is written
        eng.materialize(final)
    for name in _all_relations(run, names):  # rejects of relations no step used
        if eng.pending(name) and eng.identity(name) not in consumed:
            eng.materialize(name)
    run.tick("transform", t)
    return final


def _all_relations(run: Run, names: list[str]) -> list[str]:
    """Relations in order of making, with the child relations a relationalize step made."""
    out = list(dict.fromkeys(names))
    return out + [c for c in run.tally.derived_reads if c not in out]


# -- output -----------------------------------------------------------------------------------
def stage(run: Run, final: str) -> Path:
    """The engine writes the output's Parquet files to a staging folder; the ledger gets a view
    over them (``_staged``), on which the schema check, the accounting and the quality rules run."""
    t = time.time()
    staged = run.table.staging(run.run_id)
    # names derive from what was processed: a rerun of the same input writes the same names
    ident_src = json.dumps({"config": run.job.model_dump(mode="json"), "files": run.inputs()},
                           sort_keys=True, default=str)
    tag = hashlib.sha256(ident_src.encode()).hexdigest()[:16]
    files = run.engine.write(final, staged, tag)
    parts = run.job.output.partition_by
    if files:
        run.ledger.run(f"CREATE VIEW _staged AS SELECT * FROM read_parquet([{', '.join(lit(str(f)) for f in files)}],"
                       f" hive_partitioning = {lit(bool(parts))}, hive_types_autocast = false)")
    else:
        run.ledger.run("CREATE VIEW _staged AS SELECT * FROM _out WHERE FALSE")
    for k in parts:
        if any(f"{k}={NULL_PARTITION}" in f.parts for f in files):
            raise MlprepError(f"output.partition_by.{k}: expression gives NULL for some rows;"
                              " require the columns it uses first")
    check_append_schema(run)
    run.tick("write", t)
    return staged


def check_append_schema(run: Run) -> None:
    """Appending must not leave files of two schemas in one table: a column may be added,
    never removed or retyped (rebuild with `mlprep batch bookmark reset` instead)."""
    published = (run.table.read_meta("manifest.json") or {}).get("schema")
    if not run.appending() or not published:
        return
    d = catalog.drift(published, dict(run.ledger.columns("_out")))
    if d["removed"] or d["retyped"]:
        what = [f"{c} removed" for c in d["removed"]] + [f"{c} {a} -> {b}" for c, (a, b) in d["retyped"].items()]
        raise MlprepError(f"output.path: appending would change the published schema ({'; '.join(what)});"
                          " reset the bookmark to rebuild the table with the new schema")


def account(run: Run, final: str) -> dict[str, int]:
    """``read = written + quarantined + deduplicated + filtered``, or an internal error."""
    origin = run.engine.origin(final)
    counts, src = run.tally.of(origin), run.source_counts(origin)
    rows = {"read": src["read"], "written": run.ledger.one("SELECT count(*) FROM _staged"),
            "quarantined": src["quarantined"] + counts["quarantined"],
            "deduplicated": counts["deduplicated"], "filtered": counts["filtered"]}
    if rows["read"] != rows["written"] + rows["quarantined"] + rows["deduplicated"] + rows["filtered"]:
        raise MlprepError(f"internal error: row accounting does not balance: {rows}")
    return rows


def check_quality(run: Run) -> dict[str, Any]:
    """The DQDL rules over the staged files (relations by name for ReferentialIntegrity)."""
    t = time.time()
    q = run.job.quality
    rules = {"quality.rules": dqdl.parse(q.rules, "quality.rules"), "quality.warn": dqdl.parse(q.warn, "quality.warn")}
    steps = [step.out for _, step in run.job.parsed_steps()]
    rels = run.engine.share([n for n in _all_relations(run, [*run.job.sources, *steps]) if n in q.rules + q.warn])
    outcomes = []
    for parsed, sev in zip(rules.values(), ("error", "warn"), strict=True):
        outcomes += quality.evaluate(run.ledger, "_staged", parsed, sev, rels, run.now)
    failed = [o for o in outcomes if not o.passed and o.severity == "error"]
    run.tick("quality", t)
    return {"passed": not failed, "rules": [o.to_dict() for o in outcomes],
            "failed": [o.rule for o in outcomes if not o.passed]}


def publish(run: Run, staged: Path, rows: dict[str, int]) -> dict[str, Any]:
    """A new table version: staged files moved in, manifest and bookmark with them, one rename."""
    t = time.time()
    out = run.job.output
    append = run.appending()
    partitions = [dict(zip(out.partition_by, r, strict=True)) for r in run.ledger.rows(
        f"SELECT DISTINCT {', '.join(ident(k) for k in out.partition_by)} FROM _staged ORDER BY ALL")
    ] if out.partition_by else []
    manifest = {"job": run.job.name, "run_id": run.run_id, "mode": "append" if append else "overwrite",
                "rows_written": rows["written"], "partitions": partitions,
                "schema": dict(run.ledger.columns("_out")),
                "published_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
    fault("publish:staged")
    version = run.table.publish(staged, append, {"manifest.json": manifest,
                                                 "bookmark.json": run.bookmark_out}, out.keep_versions)
    run.tick("write", t)
    return {"path": out.path, "version": version, "mode": manifest["mode"], "partitions": partitions,
            "location": table_location(out.path)}


# -- records of every run ---------------------------------------------------------------------
def write_quarantine(run: Run) -> dict[str, Any]:
    e = run.ledger
    n = e.one("SELECT count(*) FROM _quarantine")
    base = run.job.output.quarantine
    info: dict[str, Any] = {"path": base, "records": n, "by_reason": {}, "by_stage": {}}
    if not n:
        return info
    pos_case = "CASE f.fmt " + " ".join(f"WHEN {lit(k)} THEN {lit(v + ' ')} || q._pos" for k, v in POSITION.items()) + " END"
    e.run(
        "CREATE TABLE _qout AS SELECT f.source AS source_name, f.url AS source,"
        f" coalesce(q.position, {pos_case}) AS position, q._pos AS position_number, q.stage, q.reason,"
        " q.record FROM _quarantine q LEFT JOIN _files f ON q._src = f.id"
        " ORDER BY q._src, q._pos"
    )
    top = e.rows("SELECT regexp_replace(reason, ':.*', ''), count(*) FROM _qout GROUP BY 1 ORDER BY 2 DESC LIMIT 20")
    info["by_reason"] = dict(top)
    info["by_stage"] = dict(e.rows("SELECT stage, count(*) FROM _qout GROUP BY 1 ORDER BY 1"))
    target = join(base, f"run_id={run.run_id}", "part-0.parquet")
    if is_remote(base):
        with tempfile.TemporaryDirectory() as d:
            local = os.path.join(d, "q.parquet")
            e.run(f"COPY _qout TO {lit(local)} (FORMAT parquet)")
            fs, p = filesystem(target)
            fs.put_file(local, p)
    else:
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        tmp = target + ".tmp"
        e.run(f"COPY _qout TO {lit(tmp)} (FORMAT parquet)")
        os.replace(tmp, target)
    info["file"] = target
    return info


def record_catalog(run: Run, output: dict[str, Any] | None) -> dict[str, Any]:
    job, cdir = run.job, catalog_dir(run.job)
    drift = {}
    for name, info in run.sources.items():
        schema = dict(run.source_schemas[name])
        for c, types in info.get("choice_columns", {}).items():
            schema[c] = "choice<" + ",".join(types) + ">"
        drift[f"source:{name}"] = catalog.record(cdir, f"source.{name}", "source", schema, run.run_id)
    out_schema = dict(run.ledger.columns("_out"))
    drift["output"] = catalog.record(cdir, f"output.{job.name}", "output", out_schema, run.run_id,
                                     {"path": job.output.path, "partition_keys": list(job.output.partition_by)})
    if job.output.glue_database and output is not None:
        catalog.sync_glue(
            job.output.glue_database, job.name, output["location"], out_schema,
            list(job.output.partition_by), output["partitions"],
            endpoint_url=os.environ.get("AWS_ENDPOINT_URL_GLUE") or os.environ.get("AWS_ENDPOINT_URL"))
    return {"path": cdir, "output_schema": out_schema,
            "drift": {k: v for k, v in drift.items() if any(v.values())}}


def run_job(config: str | Path | dict, params: dict[str, Any] | None = None, *,
            engine: BatchEngine | str | None = None, progress: bool | None = None,
            now: dt.datetime | None = None, secrets: Iterable[str] = (),
            memory_limit: str | None = None) -> RunResult:
    """Run a batch job; raise on failure (after writing the summary and quarantine).

    ``params`` are the job's typed parameters (strings are converted); ``engine`` computes the
    relations: ``"duckdb"`` (the embedded engine, the default), ``"spark"`` (a local Spark), or
    an engine object such as ``SparkEngine(spark)`` from ``mlprep.batch.engines.spark``;
    ``now`` fixes the clock for DataFreshness rules; ``secrets`` name parameters whose values
    are masked in the summary (names that look secret always are); ``memory_limit`` bounds the
    embedded DuckDB, which spills to disk past it (e.g. ``"2GB"``; default
    :func:`default_memory_limit`). Returns a :class:`RunResult` whose
    ``summary`` is also on disk.
    """
    job, values = load_job(config, params)
    check_output_paths(job)
    if progress is None:
        progress = os.environ.get("MLPREP_PROGRESS", "1") != "0"
    run = Run(job, values, engine_of(engine), progress, now, secrets, memory_limit)
    error: BaseException | None = None
    try:
        _steps(run)
    except _NothingNew:
        run.summary["status"] = "noop"
        run.summary.update(_nothing_new(job, run.table, run.sources[job.primary_source()]))
        log.warning("%s: %s", job.name, run.summary["output"]["note"])
    except BaseException as e:  # record every failure, then re-raise
        error = _out_of_memory(e, run.memory) or e
        run.summary.update(status="failed", error=f"{type(error).__name__}: {error}")
    finally:
        error, summary_path = _record(run, error)
    if error is not None:
        if isinstance(error, MlprepError):
            error.summary_path = summary_path  # type: ignore[attr-defined]
        raise error
    return RunResult(run.run_id, run.summary["status"], summary_path, run.summary)


RAM_SHARE = 24  # the default limit is RAM / RAM_SHARE, at least DEFAULT_FLOOR (at most half of RAM)
DEFAULT_FLOOR = 1 << 30


def ram_bytes() -> int | None:
    """The machine's physical memory, or None where POSIX cannot say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def default_memory_limit() -> str:
    """``$MLPREP_MEMORY_LIMIT``, else 1 GB per 24 GB of the machine's memory, at least 1 GiB (and
    at most half of it): a job beside a notebook kernel and a browser, flat in the input size.
    Peak RSS is the limit plus ~0.25 GB (Python, Arrow, DuckDB's own vectors).

    Measured at 5M rows on a 25 GB machine (bench/batch_etl.py): DuckDB's own 80% of RAM, 3.3 GB
    peak; 1.2 GB, 1.45 GB peak; this default (1 GiB there), see bench/results/batch_etl.json. A
    JSON record is read whole only if DuckDB can parse it within the limit
    (``engines.duckdb.record_cap``); a longer one is quarantined, saying so."""
    given = os.environ.get("MLPREP_MEMORY_LIMIT", "").strip()
    if given:
        return given
    total = ram_bytes()
    if total is None:  # not POSIX: DuckDB's own default
        return ""
    return f"{max(min(DEFAULT_FLOOR, total // 2), total // RAM_SHARE) // 10**6}MB"  # MB as DuckDB reads it


_SIZE = re.compile(r"^(\d+(?:\.\d+)?)\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB|%)$", re.I)
_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}  # as DuckDB reads them


@dataclass
class MemorySetting:
    """The embedded DuckDB's memory limit: as given, who set it, in bytes, and as DuckDB took it."""

    limit: str  # "" is DuckDB's own default (80% of RAM)
    set_by: str  # memory_limit | MLPREP_MEMORY_LIMIT | default
    size: int | None  # bytes
    applied: str = ""  # DuckDB's current_setting('memory_limit')

    @property
    def duckdb(self) -> str:
        return f"{self.size}B" if self.size is not None else ""

    def to_dict(self) -> dict[str, Any]:
        return {"limit": self.limit or "DuckDB default (80% of RAM)", "set_by": self.set_by,
                "bytes": self.size, "duckdb": self.applied}


def memory_setting(given: str | None) -> MemorySetting:
    """The limit ``run_job`` was given, else :func:`default_memory_limit`; sizes as DuckDB reads
    them (KB = 1000 B, KiB = 1024 B) or a share of RAM (``25%``)."""
    env = os.environ.get("MLPREP_MEMORY_LIMIT", "").strip()
    limit = (given or "").strip() or default_memory_limit()
    set_by = "memory_limit" if (given or "").strip() else "MLPREP_MEMORY_LIMIT" if env else "default"
    if not limit:
        return MemorySetting("", set_by, None)
    m = _SIZE.match(limit)
    if not m or not float(m.group(1)) > 0 or (m.group(2) == "%" and float(m.group(1)) > 100):
        raise ConfigError(set_by if set_by != "default" else "memory_limit",
                          f"expected a size such as 1500MB or 2GB, or a share of RAM such as 10%, got {limit!r}")
    if m.group(2) == "%":
        total = ram_bytes()
        if total is None:
            raise ConfigError(set_by, f"{limit!r}: this system does not say how much memory it has; give a size")
        return MemorySetting(limit, set_by, int(total * float(m.group(1)) / 100))
    return MemorySetting(limit, set_by, int(float(m.group(1)) * _UNITS[m.group(2).lower()]))


def _out_of_memory(e: BaseException, memory: MemorySetting) -> MlprepError | None:
    """DuckDB's many-line out-of-memory error as one line that names the limit and the remedy."""
    if not isinstance(e, duckdb.OutOfMemoryException):
        return None
    err = MlprepError(f"out of memory within memory_limit {memory.limit or 'DuckDB default'} ({memory.applied},"
                      f" set by {memory.set_by}): {str(e).splitlines()[0]}; give the job more memory"
                      " (--memory-limit, $MLPREP_MEMORY_LIMIT) or lower the sources' max_record_bytes")
    err.__cause__ = e
    return err


ENGINES = ("duckdb", "embedded", "spark")
PROTOCOL = tuple(m for m in vars(BatchEngine) if not m.startswith("_"))


def engine_of(engine: BatchEngine | str | None) -> BatchEngine:
    """An engine from its name, or the object given if it has the protocol's methods."""
    if engine is None or engine in ("duckdb", "embedded"):
        return DuckDBEngine()
    if engine == "spark":
        from mlprep.batch.engines.spark import SparkEngine

        return SparkEngine()
    if isinstance(engine, str):
        raise ConfigError("engine", f"one of {', '.join(ENGINES)} or an engine object, got {engine!r}")
    missing = [m for m in PROTOCOL if not callable(getattr(engine, m, None))]
    if isinstance(engine, type) or missing:
        what = f"the class {engine.__name__} (pass an instance: {engine.__name__}())" if isinstance(engine, type) \
            else f"{type(engine).__name__} (no {', '.join(missing)})"
        raise ConfigError("engine", f"not a batch engine: {what}")
    return engine


def _steps(run: Run) -> None:
    """extract → thresholds → transform → thresholds → stage → account → quality → publish."""
    job, s = run.job, run.summary
    stages = tqdm(total=5, desc=f"{job.name}: extract", unit="stage", disable=not run.progress, leave=False)

    def next_stage(name: str) -> None:
        stages.update(1)
        stages.set_description(f"{job.name}: {name}")

    if run.progress:  # DuckDB's own bar for long statements; in Jupyter it needs ipywidgets
        try:
            run.ledger.run("SET enable_progress_bar = true")
        except Exception as e:
            log.debug("no DuckDB progress bar: %s", e)
    try:
        extract(run)
        primary = run.sources[job.primary_source()]
        if primary["read"] == 0:  # empty input, or nothing new since the bookmark
            raise _NothingNew
        check_thresholds(run, job.primary_source())  # read errors alone may already fail the job
        if primary["read"] == primary["quarantined"]:  # nothing readable left to transform
            raise _NothingNew
        next_stage("transform")
        final = transform(run)
        s["primary_source"] = origin = run.engine.origin(final)
        check_thresholds(run, origin)
        next_stage("write")
        staged = stage(run, final)
        try:
            s["rows"] = account(run, final)
            next_stage("quality")
            s["quality"] = check_quality(run)
            if not s["quality"]["passed"]:
                raise DataQualityError("data-quality rules failed: " + "; ".join(s["quality"]["failed"]))
        except BaseException:
            shutil.rmtree(staged, ignore_errors=True)
            raise
        next_stage("publish")
        s["output"] = publish(run, staged, s["rows"])
        next_stage("done")
        s["status"] = "succeeded"
    finally:
        stages.close()


def _record(run: Run, error: BaseException | None) -> tuple[BaseException | None, str]:
    """Summary, quarantine and catalog of every run, failed or not; the first error wins."""
    job, s = run.job, run.summary
    if "rows" not in s:
        src, c = run.sources.get(job.primary_source(), {}), run.tally.of(job.primary_source())
        s["rows"] = {"read": src.get("read", 0), "written": 0,
                     "quarantined": src.get("quarantined", 0) + c["quarantined"],
                     "deduplicated": c["deduplicated"], "filtered": c["filtered"]}
    if s["status"] == "failed":  # nothing was published: rows that survived every step are 'unpublished'
        r = s["rows"]
        r["written"] = 0
        r["unpublished"] = r["read"] - r["quarantined"] - r["deduplicated"] - r["filtered"]
    s["sources"] = run.sources
    s["notes"] = run.tally.notes
    try:
        s["quarantine"] = write_quarantine(run)
        if s["status"] == "succeeded":
            s["catalog"] = record_catalog(run, s["output"])
    except Exception as e2:  # never hide the first error behind a second one
        if error is None:
            error = e2
            s.update(status="failed", error=f"{type(e2).__name__}: {e2}")
    s["timings"] = run.timings
    s["finished_at"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    s["seconds"] = round(time.time() - run.t0, 3)
    if run.masker:
        s = run.summary = run.masker.value(s)
    rdir = join(runs_dir(job), run.run_id)
    summary_path = join(rdir, "summary.json")
    write_json_atomic(summary_path, s)
    if "quality" in s:
        write_json_atomic(join(rdir, "quality.json"), s["quality"])
    run.close()
    return error, summary_path


def check_output_paths(job: JobConfig) -> None:
    """Every local folder the job writes can be made: no file in the way, write permission.
    Checked before anything runs, so the error names the field, not an OS call."""
    for name, target in (("output.path", job.output.path), ("output.quarantine", job.output.quarantine),
                         ("output.catalog", catalog_dir(job))):
        if is_remote(target):
            continue
        p = Path(target).absolute()
        ancestor = next((a for a in (p, *p.parents) if a.exists()), None)
        if ancestor is None:
            continue
        if ancestor != p and not ancestor.is_dir():
            raise ConfigError(name, f"{target}: {ancestor} is a file, not a folder")
        if ancestor == p and not (ancestor.is_dir() or ancestor.is_symlink()):
            raise ConfigError(name, f"{target} is a file, not a folder")
        if not os.access(ancestor if ancestor.is_dir() else ancestor.parent, os.W_OK):
            raise ConfigError(name, f"{target}: no permission to write in {ancestor}")


def _nothing_new(job: JobConfig, table: Any, source: dict[str, Any]) -> dict[str, Any]:
    """A run with no new input: what is published stays, and so do its figures (the summary of
    the run that published it, under ``previous``)."""
    manifest = table.read_meta("manifest.json") or {}
    if source.get("read"):
        note = f"no readable records: all {source['read']} quarantined"
    elif manifest.get("published_at") and not source.get("empty_files"):
        note = f"nothing new since {manifest['published_at']}"
    else:
        where = source.get("path") or source.get("url") or job.primary_source()
        empty = source.get("empty_files") or []
        note = f"no records in {where}" + (f" ({len(empty)} empty file{'s' * (len(empty) > 1)})" if empty else "")
    out: dict[str, Any] = {"output": {"path": job.output.path, "version": None, "location": table_location(job.output.path),
                                      "note": note}}
    prev_id = manifest.get("run_id")
    if prev_id:
        try:
            fs, p = filesystem(join(runs_dir(job), prev_id, "summary.json"))
            with fs.open(p, "r") as f:
                out["previous"] = json.load(f)
        except (OSError, ValueError) as e:
            log.warning("no summary of the publishing run %s: %s", prev_id, e)
    return out


def bookmark_show(config: str | Path, params: dict[str, Any] | None = None) -> dict[str, Any] | None:
    job, _ = load_job(config, params)
    return open_table(job.output.path).read_meta("bookmark.json")


def bookmark_write(config: str | Path, params: dict[str, Any] | None, state: dict[str, Any] | None) -> str:
    """Publish a new version with the same data and a new bookmark (``None`` resets it: the next
    run reprocesses everything and replaces the table)."""
    job, _ = load_job(config, params)
    table = open_table(job.output.path)
    if table.current() is None:
        raise MlprepError(f"output.path: nothing published yet at {job.output.path}")
    manifest = table.read_meta("manifest.json") or {}
    meta = {"manifest.json": manifest}
    if state is not None:
        meta["bookmark.json"] = state
    staged = table.staging(new_run_id())
    return table.publish(staged, True, meta, job.output.keep_versions)


def bookmark_set(config: str | Path, params: dict[str, Any] | None, source: str,
                 key: Any = None, processed: str | None = None) -> str:
    """Set a source's bookmark: the last ``key`` of a SQL source, or mark the files matching
    ``processed`` (a path or glob) as already processed."""
    job, _ = load_job(config, params)
    if source not in job.sources:
        raise MlprepError(f"source: unknown source {source!r} (sources: {', '.join(job.sources)})")
    state = bookmark_show(config, params) or bookmarks.empty()
    if key is not None:
        state = bookmarks.advance(state, source, key=key)
    if processed is not None:
        files: list[FileInfo] = list_files(processed)
        state = bookmarks.advance(state, source, files=files)
    return bookmark_write(config, params, state)


def read_output(path: str) -> Any:
    """The published table as a pandas DataFrame (resolving S3's version pointer)."""
    import pyarrow as pa
    import pyarrow.dataset as ds

    loc = table_location(path)
    fs, p = filesystem(loc)
    d = ds.dataset(p, filesystem=fs, format="parquet", partitioning="hive")
    # appended runs may have added columns: read every file with the union of their schemas
    schema = pa.unify_schemas([f.physical_schema for f in d.get_fragments()] + [d.schema],
                              promote_options="permissive")
    return ds.dataset(p, filesystem=fs, format="parquet", partitioning="hive", schema=schema).to_table().to_pandas()


__all__ = ["RunResult", "bookmark_set", "bookmark_show", "bookmark_write", "read_output", "run_job"]
