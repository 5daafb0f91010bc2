"""A SageMaker pipeline definition (JSON, schema version 2020-12-01) read for execution:
parameters with their types (:class:`mlprep.params.Parameter`), steps flattened out of condition
branches, and the order they run.

Dependencies are what SageMaker derives: ``DependsOn``, every ``Steps.<name>`` reference in a
step's arguments, and, for a step inside ``IfSteps`` / ``ElseSteps``, its condition step.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlprep.errors import ConfigError
from mlprep.params import SAGEMAKER_TYPES, Parameter, resolve

SUPPORTED = {"Processing", "Training", "Condition", "Fail", "Model", "RegisterModel", "EndpointConfig",
             "Endpoint"}
_STEP_REF = re.compile(r"^Steps\.([^.\[]+)")


@dataclass
class Step:
    name: str
    type: str
    arguments: Any
    depends_on: list[str] = field(default_factory=list)
    property_files: list[dict] = field(default_factory=list)
    cache: dict | None = None
    retry_policies: list[dict] = field(default_factory=list)
    display_name: str | None = None
    description: str | None = None
    branch: tuple[str, bool] | None = None  # (condition step, True for IfSteps)
    upstream: set[str] = field(default_factory=set)


@dataclass
class Definition:
    raw: dict
    parameters: dict[str, Parameter]
    steps: dict[str, Step]
    order: list[str]

    def resolve_parameters(self, overrides: dict[str, Any]) -> dict[str, Any]:
        """Every parameter's value: an override (CLI text or JSON value) as its type, else its
        default; an unknown name or a missing value is an error naming ``--param NAME``."""
        return resolve(self.parameters, overrides, field="--param {name}", what="parameter of this pipeline")


def step_refs(value: Any) -> set[str]:
    """Names of the steps a JSON expression refers to (``{"Get": "Steps.X..."}``)."""
    found: set[str] = set()
    if isinstance(value, dict):
        if isinstance(value.get("Get"), str):
            m = _STEP_REF.match(value["Get"])
            if m:
                found.add(m.group(1))
        for v in value.values():
            found |= step_refs(v)
    elif isinstance(value, list):
        for v in value:
            found |= step_refs(v)
    return found


def parse(raw: dict) -> Definition:
    if not isinstance(raw, dict) or not isinstance(raw.get("Steps"), list):
        raise ConfigError("definition", "not a pipeline definition: no Steps list")
    params: dict[str, Parameter] = {}
    for i, p in enumerate(raw.get("Parameters") or []):
        if "Name" not in p:
            raise ConfigError(f"Parameters[{i}]", "has no Name")
        params[p["Name"]] = _parameter(p, f"Parameters[{i}]")
    steps: dict[str, Step] = {}

    def add(s: dict, where: str, branch: tuple[str, bool] | None) -> None:
        name, typ = s.get("Name"), s.get("Type")
        if not name or not typ:
            raise ConfigError(where, "a step needs Name and Type")
        if name in steps:
            raise ConfigError(where, f"duplicate step name {name!r}")
        if typ not in SUPPORTED:
            raise ConfigError(f"{where}.Type", f"step type {typ!r} is not supported by the local executor "
                              f"(supported: {', '.join(sorted(SUPPORTED))})")
        step = Step(name, typ, s.get("Arguments") or {}, list(s.get("DependsOn") or []),
                    list(s.get("PropertyFiles") or []), s.get("CacheConfig"), list(s.get("RetryPolicies") or []),
                    s.get("DisplayName"), s.get("Description"), branch)
        steps[name] = step
        if typ == "Condition":
            for key, flag in (("IfSteps", True), ("ElseSteps", False)):
                for j, child in enumerate(step.arguments.get(key) or []):
                    add(child, f"{where}.Arguments.{key}[{j}]", (name, flag))

    for i, s in enumerate(raw["Steps"]):
        add(s, f"Steps[{i}]", None)
    for step in steps.values():
        args = step.arguments
        if step.type == "Condition":  # branches are children, not inputs
            args = {k: v for k, v in args.items() if k not in ("IfSteps", "ElseSteps")}
        ups = set(step.depends_on) | step_refs(args)
        if step.branch:
            ups.add(step.branch[0])
        for u in sorted(ups):
            if u not in steps:
                raise ConfigError(f"step {step.name}", f"refers to unknown step {u!r}")
        ups.discard(step.name)
        step.upstream = ups
    return Definition(raw, params, steps, _topological(steps))


def _parameter(p: dict, where: str) -> Parameter:
    """A definition's parameter: String, Integer, Float or Boolean, with EnumValues as choices."""
    typ, enum = p.get("Type", "String"), p.get("EnumValues")
    if typ not in SAGEMAKER_TYPES:
        raise ConfigError(f"{where}.Type", f"one of {', '.join(SAGEMAKER_TYPES)}, got {typ!r}")
    return Parameter(p["Name"], typ, p.get("DefaultValue"), choices=tuple(enum) if enum else None)


def _topological(steps: dict[str, Step]) -> list[str]:
    """Definition order where it allows (deterministic), upstream steps first."""
    order, state = [], {}

    def visit(name: str, path: list[str]) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            raise ConfigError("definition", f"dependency cycle: {' -> '.join([*path, name])}")
        state[name] = 1
        for u in sorted(steps[name].upstream, key=list(steps).index):
            visit(u, [*path, name])
        state[name] = 2
        order.append(name)

    for n in steps:
        visit(n, [])
    return order


def load(path: str | Path) -> Definition:
    p = Path(path)
    if not p.is_file():
        raise ConfigError("definition", f"no such file: {p}")
    try:
        raw = json.loads(p.read_text())
    except ValueError as e:
        raise ConfigError("definition", f"{p} is not JSON: {e}") from None
    return parse(raw)
