"""Glue-style transforms over engine relations, each a function ``(ctx, relation, step) -> relation``.

Relations are lazy: a transform usually makes a DuckDB *view* over its input, so a chain of
row-wise steps runs as one pipeline, the way a hand-written query would. Rows a step rejects are
not removed at once but *marked*: ``_reason`` (why), ``_cat`` (quarantined, deduplicated or
filtered), ``_stage`` (which step) and ``_record`` (the row as JSON, for quarantine). Later steps
leave marked rows alone. Only a step that must see exactly the live rows (a window function, a
column statistic, an array explode) or the end of the job *materializes* the chain: the marked
rows are then counted (and quarantined) and dropped. Counts feed the row accounting, which always
balances: ``read = written + quarantined + deduplicated + filtered``.

Every row carries its lineage, ``_src`` (file id) and ``_pos`` (line, record or row number).
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
    engine_type,
)
from mlprep.batch.engines import LINEAGE, MARKS, WINDOW, StepError, Tally, has_window
from mlprep.duck import Engine, ident, lit

TEMPORAL = ("TIMESTAMP", "DATE", "TIMESTAMPTZ", "TIMESTAMP WITH TIME ZONE")


_DUCK_TYPES = {"string": "VARCHAR", "int": "INTEGER", "bigint": "BIGINT", "smallint": "SMALLINT",
               "tinyint": "TINYINT", "double": "DOUBLE", "float": "FLOAT", "boolean": "BOOLEAN",
               "timestamp": "TIMESTAMP", "date": "DATE"}


def duck_type(name: str, where: str) -> str:
    """DuckDB's type for a Glue type name."""
    return engine_type(_DUCK_TYPES, name, where)


@dataclass
class Relation:
    table: str  # a table or a view (possibly with marked rows)
    origin: str  # the source whose rows these are (row accounting is per source)
    bases: frozenset[str] = frozenset()  # the tables it reads, to drop them when unused
    pending: bool = False  # may hold marked rows not yet counted (materialize() counts them)


@dataclass
class Context:
    engine: Engine
    tally: Tally = field(default_factory=Tally)  # counts, notes and child reads for the accounting
    relations: dict[str, Relation] = field(default_factory=dict)
    years: tuple[int, int] = (1900, 2200)  # timestamps and dates outside are quarantined
    tables: set[str] = field(default_factory=set)  # tables this context created

    def count(self, origin: str, category: str, n: int) -> None:
        self.tally.count(origin, category, n)

    def note(self, text: str) -> None:
        self.tally.notes.append(text)

    def gc(self) -> None:
        """Drop the tables no relation reads any more (keeps memory near one copy of the data)."""
        live = set().union(*(r.bases for r in self.relations.values())) if self.relations else set()
        for t in sorted(self.tables - live):
            self.engine.run(f"DROP TABLE IF EXISTS {t} CASCADE")
            self.tables.discard(t)


def data_columns(engine: Engine, table: str) -> list[tuple[str, str]]:
    return [(n, t) for n, t in engine.columns(table) if n not in LINEAGE and n not in MARKS]


def source(ctx: Context, table: str, origin: str, bases: list[str] | None = None) -> Relation:
    """A loaded source table (or a view over ``bases``) as a relation with no marked rows."""
    v = ctx.engine.fresh("v")
    bases = bases or [table]
    ctx.tables.update(bases)
    ctx.engine.run(f"CREATE VIEW {v} AS SELECT *, NULL::VARCHAR AS _reason, NULL::VARCHAR AS _cat,"
                   f" NULL::VARCHAR AS _stage, NULL::VARCHAR AS _record FROM {table}")
    return Relation(v, origin, frozenset(bases))


def _row_json(cols: list[str]) -> str:
    if not cols:
        return "NULL"
    return "to_json(struct_pack(" + ", ".join(f"{ident(c)} := {ident(c)}" for c in cols) + "))::VARCHAR"


