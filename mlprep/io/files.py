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
from mlprep.io import json_strict
from mlprep.io.csv_records import read_csv_records
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


def _merged(a: dict, b: dict) -> dict:
    """Two leafified structures as one: every key of both; an object in one and a leaf in the
    other is a leaf (a choice, typed later)."""
    out = dict(a)
    for k, v in b.items():
        if k not in out:
            out[k] = v
        elif isinstance(out[k], dict) and isinstance(v, dict):
            out[k] = _merged(out[k], v)
        elif out[k] != v:
            out[k] = "JSON"
    return out


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


def _without_bom(text: str, first: str) -> str:
    """SQL: ``text`` without the U+FEFF a file saved "with BOM" starts with (``first``: SQL
    true on the file's first line): it is not part of the first record."""
    return f"CASE WHEN {first} THEN ltrim({text}, chr(65279)) ELSE {text} END"


def _lines_fast(engine: Engine, file_id: int, url: str, size: int, max_record_bytes: int) -> str | None:
    """The lines of a file, split by DuckDB's parallel CSV reader into ``(_src, _pos, txt)``.

    Exact only when the reader rejected nothing and its rows account for every byte of the file
    (the reader silently drops a line longer than its buffer, and may split one): then every
    line (blank ones too, as NULL) is a row in file order, so the row number is the line number.
    Returns None otherwise (invalid UTF-8, a long line, a stray delimiter byte): the exact
    splitter takes that file.
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
    rows, text_bytes = engine.rows(f"SELECT count(*), coalesce(sum(strlen(txt)), 0) FROM {t}")[0]
    # each row is its text plus one newline (the last line may lack it)
    whole = rows + text_bytes in (size, size + 1)
    if engine.one("SELECT count(*) FROM reject_errors") or not whole:
        engine.run(f"DROP TABLE {t}")
        return None
    # insertion order is preserved (DuckDB's default), so a fresh table's rowid is the line index
    engine.run(f"CREATE VIEW {t}_v AS SELECT {file_id}::INTEGER AS _src, rowid + 1 AS _pos, {_without_bom('txt', 'rowid = 0')} AS txt"
               f" FROM {t}")
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
            f" {_without_bom('rtrim(try(decode(raw)), chr(10))', 'line_no = 1')}"
            " FROM _lines"
        )
        engine.con.unregister("_lines")
        if progress:
            progress(pc.sum(pc.binary_length(batch.column(1))).as_py() or 0)
    rows = [(file_id, o.line_no, f"line {o.line_no}",
             f"record too large: {o.length} bytes > max_record_bytes {max_record_bytes}",
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
                f" AS j, coalesce(try(len(json_keys(txt)) > 0), FALSE) AS _x, FALSE AS _d FROM {lines}")
    leaf = _leafify(struct)
    # an object starts with '{' (after any white space): from_json would also take arrays
    j = f"CASE WHEN txt[1] = '{{' OR ltrim(txt)[1] = '{{' THEN try(from_json(txt, {lit(json.dumps(leaf))})) END"
    x = (f"CASE WHEN _c THEN FALSE ELSE coalesce(try({_key_checks(struct)}), FALSE) END")
    # a line written back exactly has each key once; others are checked for a key given twice
    d = (f"CASE WHEN _c THEN FALSE ELSE coalesce(try({_duplicate_checks(struct)}), FALSE) END")
    canonical = f"j IS NULL OR {_canonical(leaf, 'j')} = txt"
    return (f"SELECT _src, _pos, j, {x} AS _x, {d} AS _d FROM (SELECT _src, _pos, txt, j, {canonical} AS _c"
            f" FROM (SELECT _src, _pos, txt, {j} AS j FROM {lines}))")


def json_line_reason(text: str, detailed: bool = True, limits: json_strict.Limits | None = None) -> str:
    """Why a JSON line is not a record: not an object, not strict JSON (NaN, a duplicate key,
    too deep, too wide), or malformed (with the parser's message for the first
    ``DETAIL_LIMIT`` of a load: each costs a Python parse)."""
    limits = limits or json_strict.Limits()
    if json_strict.nesting_depth(text, limits.max_depth) > limits.max_depth:  # before a recursive parser meets it
        return json_strict.reason(text, limits) or "malformed JSON"
    try:
        value = json.loads(text)
    except ValueError as e:
        if not detailed:
            return "malformed JSON"
        return json_strict.reason(text, limits) or f"malformed JSON: {e}"  # e.g. NAN, which Python refuses
    if not isinstance(value, dict):
        return f"not a JSON object ({type(value).__name__})"
    return json_strict.reason(text, limits) or "malformed JSON"


def _screen(engine: Engine, lines: str, limits: json_strict.Limits) -> tuple[str, int]:
    """Quarantine lines that are not strict JSON records (before any structure is built from
    them); return a view of the others and how many went."""
    cand = engine.rows(f"SELECT _src, _pos, txt FROM {lines} WHERE {json_strict.suspect_sql(limits)}")
    rows = [(s, p, f"line {p}", why, t) for s, p, t in cand if (why := json_strict.reason(t, limits)) is not None]
    if not rows:
        return lines, 0
    _quarantine_rows(engine, rows)
    bad = _positions(engine, [(r[0], r[1]) for r in rows])
    kept = engine.fresh("strictlines")
    engine.run(f"CREATE VIEW {kept} AS SELECT * FROM {lines} l ANTI JOIN {bad} b USING (_src, _pos)")
    return kept, len(rows)


def _positions(engine: Engine, pairs: list[tuple[int, int]]) -> str:
    """A table of (_src, _pos)."""
    t = engine.fresh("positions")
    engine.register("_pairs", pa.table({"_src": pa.array([p[0] for p in pairs], pa.int32()),
                                        "_pos": pa.array([p[1] for p in pairs], pa.int64())}))
    engine.run(f"CREATE TABLE {t} AS SELECT * FROM _pairs")
    engine.con.unregister("_pairs")
    return t


def _duplicate_checks(struct: dict, text: str = "txt") -> str:
    """SQL true for JSON ``text`` with a key twice in one of the structure's objects."""
    conds = [f"len(json_keys({text})) <> len(list_distinct(json_keys({text})))"]
    for path, _ in _object_paths(struct)[1:]:
        k = f"json_keys({text}, {lit(path)})"
        conds.append(f"(json_type({text}, {lit(path)}) = 'OBJECT' AND len({k}) <> len(list_distinct({k})))")
    return " OR ".join(conds)


