"""A feature spec compiled to Flink SQL, for Managed Service for Apache Flink (Kinesis Data
Analytics) or a local Flink, and a local run of it in PyFlink's own environment.

The SQL reads the raw events with every field as STRING and types them in a view, so a record
the embedded engine would send to dead letters (a missing key or time, a value of the wrong
type, unparseable JSON) is dropped here too; the spec's filter applies after typing. The event
time gets the spec's bound as its WATERMARK; each window becomes a window table function —
TUMBLE, HOP, SESSION (PARTITION BY the entity) — grouped by entity and window, one sink table
per window, all INSERTs in one statement set (one job).

Differences from the embedded engine, stated in the SQL too: Flink's window TVFs drop events
behind the watermark (no allowed lateness: the final values match when events are within the
bound), and FIRST_VALUE / LAST_VALUE follow arrival order, not event time.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from mlprep.errors import ConfigError
from mlprep.stream.aggregations import AGGREGATIONS
from mlprep.stream.spec import FeatureSpec, Window

_TYPE = {"string": "STRING", "double": "DOUBLE", "long": "BIGINT", "boolean": "BOOLEAN"}
# PyFlink's environment: MLPREP_FLINK_PYTHON, else `.venv-flink` beside the running environment
# (`make flink-venv` puts it beside `.venv`)
FLINK_PYTHON = Path(os.environ.get("MLPREP_FLINK_PYTHON", Path(sys.prefix).parent / ".venv-flink" / "bin" / "python"))


@dataclass(frozen=True)
class Endpoint:
    """Where events come from / features go: ``filesystem`` (a path: local runs, S3) or
    ``kinesis`` (a stream ARN and region: Managed Flink)."""

    kind: str
    path: str | None = None
    stream_arn: str | None = None
    region: str | None = None

    def properties(self, role: str) -> dict[str, str]:
        if self.kind == "filesystem":
            if not self.path:
                raise ConfigError(f"--{role}-path", "a filesystem connector needs a path")
            props = {"connector": "filesystem", "path": self.path, "format": "json"}
        elif self.kind == "kinesis":
            if not self.stream_arn or not self.region:
                raise ConfigError(f"--{role}-stream-arn", "a Kinesis connector needs a stream ARN and a region")
            props = {"connector": "kinesis", "stream.arn": self.stream_arn, "aws.region": self.region,
                     "format": "json"}
            if role == "source":
                props["source.init.position"] = "TRIM_HORIZON"
        else:
            raise ConfigError(f"--{role}", f"connector {self.kind!r}: filesystem or kinesis")
        if role == "source":
            props["json.ignore-parse-errors"] = "true"  # unparseable lines: dead letters in the embedded engine
        return props


def _with(props: dict[str, str]) -> str:
    return ",\n  ".join(f"'{k}' = '{v}'" for k, v in props.items())


def _interval(ms: int) -> str:
    for unit, size in (("DAY", 86_400_000), ("HOUR", 3_600_000), ("MINUTE", 60_000), ("SECOND", 1000)):
        if ms % size == 0:
            return f"INTERVAL '{ms // size}' {unit}"
    return f"INTERVAL '{ms / 1000:g}' SECOND"


_DOUBLE_MAX = "1.7976931348623157E308"


def _in_years(spec: FeatureSpec) -> str:
    """The event time, NULL outside the spec's years (so it never moves the watermark)."""
    t, et = _time_expr(spec), spec.event_time
    return f"CASE WHEN EXTRACT(YEAR FROM {t}) BETWEEN {int(et.min_year)} AND {int(et.max_year)} THEN {t} END"


def _time_expr(spec: FeatureSpec) -> str:
    f = f"`{spec.event_time.field}`"
    if spec.event_time.format == "iso8601":  # 2026-11-01T00:00:12.345Z, as UTC
        return f"TRY_CAST(REPLACE(REPLACE({f}, 'T', ' '), 'Z', '') AS TIMESTAMP(3))"
    scale = 3 if spec.event_time.format == "epoch_ms" else 0
    return f"TO_TIMESTAMP_LTZ(TRY_CAST({f} AS BIGINT), {scale})"


def _tvf(spec: FeatureSpec, w: Window, events: str) -> str:
    keys = ", ".join(f"`{k}`" for k in spec.entity)
    if w.type == "tumbling":
        return f"TUMBLE(TABLE {events}, DESCRIPTOR(event_time), {_interval(w.size)})"
    if w.type == "hopping":
        return f"HOP(TABLE {events}, DESCRIPTOR(event_time), {_interval(w.slide)}, {_interval(w.size)})"
    return f"SESSION(TABLE {events} PARTITION BY {keys}, DESCRIPTOR(event_time), {_interval(w.gap)})"


def compile_sql(spec: FeatureSpec, source: Endpoint, sink: Endpoint, parallelism: int = 2) -> str:
    """The whole Flink SQL script: settings, source, typed view, one sink per window, the job."""
    lines = [*_settings(spec, parallelism), _source_table(spec, source), *_views(spec)]
    lines += [f"-- {note}\n" for note in dict.fromkeys(
        AGGREGATIONS[a.function].flink_note for a in spec.aggregations) if note]
    inserts = []
    for w in spec.windows:
        table, insert = _window_job(spec, w, sink)
        lines.append(table)
        inserts.append(insert)
    lines.append("EXECUTE STATEMENT SET\nBEGIN\n" + "\n".join(inserts) + "\nEND;\n")
    return "\n".join(lines)


