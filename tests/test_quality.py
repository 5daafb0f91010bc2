"""DQDL rules: parsing, exact metrics, and errors that name the rule text."""

from __future__ import annotations

import datetime as dt

import pytest

from mlprep.batch import dqdl, quality
from mlprep.duck import Engine
from mlprep.errors import ConfigError


@pytest.fixture
def engine():
    e = Engine(threads=1)
    e.run("CREATE TABLE t AS SELECT * FROM (VALUES (1, 'a', 10.0, TIMESTAMP '2026-11-28 12:00:00'),"
          " (2, 'b', 20.0, TIMESTAMP '2026-11-29 00:00:00'), (3, 'b', NULL, TIMESTAMP '2026-11-20 00:00:00'),"
          " (4, 'zz', 40.0, NULL)) v(id, cat, amount, ts)")
    e.run("CREATE TABLE ref AS SELECT * FROM (VALUES ('a'), ('b')) v(cat)")
    yield e
    e.close()


RULES = '''Rules = [
    RowCount = 4,
    RowCount between 5 and 10,
    IsComplete "id",
    IsComplete "amount",
    Completeness "amount" >= 0.75,
    IsUnique "id",
    Uniqueness "cat" > 0.9,
    ColumnValues "cat" in ["a", "b"],
    ColumnValues "cat" in ["a", "b"] with threshold >= 0.75,
    ColumnValues "amount" between 0 and 30,
    ColumnValues "cat" matches "[a-z]",
    ColumnValues "cat" not matches "[a-z]",
    ColumnExists "ts",
    ColumnExists "nope",
    ReferentialIntegrity "cat" "ref.cat" = 0.75,
    DataFreshness "ts" <= 24 hours with threshold >= 0.5,
    CustomSql "select count(*) from primary where amount > 15" = 2,
    DistinctValuesCount "cat" = 3,
    Mean "amount" = 23.333333,
    Sum "amount" > 70,
    StandardDeviation "amount" < 20,
    ColumnLength "cat" <= 1,
    IsComplete "missing_column"
]'''


def test_rules_give_exact_metrics_and_outcomes(engine):
    rules = dqdl.parse(RULES)
    got = {o.rule: (o.passed, o.metric) for o in quality.evaluate(
        engine, "t", rules, "error", {"ref": "ref"}, now=dt.datetime(2026, 11, 29, 6, 0))}
    assert got == {
        "RowCount = 4": (True, 4), "RowCount between 5 and 10": (False, 4),
        'IsComplete "id"': (True, 1.0), 'IsComplete "amount"': (False, 0.75),
        'Completeness "amount" >= 0.75': (True, 0.75), 'IsUnique "id"': (True, 1.0),
        'Uniqueness "cat" > 0.9': (False, 0.75),
        'ColumnValues "cat" in ["a", "b"]': (False, 0.75),
        'ColumnValues "cat" in ["a", "b"] with threshold >= 0.75': (True, 0.75),
        'ColumnValues "amount" between 0 and 30': (False, 0.5),
        'ColumnValues "cat" matches "[a-z]"': (False, 0.75),
        'ColumnValues "cat" not matches "[a-z]"': (False, 0.25),
        'ColumnExists "ts"': (True, None), 'ColumnExists "nope"': (False, None),
        'ReferentialIntegrity "cat" "ref.cat" = 0.75': (True, 0.75),
        'DataFreshness "ts" <= 24 hours with threshold >= 0.5': (True, 0.5),
        'CustomSql "select count(*) from primary where amount > 15" = 2': (True, 2.0),
        'DistinctValuesCount "cat" = 3': (True, 3), 'Mean "amount" = 23.333333': (True, 23.333333),
        'Sum "amount" > 70': (False, 70.0), 'StandardDeviation "amount" < 20': (True, 15.275252),
        'ColumnLength "cat" <= 1': (False, 0.75), 'IsComplete "missing_column"': (False, None),
    }


@pytest.mark.parametrize("text", ['Rules = [ RowCount ]', 'Rules = [ IsShiny "x" ]', 'Rules = [ RowCount > 0',
                                  'Rules = [ ColumnValues "a" between 1 ]', 'Rules = [ IsComplete ]'])
def test_malformed_rules_fail_naming_the_field(text):
    with pytest.raises(ConfigError) as ei:
        dqdl.parse(text, "quality.rules")
    assert ei.value.field == "quality.rules"