def _drop_duplicate_keys(engine: Engine, parsed: str, lines: str, limits: json_strict.Limits) -> int:
    """Quarantine records with a key given twice (which value would be meant?)."""
    if not engine.one(f"SELECT count(*) FROM {parsed} WHERE _d AND j IS NOT NULL"):
        return 0
    cand = engine.rows(f"SELECT _src, _pos, txt FROM {lines} SEMI JOIN (SELECT _src, _pos FROM {parsed}"
                       " WHERE _d AND j IS NOT NULL) USING (_src, _pos)")
    rows = [(s, p, f"line {p}", why, t) for s, p, t in cand if (why := json_strict.reason(t, limits)) is not None]
    _quarantine_rows(engine, rows)
    dups = _positions(engine, [(r[0], r[1]) for r in rows])
    engine.run(f"DELETE FROM {parsed} USING {dups} d WHERE {parsed}._src = d._src AND {parsed}._pos = d._pos")
    engine.run(f"DROP TABLE {dups}")
    return len(rows)


def _split_lines(engine: Engine, files: list[tuple[int, FileInfo]], max_record_bytes: int, stats: LoadStats,
                 progress: Callable[[int], None] | None) -> tuple[str | None, list[str]]:
    """Every file's lines in one view ``(_src, _pos, txt)`` (blank lines left out), and the
    tables behind it."""
    parts = []
    for file_id, info in files:
        if info.size == 0:
            stats.empty_files.append(info.url)
            continue
        t = _lines_fast(engine, file_id, info.url, info.size, max_record_bytes)
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
        return None, []
    lines = engine.fresh("alllines")
    engine.run(f"CREATE VIEW {lines} AS " + " UNION ALL ".join(
        # blank lines are not records; trim only lines that start with white space (cheap)
        f"SELECT _src, _pos, txt FROM {p} WHERE txt IS NOT NULL"
        f" AND (txt[1] NOT IN (' ', '\t', '\r') OR trim(txt, ' \t\r') <> '')" for _, p in parts))
    return lines, [t for t, _ in parts]


