"""A run plan: the stage notebooks, in order, and how each one's parameters are wired
(``conf/run/demo.yaml``). Kept apart from the code that executes it.

    parameters:                    # run parameters: mlprep run --param NAME=VALUE
      data_dir: {type: path, default: demo/data, must_exist: true, help: ...}
    stages:
      - name: batch
        notebook: notebooks/01_batch_etl.ipynb
        timeout: 900               # seconds for the whole stage (default: none)
        cell_timeout: 600          # seconds per cell
        retries: 1                 # re-runs after a dead kernel or a timeout (not after a cell error)
        parameters:                # the notebook's parameters; ${...} references:
          data_dir: ${data_dir}    #   run parameters, ${root} (the project), ${stage_dir} (this
          out_dir: ${stage_dir}    #   stage's content-addressed folder), ${STAGE.KEY} (an
                                   #   earlier stage's outputs)
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlprep.errors import ConfigError
from mlprep.yamlconf import load_yaml

_REF = re.compile(r"\$\{([A-Za-z_][\w.]*)\}")
TYPES = ("str", "int", "float", "bool", "path")  # path: resolved against the project root


@dataclass
class RunParam:
    name: str
    type: str
    default: Any
    help: str = ""
    must_exist: bool = False  # a path that must exist before the run starts (an input)


@dataclass
class Stage:
    name: str
    notebook: Path
    parameters: dict[str, Any]
    timeout: float | None = None
    cell_timeout: float | None = None
    retries: int = 0
    upstream: list[str] = field(default_factory=list)  # stages whose outputs it reads


@dataclass
class Plan:
    path: Path
    root: Path
    parameters: dict[str, RunParam]
    stages: list[Stage]

    def stage(self, name: str, option: str = "--only") -> Stage:
        for s in self.stages:
            if s.name == name:
                return s
        raise ConfigError(option, f"no stage {name!r} (stages: {', '.join(s.name for s in self.stages)})")


def load(path: str | Path, root: str | Path | None = None) -> Plan:
    p = Path(path)
    if not p.is_file():
        raise ConfigError("--plan", f"no such file: {p}")
    doc = load_yaml(p.read_text()) or {}
    root_dir = Path(root or Path.cwd()).resolve()
    params = {}
    for name, spec in (doc.get("parameters") or {}).items():
        spec = spec if isinstance(spec, dict) else {"default": spec}
        t = spec.get("type", "str")
        if t not in TYPES:
            raise ConfigError(f"parameters.{name}.type", f"one of {TYPES}, got {t!r}")
        must_exist = spec.get("must_exist", False)
        if not isinstance(must_exist, bool) or (must_exist and t != "path"):
            raise ConfigError(f"parameters.{name}.must_exist", "true or false, for a path parameter")
        params[name] = RunParam(name, t, spec.get("default"), spec.get("help", ""), must_exist)
    stages: list[Stage] = []
    names: set[str] = set()
    for i, s in enumerate(doc.get("stages") or []):
        where = f"stages[{i}]"
        if not isinstance(s, dict) or not s.get("name") or not s.get("notebook"):
            raise ConfigError(where, "a stage needs name and notebook")
        if s["name"] in names:
            raise ConfigError(f"{where}.name", f"duplicate stage {s['name']!r}")
        nb = (root_dir / s["notebook"]).resolve()
        if not nb.is_file():
            raise ConfigError(f"{where}.notebook", f"no such notebook: {nb}")
        if root_dir not in nb.parents:
            raise ConfigError(f"{where}.notebook", f"{nb} is outside the project {root_dir}")
        ups = []
        for v in (s.get("parameters") or {}).values():
            for ref in _REF.findall(str(v)):
                head = ref.split(".", 1)[0]
                if "." in ref:
                    if head not in names:
                        raise ConfigError(f"{where}.parameters", f"${{{ref}}}: no earlier stage {head!r}")
                    ups.append(head)
                elif ref not in params and ref not in ("root", "stage_dir", "run_dir"):
                    raise ConfigError(f"{where}.parameters", f"${{{ref}}}: not a run parameter")
        try:
            retries = int(s.get("retries", 0))
        except (TypeError, ValueError):
            raise ConfigError(f"{where}.retries", f"expects int, got {s.get('retries')!r}") from None
        stages.append(Stage(s["name"], nb, dict(s.get("parameters") or {}), _num(s, "timeout", where),
                            _num(s, "cell_timeout", where), retries, sorted(set(ups))))
        names.add(s["name"])
    if not stages:
        raise ConfigError("stages", "the plan has no stages")
    return Plan(p.resolve(), root_dir, params, stages)


def _num(s: dict, key: str, where: str) -> float | None:
    if s.get(key) is None:
        return None
    try:
        v = float(s[key])
    except (TypeError, ValueError):
        raise ConfigError(f"{where}.{key}", f"expects seconds, got {s[key]!r}") from None
    if v <= 0:
        raise ConfigError(f"{where}.{key}", "must be > 0")
    return v


def is_reference(value: Any) -> bool:
    """True for a value that is exactly one ``${...}`` reference."""
    return isinstance(value, str) and _REF.fullmatch(value) is not None


def substitute(value: Any, scope: dict[str, Any]) -> Any:
    """Resolve ``${...}`` in a plan value; a value that is exactly one reference keeps its type."""
    if not isinstance(value, str):
        return value
    m = _REF.fullmatch(value)
    if m:
        return _lookup(m.group(1), scope)
    return _REF.sub(lambda mm: str(_lookup(mm.group(1), scope)), value)


def _lookup(ref: str, scope: dict[str, Any]) -> Any:
    cur: Any = scope
    for part in ref.split("."):
        if not isinstance(cur, dict) or part not in cur:
            raise ConfigError(f"${{{ref}}}", "has no value (did the stage that provides it record it?)")
        cur = cur[part]
    return cur