def _view(ctx: Context, rel: Relation, cols: list[str], reason: str | None = None,
          category: str = "quarantined", stage: str = "", record_cols: list[str] | None = None,
          source_sql: str | None = None) -> Relation:
    """A view selecting ``cols`` (SQL over the input's columns); rows for which ``reason`` (SQL)
    is not NULL become marked, unless an earlier step marked them already."""
    e = ctx.engine
    src = source_sql or rel.table
    lineage = "_src, _pos"
    v = e.fresh("v")
    if reason is None:
        e.run(f"CREATE VIEW {v} AS SELECT {', '.join(cols)}, {lineage}, {', '.join(MARKS)} FROM {src}")
        return Relation(v, rel.origin, rel.bases, rel.pending)
    rec = _row_json(record_cols if record_cols is not None else [c for c, _ in data_columns(e, rel.table)])
    new = "_reason IS NULL AND _rn IS NOT NULL"
    e.run(
        f"CREATE VIEW {v} AS SELECT {', '.join(cols)}, {lineage}, coalesce(_reason, _rn) AS _reason,"
        f" CASE WHEN {new} THEN {lit(category)} ELSE _cat END AS _cat,"
        f" CASE WHEN {new} THEN {lit(stage)} ELSE _stage END AS _stage,"
        f" CASE WHEN {new} AND {lit(category)} = 'quarantined' THEN {rec} ELSE _record END AS _record"
        f" FROM (SELECT *, ({reason})::VARCHAR AS _rn FROM {src})"
    )
    return Relation(v, rel.origin, rel.bases, True)


def materialize(ctx: Context, rel: Relation) -> Relation:
    """Run the chain into a table; count (and quarantine) the marked rows; continue with the live
    rows only."""
    e = ctx.engine
    t = e.fresh("m")
    try:
        e.run(f"CREATE TABLE {t} AS SELECT * FROM {rel.table}")
    except Exception as err:
        raise StepError(f"while computing {rel.origin}: {str(err).splitlines()[0]}") from err
    ctx.tables.add(t)
    for cat, n in e.rows(f"SELECT _cat, count(*) FROM {t} WHERE _reason IS NOT NULL GROUP BY 1"):
        ctx.count(rel.origin, cat, n)
    e.run(f"INSERT INTO _quarantine SELECT _src, _pos, NULL, _stage, _reason, _record FROM {t}"
          " WHERE _cat = 'quarantined'")
    v = e.fresh("v")
    e.run(f"CREATE VIEW {v} AS SELECT * EXCLUDE ({', '.join(MARKS)}), NULL::VARCHAR AS _reason,"
          " NULL::VARCHAR AS _cat, NULL::VARCHAR AS _stage, NULL::VARCHAR AS _record"
          f" FROM {t} WHERE _reason IS NULL")
    return Relation(v, rel.origin, frozenset({t}))


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
        elif typ.endswith("[]"):  # JSON sources load arrays as JSON[] (a scan here cost ~1 s at 5M)
            arrays.append((name, expr))
            sel.append(f"CASE WHEN {expr} IS NULL THEN NULL ELSE (_src::BIGINT << 40) | _pos END AS {ident(name)}")
        else:
            sel.append(f"{expr} AS {ident(name)}")

    for c, t in cols:
        flat(ident(c), c, t)
    if arrays:  # children are made from live rows only
        rel = materialize(ctx, rel)
    out = _view(ctx, rel, sel)
    for name, expr in arrays:
        child = f"{out_name}{sep}{name}"
        t = e.fresh("c")
        elems = expr
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
            t2 = e.fresh("c")
            e.run(f"CREATE TABLE {t2} AS SELECT * REPLACE (from_json(val, {lit(shape)}) AS val) FROM {t}")
            e.run(f"DROP TABLE {t}")
            t = t2
        ctx.tally.derived_reads[child] = e.one(f"SELECT count(*) FROM {t}")
        crel = source(ctx, t, child)
        if any(ty.startswith("STRUCT(") for _, ty in data_columns(e, t)):
            crel = relationalize(ctx, crel, Relationalize(input=child, separator=sep), child)
        ctx.relations[child] = crel
    return out


def _struct_fields(e: Engine, expr: str, table: str) -> list[tuple[str, str]]:
    t = e.fresh("s")
    e.run(f"CREATE TEMP VIEW {t} AS SELECT unnest({expr}) FROM {table} LIMIT 0")
    cols = e.columns(t)
    e.run(f"DROP VIEW {t}")
    return cols


