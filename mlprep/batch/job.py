"""Run a batch job: extract, transform, check quality, publish atomically, record everything.

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
import secrets
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
from tqdm.auto import tqdm

from mlprep import logs
from mlprep.batch import bookmarks, catalog, quality, transforms
from mlprep.batch.config import JobConfig, Source, load_job
from mlprep.batch.publish import open_table, table_location, write_json_atomic
from mlprep.batch.transforms import Context, Relation
from mlprep.duck import Engine, ident, lit
from mlprep.errors import ConfigError, DataQualityError, ErrorThresholdExceeded, MlprepError
from mlprep.faults import fault
from mlprep.io import files as file_io
from mlprep.io import sql as sql_io
from mlprep.io.fs import FileInfo, filesystem, is_remote, join, list_files
from mlprep.io.json_strict import Limits

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


class _Run:
    def __init__(self, job: JobConfig, values: dict[str, Any], progress: bool, now: dt.datetime | None):
        self.job, self.values, self.progress = job, values, progress
        self.run_id = new_run_id()
        self.now = now
        self.t0 = time.time()
        self.timings: dict[str, float] = {}
        self.tmp = tempfile.mkdtemp(prefix="mlprep-duckdb-")  # DuckDB spills here
        self.engine = Engine(temp_dir=self.tmp)
        self.engine.run(file_io.QUARANTINE_DDL)
        self.engine.run("CREATE TABLE _files (id INTEGER, source VARCHAR, url VARCHAR, fmt VARCHAR)")
        self.table = open_table(job.output.path)
        self.ctx = Context(self.engine, years=(job.timestamps.min_year, job.timestamps.max_year))
        self.sources: dict[str, dict[str, Any]] = {}
        self.source_schemas: dict[str, dict[str, str]] = {}
        self.file_id = 0
        state = self.table.read_meta("bookmark.json")
        self.bookmark_in = state
        self.bookmark_out = state or bookmarks.empty()
        self.summary: dict[str, Any] = {
            "job": job.name, "run_id": self.run_id, "status": "running",
            "started_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "parameters": {k: "***" if logs.SECRET.search(k) else
                           (sql_io.redact(v) if isinstance(v, str) else v) for k, v in values.items()},
        }

    def _tick(self, name: str, t: float) -> None:
        self.timings[name] = round(self.timings.get(name, 0) + time.time() - t, 3)

    # -- extract ------------------------------------------------------------------------------
    def extract(self) -> None:
        t = time.time()
        for name, src in self.job.sources.items():
            info: dict[str, Any] = {"format": src.format}
            table = f"src_{name}"
            if src.format == "sql":
                self._extract_sql(name, src, table, info)
            else:
                self._extract_files(name, src, table, info)
            self.sources[name] = info
            self.source_schemas[name] = dict(transforms.data_columns(self.engine, table))
            self.ctx.relations[name] = transforms.source(self.ctx, table, name, info.pop("_bases", None))
            log.info("extracted", extra={"source": name, "read": info["read"], "quarantined": info["quarantined"]})
        self._tick("extract", t)

    def _register_files(self, name: str, fmt: str, urls: list[str]) -> list[int]:
        ids = []
        for u in urls:
            self.file_id += 1
            self.engine.run("INSERT INTO _files VALUES (?, ?, ?, ?)", [self.file_id, name, u, fmt])
            ids.append(self.file_id)
        return ids

    def _extract_files(self, name: str, src: Source, table: str, info: dict[str, Any]) -> None:
        found = list_files(src.path, SUFFIXES[src.format])
        use_bm = src.bookmark and self.bookmark_in is not None
        todo = bookmarks.new_files(self.bookmark_in or {}, name, found) if use_bm else found
        info.update(path=src.path, files=len(todo), skipped_by_bookmark=len(found) - len(todo))
        ids = self._register_files(name, src.format, [f.url for f in todo])
        pairs = list(zip(ids, todo, strict=True))
        total = sum(f.size for f in todo)
        with tqdm(total=total, unit="B", unit_scale=True, desc=f"read {name}",
                  disable=not self.progress or total == 0, leave=False) as bar:
            if src.format == "jsonl":
                stats = file_io.load_jsonl(self.engine, table, pairs, src.max_record_bytes, bar.update,
                                           Limits(src.max_depth, src.max_fields))
            elif src.format == "csv":
                stats = file_io.load_csv(self.engine, table, pairs, src.delimiter, src.header, src.max_record_bytes)
                bar.update(total)
            else:
                stats = file_io.load_parquet(self.engine, table, pairs)
                bar.update(total)
        info.update(read=stats.read, quarantined=stats.quarantined, empty_files=stats.empty_files,
                    choice_columns=stats.choice_columns, _bases=stats.bases)
        if src.bookmark:
            self.bookmark_out = bookmarks.advance(self.bookmark_out, name, files=todo)

    def _extract_sql(self, name: str, src: Source, table: str, info: dict[str, Any]) -> None:
        after = bookmarks.last_key(self.bookmark_in or {}, name) if (src.bookmark and src.incremental_key) else None
        res = sql_io.read_table(src.url, src.table, src.query, src.incremental_key, after)
        (fid,) = self._register_files(name, "sql", [sql_io.redact(src.url) + (f"#{src.table}" if src.table else "#query")])
        self.engine.register("_sql_rows", res.table)
        cols = ", ".join(ident(c) for c in res.table.column_names)
        self.engine.run(f"CREATE TABLE {table} AS SELECT {fid}::INTEGER AS _src, row_number() OVER () AS _pos"
                        f"{', ' + cols if cols else ''} FROM _sql_rows")
        self.engine.con.unregister("_sql_rows")
        info.update(url=sql_io.redact(src.url), read=res.table.num_rows, quarantined=0,
                    after_key=after, max_key=res.max_key)
        if src.bookmark and src.incremental_key and res.max_key is not None:
            self.bookmark_out = bookmarks.advance(self.bookmark_out, name, key=res.max_key)

    # -- transform ----------------------------------------------------------------------------
    def transform(self) -> Relation:
        t = time.time()
        rels = self.ctx.relations
        consumed: set[str] = set()
        for i, (kind, step) in enumerate(self.job.parsed_steps()):
            stage = f"steps[{i}].{kind}"
            st = time.time()
            # a consumed relation's marked rows live on in its consumer's chain
            consumed.add(rels[step.input].table)
            if kind == "join":
                consumed.add(rels[step.right].table)
            if kind == "join":
                if rels[step.right].pending:  # count the right side's rejects once, here
                    rels[step.right] = transforms.materialize(self.ctx, rels[step.right])
                out = transforms.join(self.ctx, rels[step.left], rels[step.right], step, stage)
            elif kind == "relationalize":
                out = transforms.relationalize(self.ctx, rels[step.input], step, step.out)
            else:
                fn = {"resolve_choice": transforms.resolve_choice, "apply_mapping": transforms.apply_mapping,
                      "require": transforms.require, "filter": transforms.filter_rows,
                      "dedupe": transforms.dedupe, "derive": transforms.derive,
                      "drop_null_fields": transforms.drop_null_fields}[kind]
                out = fn(self.ctx, rels[step.input], step, stage)
            rels[step.out] = out
            self.ctx.gc()
            log.info("step", extra={"step": stage, "seconds": round(time.time() - st, 3)})
        final = rels[self.job.output.input]
        if final.pending:  # its marked rows must be counted before the output is written
            final = rels[self.job.output.input] = transforms.materialize(self.ctx, final)
        for name, rel in list(rels.items()):  # rejects of relations no step used
            if rel.pending and rel.table not in consumed:
                rels[name] = transforms.materialize(self.ctx, rel)
        self.ctx.gc()
        self._tick("transform", t)
        return final

    # -- output -------------------------------------------------------------------------------
    def stage(self, rel: Relation) -> tuple[Path, str]:
        """Write the output's Parquet files to a staging folder (one pass over the final chain)
        and return it with a view over the staged files, on which quality rules then run."""
        t = time.time()
        out = self.job.output
        parts = out.partition_by
        null = "__MLPREP_NULL__"
        extra = "".join(f", coalesce(({expr})::VARCHAR, {lit(null)}) AS {ident(k)}" for k, expr in parts.items())
        marks = ", ".join(transforms.MARKS)
        if not transforms.data_columns(self.engine, rel.table):
            raise MlprepError(f"output.input: relation {out.input!r} has no columns to write")
        for k, expr in parts.items():  # a wrong expression names its partition key
            try:
                self.engine.run(f"SELECT ({expr})::VARCHAR FROM {rel.table} LIMIT 0")
            except duckdb.Error as e:
                raise ConfigError(f"output.partition_by.{k}", f"{expr!r}: {str(e).splitlines()[0]}") from None
        self.engine.run(f"CREATE VIEW _out AS SELECT * EXCLUDE ({marks}, _src, _pos) {extra} FROM {rel.table}")
        self.check_append_schema()
        staged = self.table.staging(self.run_id)
        # names derive from what was processed: a rerun of the same input writes the same names
        ident_src = json.dumps({"config": self.job.model_dump(mode="json"), "files": self._inputs()},
                               sort_keys=True, default=str)
        self.tag = hashlib.sha256(ident_src.encode()).hexdigest()[:16]
        opts = ["FORMAT parquet", f"COMPRESSION {out.compression if out.compression != 'none' else 'uncompressed'}",
                f"FILENAME_PATTERN 'part-{self.tag}-{{i}}'"]
        if parts:
            opts += [f"PARTITION_BY ({', '.join(ident(k) for k in parts)})", "OVERWRITE_OR_IGNORE"]
        target = str(staged) if parts else str(staged / f"part-{self.tag}-0.parquet")
        try:
            self.engine.run(f"COPY _out TO {lit(target)} ({', '.join(opts)})")
        except Exception as e:
            raise MlprepError(f"computing the output failed: {str(e).splitlines()[0]}") from e
        files = sorted(staged.rglob("*.parquet"))
        if files:
            self.engine.run(f"CREATE VIEW _staged AS SELECT * FROM read_parquet([{', '.join(lit(str(f)) for f in files)}],"
                            f" hive_partitioning = {lit(bool(parts))}, hive_types_autocast = false)")
        else:
            self.engine.run("CREATE VIEW _staged AS SELECT * FROM _out WHERE FALSE")
        for k in parts:
            if any(f"{k}={null}" in f.parts for f in files):
                raise MlprepError(f"output.partition_by.{k}: expression gives NULL for some rows;"
                                  " require the columns it uses first")
        self._tick("write", t)
        return staged, "_staged"

    def appending(self) -> bool:
        return self.bookmark_in is not None and any(s.bookmark for s in self.job.sources.values())

    def check_append_schema(self) -> None:
        """Appending must not leave files of two schemas in one table: a column may be added,
        never removed or retyped (rebuild with `mlprep batch bookmark reset` instead)."""
        published = (self.table.read_meta("manifest.json") or {}).get("schema")
        if not self.appending() or not published:
            return
        d = catalog.drift(published, dict(transforms.data_columns(self.engine, "_out")))
        if d["removed"] or d["retyped"]:
            what = [f"{c} removed" for c in d["removed"]] + [f"{c} {a} -> {b}" for c, (a, b) in d["retyped"].items()]
            raise MlprepError(f"output.path: appending would change the published schema ({'; '.join(what)});"
                              " reset the bookmark to rebuild the table with the new schema")

    def accounting(self, rel: Relation, written: int) -> dict[str, int]:
        origin = rel.origin
        counts = self.ctx.counts.get(origin, dict.fromkeys(transforms.CATEGORIES, 0))
        src = self.sources.get(origin) or {"read": self.ctx.derived_reads[origin], "quarantined": 0}
        rows = {"read": src["read"], "written": written,
                "quarantined": src["quarantined"] + counts["quarantined"],
                "deduplicated": counts["deduplicated"], "filtered": counts["filtered"]}
        if rows["read"] != rows["written"] + rows["quarantined"] + rows["deduplicated"] + rows["filtered"]:
            raise MlprepError(f"internal error: row accounting does not balance: {rows}")
        return rows

    def check_thresholds(self, origin: str) -> None:
        th = self.job.thresholds
        src = self.sources.get(origin) or {"read": self.ctx.derived_reads[origin], "quarantined": 0}
        c = self.ctx.counts.get(origin, dict.fromkeys(transforms.CATEGORIES, 0))
        n = src["read"]
        fid = "(SELECT id FROM _files WHERE source = ?)"
        stages = dict(self.engine.rows(
            f"SELECT stage, count(*) FROM _quarantine WHERE _src IN {fid} GROUP BY 1", [origin]))
        checks = [("thresholds", "records quarantined", src["quarantined"] + c["quarantined"], th)]
        checks += [(f"thresholds.stage ({stage})", f"records quarantined in {stage}", q, th.stage)
                   for stage, q in sorted(stages.items())]
        for where, what, q, limit in checks:
            if limit.max_errors is not None and q > limit.max_errors:
                raise ErrorThresholdExceeded(f"{where}.max_errors: {q} {what} > {limit.max_errors}")
            if limit.max_error_rate is not None and n and q / n > limit.max_error_rate:
                raise ErrorThresholdExceeded(
                    f"{where}.max_error_rate: {q}/{n} = {q / n:.4%} {what} > {limit.max_error_rate:.4%}")

    def check_quality(self, table: str) -> dict[str, Any]:
        t = time.time()
        rels = {k: v.table for k, v in self.ctx.relations.items()}
        outcomes = []
        for text, sev, where in ((self.job.quality.rules, "error", "quality.rules"),
                                 (self.job.quality.warn, "warn", "quality.warn")):
            outcomes += quality.evaluate(self.engine, table, quality.parse(text, where), sev, rels, self.now)
        failed = [o for o in outcomes if not o.passed and o.severity == "error"]
        self._tick("quality", t)
        return {"passed": not failed, "rules": [o.to_dict() for o in outcomes],
                "failed": [o.rule for o in outcomes if not o.passed]}

    def publish(self, staged: Path, table: str, rows: dict[str, int]) -> dict[str, Any]:
        t = time.time()
        out = self.job.output
        append = self.appending()
        partitions = [dict(zip(out.partition_by, r, strict=True)) for r in self.engine.rows(
            f"SELECT DISTINCT {', '.join(ident(k) for k in out.partition_by)} FROM {table} ORDER BY ALL")
        ] if out.partition_by else []
        manifest = {"job": self.job.name, "run_id": self.run_id, "mode": "append" if append else "overwrite",
                    "rows_written": rows["written"], "partitions": partitions,
                    "schema": dict(transforms.data_columns(self.engine, "_out")),
                    "published_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
        fault("publish:staged")
        version = self.table.publish(staged, append, {"manifest.json": manifest,
                                                      "bookmark.json": self.bookmark_out}, out.keep_versions)
        self._tick("write", t)
        return {"path": out.path, "version": version, "mode": manifest["mode"], "partitions": partitions,
                "location": table_location(out.path)}

    def _inputs(self) -> list[Any]:
        return self.engine.rows("SELECT source, url FROM _files ORDER BY id") + [
            [k, v.get("after_key"), v.get("max_key")] for k, v in self.sources.items() if v["format"] == "sql"]

    def write_quarantine(self) -> dict[str, Any]:
        e = self.engine
        n = e.one("SELECT count(*) FROM _quarantine")
        base = self.job.output.quarantine
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
        target = join(base, f"run_id={self.run_id}", "part-0.parquet")
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

    def record_catalog(self, out_table: str, output: dict[str, Any] | None) -> dict[str, Any]:
        cdir = catalog_dir(self.job)
        drift = {}
        for name, info in self.sources.items():
            schema = dict(self.source_schemas[name])
            for c, types in info.get("choice_columns", {}).items():
                schema[c] = "choice<" + ",".join(types) + ">"
            drift[f"source:{name}"] = catalog.record(cdir, f"source.{name}", "source", schema, self.run_id)
        out_schema = {c: t for c, t in transforms.data_columns(self.engine, out_table)}
        drift["output"] = catalog.record(cdir, f"output.{self.job.name}", "output", out_schema, self.run_id,
                                         {"path": self.job.output.path,
                                          "partition_keys": list(self.job.output.partition_by)})
        if self.job.output.glue_database and output is not None:
            catalog.sync_glue(
                self.job.output.glue_database, self.job.name, output["location"], out_schema,
                list(self.job.output.partition_by), output["partitions"],
                endpoint_url=os.environ.get("AWS_ENDPOINT_URL_GLUE") or os.environ.get("AWS_ENDPOINT_URL"))
        return {"path": cdir, "output_schema": out_schema,
                "drift": {k: v for k, v in drift.items() if any(v.values())}}


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


def run_job(config: str | Path | dict, params: dict[str, Any] | None = None, *,
            progress: bool | None = None, now: dt.datetime | None = None, run_factory=None) -> RunResult:
    """Run a batch job; raise on failure (after writing the summary and quarantine).

    ``params`` are the job's typed parameters (strings are converted); ``now`` fixes the clock
    for DataFreshness rules. Returns a :class:`RunResult` whose ``summary`` is also on disk.
    """
    job, values = load_job(config, params)
    check_output_paths(job)
    if progress is None:
        progress = os.environ.get("MLPREP_PROGRESS", "1") != "0"
    run = (run_factory or _Run)(job, values, progress, now)  # mlprep.batch.spark supplies a Spark run
    s = run.summary
    error: BaseException | None = None
    out_table = None
    output = None
    stages = tqdm(total=5, desc=f"{job.name}: extract", unit="stage", disable=not progress, leave=False)

    def next_stage(name: str) -> None:
        stages.update(1)
        stages.set_description(f"{job.name}: {name}")

    if progress:  # DuckDB's own bar for long statements; in Jupyter it needs ipywidgets
        try:
            run.engine.run("SET enable_progress_bar = true")
        except Exception as e:
            log.debug("no DuckDB progress bar: %s", e)
    try:
        run.extract()
        primary = run.sources[job.primary_source()]
        if primary["read"] == 0:  # empty input, or nothing new since the bookmark
            raise _NothingNew
        run.check_thresholds(job.primary_source())  # read errors alone may already fail the job
        if primary["read"] == primary["quarantined"]:  # nothing readable left to transform
            raise _NothingNew
        next_stage("transform")
        final = run.transform()
        s["primary_source"] = final.origin
        run.check_thresholds(final.origin)
        next_stage("write")
        staged, out_table = run.stage(final)
        try:
            rows = s["rows"] = run.accounting(final, run.engine.one(f"SELECT count(*) FROM {out_table}"))
            next_stage("quality")
            s["quality"] = run.check_quality(out_table)
            if not s["quality"]["passed"]:
                raise DataQualityError("data-quality rules failed: " + "; ".join(s["quality"]["failed"]))
        except BaseException:
            shutil.rmtree(staged, ignore_errors=True)
            raise
        next_stage("publish")
        output = run.publish(staged, out_table, rows)
        next_stage("done")
        s["output"] = output
        s["status"] = "succeeded"
    except _NothingNew:
        s["status"] = "noop"
        s.update(_nothing_new(job, run.table, run.sources[job.primary_source()]))
        log.warning("%s: %s", job.name, s["output"]["note"])
    except BaseException as e:  # record every failure, then re-raise
        error = e
        s["status"] = "failed"
        s["error"] = f"{type(e).__name__}: {e}"
    finally:
        if "rows" not in s:
            src = run.sources.get(job.primary_source(), {})
            c = run.ctx.counts.get(job.primary_source(), dict.fromkeys(transforms.CATEGORIES, 0))
            s["rows"] = {"read": src.get("read", 0), "written": 0,
                         "quarantined": src.get("quarantined", 0) + c["quarantined"],
                         "deduplicated": c["deduplicated"], "filtered": c["filtered"]}
        if s["status"] == "failed":
            # nothing was published: rows that survived every step are 'unpublished'
            r = s["rows"]
            r["written"] = 0
            r["unpublished"] = r["read"] - r["quarantined"] - r["deduplicated"] - r["filtered"]
        s["sources"] = run.sources
        s["notes"] = run.ctx.notes
        try:
            s["quarantine"] = run.write_quarantine()
            if out_table is not None and s["status"] != "failed":
                s["catalog"] = run.record_catalog("_out", output)
        except Exception as e2:  # never hide the first error behind a second one
            if error is None:
                error = e2
                s["status"] = "failed"
                s["error"] = f"{type(e2).__name__}: {e2}"
        stages.close()
        s["timings"] = run.timings
        s["finished_at"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        s["seconds"] = round(time.time() - run.t0, 3)
        rdir = join(runs_dir(job), run.run_id)
        summary_path = join(rdir, "summary.json")
        write_json_atomic(summary_path, s)
        if "quality" in s:
            write_json_atomic(join(rdir, "quality.json"), s["quality"])
        run.engine.close()
        shutil.rmtree(run.tmp, ignore_errors=True)
    if error is not None:
        if isinstance(error, MlprepError):
            error.summary_path = summary_path  # type: ignore[attr-defined]
        raise error
    return RunResult(run.run_id, s["status"], summary_path, s)


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
