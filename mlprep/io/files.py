"""Load CSV, JSON-lines and Parquet files into engine tables, quarantining what cannot be read.

Every loaded row carries its lineage: ``_src`` (file id) and ``_pos`` (1-based line for JSON
lines, record number for CSV, row number for Parquet), so a row rejected by any later step can
still be traced to its source position. Rows that cannot be read at all go straight to the
quarantine table with the reason.

JSON values are self-describing, as in a Glue DynamicFrame: a field whose values have one type
gets that type; a field that is a number in some records and a string in others stays a
*choice* column (DuckDB JSON) until ``resolve_choice`` or ``apply_mapping`` decides.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from mlprep.duck import Engine, ident, lit
from mlprep.errors import MlprepError
from mlprep.io.fs import FileInfo, filesystem, is_remote
from mlprep.io.lines import Oversized, read_lines

log = logging.getLogger(__name__)

QUARANTINE_DDL = (
    "CREATE TABLE IF NOT EXISTS _quarantine (_src INTEGER, _pos BIGINT, position VARCHAR,"
    " stage VARCHAR, reason VARCHAR, record VARCHAR)"
)
SAMPLE_ROWS = 20_000
DETAIL_LIMIT = 10_000  # bad JSON lines re-parsed in Python for a precise message


@dataclass
class LoadStats:
    """What one source load saw: records read (incl. rejected) and rejected at read."""

    read: int = 0
    quarantined: int = 0
    blank_lines: int = 0
    empty_files: list[str] = field(default_factory=list)
    choice_columns: dict[str, list[str]] = field(default_factory=dict)
    bases: list[str] = field(default_factory=list)  # tables behind ``table`` when it is a view


def _quarantine_rows(engine: Engine, rows: list[tuple], stage: str = "read") -> None:
    if not rows:
        return
    tbl = pa.table(
        {
            "_src": pa.array([r[0] for r in rows], pa.int32()),
            "_pos": pa.array([r[1] for r in rows], pa.int64()),
            "position": pa.array([r[2] for r in rows], pa.string()),
            "reason": pa.array([r[3] for r in rows], pa.string()),
            "record": pa.array([r[4] for r in rows], pa.string()),
        }
    )
    engine.register("_q_rows", tbl)
    engine.run(
        f"INSERT INTO _quarantine SELECT _src, _pos, position, {lit(stage)}, reason, record"
        " FROM _q_rows"
    )
    engine.con.unregister("_q_rows")


# ----------------------------------------------------------------------------------------------
# JSON lines
# ----------------------------------------------------------------------------------------------


def _merge_structure(engine: Engine, sql_rows: str) -> dict:
    # objects without keys say nothing about the structure (and would merge into plain "JSON")
    s = engine.one(f"SELECT json_group_structure(txt::JSON) FROM ({sql_rows}) WHERE len(json_keys(txt)) > 0")
    struct = json.loads(s) if s else {}
    return struct if isinstance(struct, dict) else {}


def _leafify(struct: dict) -> dict:
    """Objects stay nested; every scalar or array becomes a JSON leaf (typed later, exactly)."""
    return {k: _leafify(v) if isinstance(v, dict) and v else "JSON" for k, v in struct.items()}


def _object_paths(struct: dict, prefix: str = "$") -> list[tuple[str, list[str]]]:
    out = [(prefix, list(struct))]
    for k, v in struct.items():
        if isinstance(v, dict):
            out += _object_paths(v, f"{prefix}.{json.dumps(k)}")
    return out


def _leaves(struct: dict, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = []
    for k, v in struct.items():
        out += _leaves(v, (*path, k)) if isinstance(v, dict) else [(*path, k)]
    return out


def _col(path: tuple[str, ...], root: str = "j") -> str:
    return ".".join([root, *[ident(p) for p in path]])


_BITS = {1: "VARCHAR", 2: "OBJECT", 4: "ARRAY", 8: "BOOLEAN", 16: "BIGINT", 32: "DOUBLE"}


def _type_bits(c: str) -> str:
    """SQL: a bit for the JSON type of the value ``c`` (minified JSON text), read off its first
    character; cheaper than json_type. Integers too long for BIGINT count as doubles."""
    s = f"{c}::VARCHAR"
    # a missing key or a JSON null is SQL NULL here: no type (left(NULL) would fall to ELSE)
    return (f"bit_or(CASE WHEN {s} IS NULL THEN NULL ELSE CASE left({s}, 1) WHEN '\"' THEN 1 WHEN '{{' THEN 2 WHEN '[' THEN 4"
            f" WHEN 't' THEN 8 WHEN 'f' THEN 8 WHEN 'n' THEN 0 ELSE CASE WHEN contains({s}, '.') OR"
            f" contains({s}, 'e') OR contains({s}, 'E') OR length({s}) > 18 THEN 32 ELSE 16 END END END)")


def _family(bits: int | None) -> list[str]:
    """The distinct value types of a JSON field, numbers unified (int and float are one)."""
    types = {t for b, t in _BITS.items() if (bits or 0) & b}
    if {"BIGINT", "DOUBLE"} <= types:
        types.discard("BIGINT")
    return sorted(types)


def _lines_fast(engine: Engine, file_id: int, url: str, max_record_bytes: int) -> str | None:
    """The lines of a file, split by DuckDB's parallel CSV reader into ``(_src, _pos, txt)``.

    Exact only when the reader rejected nothing: then every line (blank ones too, as NULL) is a
    row in file order, so the row number is the line number. Returns None otherwise (invalid
    UTF-8, a line over the limit, a stray delimiter byte): the exact splitter takes that file.
    """
    _register_fs(engine, url)
    t = engine.fresh("lines")
    engine.run("DROP TABLE IF EXISTS reject_errors; DROP TABLE IF EXISTS reject_scans")
    try:
        engine.run(
            f"CREATE TABLE {t} AS SELECT txt"
            f" FROM read_csv({lit(url)}, columns = {{'txt': 'VARCHAR'}}, delim = '\x01', quote = '',"
            " escape = '', header = false, auto_detect = false, new_line = '\\n', store_rejects = true,"
            f" max_line_size = {max_record_bytes + 1}, buffer_size = {max(32 << 20, 4 * (max_record_bytes + 1))})"
        )
    except Exception as e:  # the reader gave up on this file: use the exact splitter
        log.debug("fast line reader failed on %s: %s", url, e)
        engine.run(f"DROP TABLE IF EXISTS {t}")
        return None
    if engine.one("SELECT count(*) FROM reject_errors"):
        engine.run(f"DROP TABLE {t}")
        return None
    # insertion order is preserved (DuckDB's default), so a fresh table's rowid is the line index
    engine.run(f"CREATE VIEW {t}_v AS SELECT {file_id}::INTEGER AS _src, rowid + 1 AS _pos, txt FROM {t}")
    return t


def _lines_exact(engine: Engine, file_id: int, url: str, max_record_bytes: int,
                 progress: Callable[[int], None] | None) -> tuple[str, int]:
    """The lines of a file split in Python (numpy over 64 MB blocks): invalid UTF-8 and
    over-long lines are quarantined here. Returns the table and how many were quarantined."""
    t = engine.fresh("lines")
    engine.run(f"CREATE TABLE {t} (_src INTEGER, _pos BIGINT, raw BLOB, txt VARCHAR)")
    oversized: list[Oversized] = []
    for batch in read_lines(url, max_record_bytes, oversized):
        engine.register("_lines", batch)
        # decode() fails on invalid UTF-8; try() turns that into NULL, kept for quarantine
        engine.run(
            f"INSERT INTO {t} SELECT {file_id}, line_no, CASE WHEN try(decode(raw)) IS NULL THEN raw END,"
            " rtrim(try(decode(raw)), chr(10)) FROM _lines"
        )
        engine.con.unregister("_lines")
        if progress:
            progress(pc.sum(pc.binary_length(batch.column(1))).as_py() or 0)
    rows = [(file_id, o.line_no, f"line {o.line_no}",
             f"record too long: {o.length} bytes > max_record_bytes {max_record_bytes}",
             o.prefix.decode("utf-8", "replace") + "...") for o in oversized]
    bad_utf8 = engine.rows(f"SELECT _src, _pos, raw FROM {t} WHERE txt IS NULL")
    # keep the bytes visible (replacement characters) in the quarantine record
    rows += [(s, p, f"line {p}", "invalid UTF-8", bytes(r).decode("utf-8", "replace").rstrip("\r\n"))
             for s, p, r in bad_utf8]
    _quarantine_rows(engine, rows)
    engine.run(f"DELETE FROM {t} WHERE txt IS NULL")
    engine.run(f"ALTER TABLE {t} DROP COLUMN raw")
    return t, len(rows)


def _key_checks(struct: dict, text: str = "txt") -> str:
    """SQL true for JSON ``text`` with an object key the structure does not know (any depth)."""
    conds = []
    for path, keys in _object_paths(struct):
        if path == "$":
            conds.append(f"NOT list_has_all({lit_list(keys)}, json_keys({text}))")
        else:
            t = f"json_type({text}, {lit(path)})"
            # an object the structure expects may hold other keys, or be no object at all
            conds.append(f"({t} = 'OBJECT' AND NOT list_has_all({lit_list(keys)}, json_keys({text}, {lit(path)})))"
                         f" OR {t} NOT IN ('OBJECT', 'NULL')")
    return " OR ".join(conds) if conds else "FALSE"


def _canonical(struct: dict, expr: str) -> str:
    """SQL: the parsed object ``expr`` written back as minified JSON with exactly the
    structure's keys, in order (cheaper than to_json: string concatenation only)."""
    parts: list[str] = []
    for i, (k, v) in enumerate(struct.items()):
        sub = f"{expr}.{ident(k)}"
        parts.append(lit(("{" if i == 0 else ",") + json.dumps(k) + ":"))
        parts.append(_canonical(v, sub) if isinstance(v, dict) else f"coalesce({sub}::VARCHAR, 'null')")
    body = f"concat({', '.join(parts)}, '}}')" if parts else "'{}'"
    return f"CASE WHEN {expr} IS NULL THEN 'null' ELSE {body} END"