def _type_of(e: Engine, table: str, expr: str) -> str:
    return e.one(f"SELECT typeof({expr}) FROM {table} LIMIT 1") or ""


_JSON_FAMILY = (
    "CASE json_type({c}) WHEN 'VARCHAR' THEN 'string' WHEN 'DOUBLE' THEN 'double'"
    " WHEN 'UBIGINT' THEN 'long' WHEN 'BIGINT' THEN 'long' WHEN 'BOOLEAN' THEN 'boolean'"
    " WHEN 'OBJECT' THEN 'struct' WHEN 'ARRAY' THEN 'array' END"
)


def _cast(text: str, source_type: str, target: str, years: tuple[int, int] | None = None) -> str:
    if source_type == target:
        return text
    if target == "TIMESTAMP" and source_type in ("BIGINT", "INTEGER", "DOUBLE", "UBIGINT"):
        cast = f"try(to_timestamp({text})::TIMESTAMP)"  # epoch seconds
    else:
        cast = f"try_cast({text} AS {target})"
    if years and target in TEMPORAL:  # year 1 or 99999 is a typo, not a time: no value at all
        return f"CASE WHEN year({cast}) BETWEEN {int(years[0])} AND {int(years[1])} THEN {cast} END"
    if target in ("DOUBLE", "FLOAT", "REAL"):  # the text "NaN" or "1e999" is no number to add up
        return f"CASE WHEN isfinite({cast}) THEN {cast} END"
    return cast


def _cast_reason(name: str, text: str, source_type: str, target: str, type_name: str,
                 years: tuple[int, int]) -> str:
    """SQL: why ``text`` did not cast (a value that is no such type, or a time outside the years)."""
    failed = f"{lit(name + ': cannot cast ')} || {text}::VARCHAR || {lit(' to ' + type_name)}"
    if target not in TEMPORAL:
        return failed
    outside = f"{lit(name + ': ')} || {text}::VARCHAR || {lit(f' is outside the years {years[0]}-{years[1]}')}"
    return f"CASE WHEN {_cast(text, source_type, target)} IS NULL THEN {failed} ELSE {outside} END"


def _family_of(duck: str) -> str:
    if duck in ("DOUBLE", "FLOAT") or duck.startswith("DECIMAL"):
        return "double"
    if duck in ("BIGINT", "INTEGER", "SMALLINT", "TINYINT", "UBIGINT", "HUGEINT"):
        return "long"
    if duck == "BOOLEAN":
        return "boolean"
    return "string"


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
            ctx.note(f"{stage}: column {col!r} not found; nothing to resolve")
            continue
        c, st = ident(col), types[col]
        text = f"({c} ->> '$')" if st == "JSON" else c
        action, _, tname = spec.partition(":")
        fam = _JSON_FAMILY.format(c=c) if st == "JSON" else lit(_family_of(st))
        if action == "cast":
            t = duck_type(tname, f"specs.{col}")
            source_type = st if st != "JSON" else "VARCHAR"
            expr = _cast(text, source_type, t, ctx.years)
            replace[col] = expr
            reasons.append((f"{c} IS NOT NULL AND {expr} IS NULL",
                            _cast_reason(col, text, source_type, t, tname, ctx.years)))
        elif action == "project":
            t = duck_type(tname, f"specs.{col}")
            want = _family_of(t)
            # JSON numbers are one kind of value here: project:double keeps 3 as well as 3.5
            ok = "('double', 'long')" if want in ("double", "long") else f"({lit(want)})"
            replace[col] = f"CASE WHEN {fam} IN {ok} THEN try_cast({text} AS {t}) END"
        else:  # make_cols: one column per type present
            present = [r[0] for r in e.rows(
                f"SELECT DISTINCT {fam} FROM {rel.table} WHERE {c} IS NOT NULL AND _reason IS NULL ORDER BY 1")]
            for fam_name in present:
                t = duck_type(fam_name if fam_name not in ("struct", "array") else "string", col)
                extra.append(f"CASE WHEN {fam} = {lit(fam_name)} THEN try_cast({text} AS {t}) END"
                             f" AS {ident(col + '_' + fam_name)}")
            replace[col] = ""
    sel = [f"{replace[n]} AS {ident(n)}" if n in replace else ident(n) for n in types if replace.get(n) != ""]
    return _view(ctx, rel, sel + extra, _first_reason(reasons) if reasons else None, "quarantined", stage)


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
            ctx.note(f"{stage}: source column {src!r} not found; {dst!r} is NULL")
            sel.append(f"NULL::{target} AS {ident(dst)}")
            continue
        text = f"({expr_src} ->> '$')" if st == "JSON" else expr_src
        source_type = "VARCHAR" if st == "JSON" else st
        expr = _cast(text, source_type, target, ctx.years)
        sel.append(f"{expr} AS {ident(dst)}")
        if expr != text:
            reasons.append((f"{expr_src} IS NOT NULL AND {expr} IS NULL",
                            _cast_reason(src, text, source_type, target, dtype_name, ctx.years)))
    return _view(ctx, rel, sel, _first_reason(reasons) if reasons else None, "quarantined", stage)


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


