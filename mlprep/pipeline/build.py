"""A pipeline's definition JSON and its staged code, built offline (no network, no AWS
credentials) from a factory, ``get_pipeline(**kwargs)`` returning an SDK ``Pipeline``.

A pipeline reference (``--pipeline REF``) is one of:

    package.module:get_pipeline       an importable module and its factory
    path/to/pipeline.py:get_pipeline  a file, loaded by its path (the import path is left alone)
    path/to/definition.json           a definition built already, with its ``<name>.code/`` sidecar

``:get_pipeline`` may be left off. A factory's module may offer ``code_bundles(default_bucket,
base_job_prefix)``: the code its steps name, staged beside the definition (``<name>.code/``, see
``mlprep.pipeline.staging``). The output is byte-identical across runs for the same code and
keyword arguments.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import json
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from mlprep.errors import ConfigError
from mlprep.pipeline import staging

FUNCTION = "get_pipeline"
# the SageMaker project template's layout, looked for in the current folder when no REF is given
DEFAULT_REF = "pipelines/fraud/pipeline.py:get_pipeline"
FIELD = "--pipeline"
_IDENTIFIER = re.compile(r"^[A-Za-z_]\w*$")
_MODULE = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")
_NOT_WORD = re.compile(r"\W")
_BUNDLE_KWARGS = ("default_bucket", "base_job_prefix")


@dataclass(frozen=True)
class Ref:
    """A parsed pipeline reference: ``kind`` is ``module``, ``file`` or ``definition``."""

    kind: str
    target: str
    function: str = FUNCTION

    @property
    def name(self) -> str:
        """The pipeline's short name: ``<name>`` of ``pipelines/<name>/pipeline.py`` (or of
        ``pipelines.<name>.pipeline``), else the file's or module's own name; a definition's stem."""
        if self.kind == "definition":
            return Path(self.target).stem
        parts = Path(self.target).with_suffix("").parts if self.kind == "file" else tuple(self.target.split("."))
        if len(parts) > 1 and parts[-1] == "pipeline":
            return parts[-2]
        return parts[-1]


@dataclass(frozen=True)
class Factory:
    """A pipeline factory and the module it lives in."""

    ref: Ref
    module: ModuleType
    function: Callable[..., Any]

    def build(self, kwargs: Mapping[str, Any]) -> tuple[str, list[staging.CodeBundle]]:
        """(definition JSON text, code bundles) of ``function(**kwargs)``."""
        name = f"{self.ref.target}:{self.ref.function}"
        try:
            inspect.signature(self.function).bind(**kwargs)
        except TypeError as e:
            raise ConfigError(FIELD, f"{name} cannot be called with {', '.join(kwargs) or 'no arguments'}: {e}") from None
        except ValueError:
            pass  # a builtin without a signature: the call says
        pipeline = self.function(**kwargs)
        if not callable(getattr(pipeline, "definition", None)):
            raise ConfigError(FIELD, f"{name} returned {type(pipeline).__name__}, not a Pipeline")
        text = json.dumps(json.loads(pipeline.definition()), indent=2) + "\n"
        return text, self.code_bundles(kwargs)

    def code_bundles(self, kwargs: Mapping[str, Any]) -> list[staging.CodeBundle]:
        make = getattr(self.module, "code_bundles", None)
        if make is None:
            return []
        return list(make(**{k: v for k, v in kwargs.items() if k in _BUNDLE_KWARGS}).values())


def parse_ref(ref: str | Path) -> Ref:
    """``ref`` as a :class:`Ref` (a ConfigError naming ``--pipeline`` if it is none of the three)."""
    text = str(ref).strip()
    if not text:
        raise ConfigError(FIELD, "empty pipeline reference")
    if text.endswith(".json"):
        return Ref("definition", text, "")
    target, function = text, FUNCTION
    head, sep, tail = text.rpartition(":")
    if sep and _IDENTIFIER.match(tail):
        target, function = head, tail
    if target.endswith(".py") or "/" in target or "\\" in target:
        return Ref("file", target, function)
    if not _MODULE.match(target):
        raise ConfigError(FIELD, f"not module:function, path/to/pipeline.py:function or a .json definition: {text!r}")
    return Ref("module", target, function)


def default_ref(cwd: Path | None = None) -> str:
    """``pipelines/fraud/pipeline.py:get_pipeline`` if the current folder has it."""
    base = Path(cwd) if cwd is not None else Path.cwd()
    if (base / DEFAULT_REF.split(":")[0]).is_file():
        return DEFAULT_REF
    raise ConfigError(FIELD, f"no pipeline given and {DEFAULT_REF.split(':')[0]} is not in the current folder: pass "
                             "--pipeline module:function, path/to/pipeline.py:function or a definition .json")


def load_module(ref: str | Path | Ref) -> ModuleType:
    """The module of a factory reference: imported by name, or loaded from its file under a
    name of its own (the same module again for the same file)."""
    r = ref if isinstance(ref, Ref) else parse_ref(ref)
    if r.kind == "definition":
        raise ConfigError(FIELD, f"{r.target} is a built definition, not a factory's module")
    return _load_file(Path(r.target)) if r.kind == "file" else _import(r.target)


def load_factory(ref: str | Path | Ref) -> Factory:
    """The factory ``ref`` names (a ConfigError if its module or function is not there)."""
    r = ref if isinstance(ref, Ref) else parse_ref(ref)
    module = load_module(r)
    function = getattr(module, r.function, None)
    if not callable(function):
        raise ConfigError(FIELD, f"{r.target} has no function {r.function}()")
    return Factory(r, module, function)


def accepts(factory: Factory, name: str) -> bool:
    """Whether the factory takes keyword argument ``name``."""
    params = inspect.signature(factory.function).parameters
    return name in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def build(ref: str | Path | Ref, kwargs: Mapping[str, Any] | None = None) -> tuple[str, list[staging.CodeBundle]]:
    """(definition JSON text, code bundles) for ``ref``: built by its factory with ``kwargs``, or
    read from a built definition and its sidecar (which takes no ``kwargs``)."""
    r = ref if isinstance(ref, Ref) else parse_ref(ref)
    if r.kind != "definition":
        return load_factory(r).build(kwargs or {})
    if kwargs:
        raise ConfigError(FIELD, f"{r.target} is built already: it takes no arguments ({', '.join(kwargs)})")
    path = Path(r.target)
    if not path.is_file():
        raise ConfigError(FIELD, f"no such definition: {path}")
    return path.read_text(), staging.read_sidecar(path)


def write(out: str | Path, ref: str | Path | Ref, kwargs: Mapping[str, Any] | None = None) -> Path:
    """Write the definition to ``out`` and its code to ``<out>.code/``; returns ``out``."""
    text, bundles = build(ref, kwargs)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    staging.write_sidecar(out, bundles)
    return out


def _import(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as e:
        if e.name and (name == e.name or name.startswith(e.name + ".")):
            raise ConfigError(FIELD, f"no module named {e.name!r} (a file is given as "
                                     "path/to/pipeline.py:function)") from None
        raise


def _load_file(path: Path) -> ModuleType:
    path = path.resolve()
    if not path.is_file():
        raise ConfigError(FIELD, f"no such file: {path}")
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:12]
    name = f"mlprep_pipeline_{_NOT_WORD.sub('_', path.stem)}_{digest}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ConfigError(FIELD, f"not a Python file: {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # registered while it runs, as an import would (dataclasses look it up)
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module
