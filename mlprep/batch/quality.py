"""Data-quality rules (parsed by ``mlprep.batch.dqdl``) evaluated in the embedded engine: aggregate
rules in one scan of the table, the others one query each."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from mlprep.batch.dqdl import Constraint, Outcome, Rule
from mlprep.duck import Engine, ident, lit
from mlprep.errors import ConfigError


def row_condition(c: Constraint, expr: str) -> str:
    """A per-row SQL condition (NULL values do not pass)."""
    if c.kind == "op":
        cond = f"{expr} {'<>' if c.op == '!=' else c.op} {lit(c.values[0])}"
    elif c.kind == "between":
        cond = f"{expr} BETWEEN {lit(c.values[0])} AND {lit(c.values[1])}"
    elif c.kind == "in":
        cond = f"{expr} IN ({', '.join(lit(v) for v in c.values)})"
    else:
        cond = f"regexp_full_match({expr}::VARCHAR, {lit(c.values[0])})"
    return f"coalesce({'NOT ' if c.negate else ''}({cond}), FALSE)"


def evaluate(engine: Engine, table: str, rules: list[Rule], severity: str,
             relations: dict[str, str], now: dt.datetime | None = None) -> list[Outcome]:
    """Evaluate rules over ``table``; ``relations`` maps names to tables (ReferentialIntegrity,
    CustomSql's ``primary`` is ``table``)."""
    cols = {r[0] for r in engine.rows(f"DESCRIBE {table}")}
    now = now or dt.datetime.now(dt.UTC).replace(tzinfo=None)
    # rules that are one aggregate each are computed together, in one scan of the table
    exprs = {i: _aggregate(r, now) for i, r in enumerate(rules)
             if r.type in _AGGREGATE and (not r.args or r.args[0] in cols)}
    values: dict[int, Any] = {}
    if exprs:
        try:
            row = engine.rows("SELECT " + ", ".join(exprs.values()) + f" FROM {table}")[0]
            values = dict(zip(exprs, row, strict=True))
        except Exception:
            values = {}  # one bad expression: evaluate them one by one for precise messages
    out = []
    for i, r in enumerate(rules):
        try:
            if i in values:
                out.append(_judge(r, values[i], severity))
            else:
                out.append(_eval(engine, table, cols, r, severity, relations, now))
        except Exception as e:  # a rule that cannot run fails, with the reason
            out.append(Outcome(r.text, r.type, False, None, f"could not evaluate: {str(e).splitlines()[0]}", severity))
    return out


_AGGREGATE = {"RowCount", "IsComplete", "Completeness", "IsUnique", "Uniqueness", "DistinctValuesCount",
              "Mean", "Sum", "StandardDeviation", "ColumnValues", "ColumnLength", "DataFreshness"}


def _aggregate(r: Rule, now: dt.datetime) -> str:
    """The single SQL aggregate whose value the rule judges."""
    c = ident(r.args[0]) if r.args else ""
    if r.type == "RowCount":
        return "count(*)"
    if r.type in ("IsComplete", "Completeness"):
        return f"coalesce(count({c}) / nullif(count(*), 0), 1.0)"
    if r.type in ("IsUnique", "Uniqueness"):
        return f"coalesce(count(DISTINCT {c}) / nullif(count({c}), 0), 1.0)"
    if r.type in ("DistinctValuesCount", "Mean", "Sum", "StandardDeviation"):
        return {"DistinctValuesCount": f"count(DISTINCT {c})", "Mean": f"avg({c})::DOUBLE",
                "Sum": f"sum({c})::DOUBLE", "StandardDeviation": f"stddev_samp({c})::DOUBLE"}[r.type]
    if r.type == "ColumnLength":
        expr = f"length({c}::VARCHAR)"
    elif r.type == "DataFreshness":  # age in hours
        expr = f"(epoch({lit(now.isoformat(sep=' '))}::TIMESTAMP) - epoch({c}::TIMESTAMP)) / 3600.0"
    else:
        expr = c
    return f"coalesce(avg(CASE WHEN {row_condition(r.constraint, expr)} THEN 1.0 ELSE 0.0 END), 1.0)"


def _judge(r: Rule, v: Any, severity: str) -> Outcome:
    if isinstance(v, float):
        v = round(v, 6)
    if r.type in ("IsComplete", "IsUnique"):
        passed = v == 1.0
    elif r.type in ("ColumnValues", "ColumnLength", "DataFreshness"):
        passed = r.threshold.check(v) if r.threshold else v == 1.0
        if not passed:
            return Outcome(r.text, r.type, False, v, f"{v:.4%} of rows pass {r.constraint.text()}", severity)
    else:
        passed = r.constraint.check(v)
    return Outcome(r.text, r.type, bool(passed), v, "passed" if passed else f"metric {v} fails", severity)


def _eval(engine: Engine, table: str, cols: set[str], r: Rule, severity: str,
          relations: dict[str, str], now: dt.datetime) -> Outcome:
    def done(metric: Any, passed: bool, msg: str = "") -> Outcome:
        if isinstance(metric, float):
            metric = round(metric, 6)
        return Outcome(r.text, r.type, bool(passed), metric, msg or ("passed" if passed else f"metric {metric} fails"), severity)

    col = r.args[0] if r.args else None
    if col is not None and r.type not in ("CustomSql", "ColumnExists") and col not in cols:
        return done(None, False, f"column {col!r} does not exist")
    c = ident(col) if col else ""
    t = table
    if r.type == "ColumnExists":
        return done(None, col in cols, "" if col in cols else f"column {col!r} does not exist")
    if r.type in _AGGREGATE:
        return _judge(r, engine.one(f"SELECT {_aggregate(r, now)} FROM {t}"), severity)
    if r.type == "ReferentialIntegrity":
        ref_rel, _, ref_col = r.args[1].partition(".")
        if ref_rel not in relations:
            return done(None, False, f"unknown relation {ref_rel!r} (known: {', '.join(relations)})")
        v = engine.one(
            f"SELECT coalesce(avg(CASE WHEN r.k IS NOT NULL THEN 1.0 ELSE 0.0 END), 1.0) FROM {t} l"
            f" LEFT JOIN (SELECT DISTINCT {ident(ref_col)} AS k FROM {relations[ref_rel]}) r ON l.{c} = r.k"
            f" WHERE l.{c} IS NOT NULL"
        )
        return done(v, r.constraint.check(v))
    if r.type == "CustomSql":
        sql = re.sub(r"\bprimary\b", t, col)
        v = engine.one(sql)
        v = float(v) if isinstance(v, int | float) and not isinstance(v, bool) else v
        return done(v, r.constraint.check(v))
    raise ConfigError("quality", f"unsupported rule {r.type}")