def _all_cols(e: Engine, rel: Relation) -> list[str]:
    return [ident(c) for c, _ in data_columns(e, rel.table)]


def require(ctx: Context, rel: Relation, step: Require, stage: str) -> Relation:
    types = dict(data_columns(ctx.engine, rel.table))
    conds = []
    for c in step.columns:
        if c not in types:
            conds.append(("TRUE", lit(f"missing required field {c} (column absent)")))
        else:
            conds.append((f"{ident(c)} IS NULL", lit(f"missing required field {c}")))
    return _view(ctx, rel, _all_cols(ctx.engine, rel), _first_reason(conds), "quarantined", stage)


def filter_rows(ctx: Context, rel: Relation, step: Filter, stage: str) -> Relation:
    reason = lit(step.reason or f"filter: {step.where}")
    try:
        return _view(ctx, rel, _all_cols(ctx.engine, rel),
                     f"CASE WHEN ({step.where}) IS TRUE THEN NULL ELSE {reason} END", "filtered", stage)
    except Exception as e:
        raise StepError(f"{stage}.where: {str(e).splitlines()[0]}") from e


def dedupe(ctx: Context, rel: Relation, step: Dedupe, stage: str) -> Relation:
    """Keep one row per key: the first (or last) by ``order_by``, then source order. Rows with
    a NULL key are never duplicates of each other."""
    types = dict(data_columns(ctx.engine, rel.table))
    for k in step.keys:
        if k not in types:
            raise StepError(f"{stage}: key column {k!r} not found (columns: {', '.join(types)})")
    # rank a narrow projection (keys, order, lineage) of the live rows, then mark the losers by a
    # join on lineage: measured 3x cheaper at 5M rows than a window carrying every column
    rel = materialize(ctx, rel)
    desc = " DESC" if step.keep == "last" else ""
    order = [f"{o}{desc}" for o in step.order_by] + [f"_src{desc}", f"_pos{desc}"]
    keys = ", ".join(ident(k) for k in step.keys)
    not_null = " AND ".join(f"{ident(k)} IS NOT NULL" for k in step.keys)
    # only keys seen twice are ranked: a hash count of the keys is cheaper than sorting every row
    # (30M rows, 1 GB limit: 11 CPU-s instead of 18-22; 5M: 0.9 instead of 1.3)
    repeated = f"SELECT {keys} FROM {rel.table} WHERE {not_null} GROUP BY ALL HAVING count(*) > 1"
    dups = (f"SELECT _src, _pos, TRUE AS _dup FROM (SELECT _src, _pos, row_number() OVER"
            f" (PARTITION BY {keys} ORDER BY {', '.join(order)}) AS _n FROM {rel.table}"
            f" SEMI JOIN ({repeated}) USING ({keys}) WHERE {not_null}) WHERE _n > 1")
    src = f"(SELECT r.*, d._dup FROM {rel.table} r LEFT JOIN ({dups}) d USING (_src, _pos))"
    reason = f"CASE WHEN _dup THEN {lit('duplicate of ' + ', '.join(step.keys))} END"
    return _view(ctx, rel, _all_cols(ctx.engine, rel), reason, "deduplicated", stage, source_sql=src)