def _odd(parsed: str, lines: str) -> str:
    """SQL: lines that parse as objects, but not to the structure or with keys it lacks."""
    return (f"SELECT _src, _pos, l.txt FROM {parsed} p JOIN {lines} l USING (_src, _pos) WHERE (p._x OR p.j IS NULL)"
            " AND json_valid(l.txt) AND json_type(l.txt) = 'OBJECT'")


def _settle_structure(engine: Engine, lines: str, sample: dict) -> tuple[dict, list[str]]:
    """Parse every line with the ``sample``'s structure; the lines with keys or a shape it
    lacks (rare) are set apart and parsed again with it widened until it covers them. Returns
    the widened structure and the parsed tables: the common lines (parsed with the sample's
    narrow structure: a rare wide record does not make every row pay for its keys) and, if
    any, the set-apart ones."""
    common = engine.fresh("parsed")
    engine.run(f"CREATE TABLE {common} AS {_parse_sql(sample, lines)}")
    # the flags alone first: joining back to the lines reads all their text (~0.4 µs a line)
    if (not engine.one(f"SELECT count(*) FROM (SELECT 1 FROM {common} WHERE _x OR j IS NULL LIMIT 1)")
            or not engine.one(f"SELECT count(*) FROM ({_odd(common, lines)} LIMIT 1)")):
        return sample, [common]
    apart = engine.fresh("apartlines")
    engine.run(f"CREATE TABLE {apart} AS {_odd(common, lines)}")
    engine.run(f"DELETE FROM {common} USING {apart} a WHERE {common}._src = a._src AND {common}._pos = a._pos")
    struct, wide, odd = sample, engine.fresh("parsed"), f"SELECT * FROM {apart}"
    for _ in range(6):
        struct = _merged(struct, _leafify(_merge_structure(engine, f"SELECT txt FROM ({odd}) LIMIT 100000")))
        engine.run(f"CREATE OR REPLACE TABLE {wide} AS {_parse_sql(struct, apart)}")
        odd = _odd(wide, apart)
        if not engine.one(f"SELECT count(*) FROM ({odd} LIMIT 1)"):
            return struct, [common, wide]
    raise MlprepError("JSON structure did not settle after 6 passes")


def _quarantine_malformed(engine: Engine, parsed: str, lines: str, limits: json_strict.Limits) -> int:
    """Lines that are no JSON object: a precise message for the first DETAIL_LIMIT of them."""
    if not engine.one(f"SELECT count(*) FROM {parsed} WHERE j IS NULL"):
        return 0
    bad = engine.rows(f"SELECT _src, _pos, l.txt FROM {lines} l SEMI JOIN (SELECT _src, _pos FROM {parsed}"
                      " WHERE j IS NULL) USING (_src, _pos) ORDER BY _src, _pos")
    rows = [(s, p, f"line {p}", json_line_reason(t, i < DETAIL_LIMIT, limits), t.rstrip("\r\n"))
            for i, (s, p, t) in enumerate(bad)]
    _quarantine_rows(engine, rows)
    return len(rows)


