"""Inference handlers in the SageMaker scikit-learn serving contract: ``model_fn(model_dir)``,
``input_fn(body, content_type)``, ``predict_fn(data, model)``, ``output_fn(prediction, accept)``.

Payloads: text/csv (rows of feature values in training order, with or without a header row) or
application/json (``{"instances": [{feature: value}, ...]}`` or a list of such objects). A
payload the model cannot score raises ``PayloadError`` (a ``ValueError``: the server answers 400).
Returns the fraud probability per row.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import joblib
import numpy as np
import pandas as pd


class PayloadError(ValueError):
    """A payload the model cannot score (answered with HTTP 400 and this message)."""


def model_fn(model_dir: str) -> dict:
    return joblib.load(Path(model_dir) / "model.joblib")


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return text.strip() == ""  # an empty cell is a missing value


def _cell(text: str, row: int, col: int) -> float:
    """A CSV cell as a feature value: a finite number, or empty for a missing value."""
    if not text.strip():
        return math.nan
    try:
        value = float(text)
    except ValueError:
        raise PayloadError(f"row {row}, column {col}: not a number: {text[:40]!r}") from None
    if not math.isfinite(value):
        raise PayloadError(f"row {row}, column {col}: not a finite number: {text[:40]!r}")
    return value


def _csv(text: str) -> pd.DataFrame:
    rows = [r for r in csv.reader(io.StringIO(text)) if r]
    # a header is names only: a row of numbers with a typo in it is a data row with a bad cell
    header = rows[0] if not any(_is_number(c) for c in rows[0]) else None
    body = rows[1:] if header else rows
    width = len(header or rows[0])
    for i, r in enumerate(body, 2 if header else 1):
        if len(r) != width:  # a short row is not padded with missing values: it is an error
            raise PayloadError(f"row {i} has {len(r)} values, the first has {width}")
    values = [[_cell(c, i, j) for j, c in enumerate(r, 1)] for i, r in enumerate(body, 2 if header else 1)]
    return pd.DataFrame(np.array(values, dtype=np.float64).reshape(len(values), width), columns=header)


def _json(text: str) -> pd.DataFrame:
    def constant(name: str) -> None:
        raise PayloadError(f"{name} is not a JSON number")

    def number(t: str) -> float:
        v = float(t)
        if not math.isfinite(v):
            raise PayloadError(f"number out of range: {t[:40]}")
        return v

    try:
        data = json.loads(text, parse_constant=constant, parse_float=number)
    except RecursionError:
        raise PayloadError("JSON nested too deeply") from None
    except PayloadError:
        raise
    except ValueError as e:
        raise PayloadError(f"invalid JSON: {e}") from None
    rows = data.get("instances") if isinstance(data, dict) else data
    if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) for r in rows):
        raise PayloadError('expected {"instances": [{feature: value, ...}, ...]} or a list of objects')
    for i, r in enumerate(rows, 1):
        for k, v in r.items():
            if v is not None and (isinstance(v, bool) or not isinstance(v, int | float)):
                raise PayloadError(f"instance {i}, {k}: not a number: {str(v)[:40]!r}")
    return pd.DataFrame(rows)


def input_fn(body: bytes | str, content_type: str) -> pd.DataFrame:
    """Parse a request into a frame: named columns, or positional ones for a CSV without header.
    Every value is a finite number or missing (an empty CSV cell, a JSON null); rows have one
    width. Anything else is a ``PayloadError`` (HTTP 400), never a silently padded row."""
    try:
        text = body.decode("utf-8") if isinstance(body, bytes) else body
    except UnicodeDecodeError:
        raise PayloadError("payload is not UTF-8 text") from None
    if not text.strip():
        raise PayloadError("empty payload")
    ctype = (content_type or "").split(";")[0].strip().lower()
    if ctype == "text/csv":
        try:
            return _csv(text)
        except csv.Error as e:
            raise PayloadError(f"invalid CSV: {e}") from None
    if ctype == "application/json":
        return _json(text)
    raise PayloadError(f"unsupported content type {content_type!r} (text/csv, application/json)")


def predict_fn(data: pd.DataFrame, bundle: dict) -> list[float]:
    features = bundle["features"]
    if not any(isinstance(c, str) for c in data.columns):  # CSV without header: training order
        if data.shape[1] != len(features):
            raise PayloadError(f"expected {len(features)} values per row ({', '.join(features)}), "
                               f"got {data.shape[1]}")
        data = data.set_axis(features, axis=1)
    missing = [f for f in features if f not in data.columns]
    if missing:
        raise PayloadError(f"missing features: {', '.join(missing)}")
    try:
        x = data[features].astype(float)
    except (TypeError, ValueError) as e:
        raise PayloadError(f"non-numeric feature value: {e}") from None
    return bundle["model"].predict_proba(x)[:, 1].tolist()


def output_fn(prediction: list[float], accept: str) -> tuple[str, str]:
    if (accept or "application/json").startswith("text/csv"):
        return "\n".join(f"{p:.6f}" for p in prediction) + "\n", "text/csv"
    return json.dumps({"predictions": prediction}), "application/json"
