"""Strict JSON records: what DuckDB's lenient parser accepts but a record must not be.

DuckDB reads ``NaN``, ``Infinity``, ``1e400`` (infinite) and objects with a key given twice;
and a record nested hundreds of levels deep, or with thousands of keys, would make every later
step pay for it (a column per key for every row). Such lines are *suspects* found cheaply in SQL
(``SUSPECT_SQL``), then judged exactly here, without recursion, so each gets a precise reason:

    invalid JSON: NaN is not JSON            invalid JSON: duplicate key 'amount'
    invalid JSON: number out of range: 1e400 nested 601 levels deep (max_depth 32)
    too many fields: 10000 (max_fields 1000)
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')  # unrolled: fast on long strings
_BRACKETS = re.compile(r"[\[\]{}]")
# NaN / Inf / Infinity in any case (DuckDB takes them all) as a value, not inside a string
SUSPECT_CONSTANT = r"(?i)[:\[,]\s*-?(nan|inf|infinity)\s*[,\]}]"
_CONSTANT = re.compile(r"-?(nan|infinity|inf)", re.IGNORECASE)


@dataclass(frozen=True)
class Limits:
    max_depth: int = 32  # arrays and objects nested deeper: quarantined (each level costs every step)
    max_fields: int = 1000  # keys in one record, at any depth: more are quarantined


def suspect_sql(limits: Limits, text: str = "txt") -> str:
    """SQL true for a line that may break the rules; false means it cannot (upper bounds:
    every nesting level needs an opening and a closing bracket, every key ``"":0,``; a
    constant needs the letters, an out-of-range number an exponent of 3+ digits or 300+
    digits). Cheap tests come first so the regular expressions see few lines: ~0.8 µs a line."""
    d, f = int(limits.max_depth), int(limits.max_fields)
    opens = f"strlen({text}) - strlen(replace(replace({text}, '{{', ''), '[', ''))"
    colons = f"strlen({text}) - strlen(replace({text}, ':', ''))"
    return (f"((strlen({text}) > {2 * d} AND {opens} > {d}) OR (strlen({text}) > {4 * f} AND {colons} > {f})"
            f" OR (({text} ILIKE '%nan%' OR {text} ILIKE '%inf%') AND regexp_matches({text}, '{SUSPECT_CONSTANT}'))"
            f" OR regexp_matches({text}, '[eE][+]?[0-9]{{3}}')"
            f" OR (strlen({text}) >= 300 AND regexp_matches({text}, '[0-9]{{300}}')))")


def nesting_depth(text: str, limit: int | None = None) -> int:
    """How deep arrays and objects nest in JSON ``text`` (no recursion, strings skipped). With
    ``limit``, text that cannot be deeper (too few brackets) returns a bound at once."""
    opened = text.count("{") + text.count("[")
    if limit is not None and opened <= limit:
        return opened
    depth = deepest = 0
    for ch in _BRACKETS.findall(_STRING.sub("", text)):
        depth += 1 if ch in "[{" else -1
        deepest = max(deepest, depth)
    return deepest


def _hooks(fields: list[int]) -> dict[str, Any]:
    def number(text: str) -> float:
        value = float(text)
        if math.isinf(value):
            raise ValueError(f"number out of range: {text[:40]}")
        return value

    def constant(name: str) -> None:
        raise ValueError(f"{name} is not JSON")

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        fields[0] += len(items)
        seen: set[str] = set()
        for k, _ in items:
            if k in seen:
                raise ValueError(f"duplicate key {k!r}")
            seen.add(k)
        return dict(items)

    return {"parse_float": number, "parse_int": lambda t: int(number(t)) if len(t) > 300 else int(t),
            "parse_constant": constant, "object_pairs_hook": pairs}


def _constant_at(text: str, e: json.JSONDecodeError) -> str | None:
    """"NAN is not JSON" when Python stopped at a constant it does not take (any case but its own)."""
    m = _CONSTANT.match(text, e.pos)
    return f"{m.group(0)} is not JSON" if m else None


def loads(text: str | bytes, limits: Limits | None = None) -> Any:
    """``json.loads`` for one record, strictly: a ``ValueError`` saying why for text nested
    deeper than the limit (checked first: the parser recurses), NaN / Infinity, numbers out of
    range, duplicate keys, or malformed JSON."""
    limits = limits or Limits()
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    depth = nesting_depth(text, limits.max_depth)
    if depth > limits.max_depth:
        raise ValueError(f"nested {depth} levels deep (max_depth {limits.max_depth})")
    try:
        return json.loads(text, **_hooks([0]))
    except json.JSONDecodeError as e:
        if constant := _constant_at(text, e):
            raise ValueError(constant) from None
        raise


def reason(text: str, limits: Limits) -> str | None:
    """Why ``text`` is not a strict JSON record within ``limits``, or None (also for text that is
    plainly malformed: that is reported with the parser's message elsewhere)."""
    depth = nesting_depth(text, limits.max_depth)
    if depth > limits.max_depth:
        return f"nested {depth} levels deep (max_depth {limits.max_depth})"
    fields = [0]
    try:
        json.loads(text, **_hooks(fields))
    except json.JSONDecodeError as e:  # a constant in another case (NAN, iNf) DuckDB takes; other
        constant = _constant_at(text, e)  # malformed text is DuckDB's to judge (and report)
        return f"invalid JSON: {constant}" if constant else None
    except ValueError as e:
        return f"invalid JSON: {e}"
    if fields[0] > limits.max_fields:
        return f"too many fields: {fields[0]} (max_fields {limits.max_fields})"
    return None