def _leaf_types(engine: Engine, struct: dict, parsed: list[tuple[str, dict]],
                stats: LoadStats) -> dict[tuple[str, ...], str]:
    """The exact value type of every leaf over all records: each parsed table is scanned for
    the leaves of the structure it was parsed with."""
    bits: dict[tuple[str, ...], int] = {}
    for table, shape in parsed:
        leaves = _leaves(shape)
        if not leaves:
            continue
        if table != parsed[0][0] and engine.one(f"SELECT count(*) FROM {table}") <= PYTHON_TYPING_ROWS:
            _python_bits(engine, table, shape, bits)  # a few set-apart lines, maybe very wide
            continue
        got = engine.rows("SELECT " + ", ".join(_type_bits(_col(p)) for p in leaves) + f" FROM {table}")[0]
        for p, b in zip(leaves, got, strict=True):
            bits[p] = bits.get(p, 0) | (b or 0)
    types: dict[tuple[str, ...], str] = {}
    for p in _leaves(struct):
        fam = _family(bits.get(p))
        if len(fam) > 1:
            stats.choice_columns[".".join(p)] = sorted(_glue_type(t) for t in fam)
            types[p] = "JSON"
        else:
            types[p] = fam[0] if fam else "VARCHAR"
    return types


PYTHON_TYPING_ROWS = 50_000  # set-apart lines typed in Python: no per-column SQL (~5 ms a column)


def _json_bits(value: object) -> int:
    """``_type_bits`` of one parsed JSON value (numbers as the text decides: integers of more
    than 18 characters count as doubles)."""
    if value is None:
        return 0
    if isinstance(value, bool):
        return 8
    if isinstance(value, int):
        return 16 if len(str(value)) <= 18 else 32
    return {str: 1, dict: 2, list: 4, float: 32}[type(value)]


def _python_bits(engine: Engine, table: str, shape: dict, bits: dict[tuple[str, ...], int]) -> None:
    """OR into ``bits`` the JSON types of ``shape``'s leaves over the lines of ``table``."""
    for (text,) in engine.rows(f"SELECT to_json(j) FROM {table} WHERE j IS NOT NULL"):
        todo: list[tuple[dict, dict, tuple[str, ...]]] = [(json.loads(text), shape, ())]
        while todo:
            obj, node, path = todo.pop()
            for k, v in obj.items():
                sub = node.get(k)
                if isinstance(sub, dict) and isinstance(v, dict):
                    todo.append((v, sub, (*path, k)))
                elif sub is not None and not isinstance(sub, dict):
                    bits[(*path, k)] = bits.get((*path, k), 0) | _json_bits(v)


def _sql_type(node: dict | str, path: tuple[str, ...], types: dict[tuple[str, ...], str]) -> str:
    """The SQL type a typed column (or struct field) gets."""
    if isinstance(node, dict):
        return "STRUCT(" + ", ".join(f"{ident(k)} {_sql_type(v, (*path, k), types)}" for k, v in node.items()) + ")"
    t = types[path]
    return {"VARCHAR": "VARCHAR", "ARRAY": "JSON[]", "OBJECT": "JSON"}.get(t, t)


def _typed_columns(struct: dict, types: dict[tuple[str, ...], str], shape: dict) -> list[str]:
    """SQL select items: each top-level field of ``j`` (parsed with ``shape``) as its type in
    ``struct`` (objects as structs); a field ``shape`` lacks is a typed NULL."""
    def conv(p: tuple[str, ...], node: dict | str, here: dict | str | None) -> str:
        if here is None or isinstance(here, dict) != isinstance(node, dict):
            return f"NULL::{_sql_type(node, p, types)}"
        if isinstance(node, dict):
            items = [f"{ident(k)} := {conv((*p, k), v, here.get(k))}" for k, v in node.items()]
            # a missing or null object stays NULL rather than a struct of NULLs
            return f"CASE WHEN {_col(p)} IS NULL THEN NULL ELSE struct_pack({', '.join(items)}) END"
        t, c = types[p], _col(p)
        if t == "VARCHAR":
            return f"({c} ->> '$')"
        if t == "ARRAY":  # a list of JSON values: relationalize makes it a child table
            return f"CAST({c} AS JSON[])"
        if t in ("OBJECT", "JSON"):
            return c
        return f"CAST({c} AS {t})"

    return [f"{conv((k,), v, shape.get(k))} AS {ident(k)}" for k, v in struct.items()]


