"""A run plan: the stage notebooks, in order, and how each one's parameters are wired
(``conf/run/demo.yaml``). Kept apart from the code that executes it.

    root: ../..                    # the project, relative to this file (default: this file's folder)
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

One base for relative paths, the plan's **root**: the folder ``root:`` names (relative to the
plan file), by default the plan file's own folder; ``load(path, root=...)`` states another. A
stage's notebook, and a ``path`` run parameter's default or given value (``--param
data_dir=demo/data``), are resolved against it, never against the working directory: a notebook
receives absolute paths, so nothing downstream depends on where ``mlprep run`` was started.
Run parameters are :class:`mlprep.params.Parameter` (types str, int, float, bool, path).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlprep.errors import ConfigError
from mlprep.params import Parameter, coerce, references, resolve
from mlprep.yamlconf import load_yaml

TYPES = ("str", "int", "float", "bool", "path")  # of run parameters
BUILTINS = ("root", "stage_dir", "run_dir")  # names a stage's parameters may refer to besides run parameters


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
    root: Path  # absolute: the base of every relative path in the plan and its run parameters
    parameters: dict[str, Parameter]
    stages: list[Stage]

    def stage(self, name: str, option: str = "--only") -> Stage:
        for s in self.stages:
            if s.name == name:
                return s
        raise ConfigError(option, f"no stage {name!r} (stages: {', '.join(s.name for s in self.stages)})")

    def values(self, given: dict[str, Any]) -> dict[str, Any]:
        """The run parameters' typed values (paths absolute against the root) from ``given``
        (run parameters only) and the defaults."""
        return resolve(self.parameters, given, base=self.root, field="--param {name}", what="run parameter")


def load(path: str | Path, root: str | Path | None = None) -> Plan:
    """The plan at ``path``; ``root`` (if given) instead of the one the plan states."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError("--plan", f"no such file: {p}")
    p = p.resolve()
    doc = load_yaml(p.read_text()) or {}
    root_dir = Path(root).resolve() if root is not None else _root(doc, p)
    params = _parameters(doc.get("parameters") or {})
    stages: list[Stage] = []
    for i, s in enumerate(doc.get("stages") or []):
        stages.append(_stage(s, f"stages[{i}]", root_dir, params, [st.name for st in stages]))
    if not stages:
        raise ConfigError("stages", "the plan has no stages")
    return Plan(p, root_dir, params, stages)


def _root(doc: dict, plan_file: Path) -> Path:
    stated = doc.get("root", ".")
    if not isinstance(stated, str) or not stated:
        raise ConfigError("root", f"a folder relative to the plan file, got {stated!r}")
    root = (plan_file.parent / stated).resolve()
    if not root.is_dir():
        raise ConfigError("root", f"{root} is not a folder")
    return root


def _parameters(specs: dict) -> dict[str, Parameter]:
    out = {}
    for name, spec in specs.items():
        spec = spec if isinstance(spec, dict) else {"default": spec}
        t = spec.get("type", "str")
        if t not in TYPES:
            raise ConfigError(f"parameters.{name}.type", f"one of {TYPES}, got {t!r}")
        must_exist = spec.get("must_exist", False)
        if not isinstance(must_exist, bool) or (must_exist and t != "path"):
            raise ConfigError(f"parameters.{name}.must_exist", "true or false, for a path parameter")
        out[name] = Parameter(name, t, spec.get("default"), help=spec.get("help", ""), must_exist=must_exist)
    return out


def _stage(s: Any, where: str, root: Path, params: dict[str, Parameter], earlier: list[str]) -> Stage:
    if not isinstance(s, dict) or not s.get("name") or not s.get("notebook"):
        raise ConfigError(where, "a stage needs name and notebook")
    if s["name"] in earlier:
        raise ConfigError(f"{where}.name", f"duplicate stage {s['name']!r}")
    nb = (root / s["notebook"]).resolve()
    if not nb.is_file():
        raise ConfigError(f"{where}.notebook", f"no such notebook: {nb}")
    if root not in nb.parents:
        raise ConfigError(f"{where}.notebook", f"{nb} is outside the project {root}")
    values = dict(s.get("parameters") or {})
    ups = []
    for ref in references(values):
        head = ref.split(".", 1)[0]
        if "." in ref:
            if head not in earlier:
                raise ConfigError(f"{where}.parameters", f"${{{ref}}}: no earlier stage {head!r}")
            ups.append(head)
        elif ref not in params and ref not in BUILTINS:
            raise ConfigError(f"{where}.parameters", f"${{{ref}}}: not a run parameter")
    retries = coerce(Parameter("retries", "int"), s.get("retries", 0), f"{where}.retries")
    if retries is None:
        raise ConfigError(f"{where}.retries", "expected int, got None")
    return Stage(s["name"], nb, values, _num(s, "timeout", where), _num(s, "cell_timeout", where), retries,
                 sorted(set(ups)))


def _num(s: dict, key: str, where: str) -> float | None:
    if s.get(key) is None:
        return None
    try:
        v = float(s[key])
    except (TypeError, ValueError):
        raise ConfigError(f"{where}.{key}", f"expected seconds, got {s[key]!r}") from None
    if v <= 0:
        raise ConfigError(f"{where}.{key}", "must be > 0")
    return v
