"""Batch job configuration: a YAML file plus typed parameters, like a Glue job and its arguments.

``load_job(path, params)`` substitutes ``${name}`` references with typed parameter values and
validates the whole config before any work starts; every error names the offending field, e.g.
``steps[3].dedupe.keys: field required``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mlprep import params
from mlprep.batch import dqdl
from mlprep.errors import ConfigError
from mlprep.yamlconf import config_error, read_mapping

# Glue's type names (and aliases) -> the canonical name each engine maps to its own type
GLUE_TYPES = {
    "string": "string", "varchar": "string", "int": "int", "integer": "int",
    "long": "bigint", "bigint": "bigint", "short": "smallint", "byte": "tinyint",
    "double": "double", "float": "float", "boolean": "boolean", "bool": "boolean",
    "timestamp": "timestamp", "date": "date",
}
_DECIMAL = re.compile(r"^decimal\((\d+),\s*(\d+)\)$")


def glue_type(name: str, where: str) -> str:
    """The canonical Glue type name (``string``, ``bigint``, ``decimal(10,2)``...) of ``name``."""
    t = name.strip().lower()
    if t in GLUE_TYPES:
        return GLUE_TYPES[t]
    m = _DECIMAL.match(t)
    if m:
        return f"decimal({m.group(1)},{m.group(2)})"
    raise ConfigError(where, f"unknown type {name!r} (one of {', '.join(sorted(GLUE_TYPES))}, decimal(p,s))")


def engine_type(types: dict[str, str], name: str, where: str) -> str:
    """An engine's type for a Glue type name, from the engine's table of canonical names
    (``decimal(p,s)`` is ``DECIMAL(p,s)`` in every engine)."""
    t = glue_type(name, where)
    return types.get(t) or t.upper()


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Param(_Model):
    type: Literal["str", "int", "float", "bool", "date", "path"] = "str"
    default: Any = None
    required: bool | None = None  # default: required when no default is given
    must_exist: bool = False  # for paths: the path has to exist (local paths only)
    description: str = ""


class Source(_Model):
    format: Literal["jsonl", "csv", "parquet", "sql"]
    path: str | None = None  # file, directory or glob; local or s3://
    url: str | None = None  # SQL sources: sqlite:///..., postgresql://..., mysql://...
    table: str | None = None
    query: str | None = None
    incremental_key: str | None = None
    bookmark: bool = True
    max_record_bytes: int = Field(1 << 20, gt=0)
    max_depth: int = Field(32, gt=0, le=256)  # JSON: records nested deeper are quarantined
    max_fields: int = Field(1000, gt=0)  # JSON: records with more keys (at any depth) are quarantined
    delimiter: str = ","
    header: bool = True

    @model_validator(mode="after")
    def _where(self) -> Source:
        if self.format == "sql":
            if not self.url:
                raise ValueError("sql sources need url")
            if bool(self.table) == bool(self.query):
                raise ValueError("sql sources need exactly one of table, query")
        elif not self.path:
            raise ValueError(f"{self.format} sources need path")
        return self


class _Step(_Model):
    input: str
    output: str | None = None

    @property
    def out(self) -> str:
        return self.output or self.input


class Relationalize(_Step):
    """Flatten nested objects into columns ``parent<sep>child``; arrays to child tables."""

    separator: str = "_"


class ResolveChoice(_Step):
    """Resolve mixed-type columns: ``cast:TYPE``, ``make_cols`` or ``project:TYPE``."""

    specs: dict[str, str]

    @field_validator("specs")
    @classmethod
    def _specs(cls, v: dict[str, str]) -> dict[str, str]:
        for col, spec in v.items():
            action, _, t = spec.partition(":")
            if action not in ("cast", "project", "make_cols"):
                raise ValueError(f"{col}: unknown action {action!r} (cast:TYPE, project:TYPE, make_cols)")
            if action != "make_cols":
                glue_type(t, f"specs.{col}")
        return v


class ApplyMapping(_Step):
    """Glue's ApplyMapping: ``[source, source_type, target, target_type]``; unmapped columns go."""

    mappings: list[tuple[str, str, str, str]]

    @field_validator("mappings")
    @classmethod
    def _types(cls, v: list[tuple[str, str, str, str]]) -> list[tuple[str, str, str, str]]:
        for i, (_, st, _, tt) in enumerate(v):
            glue_type(st, f"mappings[{i}]")
            glue_type(tt, f"mappings[{i}]")
        return v


