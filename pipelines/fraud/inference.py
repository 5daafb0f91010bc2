"""Inference handlers in the SageMaker scikit-learn serving contract: ``model_fn(model_dir)``,
``input_fn(body, content_type)``, ``predict_fn(data, model)``, ``output_fn(prediction, accept)``.

Payloads: text/csv (rows of feature values in training order, with or without a header row) or
application/json (``{"instances": [{feature: value}, ...]}`` or a list of such objects). A
payload the model cannot score raises ``PayloadError`` (a ``ValueError``: the server answers 400).
Returns the fraud probability per row.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import joblib
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


def input_fn(body: bytes | str, content_type: str) -> pd.DataFrame:
    """Parse a request into a frame: named columns, or positional ones for a CSV without header."""
    try:
        text = body.decode("utf-8") if isinstance(body, bytes) else body
    except UnicodeDecodeError:
        raise PayloadError("payload is not UTF-8 text") from None
    if not text.strip():
        raise PayloadError("empty payload")
    ctype = (content_type or "").split(";")[0].strip().lower()
    if ctype == "text/csv":
        first = text.lstrip().split("\n", 1)[0].split(",")
        header = not all(_is_number(c) for c in first)
        try:
            return pd.read_csv(io.StringIO(text), header=0 if header else None)
        except (ValueError, pd.errors.ParserError) as e:
            raise PayloadError(f"invalid CSV: {e}") from None
    if ctype == "application/json":
        try:
            data = json.loads(text)
        except ValueError as e:
            raise PayloadError(f"invalid JSON: {e}") from None
        rows = data.get("instances") if isinstance(data, dict) else data
        if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) for r in rows):
            raise PayloadError('expected {"instances": [{feature: value, ...}, ...]} or a list of objects')
        return pd.DataFrame(rows)
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