def _parse_sql(struct: dict, lines: str) -> str:
    """One pass: each line to a struct of JSON leaves (``j``), and ``_x``, true for a line with
    keys or a shape the structure does not cover. The key check is cheap for machine-written
    lines: when the struct written back as JSON is the line itself, the line has exactly the
    structure's keys; only other lines pay for listing their keys (measured at 5M lines:
    +0.3 s, against +1.1 s for to_json and +2.2 s for json_keys on every line)."""
    if not struct:  # no keys seen yet: objects parse to '{}'; any key at all is news
        return (f"SELECT _src, _pos, CASE WHEN json_valid(txt) AND json_type(txt) = 'OBJECT' THEN '{{}}'::JSON END"
                f" AS j, coalesce(try(len(json_keys(txt)) > 0), FALSE) AS _x FROM {lines}")
    leaf = _leafify(struct)
    # an object starts with '{' (after any white space): from_json would also take arrays
    j = f"CASE WHEN txt[1] = '{{' OR ltrim(txt)[1] = '{{' THEN try(from_json(txt, {lit(json.dumps(leaf))})) END"
    x = (f"CASE WHEN j IS NULL OR {_canonical(leaf, 'j')} = txt THEN FALSE"
         f" ELSE coalesce(try({_key_checks(struct)}), FALSE) END")
    return f"SELECT _src, _pos, j, {x} AS _x FROM (SELECT _src, _pos, txt, {j} AS j FROM {lines})"


