"""Feature specs: per-entity aggregations over event-time windows, declared apart from the
engine that computes them (in the spirit of Feast stream feature views / Tecton aggregations).

    spec = load_spec("conf/features/transactions.yaml")
    spec.feature_names()  # ['txn_count_5m', 'amount_sum_5m', ...]

Times are milliseconds internally; durations in YAML read ``500ms``, ``30s``, ``5m``, ``1h``,
``1d``. Windows are [start, end) and aligned to the epoch (offset 0), as Flink's are.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mlprep.errors import ConfigError
from mlprep.stream.aggregations import AGGREGATIONS, NAMES
from mlprep.yamlconf import config_error, read_mapping

_DURATION = re.compile(r"^\s*(\d+)\s*(ms|s|m|h|d)\s*$")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
FUNCTIONS = NAMES  # the aggregation functions, in the order errors list them
FunctionName = Literal[FUNCTIONS]  # pydantic checks the name (and lists them) as for a literal


def duration_ms(value: str | int, where: str = "duration") -> int:
    """``"5m"`` -> 300000; an int is taken as milliseconds."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    m = _DURATION.match(str(value))
    if not m:
        raise ConfigError(where, f"not a duration: {value!r} (e.g. 500ms, 30s, 5m, 1h, 1d)")
    return int(m.group(1)) * _UNIT_MS[m.group(2)]


def _duration(value: Any) -> int:
    try:
        return duration_ms(value)
    except ConfigError as e:  # inside a model: pydantic names the field
        raise ValueError(str(e).split(": ", 1)[1]) from None


def format_duration(ms: int) -> str:
    for unit in ("d", "h", "m", "s"):
        if ms % _UNIT_MS[unit] == 0:
            return f"{ms // _UNIT_MS[unit]}{unit}"
    return f"{ms}ms"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Window(_Model):
    """``tumbling`` (size), ``hopping`` (size, slide; size a multiple of slide) or ``session``
    (gap). ``name`` is the suffix of the feature columns (default: the size or gap, e.g. 5m)."""

    type: Literal["tumbling", "hopping", "session"]
    size: int | None = None
    slide: int | None = None
    gap: int | None = None
    name: str | None = None

    @field_validator("size", "slide", "gap", mode="before")
    @classmethod
    def _ms(cls, v: Any) -> Any:
        return None if v is None else _duration(v)

    @model_validator(mode="after")
    def _check(self) -> Window:
        if self.type in ("tumbling", "hopping") and not self.size:
            raise ValueError(f"{self.type} windows need size")
        if self.type == "hopping" and (not self.slide or self.size % self.slide):
            raise ValueError("hopping windows need slide, and size a multiple of slide")
        if self.type == "session" and not self.gap:
            raise ValueError("session windows need gap")
        if self.name is None:
            self.name = format_duration(self.gap if self.type == "session" else self.size)
            if self.type == "session":
                self.name = "session" + self.name
            elif self.type == "hopping":
                self.name = f"{self.name}_every{format_duration(self.slide)}"
        return self


class Aggregation(_Model):
    name: str
    function: FunctionName
    column: str | None = None  # needed by the functions that read one (all but count)

    @model_validator(mode="after")
    def _column(self) -> Aggregation:
        if AGGREGATIONS[self.function].column and not self.column:
            raise ValueError(f"{self.function} needs column")
        return self


class EventTime(_Model):
    field: str
    format: Literal["iso8601", "epoch_ms", "epoch_s"] = "iso8601"
    # a time outside these years is a typo, and one far-future event would move the watermark
    # past every later event: such events are dead letters (as the batch job's timestamps range)
    min_year: int = Field(1900, ge=1, le=9999)
    max_year: int = Field(2200, ge=1, le=9999)

    @model_validator(mode="after")
    def _years_in_order(self) -> EventTime:
        if self.min_year > self.max_year:
            raise ValueError(f"min_year {self.min_year} > max_year {self.max_year}")
        return self


class FeatureSpec(_Model):
    name: str
    description: str = ""
    entity: list[str] = Field(min_length=1)
    event_time: EventTime
    fields: dict[str, Literal["string", "double", "long", "boolean"]] = {}  # typed input fields
    filter: str | None = None  # SQL condition on the fields (polars SQL)
    max_out_of_orderness: int = 0  # watermark = max event time seen - this
    allowed_lateness: int = 0  # windows accept (and re-emit) late events this long after firing
    windows: list[Window] = Field(min_length=1)
    aggregations: list[Aggregation] = Field(min_length=1)

    @field_validator("max_out_of_orderness", "allowed_lateness", mode="before")
    @classmethod
    def _ms(cls, v: Any) -> Any:
        return _duration(v)

    @model_validator(mode="after")
    def _names(self) -> FeatureSpec:
        names = [w.name for w in self.windows]
        if len(set(names)) != len(names):
            raise ValueError(f"window names must be unique: {names}")
        aggs = [a.name for a in self.aggregations]
        if len(set(aggs)) != len(aggs):
            raise ValueError(f"aggregation names must be unique: {aggs}")
        for a in self.aggregations:
            if a.column and self.fields and a.column not in self.fields and a.column not in self.entity:
                raise ValueError(f"aggregation {a.name}: column {a.column!r} is not in fields")
        return self

    def feature_names(self, window: Window | None = None) -> list[str]:
        ws = [window] if window else self.windows
        return [f"{a.name}_{w.name}" for w in ws for a in self.aggregations]


def load_spec(spec: str | Path | dict) -> FeatureSpec:
    """A spec from YAML (path) or a dict; errors name the field (``windows[0].size``)."""
    raw = read_mapping(spec, "feature spec", "spec")
    try:
        return FeatureSpec.model_validate(raw)
    except ValidationError as e:
        raise config_error(e) from None
