"""Job-config SQL (DuckDB's dialect: filters, derived columns, partition expressions) rewritten
for Spark SQL where the two differ. Covered: ``expr::TYPE`` casts, ``strftime(x, '%Y-%m-%d')``
(Java patterns), ``isodow`` / ``dayofweek`` numbering (DuckDB: ISO 1 = Monday; Spark's
``dayofweek`` is 1 = Sunday), ``epoch(x)``, ``list_value``. Anything else is passed through and
must be valid in both."""

from __future__ import annotations

import re

_STRFTIME = {"%Y": "yyyy", "%m": "MM", "%d": "dd", "%H": "HH", "%M": "mm", "%S": "ss", "%y": "yy",
             "%j": "DDD", "%b": "MMM", "%B": "MMMM", "%a": "EEE", "%A": "EEEE", "%f": "SSSSSS", "%%": "%"}
_SPARK_TYPES = {"VARCHAR": "STRING", "TEXT": "STRING", "INTEGER": "INT", "HUGEINT": "DECIMAL(38,0)",
                "UBIGINT": "DECIMAL(20,0)"}


def _java_pattern(fmt: str) -> str:
    out, i = [], 0
    while i < len(fmt):
        two = fmt[i:i + 2]
        if two in _STRFTIME:
            out.append(_STRFTIME[two])
            i += 2
        else:
            ch = fmt[i]
            out.append("''" if ch == "'" else (ch if not ch.isalpha() else f"'{ch}'"))
            i += 1
    return "".join(out)


def spark_type(duck: str) -> str:
    t = duck.strip().upper()
    return _SPARK_TYPES.get(t, t)


def to_spark(expr: str) -> str:
    s = re.sub(r"strftime\(\s*([^,()]+(?:\([^()]*\))?)\s*,\s*'([^']*)'\s*\)",
               lambda m: f"date_format({m.group(1)}, '{_java_pattern(m.group(2))}')", expr, flags=re.I)
    s = re.sub(r"\bisodow\(", "_isodow(", s, flags=re.I)
    s = re.sub(r"\bdayofweek\(", "_duck_dow(", s, flags=re.I)
    s = _call(s, "_isodow", lambda a: f"(((dayofweek({a}) + 5) % 7) + 1)")
    s = _call(s, "_duck_dow", lambda a: f"(dayofweek({a}) - 1)")  # DuckDB: 0 = Sunday
    s = _call(s, "epoch", lambda a: f"unix_timestamp({a})")
    s = re.sub(r"::\s*([A-Za-z]+(?:\(\d+\s*,\s*\d+\))?)", lambda m: f" AS_CAST {spark_type(m.group(1))}", s)
    return _casts(s)


def _call(s: str, name: str, render) -> str:
    """Replace ``name(arg)`` (balanced parentheses) with ``render(arg)``."""
    out, i = [], 0
    pat = re.compile(rf"\b{re.escape(name)}\(", re.I)
    while True:
        m = pat.search(s, i)
        if not m:
            out.append(s[i:])
            return "".join(out)
        depth, j = 1, m.end()
        while j < len(s) and depth:
            depth += {"(": 1, ")": -1}.get(s[j], 0)
            j += 1
        out.append(s[i:m.start()])
        out.append(render(s[m.end():j - 1]))
        i = j


def _casts(s: str) -> str:
    """``<operand> AS_CAST T`` -> ``CAST(<operand> AS T)``: the operand is the preceding
    identifier, literal or parenthesised group."""
    while " AS_CAST " in s:
        k = s.index(" AS_CAST ")
        m = re.match(r"\s*([A-Za-z0-9_]+(?:\(\d+\s*,\s*\d+\))?)", s[k + 9:])
        typ, rest = m.group(1), s[k + 9 + m.end():]
        j = k
        if s[j - 1] == ")":
            depth, j = 0, k - 1
            while j >= 0:
                depth += {")": 1, "(": -1}.get(s[j], 0)
                if depth == 0:
                    break
                j -= 1
            while j > 0 and (s[j - 1].isalnum() or s[j - 1] == "_"):  # a function call's name
                j -= 1
        else:
            m2 = re.search(r"([A-Za-z0-9_.`'\"]+)$", s[:k])
            j = m2.start() if m2 else k
        s = f"{s[:j]}CAST({s[j:k]} AS {typ}){rest}"
    return s