def _settings(spec: FeatureSpec, parallelism: int) -> list[str]:
    return [f"-- Flink SQL for feature spec {spec.name!r}, generated by mlprep (mlprep stream compile).",
            "-- Flink's window TVFs drop events behind the watermark: allowed lateness "
            f"({spec.allowed_lateness} ms) is not applied here.",
            "SET 'table.local-time-zone' = 'UTC';",
            f"SET 'parallelism.default' = '{parallelism}';",
            "SET 'pipeline.name' = 'mlprep-" + spec.name + "';", ""]


def _source_table(spec: FeatureSpec, source: Endpoint) -> str:
    """Every raw field as STRING (typed in a view), the event time with its watermark."""
    raw_cols = list(dict.fromkeys([*spec.entity, spec.event_time.field, *spec.fields]))
    cols = ",\n  ".join(f"`{c}` STRING" for c in raw_cols)
    bound = _interval(spec.max_out_of_orderness) if spec.max_out_of_orderness else "INTERVAL '0' SECOND"
    return (f"CREATE TEMPORARY TABLE {spec.name}_source (\n  {cols},\n"
            f"  event_time AS COALESCE({_in_years(spec)}, TIMESTAMP '1970-01-01 00:00:00'),\n"
            f"  WATERMARK FOR event_time AS event_time - {bound}\n) WITH (\n  {_with(source.properties('source'))}\n);\n")


def _views(spec: FeatureSpec) -> list[str]:
    """The typed view (records the embedded engine sends to dead letters dropped), then the
    spec's filter over it."""
    name = spec.name
    typed = [f"`{k}`" for k in spec.entity]
    checks = [f"`{k}` IS NOT NULL" for k in spec.entity]
    checks.append(f"{_in_years(spec)} IS NOT NULL")  # as the embedded engine's dead letters
    for c, t in spec.fields.items():
        if t == "string":
            typed.append(f"`{c}`")
        else:
            typed.append(f"TRY_CAST(`{c}` AS {_TYPE[t]}) AS `{c}`")
            checks.append(f"(`{c}` IS NULL OR TRY_CAST(`{c}` AS {_TYPE[t]}) IS NOT NULL)" if t != "double" else
                          f"(`{c}` IS NULL OR ABS(TRY_CAST(`{c}` AS DOUBLE)) <= {_DOUBLE_MAX})")  # not NaN or inf
    return [f"CREATE TEMPORARY VIEW {name}_typed AS\nSELECT {', '.join(typed)}, event_time\n"
            f"FROM {name}_source\nWHERE " + "\n  AND ".join(checks) + ";\n",
            f"CREATE TEMPORARY VIEW {name}_events AS\nSELECT * FROM {name}_typed"
            + (f"\nWHERE {spec.filter}" if spec.filter else "") + ";\n"]


def _features(spec: FeatureSpec, w: Window) -> list[tuple[str, str, str]]:
    """(feature name, SQL, SQL type) per aggregation over window ``w``."""
    out = []
    for a in spec.aggregations:
        f = AGGREGATIONS[a.function]
        sql_type = f.flink_type or _TYPE.get(spec.fields.get(a.column or "", ""), "STRING")
        out.append((f"{a.name}_{w.name}", f.flink_sql.format(c=f"`{a.column}`" if a.column else ""), sql_type))
    return out


def _window_job(spec: FeatureSpec, w: Window, sink: Endpoint) -> tuple[str, str]:
    """The sink table of window ``w`` and the INSERT that fills it."""
    table = f"{spec.name}_{w.name}"
    keys = ", ".join(f"`{k}`" for k in spec.entity)
    feats = _features(spec, w)
    sink_cols = [f"`{k}` STRING" for k in spec.entity] + ["window_start TIMESTAMP(3)", "window_end TIMESTAMP(3)"]
    sink_cols += [f"`{n}` {t}" for n, _, t in feats]
    props = sink.properties("sink")
    if sink.kind == "filesystem":
        props = {**props, "path": f"{sink.path.rstrip('/')}/{table}"}
    create = f"CREATE TEMPORARY TABLE {table} (\n  " + ",\n  ".join(sink_cols) + f"\n) WITH (\n  {_with(props)}\n);\n"
    select = ", ".join(f"{expr} AS `{n}`" for n, expr, _ in feats)
    insert = (f"INSERT INTO {table}\nSELECT {keys}, window_start, window_end, {select}\n"
              f"FROM TABLE({_tvf(spec, w, f'{spec.name}_events')})\nGROUP BY {keys}, window_start, window_end;")
    return create, insert


def run_local(sql_file: Path, timeout: float = 900, python: Path | None = None) -> float:
    """Run a compiled script on PyFlink's local mini-cluster, in its own environment
    (``python``, default ``FLINK_PYTHON``; ``make flink-venv``); returns Flink's wall seconds."""
    py = Path(python or FLINK_PYTHON)
    if not py.exists():
        raise ConfigError("flink", f"no PyFlink environment at {py}: run `make flink-venv` or set MLPREP_FLINK_PYTHON")
    # the job script ships in the package; as_file gives it a path even from a zipped install
    with resources.as_file(resources.files("mlprep.stream").joinpath("flink_job.py")) as job:
        p = subprocess.run([str(py), str(job), str(sql_file)], capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        raise RuntimeError(f"Flink job failed:\n{p.stderr[-4000:]}")
    return float(p.stdout.strip().splitlines()[-1])
