"""Typed parameters, one way for every config that takes them: a batch job config, a run plan
and its notebooks, a pipeline definition.

    Parameter      what a config declares: name, type, default, required, help, must_exist, choices
    coerce()       one value (command-line text, a YAML or JSON value) as a parameter's type
    resolve()      declared + given -> typed values: unknown names, required ones, defaults
    substitute()   ``${name}`` and ``${a.b}`` references in a value (and in its lists and mappings)
    resolve_path() a path value checked and made absolute against a base the caller states
    parse_cli()    ``-f FILE``, ``--secret NAME``, ``--param NAME=VALUE`` -> {name: value}

Types and what each accepts (``None`` is "no value" and passes through every type):

    str    text; a number or a path as its text (not a bool, a list or a mapping)
    int    an int, a float with no fraction, or text in Python's syntax (``1_000``, `` 7 ``);
           not a bool, not ``1.5``, not ``1e3``
    float  an int or a float (not a bool), or text (``0.5``, ``1e-3``, ``1_000.5``, ``inf``)
    bool   a bool, 0 or 1, or text true/false, 1/0, yes/no (any case)
    date   a date, or ISO 8601 text (``2026-11-05``)
    path   see :func:`resolve_path`: the result is absolute text, or an s3:// / file:// URL
    any    taken as given (a notebook parameter annotated with another type, or none)

SageMaker's type names (String, Integer, Float, Boolean) are accepted for str, int, float and
bool and are the names errors use, so a pipeline's parameter reads "expected Integer".

Every error is a :class:`~mlprep.errors.ConfigError` naming the field the caller passes (e.g.
``parameters.rows: expected int, got 'abc'``); the default field is ``parameters.NAME``.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlprep.errors import ConfigError

TYPES = ("str", "int", "float", "bool", "date", "path", "any")
SAGEMAKER_TYPES = {"String": "str", "Integer": "int", "Float": "float", "Boolean": "bool"}
TRUE, FALSE = ("true", "1", "yes"), ("false", "0", "no")
URL_SCHEMES = ("s3", "file")  # path values that pass through as given

# ${name} or ${a.b.c}: a name, then dotted keys into mappings
_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)*)\}")


@dataclass(frozen=True)
class Parameter:
    """A declared parameter. ``type`` is one of :data:`TYPES` or a SageMaker type name;
    ``required`` None means "required when there is no default"."""

    name: str
    type: str = "str"
    default: Any = None
    required: bool | None = None
    help: str = ""
    must_exist: bool = False  # a path that has to exist (local paths; URLs are not checked)
    choices: tuple[Any, ...] | None = None  # the allowed values (after coercion)
    secret: bool = False  # its value is masked wherever it could be written

    def __post_init__(self) -> None:
        if self.kind not in TYPES:
            known = ", ".join((*TYPES, *SAGEMAKER_TYPES))
            raise ValueError(f"parameter {self.name}: unknown type {self.type!r} (one of {known})")

    @property
    def kind(self) -> str:
        """The type, with a SageMaker name mapped to its own (``Integer`` -> ``int``)."""
        return SAGEMAKER_TYPES.get(self.type, self.type)

    @property
    def is_required(self) -> bool:
        return self.default is None if self.required is None else self.required


def _plain_text(value: str) -> str:
    """Text for a number: stripped, ASCII only (``int('١٢')`` would be 12)."""
    text = value.strip()
    if not text.isascii():
        raise ValueError(text)
    return text


def _to_str(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool) or not isinstance(value, int | float | dt.date | os.PathLike):
        raise TypeError(value)
    return os.fspath(value) if isinstance(value, os.PathLike) else str(value)


def _to_int(value: Any) -> int:
    if isinstance(value, bool):
        raise TypeError(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError(value)
        return int(value)
    if isinstance(value, str):
        return int(_plain_text(value))
    raise TypeError(value)


def _to_float(value: Any) -> float:
    if isinstance(value, bool):
        raise TypeError(value)
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        return float(_plain_text(value))
    raise TypeError(value)


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    text = value.strip().lower() if isinstance(value, str) else None
    if text in TRUE or text in FALSE:
        return text in TRUE
    raise ValueError(value)


def _to_date(value: Any) -> dt.date:
    if isinstance(value, dt.date):
        return value
    if isinstance(value, str):
        return dt.date.fromisoformat(value.strip())
    raise TypeError(value)


_CONVERT: dict[str, Callable[[Any], Any]] = {
    "str": _to_str, "int": _to_int, "float": _to_float, "bool": _to_bool, "date": _to_date,
    "any": lambda value: value,
}


def coerce(param: Parameter, value: Any, where: str | None = None, *, base: Path | None = None) -> Any:
    """``value`` as ``param``'s type; ``where`` names the field in errors (default
    ``parameters.NAME``). A path is resolved against ``base`` (see :func:`resolve_path`)."""
    where = where or f"parameters.{param.name}"
    if value is None:
        return None
    if param.kind == "path":
        out: Any = resolve_path(value, where, base, must_exist=param.must_exist, help=param.help)
    else:
        try:
            out = _CONVERT[param.kind](value)
        except (TypeError, ValueError, OverflowError):
            raise ConfigError(where, f"expected {param.type}, got {value!r}") from None
    if param.choices is not None and out not in param.choices:
        raise ConfigError(where, f"must be one of {list(param.choices)}, got {out!r}")
    return out


def resolve_path(value: Any, where: str, base: Path | None, *, must_exist: bool = False, help: str = "") -> str:
    """A path parameter's value: no NUL or line break; an ``s3://`` or ``file://`` URL as given;
    otherwise ``~`` expanded and made absolute against ``base`` (itself absolute: never the
    working directory implicitly). ``must_exist``: a local path has to exist."""
    text = os.fspath(value) if isinstance(value, str | os.PathLike) else None
    if not isinstance(text, str):
        raise ConfigError(where, f"expected path, got {value!r}")
    if not text or any(c in text for c in "\0\n\r"):
        raise ConfigError(where, f"not a valid path: {text!r}")
    if "://" in text:
        scheme = text.split("://", 1)[0]
        if scheme not in URL_SCHEMES:
            raise ConfigError(where, f"unsupported URL scheme {scheme!r} (local paths, s3:// or file://)")
        return text
    path = Path(os.path.expanduser(text))
    if not path.is_absolute():
        if base is None or not Path(base).is_absolute():
            raise ValueError(f"{where}: relative path {text!r} needs an absolute base, got {base!r}")
        path = Path(base) / path
    path = path.resolve()
    if must_exist and not path.exists():
        raise ConfigError(where, f"{path} does not exist" + (f" ({help})" if help else ""))
    return str(path)


def resolve(declared: Mapping[str, Parameter], given: Mapping[str, Any], *, base: Path | None = None,
            field: str = "parameters.{name}", what: str = "parameter") -> dict[str, Any]:
    """Typed values of every declared parameter: given (``None`` counts as not given), else the
    default, else ``None`` for an optional one; an unknown or a missing required name is an error.
    ``field`` names a parameter in errors (``{name}`` is replaced); ``what`` is what an unknown
    name is not ("not a parameter")."""
    unknown = sorted(set(given) - set(declared))
    if unknown:
        raise ConfigError(field.format(name=unknown[0]),
                          f"not a {what} (declared: {', '.join(declared) or 'none'})")
    values: dict[str, Any] = {}
    for name, param in declared.items():
        where = field.format(name=name)
        value = given.get(name)
        if value is None:
            value = param.default
        if value is None and param.is_required:
            hint = f"; {param.help}" if param.help else ""
            raise ConfigError(where, f"required parameter not given (--param {name}=VALUE{hint})")
        values[name] = coerce(param, value, where, base=base)
    return values


def is_reference(value: Any) -> bool:
    """True for a value that is exactly one ``${...}`` reference."""
    return isinstance(value, str) and _REF.fullmatch(value) is not None


def references(value: Any) -> list[str]:
    """The references in a value, in order (``"${a.b}/x"`` -> ``["a.b"]``), in its lists and
    mappings too."""
    if isinstance(value, str):
        return _REF.findall(value)
    items: Iterable[Any] = value.values() if isinstance(value, Mapping) else value if isinstance(value, list) else ()
    return [ref for item in items for ref in references(item)]


def substitute(value: Any, scope: Mapping[str, Any], where: str = "", *, text: bool = False) -> Any:
    """Replace ``${name}`` / ``${a.b}`` (a dotted lookup in nested mappings) in ``value``, in
    its lists and mappings too. A value that is exactly one reference keeps the referenced
    value's type unless ``text``; a reference inside text becomes text (``None`` as empty).
    A reference with no value is a ConfigError naming ``where`` (for a mapping's items
    ``where.key``, for a list's ``where[i]``)."""
    if isinstance(value, str):
        whole = _REF.fullmatch(value)
        if whole and not text:
            return _lookup(whole.group(1), scope, where)
        return _REF.sub(lambda m: _as_text(_lookup(m.group(1), scope, where)), value)
    if isinstance(value, list):
        return [substitute(v, scope, f"{where}[{i}]", text=text) for i, v in enumerate(value)]
    if isinstance(value, Mapping):
        return {k: substitute(v, scope, f"{where}.{k}" if where else str(k), text=text) for k, v in value.items()}
    return value


def _as_text(value: Any) -> str:
    return "" if value is None else str(value)


def _lookup(ref: str, scope: Mapping[str, Any], where: str) -> Any:
    parts = ref.split(".")
    if parts[0] not in scope:
        raise ConfigError(where or "${" + ref + "}", f"unknown reference ${{{ref}}} (known: {', '.join(scope)})")
    cur = scope[parts[0]]
    for i, part in enumerate(parts[1:], 1):
        if not isinstance(cur, Mapping) or part not in cur:
            raise ConfigError(where or "${" + ref + "}",
                              f"${{{ref}}} has no value ({'.'.join(parts[:i])} has no {part!r})")
        cur = cur[part]
    return cur


# --- the command line: -f FILE, --secret NAME, --param NAME=VALUE

def parse_cli(pairs: list[str] | None, files: list[str] | None = None, secrets: list[str] | None = None
              ) -> dict[str, Any]:
    """Parameters from ``-f FILE`` (YAML; a mapping under a stage's name gives STAGE.NAME), then
    ``--secret NAME`` (environment or prompt), then ``--param NAME=VALUE``: later ones win.
    Values are text, or what the YAML says; :func:`resolve` or :func:`coerce` types them."""
    out: dict[str, Any] = {}
    for f in files or []:
        out.update(read_file(f))
    for name in secrets or []:
        out[name] = read_secret(name)
    for p in pairs or []:
        if "=" not in p:
            raise ConfigError("--param", f"expected name=value, got {p!r}")
        k, v = p.split("=", 1)
        out[k.strip()] = v
    return out


def read_file(path: str) -> dict[str, Any]:
    """``-f FILE``: ``name: value`` lines, or ``STAGE: {name: value}`` for ``STAGE.name``."""
    import yaml

    from mlprep.yamlconf import load_yaml

    try:
        doc = load_yaml(Path(path).read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError(f"-f {path}", e.strerror or str(e)) from None
    except (ValueError, ConfigError, yaml.YAMLError) as e:
        mark = getattr(e, "problem_mark", None)
        at = f" (line {mark.line + 1})" if mark is not None else ""
        raise ConfigError(f"-f {path}", f"not a YAML mapping{at}: {str(e).splitlines()[0]}") from None
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise ConfigError(f"-f {path}", "expected a mapping of name: value")
    out: dict[str, Any] = {}
    for k, v in doc.items():
        if isinstance(v, dict):  # stage: {name: value}
            out.update({f"{k}.{n}": x for n, x in v.items()})
        else:
            out[str(k)] = v
    return out


def secret_env(name: str) -> str:
    """The environment variable ``--secret NAME`` reads: MLPREP_SECRET_ + NAME in capitals."""
    return "MLPREP_SECRET_" + re.sub(r"[^A-Za-z0-9]", "_", name).upper()


def read_secret(name: str) -> str:
    """``--secret NAME``: from the environment (:func:`secret_env`), or asked on a terminal."""
    env = secret_env(name)
    if env in os.environ:
        return os.environ[env]
    if sys.stdin.isatty():
        import getpass

        return getpass.getpass(f"{name}: ")
    raise ConfigError(f"--secret {name}", f"set {env} in the environment (or run on a terminal to be asked)")