def json_line_reason(text: str, detailed: bool = True) -> str:
    """Why a JSON line is not a record: not an object, or malformed (with the parser's message
    for the first ``DETAIL_LIMIT`` of a load: each costs a Python parse)."""
    try:
        value = json.loads(text)
    except ValueError as e:
        return f"malformed JSON: {e}" if detailed else "malformed JSON"
    return "malformed JSON" if isinstance(value, dict) else f"not a JSON object ({type(value).__name__})"


def load_jsonl(
    engine: Engine,
    table: str,
    files: list[tuple[int, FileInfo]],
    max_record_bytes: int,
    progress: Callable[[int], None] | None = None,
) -> LoadStats:
    """Load JSON-lines files into ``table`` (``_src``, ``_pos`` + one column per field)."""
    stats = LoadStats()
    parts = []
    for file_id, info in files:
        if info.size == 0:
            stats.empty_files.append(info.url)
            continue
        t = _lines_fast(engine, file_id, info.url, max_record_bytes)
        if t is not None:
            parts.append((t, f"{t}_v"))
            if progress:
                progress(info.size)
        else:
            t, rejected = _lines_exact(engine, file_id, info.url, max_record_bytes, progress)
            parts.append((t, t))
            stats.read += rejected
            stats.quarantined += rejected
    if not parts:
        engine.run(f"CREATE TABLE {table} (_src INTEGER, _pos BIGINT)")
        return stats
    lines = engine.fresh("alllines")
    engine.run(f"CREATE VIEW {lines} AS " + " UNION ALL ".join(
        # blank lines are not records; trim only lines that start with white space (cheap)
        f"SELECT _src, _pos, txt FROM {p} WHERE txt IS NOT NULL"
        f" AND (txt[1] NOT IN (' ', '\t', '\r') OR trim(txt, ' \t\r') <> '')" for _, p in parts))

    # structure: a sample, widened by every record with a key or shape the sample did not have
    good = f"SELECT txt FROM {lines} WHERE json_valid(txt) AND json_type(txt) = 'OBJECT'"
    struct = _merge_structure(engine, f"{good} LIMIT {SAMPLE_ROWS}")
    parsed = engine.fresh("parsed")
    for _ in range(6):
        engine.run(f"DROP TABLE IF EXISTS {parsed}")
        engine.run(f"CREATE TABLE {parsed} AS {_parse_sql(struct, lines)}")
        if not engine.one(f"SELECT count(*) FROM {parsed} WHERE _x OR j IS NULL"):
            break  # the common case: every line parsed to the structure (no join needed)
        # lines that parse as objects but not to this structure, or have keys it lacks
        odd = (f"SELECT l.txt FROM {parsed} p JOIN {lines} l USING (_src, _pos) WHERE (p._x OR p.j IS NULL)"
               " AND json_valid(l.txt) AND json_type(l.txt) = 'OBJECT'")
        if not engine.one(f"SELECT count(*) FROM ({odd} LIMIT 1)"):
            break
        struct = _merge_structure(engine, f"({good} LIMIT {SAMPLE_ROWS}) UNION ALL ({odd} LIMIT 100000)")
    else:
        raise MlprepError("JSON structure did not settle after 6 passes")

    # malformed JSON and non-objects: a precise message for the first DETAIL_LIMIT of them
    stats.read += engine.one(f"SELECT count(*) FROM {parsed}")
    bad = engine.rows(f"SELECT _src, _pos, l.txt, json_valid(l.txt) FROM {lines} l SEMI JOIN"
                      f" (SELECT _src, _pos FROM {parsed} WHERE j IS NULL) USING (_src, _pos) ORDER BY _src, _pos"
                      ) if engine.one(f"SELECT count(*) FROM {parsed} WHERE j IS NULL") else []
    rows = [(s, p, f"line {p}", json_line_reason(t, i < DETAIL_LIMIT), t.rstrip("\r\n"))
            for i, (s, p, t, _valid) in enumerate(bad)]
    _quarantine_rows(engine, rows)
    stats.quarantined += len(rows)
    for t, _ in parts:
        engine.run(f"DROP TABLE {t} CASCADE")
    leaf_struct = _leafify(struct)
    if not leaf_struct:  # objects without keys: records with no columns
        engine.run(f"CREATE TABLE {table} AS SELECT _src, _pos FROM {parsed} WHERE j IS NOT NULL")
        engine.run(f"DROP TABLE {parsed}")
        return stats

    # exact value types of every leaf, over all records
    leaves = _leaves(leaf_struct)
    bits = engine.rows("SELECT " + ", ".join(_type_bits(_col(p)) for p in leaves) + f" FROM {parsed}")[0]
    leaf_type: dict[tuple[str, ...], str] = {}
    for p, b in zip(leaves, bits, strict=True):
        fam = _family(b)
        if len(fam) > 1:
            stats.choice_columns[".".join(p)] = sorted(_glue_type(t) for t in fam)
            leaf_type[p] = "JSON"
        else:
            leaf_type[p] = fam[0] if fam else "VARCHAR"

    def conv(p: tuple[str, ...]) -> str:
        t, c = leaf_type[p], _col(p)
        if t == "VARCHAR":
            return f"({c} ->> '$')"
        if t == "ARRAY":  # a list of JSON values: relationalize makes it a child table
            return f"CAST({c} AS JSON[])"
        if t in ("OBJECT", "JSON"):
            return c
        return f"CAST({c} AS {t})"

    def build(struct: dict, path: tuple[str, ...]) -> str:
        parts = []
        for k, v in struct.items():
            sub = (*path, k)
            expr = build(v, sub) if isinstance(v, dict) else conv(sub)
            parts.append(f"{ident(k)} := {expr}")
        # a missing or null object stays NULL rather than a struct of NULLs
        return f"CASE WHEN {_col(path)} IS NULL THEN NULL ELSE struct_pack({', '.join(parts)}) END"

    cols = []
    for k, v in leaf_struct.items():
        expr = build(v, (k,)) if isinstance(v, dict) else conv((k,))
        cols.append(f"{expr} AS {ident(k)}")
    # a view: the conversion runs inside the job's first pipeline instead of as a copy here
    engine.run(f"CREATE VIEW {table} AS SELECT _src, _pos, {', '.join(cols)} FROM {parsed} WHERE j IS NOT NULL")
    stats.bases.append(parsed)
    return stats