class Require(_Step):
    """Rows missing any of ``columns`` are quarantined ("missing required field")."""

    columns: list[str] = Field(min_length=1)


class DropNullFields(_Step):
    """Glue's DropNullFields: drop columns that are null in every row."""


class Filter(_Step):
    """Keep rows where the SQL condition ``where`` is true; the others count as filtered."""

    where: str
    reason: str | None = None


class Dedupe(_Step):
    """Keep one row per ``keys`` (the first by ``order_by``, then source order)."""

    keys: list[str] = Field(min_length=1)
    order_by: list[str] = []
    keep: Literal["first", "last"] = "first"


class Join(_Model):
    """Many-to-one join of ``left`` with ``right`` on ``on``; inner-join misses count as filtered."""

    left: str
    right: str
    on: list[str] = Field(min_length=1)
    how: Literal["left", "inner"] = "left"
    output: str | None = None

    @property
    def input(self) -> str:
        return self.left

    @property
    def out(self) -> str:
        return self.output or self.left


class Derive(_Step):
    """Add or replace columns from SQL expressions (window functions allowed)."""

    columns: dict[str, str]


STEP_TYPES: dict[str, type[BaseModel]] = {
    "relationalize": Relationalize, "resolve_choice": ResolveChoice, "apply_mapping": ApplyMapping,
    "require": Require, "drop_null_fields": DropNullFields, "filter": Filter, "dedupe": Dedupe,
    "join": Join, "derive": Derive,
}


class StageThresholds(_Model):
    max_errors: int | None = Field(None, ge=0)
    max_error_rate: float | None = Field(None, ge=0, le=1)


class Thresholds(_Model):
    """Fail the job when more records are quarantined than this, in total or in any one stage
    (reading, or a step), as Glue's total and stage error thresholds do. Rates are shares of
    the records read. Checked after reading (fail fast on a garbage file) and after the steps."""

    max_errors: int | None = Field(None, ge=0)
    max_error_rate: float | None = Field(None, ge=0, le=1)
    stage: StageThresholds = StageThresholds()


class Quality(_Model):
    rules: str = ""  # DQDL; a failing rule stops the publish
    warn: str = ""  # DQDL; failures are reported only


class Output(_Model):
    input: str
    path: str
    quarantine: str
    partition_by: dict[str, str] = {}  # partition column -> SQL expression
    compression: Literal["zstd", "snappy", "gzip", "none"] = "zstd"
    catalog: str | None = None  # folder of the schema catalog; default <path>/../_catalog
    glue_database: str | None = None  # also sync the schema to this Glue Data Catalog database
    keep_versions: int = Field(3, ge=1)
    max_rows_per_file: int = Field(2_000_000, gt=0)


class Timestamps(_Model):
    """Timestamps and dates cast by a step must fall in these years, or the row is quarantined
    (year 1 or 99999 is a broken value, not a time)."""

    min_year: int = Field(1900, ge=1)
    max_year: int = Field(2200, le=9999)

    @model_validator(mode="after")
    def _order(self) -> Timestamps:
        if self.min_year > self.max_year:
            raise ValueError(f"min_year {self.min_year} > max_year {self.max_year}")
        return self


