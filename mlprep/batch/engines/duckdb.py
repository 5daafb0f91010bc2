"""The embedded engine: the job's relations are DuckDB views and tables in the ledger itself, so
nothing is copied between the engine and the bookkeeping. Steps are ``mlprep.batch.transforms``
(lazy views; marked rows; a chain is materialized only where a step must see the live rows)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import duckdb

from mlprep.batch import transforms
from mlprep.batch.config import Source
from mlprep.batch.engines import MARKS, NULL_PARTITION, Extracted, RunContext
from mlprep.duck import ident, lit
from mlprep.errors import ConfigError, MlprepError
from mlprep.io import files as file_io
from mlprep.io.fs import FileInfo
from mlprep.io.json_strict import Limits

_STEPS = {"resolve_choice": transforms.resolve_choice, "apply_mapping": transforms.apply_mapping,
          "require": transforms.require, "filter": transforms.filter_rows, "dedupe": transforms.dedupe,
          "derive": transforms.derive, "drop_null_fields": transforms.drop_null_fields}


# DuckDB's JSON functions hold ~40x a line's bytes while inferring its structure
# (json_group_structure) and parsing it, per thread: measured, one 10 MB line needs 0.3-0.45 GB,
# 20 MB 0.6-0.9 GB, 40 MB 1.4-1.6 GB; two 20 MB lines on two threads 0.9-1.2 GB
PARSE_COST = 40


def record_cap(memory_limit: int | None, threads: int) -> int | None:
    """The longest JSON line (bytes) read whole within ``memory_limit``; longer ones are
    quarantined at their line, like lines over ``max_record_bytes`` (None: no limit)."""
    if memory_limit is None:
        return None
    return memory_limit // (PARSE_COST * max(1, threads))


# a query's intermediates (hash tables, sorts) may use a quarter of the limit: counting the 30M
# keys of a dedupe otherwise took peak RSS from 1.30 to 1.50 GB at a 1 GB limit (1.40 with this)
OPERATOR_SHARE = 4


def flush_rows(memory_limit: int, threads: int, columns: int) -> int:
    """Rows a thread buffers per partition before a partitioned COPY writes them out (DuckDB's
    default, 524,288, held the whole 5M-row output at 7 partitions and spilled 1.1 GB of it):
    about a sixty-fourth of the limit over the threads, at ~16 bytes a value."""
    return max(2048, min(524_288, memory_limit // (64 * max(1, threads) * 16 * max(1, columns))))


class DuckDBEngine:
    name = "duckdb"

    def open(self, run: RunContext) -> None:
        self.run = run
        self.db = run.ledger
        self.ctx = transforms.Context(self.db, run.tally, years=run.years)
        if run.memory_limit is not None:  # operators spill before their untracked overhead crowds the limit
            self.db.run(f"SET operator_memory_limit = '{run.memory_limit // OPERATOR_SHARE}B'")

    def _threads(self) -> int:
        return int(self.db.one("SELECT current_setting('threads')"))

    def describe(self) -> dict[str, Any] | None:
        return None  # the default: a summary without an ``engine`` entry is the embedded one

    # -- extract ------------------------------------------------------------------------------
    def read_files(self, name: str, src: Source, files: list[tuple[int, FileInfo]],
                   advance: Callable[[int], object]) -> Extracted:
        table = f"src_{name}"
        if src.format == "jsonl":
            cap = record_cap(self.run.memory_limit, self._threads())
            longest = min(src.max_record_bytes, cap or src.max_record_bytes)
            stats = file_io.load_jsonl(self.db, table, files, longest, advance, Limits(src.max_depth, src.max_fields))
            if longest < src.max_record_bytes and files:
                self._over_cap([fid for fid, _ in files], longest, src.max_record_bytes)
        elif src.format == "csv":
            stats = file_io.load_csv(self.db, table, files, src.delimiter, src.header, src.max_record_bytes)
        else:
            stats = file_io.load_parquet(self.db, table, files)
        schema = dict(transforms.data_columns(self.db, table))
        self.ctx.relations[name] = transforms.source(self.ctx, table, name, stats.bases)
        return Extracted(stats.read, stats.quarantined, schema, stats.empty_files, stats.choice_columns)

    def _over_cap(self, ids: list[int], cap: int, configured: int) -> None:
        """Lines read with ``cap`` instead of the source's ``max_record_bytes`` were quarantined
        as over ``cap``: say which limit each one passed (the source's, or the memory's)."""
        n = "CAST(regexp_extract(reason, '^record too large: (\\d+) bytes', 1) AS BIGINT)"
        over_memory = (f"'record too large for the memory limit: ' || {n} || ' bytes > {cap} (the longest record"
                       f" DuckDB parses within memory_limit {self.run.memory_limit / 1e9:.2f} GB; max_record_bytes"
                       f" {configured}): raise the memory limit to read it'")
        self.db.run(f"UPDATE _quarantine SET reason = CASE WHEN {n} > {configured} THEN 'record too large: ' || {n}"
                    f" || ' bytes > max_record_bytes {configured}' ELSE {over_memory} END"
                    f" WHERE _src IN ({', '.join(map(str, ids))})"
                    f" AND reason LIKE {lit(f'record too large: % bytes > max_record_bytes {cap}')}")

    def read_table(self, name: str, fid: int, table: Any) -> Extracted:
        src = f"src_{name}"
        self.db.register("_sql_rows", table)
        cols = ", ".join(ident(c) for c in table.column_names)
        self.db.run(f"CREATE TABLE {src} AS SELECT {fid}::INTEGER AS _src, row_number() OVER () AS _pos"
                    f"{', ' + cols if cols else ''} FROM _sql_rows")
        self.db.con.unregister("_sql_rows")
        schema = dict(transforms.data_columns(self.db, src))
        self.ctx.relations[name] = transforms.source(self.ctx, src, name)
        return Extracted(table.num_rows, 0, schema)

    # -- relations ----------------------------------------------------------------------------
    def origin(self, name: str) -> str:
        return self.ctx.relations[name].origin

    def pending(self, name: str) -> bool:
        return self.ctx.relations[name].pending

    def identity(self, name: str) -> object:
        return self.ctx.relations[name].table

    def materialize(self, name: str) -> None:
        self.ctx.relations[name] = transforms.materialize(self.ctx, self.ctx.relations[name])
        self.ctx.gc()

    def apply(self, kind: str, step: Any, stage: str) -> None:
        rels = self.ctx.relations
        if kind == "join":
            out = transforms.join(self.ctx, rels[step.left], rels[step.right], step, stage)
        elif kind == "relationalize":
            out = transforms.relationalize(self.ctx, rels[step.input], step, step.out)
        else:
            out = _STEPS[kind](self.ctx, rels[step.input], step, stage)
        rels[step.out] = out
        self.ctx.gc()

    def share(self, names: Iterable[str]) -> dict[str, str]:
        return {n: self.ctx.relations[n].table for n in names if n in self.ctx.relations}

    # -- output -------------------------------------------------------------------------------
    def write(self, name: str, staged: Path, tag: str) -> list[Path]:
        """One COPY over the final chain (partitioned by the output's keys)."""
        rel, out = self.ctx.relations[name], self.run.job.output
        parts = out.partition_by
        if not transforms.data_columns(self.db, rel.table):
            raise MlprepError(f"output.input: relation {out.input!r} has no columns to write")
        for k, expr in parts.items():  # a wrong expression names its partition key
            try:
                self.db.run(f"SELECT ({expr})::VARCHAR FROM {rel.table} LIMIT 0")
            except duckdb.Error as e:
                raise ConfigError(f"output.partition_by.{k}", f"{expr!r}: {str(e).splitlines()[0]}") from None
        extra = "".join(f", coalesce(({expr})::VARCHAR, {lit(NULL_PARTITION)}) AS {ident(k)}"
                        for k, expr in parts.items())
        self.db.run(f"CREATE VIEW _out AS SELECT * EXCLUDE ({', '.join(MARKS)}, _src, _pos) {extra} "
                    f"FROM {rel.table}")
        if parts and self.run.memory_limit is not None:
            cols = len(self.db.columns("_out"))
            self.db.run(f"SET partitioned_write_flush_threshold = {flush_rows(self.run.memory_limit, self._threads(), cols)}")
        codec = out.compression if out.compression != "none" else "uncompressed"
        opts = ["FORMAT parquet", f"COMPRESSION {codec}", f"FILENAME_PATTERN 'part-{tag}-{{i}}'"]
        if parts:
            opts += [f"PARTITION_BY ({', '.join(ident(k) for k in parts)})", "OVERWRITE_OR_IGNORE"]
        target = str(staged) if parts else str(staged / f"part-{tag}-0.parquet")
        try:
            self.db.run(f"COPY _out TO {lit(target)} ({', '.join(opts)})")
        except Exception as e:
            raise MlprepError(f"computing the output failed: {str(e).splitlines()[0]}") from e
        return sorted(staged.rglob("*.parquet"))

    def close(self) -> None:
        pass  # the ledger is the run's to close