def lit_list(items: list[str]) -> str:
    return "[" + ", ".join(lit(i) for i in items) + "]::VARCHAR[]"


def _glue_type(t: str) -> str:
    return {"DOUBLE": "double", "BIGINT": "long", "VARCHAR": "string", "BOOLEAN": "boolean",
            "OBJECT": "struct", "ARRAY": "array"}.get(t, t.lower())


# ----------------------------------------------------------------------------------------------
# CSV and Parquet: DuckDB's readers over local files or a registered fsspec file system
# ----------------------------------------------------------------------------------------------


def _register_fs(engine: Engine, url: str) -> None:
    if is_remote(url):
        fs, _ = filesystem(url)
        if not engine.con.filesystem_is_registered(fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]):
            engine.con.register_filesystem(fs)


def load_csv(
    engine: Engine,
    table: str,
    files: list[tuple[int, FileInfo]],
    delimiter: str = ",",
    header: bool = True,
) -> LoadStats:
    """Load CSV files as text columns; malformed rows (wrong field count, bad quoting,
    invalid UTF-8) go to quarantine with their line. Types are decided by the job's mapping."""
    stats = LoadStats()
    parts = []
    for file_id, info in files:
        if info.size == 0:
            stats.empty_files.append(info.url)
            continue
        _register_fs(engine, info.url)
        t = engine.fresh("csv")
        engine.run("DROP TABLE IF EXISTS reject_errors; DROP TABLE IF EXISTS reject_scans")
        engine.run(
            f"CREATE TABLE {t} AS SELECT {file_id} AS _src,"
            f" row_number() OVER () AS _pos, * FROM read_csv({lit(info.url)}, all_varchar = true,"
            f" header = {lit(header)}, delim = {lit(delimiter)}, store_rejects = true,"
            " auto_detect = true, strict_mode = true, null_padding = false)"
        )
        rejects = engine.rows(
            "SELECT line, error_type, error_message, csv_line FROM reject_errors ORDER BY line"
        )
        seen = set()
        rows = []
        for line, etype, msg, csv_line in rejects:
            if line in seen:  # one record per line, first error wins
                continue
            seen.add(line)
            rows.append((file_id, line, f"line {line}", f"malformed CSV ({etype}): {msg.splitlines()[0]}", csv_line))
        _quarantine_rows(engine, rows)
        n = engine.one(f"SELECT count(*) FROM {t}")
        stats.read += n + len(rows)
        stats.quarantined += len(rows)
        parts.append(t)
    _union(engine, table, parts)
    return stats