def load_jsonl(
    engine: Engine,
    table: str,
    files: list[tuple[int, FileInfo]],
    max_record_bytes: int,
    progress: Callable[[int], None] | None = None,
    limits: json_strict.Limits | None = None,
) -> LoadStats:
    """Load JSON-lines files into ``table`` (``_src``, ``_pos`` + one column per field)."""
    limits = limits or json_strict.Limits()
    stats = LoadStats()
    lines, parts = _split_lines(engine, files, max_record_bytes, stats, progress)
    if lines is None:
        engine.run(f"CREATE TABLE {table} (_src INTEGER, _pos BIGINT)")
        return stats
    lines, strict = _screen(engine, lines, limits)
    sample = _leafify(_merge_structure(engine, f"SELECT txt FROM {lines} WHERE json_valid(txt)"
                                               f" AND json_type(txt) = 'OBJECT' LIMIT {SAMPLE_ROWS}"))
    struct, tables = _settle_structure(engine, lines, sample)
    parsed = list(zip(tables, [sample, struct][: len(tables)], strict=True))
    stats.read += strict
    stats.quarantined += strict
    for t, _ in parsed:
        stats.read += engine.one(f"SELECT count(*) FROM {t}")
        stats.quarantined += _quarantine_malformed(engine, t, lines, limits)
        stats.quarantined += _drop_duplicate_keys(engine, t, lines, limits)
    for t in parts:
        engine.run(f"DROP TABLE {t} CASCADE")
    stats.bases += tables
    if not struct:  # objects without keys: records with no columns
        engine.run(f"CREATE VIEW {table} AS " + " UNION ALL ".join(
            f"SELECT _src, _pos FROM {t} WHERE j IS NOT NULL" for t in tables))
        return stats
    types = _leaf_types(engine, struct, parsed, stats)
    # a view: the conversion runs inside the job's first pipeline instead of as a copy here
    engine.run(f"CREATE VIEW {table} AS " + " UNION ALL ".join(
        f"SELECT _src, _pos, {', '.join(_typed_columns(struct, types, shape))} FROM {t} WHERE j IS NOT NULL"
        for t, shape in parsed))
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
    max_record_bytes: int = 1 << 20,
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
        try:  # RFC 4180 quoting, never sniffed away (a sniffed "no quoting" splits quoted commas)
            engine.run(
                f"CREATE TABLE {t} AS SELECT {file_id} AS _src,"
                f" row_number() OVER () AS _pos, * FROM read_csv({lit(info.url)}, all_varchar = true,"
                f" header = {lit(header)}, delim = {lit(delimiter)}, quote = '\"', escape = '\"',"
                " store_rejects = true, auto_detect = true, strict_mode = true, null_padding = false)"
            )
        except Exception as e:  # e.g. an unterminated quote fails the sniffer: read it record by record
            log.debug("DuckDB's CSV reader failed on %s: %s", info.url, e)
            engine.run(f"DROP TABLE IF EXISTS {t}")
            n, bad = _csv_exact(engine, t, file_id, info.url, delimiter, header, max_record_bytes)
            stats.read += n + bad
            stats.quarantined += bad
            parts.append(t)
            continue
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


def _csv_exact(engine: Engine, table: str, file_id: int, url: str, delimiter: str, header: bool,
               max_record_bytes: int) -> tuple[int, int]:
    """A CSV file read by Python's csv module, bad records quarantined at their first line.
    Returns (records loaded, records quarantined)."""
    recs = read_csv_records(url, delimiter, header, max_record_bytes)
    _quarantine_rows(engine, [(file_id, line, f"line {line}", reason, text) for line, reason, text in recs.bad])
    cols = {"_src": pa.array([file_id] * len(recs.good), pa.int32()),
            "_pos": pa.array(range(1, len(recs.good) + 1), pa.int64())}
    for i, name in enumerate(recs.names):
        cols[name] = pa.array([fields[i] for _, fields in recs.good], pa.string())
    engine.register("_csv_rows", pa.table(cols))
    engine.run(f"CREATE TABLE {table} AS SELECT * FROM _csv_rows")
    engine.con.unregister("_csv_rows")
    return len(recs.good), len(recs.bad)


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
