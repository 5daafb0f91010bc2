"""A notebook's declared parameters (the ``parameters`` cell, ``name: type = default  # help``,
read by papermill's inspector) and the coercion of ``--param`` text to those types, checked
before any kernel starts."""

from __future__ import annotations

import ast
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


def declared(notebook: str | Path) -> dict[str, Param]:
    import papermill as pm

    path = Path(notebook)
    if not path.is_file():
        raise ConfigError("notebook", f"no such notebook: {path}")
    out = {}
    for name, p in pm.inspect_notebook(str(path)).items():
        try:
            default = ast.literal_eval(p["default"]) if p.get("default") not in (None, "") else None
        except (ValueError, SyntaxError):
            default = p.get("default")
        out[name] = Param(name, p.get("inferred_type_name") or "None", default, p.get("help") or "")
    if not out:
        raise ConfigError("notebook", f"{path} has no parameters cell (a code cell tagged 'parameters')")
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
        except ValueError:
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
