"""Reading YAML configs (job configs, feature specs) and turning validation errors into
ConfigErrors that name the field, e.g. ``steps[3].dedupe.keys`` or ``windows[0].size``."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from mlprep.errors import ConfigError


class _Yaml12Loader(yaml.SafeLoader):
    """YAML with 1.2 booleans: only true/false (so ``on:``, ``yes``, ``no`` stay strings)."""


_Yaml12Loader.yaml_implicit_resolvers = {
    k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:bool"]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def load_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_Yaml12Loader)


def read_mapping(source: str | Path | dict, what: str, field: str) -> dict[str, Any]:
    """A config as a dict: given as one, or read from a YAML file (errors name ``field``)."""
    if isinstance(source, dict):
        return source
    p = Path(source)
    if not p.is_file():
        raise ConfigError(field, f"no such {what}: {p}")
    try:
        raw = load_yaml(p.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(field, f"invalid YAML in {p}: {e}") from None
    if not isinstance(raw, dict):
        raise ConfigError(field, f"a {what} is a YAML mapping")
    return raw


def config_error(e: ValidationError, prefix: str = "") -> ConfigError:
    """The first validation error, located by its dotted field path."""
    err = e.errors()[0]
    loc = prefix
    for part in err["loc"]:
        loc += f"[{part}]" if isinstance(part, int) else (f".{part}" if loc else str(part))
    msg = err["msg"]
    if err["type"] == "extra_forbidden":
        msg = "unknown field"
    return ConfigError(loc or "config", msg)
