"""Inference handlers in the SageMaker scikit-learn serving contract: model_fn, input_fn,
predict_fn, output_fn. Payloads: text/csv (rows of feature values, in training order, with or
without a header) or application/json ({"instances": [{feature: value}, ...]} or a list)."""

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


def input_fn(body: bytes | str, content_type: str, features: list[str]) -> pd.DataFrame:
    text = body.decode("utf-8") if isinstance(body, bytes) else body
    ctype = (content_type or "").split(";")[0].strip().lower()
    if ctype == "text/csv":
        first = text.lstrip().split("\n", 1)[0]
        header = first.split(",")[0].strip() in features
        df = pd.read_csv(io.StringIO(text), header=0 if header else None)
        if not header:
            if df.shape[1] != len(features):
                raise PayloadError(f"expected {len(features)} values per row ({', '.join(features)}), got {df.shape[1]}")
            df.columns = features
    elif ctype == "application/json":
        try:
            data = json.loads(text)
        except ValueError as e:
            raise PayloadError(f"invalid JSON: {e}") from None
        rows = data.get("instances") if isinstance(data, dict) else data
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise PayloadError('expected {"instances": [{feature: value, ...}, ...]} or a list of objects')
        df = pd.DataFrame(rows)
    else:
        raise PayloadError(f"unsupported content type {content_type!r} (text/csv, application/json)")
    missing = [f for f in features if f not in df.columns]
    if missing:
        raise PayloadError(f"missing features: {', '.join(missing)}")
    try:
        return df[features].astype(float)
    except (TypeError, ValueError) as e:
        raise PayloadError(f"non-numeric feature value: {e}") from None


def predict_fn(data: pd.DataFrame, bundle: dict) -> list[float]:
    return bundle["model"].predict_proba(data)[:, 1].tolist()


def output_fn(prediction: list[float], accept: str) -> tuple[str, str]:
    if (accept or "application/json").startswith("text/csv"):
        return "\n".join(f"{p:.6f}" for p in prediction) + "\n", "text/csv"
    return json.dumps({"predictions": prediction}), "application/json"
