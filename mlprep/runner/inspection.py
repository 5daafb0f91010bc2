"""A notebook's declared parameters (the ``parameters`` cell, ``name: type = default  # help``,
read without importing papermill) as :class:`mlprep.params.Parameter`, so that ``--param`` text
is coerced to those types (:func:`mlprep.params.coerce`) before any kernel starts."""

from __future__ import annotations

import ast
import contextlib
import io
import json
import tokenize
from pathlib import Path
from typing import Any

from mlprep.errors import ConfigError
from mlprep.logs import SECRET
from mlprep.params import Parameter

CHECKED = ("str", "int", "float", "bool")  # annotations whose values are coerced; others are "any"


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


def _parameter(name: str, annotation: str, default: Any, help: str) -> Parameter:
    kind = annotation if annotation in CHECKED else "any"
    return Parameter(name, kind, default, required=False, help=help, secret=bool(SECRET.search(name)))


def declared(notebook: str | Path) -> dict[str, Parameter]:
    """``name: type = default  # help`` per line of the parameters cell."""
    source = parameters_cell(notebook)
    try:
        tree = ast.parse(source)
    except SyntaxError as e:
        raise ConfigError("notebook", f"{notebook}: parameters cell, line {e.lineno}: {e.msg}") from None
    comments = _comments(source)
    out: dict[str, Parameter] = {}
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
            out[t.id] = _parameter(t.id, _type_of(annotation, default), default, comments.get(node.lineno, ""))
    if not out:
        raise ConfigError("notebook", f"{notebook}: the parameters cell assigns no names")
    return out


def describe(notebook: str | Path) -> str:
    """``--help-notebook``: one line per parameter with type, default and help."""
    rows = declared(notebook).values()
    width = max(len(p.name) for p in rows)
    lines = [f"Parameters of {notebook}:"]
    for p in rows:
        shown = "***" if p.secret and p.default else repr(p.default)
        lines.append(f"  {p.name:<{width}}  {p.type:<5}  default {shown}" + (f"  — {p.help}" if p.help else ""))
    return "\n".join(lines)
