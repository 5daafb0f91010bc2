"""The aggregation functions of a feature spec, in one table (``AGGREGATIONS``). The spec takes
its function names from it, the embedded engine its state and features, the Flink plan its SQL.

The engine keeps, per open window, a row of *accumulators*: ``_count`` (every window's events)
and, per value column, the accumulators its functions ask for, each a column
``<column>__<suffix>`` shared by the functions that name it (``mean`` and ``stddev`` share
``n`` and ``mean``). A micro-batch is aggregated into partial rows (``Accumulator.partial``,
over the window's new events), which are merged with the window's state
(``Accumulator.merge``, over the partial rows of one window); the feature is read off the
merged row when the window fires (``Function.final``). Functions whose value cannot be merged
from a fixed row (``count_distinct``) set ``distinct``: the engine keeps the window's distinct
values and ``final`` reads their number from ``distinct_count(column)``.

How to add a function: one ``Function`` entry in ``AGGREGATIONS`` (its place is where spec
errors list it) with

- ``accumulators``: the state it needs, reusing ``N``, ``SUM``, ``MEAN``, ... or new
  ``Accumulator(suffix, partial, merge)``; ``partial(column)`` aggregates events and
  ``merge(column)`` partial rows: partials of any split of the events must merge to the value
  over all of them (counts and sums add, mean and M2 merge by Chan's formula, first / last
  keep their event time and arrival). A suffix names a column of checkpointed state: renaming
  one leaves older checkpoints unreadable;
- ``final(column)``: the feature, an expression over the merged accumulator columns;
- ``flink_sql`` with ``{c}`` for the quoted column, and ``flink_type`` (None: the column's type);
- ``column=False`` if it reads no column; ``distinct=True`` if it needs the window's distinct
  values (the engine keeps them; ``final`` reads their number from ``distinct_count(column)``).

The spec then accepts the name and the engine and the Flink plan compute it; nothing else
changes. E.g. a median keeps the values, ``Accumulator("values", lambda c:
pl.col(c).cast(pl.Float64).drop_nulls(), lambda c: pl.col(f"{c}__values").list.explode(
keep_nulls=False, empty_as_null=False))``, and reads ``pl.col(f"{c}__values").list.eval(
pl.element().quantile(0.5, interpolation="linear")).list.first()``; an
``approx_count_distinct`` sets ``distinct`` (exact here). Add the function to
``tests/stream_oracle.py`` and to the spec in ``tests/test_stream_engine.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

import polars as pl

from mlprep.stream.columns import SEQ, T

ROWS = "_count"  # every window's event count: kept whatever the spec asks (count reads it)


class _Asked(Protocol):  # a spec's aggregation, as far as the engine needs it
    function: str
    column: str | None


@dataclass(frozen=True)
class Accumulator:
    """A state column per value column: ``partial`` aggregates a window's new events,
    ``merge`` the partial rows of one window (its state and a micro-batch's)."""

    suffix: str
    partial: Callable[[str], pl.Expr]
    merge: Callable[[str], pl.Expr]

    def name(self, column: str) -> str:
        return f"{column}__{self.suffix}"


@dataclass(frozen=True)
class Function:
    """One aggregation function: its accumulators, its feature and its Flink SQL."""

    name: str
    accumulators: tuple[Accumulator, ...]
    final: Callable[[str], pl.Expr]  # the feature from the merged accumulators (column -> expr)
    flink_sql: str  # {c}: the column, quoted
    flink_type: str | None  # the SQL type of the feature; None: the column's own type
    column: bool = True  # reads a column (count does not)
    distinct: bool = False  # keeps the window's distinct values instead of accumulators
    flink_note: str | None = None  # where Flink's value differs, said in the compiled SQL


def _num(c: str) -> pl.Expr:
    return pl.col(c).cast(pl.Float64)


def _col(acc: Accumulator, c: str) -> pl.Expr:
    return pl.col(acc.name(c))


def _filled_mean(c: str) -> pl.Expr:
    return _col(MEAN, c).fill_nan(None).fill_null(0)  # a part without values weighs n = 0


def _merged_mean(c: str) -> pl.Expr:
    n = _col(N, c)
    return (n * _filled_mean(c)).sum() / n.sum()


def _merge_mean(c: str) -> pl.Expr:
    return pl.when(_col(N, c).sum() > 0).then(_merged_mean(c))


def _merge_m2(c: str) -> pl.Expr:
    # Chan et al.'s merge, M2 = sum(M2_i) + sum(n_i * (mean_i - mean)^2): the pairwise update
    # M2a + M2b + d^2 na nb / n applied to k parts at once. Deviations from the merged mean,
    # never sum(n_i mean_i^2) - n mean^2, which cancels catastrophically (1e8 + 0.1, 0.2, 0.3
    # gave 0).
    n = _col(N, c)
    spread = (n * (_filled_mean(c) - _merged_mean(c)) ** 2).fill_nan(None).sum()
    return _col(M2, c).fill_nan(None).fill_null(0).sum() + spread


N = Accumulator("n", lambda c: pl.col(c).count().cast(pl.Int64), lambda c: _col(N, c).sum())
SUM = Accumulator("sum", lambda c: _num(c).sum(), lambda c: _col(SUM, c).sum())
MEAN = Accumulator("mean", lambda c: _num(c).mean(), _merge_mean)
M2 = Accumulator("m2", lambda c: _num(c).var(ddof=0) * _num(c).count(), _merge_m2)
MIN = Accumulator("min", lambda c: _num(c).min(), lambda c: _col(MIN, c).min())
MAX = Accumulator("max", lambda c: _num(c).max(), lambda c: _col(MAX, c).max())


def _ends(end: str) -> tuple[Accumulator, ...]:
    """first / last non-NULL value by event time, then arrival; with that time and arrival
    index, so merged parts keep the order (the state of an end is three columns)."""
    def partial(of: str | None) -> Callable[[str], pl.Expr]:  # of: T, SEQ or (None) the value
        def expr(c: str) -> pl.Expr:
            nn = pl.col(c).is_not_null()
            e = pl.col(of or c).filter(nn).sort_by([pl.col(T).filter(nn), pl.col(SEQ).filter(nn)])
            return e.first() if end == "first" else e.last()
        return expr

    def merge(suffix: str) -> Callable[[str], pl.Expr]:
        def expr(c: str) -> pl.Expr:
            order = [pl.col(f"{c}__{end}_t"), pl.col(f"{c}__{end}_s")]
            return pl.col(f"{c}__{end}{suffix}").sort_by(order, descending=end == "last", nulls_last=True).first()
        return expr

    return tuple(Accumulator(f"{end}{suffix}", partial(of), merge(suffix))
                 for suffix, of in (("", None), ("_t", T), ("_s", SEQ)))


FIRST, LAST = _ends("first"), _ends("last")


def distinct_count(column: str) -> str:
    """The column the engine joins the number of a window's distinct values into."""
    return f"_d_{column}"


def _if_values(at_least: int, value: Callable[[str], pl.Expr]) -> Callable[[str], pl.Expr]:
    """NULL below ``at_least`` non-NULL values, as SQL's aggregates are."""
    return lambda c: pl.when(_col(N, c) >= at_least).then(value(c))


def _stddev(c: str) -> pl.Expr:  # sample standard deviation (ddof = 1)
    return (_col(M2, c) / (_col(N, c) - 1)).sqrt()


_FIRST_LAST_NOTE = "FIRST_VALUE / LAST_VALUE follow arrival order here (event-time order in mlprep)."

AGGREGATIONS: dict[str, Function] = {f.name: f for f in (
    Function("count", (), lambda c: pl.col(ROWS), "COUNT(*)", "BIGINT", column=False),
    Function("sum", (N, SUM), _if_values(1, lambda c: _col(SUM, c)), "SUM({c})", "DOUBLE"),
    Function("mean", (N, MEAN), _if_values(1, lambda c: _col(MEAN, c)), "AVG({c})", "DOUBLE"),
    Function("min", (N, MIN), lambda c: _col(MIN, c), "MIN({c})", None),
    Function("max", (N, MAX), lambda c: _col(MAX, c), "MAX({c})", None),
    Function("stddev", (N, MEAN, M2), _if_values(2, _stddev), "STDDEV_SAMP({c})", "DOUBLE"),
    Function("count_distinct", (), lambda c: pl.col(distinct_count(c)).fill_null(0), "COUNT(DISTINCT {c})",
             "BIGINT", distinct=True),
    Function("first", (N, *FIRST), lambda c: _col(FIRST[0], c), "FIRST_VALUE({c})", None,
             flink_note=_FIRST_LAST_NOTE),
    Function("last", (N, *LAST), lambda c: _col(LAST[0], c), "LAST_VALUE({c})", None,
             flink_note=_FIRST_LAST_NOTE),
)}
NAMES = tuple(AGGREGATIONS)


def accumulators(asked: Iterable[_Asked]) -> dict[str, tuple[Accumulator, ...]]:
    """Value column -> the accumulators its functions need (each once, in table order);
    columns in name order."""
    need: dict[str, set[str]] = {}
    for a in asked:
        if a.column:
            need.setdefault(a.column, set()).update(x.suffix for x in AGGREGATIONS[a.function].accumulators)
    order = list(dict.fromkeys(x for f in AGGREGATIONS.values() for x in f.accumulators))
    return {c: tuple(x for x in order if x.suffix in need[c]) for c in sorted(need) if need[c]}


def distinct_columns(asked: Iterable[_Asked]) -> list[str]:
    """The columns whose distinct values a window keeps."""
    return sorted({a.column for a in asked if a.column and AGGREGATIONS[a.function].distinct})


def partial_rows() -> pl.Expr:  # the ROWS accumulator, over events
    return pl.len().cast(pl.Int64).alias(ROWS)


def merge_rows() -> pl.Expr:  # and over partial rows
    return pl.col(ROWS).sum()
