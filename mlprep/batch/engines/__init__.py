"""Batch engines: what computes a job's relations.

``mlprep.batch.job`` owns the recipe (extract → thresholds → transform → stage → account →
quality → publish) and the bookkeeping, in an embedded DuckDB connection, the *ledger*: file
ids (``_files``), quarantined records (``_quarantine``), the staged output (``_staged``), the
bookmark, the summary. An engine owns the data: it reads sources into relations (every row with
its lineage ``_src``/``_pos`` and the marks ``_reason``/``_cat``/``_stage``/``_record``), applies
the job's steps, materializes (counting marked rows into the :class:`Tally` and putting
quarantined ones into the ledger), and writes the output's Parquet files into a staging folder.

How to add an engine: one module with a class that satisfies :class:`BatchEngine` (see
``duckdb.py``, where the ledger is also the engine, and ``spark.py``, where the data stays in
Spark until it is staged), run with ``run_job(config, params, engine=YourEngine())``. The
contract is kept by the engine-parity tests: the same rows, schema, quarantine and accounting
as the embedded engine on the same job.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from mlprep.errors import MlprepError

if TYPE_CHECKING:
    import pyarrow as pa

    from mlprep.batch.config import JobConfig, Source
    from mlprep.duck import Engine
    from mlprep.io.fs import FileInfo

LINEAGE = ("_src", "_pos")
MARKS = ("_reason", "_cat", "_stage", "_record")
CATEGORIES = ("quarantined", "deduplicated", "filtered")
NULL_PARTITION = "__MLPREP_NULL__"  # a partition value of NULL, found (and refused) after the write


WINDOW = re.compile(r"\bover\s*\(\s*(partition\s+by\b)?", re.I)  # a window function in job SQL


def has_window(expr: str) -> bool:
    """``expr`` uses a window function: it must see exactly the live rows."""
    return WINDOW.search(expr) is not None


class StepError(MlprepError):
    """A step cannot run on this data (e.g. a column it names does not exist)."""


@dataclass
class Tally:
    """What the engine counts for the row accounting, per source (``origin``)."""

    counts: dict[str, dict[str, int]] = field(default_factory=dict)  # origin -> category -> n
    notes: list[str] = field(default_factory=list)
    derived_reads: dict[str, int] = field(default_factory=dict)  # child relations: rows made

    def count(self, origin: str, category: str, n: int) -> None:
        c = self.counts.setdefault(origin, dict.fromkeys(CATEGORIES, 0))
        c[category] += n

    def of(self, origin: str) -> dict[str, int]:
        return self.counts.get(origin, dict.fromkeys(CATEGORIES, 0))


@dataclass
class Extracted:
    """One source read into a relation of the same name."""

    read: int  # records (lines, CSV records, rows), quarantined ones included
    quarantined: int
    schema: dict[str, str]  # data columns -> engine type
    empty_files: list[str] = field(default_factory=list)
    choice_columns: dict[str, list[str]] = field(default_factory=dict)  # column -> JSON types seen


@dataclass
class RunContext:
    """What a job run hands its engine."""

    job: JobConfig
    ledger: Engine
    tally: Tally
    progress: bool = False
    memory_limit: int | None = None  # bytes the embedded DuckDB may use (None: DuckDB's own default)

    @property
    def years(self) -> tuple[int, int]:  # timestamps and dates outside are no value
        return self.job.timestamps.min_year, self.job.timestamps.max_year


class BatchEngine(Protocol):
    name: str

    def open(self, run: RunContext) -> None: ...

    def describe(self) -> dict[str, Any] | None:
        """What ran the job, for the summary (``None``: nothing to say)."""

    def read_files(self, name: str, src: Source, files: list[tuple[int, FileInfo]],
                   advance: Callable[[int], object]) -> Extracted:
        """Read ``(file id, file)`` pairs; quarantine unreadable records into the ledger."""

    def read_table(self, name: str, fid: int, table: pa.Table) -> Extracted:
        """A SQL source's rows, already read."""

    def origin(self, name: str) -> str: ...

    def pending(self, name: str) -> bool:
        """The relation may hold marked rows not yet counted."""

    def identity(self, name: str) -> object:
        """What the relation reads (relations of one chain share it)."""

    def materialize(self, name: str) -> None:
        """Count and quarantine the relation's marked rows; keep its live rows."""

    def apply(self, kind: str, step: Any, stage: str) -> None:
        """Run one step: the relation ``step.out`` from its input(s)."""

    def write(self, name: str, staged: Path, tag: str) -> list[Path]:
        """Write the relation's data columns (plus ``output.partition_by`` keys as text, NULL as
        :data:`NULL_PARTITION`) as ``part-<tag>-<i>.parquet`` files under ``staged`` (hive
        folders when partitioned); define ``_out`` in the ledger with the output's schema."""

    def share(self, names: Iterable[str]) -> dict[str, str]:
        """Ledger tables holding the live rows of named relations (for quality rules)."""

    def close(self) -> None: ...
