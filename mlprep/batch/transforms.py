"""Glue-style transforms over engine tables, each a function ``(ctx, relation, step) -> relation``.

Relations are DuckDB tables that carry lineage columns ``_src``/``_pos``. A transform that
removes rows says why: quarantined (bad data, with a reason), deduplicated or filtered; the
counts feed the run's row accounting, which always balances:
``read = written + quarantined + deduplicated + filtered``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mlprep.batch.config import (
    ApplyMapping,
    Dedupe,
    Derive,
    DropNullFields,
    Filter,
    Join,
    Relationalize,
    Require,
    ResolveChoice,
    duck_type,
)
from mlprep.duck import Engine, ident, lit
from mlprep.errors import MlprepError

LINEAGE = ("_src", "_pos")
CATEGORIES = ("quarantined", "deduplicated", "filtered")


@dataclass
class Relation:
    table: str
    origin: str  # the source whose rows these are (row accounting is per source)


@dataclass
class Context:
    engine: Engine
    relations: dict[str, Relation] = field(default_factory=dict)
    counts: dict[str, dict[str, int]] = field(default_factory=dict)  # origin -> category -> n
    notes: list[str] = field(default_factory=list)
    derived_reads: dict[str, int] = field(default_factory=dict)  # child relations: rows made

    def count(self, origin: str, category: str, n: int) -> None:
        c = self.counts.setdefault(origin, dict.fromkeys(CATEGORIES, 0))
        c[category] += n


class StepError(MlprepError):
    """A step cannot run on this data (e.g. a column it names does not exist)."""


def data_columns(engine: Engine, table: str) -> list[tuple[str, str]]:
    return [(n, t) for n, t in engine.columns(table) if n not in LINEAGE]


def _row_json(cols: list[str]) -> str:
    if not cols:
        return "NULL"
    return "to_json(struct_pack(" + ", ".join(f"{ident(c)} := {ident(c)}" for c in cols) + "))::VARCHAR"


def split(ctx: Context, rel: Relation, select: str, reason: str, category: str, stage: str,
          record_cols: list[str] | None = None) -> Relation:
    """Materialise ``select`` (which must yield lineage + data columns) with a ``reason``
    expression; rows with a non-null reason leave the relation, counted under ``category``
    (and written to quarantine when the category is 'quarantined')."""
    e = ctx.engine
    t = e.fresh("t")
    e.run(f"CREATE TABLE {t} AS SELECT *, {reason} AS _reason FROM ({select})")
    cols = [c for c, _ in data_columns(e, t) if c != "_reason"]
    dropped = e.one(f"SELECT count(*) FROM {t} WHERE _reason IS NOT NULL")
    if dropped:
        if category == "quarantined":
            rec = _row_json(record_cols if record_cols is not None else cols)
            e.run(
                f"INSERT INTO _quarantine SELECT _src, _pos, NULL, {lit(stage)}, _reason, {rec}"
                f" FROM {t} WHERE _reason IS NOT NULL"
            )
        ctx.count(rel.origin, category, dropped)
        out = e.fresh("t")
        e.run(f"CREATE TABLE {out} AS SELECT * EXCLUDE (_reason) FROM {t} WHERE _reason IS NULL")
        e.run(f"DROP TABLE {t}")
        return Relation(out, rel.origin)
    e.run(f"ALTER TABLE {t} DROP COLUMN _reason")
    return Relation(t, rel.origin)


def _replace(ctx: Context, rel: Relation, select: str) -> Relation:
    t = ctx.engine.fresh("t")
    ctx.engine.run(f"CREATE TABLE {t} AS {select}")
    return Relation(t, rel.origin)


def _first_reason(conds: list[tuple[str, str]]) -> str:
    """``CASE WHEN c1 THEN r1 WHEN c2 THEN r2 ... END`` (NULL when no condition holds)."""
    if not conds:
        return "NULL"
    return "CASE " + " ".join(f"WHEN {c} THEN {r}" for c, r in conds) + " END"


# ----------------------------------------------------------------------------------------------


def relationalize(ctx: Context, rel: Relation, step: Relationalize, out_name: str) -> Relation:
    """Flatten structs into ``a<sep>b`` columns; array columns move to child relations
    ``<output><sep><column>`` with ``id`` (the parent row's id), ``index`` (0-based) and ``val``
    (flattened too), and the parent keeps the id, as Glue's Relationalize does."""
    e, sep = ctx.engine, step.separator
    cols = data_columns(e, rel.table)
    sel: list[str] = []
    arrays: list[tuple[str, str]] = []

    def flat(expr: str, name: str, typ: str) -> None:
        if typ.startswith("STRUCT("):
            for sub, subtype in _struct_fields(e, expr, rel.table):
                flat(f"{expr}.{ident(sub)}", f"{name}{sep}{sub}", subtype)
        elif typ.endswith("[]") or (typ == "JSON" and _all_arrays(e, rel.table, expr)):
            arrays.append((name, expr))
            sel.append(f"CASE WHEN {expr} IS NULL THEN NULL ELSE (_src::BIGINT << 40) | _pos END AS {ident(name)}")
        else:
            sel.append(f"{expr} AS {ident(name)}")

    for c, t in cols:
        flat(ident(c), c, t)
    out = _replace(ctx, rel, f"SELECT _src, _pos, {', '.join(sel)} FROM {rel.table}")
    for name, expr in arrays:
        child = f"{out_name}{sep}{name}"
        t = e.fresh("t")
        elems = f"CAST({expr} AS JSON[])" if _type_of(e, rel.table, expr) == "JSON" else expr
        e.run(
            f"CREATE TABLE {t} AS SELECT _src, _pos, (_src::BIGINT << 40) | _pos AS id,"
            f" u.i - 1 AS {ident('index')}, u.v AS val FROM {rel.table},"
            f" LATERAL (SELECT unnest({elems}) AS v, generate_subscripts({elems}, 1) AS i) u"
            f" WHERE {expr} IS NOT NULL"
        )
        n = objects = 0
        if _type_of(e, t, "val") == "JSON":
            n, objects = e.rows(f"SELECT count(val), count(*) FILTER (WHERE json_type(val) = 'OBJECT') FROM {t}")[0]
        if n and n == objects:  # arrays of objects: elements become structs, flattened below
            shape = e.one(f"SELECT json_group_structure(val) FROM {t}")
            t2 = e.fresh("t")
            e.run(f"CREATE TABLE {t2} AS SELECT * REPLACE (from_json(val, {lit(shape)}) AS val) FROM {t}")
            e.run(f"DROP TABLE {t}")
            t = t2
        ctx.derived_reads[child] = e.one(f"SELECT count(*) FROM {t}")
        ctx.relations[child] = relationalize(ctx, Relation(t, child), Relationalize(input=child, separator=sep), child) \
            if any(ty.startswith("STRUCT(") for _, ty in data_columns(e, t)) else Relation(t, child)
    return out


def _struct_fields(e: Engine, expr: str, table: str) -> list[tuple[str, str]]:
    t = e.fresh("s")
    e.run(f"CREATE TEMP VIEW {t} AS SELECT unnest({expr}) FROM {table} LIMIT 0")
    cols = e.columns(t)
    e.run(f"DROP VIEW {t}")
    return cols


def _type_of(e: Engine, table: str, expr: str) -> str:
    return e.one(f"SELECT typeof({expr}) FROM {table} LIMIT 1") or ""


def _all_arrays(e: Engine, table: str, expr: str) -> bool:
    n, arr = e.rows(
        f"SELECT count({expr}), count(*) FILTER (WHERE json_type({expr}) = 'ARRAY') FROM {table}"
    )[0]
    return n > 0 and n == arr


def _value(e: Engine, table: str, col: str) -> tuple[str, str]:
    """(text expression, type) of a column; JSON choice columns yield their value as text."""
    types = dict(data_columns(e, table))
    if col not in types:
        raise StepError(f"column {col!r} not found (columns: {', '.join(types)})")
    c = ident(col)
    if types[col] == "JSON":
        return f"({c} ->> '$')", "JSON"
    return c, types[col]


_JSON_FAMILY = (
    "CASE json_type({c}) WHEN 'VARCHAR' THEN 'string' WHEN 'DOUBLE' THEN 'double'"
    " WHEN 'UBIGINT' THEN 'long' WHEN 'BIGINT' THEN 'long' WHEN 'BOOLEAN' THEN 'boolean'"
    " WHEN 'OBJECT' THEN 'struct' WHEN 'ARRAY' THEN 'array' END"
)


def _cast(text: str, source_type: str, target: str) -> str:
    if source_type == target:
        return text
    if target == "TIMESTAMP" and source_type in ("BIGINT", "INTEGER", "DOUBLE", "UBIGINT"):
        return f"try(to_timestamp({text})::TIMESTAMP)"  # epoch seconds
    return f"try_cast({text} AS {target})"


def resolve_choice(ctx: Context, rel: Relation, step: ResolveChoice, stage: str) -> Relation:
    """``cast:T`` casts every value (a failed cast quarantines the row); ``project:T`` keeps
    values of type T and nulls the others; ``make_cols`` splits into ``col_<type>`` columns."""
    e = ctx.engine
    types = dict(data_columns(e, rel.table))
    replace: dict[str, str] = {}
    extra: list[str] = []
    reasons: list[tuple[str, str]] = []
    for col, spec in step.specs.items():
        if col not in types:  # as in Glue: resolving a column that is not there does nothing
            ctx.notes.append(f"{stage}: column {col!r} not found; nothing to resolve")
            continue
        text, st = _value(e, rel.table, col)
        c = ident(col)
        action, _, tname = spec.partition(":")
        fam = _JSON_FAMILY.format(c=c) if st == "JSON" else lit(_family_of(st))
        if action == "cast":
            t = duck_type(tname, f"specs.{col}")
            expr = _cast(text, st if st != "JSON" else "VARCHAR", t)
            replace[col] = expr
            reasons.append((f"{c} IS NOT NULL AND {expr} IS NULL",
                            f"'{col}: cannot cast ' || {text} || ' to {tname}'"))
        elif action == "project":
            t = duck_type(tname, f"specs.{col}")
            want = _family_of(t)
            # JSON numbers are one kind of value here: project:double keeps 3 as well as 3.5
            ok = "('double', 'long')" if want in ("double", "long") else f"({lit(want)})"
            replace[col] = f"CASE WHEN {fam} IN {ok} THEN try_cast({text} AS {t}) END"
        else:  # make_cols: one column per type present
            present = [r[0] for r in e.rows(f"SELECT DISTINCT {fam} FROM {rel.table} WHERE {c} IS NOT NULL ORDER BY 1")]
            for fam_name in present:
                t = duck_type(fam_name if fam_name not in ("struct", "array") else "string", col)
                extra.append(f"CASE WHEN {fam} = {lit(fam_name)} THEN try_cast({text} AS {t}) END AS {ident(col + '_' + fam_name)}")
            replace[col] = ""
    sel = []
    for name in types:
        if name in replace:
            if replace[name]:
                sel.append(f"{replace[name]} AS {ident(name)}")
        else:
            sel.append(ident(name))
    sel += extra
    select = f"SELECT _src, _pos, {', '.join(sel)} FROM {rel.table}"
    if not reasons:
        return _replace(ctx, rel, select)
    # reasons are evaluated on the source values, so compute them in the same pass
    reason_sql = _first_reason(reasons)
    record = _row_json(list(types))
    t = e.fresh("t")
    e.run(f"CREATE TABLE {t} AS SELECT {', '.join(sel)}, _src, _pos, {reason_sql} AS _reason, "
          f"CASE WHEN {reason_sql} IS NOT NULL THEN {record} END AS _record FROM {rel.table}")
    return _finish_split(ctx, rel, t, "quarantined", stage)


def _finish_split(ctx: Context, rel: Relation, t: str, category: str, stage: str) -> Relation:
    e = ctx.engine
    dropped = e.one(f"SELECT count(*) FROM {t} WHERE _reason IS NOT NULL")
    if dropped:
        e.run(f"INSERT INTO _quarantine SELECT _src, _pos, NULL, {lit(stage)}, _reason, _record"
              f" FROM {t} WHERE _reason IS NOT NULL")
        ctx.count(rel.origin, category, dropped)
    out = e.fresh("t")
    e.run(f"CREATE TABLE {out} AS SELECT * EXCLUDE (_reason, _record) FROM {t} WHERE _reason IS NULL")
    e.run(f"DROP TABLE {t}")
    return Relation(out, rel.origin)


def _family_of(duck: str) -> str:
    if duck in ("DOUBLE", "FLOAT") or duck.startswith("DECIMAL"):
        return "double"
    if duck in ("BIGINT", "INTEGER", "SMALLINT", "TINYINT", "UBIGINT", "HUGEINT"):
        return "long"
    if duck == "BOOLEAN":
        return "boolean"
    return "string"


def apply_mapping(ctx: Context, rel: Relation, step: ApplyMapping, stage: str) -> Relation:
    """Rename and cast; only mapped columns are kept. A source column that does not exist maps
    to NULL (noted in the summary); a value that cannot be cast quarantines its row."""
    e = ctx.engine
    types = dict(data_columns(e, rel.table))
    sel, reasons = [], []
    for i, (src, _stype, dst, dtype_name) in enumerate(step.mappings):
        target = duck_type(dtype_name, f"{stage}.mappings[{i}]")
        expr_src, st = _resolve_path(e, rel.table, types, src)
        if expr_src is None:
            ctx.notes.append(f"{stage}: source column {src!r} not found; {dst!r} is NULL")
            sel.append(f"NULL::{target} AS {ident(dst)}")
            continue
        text = f"({expr_src} ->> '$')" if st == "JSON" else expr_src
        expr = _cast(text, "VARCHAR" if st == "JSON" else st, target)
        sel.append(f"{expr} AS {ident(dst)}")
        if expr != text:
            reasons.append((f"{expr_src} IS NOT NULL AND {expr} IS NULL",
                            f"'{src}: cannot cast ' || {text}::VARCHAR || ' to {dtype_name}'"))
    reason_sql = _first_reason(reasons)
    if not reasons:
        return _replace(ctx, rel, f"SELECT _src, _pos, {', '.join(sel)} FROM {rel.table}")
    t = e.fresh("t")
    e.run(f"CREATE TABLE {t} AS SELECT _src, _pos, {', '.join(sel)}, {reason_sql} AS _reason,"
          f" CASE WHEN {reason_sql} IS NOT NULL THEN {_row_json(list(types))} END AS _record"
          f" FROM {rel.table}")
    return _finish_split(ctx, rel, t, "quarantined", stage)


def _resolve_path(e: Engine, table: str, types: dict[str, str], path: str) -> tuple[str | None, str]:
    """A column, or a dotted path into struct columns (``device.os``)."""
    if path in types:
        return ident(path), types[path]
    parts = path.split(".")
    if parts[0] not in types:
        return None, ""
    expr, typ = ident(parts[0]), types[parts[0]]
    for p in parts[1:]:
        if not typ.startswith("STRUCT("):
            return None, ""
        fields = dict(_struct_fields(e, expr, table))
        if p not in fields:
            return None, ""
        expr, typ = f"{expr}.{ident(p)}", fields[p]
    return expr, typ


def require(ctx: Context, rel: Relation, step: Require, stage: str) -> Relation:
    types = dict(data_columns(ctx.engine, rel.table))
    conds = []
    for c in step.columns:
        if c not in types:
            conds.append(("TRUE", lit(f"missing required field {c} (column absent)")))
        else:
            conds.append((f"{ident(c)} IS NULL", lit(f"missing required field {c}")))
    return split(ctx, rel, f"SELECT * FROM {rel.table}", _first_reason(conds), "quarantined", stage)


def filter_rows(ctx: Context, rel: Relation, step: Filter, stage: str) -> Relation:
    reason = lit(step.reason or f"filter: {step.where}")
    return split(ctx, rel, f"SELECT * FROM {rel.table}",
                 f"CASE WHEN ({step.where}) IS TRUE THEN NULL ELSE {reason} END", "filtered", stage)


def dedupe(ctx: Context, rel: Relation, step: Dedupe, stage: str) -> Relation:
    types = dict(data_columns(ctx.engine, rel.table))
    for k in step.keys:
        if k not in types:
            raise StepError(f"{stage}: key column {k!r} not found (columns: {', '.join(types)})")
    desc = " DESC" if step.keep == "last" else ""
    order = [f"{o}{desc}" for o in step.order_by] + [f"_src{desc}", f"_pos{desc}"]
    keys = ", ".join(ident(k) for k in step.keys)
    any_null = " OR ".join(f"{ident(k)} IS NULL" for k in step.keys)
    # rows with a NULL key are never duplicates of each other
    rn = f"CASE WHEN {any_null} THEN 1 ELSE row_number() OVER (PARTITION BY {keys} ORDER BY {', '.join(order)}) END"
    t = ctx.engine.fresh("t")
    ctx.engine.run(f"CREATE TABLE {t} AS SELECT *, {rn} AS _rn FROM {rel.table}")
    out = split(ctx, rel, f"SELECT * EXCLUDE (_rn), _rn FROM {t}",
                f"CASE WHEN _rn > 1 THEN 'duplicate of ' || {lit(', '.join(step.keys))} END",
                "deduplicated", stage)
    ctx.engine.run(f"DROP TABLE {t}")
    ctx.engine.run(f"ALTER TABLE {out.table} DROP COLUMN _rn")
    return out


def join(ctx: Context, left: Relation, right: Relation, step: Join, stage: str) -> Relation:
    e = ctx.engine
    lt, rt = dict(data_columns(e, left.table)), dict(data_columns(e, right.table))
    for k in step.on:
        for side, types in (("left", lt), ("right", rt)):
            if k not in types:
                raise StepError(f"{stage}: join key {k!r} not in {side} relation")
    keys = ", ".join(ident(k) for k in step.on)
    dups = e.one(f"SELECT count(*) FROM (SELECT {keys} FROM {right.table} GROUP BY ALL HAVING count(*) > 1)")
    if dups:
        raise StepError(
            f"{stage}: right relation {step.right!r} has {dups} duplicate key(s) on ({', '.join(step.on)});"
            " joins are many-to-one (dedupe the right side first)"
        )
    rcols = []
    for c in rt:
        if c in step.on:
            continue
        name = c if c not in lt else f"{c}_{step.right}"
        rcols.append(f"r.{ident(c)} AS {ident(name)}")
    on = " AND ".join(f"l.{ident(k)} = r.{ident(k)}" for k in step.on)
    sel = ", ".join(["l.*", *rcols])
    select = (f"SELECT {sel}, r._m AS _m FROM {left.table} l LEFT JOIN"
              f" (SELECT *, TRUE AS _m FROM {right.table}) r ON {on}")
    if step.how == "left":
        return _replace(ctx, left, f"SELECT * EXCLUDE (_m) FROM ({select})")
    out = split(ctx, left, select, f"CASE WHEN _m IS NULL THEN {lit('no match in ' + step.right)} END",
                "filtered", stage)
    e.run(f"ALTER TABLE {out.table} DROP COLUMN _m")
    return out


def derive(ctx: Context, rel: Relation, step: Derive, stage: str) -> Relation:
    types = dict(data_columns(ctx.engine, rel.table))
    replace = {k: v for k, v in step.columns.items() if k in types}
    new = {k: v for k, v in step.columns.items() if k not in types}
    sel = ["*" if not replace else "* REPLACE (" + ", ".join(f"({v}) AS {ident(k)}" for k, v in replace.items()) + ")"]
    sel += [f"({v}) AS {ident(k)}" for k, v in new.items()]
    try:
        return _replace(ctx, rel, f"SELECT {', '.join(sel)} FROM {rel.table}")
    except Exception as e:
        raise StepError(f"{stage}: {str(e).splitlines()[0]}") from e


def drop_null_fields(ctx: Context, rel: Relation, step: DropNullFields, stage: str) -> Relation:
    cols = [c for c, _ in data_columns(ctx.engine, rel.table)]
    if not cols:
        return rel
    counts = ctx.engine.rows("SELECT " + ", ".join(f"count({ident(c)})" for c in cols) + f" FROM {rel.table}")[0]
    keep = [c for c, n in zip(cols, counts, strict=True) if n > 0]
    dropped = [c for c, n in zip(cols, counts, strict=True) if n == 0]
    if dropped:
        ctx.notes.append(f"{stage}: dropped all-null columns {', '.join(dropped)}")
    return _replace(ctx, rel, f"SELECT _src, _pos{''.join(', ' + ident(c) for c in keep)} FROM {rel.table}")
