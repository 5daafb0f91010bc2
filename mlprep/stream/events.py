"""Turn raw JSON-lines records into typed event rows, sending bad ones to a dead-letter output.

A batch is parsed by polars in one call; only a batch that fails to parse is taken line by
line (to find the bad lines). Bad events — unparseable JSON, a missing key or time, a value of
the wrong type — become dead letters with the reason and their source position.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import polars as pl

from mlprep.io import json_strict
from mlprep.stream.columns import POS, SEQ, T
from mlprep.stream.spec import FeatureSpec

_POLARS = {"string": pl.String, "double": pl.Float64, "long": pl.Int64, "boolean": pl.Boolean}
BOM = b"\xef\xbb\xbf"
DEAD_SCHEMA = {"source": pl.String, POS: pl.Int64, "reason": pl.String, "record": pl.String}


@dataclass
class Parsed:
    events: pl.DataFrame
    dead: pl.DataFrame
    filtered: int


def _read(block: bytes, schema: dict[str, pl.DataType]) -> pl.DataFrame:
    return pl.read_ndjson(io.BytesIO(block), schema=schema)


def parse_block(block: bytes, first_line: int, seq0: int, spec: FeatureSpec, source: str) -> Parsed:
    """Parse a block of whole JSON lines (the first is line ``first_line``) into events.

    Events get ``_seq`` from ``seq0`` on (arrival order) and ``_pos`` (their line number).
    """
    cols = [*spec.entity, spec.event_time.field, *spec.fields]
    schema = dict.fromkeys(cols, pl.String)
    lines = None
    if first_line == 1 and block.startswith(BOM):  # a file saved "with BOM": white space to JSON
        block = b"   " + block[len(BOM):]
    try:
        df = _read(block, schema)
        n_lines = block.count(b"\n") + (0 if block.endswith(b"\n") else 1)
        if len(df) == n_lines:
            df = df.with_columns(pl.Series(POS, np.arange(first_line, first_line + len(df), dtype=np.int64)))
        else:  # blank lines were skipped: number the rows by their lines
            lines = block.split(b"\n")
            nums = [first_line + i for i, ln in enumerate(lines) if ln.strip()]
            df = df.with_columns(pl.Series(POS, np.array(nums, dtype=np.int64)))
        dead_rows: list[tuple] = []
    except Exception:
        lines = block.split(b"\n")
        recs, nums, dead_rows = [], [], []
        for i, ln in enumerate(lines):
            if not ln.strip():
                continue
            try:  # strictly: NaN or Infinity would poison every sum; deep nesting, the parser
                r = json_strict.loads(ln)
                if not isinstance(r, dict):
                    raise ValueError(f"not a JSON object ({type(r).__name__})")
                recs.append({c: None if r.get(c) is None else (r[c] if isinstance(r[c], str) else json.dumps(r[c]))
                             for c in cols})
                nums.append(first_line + i)
            except ValueError as e:
                dead_rows.append((source, first_line + i, f"unparseable: {e}", ln.decode("utf-8", "replace")))
        df = pl.DataFrame(recs, schema=schema) if recs else pl.DataFrame(schema=schema)
        df = df.with_columns(pl.Series(POS, np.array(nums, dtype=np.int64)))
    split: list[list[bytes]] = [lines] if lines is not None else []

    def raw_line(p: int) -> str:  # the source line of a dead letter (split once, when needed)
        if not split:
            split.append(block.split(b"\n"))
        return split[0][p - first_line].decode("utf-8", "replace")

    return _typed(df, seq0, spec, source, dead_rows, raw_line)


def parse_frame(df: pl.DataFrame, first_row: int, seq0: int, spec: FeatureSpec, source: str) -> Parsed:
    """Events from an already tabular batch (a Parquet replay): row numbers are positions."""
    cols = [*spec.entity, spec.event_time.field, *spec.fields]
    missing = [c for c in cols if c not in df.columns]
    df = df.with_columns([pl.lit(None, pl.String).alias(c) for c in missing])
    tf = spec.event_time.field
    if df.schema[tf].is_temporal():  # a timestamp column: ISO text, as in JSON
        df = df.with_columns(pl.col(tf).dt.convert_time_zone("UTC") if getattr(df.schema[tf], "time_zone", None)
                             else pl.col(tf).dt.replace_time_zone("UTC"))
        df = df.with_columns(pl.col(tf).dt.strftime("%Y-%m-%dT%H:%M:%S%.3fZ"))
    df = df.select([pl.col(c).cast(pl.String) for c in cols]).with_columns(
        pl.Series(POS, np.arange(first_row, first_row + len(df), dtype=np.int64)))
    return _typed(df, seq0, spec, source, [], None)


def _typed(df: pl.DataFrame, seq0: int, spec: FeatureSpec, source: str, dead_rows: list[tuple],
           raw_line) -> Parsed:
    """Event time and typed fields from text columns; what does not convert is a dead letter."""
    cols = [*spec.entity, spec.event_time.field, *spec.fields]
    df = df.with_columns(pl.Series(SEQ, np.arange(seq0, seq0 + len(df), dtype=np.int64)))
    tf = spec.event_time.field
    if spec.event_time.format == "iso8601":
        t = pl.col(tf).str.to_datetime(time_zone="UTC", strict=False, time_unit="ms").dt.epoch("ms")
    elif spec.event_time.format == "epoch_ms":
        t = pl.col(tf).cast(pl.Float64, strict=False).cast(pl.Int64, strict=False)
    else:
        t = (pl.col(tf).cast(pl.Float64, strict=False) * 1000).cast(pl.Int64, strict=False)
    typed = [t.alias(T)] + [pl.col(c).cast(_POLARS[ty], strict=False).alias(f"_typed_{c}")
                            for c, ty in spec.fields.items() if ty != "string"]
    df = df.with_columns(typed)
    conds = [(pl.col(k).is_null(), f"missing key {k}") for k in spec.entity]
    lo, hi = spec.event_time.min_year, spec.event_time.max_year
    bounds = [int(datetime(y, 1, 1, tzinfo=UTC).timestamp() * 1000) for y in (lo, hi + 1) if y <= 9999] + [2**62]
    conds += [(pl.col(tf).is_null(), f"missing event time {tf}"),
              (pl.col(T).is_null(), f"bad event time {tf}"),
              (~pl.col(T).is_between(bounds[0], bounds[1], closed="left"), f"event time {tf} outside the years {lo}-{hi}")]
    conds += [(pl.col(c).is_not_null() & pl.col(f"_typed_{c}").is_null(), f"wrong type for {c} (expected {ty})")
              for c, ty in spec.fields.items() if ty != "string"]
    conds += [(~pl.col(f"_typed_{c}").is_finite(), f"{c} is not a finite number")  # the text "NaN", "1e999"
              for c, ty in spec.fields.items() if ty == "double"]
    reason = pl.when(conds[0][0]).then(pl.lit(conds[0][1]))
    for c, r in conds[1:]:
        reason = reason.when(c).then(pl.lit(r))
    df = df.with_columns(reason.otherwise(None).alias("_reason"))
    bad = df.filter(pl.col("_reason").is_not_null())
    for row in bad.select([POS, "_reason", *cols]).iter_rows():
        p, r, vals = row[0], row[1], row[2:]
        record = raw_line(p) if raw_line else json.dumps(dict(zip(cols, vals, strict=True)))
        dead_rows.append((source, p, r, record))
    good = df.filter(pl.col("_reason").is_null())
    good = good.with_columns([pl.col(f"_typed_{c}").alias(c) for c, ty in spec.fields.items() if ty != "string"])
    good = good.select([*spec.entity, T, SEQ, POS, *spec.fields])
    filtered = 0
    if spec.filter:
        kept = pl.SQLContext(events=good).execute(f"SELECT * FROM events WHERE {spec.filter}", eager=True)
        filtered = len(good) - len(kept)
        good = kept
    dead = pl.DataFrame(dead_rows, schema=DEAD_SCHEMA, orient="row") if dead_rows else pl.DataFrame(schema=DEAD_SCHEMA)
    return Parsed(good, dead, filtered)