def load_parquet(engine: Engine, table: str, files: list[tuple[int, FileInfo]]) -> LoadStats:
    """Load Parquet files (typed); a file that cannot be read is quarantined as one record."""
    stats = LoadStats()
    parts = []
    for file_id, info in files:
        _register_fs(engine, info.url)
        t = engine.fresh("pq")
        try:
            engine.run(
                f"CREATE TABLE {t} AS SELECT {file_id}::INTEGER AS _src,"
                f" file_row_number + 1 AS _pos, * EXCLUDE (file_row_number)"
                f" FROM read_parquet({lit(info.url)}, file_row_number = true)"
            )
        except Exception as e:  # corrupt or truncated file: one quarantine record for it
            msg = str(e).splitlines()[0]
            _quarantine_rows(engine, [(file_id, 0, "file", f"unreadable Parquet file: {msg}", None)])
            stats.read += 1
            stats.quarantined += 1
            continue
        stats.read += engine.one(f"SELECT count(*) FROM {t}")
        parts.append(t)
    _union(engine, table, parts)
    return stats


def _union(engine: Engine, table: str, parts: list[str]) -> None:
    if not parts:
        engine.run(f"CREATE TABLE {table} (_src INTEGER, _pos BIGINT)")
        return
    engine.run(
        f"CREATE TABLE {table} AS " + " UNION ALL BY NAME ".join(f"SELECT * FROM {p}" for p in parts)
    )
    for p in parts:
        engine.run(f"DROP TABLE {p}")