def join(ctx: Context, left: Relation, right: Relation, step: Join, stage: str) -> Relation:
    e = ctx.engine
    lt, rt = dict(data_columns(e, left.table)), dict(data_columns(e, right.table))
    for k in step.on:
        for side, types in (("left", lt), ("right", rt)):
            if k not in types:
                raise StepError(f"{stage}: join key {k!r} not in {side} relation")
    keys = ", ".join(ident(k) for k in step.on)
    dups = e.one(f"SELECT count(*) FROM (SELECT {keys} FROM {right.table} WHERE _reason IS NULL"
                 " GROUP BY ALL HAVING count(*) > 1)")
    if dups:
        raise StepError(
            f"{stage}: right relation {step.right!r} has {dups} duplicate key(s) on ({', '.join(step.on)});"
            " joins are many-to-one (dedupe the right side first)"
        )
    right_cols = [(c, c if c not in lt else f"{c}_{step.right}") for c in rt if c not in step.on]
    on = " AND ".join(f"l.{ident(k)} = r.{ident(k)}" for k in step.on)
    picked = "".join(f", {ident(c)} AS {ident(n)}" for c, n in right_cols)
    joined = (f"(SELECT l.*, r._m{''.join(f', r.{ident(n)}' for _, n in right_cols)}"
              f" FROM {left.table} l LEFT JOIN (SELECT {keys}{picked}, TRUE AS _m FROM {right.table}"
              f" WHERE _reason IS NULL) r ON {on})")
    names = [ident(c) for c in lt] + [ident(n) for _, n in right_cols]
    rel = Relation(left.table, left.origin, left.bases | right.bases, left.pending)
    if step.how == "left":
        return _view(ctx, rel, names, source_sql=joined)
    return _view(ctx, rel, names, f"CASE WHEN _m IS NULL THEN {lit('no match in ' + step.right)} END",
                 "filtered", stage, source_sql=joined)




def live_windows(expr: str) -> str:
    """Make every window in ``expr`` see live rows only, by partitioning on liveness first:
    ``avg(x) OVER (PARTITION BY u)`` -> ``avg(x) OVER (PARTITION BY (_reason IS NULL), u)``.
    Rows marked by earlier steps then never enter a live row's window, without materializing."""
    return WINDOW.sub(lambda m: "OVER (PARTITION BY (_reason IS NULL)" + (", " if m.group(1) else " "), expr)


def derive(ctx: Context, rel: Relation, step: Derive, stage: str) -> Relation:
    if any(has_window(v) for v in step.columns.values()):
        # measured: two shorter pipelines beat one with stacked windows (5M rows: 4.0 s vs 5.4 s)
        rel = materialize(ctx, rel)
    types = dict(data_columns(ctx.engine, rel.table))
    exprs = {k: live_windows(v) for k, v in step.columns.items()}
    sel = [f"({exprs[c]}) AS {ident(c)}" if c in exprs else ident(c) for c in types]
    sel += [f"({v}) AS {ident(k)}" for k, v in exprs.items() if k not in types]
    try:
        return _view(ctx, rel, sel)
    except Exception as e:
        raise StepError(f"{stage}: {str(e).splitlines()[0]}") from e


def drop_null_fields(ctx: Context, rel: Relation, step: DropNullFields, stage: str) -> Relation:
    rel = materialize(ctx, rel)
    cols = [c for c, _ in data_columns(ctx.engine, rel.table)]
    if not cols:
        return rel
    counts = ctx.engine.rows("SELECT " + ", ".join(f"count({ident(c)})" for c in cols) + f" FROM {rel.table}")[0]
    keep = [c for c, n in zip(cols, counts, strict=True) if n > 0]
    dropped = [c for c, n in zip(cols, counts, strict=True) if n == 0]
    if dropped:
        ctx.note(f"{stage}: dropped all-null columns {', '.join(dropped)}")
    return _view(ctx, rel, [ident(c) for c in keep])
