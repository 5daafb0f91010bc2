"""Training step (scikit-learn script mode): shallow, regularised gradient-boosted trees (fraud
is ~1.5% of rows: deep trees overfit the few positives), class-balanced; validation ROC AUC is
reported; the model goes to SM_MODEL_DIR as model.joblib.

Hyperparameters come as command-line arguments (SageMaker passes them so) or SM_HP_* variables.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import joblib
import pandas as pd
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import roc_auc_score

LABEL = "is_fraud"


def train(train_dir: Path, validation_dir: Path, model_dir: Path, max_iter: int, learning_rate: float,
          max_depth: int, min_samples_leaf: int, seed: int) -> dict:
    tr = pd.read_csv(train_dir / "data.csv")
    va = pd.read_csv(validation_dir / "data.csv")
    features = [c for c in tr.columns if c != LABEL]
    model = HistGradientBoostingClassifier(max_iter=max_iter, learning_rate=learning_rate, max_depth=max_depth,
                                           min_samples_leaf=min_samples_leaf, random_state=seed,
                                           class_weight="balanced")
    model.fit(tr[features], tr[LABEL])
    model_dir.mkdir(parents=True, exist_ok=True)
    joblib.dump({"model": model, "features": features}, model_dir / "model.joblib")
    metrics = {"train_rows": len(tr), "features": features}
    if va[LABEL].nunique() == 2:
        metrics["validation_roc_auc"] = float(roc_auc_score(va[LABEL], model.predict_proba(va[features])[:, 1]))
    (model_dir / "training_metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


def _hp(name: str, default: str) -> str:
    return os.environ.get(f"SM_HP_{name.upper()}", default)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--max-iter", "--max_iter", type=int, default=int(_hp("max_iter", "100")))
    ap.add_argument("--learning-rate", "--learning_rate", type=float, default=float(_hp("learning_rate", "0.05")))
    ap.add_argument("--max-depth", "--max_depth", type=int, default=int(_hp("max_depth", "3")))
    ap.add_argument("--min-samples-leaf", "--min_samples_leaf", type=int, default=int(_hp("min_samples_leaf", "80")))
    ap.add_argument("--seed", type=int, default=int(_hp("seed", "7")))
    a, _ = ap.parse_known_args()  # SageMaker adds its own (sagemaker_program, ...)
    print(json.dumps(train(Path(os.environ.get("SM_CHANNEL_TRAIN", "/opt/ml/input/data/train")),
                           Path(os.environ.get("SM_CHANNEL_VALIDATION", "/opt/ml/input/data/validation")),
                           Path(os.environ.get("SM_MODEL_DIR", "/opt/ml/model")),
                           a.max_iter, a.learning_rate, a.max_depth, a.min_samples_leaf, a.seed)))
