"""A notebook's declared parameters (the ``parameters`` cell, ``name: type = default  # help``,
read without importing papermill) and the coercion of ``--param`` text to those types, checked
before any kernel starts."""

from __future__ import annotations

import ast
import contextlib
import io
import json
import tokenize
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlprep.errors import ConfigError
from mlprep.logs import SECRET

TYPES = {"str": str, "int": int, "float": float, "bool": bool}


@dataclass(frozen=True)
class Param:
    name: str
    type: str  # str | int | float | bool | None (undeclared)
    default: Any
    help: str

    @property
    def secret(self) -> bool:
        return bool(SECRET.search(self.name))


def _source(cell: dict) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else str(src)


def parameters_cell(notebook: str | Path) -> str:
    """The source of the notebook's cell tagged ``parameters`` (read as JSON: no nbformat,
    so a wrong ``--param`` is reported in a fraction of a second)."""
    path = Path(notebook)
    if not path.is_file():
        raise ConfigError("notebook", f"no such notebook: {path}")
    try:
        nb = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise ConfigError("notebook", f"{path} is not a notebook (.ipynb JSON): {e}") from None
    for cell in nb.get("cells", []) if isinstance(nb, dict) else []:
        if cell.get("cell_type") == "code" and "parameters" in (cell.get("metadata") or {}).get("tags", []):
            return _source(cell)
    raise ConfigError("notebook", f"{path} has no parameters cell (a code cell tagged 'parameters')")


def _comments(source: str) -> dict[int, str]:
    out = {}
    with contextlib.suppress(tokenize.TokenError, SyntaxError):
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type == tokenize.COMMENT:
                out[tok.start[0]] = tok.string.lstrip("#").strip()
    return out


def _type_of(annotation: ast.expr | None, default: Any) -> str:
    if isinstance(annotation, ast.Name):
        return annotation.id
    if annotation is not None:
        return ast.unparse(annotation)
    if isinstance(default, bool):  # no annotation: the default's type, as a reader would take it
        return "bool"
    return type(default).__name__ if isinstance(default, int | float | str) else "None"


def declared(notebook: str | Path) -> dict[str, Param]:
    """``name: type = default  # help`` per line of the parameters cell."""
    source = parameters_cell(notebook)
    try:
        tree = ast.parse(source)
    except SyntaxError as e:
        raise ConfigError("notebook", f"{notebook}: parameters cell, line {e.lineno}: {e.msg}") from None
    comments = _comments(source)
    out: dict[str, Param] = {}
    for node in tree.body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            targets, annotation, value = [node.target], node.annotation, node.value
        elif isinstance(node, ast.Assign) and all(isinstance(t, ast.Name) for t in node.targets):
            targets, annotation, value = node.targets, None, node.value
        else:
            continue
        try:
            default = ast.literal_eval(value) if value is not None else None
        except ValueError:
            default = ast.get_source_segment(source, value)
        for t in targets:
            out[t.id] = Param(t.id, _type_of(annotation, default), default, comments.get(node.lineno, ""))
    if not out:
        raise ConfigError("notebook", f"{notebook}: the parameters cell assigns no names")
    return out


def coerce(param: Param, value: Any, where: str) -> Any:
    """``value`` (CLI text, or a plan's JSON value) as the parameter's declared type."""
    t = param.type
    if t not in TYPES or value is None:
        return value
    field = f"{where}: parameter {param.name}"
    if t == "bool":
        if isinstance(value, bool):
            return value
        if str(value).lower() in ("true", "1", "yes"):
            return True
        if str(value).lower() in ("false", "0", "no"):
            return False
        raise ConfigError(field, f"expects bool (true/false), got {value!r}")
    if t == "int":
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ConfigError(field, f"expects int, got {value!r}")
        try:
            return int(str(value).replace("_", "")) if isinstance(value, str) else int(value)
        except (TypeError, ValueError):
            raise ConfigError(field, f"expects int, got {value!r}") from None
    if t == "float":
        if isinstance(value, bool):
            raise ConfigError(field, f"expects float, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(field, f"expects float, got {value!r}") from None
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        raise ConfigError(field, f"expects str, got {value!r}")
    return str(value)


def describe(notebook: str | Path) -> str:
    """``--help-notebook``: one line per parameter with type, default and help."""
    rows = declared(notebook).values()
    width = max(len(p.name) for p in rows)
    lines = [f"Parameters of {notebook}:"]
    for p in rows:
        shown = "***" if p.secret and p.default else repr(p.default)
        lines.append(f"  {p.name:<{width}}  {p.type:<5}  default {shown}" + (f"  — {p.help}" if p.help else ""))
    return "\n".join(lines)