class JobConfig(_Model):
    name: str
    description: str = ""
    parameters: dict[str, Param] = {}
    sources: dict[str, Source]
    steps: list[dict[str, Any]] = []
    quality: Quality = Quality()
    thresholds: Thresholds = Thresholds()
    timestamps: Timestamps = Timestamps()
    output: Output

    def primary_source(self) -> str:
        """The source whose rows reach the output (through joins, their left side)."""
        name = self.output.input
        for kind, step in reversed(self.parsed_steps()):
            if step.out == name or (kind == "relationalize" and name.startswith(step.out + step.separator)):
                name = step.input
        return name

    def parsed_steps(self) -> list[tuple[str, Any]]:
        out = []
        for i, raw in enumerate(self.steps):
            where = f"steps[{i}]"
            if not isinstance(raw, dict) or len(raw) != 1:
                raise ConfigError(where, f"a step is one mapping {{transform: {{...}}}}; got {raw!r}")
            (kind, body), = raw.items()
            if kind not in STEP_TYPES:
                raise ConfigError(where, f"unknown transform {kind!r} (one of {', '.join(STEP_TYPES)})")
            try:
                out.append((kind, STEP_TYPES[kind].model_validate(body or {})))
            except ValidationError as e:
                raise config_error(e, f"{where}.{kind}") from None
            except ConfigError as e:
                raise ConfigError(f"{where}.{kind}.{e.field}", str(e).split(": ", 1)[1]) from None
        return out


def declared_parameters(raw: dict[str, Any]) -> dict[str, params.Parameter]:
    """The job's ``parameters:`` block as typed parameters (validated)."""
    try:
        declared = {k: Param.model_validate(v or {}) for k, v in (raw.get("parameters") or {}).items()}
    except ValidationError as e:
        raise config_error(e, "parameters") from None
    return {k: params.Parameter(k, p.type, p.default, p.required, p.description, p.must_exist)
            for k, p in declared.items()}


def load_job(config: str | Path | dict, values: dict[str, Any] | None = None, *,
             base: str | Path | None = None) -> tuple[JobConfig, dict[str, Any]]:
    """Parse and validate a job config (a YAML path or a dict) with parameter values.

    Relative path parameters are made absolute against ``base`` (default: the current folder,
    as for paths typed on a command line); ``${name}`` in the config is replaced by their text."""
    raw = read_mapping(config, "job config", "config")
    typed = params.resolve(declared_parameters(raw), dict(values or {}),
                           base=Path(base or Path.cwd()).absolute())
    body = params.substitute({k: v for k, v in raw.items() if k != "parameters"}, typed, text=True)
    body["parameters"] = raw.get("parameters") or {}
    try:
        job = JobConfig.model_validate(body)
    except ValidationError as e:
        raise config_error(e) from None
    steps = job.parsed_steps()
    _check_graph(job, steps)
    dqdl.parse(job.quality.rules, "quality.rules")  # DQDL is checked up front too
    dqdl.parse(job.quality.warn, "quality.warn")
    return job, typed


def _check_graph(job: JobConfig, steps: list[tuple[str, Any]]) -> None:
    """Every step's inputs must exist by the time it runs; the output's input too."""
    known = set(job.sources)
    prefixes: list[str] = []  # relationalize makes child relations <output><sep><array column>

    def exists(ref: str) -> bool:
        return ref in known or any(ref.startswith(p) for p in prefixes)

    for i, (kind, step) in enumerate(steps):
        for ref, field in ((step.input, "input" if kind != "join" else "left"),
                           *(((step.right, "right"),) if kind == "join" else ())):
            if not exists(ref):
                raise ConfigError(f"steps[{i}].{kind}.{field}", f"unknown relation {ref!r} (known: {', '.join(sorted(known))})")
        known.add(step.out)
        if kind == "relationalize":
            prefixes.append(step.out + step.separator)
    if not exists(job.output.input):
        raise ConfigError("output.input", f"unknown relation {job.output.input!r} (known: {', '.join(sorted(known))})")
