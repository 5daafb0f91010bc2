"""Pipeline expressions and conditions, evaluated as the SageMaker service does at run time.

Expressions: ``{"Get": "Parameters.X"}``, ``{"Get": "Execution.PipelineExecutionId"}``,
``{"Get": "Steps.S.<property path>"}`` (paths into the step's Describe* response, e.g.
``ProcessingOutputConfig.Outputs['train'].S3Output.S3Uri``), ``{"Get": "Steps.S.PropertyFiles.F"}``
(inside JsonGet), ``{"Std:Join": {"On", "Values"}}`` and ``{"Std:JsonGet": {"PropertyFile" | "S3Uri",
"Path"}}``. Conditions: Equals, GreaterThan(OrEqualTo), LessThan(OrEqualTo), In, Not, Or.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

_TOKEN = re.compile(r"""\.?([A-Za-z0-9_\-]+)|\[(\d+)\]|\[['"]([^'"]+)['"]\]""")


class ExpressionError(ValueError):
    """An expression that cannot be evaluated (names what and why)."""


def parse_path(path: str) -> list[str | int]:
    """``A.B['x'].C[0]`` -> ``['A', 'B', 'x', 'C', 0]``."""
    out: list[str | int] = []
    pos = 0
    while pos < len(path):
        m = _TOKEN.match(path, pos)
        if not m or m.end() == pos:
            raise ExpressionError(f"cannot parse path {path!r} at {path[pos:]!r}")
        name, index, key = m.groups()
        out.append(int(index) if index is not None else (name if name is not None else key))
        pos = m.end()
    return out


def walk(obj: Any, tokens: list[str | int], what: str) -> Any:
    """Follow a parsed path; a string index into a list selects the element one of whose
    ``*Name`` fields equals it (``Outputs['train']`` is the output named train)."""
    cur = obj
    for t in tokens:
        if isinstance(cur, list):
            if isinstance(t, int):
                if t >= len(cur):
                    raise ExpressionError(f"{what}: index {t} out of range ({len(cur)} items)")
                cur = cur[t]
                continue
            hits = [e for e in cur if isinstance(e, dict)
                    and any(k.endswith("Name") and v == t for k, v in e.items())]
            if not hits:
                raise ExpressionError(f"{what}: no element named {t!r}")
            cur = hits[0]
        elif isinstance(cur, dict):
            if t not in cur:
                raise ExpressionError(f"{what}: no field {t!r} (fields: {', '.join(map(str, cur)) or 'none'})")
            cur = cur[t]
        else:
            raise ExpressionError(f"{what}: cannot index {type(cur).__name__} with {t!r}")
    return cur


@dataclass
class Context:
    parameters: dict[str, Any]
    execution: dict[str, Any]
    properties: dict[str, dict] = field(default_factory=dict)  # step -> Describe* shaped dict
    read_json: Callable[[str], Any] | None = None  # s3 uri -> parsed JSON
    property_files: dict[str, dict[str, str]] = field(default_factory=dict)  # step -> {file: s3 uri}

    def get(self, ref: str) -> Any:
        head, _, rest = ref.partition(".")
        if head == "Parameters":
            if rest not in self.parameters:
                raise ExpressionError(f"unknown parameter {rest!r}")
            return self.parameters[rest]
        if head == "Execution":
            if rest not in self.execution:
                raise ExpressionError(f"unknown execution variable {rest!r}")
            return self.execution[rest]
        if head == "Steps":
            step, _, path = rest.partition(".")
            if step not in self.properties:
                raise ExpressionError(f"step {step!r} has not succeeded: its properties are not available")
            tokens = parse_path(path)
            if tokens[:1] == ["PropertyFiles"]:
                raise ExpressionError(f"{ref}: a property file is read through Std:JsonGet")
            return walk(self.properties[step], tokens, ref)
        raise ExpressionError(f"cannot resolve {ref!r}")

    def resolve(self, value: Any) -> Any:
        if isinstance(value, list):
            return [self.resolve(v) for v in value]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            (k, v), = value.items()
            if k == "Get" and isinstance(v, str):
                return self.get(v)
            if k == "Std:Join":
                return str(v.get("On", "")).join(_text(self.resolve(x)) for x in v.get("Values", []))
            if k == "Std:JsonGet":
                return self.json_get(v)
        return {k: self.resolve(v) for k, v in value.items()}

    def json_get(self, spec: dict) -> Any:
        if self.read_json is None:
            raise ExpressionError("JsonGet needs storage")
        if "PropertyFile" in spec:
            ref = spec["PropertyFile"].get("Get", "") if isinstance(spec["PropertyFile"], dict) else ""
            m = re.fullmatch(r"Steps\.([^.]+)\.PropertyFiles\.(.+)", ref)
            if not m:
                raise ExpressionError(f"JsonGet: bad PropertyFile reference {spec['PropertyFile']!r}")
            step, name = m.groups()
            uri = self.property_files.get(step, {}).get(name)
            if uri is None:
                raise ExpressionError(f"JsonGet: step {step!r} has no property file {name!r} "
                                      "(or has not succeeded)")
        elif "S3Uri" in spec:
            uri = self.resolve(spec["S3Uri"])
        else:
            raise ExpressionError("JsonGet needs PropertyFile or S3Uri")
        try:
            doc = self.read_json(uri)
        except (OSError, ValueError) as e:
            raise ExpressionError(f"JsonGet: cannot read {uri}: {e}") from None
        return walk(doc, parse_path(spec.get("Path", "")), f"JsonGet {uri} {spec.get('Path')}")

    def condition(self, cond: dict) -> bool:
        t = cond.get("Type")
        if t == "Not":
            return not self.condition(cond["Expression"])
        if t == "Or":
            return any(self.condition(c) for c in cond["Conditions"])
        if t == "In":
            q = self.resolve(cond["QueryValue"])
            return any(_equal(q, self.resolve(v)) for v in cond["Values"])
        left, right = self.resolve(cond.get("LeftValue")), self.resolve(cond.get("RightValue"))
        if t == "Equals":
            return _equal(left, right)
        ops = {"GreaterThan": lambda a, b: a > b, "GreaterThanOrEqualTo": lambda a, b: a >= b,
               "LessThan": lambda a, b: a < b, "LessThanOrEqualTo": lambda a, b: a <= b}
        if t not in ops:
            raise ExpressionError(f"unsupported condition type {t!r}")
        if left is None or right is None:
            raise ExpressionError(f"{t}: cannot compare {left!r} with {right!r}")
        try:
            return bool(ops[t](_number(left), _number(right)))
        except TypeError:
            raise ExpressionError(f"{t}: cannot compare {left!r} with {right!r}") from None


def _number(v: Any) -> Any:
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            return v
    return v


def _equal(a: Any, b: Any) -> bool:
    return a == b or (_number(a) == _number(b) and not isinstance(_number(a), str))


def _text(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, dict | list):
        return json.dumps(v)
    return "" if v is None else str(v)
