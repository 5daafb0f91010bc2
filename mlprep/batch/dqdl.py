"""Data-quality rules in a DQDL-like syntax (AWS Glue Data Quality), parsed into engine-free
value objects (``mlprep.batch.quality`` evaluates them).

    Rules = [
        RowCount > 0,
        IsComplete "txn_id",
        Completeness "amount" >= 0.95,
        IsUnique "txn_id",
        ColumnValues "amount" between 0 and 100000,
        ColumnValues "currency" in ["USD", "EUR", "GBP"] with threshold > 0.99,
        ColumnValues "txn_id" matches "t[0-9]+",
        ColumnExists "device_os",
        ReferentialIntegrity "user_id" "users.user_id" >= 0.99,
        DataFreshness "ts" <= 3650 days,
        CustomSql "select count(*) from primary where amount < 0" = 0
    ]

Also: Uniqueness, DistinctValuesCount, Mean, Sum, StandardDeviation, ColumnLength. Constraints:
``= != > >= < <=`` a number, ``between A and B``, ``in [..]``, ``matches "regex"`` and ``not``
forms of the last three. ``ColumnValues`` and ``DataFreshness`` are per row: all rows must pass
unless ``with threshold OP FRACTION`` is given; a NULL value does not pass.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

from mlprep.errors import ConfigError

_TOKEN = re.compile(
    r'\s*(?:(?P<str>"(?:[^"\\]|\\.)*")|(?P<num>-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)'
    r"|(?P<op>>=|<=|!=|=|>|<)|(?P<punct>[\[\],])|(?P<word>[A-Za-z_][A-Za-z0-9_]*))"
)
RULE_TYPES = {
    "RowCount": 0, "IsComplete": 1, "Completeness": 1, "IsUnique": 1, "Uniqueness": 1,
    "ColumnValues": 1, "ColumnExists": 1, "ReferentialIntegrity": 2, "DataFreshness": 1,
    "CustomSql": 1, "DistinctValuesCount": 1, "Mean": 1, "Sum": 1, "StandardDeviation": 1,
    "ColumnLength": 1,
}
UNITS = {"minutes": 1 / 60, "minute": 1 / 60, "hours": 1.0, "hour": 1.0, "days": 24.0, "day": 24.0}


@dataclass
class Constraint:
    kind: str  # op | between | in | matches
    negate: bool = False
    op: str = ""
    values: tuple[Any, ...] = ()

    def text(self) -> str:
        n = "not " if self.negate else ""
        if self.kind == "op":
            return f"{self.op} {self.values[0]}"
        if self.kind == "between":
            return f"{n}between {self.values[0]} and {self.values[1]}"
        if self.kind == "in":
            return f"{n}in {list(self.values)}"
        return f"{n}matches {self.values[0]!r}"

    def check(self, v: Any) -> bool:
        if v is None:
            return False
        if self.kind == "op":
            x = self.values[0]
            ok = {"=": v == x, "!=": v != x, ">": v > x, ">=": v >= x, "<": v < x, "<=": v <= x}[self.op]
        elif self.kind == "between":
            ok = self.values[0] <= v <= self.values[1]
        elif self.kind == "in":
            ok = v in self.values
        else:
            ok = re.fullmatch(self.values[0], str(v)) is not None
        return ok != self.negate


@dataclass
class Rule:
    type: str
    args: tuple[str, ...]
    constraint: Constraint | None
    threshold: Constraint | None
    text: str


@dataclass
class Outcome:
    rule: str
    type: str
    passed: bool
    metric: float | int | None
    message: str
    severity: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _tokens(text: str, where: str) -> tuple[list[tuple[str, Any]], list[tuple[int, int]]]:
    out, spans, pos = [], [], 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise ConfigError(where, f"cannot parse DQDL near {text[pos:pos + 30]!r}")
        kind = m.lastgroup
        val = m.group(kind)
        if kind == "str":
            val = val[1:-1].replace('\\"', '"')
        elif kind == "num":
            val = float(val) if any(c in val for c in ".eE") else int(val)
        out.append((kind, val))
        spans.append((m.start(kind), m.end()))
        pos = m.end()
    return out, spans


def parse(text: str, where: str = "quality.rules") -> list[Rule]:
    """Parse ``Rules = [ ... ]`` (or a bare comma-separated list) into rules."""
    text = re.sub(r"#[^\n]*", "", text)
    toks, spans = _tokens(text, where)
    if not toks:
        return []
    i = 0
    if toks[:3] == [("word", "Rules"), ("op", "="), ("punct", "[")]:
        if toks[-1] != ("punct", "]"):
            raise ConfigError(where, "missing closing ] of Rules = [ ... ]")
        toks, spans = toks[3:-1], spans[3:-1]
    rules = []
    while i < len(toks):
        start = i
        kind, name = toks[i]
        if kind != "word" or name not in RULE_TYPES:
            raise ConfigError(where, f"unknown rule type {name!r} (one of {', '.join(RULE_TYPES)})")
        i += 1
        args = []
        while i < len(toks) and toks[i][0] == "str" and len(args) < RULE_TYPES[name]:
            args.append(toks[i][1])
            i += 1
        if len(args) != RULE_TYPES[name]:
            raise ConfigError(where, f"{name} takes {RULE_TYPES[name]} quoted argument(s)")
        constraint, i = _constraint(toks, i, where, name)
        threshold = None
        if i < len(toks) and toks[i] == ("word", "with"):
            if i + 1 >= len(toks) or toks[i + 1] != ("word", "threshold"):
                raise ConfigError(where, f"{name}: expected 'with threshold'")
            threshold, i = _constraint(toks, i + 2, where, name)
        rule_text = text[spans[start][0] : spans[i - 1][1]]
        if i < len(toks):
            if toks[i] != ("punct", ","):
                raise ConfigError(where, f"{name}: unexpected {toks[i][1]!r}")
            i += 1
        needs = name not in ("IsComplete", "IsUnique", "ColumnExists")
        if needs and constraint is None:
            raise ConfigError(where, f"{name} needs a constraint (e.g. > 0, between 1 and 2)")
        rules.append(Rule(name, tuple(args), constraint, threshold, rule_text))
    return rules


def _constraint(toks: list, i: int, where: str, name: str) -> tuple[Constraint | None, int]:
    if i >= len(toks) or toks[i] in (("punct", ","), ("word", "with")):
        return None, i
    negate = False
    if toks[i] == ("word", "not"):
        negate, i = True, i + 1
    kind, val = toks[i]
    if kind == "op":
        num = toks[i + 1][1] if i + 1 < len(toks) else None
        if not isinstance(num, int | float):
            raise ConfigError(where, f"{name}: expected a number after {val}")
        i += 2
        if i < len(toks) and toks[i][0] == "word" and toks[i][1] in UNITS:
            num = num * UNITS[toks[i][1]]
            i += 1
        return Constraint("op", negate, val, (num,)), i
    if (kind, val) == ("word", "between"):
        try:
            a, and_, b = toks[i + 1][1], toks[i + 2], toks[i + 3][1]
        except IndexError:
            raise ConfigError(where, f"{name}: between A and B") from None
        if and_ != ("word", "and"):
            raise ConfigError(where, f"{name}: between A and B")
        return Constraint("between", negate, values=(a, b)), i + 4
    if (kind, val) == ("word", "in"):
        if toks[i + 1] != ("punct", "["):
            raise ConfigError(where, f"{name}: in [v1, v2, ...]")
        j, vals = i + 2, []
        while j < len(toks) and toks[j] != ("punct", "]"):
            if toks[j][0] in ("str", "num"):
                vals.append(toks[j][1])
            j += 1
        return Constraint("in", negate, values=tuple(vals)), j + 1
    if (kind, val) == ("word", "matches"):
        return Constraint("matches", negate, values=(toks[i + 1][1],)), i + 2
    raise ConfigError(where, f"{name}: unexpected {val!r}")
